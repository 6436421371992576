#!/usr/bin/env python3
"""MLflow tracing workload (issue 4): the same traced calls, trace searches and trace reads through
the stock `mlflow` client against Cairn and against an `mlflow server` (SQLite backend), both on
loopback of this machine.

The workload, run once per server by a child process of this script (`--drive`) whose only
configuration is MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN for Cairn), as a user would have:

1. logging: N_TRACES calls of a function decorated with `@mlflow.trace`, each opening SPANS - 1
   child spans with small inputs and outputs and tagging its trace (`team` = t0 … t9); the
   client's default export (asynchronous) until `mlflow.flush_trace_async_logging()` returns,
   i.e. until every trace is stored. Both servers answer `/version` with 3.4 or later, so against
   both the client sends each span over OTLP (`/v1/traces`) as it ends and the trace's info with
   StartTraceV3 (and uploads a `traces.json` only when that info overtook its spans);
2. search: N_SEARCHES `search_traces` calls, `tags.team = 'tK'` ordered by `timestamp_ms DESC`,
   a page of PAGE traces, without spans (`include_spans=False`);
3. read: N_READS `get_trace` calls, each trace with its spans.

Every search page (the traces' `i` inputs, in order) must be the same from both servers and equal
to the answer computed here, and every trace read must have SPANS spans, or the bench fails.

Run it through bench/mlflow_traces.sh (which makes the venv with mlflow) or bench/run.sh mlflow_traces.

Environment:
  CAIRN_BIN          the cairn binary (required)
  N_TRACES=1000      traced calls
  SPANS=5            spans per trace (the root and SPANS - 1 children)
  N_SEARCHES=50      search_traces calls
  PAGE=50            max_results of each search
  N_READS=100        get_trace calls
  BENCH_DATA=bench/data   servers' data directories go to BENCH_DATA/mlflow_traces
  BENCH_OUT=bench/out     results: mlflow_traces.md
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cairnbench import env_int  # noqa: E402

N_TRACES = env_int("N_TRACES", 1000)
SPANS = env_int("SPANS", 5)
N_SEARCHES = env_int("N_SEARCHES", 50)
PAGE = env_int("PAGE", 50)
N_READS = env_int("N_READS", 100)
TEAMS = 10


def log(msg):
    print(f"[mlflow_traces] {msg}", file=sys.stderr, flush=True)


def expected_page(q):
    """The `i` of the traces tagged with query q's team, newest (highest i) first, one page."""
    team = q % TEAMS
    return [i for i in range(N_TRACES - 1, -1, -1) if i % TEAMS == team][:PAGE]


# ---------------------------------------------------------------------------------------------
# The driver: runs the workload against MLFLOW_TRACKING_URI with the stock client


