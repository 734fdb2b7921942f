# Scenario 7: two livepatches stacked on one function, neither an atomic
# replace. With klp_test_patch_target enabled, a reader sleeps in ITS
# replacement (livepatch_klp_test_park_wait); loading klp_test_patch_target2
# on top waits for that function, not the original: the reader blocks the
# patching transition. Then a reader asleep in the second patch's
# replacement blocks disabling klp_test_patch_target2.
. /lib/klpscope-test/lib.sh
P1=klp_test_patch_target
P2=klp_test_patch_target2
V1="{\"kind\":\"replacement\",\"patch\":\"$P1\"}"
V2="{\"kind\":\"replacement\",\"patch\":\"$P2\"}"

# Before the second patch: check predicts exactly the reader in the first
# patch's replacement; watch traces.
klpscope_parked() {
    predicts $P2 "$PARKED_PID" false || return 1
    watch_start 150
}

klpscope_blocked() {
    diagnose_names "$PARKED_PID" cat false livepatch_klp_test_park_wait patching || return 1
    blocker_version diagnose "$V1" || return 1
    diagnose_names "$PARKED_PID" cat false livepatch_klp_test_park_wait patching --no-ebpf || return 1
    blocker_version diagnose--no-ebpf "$V1" || return 1
    ks_json status status --json || return 1
    jq_true "$KS/status.json" "
        .transition.patch == \"$P2\" and .transition.direction == \"patching\"
        and .transition.tasks_pending == 1" || return 1
    events_true "
        ([.[] | select(.event == \"blocker\")] | length) == 1
        and (.[] | select(.event == \"blocker\")
             | .pid == $PARKED_PID and .comm == \"cat\" and .kthread == false
               and .reason == \"function_on_stack\"
               and .function == \"livepatch_klp_test_park_wait\")
        and ((.[] | select(.event == \"blocker\") | .ts)
             - (.[] | select(.event == \"start\" and .patch == \"$P2\") | .ts)) <= 3" || return 1
    log "klpscope watch reported pid $PARKED_PID within 3 s of the start"
}

klpscope_complete() {
    watch_done 0 || return 1
    jq_true "$KS/watch-events.json" "
        any(.[]; .event == \"blocker_cleared\" and .pid == $PARKED_PID)
        and any(.[]; .event == \"complete\" and .patch == \"$P2\" and .reversed == false)" || return 1
}

# Unpatching the top patch waits for its own replacement.
klpscope_unpatch_blocked() {
    diagnose_names "$PARKED_PID" cat false livepatch2_klp_test_park_wait unpatching || return 1
    blocker_version diagnose "$V2" || return 1
    diagnose_names "$PARKED_PID" cat false livepatch2_klp_test_park_wait unpatching --no-ebpf || return 1
    blocker_version diagnose--no-ebpf "$V2" || return 1
}

load klp_test_target
load $P1
wait_for_transition $P1
assert_all_switched
park livepatch_klp_test_park_wait
checkpoint parked

load $P2
assert_dmesg "'$P2': starting patching transition"
wait_for_sole_blocker "$PARKED_PID" 0
assert_blocked $P2 3
on_stack "$PARKED_PID" livepatch_klp_test_park_wait \
    || fail "pid $PARKED_PID left livepatch_klp_test_park_wait"
assert_eq "$(attr $P1 transition)" 0 "$P1 transition"
assert_eq "$(attr $P1 enabled)" 1 "$P1 enabled"
checkpoint blocked

release
assert_eq "$PARKED_VERSION" patched "function that released the parked task"
wait_for_transition $P2
# The object's patched file: not on 5.10.
[ ! -e "$LIVEPATCH/$P2/klp_test_target/patched" ] \
    || assert_eq "$(attr $P2 klp_test_target/patched)" 1 "$P2 klp_test_target/patched"
assert_dmesg "'$P2': patching complete"
assert_all_switched
checkpoint complete

# The top of the stack runs now: a new reader sleeps in the second patch's
# replacement, and blocks disabling that patch.
park livepatch2_klp_test_park_wait
echo 0 > $LIVEPATCH/$P2/enabled || fail "cannot write 0 to $P2/enabled"
assert_dmesg "'$P2': starting unpatching transition"
wait_for_sole_blocker "$PARKED_PID" 1
assert_blocked $P2 3
on_stack "$PARKED_PID" livepatch2_klp_test_park_wait \
    || fail "pid $PARKED_PID left livepatch2_klp_test_park_wait"
checkpoint unpatch_blocked

release
assert_eq "$PARKED_VERSION" patched2 "function that released the parked task"
wait_for_unpatched $P2
assert_dmesg "'$P2': unpatching complete"
assert_all_switched
checkpoint unpatched

# The first patch's replacement runs again.
park livepatch_klp_test_park_wait
release
assert_eq "$PARKED_VERSION" patched "function that released a new reader"
unload $P2
echo 0 > $LIVEPATCH/$P1/enabled || fail "cannot write 0 to $P1/enabled"
wait_for_unpatched $P1
unload $P1
unload klp_test_target
pass
