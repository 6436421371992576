"""What the Python benchmarks share: starting `cairn server`, one way for all of them (the shell
benchmarks' twin is `start_server` in bench/lib.sh), and reading their integer settings.

The server runs from its data directory (so that no ./cairn.toml is picked up) on a free loopback
port, with the caller's environment minus Cairn's own settings: a developer's CAIRN_DATABASE_URL,
CAIRN_CONFIG or CAIRN_LOG must not change what is measured. CAIRN_UV (which uv builds
environments) is kept. Its log goes to DATA_DIR.log. It is ready when it has logged its address and
written its admin token.

Standard library only: every benchmark's venv can import it (scripts run from bench/ find it on
their own; others put bench/ on sys.path).
"""

import os
import subprocess
import time
from dataclasses import dataclass

# What a caller's environment may pass on to the server of Cairn's own variables.
KEPT = ("CAIRN_UV",)


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment."""
    return int(os.environ.get(name, default))


@dataclass
class CairnServer:
    proc: subprocess.Popen
    url: str
    token: str
    data_dir: str
    log_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a clean stop), SIGKILL after `timeout` seconds."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def server_env(extra=None) -> dict:
    """The caller's environment without CAIRN_* (but KEPT), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_") or k in KEPT}
    env.update(extra or {})
    return env


def start_cairn(bin_path: str, data_dir, env=None, args=(), timeout: float = 60) -> CairnServer:
    """Starts `BIN server` with data directory `data_dir` (made if missing) and waits until it
    serves. `env` adds variables to the server's environment (CAIRN_LOG, HOME, …), `args` flags.
    Raises SystemExit with the server's log if it exits or does not start within `timeout`."""
    data_dir = os.fspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    log_path = data_dir + ".log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [bin_path, "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir, *args],
            cwd=data_dir, env=server_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )
    token_path = os.path.join(data_dir, "admin-token")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cairn server exited ({proc.returncode}):\n{open(log_path, errors='replace').read()}")
        text = open(log_path, errors="replace").read()
        i = text.find("listening on http://")
        if i >= 0 and os.path.exists(token_path) and os.path.getsize(token_path) > 0:
            url = text[i + len("listening on "):].split()[0].strip('"')
            token = open(token_path).read().strip()
            return CairnServer(proc, url, token, data_dir, log_path)
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"cairn server did not start in {timeout:.0f} s; see {log_path}")


_TICK = os.sysconf("SC_CLK_TCK")


def proc_stats():
    """Every live process as (pid, parent pid, process group, CPU seconds so far: user + system),
    from /proc/PID/stat."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stats = _stat(entry)
            if stats is not None:
                yield stats


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far."""
    stats = _stat(str(pid))
    if stats is None:
        raise ProcessLookupError(pid)
    return stats[3]


def _stat(entry: str):
    try:
        with open(f"/proc/{entry}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return int(entry), int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICK
