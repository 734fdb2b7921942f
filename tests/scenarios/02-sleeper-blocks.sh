# Scenario 2: a user task asleep in a patched function blocks the patching
# transition; once released, it switches and the transition completes.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_target

load klp_test_target
park klp_test_park_wait
load $P
assert_dmesg "'$P': starting patching transition"
wait_for_sole_blocker "$PARKED_PID" 0
assert_blocked $P 3
on_stack "$PARKED_PID" klp_test_park_wait || fail "pid $PARKED_PID left klp_test_park_wait"
checkpoint blocked

release
assert_eq "$PARKED_VERSION" original "function that released the parked task"
wait_for_transition $P
assert_eq "$(attr $P klp_test_target/patched)" 1 "$P klp_test_target/patched"
assert_dmesg "'$P': patching complete"
assert_all_switched
checkpoint complete

# A new reader runs the replacement function.
park livepatch_klp_test_park_wait
release
assert_eq "$PARKED_VERSION" patched "function that released a new reader"
pass
