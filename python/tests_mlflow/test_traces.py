"""MLflow 3 tracing against Cairn with the stock client: `@mlflow.trace` and `start_span` log
traces (info through StartTraceV3, spans as the trace's artifact), which `get_trace`,
`search_traces`, trace tags and `delete_traces` read and change."""

import json
import time
import urllib.request

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


@pytest.fixture
def tracing(workspace):
    # The trace exporter keeps the tracking URI it was made with: a fresh one per workspace.
    mlflow.tracing.reset()
    yield workspace
    mlflow.flush_trace_async_logging()
    mlflow.tracing.reset()


def raw(server, workspace, method, path, body=None):
    """Calls an MLflow route of the workspace directly; returns (status, JSON body)."""
    req = urllib.request.Request(
        f"{server.url}/workspaces/{workspace}/mlflow{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_traced_calls_are_logged_searched_tagged_and_deleted(server, tracing):
    exp = mlflow.set_experiment("agents").experiment_id

    @mlflow.trace(name="predict", attributes={"model": "wine"})
    def predict(x):
        with mlflow.start_span(name="features") as span:
            span.set_inputs({"x": x})
            span.set_outputs({"n": 11})
        return x * 2

    @mlflow.trace
    def fails():
        raise ValueError("bad wine")

    with mlflow.start_run() as run:
        assert predict(21) == 42
    ok_id = mlflow.get_last_active_trace_id()
    with pytest.raises(ValueError):
        fails()
    err_id = mlflow.get_last_active_trace_id()
    mlflow.flush_trace_async_logging()
    assert ok_id != err_id

    # The spans came back from the trace's artifact, inputs and outputs included.
    ok = mlflow.get_trace(ok_id)
    assert ok.info.state == "OK" and ok.info.experiment_id == exp
    assert ok.info.request_metadata["mlflow.sourceRun"] == run.info.run_id
    assert ok.info.execution_time_ms is not None and ok.info.execution_time_ms >= 0
    assert [s.name for s in ok.data.spans] == ["predict", "features"]
    root, child = ok.data.spans
    assert root.inputs == {"x": 21} and root.outputs == 42
    assert root.attributes["model"] == "wine"
    assert child.inputs == {"x": 21} and child.outputs == {"n": 11}
    assert ok.info.tags["mlflow.artifactLocation"] == f"mlflow-artifacts:/{exp}/traces/{ok_id}/artifacts"
    err = mlflow.get_trace(err_id)
    assert err.info.state == "ERROR"
    assert any(e.name == "exception" for e in err.data.spans[0].events)

    # Search: the experiment's traces, newest first; MLflow's filters, ordering and run scope.
    everything = mlflow.search_traces(locations=[exp], return_type="list")
    assert [t.info.trace_id for t in everything] == [err_id, ok_id]
    assert [s.name for s in everything[1].data.spans] == ["predict", "features"]
    oldest_first = mlflow.search_traces(locations=[exp], order_by=["timestamp_ms ASC"], return_type="list")
    assert [t.info.trace_id for t in oldest_first] == [ok_id, err_id]
    failed = mlflow.search_traces(locations=[exp], filter_string="trace.status = 'ERROR'", return_type="list")
    assert [t.info.trace_id for t in failed] == [err_id]
    named = mlflow.search_traces(locations=[exp], filter_string="trace.name = 'predict'", return_type="list")
    assert [t.info.trace_id for t in named] == [ok_id]
    in_run = mlflow.search_traces(locations=[exp], run_id=run.info.run_id, return_type="list")
    assert [t.info.trace_id for t in in_run] == [ok_id]
    frame = mlflow.search_traces(locations=[exp])
    assert len(frame) == 2 and set(frame["state"]) == {"OK", "ERROR"}

    # Tags: set, found by search, removed; a missing one is MLflow's 404.
    client = MlflowClient()
    client.set_trace_tag(ok_id, "reviewed", "yes")
    assert client.get_trace(ok_id).info.tags["reviewed"] == "yes"
    tagged = client.search_traces(locations=[exp], filter_string="tags.reviewed = 'yes'", include_spans=False)
    assert [t.info.trace_id for t in tagged] == [ok_id]
    client.delete_trace_tag(ok_id, "reviewed")
    assert "reviewed" not in client.get_trace(ok_id).info.tags
    with pytest.raises(MlflowException) as e:
        client.delete_trace_tag(ok_id, "reviewed")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    # Linking the failed trace to the run makes it the run's too; unknown traces link nothing.
    client.link_traces_to_run([err_id], run.info.run_id)
    in_run = mlflow.search_traces(locations=[exp], run_id=run.info.run_id, return_type="list")
    assert [t.info.trace_id for t in in_run] == [err_id, ok_id]
    with pytest.raises(MlflowException) as e:
        client.link_traces_to_run([ok_id, "tr-nope"], run.info.run_id)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST" and "tr-nope" in e.value.message
    with pytest.raises(MlflowException) as e:
        client.link_traces_to_run([ok_id] * 101, run.info.run_id)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and "more than 100" in e.value.message

    # More than a page of ours (500) is asked for: the client follows the token.
    assert len(client.search_traces(locations=[exp], max_results=600, include_spans=False)) == 2

    # Pages of one, as the client walks them.
    first = client.search_traces(locations=[exp], max_results=1, include_spans=False)
    assert len(first) == 1 and first.token
    second = client.search_traces(locations=[exp], max_results=1, page_token=first.token, include_spans=False)
    assert [t.info.trace_id for t in first + second] == [err_id, ok_id] and not second.token

    # Deleting by id, then by age; the files go with them.
    assert client.delete_traces(experiment_id=exp, trace_ids=[ok_id]) == 1
    with pytest.raises(MlflowException):
        client.get_trace(ok_id).info
    status, body = raw(server, tracing, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{exp}/traces/{ok_id}/artifacts/traces.json")
    assert status == 404, body
    assert client.delete_traces(experiment_id=exp, max_timestamp_millis=int(time.time() * 1000)) == 1
    assert mlflow.search_traces(locations=[exp], return_type="list") == []


def test_bad_trace_calls_get_mlflows_errors_and_change_nothing(server, tracing):
    exp = mlflow.set_experiment("agents").experiment_id
    info = {
        "trace_id": "tr-0123456789abcdef0123456789abcdef",
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}},
        "request_time": "2026-12-01T10:00:00.000Z",
        "execution_duration": "0.250s",
        "state": "OK",
        "tags": {"mlflow.traceName": "predict"},
    }
    status, body = raw(server, tracing, "POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": info}})
    assert status == 200, body
    assert body["trace"]["trace_info"]["execution_duration"] == "0.250s"

    def start(**change):
        return raw(server, tracing, "POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": {**info, **change}}})

    for change, words in [
        ({"trace_id": "../escape"}, "Invalid trace ID"),
        ({"trace_location": {"type": "UC_SCHEMA"}}, "must name an MLflow experiment"),
        ({"request_time": "yesterday"}, "RFC 3339"),
        ({"execution_duration": "-1s"}, "duration"),
        ({"state": "DONE"}, "is not one of"),
        ({"tags": {"k" * 251: "v"}}, "maximum of 250"),
        ({"trace_metadata": {"k": 5}}, "must be a string"),
    ]:
        status, body = start(**change)
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", (change, body)
        assert words in body["message"], (change, body)
    status, body = start(trace_location={"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "424242"}})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST", body
    # An id is its experiment's: the same id in another experiment is refused.
    other = MlflowClient().create_experiment("other")
    status, body = start(trace_location={"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": other}})
    assert status == 400 and body["error_code"] == "RESOURCE_ALREADY_EXISTS", body
    # A deleted experiment takes no traces.
    MlflowClient().delete_experiment(other)
    status, body = start(trace_id="tr-1", trace_location={"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": other}})
    assert status == 400 and "active" in body["message"], body

    # Assessments sent with a trace are checked, and merged with those it has when logged again.
    fb = {"assessment_name": "ok", "feedback": {"value": True}, "source": {"source_type": "HUMAN", "source_id": "al"}}
    for bad, words in [
        ({**fb, "create_time": "yesterday"}, "RFC 3339"),
        ({"assessment_name": "ok"}, "exactly one"),
        ({**fb, "feedback": 5}, "must be an object"),
    ]:
        status, body = start(assessments=[bad])
        assert status == 400 and words in body["message"], (bad, body)
    status, body = start(assessments=[{**fb, "assessment_id": "a-first"}])
    assert status == 200, body
    status, body = start(assessments=[{**fb, "assessment_name": "second"}])
    assert status == 200, body
    names = sorted(a["assessment_name"] for a in body["trace"]["trace_info"]["assessments"])
    assert names == ["ok", "second"], body
    tid = info["trace_id"]
    status, body = raw(server, tracing, "PATCH", f"/api/3.0/mlflow/traces/{tid}/assessments/a-first",
                       {"assessment": {"rationale": "x"}, "update_mask": "feedback"})
    assert status == 400 and "has no feedback" in body["message"], body
    status, body = raw(server, tracing, "DELETE", f"/api/3.0/mlflow/traces/{tid}/assessments/a-gone")
    assert status == 200, "deleting what is not there succeeds, as in MLflow"
    # An endpoint not served answers in MLflow's words, whatever the method.
    status, body = raw(server, tracing, "POST", "/api/3.0/mlflow/traces/metrics", {})
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND", body

    client = MlflowClient()
    for kwargs, words in [
        ({"filter_string": "span.name = 'x'"}, "does not search traces by their spans"),
        ({"filter_string": "trace.status = 'OK' or trace.status = 'ERROR'"}, "position 20"),
        ({"filter_string": "timestamp_ms > '5'"}, "compared as a number"),
        ({"order_by": ["colour"]}, "Invalid order_by"),
        ({"max_results": 50001}, "between 1 and 50000"),
    ]:
        with pytest.raises(MlflowException) as e:
            client.search_traces(locations=[exp], include_spans=False, **kwargs)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE" and words in e.value.message, (kwargs, e.value.message)
    with pytest.raises(MlflowException) as e:
        client.delete_traces(experiment_id=exp)
    assert "must be specified" in e.value.message
    # The client refuses this itself; a raw call is refused by the server too.
    tags = f"/api/2.0/mlflow/traces/{info['trace_id']}/tags"
    status, body = raw(server, tracing, "PATCH", tags, {"key": "mlflow.artifactLocation", "value": "file:///etc"})
    assert status == 400 and "cannot be changed" in body["message"], body
    status, body = raw(server, tracing, "PATCH", "/api/2.0/mlflow/traces/tr-missing/tags", {"key": "a", "value": "b"})
    assert status == 404 and body["error_code"] == "RESOURCE_DOES_NOT_EXIST", body
    # Nothing above changed the one trace there is.
    [kept] = client.search_traces(locations=[exp], include_spans=False)
    assert kept.info.trace_id == info["trace_id"] and kept.info.state == "OK"
    assert kept.info.tags["mlflow.artifactLocation"].endswith(f"/{exp}/traces/{info['trace_id']}/artifacts")
    assert kept.info.request_time == 1796119200000


