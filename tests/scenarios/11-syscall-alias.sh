# Scenario 11: a patch of a syscall defined with SYSCALL_DEFINE0. Its
# x86-64 entry point __x64_sys_getpid is an alias of __do_sys_getpid, and
# ftrace lists only the latter; the kernel patches by address all the same.
# check must find the function traceable (not "the patch fails"), and count
# its calls.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_getpid
CALLS=/sys/module/$P/parameters/calls
TRACEFS=/sys/kernel/tracing

# symbol_address NAME: its vmlinux address in kallsyms.
symbol_address() { grep -m1 " [tT] $1\$" /proc/kallsyms | cut -d' ' -f1; }

# getpid_call: one call of getpid, made by a new shell (busybox ash asks
# for its pid once as it starts; nothing else in the guest calls getpid,
# klpscope included: scenario 11 checks that against the patch's counter).
getpid_call() { sh -c :; }

klpscope_ready() {
    ks_json check-$P check --module "$KLP_TEST_DIR/$P.ko" --json --duration 1 || return 1
    jq_true "$KS/check-$P.json" '
        .verdict != "not_ready"
        and .functions[0].name == "__x64_sys_getpid" and .functions[0].present
        and .functions[0].traceable == true' || return 1
    log "klpscope check --module $P: __x64_sys_getpid is traceable"
    count_calls_of getpid_call unpatched 10 --function __x64_sys_getpid --duration 2 || return 1
    jq_true "$KS/unpatched.json" '
        .functions[0].calls_old == 10 and .functions[0].calls_new == 0' || return 1
    log "klpscope counted 10 calls of the old getpid"
}

# The replacement counts its own calls: the same 10, all of them new.
klpscope_patched() {
    read -r _before < "$CALLS"
    count_calls_of getpid_call patched 10 --patch "$P" --duration 2 || return 1
    read -r _after < "$CALLS"
    assert_eq "$((_after - _before))" 10 "getpid calls the replacement counted"
    jq_true "$KS/patched.json" '
        .functions[0].calls_new == 10 and .functions[0].calls_old == 0' || return 1
    log "klpscope counted 10 calls of the new getpid, as the replacement did"
}

# The kernel's own view first: one address, two names, one listed.
_x64=$(symbol_address __x64_sys_getpid)
_do=$(symbol_address __do_sys_getpid)
[ -n "$_x64" ] || fail "no __x64_sys_getpid in kallsyms"
assert_eq "$_x64" "$_do" "address of __x64_sys_getpid and __do_sys_getpid"
grep -qx "__do_sys_getpid" $TRACEFS/available_filter_functions \
    || fail "ftrace does not list __do_sys_getpid"
grep -qx "__x64_sys_getpid" $TRACEFS/available_filter_functions \
    && fail "ftrace lists the alias __x64_sys_getpid: nothing to test"
checkpoint ready

load $P
wait_for_transition $P
assert_dmesg "'$P': patching complete"
read -r _calls < "$CALLS"
getpid_call
read -r _now < "$CALLS"
assert_eq "$((_now - _calls))" 1 "getpid calls of one new shell, by the replacement's count"
checkpoint patched

echo 0 > $LIVEPATCH/$P/enabled
wait_for_unpatched $P
unload $P
pass
