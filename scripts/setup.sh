#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, and starts PostgreSQL.
# Idempotent: a second run changes nothing and needs no network.
#
#   .venv-tools/   uv, installed from PyPI with pip (no installer script from elsewhere)
#   .venv/         the tests' Python packages (scripts/requirements-test.txt), via uv
#   .venv-mlflow2/ an mlflow 2.x client (scripts/requirements-mlflow2.txt), via uv
#   PostgreSQL     up on 127.0.0.1:5432 (trust auth), as the Rust tests expect
#   Chromium       /usr/bin/chromium and /usr/bin/chromedriver, for the studio's browser tests
set -euo pipefail

UV_VERSION=0.13.9
PG_HOST=127.0.0.1
PG_PORT=5432

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REQUIREMENTS=scripts/requirements-test.txt

say() { printf 'setup: %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

# --- uv, in its own venv so the project venv stays exactly what the requirements say ---------
UV=.venv-tools/bin/uv
if [ -x "$UV" ] && [ "$("$UV" --version 2>/dev/null | awk '{print $2}')" = "$UV_VERSION" ]; then
    say "uv $UV_VERSION already installed"
else
    say "installing uv $UV_VERSION into .venv-tools"
    [ -x .venv-tools/bin/pip ] || python3 -m venv .venv-tools
    .venv-tools/bin/pip install --quiet "uv==$UV_VERSION"
fi

# --- the tests' Python venvs ---------------------------------------------------------------
# A stamp records which requirements a venv was built from, so an unchanged file means no
# work at all (and no registry access). A venv's packages are compiled to bytecode once
# here: where PYTHONDONTWRITEBYTECODE is set (as on CI machines) Python never writes .pyc files
# itself, and every test process would compile mlflow, pandas and scikit-learn from source again
# (`import mlflow` 11 s instead of 3 s on a 2-core machine).
make_venv() {
    local venv=$1 requirements=$2 stamp want python
    stamp=$venv/.cairn-requirements.sha256
    want="$(sha256sum "$requirements" | awk '{print $1}') bytecode"
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$venv is up to date with $requirements"
        return
    fi
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
        # The machine's own interpreter: uv must never download a Python build.
        python="$(python3 -c 'import sys; print(sys.executable)')"
        say "creating $venv with $python"
        rm -rf "$venv"
        UV_PYTHON_DOWNLOADS=never "$UV" venv --quiet --python "$python" "$venv"
    fi
    say "installing $requirements into $venv"
    VIRTUAL_ENV="$ROOT/$venv" "$UV" pip install --quiet --python "$venv/bin/python" -r "$requirements"
    say "compiling $venv's packages to bytecode"
    "$ROOT/scripts/venv-bytecode.sh" "$venv"
    echo "$want" > "$stamp"
}
make_venv .venv "$REQUIREMENTS"
make_venv .venv-mlflow2 scripts/requirements-mlflow2.txt

# --- PostgreSQL ----------------------------------------------------------------------------
pg_ready() { command -v pg_isready >/dev/null && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

if pg_ready; then
    say "PostgreSQL is accepting connections on $PG_HOST:$PG_PORT"
else
    fresh=no
    if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        say "installing PostgreSQL from Debian's packages"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
        fresh=yes
    fi
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    if [ "$fresh" = yes ]; then
        # The tests connect as postgres@127.0.0.1 without a password, as on the project's
        # machines; a fresh Debian cluster asks for one over TCP. Allow local TCP first.
        hba="/etc/postgresql/$version/main/pg_hba.conf"
        if ! $SUDO grep -q '^# cairn: trust loopback' "$hba"; then
            say "allowing password-less connections from loopback in $hba"
            $SUDO sed -i '1i # cairn: trust loopback (scripts/setup.sh)\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
            $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
        fi
    fi
    say "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 60); do
        pg_ready && break
        sleep 0.5
    done
    if ! pg_ready; then
        say "PostgreSQL did not come up on $PG_HOST:$PG_PORT; see /var/log/postgresql/" >&2
        exit 1
    fi
    say "PostgreSQL is accepting connections on $PG_HOST:$PG_PORT"
fi

# --- Chromium and chromedriver, for the studio's browser tests (crates/cairn/tests/ui.rs) -------
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "chromium and chromedriver already installed"
else
    say "installing chromium and chromium-driver from Debian's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

say "done"
