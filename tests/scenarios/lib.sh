# Scenario library of the klpscope VM, sourced by every scenario:
#   . /lib/klpscope-test/lib.sh
# Runs in busybox sh as root. Waits poll every 0.2 s and are bounded; a
# failed assertion prints the livepatch state and exits 1.

KLP_TEST_DIR=/lib/klpscope-test
TARGET=/sys/kernel/debug/klp_test_target
LIVEPATCH=/sys/kernel/livepatch
# 1: checkpoints also run the scenario's klpscope_<checkpoint> functions.
: "${KLPSCOPE_CHECKS:=1}"

log() { echo "scenario: $*"; }

show_state() {
    echo "---- livepatch sysfs ----"
    for f in "$LIVEPATCH"/*/enabled "$LIVEPATCH"/*/transition; do
        [ -e "$f" ] && echo "$f: $(cat "$f")"
    done
    echo "---- tasks not yet switched (patch_state 0 / 1) ----"
    echo "0: $(tasks_in_state 0)"
    echo "1: $(tasks_in_state 1)"
    # The fewer side is where the blockers are: name them, with their stacks.
    for _state in 0 1; do
        _tids=$(tasks_in_state $_state)
        [ "$(echo $_tids | wc -w)" -le 3 ] || continue
        for _tid in $_tids; do
            _dir=$(echo /proc/[0-9]*/task/$_tid)
            echo "-- tid $_tid ($(cat $_dir/comm 2>/dev/null), state $_state):"
            cat $_dir/stack 2>/dev/null
        done
    done
    echo "---- dmesg ----"
    dmesg | tail -n 15
}

fail() {
    echo "FAIL: $*"
    show_state
    exit 1
}

pass() {
    log "PASS"
    exit 0
}

# wait_until SECONDS WHAT COMMAND...: polls until COMMAND succeeds.
wait_until() {
    _seconds=$1 _what=$2
    shift 2
    _tries=$((_seconds * 5))
    until "$@"; do
        _tries=$((_tries - 1))
        [ "$_tries" -gt 0 ] || fail "after ${_seconds}s, still not: $_what"
        sleep 0.2
    done
}

# holds SECONDS WHAT COMMAND...: COMMAND keeps succeeding for SECONDS.
holds() {
    _seconds=$1 _what=$2
    shift 2
    _tries=$((_seconds * 5))
    while [ "$_tries" -gt 0 ]; do
        "$@" || fail "stopped holding before ${_seconds}s: $_what"
        _tries=$((_tries - 1))
        sleep 0.2
    done
}

assert_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

# checkpoint NAME: the kernel state is asserted and stable here. klpscope's
# own checks hook in: a scenario defines klpscope_NAME, which runs (and must
# succeed) when KLPSCOPE_CHECKS=1.
checkpoint() {
    log "checkpoint $1"
    [ "$KLPSCOPE_CHECKS" = 1 ] || return 0
    if type "klpscope_$1" >/dev/null 2>&1; then
        "klpscope_$1" || fail "klpscope check at checkpoint $1"
    fi
}

load() {
    insmod "$KLP_TEST_DIR/$1.ko" || fail "insmod $1"
    log "loaded $1"
}

unload() {
    rmmod "$1" || fail "rmmod $1"
    log "unloaded $1"
}

# attr PATCH FILE: a file of the patch's sysfs folder.
attr() {
    _value=
    read -r _value < "$LIVEPATCH/$1/$2"
    echo "$_value"
}

in_transition() { [ "$(attr "$1" transition)" = 1 ]; }
transition_done() { [ "$(attr "$1" transition)" = 0 ]; }
patch_gone() { [ ! -e "$LIVEPATCH/$1" ]; }

# wait_for_transition PATCH [SECONDS]
wait_for_transition() {
    wait_until "${2:-20}" "transition of $1 complete" transition_done "$1"
}

# wait_for_unpatched PATCH [SECONDS]: a disabled patch leaves sysfs once its
# unpatching transition completes.
wait_for_unpatched() {
    wait_until "${2:-20}" "$1 unpatched and gone from sysfs" patch_gone "$1"
}

