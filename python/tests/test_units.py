"""Pure pieces of the runtime: batching limits, value encoding, back-off, settings, syntax level.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
import pathlib
import unittest
from typing import List

from cairn._batcher import MAX_METRICS, MAX_PARAMS, MAX_TAGS, make_batches
from cairn._client import ConnectionFailed, ServerError
from cairn._config import Settings
from cairn._records import Metric, Param, Record, Tag, decode_value, encode_value
from cairn._retry import RetryPolicy, call_with_retries

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cairn"


class MakeBatchesTest(unittest.TestCase):
    def test_batches_respect_the_server_limits_and_keep_every_record_in_order(self) -> None:
        records: List[Record] = [Metric("m", float(i), i, 0) for i in range(2500)]
        records += [Param(f"p{i}", str(i)) for i in range(150)]
        records += [Tag(f"t{i}", "") for i in range(250)]
        batches = make_batches(records)
        for batch in batches:
            self.assertLessEqual(len(batch.body["metrics"]), MAX_METRICS)
            self.assertLessEqual(len(batch.body["params"]), MAX_PARAMS)
            self.assertLessEqual(len(batch.body["tags"]), MAX_TAGS)
        self.assertEqual(sum(b.records for b in batches), len(records))
        steps = [m["step"] for b in batches for m in b.body["metrics"]]
        self.assertEqual(steps, list(range(2500)))
        self.assertEqual(sum(len(b.body["params"]) for b in batches), 150)
        self.assertEqual(sum(len(b.body["tags"]) for b in batches), 250)

    def test_a_param_set_twice_in_one_batch_is_sent_once_with_its_last_value(self) -> None:
        batches = make_batches([Param("lr", "0.1"), Param("lr", "0.2"), Tag("t", "a")])
        self.assertEqual(len(batches), 1)
        self.assertEqual(batches[0].body["params"], [{"key": "lr", "value": "0.2"}])
        self.assertEqual(batches[0].records, 3)

    def test_every_body_has_all_three_lists(self) -> None:
        (batch,) = make_batches([Tag("t", "v")])
        self.assertEqual(batch.body, {"metrics": [], "params": [], "tags": [{"key": "t", "value": "v"}]})


class EncodingTest(unittest.TestCase):
    def test_non_finite_values_become_strings_and_come_back(self) -> None:
        for value, text in ((math.inf, "Infinity"), (-math.inf, "-Infinity")):
            self.assertEqual(encode_value(value), text)
            self.assertEqual(decode_value(text), value)
        self.assertEqual(encode_value(math.nan), "NaN")
        self.assertTrue(math.isnan(decode_value("NaN")))
        self.assertEqual(encode_value(0.5), 0.5)
        (batch,) = make_batches([Metric("m", math.nan, 0, 1)])
        json.dumps(batch.body, allow_nan=False)  # valid JSON: no NaN literal


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: List[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RetryTest(unittest.TestCase):
    def failing(self, error: Exception, clock: FakeClock, attempts: List[float]):  # type: ignore[no-untyped-def]
        def call() -> None:
            attempts.append(clock.now)
            raise error

        return call

    def test_backoff_doubles_from_the_initial_delay_within_the_budget(self) -> None:
        clock, attempts = FakeClock(), []  # type: FakeClock, List[float]
        with self.assertRaises(ConnectionFailed):
            call_with_retries(
                self.failing(ConnectionFailed("down"), clock, attempts),
                RetryPolicy(0.5, 30.0),
                sleep=clock.sleep,
                clock=clock.time,
            )
        self.assertEqual(clock.sleeps, [0.5, 1.0, 2.0, 4.0, 8.0, 14.5])
        self.assertEqual(attempts[-1], 30.0)

    def test_client_errors_are_not_retried(self) -> None:
        clock, attempts = FakeClock(), []  # type: FakeClock, List[float]
        with self.assertRaises(ServerError):
            call_with_retries(
                self.failing(ServerError(400, "bad", "no"), clock, attempts),
                RetryPolicy(0.5, 30.0),
                sleep=clock.sleep,
                clock=clock.time,
            )
        self.assertEqual(len(attempts), 1)

    def test_server_errors_and_rate_limits_are_retried_until_success(self) -> None:
        clock = FakeClock()
        errors = [ServerError(503, "unavailable", ""), ServerError(429, "slow_down", "")]

        def call() -> str:
            if errors:
                raise errors.pop(0)
            return "ok"

        self.assertEqual(call_with_retries(call, RetryPolicy(0.5, 30.0), sleep=clock.sleep, clock=clock.time), "ok")
        self.assertEqual(clock.sleeps, [0.5, 1.0])

    def test_a_deadline_cuts_the_budget_short(self) -> None:
        clock, attempts = FakeClock(), []  # type: FakeClock, List[float]
        with self.assertRaises(ConnectionFailed):
            call_with_retries(
                self.failing(ConnectionFailed("down"), clock, attempts),
                RetryPolicy(0.5, 30.0),
                deadline=lambda: 2.0,
                sleep=clock.sleep,
                clock=clock.time,
            )
        self.assertEqual(attempts, [0.0, 0.5, 1.5, 2.0])


class SettingsTest(unittest.TestCase):
    def test_defaults(self) -> None:
        settings = Settings.from_env({})
        self.assertEqual(settings.flush_seconds, 1.0)
        self.assertEqual(settings.retry_initial_seconds, 0.5)
        self.assertEqual(settings.retry_total_seconds, 30.0)

    def test_variables_override_and_bad_values_fall_back_with_a_warning(self) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            settings = Settings.from_env(
                {"CAIRN_LOG_FLUSH_SECONDS": "0.25", "CAIRN_LOG_RETRY_SECONDS": "soon"}
            )
        self.assertEqual(settings.flush_seconds, 0.25)
        self.assertEqual(settings.retry_total_seconds, 30.0)
        self.assertIn("CAIRN_LOG_RETRY_SECONDS", err.getvalue())


class CompatibilityTest(unittest.TestCase):
    def test_the_package_parses_as_python_3_8(self) -> None:
        for path in sorted(PACKAGE.glob("*.py")):
            with self.subTest(module=path.name):
                ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 8))

    def test_the_package_imports_only_the_standard_library(self) -> None:
        import sys

        stdlib = set(getattr(sys, "stdlib_module_names", ())) or None
        if stdlib is None:
            self.skipTest("sys.stdlib_module_names needs Python 3.10")
        # Deferred imports of what a deployment's own environment provides, made only when it does:
        # MLflow-mode replicas load mlflow (and numpy and pandas, which mlflow requires, to convert
        # inference-protocol tensors); a score.py decorated with inference_schema brought it.
        optional = {"_mlflow_scoring.py": {"mlflow", "numpy", "pandas"}, "_scoring.py": {"inference_schema"}}
        for path in sorted(PACKAGE.glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names: List[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    allowed = top in stdlib or top == "__future__" or top in optional.get(path.name, ())
                    self.assertTrue(allowed, f"{path.name} imports {name}")


if __name__ == "__main__":
    unittest.main()
