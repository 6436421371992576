"""The replica worker (``python -m cairn.replica``), driven as the gateway will drive it: a real
worker process on a temporary Unix socket, real score.py files (``replica_fixtures/``), frames
written and read by the test.

    .venv/bin/python -m unittest discover -s python/tests -t python
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Any, Dict, List, Optional, Tuple

from cairn.replica import encode_frame, read_frame

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "replica_fixtures")
# A bound on waiting for a worker to start or stop, so a broken worker fails the test instead of
# hanging it. Not an assertion about speed.
START_LIMIT_S = 120.0

sys.path.insert(0, FIXTURES)
from linear_model import LinearModel  # noqa: E402  (a fixture module, importable once on the path)

WINE_ROW = [7.3, 0.65, 0, 1.2, 0.065, 15, 21, 0.9946, 3.39, 0.47, 10]
WINE_MODEL = LinearModel([0.02, -1.1, 0.2, 0.01, -1.7, 0.004, -0.003, -17.0, -0.4, 0.9, 0.28], 21.9)


class Worker:
    """One replica process and its temp folder (socket, models)."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="cr-")
        self.socket_path = os.path.join(self.dir.name, "r.sock")
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["CAIRN_REPLICA_SOCKET"] = self.socket_path
        inherited = os.environ.get("PYTHONPATH")
        # Both packages, as a replica has them (the server unpacks cairn/ and azureml/ side by side
        # into one folder on its PYTHONPATH): score.py may import Azure's azureml.contrib.services.
        runtime = os.pathsep.join([PYTHON_DIR, os.path.join(PYTHON_DIR, "azureml_compat")])
        full_env["PYTHONPATH"] = runtime + (os.pathsep + inherited if inherited else "")
        self.env = full_env
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Worker":
        self.proc = subprocess.Popen([sys.executable, "-m", "cairn.replica"], env=self.env, cwd=self.dir.name,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return self

    def wait_ready(self) -> "Worker":
        assert self.proc is not None
        deadline = time.monotonic() + START_LIMIT_S
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{err.decode()}")
            if time.monotonic() > deadline:
                raise AssertionError("worker did not become ready")
            time.sleep(0.02)
        return self

    def wait_exit(self) -> Tuple[int, str, str]:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=START_LIMIT_S)
        return self.proc.returncode, out.decode(), err.decode()

    def connect(self) -> "Conn":
        return Conn(self.socket_path)

    def close(self) -> Tuple[str, str]:
        out = err = ""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            o, e = self.proc.communicate(timeout=START_LIMIT_S)
            out, err = o.decode(), e.decode()
        elif self.proc is not None:
            o, e = self.proc.communicate()
            out, err = o.decode(), e.decode()
        self.dir.cleanup()
        return out, err


