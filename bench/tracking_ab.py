"""A/B of Cairn's metric ingestion: two cairn binaries side by side, the ingestion case of
``bench/tracking.py`` (N_METRICS metrics in requests of BATCH, from 1 client and from CLIENTS
clients, each to its own run), taking turns, to tell a change to ``log_batch`` from the machine's
mood. No MLflow: ``bench/tracking.sh`` compares with it.

    A=/tmp/cairn-before B=target/release/cairn .venv-bench/bin/python bench/tracking_ab.py

Every binary gets its own server (a fresh data directory); then TURNS rounds, each ingesting once
per binary and case, the order alternating by round. Reported per binary and case: the median
metrics/s (min–max) and the median of each round's B/A ratio. Settings (environment): A, B,
N_METRICS (200,000), BATCH (1000), CLIENTS (8), TURNS (5).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys

os.environ.setdefault("CAIRN_BIN", "unused")  # tracking.py reads it at import; each side has its own
import tracking  # noqa: E402  (same folder: its client, batches and ingestion loop)
from cairnbench import env_int  # noqa: E402

TURNS = env_int("TURNS", 5)


def main() -> None:
    sides = {"A": os.environ.get("A"), "B": os.environ.get("B")}
    if not all(sides.values()):
        raise SystemExit("set A and B to the two cairn binaries")
    shutil.rmtree(tracking.DATA, ignore_errors=True)
    os.makedirs(tracking.DATA)
    servers = {}
    for name, binary in sides.items():
        server = tracking.cairnbench.start_cairn(binary, os.path.join(tracking.DATA, name))
        tracking._procs.append((server.proc, False))
        subprocess.run([binary, "workspace", "create", "bench"], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "CAIRN_URL": server.url, "CAIRN_TOKEN": server.token})
        client = tracking.Cairn(server.url, server.token, "bench")
        conn = client.conn()
        client.exp_ingest = client.create_experiment(conn, "ingest")
        conn.close()
        servers[name] = client
    load_before = open("/proc/loadavg").read().split()[:3]
    rates: dict[tuple[str, int], list[float]] = {}
    for turn in range(TURNS):
        for clients in (1, tracking.CLIENTS):
            order = ("A", "B") if (turn + (clients > 1)) % 2 == 0 else ("B", "A")
            for name in order:
                rate, secs, _ = tracking.ingest(servers[name], clients, tracking.N_METRICS,
                                                servers[name].exp_ingest)
                rates.setdefault((name, clients), []).append(rate)
                tracking.log(f"{name}: {tracking.N_METRICS} metrics from {clients} client(s) in {secs:.2f} s: "
                             f"{rate:,.0f} metrics/s")
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"\n| case | A: {sides['A']} | B: {sides['B']} | B/A, median of {TURNS} turns |")
    print("|---|---|---|---|")
    for clients in (1, tracking.CLIENTS):
        a, b = rates[("A", clients)], rates[("B", clients)]
        ratio = statistics.median(y / x for x, y in zip(a, b))
        cell = lambda r: f"{statistics.median(r):,.0f} ({min(r):,.0f}–{max(r):,.0f})"  # noqa: E731
        print(f"| {clients} client(s): metrics/s, median (min–max) | {cell(a)} | {cell(b)} | {ratio:.2f} |")
    print(f"\n{tracking.N_METRICS:,} metrics per case, {tracking.BATCH} per request. "
          f"Load average before {' '.join(load_before)}, after {' '.join(load_after)}.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
