# Scenario 19: a kernel with thousands of threads. The kernel's first retry
# round checks every thread in one go and the tracer reports each verdict;
# user space drains its ring buffer only between rounds. Sized for the
# threads found when klpscope loads, the buffer holds the round: watch
# hears every thread switch and the completion. (At a fixed 256 KiB it
# held 2,047 records, and 1,018 of 3,060 switches went unheard.)
# Only where the kernel's per-task check can be hooked (5.17 on).
# kernels: 6.12 6.1 7
. /lib/klpscope-test/lib.sh
P=klp_test_patch_cmdline
SLEEPERS=3000

klpscope_crowded() {
    tids_now > "$KS/tids-before"
    watch_start 300
}

klpscope_patched() {
    watch_done 0 || return 1
    jq_true "$KS/watch-events.json" "
        any(.[]; .event == \"start\" and .patch == \"$P\" and .tasks_total > $SLEEPERS)
        and any(.[]; .event == \"complete\" and .patch == \"$P\" and .reversed == false)" \
        || return 1
    all_switches_heard
}

_i=0
while [ "$_i" -lt "$SLEEPERS" ]; do
    sleep 100000 &
    _i=$((_i + 1))
done
read -r _ _ _ _threads _ < /proc/loadavg
log "$SLEEPERS sleepers started; runnable/threads: $_threads"
checkpoint crowded
load $P
wait_for_transition $P 120
assert_dmesg "'$P': patching complete"
assert_all_switched
assert_eq "$(cat /proc/cmdline)" "$P: livepatched" "/proc/cmdline, patched"
checkpoint patched
pass
