# Scenario 4: a cumulative (atomic replace) livepatch on top of an existing
# one. The new patch takes over and the old one is dropped.
. /lib/klpscope-test/lib.sh
P1=klp_test_patch_cmdline
P2=klp_test_patch_cmdline2

# Before the cumulative patch: check sees the patch it replaces.
klpscope_first() {
    ks_json check-replace check --module "$KLP_TEST_DIR/$P2.ko" --json --duration 1 || return 1
    jq_true "$KS/check-replace.json" "
        .module.replace == true
        and any(.kernel_checks[]; .id == \"loaded_patches\" and (.detail | contains(\"$P1\")))
        and any(.functions[]; .name == \"cmdline_proc_show\"
                              and (.patched_by | index(\"$P1\")) != null)" || return 1
}

# Replaced: status shows only the new patch; replace reads 1 where the
# kernel has the file (6.11+), and is null before.
klpscope_replaced() {
    ks_json status status --json || return 1
    jq_true "$KS/status.json" "
        (.patches | length) == 1 and .patches[0].name == \"$P2\"
        and .patches[0].enabled == true and .transition == null" || return 1
    if [ -e $LIVEPATCH/$P2/replace ]; then
        jq_true "$KS/status.json" '.patches[0].replace == true' || return 1
    else
        jq_true "$KS/status.json" '.patches[0].replace == null' || return 1
    fi
}

load $P1
wait_for_transition $P1
assert_eq "$(cat /proc/cmdline)" "$P1: livepatched" "/proc/cmdline under $P1"
checkpoint first

load $P2
wait_for_transition $P2
assert_dmesg "'$P2': patching complete"
assert_eq "$(cat /proc/cmdline)" "$P2: livepatched" "/proc/cmdline under $P2"
wait_until 10 "$P1 replaced and gone from sysfs" patch_gone $P1
# The replace attribute exists since Linux 6.11.
if [ -e $LIVEPATCH/$P2/replace ]; then
    assert_eq "$(attr $P2 replace)" 1 "$P2 replace"
fi
assert_all_switched
checkpoint replaced
# The replaced patch's module is released asynchronously.
wait_until 10 "rmmod $P1" rmmod $P1

echo 0 > $LIVEPATCH/$P2/enabled
wait_for_unpatched $P2
assert_dmesg "'$P2': unpatching complete"
grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline still patched: $(cat /proc/cmdline)"
unload $P2
pass
