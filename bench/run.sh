#!/usr/bin/env bash
# Runs Cairn's benchmarks: bench/run.sh [NAME...] runs bench/NAME.sh for each NAME (default: every
# bench/*.sh but run.sh, in name order; lib.sh holds shared helpers and is not a bench, nor is
# cairnbench.py, which starts cairn server for the Python benches as lib.sh does for shell). Builds the
# release binary first unless CAIRN_BIN points to one. Each bench prints a Markdown table and
# writes bench/out/NAME.md; bench/out/report.md gathers the machine notes and every table. See
# docs/benchmarks.md for what is measured and each bench's settings.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
if (($#)); then
    benches=("$@")
else
    benches=()
    for f in "$here"/*.sh; do
        name=$(basename "$f" .sh)
        [[ $name == run || $name == lib ]] || benches+=("$name")
    done
fi

if [[ -z ${CAIRN_BIN:-} ]]; then
    (cd "$root" && cargo build --release -p cairn)
    target_dir=$(cd "$root" && cargo metadata --no-deps --format-version 1 |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    CAIRN_BIN=$target_dir/release/cairn
fi
export CAIRN_BIN
export BENCH_OUT=${BENCH_OUT:-$here/out}
export BENCH_DATA=${BENCH_DATA:-$here/data}
mkdir -p "$BENCH_OUT" "$BENCH_DATA"

report=$BENCH_OUT/report.md
{
    echo "# Cairn benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "- binary: $CAIRN_BIN, built $(date -u -r "$CAIRN_BIN" '+%Y-%m-%d %H:%M UTC')"
    echo "- cores (nproc): $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "- memory: $(awk '/MemTotal/ { printf "%.1f GB", $2 * 1024 / 1e9 }' /proc/meminfo); kernel: $(uname -r)"
    echo "- data filesystem: $(df -hT "$BENCH_DATA" | awk 'NR == 2 { print $1 ", " $2 ", " $3 " (" $5 " free)" }')"
    echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$report"
cat "$report"

for bench in "${benches[@]}"; do
    [[ -x $here/$bench.sh ]] || { echo "no benchmark bench/$bench.sh" >&2; exit 2; }
    echo
    echo "## $bench"
    "$here/$bench.sh"
    { echo; echo "## $bench"; echo; cat "$BENCH_OUT/$bench.md"; } >>"$report"
done
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$report"
echo "report: $report"
