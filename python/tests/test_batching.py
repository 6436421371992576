"""Batching against a real (stub) HTTP server: sizes, encoding, auth, latency, exit, rejections.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python
"""

from __future__ import annotations

import contextlib
import io
import json
import math
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

from tests.stub_server import TOKEN, StubServer, read_jsonl

PYTHON_DIR = str(pathlib.Path(__file__).resolve().parent.parent)

#: Fast settings so that tests do not wait for production timeouts.
FAST = {
    "CAIRN_LOG_FLUSH_SECONDS": "0.05",
    "CAIRN_LOG_RETRY_INITIAL_SECONDS": "0.02",
    "CAIRN_LOG_RETRY_SECONDS": "0.5",
    "CAIRN_LOG_EXIT_TIMEOUT_SECONDS": "5",
}


def close_quietly(run: Run) -> None:
    """Stop a run's sender; its end-of-run summary (if anything was spilled) is not test output."""
    with contextlib.redirect_stderr(io.StringIO()):
        run._close(5)


class StubTestCase(unittest.TestCase):
    delay = 0.0

    def setUp(self) -> None:
        self.stub = StubServer(delay=self.delay).start()
        self.addCleanup(self.stub.stop)
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.logs = os.path.join(self.tmp.name, "logs")

    def make_run(self, **env: str) -> Run:
        run = Run._from_environ(self.stub.env(**dict(FAST, **env)), register_atexit=False, spill_dir=self.logs)
        self.addCleanup(close_quietly, run)
        return run

    def spill_file(self) -> str:
        return os.path.join(self.logs, "cairn_unsent_run-0001.jsonl")


