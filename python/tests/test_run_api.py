"""The Run API online: reading back, finishing and uploading, against the stub server.

Run from the repository root:

    python3 -m unittest discover -s python/tests -t python
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import unittest
from typing import List
from unittest import mock

from cairn import CairnError, ServerError
from cairn._client import CHUNK_BYTES

from tests.stub_server import RUN_ID, WORKSPACE
from tests.test_batching import StubTestCase


class ReadBackTest(StubTestCase):
    def test_get_metrics_flushes_first_and_collapses_single_points(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        run.log("rmse", 0.61)
        run.log_list("loss", [0.9, 0.5])
        run.log("bad", float("nan"))
        metrics = run.get_metrics()
        self.assertEqual(metrics["rmse"], 0.61)
        self.assertEqual(metrics["loss"], [0.9, 0.5])
        self.assertTrue(math.isnan(metrics["bad"]))
        self.assertEqual(run.get_metrics("rmse"), {"rmse": 0.61})

    def test_get_details_shows_params_and_tags_logged_just_before(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        run.log_param("max_depth", 5)
        run.set_tags({"team": "wine"})
        details = run.get_details()
        self.assertEqual(details["id"], RUN_ID)
        self.assertEqual(details["params"], {"max_depth": "5"})
        self.assertEqual(run.get_tags(), {"team": "wine"})
        self.assertEqual(run.get_status(), "Running")
        self.assertEqual((run.id, run.workspace, run.experiment), (RUN_ID, WORKSPACE, "wine_expt"))
        self.assertFalse(run.is_offline)


class PropertiesTest(StubTestCase):
    def test_add_properties_sends_strings_at_once_and_reads_them_back(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        run.add_properties({"dataset": "wine", "folds": 5})
        self.assertEqual(self.stub.properties, {"dataset": "wine", "folds": "5"}, "sent without a flush")
        run.add_properties({"folds": 5})  # the same value again is fine
        self.assertEqual(run.get_properties(), {"dataset": "wine", "folds": "5"})

    def test_changing_a_property_raises_the_servers_conflict(self) -> None:
        run = self.make_run()
        run.add_properties({"dataset": "wine"})
        with self.assertRaises(ServerError) as caught:
            run.add_properties({"dataset": "iris", "new": "x"})
        self.assertEqual(caught.exception.status, 409)
        self.assertEqual(self.stub.properties, {"dataset": "wine"}, "nothing of the refused call is kept")

    def test_bad_properties_are_refused_before_sending(self) -> None:
        run = self.make_run()
        with self.assertRaises(TypeError):
            run.add_properties(["dataset"])  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            run.add_properties({"": "x"})
        self.assertFalse([r for r in self.stub.requests if r.path.endswith("/properties")])


class ChildRunTest(StubTestCase):
    def test_child_run_is_created_under_this_run_and_logs_with_the_same_token(self) -> None:
        run = self.make_run()
        child = run.child_run("fold-1")
        (child_id, created), = self.stub.children.items()
        self.assertEqual(child.id, child_id)
        self.assertEqual(
            created["body"], {"experiment": "wine_expt", "display_name": "fold-1", "parent_run_id": RUN_ID}
        )
        child.log("rmse", 0.5)
        child.complete()
        self.assertEqual(created["status"], "Completed", "a child is not managed by the runner")
        self.assertEqual([m["key"] for b in created["batches"] for m in b["metrics"]], ["rmse"])
        self.assertEqual(self.stub.received_metrics(), [], "nothing went to the parent")

    def test_child_run_name_must_be_text(self) -> None:
        with self.assertRaises(TypeError):
            self.make_run().child_run(3)  # type: ignore[arg-type]


class FinishTest(StubTestCase):
    def test_complete_outside_a_managed_job_flushes_then_sets_the_status(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        run.log("rmse", 0.61)
        run.complete()
        methods = [r.method for r in self.stub.requests]
        self.assertEqual(methods, ["POST", "PATCH"])
        self.assertEqual(self.stub.status, "Completed")

    def test_fail_tags_the_error_and_sets_failed(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        with mock.patch("sys.stderr", io.StringIO()):
            run.fail(RuntimeError("diverged"))
        self.assertEqual(self.stub.status, "Failed")
        self.assertEqual(self.stub.tags["cairn.error"], "RuntimeError: diverged")

    def test_cancel_sets_canceled(self) -> None:
        run = self.make_run()
        run.cancel()
        self.assertEqual(self.stub.status, "Canceled")

    def test_read_errors_raise_with_the_server_message(self) -> None:
        run = self.make_run(CAIRN_RUN_TOKEN="wrong")
        with self.assertRaises(ServerError) as caught:
            run.get_details()
        self.assertEqual(caught.exception.status, 401)
        self.assertIn("bearer token", str(caught.exception))


class RecordingStream(io.RawIOBase):
    """A non-seekable binary stream that records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.reads: List[int] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        return self._data.read(size)


