# Scenario 5: unpatching is blocked by a task asleep in the replacement
# function; once released, the unpatching transition completes.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_target

# Unpatching waits for the new function: diagnose names it, not the old one.
klpscope_blocked() {
    diagnose_names "$PARKED_PID" cat false livepatch_klp_test_park_wait unpatching || return 1
    diagnose_names "$PARKED_PID" cat false livepatch_klp_test_park_wait unpatching --no-ebpf || return 1
    ks_json status status --json || return 1
    jq_true "$KS/status.json" "
        .transition.patch == \"$P\" and .transition.direction == \"unpatching\"
        and .transition.tasks_pending == 1" || return 1
}

load klp_test_target
load $P
wait_for_transition $P
park livepatch_klp_test_park_wait
checkpoint patched

echo 0 > $LIVEPATCH/$P/enabled || fail "cannot write 0 to $P/enabled"
assert_dmesg "'$P': starting unpatching transition"
wait_for_sole_blocker "$PARKED_PID" 1
assert_blocked $P 3
assert_eq "$(attr $P enabled)" 0 "$P enabled"
checkpoint blocked

release
assert_eq "$PARKED_VERSION" patched "function that released the parked task"
wait_for_unpatched $P
assert_dmesg "'$P': unpatching complete"
assert_all_switched
checkpoint unpatched

park klp_test_park_wait
release
assert_eq "$PARKED_VERSION" original "function that released a new reader"
unload $P
unload klp_test_target
pass
