# Scenario 18: the real modules on Debian's own kernel of their series.
# livepatch-pipe-read-kpatch (kpatch-build, for lab-6.12) and
# livepatch-pipe-read-klp (klp-build, for lab-7.3) were built for the lab
# kernels made from Debian's kernel source, not for Debian's packaged
# kernel of the same series: check --module decodes them, says not ready
# and names both vermagic strings, apply refuses them before loading
# anything, and the kernel refuses them as well.
# kernels: 6.12 7
. /lib/klpscope-test/lib.sh

case "$(uname -r)" in
    6.12.*) M=livepatch_pipe_read_kpatch FILE=livepatch-pipe-read-kpatch PRODUCER=kpatch-build ;;
    7.*) M=livepatch_pipe_read_klp FILE=livepatch-pipe-read-klp PRODUCER=klp-build ;;
    *) fail "18-real-modules-stock-kernel runs on Debian's 6.12 and 7.x, not $(uname -r)" ;;
esac
KO="$KLP_TEST_DIR/real/$FILE.ko"
[ -e "$KO" ] || fail "no $KO: the lab's real module was not packed for $(uname -r)"

ks_json stock check --json --module "$KO" --duration 1 || fail "check --module $FILE"
RELEASE=$(uname -r)
VERMAGIC=$(jq -r .module.vermagic "$KS/stock.json")
jq_true "$KS/stock.json" "
    .verdict == \"not_ready\" and .module.producer == \"$PRODUCER\"
    and (.functions | length) > 0 and all(.functions[]; .present)
    and (.kernel_checks[] | select(.id == \"vermagic\")
         | .status == \"fail\"
           and (.detail | contains(\"$VERMAGIC\"))
           and (.detail | contains(\"$RELEASE\")))" \
    || fail "check --module $FILE on $RELEASE"
log "check --module: $(jq -r '.kernel_checks[] | select(.id == "vermagic") | .detail' "$KS/stock.json")"

rollout_json stock-apply 4 apply --json --yes "$KO" || fail "apply of $FILE on $RELEASE"
jq_true "$KS/stock-apply-steps.json" '
    .[0].event == "check" and .[0].verdict == "not_ready"
    and all(.[]; .event != "loaded")' || fail "apply of $FILE on $RELEASE: steps"
! module_loaded $M || fail "apply loaded $M on $RELEASE"
[ ! -e "$LIVEPATCH/$M" ] || fail "$M in $LIVEPATCH"

insmod "$KO" 2>/dev/null && fail "the kernel loaded $FILE, built for another kernel"
! module_loaded $M || fail "module $M loaded"
pass
