# Scenario 15: klpscope apply and revert of livepatch modules in the layouts
# of the real producers, built from each one's own init code (not by the
# tools): klp_test_kpatch (kpatch-build's .kpatch.funcs, every kernel) and
# klp_test_klpbuild (klp-build's .init.klp_objects, on Debian's 7.2 and 7.3:
# its init code needs the kernel's klp_find_section_by_name and
# kzalloc_obj). Each patches
# klp_test_park_wait and klp_test_busy_loop of klp_test_target and vmlinux
# cmdline_proc_show, with a post-patch callback that logs a line. With a
# reader parked in klp_test_park_wait, apply names it as the blocker, the
# transition completes once it is released (status shows the patch in
# transition in between), the callback has run, and revert unloads it.
. /lib/klpscope-test/lib.sh

MODULES=klp_test_kpatch
if [ -e "$KLP_TEST_DIR/klp_test_klpbuild.ko" ]; then
    MODULES="$MODULES klp_test_klpbuild"
else
    case "$(uname -r)" in
        7.[2-9]*) fail "klp_test_klpbuild.ko was not built for $(uname -r)" ;;
        *) log "no klp_test_klpbuild on $(uname -r) (klp-build's init code needs 7.2+): kpatch layout only" ;;
    esac
fi

load klp_test_target

for M in $MODULES; do
    case $M in
        klp_test_kpatch) PRODUCER=kpatch-build REPLACE="on unless built with -R" ;;
        klp_test_klpbuild) PRODUCER=klp-build REPLACE="on unless built with --no-replace" ;;
    esac

    # check --module decodes the layout before anything is loaded.
    ks_json "check-$M" check --json --module "$KLP_TEST_DIR/$M.ko" --duration 1 \
        || fail "check --module $M"
    jq_true "$KS/check-$M.json" "
        .module.producer == \"$PRODUCER\"
        and .module.replace == {\"default\": \"$REPLACE\"}
        and ([.module.objects[] | (.name // \"vmlinux\")] | sort) == [\"klp_test_target\", \"vmlinux\"]
        and ([.functions[] | select(.present) | .name] | sort)
            == [\"cmdline_proc_show\", \"klp_test_busy_loop\", \"klp_test_park_wait\"]
        and (.kernel_checks | any(.id == \"vermagic\" and .status == \"pass\"))" \
        || fail "check --module $M"

    # A reader parked in the original function holds the transition up.
    park klp_test_park_wait
    klpscope apply --json --yes --deadline 120 "$KLP_TEST_DIR/$M.ko" \
        > "$KS/apply-$M.json" 2> "$KS/apply-$M.err" &
    _apply=$!
    loaded_step() { grep -q '"event":"loaded"' "$KS/apply-$M.json"; }
    wait_until 60 "apply loaded $M" loaded_step
    wait_for_sole_blocker "$PARKED_PID" 0
    blocker_step() {
        grep '"event":"blocker"' "$KS/apply-$M.json" 2>/dev/null \
            | jq -e "select(.pid == $PARKED_PID and .function == \"klp_test_park_wait\")" > /dev/null
    }
    wait_until 30 "apply names pid $PARKED_PID in klp_test_park_wait" blocker_step

    ks_json "status-$M" status --json || fail "status during $M's transition"
    jq_true "$KS/status-$M.json" "
        .transition.patch == \"$M\" and .transition.direction == \"patching\"
        and .transition.tasks_pending == 1
        and any(.patches[]; .name == \"$M\" and .transition == true
            and ([.objects[].name] | sort) == [\"klp_test_target\", \"vmlinux\"])" \
        || fail "status during $M's transition"

    release
    assert_eq "$PARKED_VERSION" original "function that released the reader parked before $M"
    wait "$_apply"
    _status=$?
    jq -s . "$KS/apply-$M.json" > "$KS/apply-$M-steps.json"
    [ "$_status" = 0 ] || { cat "$KS/apply-$M.err" "$KS/apply-$M.json"; fail "apply of $M exited $_status"; }
    ks_schema rollout "$KS/apply-$M.json" || fail "apply of $M: JSON"
    steps_in_order "apply-$M" check ready loaded blocker complete finished || fail "apply of $M: steps"
    jq_true "$KS/apply-$M-steps.json" "
        .[0].module.producer == \"$PRODUCER\"
        and any(.[]; .event == \"complete\" and .patch == \"$M\" and .reversed == false)
        and .[-1].end == \"done\"" || fail "apply of $M: steps"

    # The patch took: replacements run, the callback ran.
    assert_eq "$(attr $M enabled)" 1 "$M enabled"
    assert_eq "$(cat /proc/cmdline)" "$M: livepatched" "/proc/cmdline under $M"
    assert_dmesg "$M: post-patch callback ran"
    park livepatch_klp_test_park_wait
    release
    assert_eq "$PARKED_VERSION" patched "function that released a reader under $M"

    rollout_json "revert-$M" 0 revert --json $M || fail "revert of $M"
    steps_in_order "revert-$M" check ready disabling complete unloaded finished \
        || fail "revert of $M: steps"
    patch_gone $M || fail "$M still in $LIVEPATCH"
    ! module_loaded $M || fail "module $M still loaded"
    grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline still patched after reverting $M"
done

unload klp_test_target
pass
