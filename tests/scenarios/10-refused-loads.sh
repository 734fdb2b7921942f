# Scenario 10: patches the kernel refuses, and one layout it accepts.
# - klp_test_patch_callbacks has a callbacks-only object (an all-zero
#   `funcs` array, in .bss): check --module decodes it.
# - Loaded with pre_patch_ret=-19, its pre-patch callback fails and the
#   kernel refuses the patch: each refusal is one `refused` watch event,
#   and watch --until-complete ends with exit 7. (busybox insmod tries a
#   load twice, finit_module then init_module: the kernel refuses twice.)
# - A module built for another kernel of the lab: the kernel refuses it
#   (vermagic), and check --module says not_ready naming both strings.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_callbacks
FOREIGN=$KLP_TEST_DIR/foreign/klp_test_patch_cmdline.ko

# refusals: how many times the kernel has refused to enable the patch.
refusals() { dmesg | grep -c "failed to enable patch '$P'"; }

refused_load() {
    insmod "$KLP_TEST_DIR/$P.ko" pre_patch_ret=-19 \
        && fail "insmod $P with a failing pre-patch callback succeeded"
    assert_dmesg "pre-patch callback failed for object 'vmlinux'"
    patch_gone $P || fail "$P is in sysfs after its refused load"
}

klpscope_decoded() {
    ks_json check-$P check --module "$KLP_TEST_DIR/$P.ko" --json --duration 1 || return 1
    jq_true "$KS/check-$P.json" "
        .module.name == \"$P\"
        and (.module.objects | length) == 1 and .module.objects[0].name == null
        and (.module.objects[0].functions | length) == 0
        and .verdict != \"not_ready\"" || return 1
    log "klpscope check --module decodes $P: one object (vmlinux), no function"
    watch_for 6
}

# The watch that saw the first load: one event per refusal the kernel
# logged, none of a transition.
klpscope_refused() {
    watch_done 6 || return 1
    _refusals=$(refusals)
    jq_true "$KS/watch-events.json" "
        ([.[] | select(.event == \"refused\")] | length) == $_refusals
        and all(.[] | select(.event == \"refused\"); .patch == \"$P\"
                and (.why | contains(\"pre-patch callback failed\")))
        and ([.[] | select(.event == \"start\" or .event == \"complete\")] | length) == 0" || return 1
    log "klpscope watch: $_refusals refusals by the kernel, $_refusals refused events"
    watch_start 60
}

klpscope_until_refused() {
    watch_done 7 || return 1
    jq_true "$KS/watch-events.json" "
        (.[-1].event == \"refused\") and .[-1].patch == \"$P\"" || return 1
    log "klpscope watch --until-complete ended with 7 on: $(grep '"refused"' "$KS/watch.json" | head -n 1)"
}

klpscope_foreign() {
    ks_json foreign check --module "$FOREIGN" --json --duration 1 || return 1
    _release=$(uname -r)
    _vermagic=$(jq -r .module.vermagic "$KS/foreign.json")
    jq_true "$KS/foreign.json" "
        .verdict == \"not_ready\"
        and (.kernel_checks[] | select(.id == \"vermagic\")
             | .status == \"fail\"
               and (.detail | contains(\"$_vermagic\"))
               and (.detail | contains(\"$_release\")))" || return 1
    log "klpscope check --module: $(jq -r '.kernel_checks[] | select(.id == "vermagic") | .detail' "$KS/foreign.json")"
}

checkpoint decoded
refused_load
checkpoint refused
refused_load
checkpoint until_refused

[ -e "$FOREIGN" ] || fail "no module built for another kernel at $FOREIGN"
insmod "$FOREIGN" && fail "the kernel loaded a module built for another kernel"
log "the kernel refused $FOREIGN: $(dmesg | tail -n 1)"
checkpoint foreign
pass
