#!/usr/bin/env bash
# MLflow client workload (issue 4): the same runs, params, metrics (log_batch) and searches through
# the stock `mlflow` client against Cairn and against `mlflow server` (SQLite backend). Makes (or
# reuses) the venv .venv-bench with the pinned packages of bench/requirements-bench.txt, then runs
# bench/mlflow_client.py, which starts both servers, prints a Markdown table and writes
# BENCH_OUT/mlflow_client.md. Run it through bench/run.sh, which builds cairn and sets CAIRN_BIN.
# Settings (N_RUNS, THREADS, N_SEARCHES, …) are described at the top of bench/mlflow_client.py;
# N_RUNS=20 makes a quick run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
venv=${BENCH_VENV:-$root/.venv-bench}
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_venv "$venv" "$here/requirements-bench.txt"

exec "$venv/bin/python" "$here/mlflow_client.py"
