#!/usr/bin/env bash
# Walkthrough wall time (issue 6): examples/wine/walkthrough.py end to end with a warm environment
# cache, split by step. Uses the project's .venv (scripts/setup.sh) and CAIRN_BIN (bench/run.sh
# builds a release binary when it is unset). REPEATS=N times the timed run N times (median).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
"$root/scripts/setup.sh" >/dev/null
exec "$root/.venv/bin/python" "$here/walkthrough.py"
