#!/usr/bin/env bash
# Datastore upload benchmark: `cairn datastore upload` of one large file and of many small files
# to the default datastore of a server on loopback, against `cp -r` of the same data on the same
# disk, repetitions interleaved; then `cairn datastore download` of the small files against
# `cp -r` of them. Reports medians, ratios and the server's peak RSS (VmHWM; one
# fresh server per case). Run it through bench/run.sh, which builds cairn and sets CAIRN_BIN.
#
# Environment:
#   UPLOAD_LARGE_MB=1024     size of the large file, in MiB
#   UPLOAD_LARGE_REPS=5      repetitions of the large-file case
#   UPLOAD_SMALL_COUNT=10000 number of small files
#   UPLOAD_SMALL_KB=4        size of each small file, in KiB
#   UPLOAD_SMALL_REPS=5      repetitions of the small-files case
#   DOWNLOAD_SMALL_REPS      repetitions of the small-files download (default: UPLOAD_SMALL_REPS)
#   BENCH_DATA=bench/data    where data, the server's data directory and cp's copies go (one disk)
#   BENCH_OUT=bench/out      where results go (upload.md, upload-times.tsv)
#   KEEP_DATA=1              keep the generated data (and reuse it next time)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

: "${CAIRN_BIN:?set CAIRN_BIN to the cairn binary, or run bench/run.sh}"
large_mb=${UPLOAD_LARGE_MB:-1024}
large_reps=${UPLOAD_LARGE_REPS:-5}
small_count=${UPLOAD_SMALL_COUNT:-10000}
small_kb=${UPLOAD_SMALL_KB:-4}
small_reps=${UPLOAD_SMALL_REPS:-5}
data=${BENCH_DATA:-$here/data}/upload
out=${BENCH_OUT:-$here/out}
src=$data/src
work=$data/work # the servers' data directories and cp's copies: same filesystem as each other

