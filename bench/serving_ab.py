"""A/B of Cairn's scoring path: two or more variants of Cairn side by side, the same score.py,
model and venv as ``bench/serving.py``, wrk taking turns between them, to tell a change to the
gateway or to the replica from the machine's mood (which moves whole runs of ``serving.sh`` by
10–20% from one hour to the next).

A variant is ``BIN`` (a cairn binary) or ``BIN:PYDIR``: the same binary with the ``cairn``
package's files from ``PYDIR/cairn/`` copied over the runtime the server unpacked at start (so a
change to ``replica.py`` or ``_scoring.py`` needs no second build)::

    git archive HEAD python/cairn | tar -x -C /tmp/old      # the committed Python, for the "A" side
    .venv-serving/bin/python bench/serving_ab.py target/release/cairn:/tmp/old/python \\
        target/release/cairn:python

Every variant gets its own server and one deployment (``WORKER_COUNT`` = WORKERS); then TURNS
rounds, each running wrk for DURATION seconds against every variant at each concurrency and body
(the order rotating by round). Reported per variant and cell: median requests/s, the median of
each round's ratio to the first variant, median p50 and p99 latency, and CPU µs per request (gateway, workers, wrk) with how
busy the cores were. Settings (environment): WORKERS (2), CONCURRENCY ("8"), ROWS ("1,100"),
DURATION (8), TURNS (4; ROUNDS is its older name). ``A=BIN B=BIN`` without arguments is the same as
the two variants as arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CAIRN_BIN", "unused")  # serving.py reads it at import; each variant has its own
import serving  # noqa: E402  (same folder: its helpers, score.py and wrk script)
import cairnbench  # noqa: E402

import joblib  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import ElasticNet  # noqa: E402

WORKERS = cairnbench.env_int("WORKERS", 2)
CONCURRENCY = [int(c) for c in os.environ.get("CONCURRENCY", "8").split(",")]
ROWS = [int(r) for r in os.environ.get("ROWS", "1,100").split(",")]
TURNS = cairnbench.env_int("TURNS", cairnbench.env_int("ROUNDS", 4))
serving.DURATION = cairnbench.env_int("DURATION", 8)


def start_variant(spec: str, i: int, work: Path, model_dir: Path):
    binary, _, pydir = spec.partition(":")
    env0 = cairnbench.server_env({"CAIRN_UV": os.environ.get("CAIRN_UV", str(serving.ROOT / ".venv-tools" / "bin" / "uv"))})
    data = work / f"cairn{i}"
    server = cairnbench.start_cairn(os.path.abspath(binary), data, env=dict(env0, CAIRN_LOG="warn,cairn_server::startup=info"))
    if pydir:
        # The server unpacks its runtime just after it logs its address: wait for it.
        deadline = time.monotonic() + 30
        while not (found := list(data.glob("runtime/*/cairn/replica.py"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not found:
            raise SystemExit(f"{spec}: the server unpacked no runtime under {data}/runtime")
        runtime = found[0].parent
        for f in Path(pydir, "cairn").glob("*.py"):
            shutil.copyfile(f, runtime / f.name)
    env = dict(env0, CAIRN_URL=server.url, CAIRN_TOKEN=server.token, CAIRN_WORKSPACE="bench", HOME=str(work))

    def cli(*args: str) -> str:
        serving.CAIRN = os.path.abspath(binary)
        return serving.cairn(*args, env=env, cwd=work)

    cli("workspace", "create", "bench")
    cli("env", "create", "-f", "env.yml")
    cli("model", "register", "--name", "wine_model", "--path", str(model_dir / "wine_model.pkl"), "--framework", "sklearn")
    cli("endpoint", "create", "-f", "endpoint.yml")
    cli("deployment", "create", "-f", "main.yml", "--all-traffic", "--wait")
    keys = json.loads(cli("endpoint", "get-keys", "bench", "-o", "json"))
    shown = json.loads(cli("endpoint", "show", "bench", "-o", "json"))
    return server, shown["scoring_uri"], "Bearer " + keys["primary_key"]


def main() -> None:
    # A=… B=… (and ROUNDS) is this script's first form, which docs/benchmarks.md's older runs use.
    specs = sys.argv[1:] or [os.environ[k] for k in ("A", "B") if os.environ.get(k)]
    if len(specs) < 2:
        raise SystemExit(__doc__)
    work = Path(tempfile.mkdtemp(prefix="cairn-serving-ab-"))
    X, y = serving.load_wine()
    model = ElasticNet(random_state=0).fit(np.array(X), np.array(y))
    (work / "model").mkdir()
    joblib.dump(model, work / "model" / "wine_model.pkl")
    (work / "code").mkdir()
    (work / "code" / "score.py").write_text(serving.SCORE_PY)
    (work / "env.yml").write_text(f"name: bench-serving\nuser_managed: true\ninterpreter: {sys.executable}\n")
    (work / "endpoint.yml").write_text("name: bench\nauth_mode: key\n")
    (work / "main.yml").write_text(
        "name: main\nendpoint_name: bench\nmodel: wine_model:1\n"
        "code_configuration:\n  code: ./code\n  scoring_script: score.py\n"
        f"environment: bench-serving\ninstance_count: 1\n"
        f"environment_variables:\n  WORKER_COUNT: \"{WORKERS}\"\n"
        f"request_settings:\n  request_timeout_ms: 60000\n  max_concurrent_requests_per_instance: {max(CONCURRENCY)}\n")
    bodies = {}
    for rows in ROWS:
        bodies[rows] = work / f"body{rows}.json"
        bodies[rows].write_text(json.dumps({"data": X[:rows]}))
    lua = work / "post.lua"
    lua.write_text(serving.WRK_LUA)
    expected = model.predict(np.array(X[:1])).tolist()
    servers = []
    try:
        variants = []
        for i, spec in enumerate(specs):
            server, url, auth = start_variant(spec, i, work, work / "model")
            servers.append(server)
            status, answer = serving.post(url, bodies[ROWS[0]].read_bytes(), {"Authorization": auth})
            assert status == 200, (spec, status, answer[:300])
            if ROWS[0] == 1:
                assert json.loads(answer) == expected, (spec, answer[:300])
            variants.append((spec, server, url, auth))
            serving.log(f"variant {i}: {spec} at {url}")
        cells = {}
        for turn in range(TURNS):
            for conc in CONCURRENCY:
                for rows in ROWS:
                    order = list(range(len(variants)))
                    order = order[turn % len(order):] + order[:turn % len(order)]
                    for i in order:
                        spec, server, url, auth = variants[i]
                        r = serving.wrk(url, conc, bodies[rows], lua, auth, server.pid)
                        if r["bad"]:
                            raise SystemExit(f"{spec}: {r['bad']} non-2xx answers or socket errors")
                        cells.setdefault((conc, rows), {}).setdefault(i, []).append(r)
                        serving.log(f"turn {turn} c={conc} rows={rows} v{i}: {r['rps']:.0f} req/s, "
                                    f"cpu gw {r['cpu_us']['front']:.0f} w {r['cpu_us']['workers']:.0f} "
                                    f"busy {r['cpu_us']['busy']:.0%}")
        print(f"\nload average after: {' '.join(open('/proc/loadavg').read().split()[:3])}; "
              f"{TURNS} turns of {serving.DURATION} s, WORKERS={WORKERS}\n")
        print("| concurrency | body | variant | median req/s | median ratio to v0 | p50 µs | p99 µs | gateway µs/req | workers µs/req | wrk µs/req | cores busy |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for (conc, rows), by in cells.items():
            for i, runs in by.items():
                ratio = statistics.median(r["rps"] / b["rps"] for r, b in zip(runs, by[0]))
                med = lambda k: statistics.median(r["cpu_us"][k] for r in runs)  # noqa: E731
                print(f"| {conc} | {rows} row{'s' if rows > 1 else ''} | v{i} `{specs[i]}` | "
                      f"{statistics.median(r['rps'] for r in runs):.0f} | {ratio:.3f} | "
                      f"{statistics.median(r['p50'] for r in runs):.0f} | {statistics.median(r['p99'] for r in runs):.0f} | "
                      f"{med('front'):.0f} | "
                      f"{med('workers'):.0f} | {med('wrk'):.0f} | {med('busy'):.0%} |")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
