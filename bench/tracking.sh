#!/usr/bin/env bash
# Tracking benchmark: metric ingestion and run search, Cairn against `mlflow server` (SQLite
# backend), both through their REST APIs on loopback. Makes (or reuses) the venv .venv-bench with
# the pinned packages of bench/requirements-bench.txt, then runs bench/tracking.py, which starts
# both servers, prints a Markdown table and writes BENCH_OUT/tracking.md. Run it through
# bench/run.sh, which builds cairn and sets CAIRN_BIN. Settings (N_METRICS, CLIENTS, N_RUNS,
# N_QUERIES, …) are described at the top of bench/tracking.py; N_RUNS=1000 makes a quick run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
venv=${BENCH_VENV:-$root/.venv-bench}
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_venv "$venv" "$here/requirements-bench.txt"

exec "$venv/bin/python" "$here/tracking.py"
