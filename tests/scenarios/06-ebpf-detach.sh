# Scenario 6: klpscope watch leaves no eBPF program behind, whichever way it
# ends: q in the TUI (on a pseudo-terminal), SIGTERM, SIGHUP, SIGINT,
# SIGKILL and a panic. For each, bpftool lists the kernel's programs before
# watch starts, while it runs (there are new ones) and after it ended (the
# same as before, after a bounded wait for the kernel to free them). Then a
# livepatch transition behaves as in scenario 1, where klpscope never ran.
. /lib/klpscope-test/lib.sh
P=klp_test_patch_cmdline
ENABLED_FUNCTIONS=/sys/kernel/tracing/enabled_functions
# Watch loads BTF and its programs under TCG: give it time to be ready.
READY_WITHIN=60
# The kernel frees a program once its last link and descriptor are gone
# (0.6-2.1 s after the exit, seen under TCG on a busy host).
FREED_WITHIN=10

# list_progs NAME: every eBPF program loaded now, into $KS/progs-NAME.json.
list_progs() {
    bpftool prog show --json > "$KS/progs-$1.json" 2> "$KS/progs-$1.err" || {
        cat "$KS/progs-$1.err"
        fail "bpftool prog show failed"
    }
}

# new_progs: the programs of the last `list_progs now` that were not there
# before watch started, as a JSON array.
new_progs() {
    jq -c --slurpfile before "$KS/progs-before.json" '
        [.[] | .id as $id | select(any($before[0][]; .id == $id) | not)
         | {id, type, name}]' "$KS/progs-now.json"
}

# progs_as_before: the same program ids as before watch started.
progs_as_before() {
    list_progs now
    jq -e --slurpfile before "$KS/progs-before.json" '
        ([.[].id] | sort) == ([$before[0][].id] | sort)' \
        "$KS/progs-now.json" > /dev/null
}

# watch_failed WAY WHAT: prints what watch wrote and fails.
watch_failed() {
    echo "---- klpscope watch ($1): stdout ----"
    cat "$KS/$1.out" 2> /dev/null
    echo "---- klpscope watch ($1): stderr ----"
    cat "$KS/$1.err" 2> /dev/null
    fail "klpscope watch ($1): $2"
}

# watch_bg WAY MODE [panic]: `klpscope watch --MODE` in the background,
# output into $KS/WAY.out and .err; sets WATCH_PID. With `panic`, watch
# panics on purpose once ready (its hidden debug switch).
watch_bg() {
    list_progs before
    if [ "$3" = panic ]; then
        env KLPSCOPE_DEBUG_PANIC=1 klpscope watch "--$2" > "$KS/$1.out" 2> "$KS/$1.err" &
    else
        klpscope watch "--$2" > "$KS/$1.out" 2> "$KS/$1.err" &
    fi
    WATCH_PID=$!
    WATCH_T0=$(uptime_cs)
}

# said_ready WAY MODE: watch announced that its probes are attached and its
# first poll is done (--plain on stderr, --json as an event on stdout).
said_ready() {
    case $2 in
        plain) grep -q 'klpscope: ready' "$KS/$1.err" 2> /dev/null ;;
        json) grep -q '"event": *"ready"' "$KS/$1.out" 2> /dev/null ;;
    esac
}

# ready_with_ebpf WAY MODE: its `ready` says the eBPF tracer is attached
# (with the kernel's verdicts or not: 5.10 has no per-task hook).
ready_with_ebpf() {
    case $2 in
        plain) grep 'klpscope: ready' "$KS/$1.err" | grep -q eBPF ;;
        json) grep '"event": *"ready"' "$KS/$1.out" | grep -q '"ebpf": *true' ;;
    esac
}

# wait_ready WAY MODE: bounded; an exit before `ready` fails, except that a
# watch told to panic may already be gone once it said so. A ready watch
# must be following with eBPF.
wait_ready() {
    _tries=$((READY_WITHIN * 5))
    until said_ready "$1" "$2"; do
        if exited "$WATCH_PID"; then
            said_ready "$1" "$2" && break
            watch_failed "$1" "exited before it was ready"
        fi
        _tries=$((_tries - 1))
        [ "$_tries" -gt 0 ] || watch_failed "$1" "not ready after ${READY_WITHIN}s"
        sleep 0.2
    done
    ready_with_ebpf "$1" "$2" || watch_failed "$1" "ready, but not with eBPF"
    log "$1: watch $WATCH_PID ready after $(($(uptime_cs) - WATCH_T0)) cs"
}

