#!/usr/bin/env bash
# Job latency benchmark: submit-to-Running latency of a trivial job (`true`) with a cached
# environment, and its full round trip, on a throw-away server with a local compute of 2 nodes.
# The environment (no packages) is built once beforehand; then N_JOBS jobs are submitted one at a
# time through the REST API by bench/jobs_latency.py (no CLI start-up counted), which polls the
# run every POLL_MS ms. Reports medians and p90 on the server's clock (the run's transitions)
# and on the client's. No peer: Azure ML, the design's reference, cannot be reached from here.
# Run it through bench/run.sh, which builds cairn and sets CAIRN_BIN.
#
# Environment:
#   N_JOBS=20              jobs submitted
#   POLL_MS=5              polling interval of the client
#   CAIRN_UV, UV_CACHE_DIR uv for the server's environment builds (default: the repo's .venv-tools, .cache/uv)
#   BENCH_DATA=bench/data  the server's data directory goes to BENCH_DATA/jobs
#   BENCH_OUT=bench/out    results: jobs.md
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
n_jobs=${N_JOBS:-20}
data=${BENCH_DATA:-$here/data}/jobs
out=${BENCH_OUT:-$here/out}
export CAIRN_UV=${CAIRN_UV:-$root/.venv-tools/bin/uv}
export UV_CACHE_DIR=${UV_CACHE_DIR:-$root/.cache/uv}
python=$root/.venv-tools/bin/python
[[ -x $python ]] || python=python3

cleanup() {
    trap '' INT TERM
    stop_server
    rm -rf "$data"
    rmdir "$(dirname "$data")" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[jobs] %s\n' "$*" >&2; }

rm -rf "$data"
mkdir -p "$data/spec" "$out"
start_server "$data/server"
log "server pid $SERVER_PID at $CAIRN_URL"
printf 'name: cpu\ntype: local\nsize: small\nmax_instances: 2\n' >"$data/spec/compute.yml"
printf 'name: plain\npip: []\n' >"$data/spec/env.yml"
"$CAIRN_BIN" workspace create bench >/dev/null
"$CAIRN_BIN" compute create -f "$data/spec/compute.yml" -w bench >/dev/null
"$CAIRN_BIN" env create -f "$data/spec/env.yml" -w bench >/dev/null
t=$(timed "$data/build.json" "$CAIRN_BIN" env build plain -w bench -o json)
grep -q '"ready": *true' "$data/build.json" || { cat "$data/build.json" >&2; log "environment build failed"; exit 1; }
log "environment plain built in ${t}s"
t2=$(timed "$data/build2.json" "$CAIRN_BIN" env build plain -w bench -o json)
grep -q '"reused": *true' "$data/build2.json" || { cat "$data/build2.json" >&2; log "environment not cached"; exit 1; }
log "environment plain found cached in ${t2}s (CLI included)"

"$python" "$here/jobs_latency.py" "$CAIRN_URL" "$CAIRN_TOKEN" bench "$n_jobs" "$out/jobs.md"
{
    echo
    echo "Server and client on one machine ($(nproc) cores), SQLite metadata store, local compute of 2 nodes;"
    echo "client polls every ${POLL_MS:-5} ms. Environment build beforehand: ${t}s first, ${t2}s cached (CLI included)."
    echo "Server peak RSS $(proc_mb "$SERVER_PID" VmHWM) MB. No peer measured: Azure ML cannot be reached from here."
} >>"$out/jobs.md"
cat "$out/jobs.md"
