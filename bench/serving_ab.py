"""Two cairn binaries' scoring gateways side by side (A/B), to see what a change to the gateway
costs or saves: the same deployment (bench/serving.py's score.py and wine model, a user_managed
environment on this venv, WORKERS worker processes) behind each binary's own server, then wrk
against each in turn, ROUNDS times, alternating which goes first; medians of requests/s, p50 and
p99 latency, and the gateway process's CPU time per request (/proc around each run).

Run (the venv of bench/serving.sh, which has wrk's prerequisites and scikit-learn):
    A=/path/to/old/cairn B=target/release/cairn .venv-serving/bin/python bench/serving_ab.py
Settings: A, B (required), WORKERS (2), CONCURRENCY (8), ROWS (1), DURATION (8 s), ROUNDS (4).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BINARIES = {"A": os.environ["A"], "B": os.environ["B"]}
os.environ.setdefault("CAIRN_BIN", BINARIES["B"])  # serving.py reads it at import

import joblib  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import ElasticNet  # noqa: E402

import cairnbench  # noqa: E402
import serving  # noqa: E402

WORKERS = int(os.environ.get("WORKERS", "2"))
CONC = int(os.environ.get("CONCURRENCY", "8"))
ROWS = int(os.environ.get("ROWS", "1"))
ROUNDS = int(os.environ.get("ROUNDS", "4"))
serving.DURATION = int(os.environ.get("DURATION", "8"))


def deploy(binary: str, work: Path, env0: dict):
    """A server of `binary` with the bench's deployment taking all traffic; (server, url, auth)."""
    server = cairnbench.start_cairn(binary, work / "data", env=dict(env0, CAIRN_LOG="warn,cairn_server::startup=info"))
    env = dict(env0, CAIRN_URL=server.url, CAIRN_TOKEN=server.token, CAIRN_WORKSPACE="bench", HOME=str(work))

    def cairn(*args: str) -> str:
        out = subprocess.run([binary, *args], env=env, cwd=work, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"cairn {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    cairn("workspace", "create", "bench")
    (work / "env.yml").write_text(f"name: bench-serving\nuser_managed: true\ninterpreter: {sys.executable}\n")
    cairn("env", "create", "-f", "env.yml")
    cairn("model", "register", "--name", "wine_model", "--path", str(work.parent / "model" / "wine_model.pkl"))
    (work / "endpoint.yml").write_text(f"name: bench-{work.name.lower()}\nauth_mode: key\n")
    cairn("endpoint", "create", "-f", "endpoint.yml")
    (work / "main.yml").write_text(
        f"name: main\nendpoint_name: bench-{work.name.lower()}\nmodel: wine_model:1\n"
        f"code_configuration:\n  code: {work.parent / 'code'}\n  scoring_script: score.py\n"
        f"environment: bench-serving\ninstance_count: 1\n"
        f"environment_variables:\n  WORKER_COUNT: \"{WORKERS}\"\n"
        f"request_settings:\n  request_timeout_ms: 60000\n  max_concurrent_requests_per_instance: {max(CONC, 1)}\n")
    cairn("deployment", "create", "-f", "main.yml", "--all-traffic", "--wait")
    keys = json.loads(cairn("endpoint", "get-keys", f"bench-{work.name.lower()}", "-o", "json"))
    shown = json.loads(cairn("endpoint", "show", f"bench-{work.name.lower()}", "-o", "json"))
    return server, shown["scoring_uri"], "Bearer " + keys["primary_key"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cairn-serving-ab-"))
    X, y = serving.load_wine()
    model = ElasticNet(random_state=0).fit(np.array(X), np.array(y))
    (work / "model").mkdir()
    joblib.dump(model, work / "model" / "wine_model.pkl")
    (work / "code").mkdir()
    (work / "code" / "score.py").write_text(serving.SCORE_PY)
    body = work / "body.json"
    body.write_text(json.dumps({"data": X[:ROWS]}))
    lua = work / "post.lua"
    lua.write_text(serving.WRK_LUA)
    expected = model.predict(np.array(X[:1])).tolist()
    env0 = cairnbench.server_env({"CAIRN_UV": os.environ.get("CAIRN_UV", str(serving.ROOT / ".venv-tools" / "bin" / "uv"))})
    load_before = open("/proc/loadavg").read().split()[:3]
    servers, runs = {}, {"A": [], "B": []}
    try:
        for name, binary in BINARIES.items():
            (work / name).mkdir()
            servers[name] = deploy(binary, work / name, env0)
            _, url, auth = servers[name]
            status, answer = serving.post(url, json.dumps({"data": X[:1]}).encode(), {"Authorization": auth})
            assert status == 200 and json.loads(answer) == expected, (name, status, answer[:300])
        for r in range(ROUNDS):
            for name in (("A", "B") if r % 2 == 0 else ("B", "A")):
                server, url, auth = servers[name]
                result = serving.wrk(url, CONC, body, lua, auth, server.pid)
                runs[name].append(result)
                serving.log(f"round {r} {name}: {result['rps']:.0f} req/s, p50 {result['p50']:.0f} µs, "
                            f"gateway CPU {result['cpu_us']['front']:.0f} µs/request, bad {result['bad']}")
    finally:
        for server, _, _ in servers.values():
            server.stop()
    load_after = open("/proc/loadavg").read().split()[:3]
    med = lambda name, f: statistics.median(f(r) for r in runs[name])  # noqa: E731
    print(f"A = {BINARIES['A']}\nB = {BINARIES['B']}\n"
          f"wrk -c {CONC}, {ROWS} row(s), {serving.DURATION} s per run, {ROUNDS} rounds alternating; "
          f"WORKER_COUNT {WORKERS}; load average before {' '.join(load_before)}, after {' '.join(load_after)}.\n")
    print("| binary | req/s (median) | p50 µs | p99 µs | gateway CPU µs/request | workers CPU µs/request | errors |")
    print("|---|---|---|---|---|---|---|")
    for name in ("A", "B"):
        print(f"| {name} | {med(name, lambda r: r['rps']):.0f} | {med(name, lambda r: r['p50']):.0f} "
              f"| {med(name, lambda r: r['p99']):.0f} | {med(name, lambda r: r['cpu_us']['front']):.0f} "
              f"| {med(name, lambda r: r['cpu_us']['workers']):.0f} | {sum(r['bad'] for r in runs[name])} |")
    print("\nPer run, req/s: " + "; ".join(f"{n}: " + ", ".join(f"{r['rps']:.0f}" for r in runs[n]) for n in ("A", "B")))


if __name__ == "__main__":
    main()
