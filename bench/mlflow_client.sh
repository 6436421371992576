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
uv=${CAIRN_UV:-$root/.venv-tools/bin/uv}
[[ -x $uv ]] || uv=$(command -v uv) || { echo "uv not found: run scripts/setup.sh" >&2; exit 1; }
export UV_CACHE_DIR=${UV_CACHE_DIR:-$root/.cache/uv}
venv=${BENCH_VENV:-$root/.venv-bench}

# Idempotent: an existing venv is kept; `uv pip install` does nothing when all is installed.
[[ -x $venv/bin/python ]] || "$uv" venv -q "$venv"
"$uv" pip install -q -p "$venv/bin/python" -r "$here/requirements-bench.txt"

exec "$venv/bin/python" "$here/mlflow_client.py"
