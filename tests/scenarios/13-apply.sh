# Scenario 13: klpscope apply, a guarded rollout. A clean apply completes
# and a clean revert unloads; warnings stop it unless --yes; a transition
# stalled by a kthread looping in the patched function is backed out at the
# deadline, naming the kthread, and leaves no patch or module behind; with
# another transition in progress nothing is loaded; SIGINT asks, SIGTERM
# backs out. Refused with nothing loaded: a patched function the kernel does
# not have, a module built for another kernel, a folder, a module that is
# no livepatch (one line each), and a load without root (EPERM).
. /lib/klpscope-test/lib.sh
C=klp_test_patch_cmdline
P=klp_test_patch_target

# The kernel's truth: the patch and its module are gone.
no_trace_of() {
    patch_gone "$1" || fail "$1 still in $LIVEPATCH"
    ! module_loaded "$1" || fail "module $1 still loaded"
}

# Clean apply: every step in order, the patch applied.
rollout_json apply-clean 0 apply --json "$KLP_TEST_DIR/$C.ko" || fail "clean apply"
steps_in_order apply-clean check ready loaded complete finished || fail "clean apply steps"
jq_true "$KS/apply-clean-steps.json" "
    (.[0].event == \"check\" and .[0].verdict != \"not_ready\")
    and any(.[]; .event == \"loaded\" and .patch == \"$C\")
    and any(.[]; .event == \"complete\" and .patch == \"$C\" and .reversed == false)
    and .[-1].event == \"finished\" and .[-1].end == \"done\" and .[-1].exit_code == 0" \
    || fail "clean apply steps"
assert_eq "$(attr $C enabled)" 1 "$C enabled"
assert_eq "$(attr $C transition)" 0 "$C transition"
assert_eq "$(cat /proc/cmdline)" "$C: livepatched" "/proc/cmdline, applied"
assert_dmesg "'$C': patching complete"

# Clean revert: unpatched, module unloaded.
rollout_json revert-clean 0 revert --json $C || fail "clean revert"
steps_in_order revert-clean check ready disabling complete unloaded finished || fail "revert steps"
no_trace_of $C
grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline still patched"

# A kthread that loops in the patched function: check predicts it, so
# apply stops without --yes; with it, it backs out at the deadline.
load klp_test_target
busy_start klp_test_busy_loop
rollout_json apply-unconfirmed 3 apply --json "$KLP_TEST_DIR/$P.ko" || fail "unconfirmed apply"
jq_true "$KS/apply-unconfirmed-steps.json" "
    (.[0].predicted_blockers | any(.tid == $BUSY_PID and .persistent))
    and .[-1].end == \"not_confirmed\" and all(.[]; .event != \"loaded\")" \
    || fail "unconfirmed apply steps"
no_trace_of $P

_t0=$(uptime_cs)
rollout_json apply-stalled 5 apply --json --yes --deadline 20 "$KLP_TEST_DIR/$P.ko" \
    || fail "stalled apply"
_secs=$(( ($(uptime_cs) - _t0) / 100 ))
log "stalled apply took ${_secs}s"
steps_in_order apply-stalled loaded deadline reversing reversed unloaded finished \
    || fail "stalled apply steps"
jq_true "$KS/apply-stalled-steps.json" "
    any(.[]; .event == \"deadline\" and .tasks_pending >= 1
        and any(.blockers[]; .pid == $BUSY_PID and .kthread == true
                and .function == \"klp_test_busy_loop\"))
    and any(.[]; .event == \"reversing\" and .cause == \"deadline\"
        and .direction == \"unpatching\")
    and .[-1].end == \"backed_out\" and .[-1].exit_code == 5" \
    || fail "stalled apply steps"
[ "$_secs" -ge 20 ] || fail "backed out after ${_secs}s, before the 20 s deadline"
no_trace_of $P
assert_dmesg "'$P': unpatching complete"
# The target still works, unpatched.
still_on_stack "$BUSY_PID" klp_test_busy_loop
park klp_test_park_wait
release
assert_eq "$PARKED_VERSION" original "function that released a reader after the back-out"

# Another transition in progress: not ready, nothing loaded.
load $P
wait_for_sole_blocker "$BUSY_PID" 0
rollout_json apply-busy 4 apply --json "$KLP_TEST_DIR/$C.ko" || fail "apply during a transition"
jq_true "$KS/apply-busy-steps.json" "
    (.[0].kernel_checks | any(.id == \"transition\" and .status == \"fail\"))
    and .[-1].end == \"not_ready\" and all(.[]; .event != \"loaded\")" \
    || fail "apply during a transition"
no_trace_of $C
echo 0 > $LIVEPATCH/$P/enabled || fail "cannot write 0 to $P/enabled"
wait_for_unpatched $P
unload $P

# SIGINT asks; SIGTERM then backs out at once.
klpscope apply --json --yes --deadline 300 "$KLP_TEST_DIR/$P.ko" \
    > "$KS/apply-signalled.json" 2> "$KS/apply-signalled.err" &
_apply=$!
loaded_step() { grep -q '"event":"loaded"' "$KS/apply-signalled.json"; }
wait_until 60 "apply loaded $P" loaded_step
wait_for_sole_blocker "$BUSY_PID" 0
kill -INT "$_apply"
asked() { grep -q '"event":"confirm_backout"' "$KS/apply-signalled.json"; }
wait_until 10 "apply asked after SIGINT" asked
in_transition $P || fail "SIGINT alone ended the transition"
kill -TERM "$_apply"
wait "$_apply"
_status=$?
jq -s . "$KS/apply-signalled.json" > "$KS/apply-signalled-steps.json"
[ "$_status" = 5 ] || { cat "$KS/apply-signalled.err" "$KS/apply-signalled.json"; fail "apply after SIGTERM exited $_status, expected 5"; }
ks_schema rollout "$KS/apply-signalled.json" || fail "signalled apply's JSON"
steps_in_order apply-signalled loaded confirm_backout reversing reversed unloaded finished \
    || fail "signalled apply steps"
jq_true "$KS/apply-signalled-steps.json" "
    any(.[]; .event == \"reversing\" and .cause == \"interrupted\" and .signal == \"SIGTERM\")" \
    || fail "signalled apply steps"
no_trace_of $P

# Refused before anything is loaded: a patched function this kernel does
# not have (the kernel would refuse it: EINVAL), and a module built for
# another kernel of the lab (vermagic). Not ready, exit 4.
M=klp_test_patch_missing
rollout_json apply-missing 4 apply --json --yes "$KLP_TEST_DIR/$M.ko" || fail "apply of a missing function"
jq_true "$KS/apply-missing-steps.json" "
    (.[0].functions | any(.name == \"klp_test_no_such_function\" and .present == false
        and .status == \"fail\"))
    and .[-1].end == \"not_ready\" and all(.[]; .event != \"loaded\")" \
    || fail "apply of a missing function"
no_trace_of $M
FOREIGN=$KLP_TEST_DIR/foreign/klp_test_patch_cmdline.ko
rollout_json apply-foreign 4 apply --json --yes "$FOREIGN" || fail "apply of a foreign module"
jq_true "$KS/apply-foreign-steps.json" "
    (.[0].kernel_checks | any(.status == \"fail\" and (.detail | contains(\"$(uname -r)\"))))
    and .[-1].end == \"not_ready\" and all(.[]; .event != \"loaded\")" \
    || fail "apply of a foreign module"
no_trace_of $C

# Bad input: one line on stderr, exit 1, nothing loaded.
one_line_refusal() {
    _what=$1 _says=$2
    shift 2
    klpscope apply --json --yes "$@" > "$KS/bad.json" 2> "$KS/bad.err"
    _status=$?
    [ "$_status" = 1 ] && [ "$(wc -l < "$KS/bad.err")" = 1 ] && grep -q "$_says" "$KS/bad.err" \
        && [ ! -s "$KS/bad.json" ] || {
        cat "$KS/bad.err" "$KS/bad.json"
        fail "apply of $_what exited $_status, expected 1 and one line saying \"$_says\""
    }
    log "apply of $_what: $(cat "$KS/bad.err")"
}
one_line_refusal "a folder" "not a regular file" /tmp
one_line_refusal "a module that is no livepatch" "is not a livepatch module" "$KLP_TEST_DIR/klp_test_target.ko"
module_loaded klp_test_target || fail "klp_test_target is no longer loaded"

# Not root: the kernel refuses the load (EPERM), said as such; exit 7.
as_nobody /bin/klpscope apply --json --yes "$KLP_TEST_DIR/$C.ko" \
    > "$KS/apply-nobody.json" 2> "$KS/apply-nobody.err"
_status=$?
[ "$_status" = 7 ] || { cat "$KS/apply-nobody.err" "$KS/apply-nobody.json"; fail "apply as uid 65534 exited $_status, expected 7"; }
ks_schema rollout "$KS/apply-nobody.json" || fail "apply as uid 65534"
jq -s . "$KS/apply-nobody.json" > "$KS/apply-nobody-steps.json"
jq_true "$KS/apply-nobody-steps.json" "
    any(.[]; .event == \"refused\" and (.why | contains(\"EPERM\")))
    and .[-1].end == \"refused\" and all(.[]; .event != \"loaded\")" \
    || fail "apply as uid 65534"
no_trace_of $C

busy_stop
unload klp_test_target
pass
