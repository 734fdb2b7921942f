#!/bin/bash
# Configures a small lab kernel in the source tree $1 (run from xtask's
# real-fixtures command, real.rs): x86_64 defconfig without the big
# subsystems a serial-console, initramfs-only guest never uses, with what
# livepatch, kpatch-build, klp-build and klpscope's eBPF side need.
# $2 is the flavour: `kpatch` (no IBT: kpatch-build refuses it) or `klp`
# (CONFIG_KLP_BUILD, which only exists from 6.19).
set -euo pipefail
cd "$1"
flavour=$2
make -s defconfig
c=scripts/config
# Off: what the lab guest (qemu -nographic, initramfs, no disk, no network
# device) does not use, and what costs build time.
for opt in DRM SOUND USB_SUPPORT WLAN WIRELESS CFG80211 MAC80211 RFKILL BT \
    NETFILTER NET_SCHED IPV6 HID INPUT_JOYSTICK INPUT_TABLET INPUT_TOUCHSCREEN \
    INPUT_MISC INPUT_MOUSE MEDIA_SUPPORT AGP FB ETHERNET ATA SCSI MD \
    HAMRADIO PCCARD NETWORK_FILESYSTEMS NFS_FS EXT4_FS QUOTA AUTOFS_FS \
    SECURITY_SELINUX AUDIT XEN HIBERNATION WERROR CPU_MITIGATIONS \
    DEBUG_INFO_REDUCED DEBUG_INFO_SPLIT DEBUG_INFO_COMPRESSED_ZLIB \
    GCC_PLUGINS RANDSTRUCT_FULL RANDSTRUCT_PERFORMANCE \
    LD_DEAD_CODE_DATA_ELIMINATION LOCALVERSION_AUTO MODULE_SIG; do
    $c --disable "$opt"
done
# On: modules, livepatch and what it rests on, what klpscope reads
# (BTF, kprobes, BPF), and what the guest's init mounts.
for opt in MODULES MODULE_UNLOAD FTRACE FUNCTION_TRACER FUNCTION_GRAPH_TRACER \
    DYNAMIC_FTRACE KALLSYMS KALLSYMS_ALL LIVEPATCH UNWINDER_ORC BPF_SYSCALL \
    BPF_JIT KPROBES KPROBE_EVENTS BPF_EVENTS FPROBE DEBUG_INFO_DWARF5 DEBUG_INFO_BTF \
    DEBUG_INFO_BTF_MODULES DEBUG_FS DEVTMPFS BLK_DEV_INITRD RD_GZIP TMPFS \
    UNIX98_PTYS SERIAL_8250 SERIAL_8250_CONSOLE VIRTIO_MENU VIRTIO \
    VIRTIO_PCI VIRTIO_CONSOLE VIRTIO_BLK IKCONFIG IKCONFIG_PROC; do
    $c --enable "$opt"
done
$c --set-str LOCALVERSION "-klplab"
$c --set-str LD_ORPHAN_WARN_LEVEL "warn"
case $flavour in
kpatch) $c --disable X86_KERNEL_IBT ;;
klp) $c --enable KLP_BUILD ;;
*) echo "real_config.sh: unknown flavour $flavour" >&2; exit 2 ;;
esac
make -s olddefconfig
# What olddefconfig dropped would make a kernel the tools refuse: say so.
missing=""
for opt in LIVEPATCH DEBUG_INFO_DWARF5 DEBUG_INFO_BTF KPROBES BPF_SYSCALL \
    DYNAMIC_FTRACE KALLSYMS_ALL UNWINDER_ORC; do
    grep -qx "CONFIG_$opt=y" .config || missing="$missing $opt"
done
if [ "$flavour" = kpatch ] && grep -qx CONFIG_X86_KERNEL_IBT=y .config; then
    missing="$missing !X86_KERNEL_IBT"
fi
if [ "$flavour" = klp ] && ! grep -qx CONFIG_KLP_BUILD=y .config; then
    missing="$missing KLP_BUILD"
fi
if [ -n "$missing" ]; then
    echo "real_config.sh: the config lacks:$missing" >&2
    exit 1
fi