class Conn:
    """The gateway's side of one connection."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(START_LIMIT_S)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")
        self._next = 0

    def send(self, route: str, body: bytes = b"", **fields: Any) -> Any:
        self._next += 1
        header = {"id": fields.pop("id", self._next), "route": route}
        header.update(fields)
        self.sock.sendall(encode_frame(header, body))
        return header["id"]

    def receive(self) -> Tuple[Dict[str, Any], bytes]:
        frame = read_frame(self.reader)
        assert frame is not None, "worker closed the connection"
        return frame

    def call(self, route: str, body: bytes = b"", **fields: Any) -> Tuple[Dict[str, Any], bytes]:
        rid = self.send(route, body, **fields)
        header, data = self.receive()
        assert header["id"] == rid, (header, rid)
        return header, data

    def score(self, body: bytes, **fields: Any) -> Tuple[int, Any, Dict[str, str]]:
        header, data = self.call("/score", body, **fields)
        is_json = header["content_type"] == "application/json"
        return header["status"], json.loads(data) if is_json else data, header["headers"]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def script_worker(script: str, extra: Optional[Dict[str, str]] = None) -> Worker:
    env = {"CAIRN_SCORING_SCRIPT": os.path.join(FIXTURES, script)}
    env.update(extra or {})
    return Worker(env)


class WalkthroughScoreTest(unittest.TestCase):
    """The walkthrough's score.py: a pickled model found with Model.get_model_path in init()."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.worker = script_worker("score_wine.py")
        model_dir = os.path.join(cls.worker.dir.name, "azureml-models", "wine_model", "1")
        os.makedirs(model_dir)
        with open(os.path.join(model_dir, "model.pkl"), "wb") as f:
            pickle.dump(WINE_MODEL, f)
        cls.worker.env["AZUREML_MODEL_DIR"] = model_dir
        cls.worker.start().wait_ready()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.close()

    def test_scores_the_walkthrough_row_like_the_model_itself(self) -> None:
        conn = self.worker.connect()
        body = json.dumps({"data": [WINE_ROW]}).encode()
        status, value, headers = conn.score(body, content_type="application/json")
        self.assertEqual(status, 200)
        self.assertEqual(value, WINE_MODEL.predict([WINE_ROW]))
        self.assertEqual(headers["x-ms-run-function-failed"], "False")
        self.assertRegex(headers["x-ms-run-fn-exec-ms"], r"^\d+\.\d{3}$")
        conn.close()

    def test_wrong_shape_is_a_500_with_the_reference_message_and_the_replica_survives(self) -> None:
        conn = self.worker.connect()
        status, value, headers = conn.score(b'{"data": [[1, 2]]}')
        self.assertEqual(status, 500)
        self.assertEqual(value, {"message": "An unexpected error occurred in scoring script. "
                                            "Check the logs for more info."})
        self.assertEqual(headers["x-ms-run-function-failed"], "True")
        status, value, _ = conn.score(json.dumps({"data": [WINE_ROW, WINE_ROW]}).encode())
        self.assertEqual((status, value), (200, WINE_MODEL.predict([WINE_ROW, WINE_ROW])))
        conn.close()

    def test_ping_reports_ready_and_counts(self) -> None:
        conn = self.worker.connect()
        header, data = conn.call("ping")
        self.assertEqual(header["status"], 200)
        status = json.loads(data)
        self.assertEqual(status["status"], "ready")
        self.assertEqual(status["mode"], "script")
        self.assertEqual(status["pid"], self.worker.proc.pid)
        self.assertEqual(status["in_flight"], 0)
        conn.close()

    def test_health_route_answers_healthy(self) -> None:
        conn = self.worker.connect()
        header, data = conn.call("/", method="GET")
        self.assertEqual((header["status"], data), (200, b"Healthy"))
        conn.close()

    def test_many_connections_at_once_each_get_their_own_answers(self) -> None:
        rows = [[float(i)] + WINE_ROW[1:] for i in range(40)]
        results: Dict[int, List[Any]] = {}
        errors: List[BaseException] = []

        def client(n: int) -> None:
            try:
                conn = self.worker.connect()
                got = []
                for i in range(n, len(rows), 8):
                    status, value, _ = conn.score(json.dumps({"data": [rows[i]]}).encode())
                    got.append((i, status, value))
                results[n] = got
                conn.close()
            except BaseException as e:  # surfaced below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        answered = sorted(item for got in results.values() for item in got)
        self.assertEqual(answered, [(i, 200, WINE_MODEL.predict([rows[i]])) for i in range(len(rows))])


class ScriptBehaviourTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.worker = script_worker("score_behaviours.py").start().wait_ready()

    @classmethod
    def tearDownClass(cls) -> None:
        _, err = cls.worker.close()
        cls.stderr = err

    def setUp(self) -> None:
        self.conn = self.worker.connect()

    def tearDown(self) -> None:
        self.conn.close()

    def test_raw_body_reaches_run_as_a_string(self) -> None:
        self.assertEqual(self.conn.score(b'{"data": [1]}')[:2], (200, {"echo": '{"data": [1]}'}))

    def test_a_returned_string_passes_through_as_a_json_string(self) -> None:
        header, data = self.conn.call("/score", b"string")
        self.assertEqual((header["status"], header["content_type"], data),
                         (200, "application/json", b'"a plain string"'))
        # The reference's classic gotcha: a json.dumps-ed result is encoded a second time.
        self.assertEqual(self.conn.score(b"dumped")[:2], (200, '{"a": 1}'))

    def test_run_exception_is_500_and_next_requests_still_work(self) -> None:
        before = self.conn.score(b"calls")[1]
        status, value, headers = self.conn.score(b"boom")
        self.assertEqual(status, 500)
        self.assertEqual(value["message"], "An unexpected error occurred in scoring script. "
                                           "Check the logs for more info.")
        self.assertEqual(headers["x-ms-run-function-failed"], "True")
        status, value, headers = self.conn.score(b"exit")  # SystemExit in run() must not end the replica
        self.assertEqual(status, 500)
        self.assertEqual(self.conn.score(b"calls")[:2], (200, before + 3))

    def test_unencodable_result_is_an_internal_error(self) -> None:
        status, value, _ = self.conn.score(b"unencodable")
        self.assertEqual((status, value),
                         (500, {"message": "An unexpected internal error occurred. Check the logs for more info."}))

    def test_body_that_is_not_utf8_is_400(self) -> None:
        status, value, _ = self.conn.score(b"\xff\xfe")
        self.assertEqual(status, 400)
        self.assertTrue(value["message"].startswith("Input cannot be decoded as UTF-8: "), value)

    def test_get_turns_query_arguments_into_a_json_string(self) -> None:
        status, value, _ = self.conn.score(b"", method="GET", query="a=1&b=%5B1%2C2%5D&c=x&c=y&d=null")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(value["echo"]), {"a": 1, "b": [1, 2], "c": ["x", "y"], "d": None})

    def test_options_is_200_and_other_methods_405(self) -> None:
        header, data = self.conn.call("/score", method="OPTIONS")
        self.assertEqual((header["status"], data), (200, b""))
        status, value, _ = self.conn.score(b"x", method="PUT")
        self.assertEqual((status, value), (405, {"message": "Method not allowed"}))

    def test_unknown_route_is_404(self) -> None:
        header, data = self.conn.call("/invocations", b"{}")
        self.assertEqual(header["status"], 404)
        self.assertIn("/invocations", json.loads(data)["message"])

    def test_bad_frame_headers_get_400_and_the_connection_stays_usable(self) -> None:
        for bad, expected in [({"id": 5}, "route"), ({"id": 6, "route": "/score", "method": 3}, "method"),
                              ({"id": 7, "route": "/score", "headers": {"a": 1}}, "headers")]:
            self.conn.sock.sendall(encode_frame(bad))
            header, data = self.conn.receive()
            self.assertEqual((header["id"], header["status"]), (bad["id"], 400))
            self.assertIn(expected, json.loads(data)["message"])
        head = b"[1, 2]"
        self.conn.sock.sendall(struct.pack(">II", len(head), 0) + head)
        header, data = self.conn.receive()
        self.assertEqual((header["id"], header["status"]), (None, 400))
        self.assertEqual(self.conn.score(b"calls")[0], 200)

    def test_oversized_frame_closes_only_that_connection(self) -> None:
        self.conn.sock.sendall(struct.pack(">II", 10, 1 << 30))
        header, data = self.conn.receive()
        self.assertEqual((header["id"], header["status"]), (None, 400))
        self.assertIn("exceeds the limit", json.loads(data)["message"])
        self.assertIsNone(read_frame(self.conn.reader))  # closed by the worker
        other = self.worker.connect()
        self.assertEqual(other.score(b"calls")[0], 200)
        other.close()

    def test_ping_answers_while_run_is_busy(self) -> None:
        release = os.path.join(self.worker.dir.name, "release")
        self.conn.send("/score", f"wait:{release}".encode())
        other = self.worker.connect()
        # Ping until the worker reports the call in flight (it may not have started it yet).
        status = json.loads(other.call("ping")[1])
        while status["in_flight"] == 0:
            status = json.loads(other.call("ping")[1])
        self.assertEqual(status["in_flight"], 1)
        with open(release, "w"):
            pass
        header, data = self.conn.receive()
        self.assertEqual((header["status"], data), (200, b'"released"'))
        other.close()

    def test_a_request_sent_before_the_previous_answer_waits_and_answers_come_in_order(self) -> None:
        release = os.path.join(self.worker.dir.name, "release-pipelined")
        first = self.conn.send("/score", f"wait:{release}".encode())
        second = self.conn.send("/score", b"calls")
        # The second waits in the socket: nothing is answered until run() is released.
        self.conn.sock.settimeout(0.2)
        with self.assertRaises(socket.timeout):
            self.conn.sock.recv(1, socket.MSG_PEEK)
        self.conn.sock.settimeout(START_LIMIT_S)
        with open(release, "w"):
            pass
        header, data = self.conn.receive()
        self.assertEqual((header["id"], header["status"], data), (first, 200, b'"released"'))
        header, _ = self.conn.receive()
        self.assertEqual((header["id"], header["status"]), (second, 200))

    def test_a_request_reached_past_its_deadline_is_504_and_run_is_not_called(self) -> None:
        before = self.conn.score(b"calls")[1]
        status, value, headers = self.conn.score(b"boom", deadline_ns=time.monotonic_ns() - 1)
        self.assertEqual(status, 504)
        self.assertIn("run() was not called", value["message"])
        self.assertEqual(headers["x-ms-run-function-failed"], "False")
        # A deadline still ahead changes nothing; ping and health ignore it.
        far = time.monotonic_ns() + 60 * 10**9
        self.assertEqual(self.conn.score(b"calls", deadline_ns=far)[:2], (200, before + 1))
        self.assertEqual(self.conn.call("ping", deadline_ns=0)[0]["status"], 200)
        header, data = self.conn.call("/score", b"calls", deadline_ns="soon")
        self.assertEqual(header["status"], 400)
        self.assertIn("deadline_ns", json.loads(data)["message"])

    def test_swagger_is_generic_without_schema(self) -> None:
        header, data = self.conn.call("/swagger.json", method="GET")
        self.assertEqual(header["status"], 200)
        doc = json.loads(data)
        self.assertEqual(doc["swagger"], "2.0")
        self.assertEqual(doc["definitions"]["ServiceInput"], {"type": "object", "example": {}})
        self.assertIn("/score", doc["paths"])
        doc = json.loads(self.conn.call("/swagger.json", method="GET", query="version=3.1")[1])
        self.assertEqual(doc["openapi"], "3.1.0")
        self.assertEqual(doc["components"]["schemas"]["ServiceOutput"], {"type": "object", "example": {}})
        header, data = self.conn.call("/swagger.json", method="GET", query="version=9")
        self.assertEqual(header["status"], 404)
        self.assertIn("Swagger version [9] is not valid", json.loads(data)["message"])


