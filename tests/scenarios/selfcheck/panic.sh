# Self-check: a guest kernel panic must fail the run, with the console tail.
echo "selfcheck: crashing the guest kernel"
echo c > /proc/sysrq-trigger
sleep 600
