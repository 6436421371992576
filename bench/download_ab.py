"""A/B of `cairn datastore download` of many small files: several cairn binaries, each with its
own server (and its own copy of the files, uploaded once, untimed), downloading into /dev/shm in
turns (the order rotates each round), against `cp -r` of the same files within /dev/shm. Wall time
of each download and the server's CPU time (user + system, from /proc) during it.

Not one of ``bench/run.sh``'s benches (it compares versions of Cairn; ``bench/upload.sh`` compares
Cairn with `cp -r` on the disk, where the disk's own slowdowns after deletions dominate); it is how
docs/benchmarks.md's download numbers in /dev/shm were taken. Example:

    .venv/bin/python bench/download_ab.py /tmp/cairn-before target/release/cairn

Settings (environment): N_FILES (10000), FILE_BYTES (4096), REPS (3).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from cairnbench import env_int, start_cairn


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    bins = sys.argv[1:]
    if not bins:
        raise SystemExit(__doc__)
    n_files, size, reps = env_int("N_FILES", 10000), env_int("FILE_BYTES", 4096), env_int("REPS", 3)
    work = tempfile.mkdtemp(prefix="download-ab-", dir="/dev/shm")
    servers = []
    try:
        src = os.path.join(work, "src")
        for i in range(n_files):
            folder = os.path.join(src, f"d{i % 100:02d}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"f{i:05d}.bin"), "wb") as f:
                f.write(os.urandom(size))
        for k, binary in enumerate(bins):
            server = start_cairn(binary, os.path.join(work, f"server{k}"))
            servers.append(server)
            env = dict(os.environ, CAIRN_URL=server.url, CAIRN_TOKEN=server.token)
            cli = lambda *args: subprocess.run([binary, *args], env=env, check=True, capture_output=True)
            cli("workspace", "create", "ab")
            cli("datastore", "upload", "-w", "ab", src, "--target-path", "src", "-q")
        times = {name: [] for name in [*bins, "cp -r"]}
        cpu = {name: [] for name in bins}
        for rep in range(reps):
            order = [*bins, "cp -r"]
            order = order[rep % len(order):] + order[: rep % len(order)]
            for name in order:
                out = os.path.join(work, "out")
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                if name == "cp -r":
                    subprocess.run(["cp", "-r", src, out], check=True)
                else:
                    server = servers[bins.index(name)]
                    before = cpu_seconds(server.pid)
                    env = dict(os.environ, CAIRN_URL=server.url, CAIRN_TOKEN=server.token)
                    subprocess.run(
                        [name, "datastore", "download", "-w", "ab", "src", "--dest", out, "-q"],
                        env=env, check=True, capture_output=True,
                    )
                    cpu[name].append(cpu_seconds(server.pid) - before)
                times[name].append(time.perf_counter() - started)
                got = sum(len(files) for _, _, files in os.walk(out))
                if got != n_files:
                    raise SystemExit(f"{name}: {got} files downloaded, not {n_files}")
        print(f"| binary | wall s, each | median s | server CPU s, median | ratio to cp -r |")
        print("|---|---|---|---|---|")
        cp = statistics.median(times["cp -r"])
        for name, walls in times.items():
            server_cpu = f"{statistics.median(cpu[name]):.2f}" if name in cpu else "–"
            each = ", ".join(f"{w:.3f}" for w in walls)
            print(f"| {name} | {each} | {statistics.median(walls):.3f} | {server_cpu} | "
                  f"{statistics.median(walls) / cp:.2f}× |")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
