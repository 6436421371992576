#!/usr/bin/env python3
"""MLflow client workload (issue 4): the same work through the stock `mlflow` client against Cairn
and against an `mlflow server` (SQLite backend), both on loopback of this machine.

The workload, run once per server by a child process of this script (`--drive`) whose only
configuration is MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN for Cairn), as a user would have:

1. logging: one experiment; N_RUNS runs, each created with `MlflowClient.create_run` (named
   run-00000, …), given N_PARAMS params and N_METRICS metrics × N_STEPS steps through
   `log_batch` (at most BATCH metrics per call, the params in the first call) and ended with
   `set_terminated`; THREADS client threads share the runs;
2. search: N_SEARCHES `search_runs` calls, each `metrics.m0 < T and params.p0 = 'V'` (T and V vary
   with the query) ordered by `metrics.m1` (ASC or DESC, alternating), first page of PAGE runs.

Clocks: logging from the experiment's creation to the last run's end; search over the
N_SEARCHES calls; end to end is both. The client's own work (building the Metric objects, its
JSON encoding) is inside the clock, on both servers alike: it is the client workload. Every
search page (run names, in order) must be the same from both servers and equal to the answer
computed here from the logged data, or the bench fails.

Run it through bench/mlflow_client.sh (which makes the venv with mlflow) or bench/run.sh mlflow_client.

Environment:
  CAIRN_BIN                   the cairn binary (required)
  N_RUNS=1000                 runs logged
  N_PARAMS=10                 params per run (p0 … p9)
  N_METRICS=20                metric keys per run (m0 … m19)
  N_STEPS=100                 steps per metric key
  BATCH=1000                  metrics per log_batch call (MLflow's maximum is 1000)
  THREADS=4                   client threads (the same for both servers)
  N_SEARCHES=50               search_runs calls
  PAGE=100                    max_results of each search
  MLFLOW_WORKERS=1            `mlflow server --workers` (read by bench/tracking.py's start_mlflow)
  BENCH_DATA=bench/data       servers' data directories go to BENCH_DATA/mlflow_client
  BENCH_OUT=bench/out         results: mlflow_client.md
  KEEP_DATA=1                 keep the servers' data directories
"""

import json
import statistics
import os
import resource
import random
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cairnbench import env_int, proc_stats  # noqa: E402

N_RUNS = env_int("N_RUNS", 1000)
N_PARAMS = env_int("N_PARAMS", 10)
N_METRICS = env_int("N_METRICS", 20)
N_STEPS = env_int("N_STEPS", 100)
BATCH = env_int("BATCH", 1000)
THREADS = env_int("THREADS", 4)
N_SEARCHES = env_int("N_SEARCHES", 50)
PAGE = env_int("PAGE", 100)
EXPERIMENT = "mlflow-client-bench"