# assert_blocked PATCH SECONDS: the transition stays in progress.
assert_blocked() {
    holds "$2" "transition of $1 in progress" in_transition "$1"
}

# tasks_in_state STATE: the tids whose patch_state is STATE (-1: no
# transition, 0: unpatched, 1: patched). Builtins only: a forked reader
# would itself be a new task.
tasks_in_state() {
    _tids=
    for _f in /proc/[0-9]*/task/[0-9]*/patch_state; do
        _state=
        # A task may exit meanwhile: silence the failed open.
        read -r _state 2>/dev/null < "$_f" || continue
        if [ "$_state" = "$1" ]; then
            _tid=${_f%/patch_state}
            _tids="$_tids${_tids:+ }${_tid##*/}"
        fi
    done
    echo "$_tids"
}

only_task_in_state() { [ "$(tasks_in_state "$2")" = "$1" ]; }
no_task_in_transition() { [ -z "$(tasks_in_state 0)$(tasks_in_state 1)" ]; }

# wait_for_sole_blocker PID STATE: every task but PID leaves STATE. Tasks
# with momentarily unreliable stacks switch within a few rounds.
wait_for_sole_blocker() {
    wait_until 15 "pid $1 the only task with patch_state $2" only_task_in_state "$1" "$2"
}

assert_all_switched() {
    no_task_in_transition || fail "tasks still in a transition: 0: $(tasks_in_state 0) 1: $(tasks_in_state 1)"
}

dmesg_has() { dmesg | grep -qF -- "$1"; }

# assert_dmesg TEXT: the kernel logged TEXT (waits a little for it).
assert_dmesg() { wait_until 5 "dmesg shows: $1" dmesg_has "$1"; }

# on_stack PID FUNCTION: FUNCTION is in the task's kernel stack.
on_stack() { grep -q " $2+" "/proc/$1/stack" 2>/dev/null; }

# still_on_stack PID FUNCTION: a task that wakes now and then is still
# inside FUNCTION. One read is not enough: a task on a CPU shows no stack (the
# unwinder does not walk a running task).
still_on_stack() { wait_until 5 "pid $1 still in $2" on_stack "$1" "$2"; }

exited() { [ ! -e "/proc/$1" ] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

PARKED_OUT=/tmp/klp-test-parked.out

# park FUNCTION [FILE]: starts a task that reads the target module's park
# file (or FILE: cpark parks in klp_test_call) and sleeps in FUNCTION
# (klp_test_park_wait, or livepatch_klp_test_park_wait once patched); sets
# PARKED_PID.
park() {
    cat "$TARGET/${2:-park}" > "$PARKED_OUT" &
    PARKED_PID=$!
    wait_until 10 "pid $PARKED_PID asleep in $1" on_stack "$PARKED_PID" "$1"
    log "pid $PARKED_PID parked in $1"
}

# release: wakes the parked task and waits for it to exit; PARKED_VERSION is
# what it read: "original" or "patched", the version that released it.
release() {
    echo 1 > "$TARGET/release"
    wait_until 10 "pid $PARKED_PID released" exited "$PARKED_PID"
    wait "$PARKED_PID" || fail "parked reader $PARKED_PID failed"
    read -r PARKED_VERSION < "$PARKED_OUT"
    log "pid $PARKED_PID released by the $PARKED_VERSION function"
}

# busy_start FUNCTION: starts the target's kthread, looping in FUNCTION;
# sets BUSY_PID.
busy_start() {
    echo 1 > "$TARGET/busy" || fail "cannot start the busy kthread"
    read -r BUSY_PID < "$TARGET/busy"
    wait_until 10 "kthread $BUSY_PID in $1" on_stack "$BUSY_PID" "$1"
    log "kthread $BUSY_PID loops in $1"
}

busy_stop() {
    echo 0 > "$TARGET/busy" || fail "cannot stop the busy kthread"
    log "kthread $BUSY_PID stopped"
}

# task_state PID: the scheduler's state letter (/proc/PID/stat field 3:
# R, S, D, ...). The comm before it may hold spaces: cut after the last ')'.
task_state() {
    _stat=
    read -r _stat 2>/dev/null < "/proc/$1/stat"
    _stat=${_stat##*) }
    echo "${_stat%% *}"
}

# dparked PID FUNCTION: PID sleeps uninterruptibly (state D) in FUNCTION.
dparked() { [ "$(task_state "$1")" = D ] && on_stack "$1" "$2"; }

all_dparked() {
    for _pid in $DPARK_PIDS; do
        dparked "$_pid" "$1" || return 1
    done
}

# dpark_start N FUNCTION: starts N kthreads (klp_dpark/<i>) asleep in
# TASK_UNINTERRUPTIBLE in FUNCTION (klp_test_park_wait, or
# livepatch_klp_test_park_wait once patched); sets DPARK_PIDS.
dpark_start() {
    echo "$1" > "$TARGET/dpark" || fail "cannot start $1 dpark kthreads"
    read -r DPARK_PIDS < "$TARGET/dpark"
    assert_eq "$(echo $DPARK_PIDS | wc -w)" "$1" "dpark kthreads started"
    wait_until 10 "kthreads $DPARK_PIDS in state D in $2" all_dparked "$2"
    log "kthreads $DPARK_PIDS asleep (D) in $2"
}

# dpark_release: wakes the dpark kthreads and waits for them to exit.
dpark_release() {
    echo 1 > "$TARGET/release"
    for _pid in $DPARK_PIDS; do
        wait_until 10 "kthread $_pid released" exited "$_pid"
    done
    log "kthreads $DPARK_PIDS released"
}

# only_tasks_in_state "TIDS" STATE: exactly the tasks TIDS (in any order)
# have patch_state STATE.
only_tasks_in_state() {
    _got=$(tasks_in_state "$2")
    [ "$(echo $_got | wc -w)" = "$(echo $1 | wc -w)" ] || return 1
    for _tid in $_got; do
        case " $1 " in
            *" $_tid "*) ;;
            *) return 1 ;;
        esac
    done
}

# wait_for_sole_blockers "TIDS" STATE: every task but TIDS leaves STATE.
wait_for_sole_blockers() {
    wait_until 15 "tids $1 the only tasks with patch_state $2" only_tasks_in_state "$1" "$2"
}

# as_nobody COMMAND...: runs COMMAND (one shell command line) as uid and gid
# 65534 with no capabilities. busybox su finds users in /etc/passwd, which
# the guest lacks: the first call writes root and nobody there.
as_nobody() {
    if ! grep -q '^nobody:' /etc/passwd 2>/dev/null; then
        mkdir -p /etc
        echo 'root:x:0:0:root:/root:/bin/sh' >> /etc/passwd
        echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >> /etc/passwd
        echo 'root:x:0:' >> /etc/group
        echo 'nogroup:x:65534:' >> /etc/group
    fi
    su -s /bin/sh nobody -c "$*"
}

# ---- klpscope checks (run from the scenarios' klpscope_<checkpoint>) ----

KS=/tmp/klpscope
mkdir -p "$KS"

