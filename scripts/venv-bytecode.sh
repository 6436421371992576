#!/usr/bin/env bash
# Compiles the installed packages of the venv VENV to bytecode, so that a process started with
# PYTHONDONTWRITEBYTECODE (jobs, replicas, benchmarks) never compiles its imports from source.
# Needed besides `uv pip install --compile-bytecode`, which compiles only what it installs in that
# call, not what an earlier call put in the venv. Failures to compile a file are not fatal (some
# packages ship files for other Python versions).
set -euo pipefail
venv=${1:?usage: venv-bytecode.sh VENV}
purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$venv/bin/python" -m compileall -q -j 0 "$purelib" >/dev/null || true