# assert_loaded WAY: while watch runs, bpftool lists programs that were not
# there before it started (so the check after it ends can fail).
assert_loaded() {
    list_progs now
    _new=$(new_progs)
    [ "$_new" != "[]" ] || watch_failed "$1" "ready, but bpftool lists no new eBPF program"
    log "$1: watch $WATCH_PID runs $(echo "$_new" | jq length) new eBPF programs: $(echo "$_new" | jq -c '[.[].name]')"
}

# catches PID SIGNAL: the process has a handler for SIGNAL (SigCgt), so an
# exit status of 128+SIGNAL is its own, not the default action's.
catches() {
    _mask=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$1/status")
    [ -n "$_mask" ] && [ $(((0x$_mask >> ($2 - 1)) & 1)) = 1 ]
}

# wait_exit WAY SECONDS: the watcher ends within SECONDS; sets WATCH_STATUS.
wait_exit() {
    _tries=$(($2 * 5))
    until exited "$WATCH_PID"; do
        _tries=$((_tries - 1))
        [ "$_tries" -gt 0 ] || watch_failed "$1" "still running ${2}s later"
        sleep 0.2
    done
    wait "$WATCH_PID"
    WATCH_STATUS=$?
}

# assert_status WAY EXPECTED
assert_status() {
    [ "$WATCH_STATUS" = "$2" ] || watch_failed "$1" "exited $WATCH_STATUS, expected $2"
}

# assert_detached WAY: bpftool lists exactly the programs from before watch
# started, within FREED_WITHIN seconds.
assert_detached() {
    _t0=$(uptime_cs)
    _tries=$((FREED_WITHIN * 5))
    until progs_as_before; do
        _tries=$((_tries - 1))
        if [ "$_tries" -le 0 ]; then
            echo "---- eBPF programs left behind ----"
            new_progs
            echo "---- bpftool prog show ----"
            bpftool prog show
            watch_failed "$1" "eBPF programs still loaded ${FREED_WITHIN}s after it ended"
        fi
        sleep 0.2
    done
    log "$1: watch gone, bpftool lists the programs of before ($(($(uptime_cs) - _t0)) cs after the exit)"
}

# by_signal WAY MODE SIGNAL NUMBER STATUS: watch ended by kill -SIGNAL.
by_signal() {
    watch_bg "$1" "$2"
    wait_ready "$1" "$2"
    assert_loaded "$1"
    catches "$WATCH_PID" "$4" || watch_failed "$1" "no handler for SIG$3 ($(grep SigCgt "/proc/$WATCH_PID/status"))"
    kill -"$3" "$WATCH_PID"
    wait_exit "$1" 20
    assert_status "$1" "$5"
    if [ "$2" = json ]; then
        ks_schema watch "$KS/$1.out" || watch_failed "$1" "its JSON lines"
    fi
    assert_detached "$1"
}

by_sigkill() {
    watch_bg sigkill json
    wait_ready sigkill json
    assert_loaded sigkill
    kill -KILL "$WATCH_PID"
    wait_exit sigkill 20
    [ ! -e "/proc/$WATCH_PID" ] || watch_failed sigkill "pid $WATCH_PID still in /proc"
    assert_detached sigkill
}

# A panic right after `ready`: too soon to list its programs, but a ready
# with eBPF means they were attached.
by_panic() {
    watch_bg panic plain panic
    wait_ready panic plain
    wait_exit panic 20
    assert_status panic 101
    grep -q panicked "$KS/panic.err" || watch_failed panic "exited 101 without a panic message"
    assert_detached panic
}

# ---- q in the TUI ----
# The guest has no `script` applet; busybox's telnetd in inetd mode (-i)
# runs a program on a new pseudo-terminal and relays its own stdin (here a
# fifo) to it and the terminal's output to its stdout (here a file).
TUI=tui

