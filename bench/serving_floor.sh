#!/usr/bin/env bash
# Serving floor (partial: the gateway is not built yet): the in-process Python cost of one scoring
# call of the walkthrough's wine model, and the round trip of the replica worker's framed protocol
# over a Unix socket. See bench/serving_floor.py and docs/benchmarks.md. Uses the test venv
# (.venv, from scripts/setup.sh: scikit-learn, numpy, joblib); needs no cairn binary.
#
# Environment:
#   N_CALLS=5000   timed calls per case
#   WARMUP=300     untimed calls first
#   BENCH_OUT=bench/out  results: serving_floor.md
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
out=${BENCH_OUT:-$here/out}
mkdir -p "$out"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$root/.venv/bin/python" "$here/serving_floor.py" --out "$out/serving_floor.md"