def drive():
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    exp_id = client.create_experiment("traces-bench")
    mlflow.set_experiment(experiment_id=exp_id)

    @mlflow.trace(name="predict")
    def predict(i):
        mlflow.update_current_trace(tags={"team": f"t{i % TEAMS}"})
        for k in range(SPANS - 1):
            with mlflow.start_span(name=f"step{k}") as span:
                span.set_inputs({"i": i, "k": k})
                span.set_outputs({"score": (i * 31 + k) % 97})
        return i * 2

    t0 = time.perf_counter()
    ids = []
    for i in range(N_TRACES):
        predict(i)
        ids.append(mlflow.get_last_active_trace_id())
        # Traces logged within one ms would tie on time; the page order must not depend on ids.
        time.sleep(0.002)
    mlflow.flush_trace_async_logging()
    t1 = time.perf_counter()

    pages, search_ms = [], []
    for q in range(N_SEARCHES):
        s0 = time.perf_counter()
        found = client.search_traces(locations=[exp_id], filter_string=f"tags.team = 't{q % TEAMS}'",
                                     order_by=["timestamp_ms DESC"], max_results=PAGE, include_spans=False)
        search_ms.append((time.perf_counter() - s0) * 1000)
        pages.append([json.loads(t.info.request_preview)["i"] for t in found])
    t2 = time.perf_counter()

    read_ms, span_counts = [], []
    step = max(1, N_TRACES // max(N_READS, 1))
    for r in range(N_READS):
        tid = ids[(r * step) % N_TRACES]
        s0 = time.perf_counter()
        trace = client.get_trace(tid)
        read_ms.append((time.perf_counter() - s0) * 1000)
        span_counts.append(len(trace.data.spans))
    t3 = time.perf_counter()
    print("\n" + json.dumps({"log_s": t1 - t0, "search_s": t2 - t1, "read_s": t3 - t2,
                             "search_ms": search_ms, "read_ms": read_ms, "pages": pages,
                             "span_counts": span_counts}))


# ---------------------------------------------------------------------------------------------
# The parent: starts both servers (bench/tracking.py's helpers), drives each, checks, reports


def main():
    import shutil

    import tracking as T

    if not T.CAIRN_BIN:
        raise SystemExit("set CAIRN_BIN to the cairn binary, or run bench/run.sh mlflow_traces")
    data = os.path.join(os.environ.get("BENCH_DATA", os.path.join(HERE, "data")), "mlflow_traces")
    out = os.environ.get("BENCH_OUT", os.path.join(HERE, "out"))
    T.DATA = data
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    os.makedirs(out, exist_ok=True)
    load_before = open("/proc/loadavg").read().split()[:3]

    url, token, cairn_pid = T.start_cairn(os.path.join(data, "cairn"))
    subprocess.run([T.CAIRN_BIN, "workspace", "create", "bench"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "CAIRN_URL": url, "CAIRN_TOKEN": token})
    ml_url = T.start_mlflow(os.path.join(data, "mlflow"))
    ver = T.mlflow_version()
    log(f"cairn at {url}; mlflow {ver} at {ml_url}")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # The client's export queue holds 1,000 traces by default and drops what does not fit (it did
    # against MLflow's server); room for every trace, against both servers alike.
    base_env["MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE"] = str(max(1000, 4 * N_TRACES))
    targets = [("Cairn", {"MLFLOW_TRACKING_URI": f"{url}/workspaces/bench/mlflow", "MLFLOW_TRACKING_TOKEN": token}),
               ("MLflow", {"MLFLOW_TRACKING_URI": ml_url})]
    res = {}
    for name, extra in targets:
        log(f"{name}: {N_TRACES} traced calls × {SPANS} spans; {N_SEARCHES} searches; {N_READS} reads")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--drive"], env={**base_env, **extra},
                           stdout=subprocess.PIPE, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        res[name] = json.loads(p.stdout.decode().strip().splitlines()[-1])
        res[name]["client_cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        r = res[name]
        log(f"{name}: logging {r['log_s']:.1f} s, search {r['search_s']:.2f} s, read {r['read_s']:.2f} s")
    load_after = open("/proc/loadavg").read().split()[:3]

    want = [expected_page(q) for q in range(N_SEARCHES)]
    for name, r in res.items():
        bad = [q for q in range(N_SEARCHES) if r["pages"][q] != want[q]]
        if bad:
            q = bad[0]
            raise SystemExit(f"{name}: query {q} found {r['pages'][q][:5]}… ({len(r['pages'][q])}), "
                             f"expected {want[q][:5]}… ({len(want[q])})")
        if any(n != SPANS for n in r["span_counts"]):
            raise SystemExit(f"{name}: a trace read back with {r['span_counts']} spans, not {SPANS}")
    log("both servers found the expected traces, in order, and read every trace whole")

    c, m = res["Cairn"], res["MLflow"]

    def row(label, a, b):
        return f"| {label} | {a:.2f} | {b:.2f} | {b / a:.1f}x |"

    med = statistics.median
    lines = [
        f"| wall time | Cairn | MLflow {ver} | ratio MLflow/Cairn |",
        "|---|---|---|---|",
        row(f"logging: {N_TRACES:,} traced calls of {SPANS} spans, until flushed, s", c["log_s"], m["log_s"]),
        row(f"search: {N_SEARCHES} search_traces (a tag, newest first, page of {PAGE}, no spans), s",
            c["search_s"], m["search_s"]),
        row("search: median ms per call", med(c["search_ms"]), med(m["search_ms"])),
        row(f"read: {N_READS} get_trace (info and spans), s", c["read_s"], m["read_s"]),
        row("read: median ms per call", med(c["read_ms"]), med(m["read_ms"])),
        row("end to end, s", c["log_s"] + c["search_s"] + c["read_s"], m["log_s"] + m["search_s"] + m["read_s"]),
        f"| CPU of the client process (user + system), s | {c['client_cpu_s']:.1f} | {m['client_cpu_s']:.1f} | |",
    ]
    notes = [
        "",
        f"Stock `mlflow` {ver} client, default (asynchronous) trace export with a queue that holds every "
        f"trace (`MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE`), one process per server. "
        f"Against both servers the client sends each span over OTLP as it ends and the info with "
        f"StartTraceV3. Every search page was the same from both "
        f"servers and equal to the expected traces; every read trace had its {SPANS} spans. "
        f"MLflow: `mlflow server --backend-store-uri sqlite:///… --workers {T.MLFLOW_WORKERS}`; Cairn: "
        f"`cairn server`, embedded SQLite; both on 127.0.0.1 ({os.cpu_count()} cores). "
        f"Load average before {' '.join(load_before)}, after {' '.join(load_after)}.",
    ]
    table = "\n".join(lines + notes) + "\n"
    print(table)
    with open(os.path.join(out, "mlflow_traces.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    if sys.argv[1:] == ["--drive"]:
        drive()
    else:
        main()