class BatchingTest(StubTestCase):
    def test_batches_stay_within_limits_and_nothing_is_lost(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="60")
        for i in range(2500):
            run.log("loss", i / 100)
        run.log_params({f"p{i}": i for i in range(150)})
        run.set_tags({f"t{i}": "x" for i in range(120)})
        self.assertTrue(run.flush(timeout=10))
        for batch in self.stub.batches:
            self.assertLessEqual(len(batch["metrics"]), 1000)
            self.assertLessEqual(len(batch["params"]), 100)
            self.assertLessEqual(len(batch["tags"]), 100)
        self.assertEqual([m["step"] for m in self.stub.received_metrics()], list(range(2500)))
        self.assertEqual(len(self.stub.params), 150)
        self.assertEqual(len(self.stub.tags), 120)
        self.assertFalse(os.path.exists(self.spill_file()))

    def test_nan_and_infinities_are_sent_as_strings_in_valid_json(self) -> None:
        run = self.make_run()
        for value in (float("nan"), float("inf"), float("-inf"), 0.5):
            run.log("v", value)
        run.flush(timeout=10)
        raw = b"".join(r.body for r in self.stub.log_batch_requests())
        self.assertIn(b'"value":"NaN"', raw)  # the stub also refuses bodies with bare NaN literals
        values = [m["value"] for m in self.stub.received_metrics()]
        self.assertEqual(values, ["NaN", "Infinity", "-Infinity", 0.5])

    def test_every_request_carries_the_run_token(self) -> None:
        run = self.make_run()
        run.log("rmse", 0.61)
        run.flush(timeout=10)
        requests = self.stub.log_batch_requests()
        self.assertTrue(requests)
        for request in requests:
            self.assertEqual(request.headers["authorization"], f"Bearer {TOKEN}")
            self.assertEqual(request.headers["content-type"], "application/json")

    def test_the_background_thread_sends_on_its_timer_without_flush(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="0.1")
        run.log("rmse", 0.61)
        self.assertTrue(self.stub.wait_for(lambda: len(self.stub.received_metrics()) == 1))

    def test_a_thousand_buffered_records_are_sent_before_the_timer(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        for i in range(999):
            run.log("m", i)
        time.sleep(0.2)
        self.assertEqual(self.stub.log_batch_requests(), [], "999 records wait for the timer")
        run.log("m", 999)
        self.assertTrue(self.stub.wait_for(lambda: len(self.stub.received_metrics()) == 1000))

    def test_a_rejected_batch_is_not_retried_and_goes_to_the_spill_file(self) -> None:
        self.stub.log_batch_status = 400
        run = self.make_run()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            run.log("rmse", 0.61)
            run.log_param("lr", "0.1")
            self.assertTrue(run.flush(timeout=10))
        self.assertEqual(len(self.stub.log_batch_requests()), 1)
        (line,) = read_jsonl(self.spill_file())
        self.assertEqual(line["records"], 2)
        self.assertEqual(line["batch"]["metrics"][0]["key"], "rmse")
        self.assertEqual(line["batch"]["params"], [{"key": "lr", "value": "0.1"}])
        self.assertIn("HTTP 400", line["reason"])
        self.assertIn("records not sent (the server rejected the batch, not retried: HTTP 400", err.getvalue())
        self.assertIn(self.spill_file(), err.getvalue())

    def test_server_errors_are_retried_until_the_batch_arrives(self) -> None:
        self.stub.fail_next.extend([503, 502])
        run = self.make_run(CAIRN_LOG_RETRY_SECONDS="10")
        run.log("rmse", 0.61)
        self.assertTrue(run.flush(timeout=10))
        self.assertEqual(len(self.stub.log_batch_requests()), 3)
        self.assertEqual(len(self.stub.received_metrics()), 1)
        self.assertFalse(os.path.exists(self.spill_file()))

    def test_after_exhausting_retries_later_batches_get_one_attempt_until_one_succeeds(self) -> None:
        self.stub.log_batch_status = 503
        run = self.make_run(CAIRN_LOG_RETRY_SECONDS="0.2")
        with contextlib.redirect_stderr(io.StringIO()):
            run.log("a", 1)
            run.flush(timeout=10)
            tries_first = len(self.stub.log_batch_requests())
            run.log("a", 2)
            run.flush(timeout=10)
        self.assertGreater(tries_first, 1)
        self.assertEqual(len(self.stub.log_batch_requests()), tries_first + 1)
        self.stub.log_batch_status = 200
        run.log("a", 3)
        run.flush(timeout=10)
        self.assertEqual([m["value"] for m in self.stub.received_metrics()], [3.0])
        self.assertEqual(sum(line["records"] for line in read_jsonl(self.spill_file())), 2)


class NonBlockingTest(StubTestCase):
    delay = 0.5  # every request takes half a second

    def test_log_returns_immediately_while_a_request_is_under_way(self) -> None:
        run = self.make_run()
        run.log("warmup", 0)
        self.assertTrue(self.stub.request_started.wait(5), "the sender made a request")
        start = time.perf_counter()
        for i in range(100):
            run.log("loss", i)
        elapsed = time.perf_counter() - start
        self.assertLess(elapsed, 0.1, f"100 log() calls took {elapsed:.3f}s")
        self.assertTrue(run.flush(timeout=10))
        self.assertEqual(len(self.stub.received_metrics()), 101)


class AtExitTest(StubTestCase):
    def run_child(self, code: str, env: Dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
        child_env = dict(os.environ)
        for key in list(child_env):
            if key.startswith("CAIRN_"):
                del child_env[key]
        child_env.update(env)
        child_env["PYTHONPATH"] = PYTHON_DIR
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=child_env,
            cwd=self.tmp.name,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def test_records_still_buffered_at_exit_are_sent(self) -> None:
        script = """
            from cairn import Run
            run = Run.get_context()
            for i in range(1500):
                run.log("loss", i / 10)
            run.log("nan", float("nan"))
            run.log_param("max_depth", 5)
            run.set_tags({"stage": "exit"})
        """
        env = self.stub.env(CAIRN_LOG_FLUSH_SECONDS="600")
        result = self.run_child(script, env)
        self.assertEqual(result.returncode, 0, result.stderr)
        metrics = self.stub.received_metrics()
        self.assertEqual(len(metrics), 1501)
        self.assertEqual([m["step"] for m in metrics if m["key"] == "loss"], list(range(1500)))
        self.assertEqual(self.stub.params, {"max_depth": "5"})
        self.assertEqual(self.stub.tags, {"stage": "exit"})
        self.assertEqual(result.stderr, "")
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "logs")))

    def test_complete_inside_a_managed_job_only_flushes(self) -> None:
        script = """
            from cairn import Run
            run = Run.get_context()
            run.log("rmse", 0.61)
            run.complete()
            print(len(run.get_metrics()))
        """
        result = self.run_child(script, self.stub.env(CAIRN_RUN_MANAGED="1", CAIRN_LOG_FLUSH_SECONDS="600"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "1")
        self.assertEqual([r for r in self.stub.requests if r.method == "PATCH"], [])
        self.assertEqual(self.stub.status, "Running")


class SpillEncodingTest(StubTestCase):
    def test_spilled_lines_are_strict_json_with_non_finite_values_as_strings(self) -> None:
        self.stub.log_batch_status = 422
        run = self.make_run()
        with contextlib.redirect_stderr(io.StringIO()):
            run.log("v", math.nan)
            run.log("v", -math.inf)
            run.flush(timeout=10)
        with open(self.spill_file(), encoding="utf-8") as f:
            text = f.read()
        (line,) = read_jsonl(self.spill_file())  # strict: fails on NaN literals
        self.assertEqual([m["value"] for m in line["batch"]["metrics"]], ["NaN", "-Infinity"])
        self.assertEqual(json.loads(text)["run_id"], "run-0001")


if __name__ == "__main__":
    unittest.main()
