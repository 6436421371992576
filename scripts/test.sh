#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every test suite.
#   scripts/test.sh            everything
#   scripts/test.sh -p cairn   extra arguments go to `cargo test`
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh

echo "test: formatting"
cargo fmt --all --check

echo "test: Python runtime (python/tests)"
.venv/bin/python -m unittest discover -s python/tests -t python

echo "test: cargo test"
# The integration tests start real servers (cairn, PostgreSQL databases, moto); a few threads
# keep a 2-core machine responsive.
cargo test --workspace --no-fail-fast "$@" -- --test-threads="${CAIRN_TEST_THREADS:-4}"

# The Python suites below use the debug binary the cargo tests just built. `--tests` keeps the
# tests' feature set (dev-dependencies unify features: without it sqlx, object_store and the rest
# are compiled again with other features, minutes on 2 cores); `--workspace`, not `-p cairn`.
cargo build --workspace --tests --bins

echo "test: Python SDK and azureml layer (python/tests_sdk)"
.venv/bin/python -m pytest -q python/tests_sdk

echo "test: the stock MLflow client against a live server (python/tests_mlflow)"
.venv/bin/python -m pytest -q python/tests_mlflow
