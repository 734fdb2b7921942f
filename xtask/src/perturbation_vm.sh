# The perturbation experiment of `cargo xtask bench` (every kernel of the
# lab): does klpscope change the transition it watches? Per mode (klpscope
# absent, `watch --no-ebpf`, `watch` with eBPF), CYCLES patch cycles: a
# reader parked in the patched function for 3 s, released, the patch
# disabled and unloaded. With dynamic debug on for the kernel's transition
# code, the kernel logs each failed check and why; counted per mode, with
# each transition's duration from sysfs. Numbers only; nothing asserted.
. /lib/klpscope-test/lib.sh

CYCLES=${CYCLES:-4}
P=klp_test_patch_target

# Centiseconds since boot.
now_cs() {
    read -r _up _idle < /proc/uptime
    _s=${_up%.*}
    _f=${_up#*.}
    echo $((_s * 100 + 1${_f} - 100))
}

control=/sys/kernel/debug/dynamic_debug/control
[ -w "$control" ] || { echo "no dynamic debug here: $control"; exit 1; }
echo 'file transition.c +p' > "$control"
load klp_test_target

# promptly WHAT COMMAND...: waits for COMMAND, checking every 10 ms (the
# lab's 0.2 s waits would blur a sub-second transition), 60 s at most.
promptly() {
    _what=$1
    shift
    _tries=6000
    until "$@"; do
        _tries=$((_tries - 1))
        [ "$_tries" -gt 0 ] || fail "after 60 s, still not: $_what"
        sleep 0.01
    done
}

# cycle: one patch cycle; adds the patching (from the load, 3 s of it with
# the reader parked) and unpatching times (cs).
cycle() {
    park klp_test_park_wait
    _t0=$(now_cs)
    insmod "$KLP_TEST_DIR/$P.ko" || fail "insmod $P"
    sleep 3
    echo 1 > "$TARGET/release"
    promptly "transition of $P complete" transition_done $P
    _t1=$(now_cs)
    wait "$PARKED_PID"
    echo 0 > "$LIVEPATCH/$P/enabled"
    promptly "$P unpatched" patch_gone $P
    _t2=$(now_cs)
    rmmod $P
    PATCHING_CS=$((PATCHING_CS + _t1 - _t0))
    UNPATCHING_CS=$((UNPATCHING_CS + _t2 - _t1))
}

secs() { echo "$(($1 / 100)).$(($1 / 10 % 10))$(($1 % 10))"; }

# measure LABEL [WATCH ARGS...]: CYCLES cycles with `klpscope watch ARGS`
# attached (none: klpscope absent).
measure() {
    _label=$1
    shift
    _watch=
    if [ "$#" -gt 0 ] || [ "$_label" != absent ]; then
        rm -f /tmp/perturb.json
        klpscope watch --json "$@" > /tmp/perturb.json 2> /tmp/perturb.err &
        _watch=$!
        wait_until 60 "watch ready" grep -q '"event": *"ready"' /tmp/perturb.json
    fi
    dmesg -c > /dev/null
    PATCHING_CS=0
    UNPATCHING_CS=0
    _i=0
    while [ "$_i" -lt "$CYCLES" ]; do
        cycle
        _i=$((_i + 1))
    done
    dmesg > /tmp/perturb.dmesg
    _unreliable=$(grep -c 'has an unreliable stack' /tmp/perturb.dmesg)
    _running=$(grep -c 'is running' /tmp/perturb.dmesg)
    _sleeping=$(grep -c 'is sleeping on function' /tmp/perturb.dmesg)
    _blockers=-
    if [ -n "$_watch" ]; then
        kill -INT "$_watch"
        wait "$_watch"
        _blockers=$(grep -c '"event": *"blocker"' /tmp/perturb.json)
    fi
    echo "perturbation $(uname -r) $_label: $CYCLES cycles;" \
        "kernel's failed checks: unreliable stack $_unreliable, running $_running," \
        "function on stack $_sleeping; patching $(secs $((PATCHING_CS / CYCLES))) s," \
        "unpatching $(secs $((UNPATCHING_CS / CYCLES))) s (means); blocker events $_blockers"
}

measure absent
measure polling --no-ebpf
measure ebpf
