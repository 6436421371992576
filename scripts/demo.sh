#!/usr/bin/env bash
# The main job: `cairn demo` — the Azure ML walkthrough (../shared/seed/azureml-walkthrough.md,
# steps 1–15) as its own Python code, through the azureml compatibility layer, on a throw-away
# server with the embedded defaults (SQLite, local files): workspace, upload of the wine data,
# compute cluster, environment, training run with its metrics, model registration, inference
# config, deployment, keys and a prediction. Arguments are passed to `cairn demo` (see --help).
#
# The first run builds the walkthrough's environment with uv (minutes at most); later runs reuse
# it from ~/.cache/cairn/envs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh >/dev/null   # uv (environments are built with it); idempotent, quiet when done
cargo build --quiet --workspace --bins
export CAIRN_UV="$ROOT/.venv-tools/bin/uv" UV_CACHE_DIR="${UV_CACHE_DIR:-$ROOT/.cache/uv}"
exec "${CARGO_TARGET_DIR:-$ROOT/target}/debug/cairn" demo "$@"
