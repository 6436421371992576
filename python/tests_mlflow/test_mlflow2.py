"""An mlflow 2.x client (mlflow-skinny 2.22, in .venv-mlflow2: scripts/setup.sh makes it) against
Cairn: its runs, and its traces through MLflow 2's trace RPCs (StartTrace, EndTrace,
GetTraceInfo, SearchTraces) with the spans uploaded as `traces.json` in MLflow 2's span schema;
then the same traces read by this venv's mlflow 3 client. Plus the bad input those RPCs refuse.
"""

import json
import os
import pathlib
import subprocess
import textwrap

import mlflow
from mlflow import MlflowClient

from conftest import ROOT
from test_traces import raw

MLFLOW2 = ROOT / ".venv-mlflow2" / "bin" / "python"

# Run by the mlflow 2 client; prints what it saw as JSON on its last line.
SCRIPT = textwrap.dedent('''
    import json
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_experiment("v2-tracing")

    @mlflow.trace(span_type="TOOL")
    def add(a, b):
        return a + b

    @mlflow.trace(name="outer")
    def outer(x):
        return add(x, 1) * 2

    @mlflow.trace
    def boom():
        raise ValueError("no good")

    with mlflow.start_run() as run:
        mlflow.log_param("p", "1")
        mlflow.log_metric("m", 0.5, step=1)
        mlflow.log_text("hello", "notes/hello.txt")
        in_run = outer(3)
        in_run_id = mlflow.get_last_active_trace_id()
    outer(4)
    try:
        boom()
    except ValueError:
        pass
    mlflow.flush_trace_async_logging()
    client = MlflowClient()
    exp = mlflow.get_experiment_by_name("v2-tracing")
    traces = client.search_traces([exp.experiment_id], order_by=["timestamp_ms ASC"])
    ok = client.search_traces([exp.experiment_id], filter_string="attributes.status = 'OK'")
    client.set_trace_tag(in_run_id, "reviewed", "yes")
    got = mlflow.get_trace(in_run_id)
    in_the_run = mlflow.search_traces(
        experiment_ids=[exp.experiment_id], return_type="list",
        filter_string=f"request_metadata.`mlflow.sourceRun` = '{run.info.run_id}'")
    print(json.dumps({
        "version": mlflow.__version__,
        "experiment_id": exp.experiment_id,
        "run_id": run.info.run_id,
        "in_run": in_run,
        "in_run_trace": in_run_id,
        "traces": [{"id": t.info.request_id, "status": t.info.status.value,
                    "spans": sorted(s.name for s in t.data.spans), "tags": t.info.tags,
                    "metadata": t.info.request_metadata, "ms": t.info.execution_time_ms}
                   for t in traces],
        "ok": sorted(t.info.request_id for t in ok),
        "got": {"tags": got.info.tags,
                "spans": {s.name: {"root": s.parent_id is None, "inputs": s.inputs,
                                   "outputs": s.outputs, "type": s.span_type}
                          for s in got.data.spans}},
        "in_the_run": [t.info.request_id for t in in_the_run],
        "artifacts": [(f.path, f.file_size) for f in client.list_artifacts(run.info.run_id, "notes")],
    }))
''')


