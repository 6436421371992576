"""One MLflow `runs/search` page of up to 1,000 runs, served by several `cairn` binaries side by
side: a before/after check of the server's search path (the peer comparison, through the stock
client, is bench/mlflow_client.py).

Each binary gets its own server and data: 1 experiment, 1,000 runs x 10 params x 20 metrics
(latest values) x 1 tag, logged through MLflow's REST API; then REPS (30) searches with a filter
(`metrics.m1 > 0.1`: 899 runs) and an order, the servers taking turns, over one keep-alive
connection each: the median wall time and the server's CPU time per search (from /proc).

    .venv/bin/python bench/mlflow_search_page.py BIN [BIN ...]
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairnbench  # noqa: E402

REPS = int(os.environ.get("REPS", "30"))
SEARCH = {"max_results": 1000, "filter": "metrics.m1 > 0.1", "order_by": ["metrics.m2 DESC"]}


class Side:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.server = cairnbench.start_cairn(binary, tempfile.mkdtemp(prefix="search-page-"),
                                             env=cairnbench.server_env())
        host, port = self.server.url.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port))
        subprocess.run([binary, "workspace", "create", "default", "--url", self.server.url,
                        "--token", self.server.token], check=True, capture_output=True)
        self.experiment = self.call("experiments/create", {"name": "bench"})["experiment_id"]
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def call(self, path: str, body: dict) -> dict:
        self.conn.request("POST", f"/workspaces/default/mlflow/api/2.0/mlflow/{path}", json.dumps(body),
                          {"Authorization": f"Bearer {self.server.token}", "Content-Type": "application/json"})
        answer = self.conn.getresponse()
        data = answer.read()
        assert answer.status == 200, (path, answer.status, data[:300])
        return json.loads(data)

    def populate(self) -> None:
        for i in range(1000):
            run = self.call("runs/create", {"experiment_id": self.experiment, "start_time": 1000 + i})
            self.call("runs/log-batch", {
                "run_id": run["run"]["info"]["run_id"],
                "params": [{"key": f"p{k}", "value": str(i * k)} for k in range(10)],
                "metrics": [{"key": f"m{k}", "value": i * 0.001 * k, "timestamp": 5, "step": 0} for k in range(20)],
                "tags": [{"key": "t", "value": "x"}],
            })

    def search(self) -> int:
        cpu0, t0 = cairnbench.cpu_seconds(self.server.pid), time.perf_counter()
        page = self.call("runs/search", dict(SEARCH, experiment_ids=[self.experiment]))
        self.wall.append(time.perf_counter() - t0)
        self.cpu.append(cairnbench.cpu_seconds(self.server.pid) - cpu0)
        return len(page["runs"])


def main() -> None:
    sides = [Side(b) for b in sys.argv[1:]]
    try:
        for side in sides:
            side.populate()
        for rep in range(REPS):
            for side in (sides if rep % 2 == 0 else reversed(sides)):
                found = side.search()
        for side in sides:
            print(f"{side.binary}: median wall {statistics.median(side.wall) * 1000:.1f} ms, server CPU "
                  f"per search {statistics.mean(side.cpu) * 1000:.1f} ms ({found} runs per page)")
    finally:
        for side in sides:
            side.server.stop()


if __name__ == "__main__":
    main()