class RawHttpAndHeadersTest(unittest.TestCase):
    def test_rawhttp_run_gets_the_request_and_chooses_status_and_headers(self) -> None:
        worker = script_worker("score_raw.py").start().wait_ready()
        try:
            conn = worker.connect()
            header, data = conn.call("/score", b'{"x": 1}', content_type="application/json",
                                     headers={"X-Client": "t1", "Authorization": "Bearer secret"})
            self.assertEqual(header["status"], 201)
            self.assertEqual(json.loads(data), {"got": {"x": 1}, "client": "t1", "method": "POST"})
            self.assertEqual(header["headers"]["X-Model"], "raw, v2")
            self.assertEqual(header["headers"]["x-ms-run-function-failed"], "False")
            header, data = conn.call("/score", b"fail")
            self.assertEqual((header["status"], data), (503, b"backend down"))
            self.assertEqual(header["headers"]["x-ms-run-function-failed"], "True")
            header, data = conn.call("/score", method="GET", query="k=v&k=w&n=x")
            self.assertEqual(header["status"], 200)
            self.assertEqual(json.loads(data), {"args": {"k": "v", "n": "x"}, "all": {"k": ["v", "w"], "n": ["x"]},
                                                "k": "v", "n": -1, "path": "/score?k=v&k=w&n=x"})
            # A script's KeyError (Flask would answer 400 here) is a failed run, not a crash.
            header, _ = conn.call("/score", method="GET", query="n=3")
            self.assertEqual((header["status"], header["headers"]["x-ms-run-function-failed"]), (500, "True"))
            conn.close()
        finally:
            worker.close()

    def test_request_headers_parameter_receives_the_forwarded_headers_without_authorization(self) -> None:
        worker = script_worker("score_headers.py").start().wait_ready()
        try:
            conn = worker.connect()
            status, value, _ = conn.score(
                b"[1]", headers={"x-client": "c9", "x-ms-client-request-id": "r1", "authorization": "Bearer k"})
            # Keys as the reference's Flask spells them; lookups in any case.
            self.assertEqual((status, value), (200, {
                "data": "[1]", "client": "c9", "Client": "c9", "has": True,
                "keys": ["X-Client", "X-Ms-Client-Request-Id"]}))
            conn.close()
        finally:
            worker.close()

    def test_user_swagger_file_in_the_app_root_is_served(self) -> None:
        with tempfile.TemporaryDirectory() as app:
            with open(os.path.join(app, "score.py"), "w") as f:
                f.write("def init():\n    pass\n\n\ndef run(raw_data):\n    return raw_data\n")
            with open(os.path.join(app, "swagger.json"), "w") as f:
                json.dump({"swagger": "2.0", "info": {"title": "mine"}}, f)
            worker = Worker({"CAIRN_SCORING_SCRIPT": os.path.join(app, "score.py")}).start().wait_ready()
            try:
                conn = worker.connect()
                header, data = conn.call("/swagger.json", method="GET")
                self.assertEqual(json.loads(data)["info"], {"title": "mine"})
                conn.close()
            finally:
                worker.close()


