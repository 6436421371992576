"""Offline runs: what a script sees when it runs outside a Cairn job.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python
"""

from __future__ import annotations

import contextlib
import json
import io
import math
import os
import tempfile
import unittest
from decimal import Decimal
from fractions import Fraction
from typing import Any, Tuple
from unittest import mock

import cairn
import cairn.run
from cairn import Run


def offline_run() -> Run:
    return Run._from_environ({})


def quietly(call: Any, *args: Any, **kwargs: Any) -> Tuple[Any, str]:
    """Call and return (result, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = call(*args, **kwargs)
    return result, out.getvalue()


class OfflineRunTest(unittest.TestCase):
    def setUp(self) -> None:
        self.run = offline_run()

    def test_properties_are_kept_and_never_change(self) -> None:
        _, printed = quietly(self.run.add_properties, {"dataset": "wine"})
        self.assertIn("add_properties dataset=wine", printed)
        quietly(self.run.add_properties, {"dataset": "wine", "folds": 5})
        with self.assertRaises(ValueError):
            quietly(self.run.add_properties, {"folds": 6, "other": "x"})
        self.assertEqual(self.run.get_properties(), {"dataset": "wine", "folds": "5"})

    def test_child_runs_are_offline_runs_of_their_own(self) -> None:
        child, printed = quietly(self.run.child_run, "fold-1")
        self.assertIn("child_run", printed)
        self.assertTrue(child.is_offline)
        self.assertNotEqual(child.id, self.run.id)
        quietly(child.log, "rmse", 0.5)
        self.assertEqual(child.get_metrics(), {"rmse": 0.5})
        self.assertEqual(self.run.get_metrics(), {})
        self.assertEqual(child.get_details()["parent_id"], self.run.id)

    def test_log_prints_what_it_would_log(self) -> None:
        _, printed = quietly(self.run.log, "rmse", 0.61)
        self.assertEqual(printed, "[cairn offline] log rmse=0.61\n")

    def test_every_call_prints_one_offline_line(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.run.log_list("losses", [0.5, 0.4])
            self.run.log_row("epoch", loss=0.3, acc=0.9)
            self.run.set_tags({"team": "wine"})
            self.run.tag("baseline")
            self.run.log_param("max_depth", 5)
            self.run.complete()
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 6, lines)
        self.assertTrue(all(line.startswith("[cairn offline] ") for line in lines), lines)
        self.assertIn("log_list losses=[0.5, 0.4]", lines[0])
        self.assertIn("log_row epoch loss=0.3 acc=0.9", lines[1])
        self.assertIn("team=wine", lines[2])
        self.assertIn("status Completed", lines[5])

    def test_get_metrics_returns_a_value_for_one_point_and_a_list_for_several(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.log("rmse", 0.61)
            for loss in (0.9, 0.5, 0.2):
                self.run.log("loss", loss)
        self.assertEqual(self.run.get_metrics(), {"rmse": 0.61, "loss": [0.9, 0.5, 0.2]})
        self.assertEqual(self.run.get_metrics("rmse"), {"rmse": 0.61})
        self.assertEqual(self.run.get_metrics("never-logged"), {})

    def test_steps_auto_increment_per_key_from_zero(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            for _ in range(3):
                self.run.log("a", 1)
            self.run.log("b", 1)
            self.run.log("a", 1, step=10)
            self.run.log("a", 1)
        steps = {k: [p["step"] for p in pts] for k, pts in self.run._backend.metric_series().items()}
        self.assertEqual(steps, {"a": [0, 1, 2, 10, 11], "b": [0]})

    def test_log_list_numbers_elements_from_zero(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.log_list("accuracy", [0.1, 0.2, 0.3])
        points = self.run._backend.metric_series()["accuracy"]
        self.assertEqual([(p["step"], p["value"]) for p in points], [(0, 0.1), (1, 0.2), (2, 0.3)])

    def test_log_row_and_log_table_make_one_metric_per_column_stepped_by_row(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.log_row("epoch", loss=0.3, acc=0.8)
            self.run.log_row("epoch", loss=0.2, acc=0.9)
            self.run.log_table("roc", {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0]})
        series = self.run._backend.metric_series()
        self.assertEqual([(p["step"], p["value"]) for p in series["epoch.loss"]], [(0, 0.3), (1, 0.2)])
        self.assertEqual([p["step"] for p in series["epoch.acc"]], [0, 1])
        self.assertEqual([p["value"] for p in series["roc.tpr"]], [0.0, 0.8, 1.0])
        self.assertEqual([p["step"] for p in series["roc.fpr"]], [0, 1, 2])
        # The cairn.tables tag names the tables, so the studio shows their columns as one table.
        self.assertEqual(json.loads(self.run._backend.details()["tags"]["cairn.tables"]), ["epoch", "roc"])

    def test_non_numeric_values_raise_type_error_in_the_script(self) -> None:
        for bad in ("0.5", b"1", None, [1, 2], {"a": 1}, object(), 1j):
            with self.subTest(value=bad), self.assertRaises(TypeError) as caught:
                self.run.log("rmse", bad)
            self.assertIn("'rmse'", str(caught.exception))
            self.assertIn("not numeric", str(caught.exception))
        with self.assertRaises(TypeError):
            self.run.log_list("l", [1, "two", 3])
        with self.assertRaises(TypeError):
            self.run.log_row("r", a=1, b="x")
        with self.assertRaises(TypeError):
            self.run.log("rmse", 1, step=1.5)
        self.assertEqual(self.run.get_metrics(), {}, "nothing is logged when a value is refused")

    def test_numeric_types_and_nan_are_accepted(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            for value in (1, 2.5, True, Decimal("0.25"), Fraction(1, 4), float("nan"), float("inf")):
                self.run.log("v", value)
        values = self.run.get_metrics()["v"]
        self.assertEqual(values[:5], [1.0, 2.5, 1.0, 0.25, 0.25])
        self.assertTrue(math.isnan(values[5]))
        self.assertEqual(values[6], math.inf)

    def test_numpy_scalars_are_accepted_when_numpy_is_installed(self) -> None:
        try:
            import numpy as np  # type: ignore[import-not-found]
        except ImportError:
            self.skipTest("numpy is not installed (the runtime does not need it)")
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.log("v", np.float32(0.5))
            self.run.log("v", np.int64(3))
            self.run.log("v", np.array(2.0))
        self.assertEqual(self.run.get_metrics()["v"], [0.5, 3.0, 2.0])

    def test_bad_keys_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            self.run.log("", 1)
        with self.assertRaises(ValueError):
            self.run.log("k" * 251, 1)
        with self.assertRaises(TypeError):
            self.run.log(3, 1)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            self.run.log("line\nbreak", 1)
        with self.assertRaises(ValueError):
            self.run.log_param("long", "x" * 6001)
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.log("k" * 250, 1)
            self.run.log("max depth", 1)
            self.run.log_param("ok", "x" * 6000)

    def test_params_and_tags_are_strings_in_the_details(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.log_params({"max_depth": 5, "lr": 0.1})
            self.run.set_tags({"team": "wine", "n": 3})
            self.run.tag("baseline")
        details = self.run.get_details()
        self.assertEqual(details["params"], {"max_depth": "5", "lr": "0.1"})
        self.assertEqual(details["tags"], {"team": "wine", "n": "3", "baseline": ""})
        self.assertEqual(details["status"], "Running")

    def test_upload_file_prints_and_sends_nothing(self) -> None:
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(b"12345")
        try:
            result, printed = quietly(self.run.upload_file, "outputs/model.pkl", f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(printed, f"[cairn offline] upload_file outputs/model.pkl <- {f.name} (5 bytes)\n")
        self.assertEqual(result["size"], 5)
        with self.assertRaises(ValueError):
            self.run.upload_file("../escape", io.BytesIO(b""))

    def test_fail_records_the_error_and_the_status(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            self.run.fail(ValueError("bad data"))
        self.assertIn("ValueError: bad data", err.getvalue())
        details = self.run.get_details()
        self.assertEqual(details["status"], "Failed")
        self.assertEqual(details["tags"]["cairn.error"], "ValueError: bad data")


class GetContextTest(unittest.TestCase):
    def setUp(self) -> None:
        cairn.run._context = None
        self.addCleanup(setattr, cairn.run, "_context", None)

    def test_outside_a_job_get_context_is_an_offline_run_built_once(self) -> None:
        with mock.patch.dict(os.environ, {}, clear=True):
            run = Run.get_context()
            self.assertTrue(run.is_offline)
            self.assertTrue(run.id.startswith("OfflineRun_"))
            self.assertIs(Run.get_context(), run)

    def test_allow_offline_false_raises_outside_a_job(self) -> None:
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertRaises(RuntimeError):
                Run.get_context(allow_offline=False)

    def test_a_run_id_without_the_other_variables_is_an_error_naming_them(self) -> None:
        with self.assertRaises(RuntimeError) as caught:
            Run._from_environ({"CAIRN_RUN_ID": "r1", "CAIRN_WORKSPACE": "w"})
        self.assertIn("CAIRN_TRACKING_URI", str(caught.exception))
        self.assertIn("CAIRN_RUN_TOKEN", str(caught.exception))

    def test_package_exports_run_and_version(self) -> None:
        self.assertIs(cairn.Run, Run)
        self.assertRegex(cairn.__version__, r"^\d+\.\d+\.\d+")


if __name__ == "__main__":
    unittest.main()