def test_feedback_and_expectations_are_kept_overridden_updated_and_deleted(server, tracing):
    from mlflow.entities import AssessmentSource, Expectation, Feedback

    mlflow.set_experiment("judged")

    @mlflow.trace
    def answer(question):
        return "42"

    answer("meaning?")
    tid = mlflow.get_last_active_trace_id()
    mlflow.flush_trace_async_logging()

    alice = AssessmentSource(source_type="HUMAN", source_id="alice")
    fb = mlflow.log_feedback(trace_id=tid, name="correct", value=True, rationale="obviously", source=alice, metadata={"round": "1"})
    ex = mlflow.log_expectation(trace_id=tid, name="expected", value={"answer": "42"})
    assert fb.assessment_id.startswith("a-") and fb.assessment_id != ex.assessment_id
    got = mlflow.get_assessment(tid, fb.assessment_id)
    assert got.value is True and got.rationale == "obviously" and got.source.source_id == "alice"
    assert got.metadata == {"round": "1"} and got.valid
    assert mlflow.get_assessment(tid, ex.assessment_id).value == {"answer": "42"}

    # An override makes the feedback it replaces invalid; the trace lists both.
    new = mlflow.override_feedback(trace_id=tid, assessment_id=fb.assessment_id, value=False, rationale="no")
    by_id = {a.assessment_id: a for a in mlflow.get_trace(tid).info.assessments}
    assert set(by_id) == {fb.assessment_id, ex.assessment_id, new.assessment_id}
    assert by_id[fb.assessment_id].valid is False and by_id[new.assessment_id].valid is not False
    assert by_id[new.assessment_id].overrides == fb.assessment_id and by_id[new.assessment_id].value is False

    # Updates change what they name; a feedback cannot become an expectation.
    upd = mlflow.update_assessment(tid, ex.assessment_id, Expectation(name="expected", value={"answer": "43"}))
    assert upd.value == {"answer": "43"} and mlflow.get_assessment(tid, ex.assessment_id).value == {"answer": "43"}
    with pytest.raises(MlflowException) as e:
        mlflow.update_assessment(tid, ex.assessment_id, Feedback(name="renamed", value=1.0))
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and "Expectation" in e.value.message
    # Refused as a whole: the name it also sent was not taken.
    assert mlflow.get_assessment(tid, ex.assessment_id).name == "expected"

    # Deleting the override makes the first feedback count again.
    mlflow.delete_assessment(tid, new.assessment_id)
    assert mlflow.get_assessment(tid, fb.assessment_id).valid is True
    with pytest.raises(MlflowException) as e:
        mlflow.get_assessment(tid, new.assessment_id)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        mlflow.log_feedback(trace_id="tr-nope", name="x", value=1)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as e:
        mlflow.override_feedback(trace_id=tid, assessment_id="a-nope", value=1)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # The failed calls changed nothing.
    assert len(mlflow.get_trace(tid).info.assessments) == 2
