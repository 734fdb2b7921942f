# Scenario library of the klpscope VM, sourced by every scenario:
#   . /lib/klpscope-test/lib.sh
# Runs in busybox sh as root. Waits poll every 0.2 s and are bounded; a
# failed assertion prints the livepatch state and exits 1.

KLP_TEST_DIR=/lib/klpscope-test
TARGET=/sys/kernel/debug/klp_test_target
LIVEPATCH=/sys/kernel/livepatch
# 1: checkpoints also run the scenario's klpscope_<checkpoint> functions.
: "${KLPSCOPE_CHECKS:=1}"

log() { echo "scenario: $*"; }

show_state() {
    echo "---- livepatch sysfs ----"
    for f in "$LIVEPATCH"/*/enabled "$LIVEPATCH"/*/transition; do
        [ -e "$f" ] && echo "$f: $(cat "$f")"
    done
    echo "---- tasks not yet switched (patch_state 0 / 1) ----"
    echo "0: $(tasks_in_state 0)"
    echo "1: $(tasks_in_state 1)"
    echo "---- dmesg ----"
    dmesg | tail -n 15
}

fail() {
    echo "FAIL: $*"
    show_state
    exit 1
}

pass() {
    log "PASS"
    exit 0
}

# wait_until SECONDS WHAT COMMAND...: polls until COMMAND succeeds.
wait_until() {
    _seconds=$1 _what=$2
    shift 2
    _tries=$((_seconds * 5))
    until "$@"; do
        _tries=$((_tries - 1))
        [ "$_tries" -gt 0 ] || fail "after ${_seconds}s, still not: $_what"
        sleep 0.2
    done
}

# holds SECONDS WHAT COMMAND...: COMMAND keeps succeeding for SECONDS.
holds() {
    _seconds=$1 _what=$2
    shift 2
    _tries=$((_seconds * 5))
    while [ "$_tries" -gt 0 ]; do
        "$@" || fail "stopped holding before ${_seconds}s: $_what"
        _tries=$((_tries - 1))
        sleep 0.2
    done
}

assert_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

# checkpoint NAME: the kernel state is asserted and stable here. klpscope's
# own checks hook in: a scenario defines klpscope_NAME, which runs (and must
# succeed) when KLPSCOPE_CHECKS=1.
checkpoint() {
    log "checkpoint $1"
    [ "$KLPSCOPE_CHECKS" = 1 ] || return 0
    if type "klpscope_$1" >/dev/null 2>&1; then
        "klpscope_$1" || fail "klpscope check at checkpoint $1"
    fi
}

load() {
    insmod "$KLP_TEST_DIR/$1.ko" || fail "insmod $1"
    log "loaded $1"
}

unload() {
    rmmod "$1" || fail "rmmod $1"
    log "unloaded $1"
}

# attr PATCH FILE: a file of the patch's sysfs folder.
attr() {
    _value=
    read -r _value < "$LIVEPATCH/$1/$2"
    echo "$_value"
}

in_transition() { [ "$(attr "$1" transition)" = 1 ]; }
transition_done() { [ "$(attr "$1" transition)" = 0 ]; }
patch_gone() { [ ! -e "$LIVEPATCH/$1" ]; }

# wait_for_transition PATCH [SECONDS]
wait_for_transition() {
    wait_until "${2:-20}" "transition of $1 complete" transition_done "$1"
}

# wait_for_unpatched PATCH [SECONDS]: a disabled patch leaves sysfs once its
# unpatching transition completes.
wait_for_unpatched() {
    wait_until "${2:-20}" "$1 unpatched and gone from sysfs" patch_gone "$1"
}

# assert_blocked PATCH SECONDS: the transition stays in progress.
assert_blocked() {
    holds "$2" "transition of $1 in progress" in_transition "$1"
}

# tasks_in_state STATE: the tids whose patch_state is STATE (-1: no
# transition, 0: unpatched, 1: patched). Builtins only: a forked reader
# would itself be a new task.
tasks_in_state() {
    _tids=
    for _f in /proc/[0-9]*/task/[0-9]*/patch_state; do
        _state=
        # A task may exit meanwhile: silence the failed open.
        read -r _state 2>/dev/null < "$_f" || continue
        if [ "$_state" = "$1" ]; then
            _tid=${_f%/patch_state}
            _tids="$_tids${_tids:+ }${_tid##*/}"
        fi
    done
    echo "$_tids"
}

only_task_in_state() { [ "$(tasks_in_state "$2")" = "$1" ]; }
no_task_in_transition() { [ -z "$(tasks_in_state 0)$(tasks_in_state 1)" ]; }

# wait_for_sole_blocker PID STATE: every task but PID leaves STATE. Tasks
# with momentarily unreliable stacks switch within a few rounds.
wait_for_sole_blocker() {
    wait_until 15 "pid $1 the only task with patch_state $2" only_task_in_state "$1" "$2"
}

assert_all_switched() {
    no_task_in_transition || fail "tasks still in a transition: 0: $(tasks_in_state 0) 1: $(tasks_in_state 1)"
}

dmesg_has() { dmesg | grep -qF -- "$1"; }

# assert_dmesg TEXT: the kernel logged TEXT (waits a little for it).
assert_dmesg() { wait_until 5 "dmesg shows: $1" dmesg_has "$1"; }

# on_stack PID FUNCTION: FUNCTION is in the task's kernel stack.
on_stack() { grep -q " $2+" "/proc/$1/stack" 2>/dev/null; }

exited() { [ ! -e "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

PARKED_OUT=/tmp/klp-test-parked.out

# park FUNCTION: starts a task that reads the target module's park file and
# sleeps in FUNCTION (klp_test_park_wait, or livepatch_klp_test_park_wait
# once patched); sets PARKED_PID.
park() {
    cat "$TARGET/park" > "$PARKED_OUT" &
    PARKED_PID=$!
    wait_until 10 "pid $PARKED_PID asleep in $1" on_stack "$PARKED_PID" "$1"
    log "pid $PARKED_PID parked in $1"
}

# release: wakes the parked task and waits for it to exit; PARKED_VERSION is
# what it read: "original" or "patched", the version that released it.
release() {
    echo 1 > "$TARGET/release"
    wait_until 10 "pid $PARKED_PID released" exited "$PARKED_PID"
    wait "$PARKED_PID" || fail "parked reader $PARKED_PID failed"
    read -r PARKED_VERSION < "$PARKED_OUT"
    log "pid $PARKED_PID released by the $PARKED_VERSION function"
}

# busy_start FUNCTION: starts the target's kthread, looping in FUNCTION;
# sets BUSY_PID.
busy_start() {
    echo 1 > "$TARGET/busy" || fail "cannot start the busy kthread"
    read -r BUSY_PID < "$TARGET/busy"
    wait_until 10 "kthread $BUSY_PID in $1" on_stack "$BUSY_PID" "$1"
    log "kthread $BUSY_PID loops in $1"
}

busy_stop() {
    echo 0 > "$TARGET/busy" || fail "cannot stop the busy kthread"
    log "kthread $BUSY_PID stopped"
}