def log(msg):
    print(f"[mlflow_client] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The data and the queries (the same in the driver and in the checking parent)


def run_name(i):
    return f"run-{i:05d}"


def run_data(i):
    """Run i's params (dict) and its metric values, values[step][key_index]; seeded by i."""
    rng = random.Random(i)
    params = {"p0": rng.choice("abcd")}
    for k in range(1, N_PARAMS):
        params[f"p{k}"] = str(rng.randint(1, 1000))
    values = [[rng.random() for _ in range(N_METRICS)] for _ in range(N_STEPS)]
    return params, values


def query(q):
    """The q-th search: (filter, order_by)."""
    threshold = 0.2 + 0.05 * (q % 12)
    p0 = "abcd"[q % 4]
    order = "ASC" if q % 2 == 0 else "DESC"
    return f"metrics.m0 < {threshold:.2f} and params.p0 = '{p0}'", [f"metrics.m1 {order}"]


def expected_pages():
    """Each query's expected page of run names, from the data (latest value = last step)."""
    latest = []
    for i in range(N_RUNS):
        params, values = run_data(i)
        latest.append((run_name(i), params["p0"], values[-1][0], values[-1][1] if N_METRICS > 1 else 0.0))
    pages = []
    for q in range(N_SEARCHES):
        threshold = 0.2 + 0.05 * (q % 12)
        p0 = "abcd"[q % 4]
        match = [(m1, name) for name, v, m0, m1 in latest if v == p0 and m0 < round(threshold, 2)]
        match.sort(reverse=q % 2 == 1)
        pages.append([name for _, name in match[:PAGE]])
    return pages


# ---------------------------------------------------------------------------------------------
# The driver: runs the workload against MLFLOW_TRACKING_URI with the stock client


def drive():
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    errors = []
    next_i = iter(range(N_RUNS))
    lock = threading.Lock()

    def worker():
        try:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                run = client.create_run(exp_id, run_name=run_name(i))
                run_id = run.info.run_id
                params, values = run_data(i)
                ts = int(time.time() * 1000)
                metrics = [Metric(f"m{k}", values[step][k], ts + step, step)
                           for step in range(N_STEPS) for k in range(N_METRICS)]
                first = [Param(k, v) for k, v in params.items()]
                for off in range(0, max(len(metrics), 1), BATCH):
                    client.log_batch(run_id, metrics=metrics[off:off + BATCH], params=first)
                    first = []
                client.set_terminated(run_id)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t0 = time.perf_counter()
    exp_id = client.create_experiment(EXPERIMENT)
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.perf_counter()
    if errors:
        raise errors[0]

    pages, times = [], []
    for q in range(N_SEARCHES):
        filter_string, order_by = query(q)
        s0 = time.perf_counter()
        runs = client.search_runs([exp_id], filter_string=filter_string, order_by=order_by,
                                  max_results=PAGE)
        times.append(time.perf_counter() - s0)
        pages.append([r.info.run_name for r in runs])
    t2 = time.perf_counter()
    save_pages(exp_id, os.environ["PAGE_FILE"])
    # The last line of stdout (the client may print lines of its own, e.g. "View run … at …").
    print("\n" + json.dumps({"log_s": t1 - t0, "search_s": t2 - t1, "total_s": t2 - t0,
                      "search_ms": [t * 1000 for t in times], "pages": pages}))


def save_pages(exp_id, path):
    """Writes every query's page, as the server sent it (raw JSON text), to `path` (a JSON list),
    untimed, for the decoding floor below."""
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]
    url = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/runs/search"
    pages = []
    for q in range(N_SEARCHES):
        filter_string, order_by = query(q)
        body = json.dumps({"experiment_ids": [exp_id], "filter": filter_string, "order_by": order_by,
                           "max_results": PAGE}).encode()
        pages.append(urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers)).read().decode())
    with open(path, "w") as f:
        json.dump(pages, f)


def client_decode(paths, rounds=3):
    """The client's own cost for each search page, without any server: every query's page, as each
    server sent it, decoded as `search_runs` does (JSON -> protobuf -> `Run` entities), the servers
    taking turns page by page so that both see the same machine. Returns, per server, the median ms
    of each query's page over `rounds`. Every page is decoded, not only the first: the pages hold
    from a few dozen to PAGE runs, and decoding costs about in proportion. Both servers' times per
    call include this floor."""
    from mlflow.entities import Run
    from mlflow.protos.service_pb2 import SearchRuns
    from mlflow.utils.proto_json_utils import parse_dict

    pages = {name: json.load(open(path)) for name, path in paths.items()}
    times = {name: [[] for _ in range(N_SEARCHES)] for name in paths}
    for _ in range(rounds):
        for q in range(N_SEARCHES):
            for name in pages:
                t0 = time.perf_counter()
                resp = SearchRuns.Response()
                parse_dict(json.loads(pages[name][q]), resp)
                runs = [Run.from_proto(r) for r in resp.runs]
                times[name][q].append((time.perf_counter() - t0) * 1000)
    return {name: [statistics.median(t) for t in per_q] for name, per_q in times.items()}


