# klpscope serve idle in the VM lab, with what this host cannot have: eBPF
# (the transition tracer and a call counter attached) and an applied
# vmlinux patch. CPU time under TCG is emulated, so an upper bound; RSS is
# what it is. `cargo xtask bench` boots it; it asserts nothing.
. /lib/klpscope-test/lib.sh
ifconfig lo 127.0.0.1 up
load klp_test_patch_cmdline
wait_for_transition klp_test_patch_cmdline
klpscope serve 2> "$KS/serve.err" &
SERVE=$!
scrape() { wget -q -O "$KS/metrics.prom" http://127.0.0.1:9757/metrics 2> /dev/null; }
wait_until 60 "serve answers" scrape
sleep 10
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVE/stat"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
c0=$(cpu_ticks)
u0=$(uptime_s)
for _ in 1 2 3 4 5 6; do
    scrape || fail "a scrape failed"
    sleep 5
done
c1=$(cpu_ticks)
u1=$(uptime_s)
grep -q '^klpscope_ebpf_available 1' "$KS/metrics.prom" || fail "serve is not using eBPF"
rss() { awk -v f="$1" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$SERVE/status"; }
echo "$c0 $c1 $u0 $u1" | awk -v rss="$(rss VmRSS:)" -v peak="$(rss VmHWM:)" '{
    printf "  klpscope serve in the VM (eBPF)   CPU %5.2f %% of one core (TCG)   RSS %s MB (peak %s MB)\n",
        ($2 - $1) / 100 / ($4 - $3) * 100, rss, peak }'
kill "$SERVE"
pass
