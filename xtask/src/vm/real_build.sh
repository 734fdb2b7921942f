#!/bin/bash
# Builds a lab kernel from Debian's kernel source and a livepatch module of
# it with the real tool (run by xtask's real-fixtures command, real.rs).
#
#   real_build.sh kpatch TREE OUT PATCH NAME KPATCH_ROOT
#   real_build.sh klp    TREE OUT PATCH NAME
#
# TREE is an unpacked linux-source tree (configured here if it has no
# .config); OUT receives vmlinuz, config, System.map, release, NAME.ko and
# times (seconds per step). Run again, it rebuilds only what changed.
#
# The kpatch lab kernel is built plainly: 6.12's linker script (TEXT_MAIN)
# places -ffunction-sections' .text.* sections outside the kernel text, and
# such a kernel cannot patch its own jump labels and hangs at boot under
# qemu. kpatch-build then builds the tree once more, all of it, with its
# compiler wrapper and those flags (a rerun of the kernel step recompiles
# everything). klp-build cleans the tree and builds the original kernel
# itself; 7.x places .text.* in the kernel text, so the lab kernel is that
# build, finished with bzImage afterwards.
set -euo pipefail
mode=$1 tree=$2 out=$3 patch=$4 name=$5
here=$(cd "$(dirname "$0")" && pwd)
jobs=${JOBS:-2}
mkdir -p "$out"
: >"$out/times"
step() { # NAME COMMAND...: runs, timed into $out/times
    local what=$1 start rc=0
    shift
    start=$(date +%s)
    echo "real: $what"
    "$@" || rc=$?
    echo "$what $(($(date +%s) - start))" >>"$out/times"
    return $rc
}
cd "$tree"
[ -f .config ] || step config "$here/real_config.sh" "$tree" "$mode"
case $mode in
kpatch)
    kroot=$6
    step kernel make -s -j"$jobs" vmlinux modules bzImage
    cp -f arch/x86/boot/bzImage "$out/vmlinuz"
    cp -f vmlinux "$out/vmlinux"
    ;;
klp)
    klp=(./scripts/livepatch/klp-build -j "$jobs" -o "$out/$name.ko")
    step klp-build "${klp[@]}" "$patch"
    kvars=(KLP_SYMIDS=1 KCFLAGS="-ffunction-sections -fdata-sections")
    # The patch was reverted: its files are rebuilt as they were.
    step kernel make -s -j"$jobs" "${kvars[@]}" vmlinux modules bzImage
    cp -f arch/x86/boot/bzImage "$out/vmlinuz"
    ;;
*)
    echo "real_build.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
cp -f .config "$out/config"
cp -f System.map "$out/System.map"
make -s kernelrelease >"$out/release"
if [ "$mode" = kpatch ]; then
    # kpatch-build refuses a tree whose vmlinux it would overwrite without
    # -v; ours is the copy in $out. Its own cache and log stay in $out.
    rm -rf "$out/kpatch-cache"
    step kpatch-build env CACHEDIR="$out/kpatch-cache" "$kroot/usr/bin/kpatch-build" \
        -s "$tree" -v "$out/vmlinux" -j "$jobs" -n "$name" -o "$out" "$patch"
fi
[ -f "$out/$name.ko" ] || { echo "real_build.sh: no $name.ko was made" >&2; exit 1; }
echo "real: $out/$name.ko"
