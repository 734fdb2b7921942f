# `cargo xtask demo`: klpscope watch on the console while a task asleep in a
# patched function holds up a livepatch transition, until this script
# releases it; quitting watch powers the VM off.
. /lib/klpscope-test/lib.sh
# The host terminal's ROWS, COLS and TERM, written by xtask.
TERMINAL_ENV=$KLP_TEST_DIR/terminal.env
[ -r "$TERMINAL_ENV" ] && . "$TERMINAL_ENV"
stty rows "${ROWS:-24}" cols "${COLS:-80}"
export TERM="${TERM:-xterm}"
# Kernel messages on the console would scribble over the TUI.
dmesg -n 1
load klp_test_target
park klp_test_park_wait
# Loaded once watch runs, so that the transition's start is on screen. The
# parked sleep is killable, so the kernel's fake signals (after 15 rounds,
# about 15 s) do not end it: the release at 20 s does, and the transition
# completes. Output to a file: the console belongs to watch.
(
    sleep 2
    load klp_test_patch_target
    sleep 20
    echo 1 > "$TARGET/release"
    log "released pid $PARKED_PID"
) > /tmp/demo.log 2>&1 &
klpscope watch
status=$?
cat /tmp/demo.log
echo "demo: klpscope watch exited with status $status; powering off"
poweroff -f
