#!/bin/busybox sh
# /init of the klpscope VM: mount what livepatch and klpscope read, run
# /lib/klpscope-test/run.sh as root, report its exit status on the console
# for the host, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mountfs() {
    mkdir -p "$3"
    mount -t "$1" "$2" "$3" || echo "klpscope-vm: cannot mount $1 on $3"
}
mountfs proc proc /proc
mountfs sysfs sysfs /sys
mountfs devtmpfs devtmpfs /dev
# Pseudo-terminals (/dev/ptmx): scenarios run the TUI on one (telnetd -i).
mountfs devpts devpts /dev/pts
mountfs tmpfs tmpfs /tmp
mountfs debugfs debugfs /sys/kernel/debug
mountfs tracefs tracefs /sys/kernel/tracing
mountfs bpf bpf /sys/fs/bpf
echo "klpscope-vm: kernel $(uname -r)"
cd /tmp
# The kernel hands unknown `name=value` boot parameters to init as variables.
if [ "$klpscope_interactive" = 1 ]; then
    sh /lib/klpscope-test/run.sh
    echo "klpscope-vm: script exited with status $?; exit this shell to power off"
    setsid cttyhack sh
else
    sh /lib/klpscope-test/run.sh </dev/null
    echo "KLPSCOPE-VM-RESULT exit=$?"
fi
poweroff -f