def cpu_s(pid, group=False):
    """User + system CPU seconds so far of process `pid`, or of every live process of its process
    group (an `mlflow server` and its workers)."""
    return sum(cpu for p, _, pgrp, cpu in proc_stats() if (pgrp if group else p) == pid)


# ---------------------------------------------------------------------------------------------
# The parent: starts both servers (bench/tracking.py's helpers), drives each, checks, reports


def main():
    import tracking as T

    if not T.CAIRN_BIN:
        raise SystemExit("set CAIRN_BIN to the cairn binary, or run bench/run.sh mlflow_client")
    data = os.path.join(os.environ.get("BENCH_DATA", os.path.join(HERE, "data")), "mlflow_client")
    out = os.environ.get("BENCH_OUT", os.path.join(HERE, "out"))
    T.DATA = data  # tracking's exit handler stops the servers and removes this (unless KEEP_DATA=1)
    import shutil
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    os.makedirs(out, exist_ok=True)
    load_before = open("/proc/loadavg").read().split()[:3]

    url, token, cairn_pid = T.start_cairn(os.path.join(data, "cairn"))
    subprocess.run([T.CAIRN_BIN, "workspace", "create", "bench"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "CAIRN_URL": url, "CAIRN_TOKEN": token})
    log(f"cairn server pid {cairn_pid} at {url}")
    ml_url = T.start_mlflow(os.path.join(data, "mlflow"))
    mlflow_pgid = T._procs[-1][0].pid  # start_mlflow's process leads its own group
    ver = T.mlflow_version()
    log(f"mlflow {ver} server at {ml_url} (--workers {T.MLFLOW_WORKERS})")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    targets = [("Cairn", {"MLFLOW_TRACKING_URI": f"{url}/workspaces/bench/mlflow", "MLFLOW_TRACKING_TOKEN": token}),
               ("MLflow", {"MLFLOW_TRACKING_URI": ml_url})]
    server_cpu = {"Cairn": lambda: cpu_s(cairn_pid), "MLflow": lambda: cpu_s(mlflow_pgid, group=True)}
    res = {}
    for name, extra in targets:
        log(f"{name}: {N_RUNS} runs × {N_PARAMS} params × {N_METRICS} metrics × {N_STEPS} steps, "
            f"{THREADS} client threads; then {N_SEARCHES} searches")
        page_file = os.path.join(data, f"{name}-pages.json")
        client_before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), server_cpu[name]()
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--drive"],
                           env={**base_env, **extra, "PAGE_FILE": page_file}, stdout=subprocess.PIPE, check=True)
        res[name] = json.loads(p.stdout.decode().strip().splitlines()[-1])
        client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        res[name]["client_cpu_s"] = (client_after.ru_utime + client_after.ru_stime
                                     - client_before.ru_utime - client_before.ru_stime)
        res[name]["server_cpu_s"] = server_cpu[name]() - server_before
        r = res[name]
        log(f"{name}: logging {r['log_s']:.1f} s, search {r['search_s']:.2f} s, end to end {r['total_s']:.1f} s")
    decode = client_decode({name: os.path.join(data, f"{name}-pages.json") for name in res})
    for name in res:
        res[name]["decode_ms"] = decode[name]  # per query
        res[name]["decode_s"] = sum(decode[name]) / 1000
    cairn_rss = T.peak_rss_mb(cairn_pid)
    load_after = open("/proc/loadavg").read().split()[:3]

    want = expected_pages()
    for name in res:
        got = res[name]["pages"]
        bad = [q for q in range(N_SEARCHES) if got[q] != want[q]]
        if bad:
            q = bad[0]
            raise SystemExit(f"{name}: {len(bad)} search pages differ from the expected; query {q} "
                             f"({query(q)}): got {got[q][:5]}… ({len(got[q])}), expected {want[q][:5]}… "
                             f"({len(want[q])})")
    matches = [len(p) for p in want]
    log(f"search: both servers returned the expected run names, in order, for all {N_SEARCHES} queries")

    c, m = res["Cairn"], res["MLflow"]
    n_metrics = N_RUNS * N_METRICS * N_STEPS
    calls = -(-N_METRICS * N_STEPS // BATCH)

    def row(label, a, b, target):
        return f"| {label} | {a:.2f} | {b:.2f} | {b / a:.1f}x | {target} |"

    lines = [
        f"| wall time, s | Cairn | MLflow {ver} | ratio MLflow/Cairn | target |",
        "|---|---|---|---|---|",
        row(f"logging: {N_RUNS:,} runs, {n_metrics:,} metrics, {N_RUNS * N_PARAMS:,} params "
            f"({THREADS} client threads)", c["log_s"], m["log_s"], ""),
        row(f"search: {N_SEARCHES} search_runs, first page of {PAGE}", c["search_s"], m["search_s"], "≥ 10x"),
        row("end to end (logging + search)", c["total_s"], m["total_s"], "≥ 5x"),
        f"| search: median ms per call | {statistics.median(c['search_ms']):.1f} | "
        f"{statistics.median(m['search_ms']):.1f} | "
        f"{statistics.median(m['search_ms']) / statistics.median(c['search_ms']):.1f}x | |",
        f"| search: the client's own decoding of the {N_SEARCHES} pages (no server), s | {c['decode_s']:.2f} | "
        f"{m['decode_s']:.2f} | | |",
        f"| search: the client's own decoding, median ms per page | {statistics.median(c['decode_ms']):.1f} | "
        f"{statistics.median(m['decode_ms']):.1f} | | |",
        f"| search: wall time minus the client's decoding, s | {c['search_s'] - c['decode_s']:.2f} | "
        f"{m['search_s'] - m['decode_s']:.2f} | "
        f"{(m['search_s'] - m['decode_s']) / max(c['search_s'] - c['decode_s'], 0.001):.1f}x | |",
        f"| search: best ratio possible through this client (MLflow's search / Cairn's pages' decoding) | | | "
        f"{m['search_s'] / c['decode_s']:.1f}x | |",
        f"| CPU of the client process (user + system), s | {c['client_cpu_s']:.1f} | {m['client_cpu_s']:.1f} | | |",
        f"| CPU of the server (all its processes), s | {c['server_cpu_s']:.1f} | {m['server_cpu_s']:.1f} | "
        f"{m['server_cpu_s'] / max(c['server_cpu_s'], 0.01):.1f}x | |",
    ]
    notes = [
        "",
        f"Stock `mlflow` {ver} client (`MlflowClient`, MLFLOW_TRACKING_URI / MLFLOW_TRACKING_TOKEN), one "
        f"process per server. Each run: `create_run`, {calls} `log_batch` call(s) of ≤ {BATCH} metrics "
        f"({N_METRICS} keys × {N_STEPS} steps; the {N_PARAMS} params in the first call), `set_terminated`. "
        f"Searches: `metrics.m0 < T and params.p0 = 'V'` ordered by `metrics.m1` ASC/DESC "
        f"({min(matches)}–{max(matches)} runs match per query); every page was the same from both servers "
        f"and equal to the expected run names. "
        f"MLflow: `mlflow server --backend-store-uri sqlite:///… --workers {T.MLFLOW_WORKERS}`; "
        f"Cairn: `cairn server`, embedded SQLite, fresh data directory; both on 127.0.0.1 "
        f"({os.cpu_count()} cores)."
        + (f" Cairn server peak RSS {cairn_rss:.0f} MB." if cairn_rss else "")
        + f" Load average before {' '.join(load_before)}, after {' '.join(load_after)}.",
    ]
    table = "\n".join(lines + notes) + "\n"
    print(table)
    with open(os.path.join(out, "mlflow_client.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    if sys.argv[1:] == ["--drive"]:
        drive()
    else:
        main()
