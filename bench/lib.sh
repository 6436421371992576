# Helpers shared by the benchmarks. Sourced by bench/*.sh, not run on its own.
# shellcheck shell=bash

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }

# Prints B - A for two `now` values, in seconds with millisecond precision.
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Prints A / B with the given number of decimals (default 2).
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, a / b }'; }

# Throughput in MB/s (10^6 bytes) of BYTES moved in SECONDS.
mb_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / s / 1e6 }'; }

# Runs a command with its stdout into file OUT and prints its wall-clock seconds: timed OUT CMD...
timed() {
    local out=$1 t0 t1
    shift
    t0=$(now)
    "$@" >"$out"
    t1=$(now)
    seconds_between "$t0" "$t1"
}

# A /proc/PID/status field (VmHWM, VmRSS, in kB) in MB (10^6 bytes), one decimal.
proc_mb() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 * 1024 / 1e6 }' "/proc/$1/status"; }

# Starts `cairn server` on a free loopback port with data directory DIR (its log goes to
# DIR.log) and exports SERVER_PID, CAIRN_URL and CAIRN_TOKEN. Needs CAIRN_BIN.
start_server() {
    local dir=$1
    mkdir -p "$dir"
    # From DIR, so that no ./cairn.toml is picked up; without server settings from the caller's environment.
    (cd "$dir" && exec env -u CAIRN_CONFIG -u CAIRN_DATABASE_URL -u CAIRN_ARTIFACT_STORE -u CAIRN_MAX_UPLOAD_BYTES \
        "$CAIRN_BIN" server --listen 127.0.0.1:0 --data-dir "$dir") 2>"$dir.log" &
    SERVER_PID=$!
    CAIRN_URL=
    for _ in $(seq 300); do
        CAIRN_URL=$(grep -o 'listening on http://[0-9.:]*' "$dir.log" | cut -d' ' -f3 || true)
        [[ -n $CAIRN_URL && -s $dir/admin-token ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir.log" >&2; echo "cairn server exited" >&2; return 1; }
        sleep 0.1
    done
    [[ -n $CAIRN_URL ]] || { echo "cairn server did not start; see $dir.log" >&2; return 1; }
    CAIRN_TOKEN=$(<"$dir/admin-token")
    export SERVER_PID CAIRN_URL CAIRN_TOKEN
}

# Stops the server started by start_server, if any.
stop_server() {
    if [[ -n ${SERVER_PID:-} ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# Makes (or keeps) the venv VENV with the packages of REQUIREMENTS, using the project's uv
# (scripts/setup.sh installs it) and its cache. Idempotent: `uv pip install` does nothing when
# everything is installed. The venv uses the machine's python3 (uv must not download one).
# Its packages are compiled to bytecode (once; uv compiles what it installs later), so that
# with PYTHONDONTWRITEBYTECODE set no benchmarked process compiles its imports from source.
bench_venv() {
    local venv=$1 requirements=$2 root uv python
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    uv=${CAIRN_UV:-$root/.venv-tools/bin/uv}
    [[ -x $uv ]] || uv=$(command -v uv) || { echo "uv not found: run scripts/setup.sh" >&2; return 1; }
    export UV_CACHE_DIR=${UV_CACHE_DIR:-$root/.cache/uv}
    python=$(python3 -c 'import sys; print(sys.executable)')
    [[ -x $venv/bin/python ]] || UV_PYTHON_DOWNLOADS=never "$uv" venv -q --python "$python" "$venv"
    "$uv" pip install -q --compile-bytecode -p "$venv/bin/python" -r "$requirements"
    if [[ ! -e $venv/.cairn-bytecode ]]; then
        "$root/scripts/venv-bytecode.sh" "$venv"
        touch "$venv/.cairn-bytecode"
    fi
}