# The kernel's own verdicts (probes on klp_check_and_switch_task): the
# function exists from 5.17 on (5.10 inlines it); klpscope then infers.
kernel_verdicts() {
    _release=$(uname -r)
    _major=${_release%%.*}
    _minor=${_release#*.}
    _minor=${_minor%%[!0-9]*}
    [ "$_major" -gt 5 ] || { [ "$_major" -eq 5 ] && [ "$_minor" -ge 17 ]; }
}

# jq_true FILE FILTER: FILTER holds on the JSON in FILE; otherwise print
# both and fail the check.
jq_true() {
    if ! jq -e "$2" "$1" >/dev/null 2>&1; then
        echo "---- $1 ----"
        cat "$1"
        echo "FAIL: jq '$2' is not true for $1"
        return 1
    fi
    # ks_json's run with tasks read from procfs: held to the same filter.
    _twin=${1%.json}.procfs.json
    if [ -e "$_twin" ] && ! jq -e "$2" "$_twin" >/dev/null 2>&1; then
        echo "---- $_twin ----"
        cat "$_twin"
        echo "FAIL: jq '$2' is true with the BPF task iterator ($1) but not with procfs ($_twin)"
        return 1
    fi
}

# ks_schema OUTPUT FILE: FILE holds klpscope's OUTPUT (status, check,
# diagnose: a document; watch, rollout: JSON lines) as its checked-in JSON
# Schema says (klpscope-json-check, packed into every boot).
ks_schema() {
    if ! klpscope-json-check "$1" "$2" 2> "$2.schema-errors"; then
        cat "$2.schema-errors"
        echo "FAIL: $2 is not a valid klpscope $1 output (its JSON Schema)"
        return 1
    fi
}

# ks_output ARGS...: which JSON output `klpscope ARGS...` writes, by its
# command (global options such as --log FILE come before it).
ks_output() {
    while [ $# -gt 0 ]; do
        case $1 in
            --log | --color) shift 2 ;;
            -*) shift ;;
            apply | revert) echo rollout; return ;;
            *) echo "$1"; return ;;
        esac
    done
}

# ks_json NAME ARGS...: runs `klpscope ARGS...`, its stdout into $KS/NAME.json;
# a failed run prints its stderr and fails. Sets KS_STATUS. Without
# --no-ebpf among ARGS it runs twice: reading tasks with the BPF task
# iterator (required: KLPSCOPE_TASK_SOURCE=iterator), then from procfs into
# $KS/NAME.procfs.json, which must exit alike and which jq_true holds to
# the same filters (ks_twin).
ks_json() {
    _name=$1
    shift
    rm -f "$KS/$_name.procfs.json"
    _source=auto
    case " $* " in
        *" --no-ebpf "*) ;;
        *) _source=iterator ;;
    esac
    KLPSCOPE_TASK_SOURCE=$_source klpscope "$@" > "$KS/$_name.json" 2> "$KS/$_name.err"
    KS_STATUS=$?
    if [ "$KS_STATUS" -ne 0 ] && [ "$KS_STATUS" -ne 3 ] && [ "$KS_STATUS" -ne 4 ]; then
        echo "FAIL: klpscope $* exited $KS_STATUS"
        cat "$KS/$_name.err"
        return 1
    fi
    ks_schema "$(ks_output "$@")" "$KS/$_name.json" || return 1
    [ "$_source" = iterator ] || return 0
    ks_twin "$_name" "$@"
}

# ks_twin NAME ARGS...: `klpscope ARGS...` again with tasks from procfs
# (KLPSCOPE_TASK_SOURCE=procfs) into $KS/NAME.procfs.json; it must exit as
# the run with the task iterator did (KS_STATUS).
ks_twin() {
    _name=$1
    shift
    KLPSCOPE_TASK_SOURCE=procfs klpscope "$@" \
        > "$KS/$_name.procfs.json" 2> "$KS/$_name.procfs.err"
    _twin_status=$?
    if [ "$_twin_status" -ne "$KS_STATUS" ]; then
        echo "FAIL: klpscope $* exited $KS_STATUS with the BPF task iterator, $_twin_status with procfs"
        cat "$KS/$_name.err" "$KS/$_name.procfs.err"
        return 1
    fi
    ks_schema "$(ks_output "$@")" "$KS/$_name.procfs.json"
}

# counter_attached LOG: klpscope's log (--log LOG) says whether its call
# counter attached: the attaching is over. (The process's file descriptors
# do not tell: before 5.15 a kprobe attaches through a perf event, no
# bpf_link.)
counter_attached() { grep -q "eBPF call_counter: " "$1" 2>/dev/null; }

