# Self-check: a failing script must fail the run with its status.
echo "selfcheck: exiting with status 1"
exit 1
