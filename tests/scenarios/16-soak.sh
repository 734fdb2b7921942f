# Soak: many patch cycles in one boot, with one `klpscope watch` and one
# `klpscope serve` across all of them. Each cycle parks a reader in the
# patched function (the one true blocker), loads the patch, holds the
# reader there past the kernel's second retry round (the first runs at
# the load, the next one to two seconds later: a task that blocks through
# two rounds is a blocker, one that leaves before is not), releases it, and disables and unloads the patch as
# soon as the transition completed. The kernel's own truth comes first
# (the reader is the only task left unswitched); then klpscope's account of
# the whole run: every reader named a blocker soon after its transition
# started and no other task ever named one (kworkers, rcu, insmod failing a
# check in passing are no blockers), every transition reported once with
# its direction and no reversal that never happened, and serve's counters
# agreeing.
. /lib/klpscope-test/lib.sh

P=klp_test_patch_target
CYCLES=${SOAK_CYCLES:-8}
METRICS=http://127.0.0.1:9757/metrics

load klp_test_target
watch_launch --timeout 900 --log "$KS/watch.log" || fail "watch did not start"
# The guest's loopback starts down.
ip link set lo up || fail "cannot bring the loopback interface up"
klpscope serve --listen 127.0.0.1:9757 > "$KS/serve.out" 2> "$KS/serve.err" &
SERVE_PID=$!
serving() { wget -q -O "$KS/serve.prom" "$METRICS" 2> /dev/null; }
serve_up() {
    serving && return 0
    exited "$SERVE_PID" && { cat "$KS/serve.err"; fail "klpscope serve exited"; }
    return 1
}
wait_until 60 "klpscope serve answers $METRICS" serve_up

PARKED=
cycle=0
while [ "$cycle" -lt "$CYCLES" ]; do
    cycle=$((cycle + 1))
    park klp_test_park_wait
    PARKED="$PARKED${PARKED:+,}$PARKED_PID"
    load $P
    wait_for_sole_blocker "$PARKED_PID" 0
    # 2.5 to 4.5 s from the load: past the second round, crossing later
    # rounds at other moments.
    sleep 2.5
    sleep $((cycle % 3))
    on_stack "$PARKED_PID" klp_test_park_wait || fail "pid $PARKED_PID left klp_test_park_wait"
    release
    wait_for_transition $P 30
    echo 0 > "$LIVEPATCH/$P/enabled"
    wait_for_unpatched $P 30
    unload $P
    log "cycle $cycle of $CYCLES done"
done
# The last transition's events, read by watch's next rounds.
sleep 2
kill -INT "$WATCH_PID"
wait "$WATCH_PID"
status=$?
[ "$status" = 130 ] || fail "watch exited $status after SIGINT, expected 130"
ks_schema watch "$KS/watch.json" || fail "watch's lines are not its schema's"
serving || fail "serve stopped answering"
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "serve exited $? on SIGTERM"

count() { jq -s "$1" "$KS/watch.json"; }
false_blockers=$(count "[.[] | select(.event == \"blocker\" and ([.pid] | inside([$PARKED])) == false)] | length")
missed=$(count "[$PARKED] - [.[] | select(.event == \"blocker\") | .pid] | length")
starts=$(count '[.[] | select(.event == "start") | .direction]')
completes=$(count '[.[] | select(.event == "complete") | [.direction, .reversed]]')
reversals=$(count '[.[] | select(.event == "reverse")] | length')
latency=$(count '[foreach .[] as $e ({start: null, worst: 0};
    if $e.event == "start" then .start = $e.ts
    elif $e.event == "blocker" and .start != null then
        .worst = ([.worst, $e.ts - .start] | max) | .start = null
    else . end; .worst)] | max // 0')
log "$CYCLES cycles: false blocker events $false_blockers, missed blockers $missed," \
    "reversals $reversals, worst start-to-blocker $latency s"
if [ "$false_blockers" != 0 ]; then
    echo "---- blocker events of tasks other than the parked readers ($PARKED) ----"
    jq -c "select(.event == \"blocker\" and ([.pid] | inside([$PARKED])) == false)" "$KS/watch.json"
    fail "$false_blockers false blocker events"
fi
timeline() {
    echo "---- watch's transitions and blockers (parked readers: $PARKED) ----"
    grep -E '"event":"(start|complete|reverse|blocker|blocker_cleared)"' "$KS/watch.json" | cut -c1-200
    echo "---- what watch read: sysfs, the tracer's lifecycle events, the kernel log ----"
    grep -E 'sysfs:|kernel log:|hook: (Start|Complete|Reverse|Cancel|Round)' "$KS/watch.log" | cut -c1-220 | tail -150
}
[ "$missed" = 0 ] || { timeline; fail "$missed parked readers never named"; }
[ "$reversals" = 0 ] || { timeline; fail "$reversals reversals reported; none happened"; }
expected_starts=$(jq -n "[range($CYCLES) | \"patching\", \"unpatching\"]")
expected_completes=$(jq -n "[range($CYCLES) | [\"patching\", false], [\"unpatching\", false]]")
[ "$(echo "$starts" | jq -c .)" = "$(echo "$expected_starts" | jq -c .)" ] \
    || { timeline; fail "transitions started: $starts"; }
[ "$(echo "$completes" | jq -c .)" = "$(echo "$expected_completes" | jq -c .)" ] \
    || { timeline; fail "transitions completed: $completes"; }
jq -e "$latency <= 3" -n > /dev/null || { timeline; fail "a reader was named $latency s after its start"; }

completed=$(awk '/^klpscope_transitions_total\{outcome="completed"\}/ { print $2 }' "$KS/serve.prom")
others=$(awk '/^klpscope_transitions_total\{outcome="(reversed|forced)"\}/ { n += $2 } END { print n + 0 }' "$KS/serve.prom")
[ "$completed" = $((2 * CYCLES)) ] && [ "$others" = 0 ] \
    || { grep transitions_total "$KS/serve.prom"; fail "serve counted $completed completed, $others reversed or forced"; }
log "serve counted $completed completed transitions, none reversed or forced"
pass
