"""A/B of the Python SDK's ``Datastore.upload`` of many small files: two versions of
``python/cairn`` against one release server, taking turns (the order alternates per round), each
upload into a fresh workspace from a child process, timed there (wall and the child's own CPU).

Not one of ``bench/run.sh``'s benches (it compares two versions of Cairn, not Cairn with a peer);
it is how docs/benchmarks.md's SDK upload numbers were taken. Example, the SDK of 507f853 against
the working tree's:

    git archive 507f853 python/cairn | tar -x -C /tmp/old
    .venv/bin/python bench/sdk_upload_ab.py target/release/cairn /tmp/old/python python

Settings (environment): N_FILES (2000), FILE_BYTES (4096), REPS (6), DATA_DIR (a new folder in
/tmp for the server). The source files are written under /dev/shm, so reading them costs the same
for both sides.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from cairnbench import env_int, start_cairn

CHILD = r"""
import os, sys, time
from cairn import Workspace
ws = Workspace.create(sys.argv[1])
ds = ws.get_default_datastore()
wall, cpu = time.perf_counter(), os.times()
ds.upload(sys.argv[2], target_path="t", show_progress=False)
after = os.times()
print(time.perf_counter() - wall, (after.user - cpu.user) + (after.system - cpu.system))
"""


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    binary, sides = os.path.abspath(sys.argv[1]), {"A": sys.argv[2], "B": sys.argv[3]}
    n_files, size, reps = env_int("N_FILES", 2000), env_int("FILE_BYTES", 4096), env_int("REPS", 6)
    src = tempfile.mkdtemp(prefix="sdk-ab-src-", dir="/dev/shm")
    own_data = not os.environ.get("DATA_DIR")
    data = os.environ.get("DATA_DIR") or tempfile.mkdtemp(prefix="sdk-ab-data-")
    for i in range(n_files):
        folder = os.path.join(src, f"d{i // 1000}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{i:05d}"), "wb") as f:
            f.write(os.urandom(size))
    server = start_cairn(binary, data)
    times: dict = {side: [] for side in sides}
    try:
        for rep in range(reps):
            for side in (("A", "B") if rep % 2 == 0 else ("B", "A")):
                env = dict(os.environ, PYTHONPATH=os.path.abspath(sides[side]), CAIRN_URL=server.url,
                           CAIRN_TOKEN=server.token)
                out = subprocess.run([sys.executable, "-c", CHILD, f"ab-{side.lower()}-{rep}", src], env=env,
                                     capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(out.stderr)
                wall, cpu = map(float, out.stdout.split())
                times[side].append((wall, cpu))
                print(f"{side} round {rep}: wall {wall:.3f} s, client CPU {cpu:.3f} s", flush=True)
    finally:
        server.stop()
        shutil.rmtree(src, ignore_errors=True)
        if own_data:
            shutil.rmtree(data, ignore_errors=True)
            os.remove(data + ".log")
    print(f"\n{n_files} files of {size} bytes, {reps} rounds\n")
    print("| side | python/cairn | median wall, s | median client CPU, s |\n|---|---|---|---|")
    for side, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {side} | {sides[side]} | {wall:.3f} | {cpu:.3f} |")
    ratio = statistics.median(w for w, _ in times["A"]) / statistics.median(w for w, _ in times["B"])
    print(f"\nwall A / B: {ratio:.2f}x")


if __name__ == "__main__":
    main()