class UploadTest(StubTestCase):
    def test_upload_file_streams_a_file_with_its_checksum(self) -> None:
        data = os.urandom(3 * CHUNK_BYTES + 123)
        path = os.path.join(self.tmp.name, "model.pkl")
        with open(path, "wb") as f:
            f.write(data)
        run = self.make_run()
        result = run.upload_file("outputs/model.pkl", path)
        self.assertEqual(self.stub.artifacts["outputs/model.pkl"], data)
        self.assertEqual(result, {"name": "outputs/model.pkl", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        (put,) = [r for r in self.stub.requests if r.method == "PUT"]
        self.assertEqual(put.headers["x-cairn-sha256"], hashlib.sha256(data).hexdigest())

    def test_upload_file_reads_streams_in_chunks(self) -> None:
        data = os.urandom(2 * CHUNK_BYTES + 5)
        stream = RecordingStream(data)
        run = self.make_run()
        run.upload_file("outputs/stream.bin", stream)
        self.assertEqual(self.stub.artifacts["outputs/stream.bin"], data)
        self.assertTrue(all(0 < size <= CHUNK_BYTES for size in stream.reads), stream.reads)

    def test_upload_file_accepts_seekable_and_text_streams(self) -> None:
        run = self.make_run()
        buffer = io.BytesIO(b"skip|payload")
        buffer.seek(5)
        run.upload_file("a.bin", buffer)
        run.upload_file("notes/b.txt", io.StringIO("héllo"))
        self.assertEqual(self.stub.artifacts["a.bin"], b"payload")
        self.assertEqual(self.stub.artifacts["notes/b.txt"], "héllo".encode())

    def test_upload_names_are_quoted(self) -> None:
        run = self.make_run()
        run.upload_file("outputs/with space.txt", io.BytesIO(b"x"))
        (put,) = [r for r in self.stub.requests if r.method == "PUT"]
        self.assertTrue(put.path.endswith("/artifacts/outputs/with%20space.txt"), put.path)

    def test_upload_errors_are_raised(self) -> None:
        run = self.make_run()
        with self.assertRaises(FileNotFoundError):
            run.upload_file("x", os.path.join(self.tmp.name, "missing"))
        with self.assertRaises(ValueError):
            run.upload_file("/abs", io.BytesIO(b""))
        other = self.make_run(CAIRN_RUN_TOKEN="wrong")
        with self.assertRaises(CairnError):
            other.upload_file("x.bin", io.BytesIO(b"data"))


if __name__ == "__main__":
    unittest.main()


class RegisterModelTest(StubTestCase):
    def test_register_model_uploads_the_local_file_then_registers_it(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        run.log("rmse", 0.61)
        cwd = os.getcwd()
        os.chdir(self.tmp.name)
        self.addCleanup(os.chdir, cwd)
        os.makedirs("outputs")
        with open("outputs/wine_model.pkl", "wb") as f:
            f.write(b"pickled")
        model = run.register_model(
            model_name="wine_model",
            model_path="outputs/wine_model.pkl",
            tags={"area": "wine", "n": 3},
            description="elasticnet",
            properties={"rmse": 0.61},
        )
        self.assertEqual((model.name, model.version, model.id), ("wine_model", 1, "wine_model:1"))
        self.assertEqual(self.stub.artifacts["outputs/wine_model.pkl"], b"pickled")
        req = self.stub.models["wine_model"][0]
        self.assertEqual(req["run_id"], RUN_ID)
        self.assertEqual(req["path"], "outputs/wine_model.pkl")
        self.assertEqual(req["tags"], {"area": "wine", "n": "3"})
        self.assertEqual(req["properties"], {"rmse": "0.61"})
        self.assertEqual(req["description"], "elasticnet")
        # Logged records went out before the registration.
        methods = [(r.method, r.path.rsplit("/", 1)[-1]) for r in self.stub.requests]
        self.assertLess(methods.index(("POST", "log-batch")), methods.index(("POST", "versions")))
        self.assertEqual(run.register_model("wine_model", "outputs/wine_model.pkl").version, 2)

    def test_register_model_uploads_a_local_folder(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        cwd = os.getcwd()
        os.chdir(self.tmp.name)
        self.addCleanup(os.chdir, cwd)
        os.makedirs(os.path.join("outputs", "model", "data"))
        for name, content in [("MLmodel", b"flavors: {}"), ("data/w.bin", b"w")]:
            with open(os.path.join("outputs", "model", *name.split("/")), "wb") as f:
                f.write(content)
        model = run.register_model("wine", "outputs/model/", model_framework="sklearn")
        self.assertEqual(model.id, "wine:1")
        self.assertEqual(sorted(self.stub.artifacts), ["outputs/model/MLmodel", "outputs/model/data/w.bin"])
        self.assertEqual(self.stub.models["wine"][0]["framework"], "sklearn")

    def test_register_model_errors_are_raised_with_the_server_message(self) -> None:
        run = self.make_run(CAIRN_LOG_FLUSH_SECONDS="600")
        with self.assertRaises(ServerError) as caught:
            run.register_model("wine", "outputs/not_there.pkl")
        self.assertEqual(caught.exception.status, 404)
        self.assertIn("outputs/not_there.pkl", str(caught.exception))
        with self.assertRaises(ValueError):
            run.register_model("wine", "../escape.pkl")
        with self.assertRaises(ValueError):
            run.register_model("", "outputs/x")
        self.assertEqual(self.stub.models, {})

    def test_an_offline_run_cannot_register(self) -> None:
        from cairn import Run

        run = Run._from_environ({}, register_atexit=False)
        with self.assertRaises(CairnError) as caught:
            run.register_model("wine", "outputs/model.pkl")
        self.assertIn("offline", str(caught.exception))
