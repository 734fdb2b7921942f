# Scenario 4: a cumulative (atomic replace) livepatch on top of an existing
# one. The new patch takes over and the old one is dropped.
. /lib/klpscope-test/lib.sh
P1=klp_test_patch_cmdline
P2=klp_test_patch_cmdline2

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