cleanup() {
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    stop_server
    rm -rf "$work"
    if [[ ${KEEP_DATA:-0} != 1 ]]; then
        rm -rf "$data"
        rmdir "$(dirname "$data")" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[upload] %s\n' "$*" >&2; }

# Source data, generated once per run (or kept from a KEEP_DATA=1 run with the same sizes).
stamp="large=${large_mb}MiB small=${small_count}x${small_kb}KiB"
if [[ $(cat "$src/stamp" 2>/dev/null) != "$stamp" ]]; then
    log "generating data: $stamp"
    rm -rf "$src"
    mkdir -p "$src/large" "$src/small"
    head -c "${large_mb}M" /dev/urandom >"$src/large/large.bin"
    head -c $((small_count * small_kb * 1024)) /dev/urandom |
        split -b $((small_kb * 1024)) -a 6 -d - "$src/small/f"
    echo "$stamp" >"$src/stamp"
fi
rm -rf "$work"
mkdir -p "$work/cp" "$out"
times=$out/upload-times.tsv
printf 'case\trep\ttool\tseconds\n' >"$times"
report=$out/upload.md
{
    echo "| case | reps | cairn median s | cp -r median s | ratio cairn/cp | cairn MB/s | cp MB/s | server peak RSS MB | client peak RSS MB |"
    echo "|---|---|---|---|---|---|---|---|---|"
} >"$report"

# report_row LABEL REPS BYTES PEAK_MB CLIENT_KB CAIRN_MEDIAN CP_MEDIAN: one line of the report.
report_row() {
    local label=$1 reps=$2 bytes=$3 peak=$4 client_kb=$5 cm=$6 pm=$7
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$reps" "$cm" "$pm" "$(ratio "$cm" "$pm")" \
        "$(mb_per_s "$bytes" "$cm")" "$(mb_per_s "$bytes" "$pm")" "$peak" "$(ratio $((client_kb * 1024)) 1e6 1)" >>"$report"
}

# bench_case NAME LABEL REPS FILES BYTES FREE: times both tools on $src/NAME, REPS times each. The
# copies are deleted (untimed) after each repetition when FREE is "each", after the last otherwise:
# on ext4, creating thousands of files in a directory whose inode was just freed by deleting such a
# directory was seen to cost ~10x more kernel time (cp -r: 0.5 s -> 5 s), for both tools alike.
bench_case() {
    local name=$1 label=$2 reps=$3 files=$4 bytes=$5 free=$6 rep target
    local cairn_times=() cp_times=() client_kb=0
    start_server "$work/server-$name"
    "$CAIRN_BIN" workspace create bench >/dev/null
    log "$name: server pid $SERVER_PID at $CAIRN_URL, idle RSS $(proc_mb "$SERVER_PID" VmRSS) MB"
    for rep in $(seq "$reps"); do
        target=$name-$rep
        # A real upload each time: every file sent, none skipped as already there.
        one_rep "$name" "$rep" "$work/cp/$target" uploaded "$files" \
            datastore upload -w bench "$src/$name" --target-path "$target" --quiet || return 1
        if [[ $free == each ]]; then
            rm -rf "${work:?}/cp/$target"
            "$CAIRN_BIN" datastore rm -w bench "$target" >/dev/null
        fi
    done
    local peak
    peak=$(proc_mb "$SERVER_PID" VmHWM)
    stop_server
    rm -rf "${work:?}/cp/$name-"* "$work/server-$name"
    report_row "$label" "$reps" "$bytes" "$peak" "$client_kb" "$(median "${cairn_times[@]}")" "$(median "${cp_times[@]}")"
}

# download_case NAME LABEL REPS FILES BYTES: `cairn datastore download` of $src/NAME (uploaded once,
# untimed) into a fresh folder, against `cp -r` of the same files, REPS times each, copies deleted
# after the last repetition (see bench_case).
download_case() {
    local name=$1 label=$2 reps=$3 files=$4 bytes=$5 rep
    local cairn_times=() cp_times=() client_kb=0
    start_server "$work/server-dl-$name"
    "$CAIRN_BIN" workspace create bench >/dev/null
    "$CAIRN_BIN" datastore upload -w bench "$src/$name" --target-path "$name" --quiet >/dev/null
    for rep in $(seq "$reps"); do
        one_rep "download-$name" "$rep" "$work/cp/dl-$name-$rep" downloaded "$files" \
            datastore download -w bench "$name" --dest "$work/dl-$rep" --quiet || return 1
    done
    local peak
    peak=$(proc_mb "$SERVER_PID" VmHWM)
    stop_server
    rm -rf "${work:?}/cp/dl-$name-"* "$work/dl-"* "$work/server-dl-$name"
    report_row "$label" "$reps" "$bytes" "$peak" "$client_kb" "$(median "${cairn_times[@]}")" "$(median "${cp_times[@]}")"
}

# one_rep CASE REP CP_DEST WORD FILES CAIRN_ARGS...: one repetition of a case: `cp -r $src/NAME
# CP_DEST` (NAME: the caller's $name) and `cairn CAIRN_ARGS...`, which must report WORD FILES
# file(s), timed one after the other. Appends to the caller's cairn_times, cp_times and client_kb
# (bash's dynamic scope) and to $times.
one_rep() {
    local case=$1 rep=$2 cp_dest=$3 word=$4 files=$5 tool t kb order
    shift 5
    # Alternate which tool goes first; flush earlier writes so that each starts from a clean slate.
    order=(cp cairn)
    ((rep % 2)) || order=(cairn cp)
    for tool in "${order[@]}"; do
        sync
        if [[ $tool == cp ]]; then
            t=$(timed /dev/null cp -r "$src/$name" "$cp_dest")
            cp_times+=("$t")
        else
            t=$(timed "$work/last.txt" /usr/bin/time -f %M -o "$work/client-kb" "$CAIRN_BIN" "$@")
            grep -Eq "^$word +$files file\(s\)" "$work/last.txt" || {
                cat "$work/last.txt" >&2
                log "$case rep $rep: expected $files files $word"
                return 1
            }
            kb=$(tail -n1 "$work/client-kb")
            if ((kb > client_kb)); then client_kb=$kb; fi
            cairn_times+=("$t")
        fi
        printf '%s\t%s\t%s\t%s\n' "$case" "$rep" "$tool" "$t" >>"$times"
        log "$case rep $rep/$reps: $tool ${t}s"
    done
}

bench_case large "1 file of $large_mb MiB" "$large_reps" 1 $((large_mb * 1024 * 1024)) each
bench_case small "$small_count files of $small_kb KiB" "$small_reps" "$small_count" $((small_count * small_kb * 1024)) end
download_case small "download: $small_count files of $small_kb KiB" "${DOWNLOAD_SMALL_REPS:-$small_reps}" "$small_count" $((small_count * small_kb * 1024))

cat "$report"