tui_said() { grep -q "$1" "$KS/$TUI.out"; }

by_q() {
    list_progs before
    cat > "$KS/tui.sh" << EOF
#!/bin/sh
# On telnetd's pseudo-terminal: a screen of a known size, then watch's TUI.
stty rows 30 cols 100
export TERM=xterm
sh -c 'echo \$\$ > $KS/tui.pid; exec klpscope watch'
echo \$? > $KS/tui.status
EOF
    chmod +x "$KS/tui.sh"
    rm -f "$KS/tui.pid" "$KS/tui.status" "$KS/tui.in"
    mkfifo "$KS/tui.in"
    telnetd -i -f /dev/null -l "$KS/tui.sh" < "$KS/tui.in" > "$KS/$TUI.out" 2> "$KS/$TUI.err" &
    _telnetd=$!
    # Held open until watch has ended: at EOF telnetd hangs up the terminal.
    exec 3> "$KS/tui.in"
    WATCH_T0=$(uptime_cs)
    wait_until 10 "the TUI wrapper started" test -s "$KS/tui.pid"
    read -r WATCH_PID < "$KS/tui.pid"
    # The TUI has no ready line: its screen with the eBPF feed is drawn after
    # the first poll, once the probes are attached.
    _tries=$((READY_WITHIN * 5))
    until tui_said "klpscope watch" && tui_said "eBPF tracer"; do
        exited "$WATCH_PID" && watch_failed $TUI "exited before its screen was drawn"
        _tries=$((_tries - 1))
        [ "$_tries" -gt 0 ] || watch_failed $TUI "no screen with the eBPF tracer after ${READY_WITHIN}s"
        sleep 0.2
    done
    log "$TUI: watch $WATCH_PID drew its screen after $(($(uptime_cs) - WATCH_T0)) cs"
    assert_loaded $TUI
    printf q >&3
    wait_until 20 "watch's TUI ended by q" test -s "$KS/tui.status"
    exec 3>&-
    wait "$_telnetd"
    read -r WATCH_STATUS < "$KS/tui.status"
    assert_status $TUI 0
    assert_detached $TUI
}

# ---- the scenario ----
# Every way out, one after another; then no ftrace user and no klpscope
# process is left.
klpscope_detached() {
    cat "$ENABLED_FUNCTIONS" > "$KS/enabled-functions-before"
    by_q
    by_signal sigterm json TERM 15 143
    by_signal sighup plain HUP 1 129
    by_signal sigint json INT 2 130
    by_sigkill
    by_panic
    # No ftrace user (an fentry trampoline or a kprobe) left on any kernel function.
    cat "$ENABLED_FUNCTIONS" > "$KS/enabled-functions-after"
    cmp -s "$KS/enabled-functions-before" "$KS/enabled-functions-after" || {
        echo "---- enabled_functions after every watch ----"
        cat "$KS/enabled-functions-after"
        fail "ftrace still has users that were not there before watch"
    }
    _left=$(pidof klpscope) && fail "klpscope still running: pid $_left"
    log "every watch ended and detached"
}

checkpoint detached

# Without klpscope, as in scenario 1: the transition completes and the new
# code runs; disabling unpatches.
grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline is not the boot command line"
load $P
wait_for_transition $P
assert_eq "$(attr $P enabled)" 1 "$P enabled"
# The object's `patched` file is missing on 5.10 (it came later).
[ ! -e "$LIVEPATCH/$P/vmlinux/patched" ] \
    || assert_eq "$(attr $P vmlinux/patched)" 1 "$P vmlinux/patched"
assert_dmesg "'$P': starting patching transition"
assert_dmesg "'$P': patching complete"
assert_all_switched
assert_eq "$(cat /proc/cmdline)" "$P: livepatched" "/proc/cmdline, patched"
echo 0 > $LIVEPATCH/$P/enabled
wait_for_unpatched $P
assert_dmesg "'$P': unpatching complete"
assert_all_switched
grep -qF console=ttyS0 /proc/cmdline || fail "/proc/cmdline still patched: $(cat /proc/cmdline)"
unload $P
pass
