# Scenario 8: kthreads asleep uninterruptibly (state D) in a patched
# function. After 15 failed rounds livepatch's fake signal wakes only
# interruptible sleepers: these stay, and the transition stays blocked until
# they are released. An unprivileged diagnose cannot read their stacks: it
# must still list them, as unexplained, and say the diagnosis is incomplete.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_target
N=3

klpscope_dparked() {
    predicts_all $P "$DPARK_PIDS" true
}

# diagnose_lists_dparked NAME [--no-ebpf]: diagnose reports exactly the
# dpark kthreads, each blocked by the original klp_test_park_wait, in state
# D, with no prospect of clearing by itself.
diagnose_lists_dparked() {
    ks_json "$1" diagnose --json $2 || return 1
    jq_true "$KS/$1.json" "
        .in_transition == true and .patch == \"$P\" and .direction == \"patching\"
        and .tasks_pending == $N and .signals_sent == true
        and ([.blockers[].pid] | sort) == ($(json_array "$DPARK_PIDS") | sort)
        and all(.blockers[];
            .comm == $COMMS[.pid | tostring] and .kthread == true
            and .state == \"D\" and .reason == \"function_on_stack\"
            and .function == \"klp_test_park_wait\"
            and .version == {\"kind\":\"original\"}
            and .forecast == \"will_not_clear_by_itself\")" || return 1
    log "klpscope diagnose${2:+ $2} lists kthreads $DPARK_PIDS in D, will not clear"
}

# As uid 65534: patch_state and stacks of root's tasks are unreadable. The
# blocked kthreads must be listed, unexplained; exit 3, diagnosis incomplete.
diagnose_unprivileged() {
    as_nobody /bin/klpscope diagnose --json --no-ebpf \
        > "$KS/diagnose-nobody.json" 2> "$KS/diagnose-nobody.err"
    _status=$?
    if [ "$_status" != 3 ]; then
        echo "FAIL: klpscope diagnose --json --no-ebpf as uid 65534 exited $_status, expected 3"
        cat "$KS/diagnose-nobody.err" "$KS/diagnose-nobody.json"
        return 1
    fi
    ks_schema diagnose "$KS/diagnose-nobody.json" || return 1
    jq_true "$KS/diagnose-nobody.json" "
        .in_transition == true and .patch == \"$P\" and .tasks_pending >= $N
        and ($(json_array "$DPARK_PIDS") - [.blockers[] | select(.reason == \"unexplained\") | .pid]) == []" || return 1
    log "klpscope diagnose as uid 65534 lists kthreads $DPARK_PIDS as unexplained, exit 3: $(jq -c \
        '{tasks_pending, why: ([.blockers[].unexplained] | group_by(.) | map("\(length) x \(.[0])"))}' \
        "$KS/diagnose-nobody.json")"
}

klpscope_blocked() {
    diagnose_lists_dparked diagnose || return 1
    diagnose_lists_dparked diagnose--no-ebpf --no-ebpf || return 1
    diagnose_unprivileged || return 1
}

klpscope_complete() {
    ks_json status status --json || return 1
    jq_true "$KS/status.json" "
        .transition == null and .patches[0].name == \"$P\" and .patches[0].enabled == true" || return 1
}

still_dparked() {
    in_transition $P && only_tasks_in_state "$DPARK_PIDS" 0 && all_dparked klp_test_park_wait
}

load klp_test_target
dpark_start $N klp_test_park_wait
# Each kthread's comm as the kernel shows it, for the checks: {"pid":"comm"}.
COMMS=
for _pid in $DPARK_PIDS; do
    read -r _comm < /proc/$_pid/comm
    COMMS="$COMMS${COMMS:+,}\"$_pid\":\"$_comm\""
done
COMMS="{$COMMS}"
checkpoint dparked

load $P
assert_dmesg "'$P': starting patching transition"
wait_for_sole_blockers "$DPARK_PIDS" 0
# The fake signals come after 15 failed rounds (about 15-16 s).
wait_until 40 "dmesg shows: signaling remaining tasks" dmesg_has "signaling remaining tasks"
holds 3 "kthreads $DPARK_PIDS still blocking, in D, in klp_test_park_wait" still_dparked
# The kernel's own permissions: uid 65534 cannot read their stacks.
assert_eq "$(as_nobody id -u)" 65534 "uid of as_nobody"
for _pid in $DPARK_PIDS; do
    if as_nobody "cat /proc/$_pid/stack" > /dev/null 2>&1; then
        fail "uid 65534 can read /proc/$_pid/stack"
    fi
done
checkpoint blocked

dpark_release
wait_for_transition $P
# The object's patched file: not on 5.10.
[ ! -e "$LIVEPATCH/$P/klp_test_target/patched" ] \
    || assert_eq "$(attr $P klp_test_target/patched)" 1 "$P klp_test_target/patched"
assert_dmesg "'$P': patching complete"
assert_all_switched
checkpoint complete

# Once patched, a new kthread sleeps in the replacement, also in D.
dpark_start 1 livepatch_klp_test_park_wait
dpark_release
echo 0 > $LIVEPATCH/$P/enabled || fail "cannot write 0 to $P/enabled"
wait_for_unpatched $P
unload $P
unload klp_test_target
pass
