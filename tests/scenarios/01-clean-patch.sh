# Scenario 1: a clean livepatch of a vmlinux function. The transition
# completes, the new code runs, and disabling the patch unpatches.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_cmdline

grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline is not the boot command line"
load $P
wait_for_transition $P
assert_eq "$(attr $P enabled)" 1 "$P enabled"
assert_eq "$(attr $P vmlinux/patched)" 1 "$P vmlinux/patched"
assert_dmesg "'$P': starting patching transition"
assert_dmesg "'$P': patching complete"
assert_all_switched
assert_eq "$(cat /proc/cmdline)" "$P: livepatched" "/proc/cmdline, patched"
checkpoint patched

echo 0 > $LIVEPATCH/$P/enabled
wait_for_unpatched $P
assert_dmesg "'$P': unpatching complete"
assert_all_switched
grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline still patched: $(cat /proc/cmdline)"
checkpoint unpatched
unload $P
pass
