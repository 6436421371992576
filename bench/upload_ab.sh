#!/usr/bin/env bash
# A/B of the large-file upload: two cairn binaries side by side, each with its own server and
# client, uploading the same file to the default datastore, with `cp` of it on the same disk as
# the yardstick, taking turns (the order rotates each round), to tell a change to the upload path
# from the machine's mood. `bench/upload.sh` is the official comparison with `cp -r`.
#
#   A=/tmp/cairn-before B=target/release/cairn bench/upload_ab.sh
#
# Each round: `sync`, 0.5 s, then one upload (or copy) per side, each to a fresh target that is
# removed (untimed) afterwards. Reported: per side the median wall seconds (min-max) and the
# median ratio to cp; per round the times. Settings (environment): A, B, UPLOAD_LARGE_MB (1024),
# TURNS (7), BENCH_DATA (bench/data).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

: "${A:?set A to the first cairn binary}" "${B:?set B to the second cairn binary}"
mb=${UPLOAD_LARGE_MB:-1024}
turns=${TURNS:-7}
data=${BENCH_DATA:-$here/data}/upload-ab
src=$data/src
declare -A pid url token times

cleanup() {
    trap '' INT TERM
    for side in A B; do
        [[ -n ${pid[$side]:-} ]] && kill "${pid[$side]}" 2>/dev/null && wait "${pid[$side]}" 2>/dev/null
    done
    rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$src" "$data/cp"
head -c "${mb}M" /dev/urandom >"$src/large.bin"
for side in A B; do
    CAIRN_BIN=${!side} start_server "$data/server-$side"
    pid[$side]=$SERVER_PID url[$side]=$CAIRN_URL token[$side]=$CAIRN_TOKEN
    SERVER_PID= # each side's server is stopped by cleanup, not by the next start
    CAIRN_URL=${url[$side]} CAIRN_TOKEN=${token[$side]} "${!side}" workspace create bench >/dev/null
done

tools=(A B cp)
for round in $(seq "$turns"); do
    line="round $round:"
    for i in 0 1 2; do
        tool=${tools[$(((i + round) % 3))]}
        sync
        sleep 0.5
        if [[ $tool == cp ]]; then
            t=$(timed /dev/null cp "$src/large.bin" "$data/cp/large.bin")
            rm -f "$data/cp/large.bin"
        else
            t=$(CAIRN_URL=${url[$tool]} CAIRN_TOKEN=${token[$tool]} timed /dev/null "${!tool}" datastore upload \
                -w bench "$src/large.bin" --target-path "r$round" --quiet)
            CAIRN_URL=${url[$tool]} CAIRN_TOKEN=${token[$tool]} "${!tool}" datastore rm -w bench "r$round" >/dev/null
        fi
        times[$tool]="${times[$tool]:-} $t"
        line+=" $tool $t"
    done
    echo "$line"
done

cp_median=$(median ${times[cp]})
echo "file: $mb MiB; $turns rounds; A=$A B=$B"
for tool in A B cp; do
    # shellcheck disable=SC2086
    sorted=$(printf '%s\n' ${times[$tool]} | sort -n)
    printf '%-3s median %s s (%s-%s), %s x cp\n' "$tool" "$(median ${times[$tool]})" "$(head -1 <<<"$sorted")" \
        "$(tail -1 <<<"$sorted")" "$(ratio "$(median ${times[$tool]})" "$cp_median")"
done
