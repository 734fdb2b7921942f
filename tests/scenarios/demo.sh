# The demo's starting point: a livepatch transition blocked by a task asleep
# in a patched function, left in progress for `klpscope watch` to explain.
. /lib/klpscope-test/lib.sh
load klp_test_target
park klp_test_park_wait
load klp_test_patch_target
log "transition of klp_test_patch_target blocked by pid $PARKED_PID"
log "try: klpscope status; release it with: echo 1 > $TARGET/release"
