#!/usr/bin/env bash
# Serving benchmark (issue 5): Cairn's scoring endpoint against azmlinfsrv
# (azureml-inference-server-http, the reference), driven by wrk on loopback, with the same score.py,
# the same model and the same Python packages; plus the in-process floor and the time from
# `deployment create` to the first successful score. Installs wrk from Debian's packages if it is
# missing and makes .venv-serving (bench/requirements-serving.txt). Run it through bench/run.sh,
# which builds cairn and sets CAIRN_BIN. Settings are described at the top of bench/serving.py.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
if ! command -v wrk >/dev/null; then
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
    echo "installing wrk from Debian's packages" >&2
    $sudo apt-get install -y -qq wrk >/dev/null || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null; }
fi
venv=${SERVING_VENV:-$root/.venv-serving}
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
bench_venv "$venv" "$here/requirements-serving.txt"

exec "$venv/bin/python" "$here/serving.py"
