# Scenario 3: a kthread looping in a patched function blocks the transition
# indefinitely (it never returns to user space, and livepatch's wake-ups put
# it back into the same loop). Writing 0 to enabled reverses the transition;
# on a second try, writing 1 to force completes it.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_target

klpscope_busy() {
    predicts $P "$BUSY_PID" true || return 1
    watch_start
}

klpscope_blocked() {
    diagnose_names "$BUSY_PID" klp_test_busy true klp_test_busy_loop patching || return 1
    jq_true "$KS/diagnose.json" '.blockers[0].kind == "kthread_in_patched_function"' || return 1
    diagnose_names "$BUSY_PID" klp_test_busy true klp_test_busy_loop patching --no-ebpf || return 1
    events_true "
        any(.[]; .event == \"blocker\" and .pid == $BUSY_PID and .kthread == true
                 and .reason == \"function_on_stack\"
                 and .function == \"klp_test_busy_loop\")" || return 1
    log "klpscope watch reported kthread $BUSY_PID"
}

# Reversed: watch ends with its reversed status and says so.
klpscope_reversed() {
    watch_done 5 || return 1
    jq_true "$KS/watch-events.json" "
        any(.[]; .event == \"reverse\" and .direction == \"unpatching\")
        and any(.[]; .event == \"complete\" and .reversed == true)" || return 1
}

klpscope_blocked_again() {
    diagnose_names "$BUSY_PID" klp_test_busy true klp_test_busy_loop patching || return 1
}

load klp_test_target
busy_start klp_test_busy_loop
checkpoint busy
load $P
wait_for_sole_blocker "$BUSY_PID" 0
assert_blocked $P 3
checkpoint blocked

echo 0 > $LIVEPATCH/$P/enabled || fail "cannot write 0 to $P/enabled"
log "transition reversed"
wait_for_unpatched $P
assert_dmesg "'$P': unpatching complete"
assert_all_switched
still_on_stack "$BUSY_PID" klp_test_busy_loop
checkpoint reversed
unload $P

load $P
wait_for_sole_blocker "$BUSY_PID" 0
assert_blocked $P 2
checkpoint blocked_again

echo 1 > $LIVEPATCH/$P/force || fail "cannot write 1 to $P/force"
log "transition forced"
wait_for_transition $P 10
assert_dmesg "forcing remaining tasks"
assert_dmesg "'$P': patching complete"
assert_eq "$(attr $P enabled)" 1 "$P enabled"
assert_all_switched
# Forced, not switched: the kthread still runs the original function.
still_on_stack "$BUSY_PID" klp_test_busy_loop
checkpoint forced

park livepatch_klp_test_park_wait
release
assert_eq "$PARKED_VERSION" patched "function that released a new reader"
busy_stop
pass