def run_mlflow2(server, workspace, tmp_path, script):
    """Runs `script` with the mlflow 2 client against the workspace; returns its last line's JSON."""
    assert MLFLOW2.exists(), f"{MLFLOW2} is missing: run scripts/setup.sh"
    (tmp_path / "v2.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=f"{server.url}/workspaces/{workspace}/mlflow",
        MLFLOW_TRACKING_TOKEN=server.token,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    out = subprocess.run([str(MLFLOW2), "v2.py"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    # A trace the client fails to log is a warning on its side ("Failed to log trace to MLflow
    # backend"), not an error: none may appear.
    assert "Failed to log" not in out.stderr, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen.pop("version").startswith("2.")
    return seen


def test_an_mlflow_2_client_logs_runs_and_traces_that_mlflow_3_reads(server, workspace, tmp_path):
    seen = run_mlflow2(server, workspace, tmp_path, SCRIPT)
    assert seen["in_run"] == 8
    assert seen["artifacts"] == [["notes/hello.txt", 5]]

    # What the mlflow 2 client saw of its own traces, through MLflow 2's RPCs.
    traces = seen["traces"]
    assert [t["spans"] for t in traces] == [["add", "outer"], ["add", "outer"], ["boom"]]
    assert [t["status"] for t in traces] == ["OK", "OK", "ERROR"]
    in_run = seen["in_run_trace"]
    assert traces[0]["id"] == in_run and len(in_run) == 32  # named by the server, MLflow 2's way
    assert traces[0]["metadata"]["mlflow.sourceRun"] == seen["run_id"]
    assert traces[0]["metadata"]["mlflow.traceInputs"] == '{"x": 3}'
    assert "mlflow.sourceRun" not in traces[1]["metadata"]
    assert all(t["ms"] >= 0 and t["tags"]["mlflow.traceName"] in ("outer", "boom") for t in traces)
    exp_id = seen["experiment_id"]
    assert traces[0]["tags"]["mlflow.artifactLocation"] == f"mlflow-artifacts:/{exp_id}/traces/{in_run}/artifacts"
    assert seen["ok"] == sorted(t["id"] for t in traces[:2])
    assert seen["in_the_run"] == [in_run]
    assert seen["got"]["tags"]["reviewed"] == "yes"
    assert seen["got"]["spans"] == {
        "outer": {"root": True, "inputs": {"x": 3}, "outputs": 8, "type": "UNKNOWN"},
        "add": {"root": False, "inputs": {"a": 3, "b": 1}, "outputs": 4, "type": "TOOL"},
    }

    # The run, as mlflow 3 sees it.
    run = MlflowClient().get_run(seen["run_id"])
    assert run.data.params == {"p": "1"} and run.data.metrics == {"m": 0.5}
    assert mlflow.artifacts.load_text(f"runs:/{seen['run_id']}/notes/hello.txt") == "hello"

    # The same traces through mlflow 3: infos, previews from MLflow 2's metadata, spans read from
    # the traces.json MLflow 2 wrote.
    found = mlflow.search_traces(locations=[exp_id], return_type="list", order_by=["timestamp_ms ASC"])
    assert [t.info.trace_id for t in found] == [t["id"] for t in traces]
    assert [t.info.state.value for t in found] == ["OK", "OK", "ERROR"]
    assert found[0].info.request_preview == '{"x": 3}' and found[0].info.response_preview == "8"
    trace = mlflow.get_trace(in_run)
    spans = {s.name: s for s in trace.data.spans}
    assert spans["add"].parent_id == spans["outer"].span_id and spans["outer"].parent_id is None
    assert spans["add"].inputs == {"a": 3, "b": 1} and spans["add"].outputs == 4
    assert spans["add"].span_type == "TOOL"
    failed = mlflow.get_trace(traces[2]["id"]).data.spans[0]
    assert failed.status.status_code.value == "ERROR"
    assert any(e.name == "exception" and "no good" in json.dumps(e.attributes) for e in failed.events)
    assert mlflow.search_traces(locations=[exp_id], return_type="list", filter_string="span.name = 'add'") == []
    assert len(mlflow.search_traces(locations=[exp_id], return_type="list", run_id=seen["run_id"])) == 1


def test_mlflow_2_trace_rpcs_refuse_bad_input_and_write_nothing(server, workspace):
    exp = MlflowClient().create_experiment("v2-bad")
    v2 = "/api/2.0/mlflow/traces"

    def start(body):
        return raw(server, workspace, "POST", v2, body)

    def refused(status, body, code, words):
        assert status == code, body
        assert words in body["message"], body
        return body["error_code"]

    assert refused(*start({"timestamp_ms": 1}), 400, "experiment_id") == "INVALID_PARAMETER_VALUE"
    assert refused(*start({"experiment_id": "nope"}), 404, "nope") == "RESOURCE_DOES_NOT_EXIST"
    refused(*start({"experiment_id": exp, "tags": {"a": "b"}}), 400, "list")
    refused(*start({"experiment_id": exp, "tags": [{"key": "a", "value": 1}]}), 400, "string \"value\"")
    refused(*start({"experiment_id": exp, "tags": [{"key": "k", "value": "x" * 8001}]}), 400, "8000")
    refused(*start({"experiment_id": exp, "request_metadata": [{"value": "v"}]}), 400, "\"key\"")
    refused(*start({"experiment_id": exp, "timestamp_ms": "soon"}), 400, "timestamp_ms")
    gone = MlflowClient().create_experiment("v2-gone")
    MlflowClient().delete_experiment(gone)
    refused(*start({"experiment_id": gone}), 400, "active")

    status, body = raw(server, workspace, "GET", f"{v2}?experiment_ids={exp}")
    assert status == 200 and body.get("traces", []) == [], body  # nothing was written

    status, body = start({"experiment_id": exp, "timestamp_ms": 1000,
                          "request_metadata": [{"key": "mlflow.traceInputs", "value": "in"}],
                          "tags": [{"key": "mlflow.artifactLocation", "value": "file:///elsewhere"}]})
    assert status == 200, body
    info = body["trace_info"]
    tid = info["request_id"]
    assert info["status"] == "IN_PROGRESS" and info["timestamp_ms"] == 1000
    tags = {t["key"]: t["value"] for t in info["tags"]}
    assert tags["mlflow.artifactLocation"] == f"mlflow-artifacts:/{exp}/traces/{tid}/artifacts"

    end = f"{v2}/{tid}"
    refused(*raw(server, workspace, "PATCH", f"{v2}/0123456789abcdef0123456789abcdef",
                 {"timestamp_ms": 2000, "status": "OK"}), 404, "not found")
    refused(*raw(server, workspace, "PATCH", end, {"timestamp_ms": 2000, "status": "DONE"}), 400, "status")
    refused(*raw(server, workspace, "PATCH", end, {"timestamp_ms": 999, "status": "OK"}), 400, "before")
    refused(*raw(server, workspace, "PATCH", end, {"timestamp_ms": 2000, "status": "OK",
                                                   "tags": [{"key": "", "value": "x"}]}), 400, "empty")
    status, body = raw(server, workspace, "GET", f"{v2}/{tid}/info")
    assert status == 200 and body["trace_info"]["status"] == "IN_PROGRESS", body  # unchanged

    status, body = raw(server, workspace, "PATCH", end, {
        "timestamp_ms": 1250, "status": "ERROR",
        "request_metadata": [{"key": "mlflow.traceOutputs", "value": "out"}],
        "tags": [{"key": "t", "value": "1"}]})
    assert status == 200, body
    info = body["trace_info"]
    assert (info["status"], info["execution_time_ms"]) == ("ERROR", 250)
    assert {m["key"]: m["value"] for m in info["request_metadata"]} == {
        "mlflow.traceInputs": "in", "mlflow.traceOutputs": "out"}
    assert {t["key"] for t in info["tags"]} == {"mlflow.artifactLocation", "t"}
    status, body = raw(server, workspace, "GET", f"/api/3.0/mlflow/traces/{tid}")  # GetTraceInfoV3
    v3 = body["trace"]["trace_info"]
    assert (v3["request_preview"], v3["response_preview"], v3["execution_duration"]) == ("in", "out", "0.250s")

    refused(*raw(server, workspace, "GET", f"{v2}/nope/info"), 404, "nope")
    refused(*raw(server, workspace, "GET", v2), 400, "experiment_ids")
    refused(*raw(server, workspace, "GET", f"{v2}?experiment_ids={exp}&max_results=501"), 400, "500")
    refused(*raw(server, workspace, "GET", f"{v2}?experiment_ids={exp}&filter=status%20%3D"), 400, "filter")
    status, body = raw(server, workspace, "GET", f"{v2}?experiment_ids={exp}&filter=attributes.status%20%3D%20%27ERROR%27")
    assert status == 200 and [t["request_id"] for t in body["traces"]] == [tid], body


MODEL_SCRIPT = textwrap.dedent('''
    import json
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import ElasticNet

    X = np.random.RandomState(0).rand(50, 3)
    model = ElasticNet(alpha=0.01).fit(X, X @ [1.0, 2.0, 3.0])
    mlflow.set_experiment("v2-models")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, "model", registered_model_name="wine2")
    client = MlflowClient()
    version = client.get_model_version("wine2", "1")
    client.set_registered_model_alias("wine2", "champion", "1")
    loaded = mlflow.pyfunc.load_model("models:/wine2@champion")
    history = json.loads(client.get_run(run.info.run_id).data.tags["mlflow.log-model.history"])
    print(json.dumps({
        "version": mlflow.__version__,
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "source": version.source,
        "version_run": version.run_id,
        "predicted": loaded.predict(X[:5]).tolist(),
        "expected": model.predict(X[:5]).tolist(),
        "history": [h["artifact_path"] for h in history],
    }))
''')


def test_an_mlflow_2_client_logs_registers_and_loads_a_model(server, workspace, tmp_path):
    seen = run_mlflow2(server, workspace, tmp_path, MODEL_SCRIPT)
    run_id = seen["run_id"]
    assert seen["model_uri"] == f"runs:/{run_id}/model"
    assert seen["source"].startswith("mlflow-artifacts:/") and seen["source"].endswith(f"/{run_id}/artifacts/model")
    assert seen["version_run"] == run_id and seen["history"] == ["model"]
    assert seen["predicted"] == seen["expected"]
    # The same version through mlflow 3: by alias, and loaded with this venv's client.
    version = MlflowClient().get_model_version_by_alias("wine2", "champion")
    assert (version.version, version.run_id) == ("1", run_id)
    import numpy as np

    X = np.random.RandomState(0).rand(50, 3)
    assert mlflow.pyfunc.load_model("models:/wine2/1").predict(X[:5]).tolist() == seen["expected"]
