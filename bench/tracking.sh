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
uv=${CAIRN_UV:-$root/.venv-tools/bin/uv}
[[ -x $uv ]] || uv=$(command -v uv) || { echo "uv not found: run scripts/setup.sh" >&2; exit 1; }
export UV_CACHE_DIR=${UV_CACHE_DIR:-$root/.cache/uv}
venv=${BENCH_VENV:-$root/.venv-bench}

# Idempotent: an existing venv is kept; `uv pip install` does nothing when all is installed.
[[ -x $venv/bin/python ]] || "$uv" venv -q "$venv"
"$uv" pip install -q -p "$venv/bin/python" -r "$here/requirements-bench.txt"

exec "$venv/bin/python" "$here/tracking.py"
