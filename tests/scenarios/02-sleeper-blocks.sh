# Scenario 2: a user task asleep in a patched function blocks the patching
# transition; once released, it switches and the transition completes.
. /lib/klpscope-test/lib.sh
# lab-tools: promtool
P=klp_test_patch_target

# metrics_say NAME PENDING ON_STACK: `klpscope metrics` into $KS/NAME.prom,
# accepted by promtool, with PENDING tasks pending and ON_STACK
# function_on_stack blockers (summed over their kinds).
metrics_say() {
    klpscope metrics > "$KS/$1.prom" 2> "$KS/$1.err"
    _status=$?
    if [ "$_status" -ne 0 ]; then
        cat "$KS/$1.err"
        echo "FAIL: klpscope metrics exited $_status"
        return 1
    fi
    if ! promtool check metrics < "$KS/$1.prom"; then
        cat "$KS/$1.prom"
        echo "FAIL: promtool check metrics refused $KS/$1.prom"
        return 1
    fi
    _pending=$(awk '$1 == "klpscope_transition_tasks_pending" { print $2 }' "$KS/$1.prom")
    _on_stack=$(awk '/^klpscope_transition_blockers\{.*reason="function_on_stack"/ { n += $2 }
        END { print n + 0 }' "$KS/$1.prom")
    if [ "$_pending" != "$2" ] || [ "$_on_stack" != "$3" ]; then
        cat "$KS/$1.prom"
        echo "FAIL: klpscope metrics: $_pending pending (expected $2), $_on_stack function_on_stack blockers (expected $3)"
        return 1
    fi
    log "klpscope metrics: $2 pending, $3 function_on_stack blockers; promtool accepts it"
}

# Before the patch: check predicts exactly the parked task; watch traces.
klpscope_parked() {
    predicts $P "$PARKED_PID" false || return 1
    metrics_say metrics-idle 0 0 || return 1
    watch_start
}

# Blocked: the actual blocker (patch_state, asserted by the lab) is the one
# predicted; diagnose (with and without eBPF), status and watch name it.
klpscope_blocked() {
    diagnose_names "$PARKED_PID" cat false klp_test_park_wait patching || return 1
    diagnose_names "$PARKED_PID" cat false klp_test_park_wait patching --no-ebpf || return 1
    if kernel_verdicts; then
        jq_true "$KS/diagnose.json" '
            .verdicts_from == "kernel" and .blockers[0].failed_checks >= 1' || return 1
    else
        jq_true "$KS/diagnose.json" '
            .verdicts_from == "inferred" and (.ebpf_unavailable | contains("klp_check_and_switch_task"))' || return 1
    fi
    ks_json status status --json || return 1
    jq_true "$KS/status.json" "
        .transition.patch == \"$P\" and .transition.direction == \"patching\"
        and .transition.tasks_pending == 1 and .transition.tasks_total > 1
        and .patches[0].transition == true" || return 1
    events_true "
        (.[] | select(.event == \"start\") | .direction == \"patching\")
        and ([.[] | select(.event == \"blocker\")] | length) == 1
        and (.[] | select(.event == \"blocker\")
             | .pid == $PARKED_PID and .comm == \"cat\" and .kthread == false
               and .reason == \"function_on_stack\"
               and .function == \"klp_test_park_wait\")
        and ((.[] | select(.event == \"blocker\") | .ts)
             - (.[] | select(.event == \"start\") | .ts)) <= 2" || return 1
    log "klpscope watch reported pid $PARKED_PID within 2 s of the start"
    metrics_say metrics-blocked 1 1 || return 1
    grep -q "^klpscope_transition_blocker_info{.*function=\"klp_test_park_wait\".*pid=\"$PARKED_PID\"" \
        "$KS/metrics-blocked.prom" || { echo "FAIL: metrics does not name pid $PARKED_PID"; return 1; }
    grep -q "^klpscope_transition_info{direction=\"patching\",patch=\"$P\"" "$KS/metrics-blocked.prom" \
        || { echo "FAIL: metrics does not name the transition of $P"; return 1; }
}

klpscope_complete() {
    watch_done 0 || return 1
    jq_true "$KS/watch-events.json" "
        any(.[]; .event == \"blocker_cleared\" and .pid == $PARKED_PID)
        and any(.[]; .event == \"complete\" and .patch == \"$P\" and .reversed == false)" || return 1
    ks_json status status --json || return 1
    # The object's patched file (not on 5.10): its value, else a reason.
    if [ -e "$LIVEPATCH/$P/klp_test_target/patched" ]; then
        _patched='.patches[0].objects[0].patched == true'
    else
        _patched='(.patches[0].objects[0].patched.unknown | type) == "string"'
    fi
    jq_true "$KS/status.json" "
        .transition == null and .patches[0].enabled == true
        and .patches[0].objects[0].name == \"klp_test_target\"
        and $_patched
        and ([.patches[0].objects[0].functions[].name] | sort)
            == [\"klp_test_busy_loop\", \"klp_test_park_wait\"]" || return 1
    metrics_say metrics-complete 0 0 || return 1
    grep -qx "klpscope_transition_in_progress 0" "$KS/metrics-complete.prom" \
        && grep -qx "klpscope_patch_enabled{patch=\"$P\"} 1" "$KS/metrics-complete.prom" \
        && ! grep -q "^klpscope_transition_blocker_info" "$KS/metrics-complete.prom" \
        || { echo "FAIL: metrics after completion"; return 1; }
}

load klp_test_target
park klp_test_park_wait
checkpoint parked
load $P
assert_dmesg "'$P': starting patching transition"
wait_for_sole_blocker "$PARKED_PID" 0
assert_blocked $P 3
on_stack "$PARKED_PID" klp_test_park_wait || fail "pid $PARKED_PID left klp_test_park_wait"
checkpoint blocked

release
assert_eq "$PARKED_VERSION" original "function that released the parked task"
wait_for_transition $P
# The object's patched file came after 5.10; there the new reader below,
# released by the replacement, is the proof.
[ ! -e "$LIVEPATCH/$P/klp_test_target/patched" ] \
    || assert_eq "$(attr $P klp_test_target/patched)" 1 "$P klp_test_target/patched"
assert_dmesg "'$P': patching complete"
assert_all_switched
checkpoint complete

# A new reader runs the replacement function.
park livepatch_klp_test_park_wait
release
assert_eq "$PARKED_VERSION" patched "function that released a new reader"
pass
