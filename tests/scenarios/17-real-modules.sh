# Scenario 17: klpscope apply and revert of livepatch modules made by the
# real tools: livepatch-pipe-read-kpatch (kpatch-build 0.9.10, lab-6.12)
# and livepatch-pipe-read-klp (klp-build of Linux 7.3, lab-7.3), built by
# `cargo xtask real-fixtures` from tests/real-patches/ for the lab kernels
# built from Debian's kernel source, and committed in
# livepatch-user/tests/fixtures/real/. Each patches vmlinux's pipe read
# path and has a post-patch callback that logs a line. With a reader
# parked on an empty FIFO in a function the module patches, apply names it
# as the blocker, status shows the patch in transition, the transition
# completes once the reader is released, the callback has run, a new
# reader sleeps in the module's copy of the function, and revert unloads it.
# kernels: lab-6.12 lab-7.3
. /lib/klpscope-test/lib.sh

case "$(uname -r)" in
    6.12.*-klplab) M=livepatch_pipe_read_kpatch FILE=livepatch-pipe-read-kpatch PRODUCER=kpatch-build ;;
    7.3.*-klplab) M=livepatch_pipe_read_klp FILE=livepatch-pipe-read-klp PRODUCER=klp-build ;;
    *) fail "17-real-modules runs on the lab kernels built from source, not $(uname -r)" ;;
esac
KO="$KLP_TEST_DIR/real/$FILE.ko"
[ -e "$KO" ] || fail "no $KO: the real modules were not packed for $(uname -r)"

# check --module decodes what the real tool made before anything is loaded.
ks_json check-real check --json --module "$KO" --duration 1 || fail "check --module $FILE"
jq_true "$KS/check-real.json" "
    .module.name == \"$M\" and .module.producer == \"$PRODUCER\"
    and ([.module.objects[] | (.name // \"vmlinux\")]) == [\"vmlinux\"]
    and (.functions | length) > 0 and all(.functions[]; .present)
    and (.kernel_checks | any(.id == \"vermagic\" and .status == \"pass\"))
    and (.kernel_checks | any(.id == \"klp_references\" and .status != \"fail\"))" \
    || fail "check --module $FILE"
FUNCS=$(jq -r '.functions[].name' "$KS/check-real.json")
log "$FILE patches: $FUNCS"

# A reader parked on an empty FIFO sleeps in the pipe read path.
FIFO=/tmp/real-fifo
READ_OUT=/tmp/real-fifo.out
park_reader() {
    rm -f "$FIFO"
    mkfifo "$FIFO"
    cat "$FIFO" > "$READ_OUT" &
    PARKED_PID=$!
    # The writer end stays open in this shell: the reader waits for data.
    exec 3> "$FIFO"
    PARKED_FUNC=
    parked_in_patched() {
        for _f in $FUNCS; do
            on_stack "$PARKED_PID" "$_f" && PARKED_FUNC=$_f && return 0
        done
        return 1
    }
    wait_until 10 "pid $PARKED_PID asleep in one of: $FUNCS" parked_in_patched
    log "pid $PARKED_PID parked in $PARKED_FUNC"
}
release_reader() {
    echo released >&3
    exec 3>&-
    wait_until 10 "pid $PARKED_PID released" exited "$PARKED_PID"
    wait "$PARKED_PID" || fail "reader $PARKED_PID failed"
    assert_eq "$(cat "$READ_OUT")" released "what reader $PARKED_PID read"
}

park_reader
klpscope apply --json --yes --deadline 120 "$KO" > "$KS/apply-real.json" 2> "$KS/apply-real.err" &
_apply=$!
loaded_step() { grep -q '"event":"loaded"' "$KS/apply-real.json"; }
wait_until 60 "apply loaded $M" loaded_step
wait_for_sole_blocker "$PARKED_PID" 0
blocker_step() {
    grep '"event":"blocker"' "$KS/apply-real.json" 2>/dev/null \
        | jq -e "select(.pid == $PARKED_PID and .function == \"$PARKED_FUNC\")" > /dev/null
}
wait_until 30 "apply names pid $PARKED_PID in $PARKED_FUNC" blocker_step

ks_json status-real status --json || fail "status during $M's transition"
jq_true "$KS/status-real.json" "
    .transition.patch == \"$M\" and .transition.direction == \"patching\"
    and .transition.tasks_pending == 1
    and any(.patches[]; .name == \"$M\" and .transition == true
        and [.objects[].name] == [\"vmlinux\"])" \
    || fail "status during $M's transition"

release_reader
wait "$_apply"
_status=$?
jq -s . "$KS/apply-real.json" > "$KS/apply-real-steps.json"
[ "$_status" = 0 ] || { cat "$KS/apply-real.err" "$KS/apply-real.json"; fail "apply of $M exited $_status"; }
ks_schema rollout "$KS/apply-real.json" || fail "apply of $M: JSON"
steps_in_order apply-real check ready loaded blocker complete finished || fail "apply of $M: steps"
jq_true "$KS/apply-real-steps.json" "
    .[0].module.producer == \"$PRODUCER\"
    and any(.[]; .event == \"complete\" and .patch == \"$M\" and .reversed == false)
    and .[-1].end == \"done\"" || fail "apply of $M: steps"

# The patch took: the callback ran, and a reader now sleeps in the module's
# copy of the function.
assert_eq "$(attr $M enabled)" 1 "$M enabled"
assert_dmesg "klpscope-real: "
park_reader
grep -q " $PARKED_FUNC+.*\[$M\]" "/proc/$PARKED_PID/stack" \
    || { cat "/proc/$PARKED_PID/stack"; fail "reader $PARKED_PID is not in $M's $PARKED_FUNC"; }
release_reader

rollout_json revert-real 0 revert --json $M || fail "revert of $M"
steps_in_order revert-real check ready disabling complete unloaded finished \
    || fail "revert of $M: steps"
patch_gone $M || fail "$M still in $LIVEPATCH"
! module_loaded $M || fail "module $M still loaded"
pass
