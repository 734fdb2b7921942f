# Scenario 14: klpscope revert, a guarded disable. A kthread asleep
# uninterruptibly in the patch's replacement (the kernel's fake signals do
# not move it) stalls the unpatching transition: past the deadline revert
# enables the patch again, which stays applied with its module; once the
# kthread is gone, revert completes and unloads the module.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_target

load klp_test_target
load $P
wait_for_transition $P
dpark_start 1 livepatch_klp_test_park_wait

rollout_json revert-stalled 5 revert --json --yes --deadline 20 $P || fail "stalled revert"
steps_in_order revert-stalled check ready disabling deadline reversing reversed finished \
    || fail "stalled revert steps"
jq_true "$KS/revert-stalled-steps.json" "
    (.[0].predicted_blockers | any(.tid == $DPARK_PIDS and .persistent))
    and any(.[]; .event == \"deadline\"
        and any(.blockers[]; .pid == $DPARK_PIDS and .state == \"D\"
                and .function == \"livepatch_klp_test_park_wait\"))
    and any(.[]; .event == \"reversing\" and .direction == \"patching\")
    and all(.[]; .event != \"unloaded\")
    and .[-1].end == \"backed_out\" and .[-1].exit_code == 5" \
    || fail "stalled revert steps"
assert_eq "$(attr $P enabled)" 1 "$P enabled again"
wait_for_transition $P
module_loaded $P || fail "module $P unloaded though its patch is applied"
assert_all_switched

dpark_release
rollout_json revert-clean 0 revert --json $P || fail "clean revert"
steps_in_order revert-clean disabling complete unloaded finished || fail "clean revert steps"
patch_gone $P || fail "$P still in $LIVEPATCH"
! module_loaded $P || fail "module $P still loaded"
park klp_test_park_wait
release
assert_eq "$PARKED_VERSION" original "function that released a reader after the revert"
unload klp_test_target
pass