# watch_ready: watch's first line is its `ready` event: its tracer (or
# poller) is attached and has polled once, so a transition started now is
# seen, however quick.
watch_ready() { grep -q '"event": *"ready"' "$KS/watch.json" 2> /dev/null; }

# watch_start [SECONDS]: `klpscope watch --json --until-complete` in the
# background; returns once it said it is ready (within 30 s: loading BTF
# and its programs is slow under TCG); sets WATCH_PID.
watch_start() {
    watch_launch --until-complete --timeout "${1:-90}"
}

# watch_for SECONDS: `klpscope watch --json` for SECONDS, whatever happens
# (it then exits 6), as watch_start.
watch_for() {
    watch_launch --timeout "$1"
}

watch_launch() {
    # An earlier watch's ready line must not count: the new watch truncates
    # the file only once it runs.
    rm -f "$KS/watch.json"
    klpscope watch --json "$@" > "$KS/watch.json" 2> "$KS/watch.err" &
    WATCH_PID=$!
    _tries=150
    until watch_ready; do
        if exited "$WATCH_PID"; then
            watch_ready && break
            echo "FAIL: klpscope watch $WATCH_PID exited before it was ready"
            cat "$KS/watch.err" "$KS/watch.json"
            return 1
        fi
        _tries=$((_tries - 1))
        if [ "$_tries" -le 0 ]; then
            echo "FAIL: klpscope watch $WATCH_PID not ready after 30s"
            cat "$KS/watch.err" "$KS/watch.json"
            return 1
        fi
        sleep 0.2
    done
    log "klpscope watch $WATCH_PID is ready: $(grep '"event": *"ready"' "$KS/watch.json")"
}

# watch_done STATUS: the watcher ended with STATUS (0 completed, 5
# reversed); its events are then in $KS/watch.json, one per line.
watch_done() {
    _tries=100
    until exited "$WATCH_PID"; do
        _tries=$((_tries - 1))
        if [ "$_tries" -le 0 ]; then
            echo "FAIL: klpscope watch $WATCH_PID still running after 20s"
            cat "$KS/watch.err" "$KS/watch.json"
            return 1
        fi
        sleep 0.2
    done
    wait "$WATCH_PID"
    _status=$?
    if [ "$_status" != "$1" ]; then
        echo "FAIL: klpscope watch exited $_status, expected $1"
        cat "$KS/watch.err" "$KS/watch.json"
        return 1
    fi
    ks_schema watch "$KS/watch.json" || return 1
    jq -s . "$KS/watch.json" > "$KS/watch-events.json"
}

# events_true FILTER: FILTER holds on the array of watch events so far.
events_true() {
    jq -s . "$KS/watch.json" > "$KS/watch-events.json"
    # On failure the events one per line, the last ones: what the console
    # tail of a failed run keeps.
    if ! jq -e "$1" "$KS/watch-events.json" > /dev/null 2>&1; then
        echo "---- $KS/watch.json, its last 30 events ----"
        tail -n 30 "$KS/watch.json" | cut -c1-240
        echo "FAIL: jq '$1' is not true for watch's events"
        return 1
    fi
}

# diagnose_names PID COMM KTHREAD FUNCTION DIRECTION [--no-ebpf]: diagnose
# reports exactly one blocker, that task, blocked by FUNCTION on its stack.
diagnose_names() {
    _file=diagnose$6
    ks_json "$_file" diagnose --json $6 || return 1
    jq_true "$KS/$_file.json" "
        .in_transition == true and .direction == \"$5\" and .tasks_pending >= 1
        and (.blockers | length) == 1
        and .blockers[0].pid == $1 and .blockers[0].comm == \"$2\"
        and .blockers[0].kthread == $3
        and .blockers[0].reason == \"function_on_stack\"
        and .blockers[0].function == \"$4\"
        and (.blockers[0].stack | length) > 0
        and (.blockers[0].advice | length) > 0" || return 1
    log "klpscope diagnose${6:+ $6} names $2 pid $1 in $4"
}

