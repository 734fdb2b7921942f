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
