# Self-check: a script that never ends must fail the run at its time bound.
echo "selfcheck: hanging"
sleep 600
