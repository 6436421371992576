#!/usr/bin/env python3
"""Submits trivial jobs one at a time through the REST API and times them (bench/jobs.sh runs it).

For each job: POST …/jobs, then GET …/runs/ID every POLL_MS ms over one keep-alive connection
until the run has ended. Reports, as median and p90 over the jobs:
- submit → Running on the server's clock (transitions[Running].at - transitions[Queued].at),
- submit → Running seen by the client (POST sent → first answer with status Running or later),
- the full round trip seen by the client (POST sent → first answer with status Completed),
- submit → Completed on the server's clock, and each phase between transitions.

Usage: jobs_latency.py URL TOKEN WORKSPACE N_JOBS OUT.md  (env POLL_MS=5)
"""

import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

PHASES = ["Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed"]
RUNNING_OR_LATER = {"Running", "Finalizing", "Completed", "Failed", "Canceled"}
TERMINAL = {"Completed", "Failed", "Canceled"}


def pct(values, p):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


def main():
    url, token, ws, n_jobs, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    poll = float(os.environ.get("POLL_MS", "5")) / 1000
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = f"/api/v1/workspaces/{ws}"

    def call(method, path, body=None):
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise SystemExit(f"{method} {path}: HTTP {resp.status}: {data[:500]!r}")
        return json.loads(data)

    submit = json.dumps({"experiment": "bench", "command": "true", "environment": "plain",
                         "compute": "cpu"}).encode()
    rows = []
    for i in range(n_jobs):
        t0 = time.perf_counter()
        run = call("POST", f"{base}/jobs", submit)
        t_posted = time.perf_counter()
        t_running = None
        polls = 0
        while True:
            if run["status"] in RUNNING_OR_LATER and t_running is None:
                t_running = time.perf_counter()
            if run["status"] in TERMINAL:
                t_done = time.perf_counter()
                break
            if time.perf_counter() - t0 > 120:
                raise SystemExit(f"run {run['id']} did not end in 120 s: {run['status']}")
            time.sleep(poll)
            run = call("GET", f"{base}/runs/{run['id']}")
            polls += 1
        if run["status"] != "Completed":
            raise SystemExit(f"run {run['id']} ended {run['status']}: {run.get('error')}")
        at = {t["status"]: t["at"] for t in run["transitions"]}
        missing = [p for p in PHASES if p not in at]
        if missing:
            raise SystemExit(f"run {run['id']} has no transition to {missing}: {run['transitions']}")
        row = {
            "server_running": at["Running"] - at["Queued"],
            "client_running": (t_running - t0) * 1000,
            "client_done": (t_done - t0) * 1000,
            "server_done": at["Completed"] - at["Queued"],
            "post": (t_posted - t0) * 1000,
        }
        for a, b in zip(PHASES, PHASES[1:]):
            row[f"{a}->{b}"] = at[b] - at[a]
        rows.append(row)
        print(f"[jobs] {i + 1}/{n_jobs} {run['id']}: Running after {row['server_running']} ms (server), "
              f"{row['client_running']:.0f} ms (client); Completed after {row['client_done']:.0f} ms; "
              f"{polls} polls", file=sys.stderr, flush=True)
    conn.close()

    def stat(key):
        v = [r[key] for r in rows]
        return statistics.median(v), pct(v, 90)

    def line(label, key, target=""):
        m, p = stat(key)
        return f"| {label} | {m:.0f} | {p:.0f} | {target} |"

    lines = [
        f"| measure ({n_jobs} trivial jobs `true`, one at a time, cached environment) | median ms | p90 ms | target |",
        "|---|---|---|---|",
        line("submit → Running, server clock (Queued → Running transitions)", "server_running", "< 300 ms"),
        line("submit → Running, seen by the client (POST → status Running)", "client_running", "< 300 ms"),
        line("full round trip, seen by the client (POST → status Completed)", "client_done", "< 1000 ms"),
        line("submit → Completed, server clock", "server_done", ""),
        line("POST /jobs answered", "post", ""),
    ]
    for a, b in zip(PHASES, PHASES[1:]):
        lines.append(line(f"phase {a} → {b}", f"{a}->{b}", ""))
    table = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
