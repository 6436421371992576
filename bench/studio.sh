#!/usr/bin/env bash
# Studio benchmark (issue 7): server time of the studio's runs table (10,000 runs × 10 params × 20
# metrics) and of a metric chart over a 1,000,000-point series, against the calls MLflow's UI makes
# for the same views on `mlflow server` (SQLite backend) with the same data. Makes (or reuses) the
# venv .venv-bench with the pinned packages of bench/requirements-bench.txt, then runs
# bench/studio.py, which starts both servers, prints a Markdown table and writes BENCH_OUT/studio.md.
# Run it through bench/run.sh, which builds cairn and sets CAIRN_BIN. Settings (N_RUNS,
# SERIES_POINTS, N_REQUESTS, REUSE_MLFLOW, …) are described at the top of bench/studio.py;
# N_RUNS=500 SERIES_POINTS=20000 makes a quick run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
venv=${BENCH_VENV:-$root/.venv-bench}
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_venv "$venv" "$here/requirements-bench.txt"

exec "$venv/bin/python" "$here/studio.py"
