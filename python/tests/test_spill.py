"""An unreachable server: records are retried, then land in ``logs/``, and stderr says so.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from typing import Dict

from cairn import Run

from tests.stub_server import closed_port_uri, metrics_of, read_jsonl

PYTHON_DIR = str(pathlib.Path(__file__).resolve().parent.parent)


def unreachable_env(**overrides: str) -> Dict[str, str]:
    env = {
        "CAIRN_TRACKING_URI": closed_port_uri(),
        "CAIRN_WORKSPACE": "ws1",
        "CAIRN_RUN_ID": "run-unreachable",
        "CAIRN_RUN_TOKEN": "t",
        "CAIRN_EXPERIMENT": "e",
        "CAIRN_LOG_FLUSH_SECONDS": "0.05",
        "CAIRN_LOG_RETRY_INITIAL_SECONDS": "0.02",
        "CAIRN_LOG_RETRY_SECONDS": "0.3",
        "CAIRN_LOG_EXIT_TIMEOUT_SECONDS": "5",
        "CAIRN_HTTP_TIMEOUT_SECONDS": "2",
    }
    env.update(overrides)
    return env


class UnreachableServerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.logs = os.path.join(self.tmp.name, "logs")
        self.spill = os.path.join(self.logs, "cairn_unsent_run-unreachable.jsonl")

    def test_every_record_ends_in_the_spill_file_and_stderr_says_where(self) -> None:
        run = Run._from_environ(unreachable_env(), register_atexit=False, spill_dir=self.logs)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            for i in range(2500):
                run.log("loss", i)
            run.log("nan", float("nan"))
            run.log_params({f"p{i}": i for i in range(120)})
            run.tag("stage", "spill")
            start = time.monotonic()
            self.assertTrue(run.flush(timeout=30))
            elapsed = time.monotonic() - start
            run._close(5)
        lines = read_jsonl(self.spill)  # strict JSON: fails on NaN literals
        metrics = metrics_of(lines)
        self.assertEqual(sorted(m["step"] for m in metrics if m["key"] == "loss"), list(range(2500)))
        self.assertEqual([m["value"] for m in metrics if m["key"] == "nan"], ["NaN"])
        self.assertEqual(sum(len(line["batch"]["params"]) for line in lines), 120)
        self.assertEqual(sum(line["records"] for line in lines), 2500 + 1 + 120 + 1)
        for line in lines:
            self.assertEqual(line["run_id"], "run-unreachable")
            self.assertLessEqual(len(line["batch"]["metrics"]), 1000)
            self.assertIn("ConnectionRefusedError", line["reason"])
        # Only the first batch waits out the retry budget; the next ones get one attempt each.
        self.assertTrue(lines[0]["reason"].startswith("gave up after retrying"), lines[0]["reason"])
        for line in lines[1:]:
            self.assertTrue(line["reason"].startswith("the server is still unreachable"), line["reason"])
        self.assertEqual(run._backend.batcher.stats(), {"sent": 0, "spilled": 2622, "pending": 0})
        printed = err.getvalue()
        self.assertIn(self.spill, printed)
        self.assertIn("2622 records of this run could not be sent", printed)
        self.assertLess(elapsed, 5.0)

    def test_a_script_that_exits_with_the_server_down_leaves_its_records_in_logs(self) -> None:
        script = """
            from cairn import Run
            run = Run.get_context()
            for i in range(1200):
                run.log("loss", i)
            run.log_param("lr", 0.1)
            print("trained")
        """
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("CAIRN_")]:
            del env[key]
        env.update(unreachable_env(CAIRN_LOG_FLUSH_SECONDS="600"))
        env["PYTHONPATH"] = PYTHON_DIR
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            env=env,
            cwd=self.tmp.name,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "trained\n")
        lines = read_jsonl(self.spill)
        self.assertEqual(sorted(m["step"] for m in metrics_of(lines)), list(range(1200)))
        self.assertEqual([p for line in lines for p in line["batch"]["params"]], [{"key": "lr", "value": "0.1"}])
        self.assertIn("1201 records of this run could not be sent", result.stderr)
        self.assertIn(self.spill, result.stderr)


if __name__ == "__main__":
    unittest.main()