@unittest.skipUnless(importlib.util.find_spec("inference_schema"), "needs the inference-schema package")
class InferenceSchemaTest(unittest.TestCase):
    """A run() decorated with inference_schema's @input_schema/@output_schema."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.worker = script_worker("score_schema.py").start().wait_ready()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.close()

    def setUp(self) -> None:
        self.conn = self.worker.connect()

    def tearDown(self) -> None:
        self.conn.close()

    def test_parameters_come_from_the_json_body_by_name(self) -> None:
        json_type = {"content_type": "application/json"}
        self.assertEqual(self.conn.score(b'{"data": [[1, 2], [3, 4]], "scale": 2}', **json_type)[:2],
                         (200, [6.0, 14.0]))
        self.assertEqual(self.conn.score(b'{"data": [[1, 2]]}', **json_type)[:2], (200, [3.0]))
        self.assertEqual(self.conn.score(b"", method="GET", query="data=%5B%5B5%2C5%5D%5D")[:2], (200, [10.0]))

    def test_bad_bodies_get_the_reference_errors(self) -> None:
        cases = [
            (b'{"data": [[1, 2]]}', "text/plain", 415, "Expects Content-Type to be application/json"),
            (b"[1]", "application/json", 400, "POST body should be a JSON dictionary."),
            (b"", "application/json", 400, "POST body is empty. Expecting a JSON dictionary."),
            (b"{", "application/json", 400, "POST body could not be decoded as JSON: "),
            (b'{"scale": 1}', "application/json", 400, "A value is not provided for the 'data' parameter."),
        ]
        for body, content_type, status, message in cases:
            got_status, value, _ = self.conn.score(body, content_type=content_type)
            self.assertEqual(got_status, status, body)
            self.assertTrue(value["message"].startswith(message), value)

    def test_swagger_carries_the_decorators_schemas(self) -> None:
        doc = json.loads(self.conn.call("/swagger.json", method="GET")[1])
        service_input = doc["definitions"]["ServiceInput"]
        self.assertEqual(service_input["example"], {"data": [[1.0, 2.0]], "scale": 1.0})
        self.assertEqual(doc["definitions"]["ServiceOutput"]["example"], [3.0])
        doc = json.loads(self.conn.call("/swagger.json", method="GET", query="version=3")[1])
        self.assertEqual(doc["components"]["schemas"]["ServiceInput"], service_input)


class StartupFailureTest(unittest.TestCase):
    def assert_fails_to_start(self, script: str, *expected: str) -> str:
        worker = script_worker(script).start()
        try:
            code, _, err = worker.wait_exit()
            self.assertEqual(code, 3, err)
            for text in expected:
                self.assertIn(text, err)
            self.assertFalse(os.path.exists(worker.socket_path))
            return err
        finally:
            worker.close()

    def test_init_failure_exits_3_with_the_traceback_and_model_tree(self) -> None:
        err = self.assert_fails_to_start("score_init_fails.py", "Traceback (most recent call last)",
                                         "FileNotFoundError", "/nonexistent/wine_model/1/model.pkl")
        self.assertIn("AZUREML_MODEL_DIR", err)

    def test_init_failure_exits_even_if_init_left_a_thread_running(self) -> None:
        self.assert_fails_to_start("score_init_thread_fails.py", "RuntimeError: no model for you")

    def test_syntax_error_exits_3(self) -> None:
        self.assert_fails_to_start("score_syntax_error.py", "SyntaxError", "score_syntax_error.py")

    def test_missing_run_exits_3(self) -> None:
        self.assert_fails_to_start("score_no_run.py", "does not have a run() function defined")

    def test_run_with_varargs_exits_3(self) -> None:
        self.assert_fails_to_start("score_varargs.py", "run() cannot accept positional-only arguments")

    def test_missing_configuration_exits_2(self) -> None:
        worker = Worker({}).start()
        try:
            code, _, err = worker.wait_exit()
            self.assertEqual(code, 2)
            self.assertIn("CAIRN_SCORING_SCRIPT is not set", err)
        finally:
            worker.close()
        worker = script_worker("score_behaviours.py", {"CAIRN_REPLICA_CONCURRENCY": "0"}).start()
        try:
            code, _, err = worker.wait_exit()
            self.assertEqual(code, 2)
            self.assertIn("CAIRN_REPLICA_CONCURRENCY=0 must be at least 1", err)
        finally:
            worker.close()


class LifecycleTest(unittest.TestCase):
    def test_sigterm_removes_the_socket_and_exits_0(self) -> None:
        worker = script_worker("score_behaviours.py").start().wait_ready()
        try:
            assert worker.proc is not None
            worker.proc.send_signal(signal.SIGTERM)
            code, _, err = worker.wait_exit()
            self.assertEqual(code, 0, err)
            self.assertFalse(os.path.exists(worker.socket_path))
        finally:
            worker.close()

    def test_exits_when_its_parent_is_not_the_gateway_that_started_it(self) -> None:
        # As if the server had died while the replica was starting: the parent it finds is not
        # the pid the gateway gave it.
        gone = subprocess.Popen([sys.executable, "-c", ""])
        gone.wait()
        worker = script_worker("score_behaviours.py", {"CAIRN_REPLICA_PARENT_PID": str(gone.pid)}).start()
        try:
            code, _, err = worker.wait_exit()
            self.assertEqual(code, 0, err)
            self.assertIn("parent process is gone", err)
            self.assertFalse(os.path.exists(worker.socket_path))
        finally:
            worker.close()

    def test_stays_while_the_named_parent_is_its_parent(self) -> None:
        worker = script_worker("score_behaviours.py", {"CAIRN_REPLICA_PARENT_PID": str(os.getpid())}).start()
        try:
            worker.wait_ready()
            time.sleep(1.2)  # more than two of the accept loop's checks
            assert worker.proc is not None
            self.assertIsNone(worker.proc.poll())
            self.assertEqual(json.loads(worker.connect().call("ping")[1])["status"], "ready")
        finally:
            worker.close()

    def test_concurrency_setting_lets_run_calls_overlap(self) -> None:
        worker = script_worker("score_behaviours.py", {"CAIRN_REPLICA_CONCURRENCY": "2"}).start().wait_ready()
        try:
            first, second = worker.connect(), worker.connect()
            release_first = os.path.join(worker.dir.name, "first")
            release_second = os.path.join(worker.dir.name, "second")
            first.send("/score", f"wait:{release_first}".encode())
            second.send("/score", f"wait:{release_second}".encode())
            with open(release_second, "w"):
                pass
            # Answered while the first call still blocks: the two run() calls overlapped.
            self.assertEqual(second.receive()[1], b'"released"')
            with open(release_first, "w"):
                pass
            self.assertEqual(first.receive()[1], b'"released"')
            first.close()
            second.close()
        finally:
            worker.close()

    def test_sigterm_lets_the_request_in_flight_finish(self) -> None:
        worker = script_worker("score_behaviours.py").start().wait_ready()
        try:
            assert worker.proc is not None
            release = os.path.join(worker.dir.name, "release")
            busy, watcher = worker.connect(), worker.connect()
            busy.send("/score", f"wait:{release}".encode())
            while json.loads(watcher.call("ping")[1])["in_flight"] == 0:
                pass
            worker.proc.send_signal(signal.SIGTERM)
            while os.path.exists(worker.socket_path):  # stopped accepting: the socket is gone
                time.sleep(0.01)
            with open(release, "w"):
                pass
            header, data = busy.receive()
            self.assertEqual((header["status"], data), (200, b'"released"'))
            code, _, err = worker.wait_exit()
            self.assertEqual(code, 0, err)
            busy.close()
            watcher.close()
        finally:
            worker.close()


def _mlflow_available() -> bool:
    # find_spec, not import: importing mlflow takes seconds and only MlflowModeTest needs it.
    return all(importlib.util.find_spec(m) is not None for m in ("mlflow", "sklearn", "pandas"))


@unittest.skipUnless(_mlflow_available(), "needs mlflow and scikit-learn (the test venv has them)")
class MlflowModeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        import mlflow.sklearn
        from sklearn.linear_model import LinearRegression

        cls.worker = Worker({"CAIRN_SCORING_MODE": "mlflow"})
        model_dir = os.path.join(cls.worker.dir.name, "models", "wine", "3")
        os.makedirs(model_dir)
        cls.model = LinearRegression().fit([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], [1.0, 2.0, 5.0])
        mlflow.sklearn.save_model(cls.model, os.path.join(model_dir, "model"),
                                  serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE)
        cls.worker.env["AZUREML_MODEL_DIR"] = model_dir
        cls.worker.start().wait_ready()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.close()

    def invocations(self, body: Any) -> Tuple[int, Any]:
        conn = self.worker.connect()
        header, data = conn.call("/invocations", json.dumps(body).encode(), content_type="application/json")
        conn.close()
        return header["status"], json.loads(data)

    def test_every_mlflow_body_shape_scores_like_the_model(self) -> None:
        expected = [float(v) for v in self.model.predict([[1.0, 1.0], [3.0, 0.5]])]
        bodies = [
            {"dataframe_split": {"columns": ["0", "1"], "data": [[1.0, 1.0], [3.0, 0.5]]}},
            {"dataframe_records": [{"0": 1.0, "1": 1.0}, {"0": 3.0, "1": 0.5}]},
            {"instances": [[1.0, 1.0], [3.0, 0.5]]},
            {"inputs": [[1.0, 1.0], [3.0, 0.5]]},
        ]
        for body in bodies:
            status, value = self.invocations(body)
            self.assertEqual(status, 200, (body, value))
            for got, want in zip(value["predictions"], expected):
                self.assertAlmostEqual(got, want, places=9)

    def test_wrong_body_is_400_with_mlflow_error(self) -> None:
        status, value = self.invocations({"rows": [[1.0, 1.0]]})
        self.assertEqual(status, 400)
        self.assertEqual(value["error_code"], "BAD_REQUEST")

    def test_score_route_answers_like_invocations_and_other_routes_are_404(self) -> None:
        conn = self.worker.connect()
        header, data = conn.call("/score", json.dumps({"inputs": [[1.0, 1.0]]}).encode(),
                                 content_type="application/json")
        self.assertEqual(header["status"], 200)
        self.assertAlmostEqual(json.loads(data)["predictions"][0], float(self.model.predict([[1.0, 1.0]])[0]))
        header, data = conn.call("/invocations", b"1,1", content_type="text/plain")
        self.assertEqual(header["status"], 415)
        self.assertEqual(conn.call("/nope")[0]["status"], 404)
        conn.close()

    def test_inference_protocol_tensors_become_arrays_and_predictions_tensors(self) -> None:
        conn = self.worker.connect()
        body = {"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": [[1, 1], [3, 0.5]]}]}
        header, data = conn.call("/v2/infer", json.dumps(body).encode(), content_type="application/json")
        self.assertEqual(header["status"], 200, data)
        [out] = json.loads(data)["outputs"]
        self.assertEqual((out["name"], out["datatype"], out["shape"]), ("output-0", "FP64", [2]))
        for got, want in zip(out["data"], self.model.predict([[1.0, 1.0], [3.0, 0.5]])):
            self.assertAlmostEqual(got, float(want), places=9)
        # Data that does not fill the shape cannot be converted: 400 in the protocol's error shape.
        body["inputs"][0]["data"] = [1, 2, 3]
        header, data = conn.call("/v2/infer", json.dumps(body).encode(), content_type="application/json")
        self.assertEqual(header["status"], 400, data)
        self.assertIn("cannot convert the inputs", json.loads(data)["error"])
        conn.close()

    def test_ping_says_mlflow_mode(self) -> None:
        conn = self.worker.connect()
        self.assertEqual(json.loads(conn.call("ping")[1])["mode"], "mlflow")
        conn.close()


if __name__ == "__main__":
    unittest.main()