# predicts PATCH PID KTHREAD: `check --module` on PATCH's .ko predicts
# exactly one persistent blocker, PID.
predicts() {
    ks_json check-$1 check --module "$KLP_TEST_DIR/$1.ko" --json --duration 2 || return 1
    jq_true "$KS/check-$1.json" "
        ([.predicted_blockers[] | select(.persistent)] | length) == 1
        and ([.predicted_blockers[] | select(.persistent)][0]
             | .tid == $2 and .kthread == $3)" || return 1
    log "klpscope check --module $1 predicts pid $2"
}

# count_calls NAME N ARGS...: `klpscope check ARGS --json`, with N reads of
# /proc/cmdline made while its call counter is attached.
count_calls() {
    count_calls_of read_cmdline "$@"
}

read_cmdline() { read -r _line < /proc/cmdline; }

# call_target: one call of klp_test_target's klp_test_call (an open of its
# `call` file, made by the shell itself: no new task).
call_target() { : < "$TARGET/call"; }

# calls LOAD N: runs the shell function LOAD N times.
calls() {
    _i=0
    while [ "$_i" -lt "$2" ]; do
        "$1"
        _i=$((_i + 1))
    done
}

# count_calls_of LOAD NAME N ARGS...: `klpscope check ARGS --json` into
# $KS/NAME.json, with N runs of LOAD made while its call counter is
# attached.
count_calls_of() {
    _load=$1 _name=$2 _n=$3
    shift 3
    count_calls_start "$_name" "$@" || return 1
    calls "$_load" "$_n"
    count_calls_end "$_name"
}

# count_calls_start NAME ARGS...: `klpscope check ARGS --json` in the
# background; returns once its call counter is attached.
count_calls_start() {
    _name=$1
    shift
    rm -f "$KS/$_name.log"
    klpscope --log "$KS/$_name.log" check "$@" --json > "$KS/$_name.json" 2> "$KS/$_name.err" &
    _check=$!
    wait_until 30 "klpscope check attached its call counter" counter_attached "$KS/$_name.log"
}

# count_calls_end NAME: waits for the check count_calls_start started.
count_calls_end() {
    wait "$_check"
    check_status_ok $? "$KS/$1.err" || return 1
    ks_schema check "$KS/$1.json"
}

# check_status_ok STATUS ERRFILE: check exits 0 ready, 3 warnings or 4 not
# ready; anything else is an error.
check_status_ok() {
    case $1 in
        0 | 3 | 4) return 0 ;;
    esac
    echo "FAIL: klpscope check exited $1"
    cat "$2"
    return 1
}

# call_rate_matches: check's calls_per_sec for cmdline_proc_show is its
# count over its window. A paced load of reads runs for 2 s of check's 4,
# from the moment its counter is attached: every read falls in the window,
# whatever the host's load makes of the pace. So the count is exact, and
# the rate is that count over a window of at least the 4 s asked for (at
# most twice that, on the slowest host seen).
call_rate_matches() {
    rm -f "$KS/rate.log"
    klpscope --log "$KS/rate.log" check --function cmdline_proc_show --duration 4 --json \
        > "$KS/rate.json" 2> "$KS/rate.err" &
    _check=$!
    wait_until 30 "klpscope check attached its call counter" counter_attached "$KS/rate.log"
    _reads=0
    _until=$(($(uptime_cs) + 200))
    while [ "$(uptime_cs)" -lt "$_until" ]; do
        read -r _line < /proc/cmdline
        _reads=$((_reads + 1))
        sleep 0.05
    done
    exited "$_check" && {
        echo "FAIL: klpscope check ended before the load did: the reads may fall outside its window"
        return 1
    }
    wait "$_check"
    check_status_ok $? "$KS/rate.err" || return 1
    ks_schema check "$KS/rate.json" || return 1
    log "load: $_reads reads in 2 s of check's 4 s window"
    jq_true "$KS/rate.json" "
        .functions[0].calls_old == $_reads
        and .functions[0].calls_per_sec <= $_reads / 4
        and .functions[0].calls_per_sec >= $_reads / 8" || return 1
    log "klpscope check measured $(jq .functions[0].calls_per_sec "$KS/rate.json") calls/s"
}

