# Scenario 9: calls of a module function, counted exactly per version
# before, during and after a transition. klpscope counts a module function
# with a kprobe placed by its kallsyms address (aya cannot load fentry
# against a module's BTF); the version comes from the counter's mode and,
# during the transition, from each calling task's patch_state.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_call
CALL="--function klp_test_call --object klp_test_target"

# Before: every call runs the original.
klpscope_before() {
    count_calls_of call_target before 30 $CALL --duration 2 || return 1
    jq_true "$KS/before.json" '
        .functions[0].name == "klp_test_call" and .functions[0].object == "klp_test_target"
        and .functions[0].traceable == true
        and .functions[0].calls_unmeasured == null
        and .functions[0].calls_old == 30 and .functions[0].calls_new == 0' || return 1
    log "klpscope counted 30 calls of the original klp_test_call (module klp_test_target)"
}

# During: the shell has switched, so its calls run the replacement; the
# parked reader has not: released, it calls once more before it returns to
# user space, where it switches, so that call runs the original.
klpscope_during() {
    count_calls_start during --patch "$P" --duration 4 || return 1
    calls call_target 20
    release
    assert_eq "$PARKED_VERSION" original "version that released the reader"
    count_calls_end during || return 1
    jq_true "$KS/during.json" '
        .functions[0].name == "klp_test_call"
        and .functions[0].calls_new == 20 and .functions[0].calls_old == 1' || return 1
    log "klpscope counted 20 new and 1 old calls of klp_test_call during the transition"
}

# After: every call runs the replacement.
klpscope_after() {
    count_calls_of call_target after 25 --patch "$P" --duration 2 || return 1
    jq_true "$KS/after.json" '
        .functions[0].calls_new == 25 and .functions[0].calls_old == 0' || return 1
    log "klpscope counted 25 calls of the new klp_test_call"
}

load klp_test_target
checkpoint before

park klp_test_call cpark
load $P
wait_for_sole_blocker "$PARKED_PID" 0
checkpoint during
# Without klpscope's checks the reader is still parked.
[ -e "/proc/$PARKED_PID" ] && release
wait_for_transition $P
assert_all_switched
checkpoint after

echo 0 > $LIVEPATCH/$P/enabled
wait_for_unpatched $P
unload $P
unload klp_test_target
pass
