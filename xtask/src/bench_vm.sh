# The VM part of `cargo xtask bench` (Debian 6.12 under TCG): what the call
# counter adds per call, where watch's start-up goes step by step, and watch
# itself from launch to its `ready` event. Numbers only; nothing asserted.
. /lib/klpscope-test/lib.sh

/bin/call_counter_cost || exit 1
echo
/bin/start_up_cost || exit 1

# launch_to_ready LABEL [VAR=VALUE]... -- WATCH ARGS...: seconds from
# launching `klpscope watch --json` to its ready line, three runs.
launch_to_ready() {
    _label=$1
    shift
    _env=
    while [ "$1" != -- ]; do
        _env="$_env $1"
        shift
    done
    shift
    _times=
    for _run in 1 2 3; do
        # Gone before the launch: the shell truncates it only once the
        # background job starts, and the last run's ready line would do.
        rm -f /tmp/ready.json
        _t0=$(uptime_cs)
        env $_env klpscope watch --json --timeout 120 "$@" > /tmp/ready.json 2> /tmp/ready.err &
        _watch=$!
        until grep -q '"event": *"ready"' /tmp/ready.json 2> /dev/null; do
            if exited "$_watch"; then
                echo "watch exited before it was ready:"
                cat /tmp/ready.err
                return 1
            fi
            sleep 0.02
        done
        _t1=$(uptime_cs)
        kill "$_watch"
        wait "$_watch"
        _cs=$((_t1 - _t0))
        _times="$_times $((_cs / 100)).$((_cs / 10 % 10))$((_cs % 10)) s"
    done
    echo "watch, launch to ready, $_label:$_times"
}

# took LABEL COMMAND...: how long COMMAND takes, in seconds (10 ms steps).
took() {
    _label=$1
    shift
    _t0=$(uptime_cs)
    "$@" > /dev/null 2>&1
    _cs=$(($(uptime_cs) - _t0))
    echo "$_label: $((_cs / 100)).$((_cs / 10 % 10))$((_cs % 10)) s"
}

echo
took "klpscope --version (start a process, parse arguments)" klpscope --version
took "klpscope status (kernel facts, patches)" klpscope status
launch_to_ready "no patch loaded" -- || exit 1
launch_to_ready "no patch loaded, tasks from procfs" KLPSCOPE_TASK_SOURCE=procfs -- || exit 1
launch_to_ready "no patch loaded, --no-ebpf" -- --no-ebpf || exit 1
load klp_test_target
load klp_test_patch_target
wait_for_transition klp_test_patch_target
launch_to_ready "one patch loaded (its calls counted)" -- || exit 1

# The tracer's latency: from the kernel's hook (bpf_ktime_get_ns) to the
# round that reads the event, which writes its line at once; from watch's
# own log (--log), over CYCLES unpatch/patch cycles of klp_test_patch_target.
CYCLES=10
klpscope --log /tmp/latency.log watch --json > /tmp/latency.json 2> /tmp/latency.err &
_watch=$!
until grep -q '"event": *"ready"' /tmp/latency.json 2> /dev/null; do
    exited "$_watch" && { cat /tmp/latency.err; exit 1; }
    sleep 0.1
done
_cycle=0
while [ "$_cycle" -lt "$CYCLES" ]; do
    echo 0 > "$LIVEPATCH/klp_test_patch_target/enabled"
    wait_for_unpatched klp_test_patch_target
    rmmod klp_test_patch_target
    insmod "$KLP_TEST_DIR/klp_test_patch_target.ko"
    wait_for_transition klp_test_patch_target
    _cycle=$((_cycle + 1))
done
sleep 1
echo "watch, peak RSS over the cycles: $(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$_watch/status")"
kill "$_watch"
wait "$_watch"
sed -n 's/.*an event read \([0-9.]*\) ms after the kernel.s hook.*/\1/p' /tmp/latency.log \
    | sort -n > /tmp/latency.ms
_n=$(wc -l < /tmp/latency.ms)
[ "$_n" -gt 0 ] || { echo "no tracer event in watch's log"; exit 1; }
percentile() { sed -n "$(( ($_n * $1 + 99) / 100 ))p" /tmp/latency.ms; }
echo "watch, kernel hook to the round that reports it, $_n events over $CYCLES cycles: p50 $(percentile 50) ms, p99 $(percentile 99) ms, max $(tail -n 1 /tmp/latency.ms) ms"
echo "watch, lines written: $(wc -l < /tmp/latency.json)"