# tids_now: every thread id, one a line.
tids_now() {
    for _t in /proc/[0-9]*/task/[0-9]*; do
        echo "${_t##*/}"
    done
}

# all_switches_heard: every thread of $KS/tids-before (tids_now before
# the transition) still alive is named by a "switched" event of
# $KS/watch-events.json; otherwise say how many were not.
all_switches_heard() {
    jq '[.[] | select(.event == "switched") | .tids[]] | unique | .[]' \
        "$KS/watch-events.json" > "$KS/tids-switched"
    _total=0 _missed=""
    for _tid in $(cat "$KS/tids-before"); do
        [ -e "/proc/$_tid" ] || continue
        _total=$((_total + 1))
        grep -qx "$_tid" "$KS/tids-switched" || _missed="$_missed $_tid"
    done
    [ -z "$_missed" ] || {
        echo "FAIL: the tracer did not see $(echo $_missed | wc -w) of $_total threads switch" \
            "(first: $(echo $_missed | cut -d' ' -f1-10))"
        return 1
    }
    log "klpscope watch saw all $_total threads switch"
}

# uptime_cs: centiseconds since boot.
uptime_cs() {
    read -r _up _ < /proc/uptime
    echo "${_up%.*}${_up#*.}"
}

# json_array "N N ...": the numbers as a JSON array.
json_array() {
    _json=
    for _n in $1; do
        _json="$_json${_json:+,}$_n"
    done
    echo "[$_json]"
}

# blocker_version NAME VERSION: the one blocker of $KS/NAME.json runs
# VERSION ({"kind":"original"}, {"kind":"replacement","patch":"P"}).
blocker_version() {
    jq_true "$KS/$1.json" ".blockers[0].version == $2" || return 1
}

# predicts_all PATCH "TIDS" KTHREAD: `check --module` on PATCH's .ko
# predicts exactly TIDS as its persistent blockers.
predicts_all() {
    ks_json check-$1 check --module "$KLP_TEST_DIR/$1.ko" --json --duration 2 || return 1
    jq_true "$KS/check-$1.json" "
        ([.predicted_blockers[] | select(.persistent) | .tid] | sort)
            == ($(json_array "$2") | sort)
        and all(.predicted_blockers[] | select(.persistent); .kthread == $3)" || return 1
    log "klpscope check --module $1 predicts tids $2"
}

# ---- klpscope apply / revert ----

# rollout_json NAME STATUS ARGS...: runs `klpscope ARGS...` (apply or
# revert with --json), its lines into $KS/NAME.json and as one array into
# $KS/NAME-steps.json; fails unless it exits STATUS.
rollout_json() {
    _name=$1 _want=$2
    shift 2
    klpscope "$@" > "$KS/$_name.json" 2> "$KS/$_name.err"
    _status=$?
    jq -s . "$KS/$_name.json" > "$KS/$_name-steps.json" 2>/dev/null
    if [ "$_status" != "$_want" ]; then
        echo "FAIL: klpscope $* exited $_status, expected $_want"
        cat "$KS/$_name.err" "$KS/$_name.json"
        return 1
    fi
    ks_schema rollout "$KS/$_name.json" || return 1
    log "klpscope $* exited $_status: $(jq -c '[.[].event]' "$KS/$_name-steps.json")"
}

# steps_in_order NAME EVENT...: those events come in that order among
# $KS/NAME-steps.json's (others may come between them).
steps_in_order() {
    _file="$KS/$1-steps.json"
    shift
    _filter='[.[].event] as $e | true'
    _last=-1
    for _event in "$@"; do
        _filter="$_filter and (\$e | index(\"$_event\")) != null and (\$e | index(\"$_event\")) > $_last"
        _last="(\$e | index(\"$_event\"))"
    done
    jq_true "$_file" "$_filter"
}

module_loaded() { grep -q "^$1 " /proc/modules; }
