#!/usr/bin/env bash
# MLflow tracing workload (issue 4): the same traced calls, trace searches and trace reads through
# the stock `mlflow` client against Cairn and against `mlflow server` (SQLite backend). Makes (or
# reuses) the venv .venv-bench with the pinned packages of bench/requirements-bench.txt, then runs
# bench/mlflow_traces.py, which starts both servers, prints a Markdown table and writes
# BENCH_OUT/mlflow_traces.md. Run it through bench/run.sh, which builds cairn and sets CAIRN_BIN.
# Settings (N_TRACES, SPANS, N_SEARCHES, …) are described at the top of bench/mlflow_traces.py;
# N_TRACES=50 makes a quick run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
venv=${BENCH_VENV:-$root/.venv-bench}
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_venv "$venv" "$here/requirements-bench.txt"

exec "$venv/bin/python" "$here/mlflow_traces.py"
