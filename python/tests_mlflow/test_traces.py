"""MLflow 3 tracing against Cairn with the stock client: `@mlflow.trace` and `start_span` log
traces (spans over OTLP as they end, info through StartTraceV3), which `get_trace`,
`search_traces`, trace tags and `delete_traces` read and change. A plain OpenTelemetry SDK app
exports to the same OTLP endpoint; traces whose spans were uploaded as `traces.json` (older
clients) read the same way."""

import base64
import gzip
import json
import time
import urllib.request

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

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

    # The spans came over OTLP and back, inputs and outputs included.
    ok = mlflow.get_trace(ok_id)
    assert ok.info.tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"
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
        ({"filter_string": "span.content = 'x'"}, "searched with LIKE or ILIKE"),
        ({"filter_string": "span.contents LIKE 'x'"}, "by their spans' name, type, status, content, attributes.KEY"),
        ({"filter_string": "feedback.quality = 'good'"}, "does not search traces by their feedbacks"),
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


def otlp(server, workspace, body, content_type="application/x-protobuf", headers=None, experiment="0"):
    """POSTs an OTLP export to the workspace's `/v1/traces`; returns (status, content type, body)."""
    hdrs = {"Authorization": f"Bearer {server.token}", "Content-Type": content_type}
    if experiment is not None:
        hdrs["x-mlflow-experiment-id"] = experiment
    hdrs.update(headers or {})
    req = urllib.request.Request(f"{server.url}/workspaces/{workspace}/mlflow/v1/traces", method="POST", data=body, headers=hdrs)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def kv(key, **value):
    return KeyValue(key=key, value=AnyValue(**value))


def export_request(trace_id, spans, resource=()):
    """An ExportTraceServiceRequest of `spans` (name, span id, parent id, start ns, end ns, attrs)."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(resource)
    scope = rs.scope_spans.add()
    for name, span_id, parent, start, end, attrs in spans:
        scope.spans.add(
            trace_id=trace_id, span_id=span_id, parent_span_id=parent or b"", name=name,
            start_time_unix_nano=start, end_time_unix_nano=end, attributes=attrs,
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
        )
    return request


def test_the_stock_client_sends_spans_over_otlp_and_uploads_no_file(server, tracing, monkeypatch):
    # Synchronous export: each span is sent as it ends, then the trace's info, in that order.
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    exp = mlflow.set_experiment("otlp").experiment_id
    req = urllib.request.Request(f"{server.url}/workspaces/{tracing}/mlflow/version",
                                 headers={"Authorization": f"Bearer {server.token}"})
    assert urllib.request.urlopen(req).read() == b"3.4.0", "what makes the client send spans over OTLP"

    @mlflow.trace(span_type="CHAIN")
    def pipeline(x):
        with mlflow.start_span(name="llm", span_type="LLM") as span:
            span.set_inputs({"prompt": "wine?"})
            span.set_outputs("red")
            span.set_attribute("tokens", 12)
        return x + 1

    assert pipeline(1) == 2
    tid = mlflow.get_last_active_trace_id()
    trace = mlflow.get_trace(tid)
    assert trace.info.tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"
    assert trace.info.state == "OK" and trace.info.request_preview == '{"x": 1}'
    assert [(s.name, s.span_type) for s in trace.data.spans] == [("pipeline", "CHAIN"), ("llm", "LLM")]
    llm = trace.data.spans[1]
    assert llm.inputs == {"prompt": "wine?"} and llm.outputs == "red" and llm.attributes["tokens"] == 12
    assert llm.parent_id == trace.data.spans[0].span_id
    # Search by the spans kept here.
    for filter_string, found in [("span.name = 'llm'", [tid]), ("span.type = 'LLM'", [tid]),
                                 ("span.status = 'ERROR'", []), ("span.name ILIKE 'PIPE%'", [tid]),
                                 ("span.attributes.tokens = '12'", [tid]), ("span.attributes.tokens = '13'", []),
                                 ("span.attributes.mlflow.spanType = 'LLM'", [tid]),
                                 # Full text: the spans' content, as span.content or trace.text.
                                 ("span.content LIKE '%wine?%'", [tid]), ("trace.text ILIKE '%WINE%'", [tid]),
                                 ("span.content LIKE '%WINE%'", []), ("trace.text LIKE '%beer%'", [])]:
        got = mlflow.search_traces(locations=[exp], filter_string=filter_string, return_type="list")
        assert [t.info.trace_id for t in got] == found, filter_string
    # The spans are the server's: no traces.json was uploaded.
    status, _ = raw(server, tracing, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{exp}/traces/{tid}/artifacts/traces.json")
    assert status == 404
    # Search hands out whole traces, spans included (BatchGetTraces).
    [found] = mlflow.search_traces(locations=[exp], return_type="list")
    assert [s.name for s in found.data.spans] == ["pipeline", "llm"]
    # The server's tag saying where the spans are cannot be changed.
    status, body = raw(server, tracing, "PATCH", f"/api/2.0/mlflow/traces/{tid}/tags",
                       {"key": "mlflow.trace.spansLocation", "value": "ARTIFACT_REPO"})
    assert status == 400 and "cannot be changed" in body["message"], body
    # Deleting the trace deletes its spans.
    assert MlflowClient().delete_traces(experiment_id=exp, trace_ids=[tid]) == 1
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/get?trace_id={tid}")
    assert status == 404, body


def test_an_opentelemetry_app_exports_to_the_otlp_endpoint(server, tracing, monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exp = MlflowClient().create_experiment("otel-app")
    # Configured as the README says, through the exporter's own environment variables.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{server.url}/workspaces/{tracing}/mlflow/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                       f"Authorization=Bearer%20{server.token},x-mlflow-experiment-id={exp}")
    exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "wine-api"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("wine")
    with tracer.start_as_current_span("handle") as root:
        root.set_attribute("mlflow.traceTag.team", "ml")
        with tracer.start_as_current_span("score") as child:
            child.set_attribute("rows", 3)
            child.set_attribute("ratio", 0.5)
            child.set_attribute("cached", True)
            child.set_attribute("labels", ["a", "b"])
    provider.shutdown()
    tid = "tr-" + format(root.get_span_context().trace_id, "032x")

    trace = mlflow.get_trace(tid)
    assert trace.info.experiment_id == exp and trace.info.state == "OK"
    assert trace.info.tags["mlflow.traceName"] == "handle"
    assert trace.info.tags["service.name"] == "wine-api" and trace.info.tags["team"] == "ml"
    assert not any(k.startswith("telemetry.sdk") for k in trace.info.tags)
    assert [s.name for s in trace.data.spans] == ["handle", "score"]
    score = trace.data.spans[1]
    assert (score.attributes["rows"], score.attributes["ratio"], score.attributes["cached"]) == (3, 0.5, True)
    assert score.attributes["labels"] == ["a", "b"]
    named = mlflow.search_traces(locations=[exp], filter_string="trace.name = 'handle'", return_type="list")
    assert [t.info.trace_id for t in named] == [tid]


def test_otlp_exports_in_json_gzip_and_in_parts(server, tracing):
    exp = MlflowClient().create_experiment("parts")
    t1 = bytes(range(16))
    root = ("root", b"\x01" * 8, None, 1_000_000_000, 1_500_000_000,
            [kv("mlflow.spanInputs", string_value='{"q": 1}'), kv("mlflow.spanOutputs", string_value='"a"')])
    child = ("child", b"\x02" * 8, b"\x01" * 8, 1_100_000_000, 1_200_000_000, [kv("n", int_value=7)])

    # The child first: the trace exists, in progress, but is not whole.
    status, ctype, body = otlp(server, tracing, export_request(t1, [child]).SerializeToString(), experiment=exp)
    assert status == 200 and ctype == "application/x-protobuf" and body == b"", body
    tid = "tr-" + t1.hex()
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/{tid}")
    assert status == 200 and body["trace"]["trace_info"]["state"] == "IN_PROGRESS", body
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/get?trace_id={tid}")
    assert status == 404 and "not fully exported" in body["message"], body
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/get?trace_id={tid}&allow_partial=true")
    assert status == 200 and [s["name"] for s in body["trace"]["spans"]] == ["child"], body
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/batchGet?trace_ids={tid}")
    assert status == 200 and body["traces"] == [], "a part of a trace is not handed out whole"

    # Then the root, as OTLP JSON (hex ids, camelCase), gzipped: the trace is whole and done.
    doc = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": t1.hex(), "spanId": ("01" * 8), "name": "root",
        "startTimeUnixNano": "1000000000", "endTimeUnixNano": "1500000000",
        "attributes": [{"key": "mlflow.spanInputs", "value": {"stringValue": '{"q": 1}'}},
                       {"key": "mlflow.spanOutputs", "value": {"stringValue": '"a"'}}],
        "status": {"code": 1},
    }]}]}]}
    status, ctype, body = otlp(server, tracing, gzip.compress(json.dumps(doc).encode()), "application/json",
                               {"Content-Encoding": "gzip"}, experiment=exp)
    assert status == 200 and json.loads(body) == {}, body
    trace = mlflow.get_trace(tid)
    assert trace.info.state == "OK" and trace.info.execution_time_ms == 500
    assert trace.info.request_preview == '{"q": 1}' and trace.info.response_preview == '"a"'
    assert [s.name for s in trace.data.spans] == ["root", "child"]
    assert trace.data.spans[1].attributes["n"] == 7

    # A trace logged the older way (info, then traces.json uploaded) is read the same way.
    old = "tr-" + "ab" * 16
    info = {"trace_id": old, "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}},
            "request_time": "2026-12-01T10:00:00.000Z", "execution_duration": "0.100s", "state": "OK"}
    status, body = raw(server, tracing, "POST", "/api/3.0/mlflow/traces", {"trace": {"trace_info": info}})
    assert status == 200 and "mlflow.trace.spansLocation" not in body["trace"]["trace_info"]["tags"], body
    span = {"trace_id": base64.b64encode(b"\xab" * 16).decode(), "span_id": base64.b64encode(b"\x01" * 8).decode(),
            "parent_span_id": None, "name": "legacy",
            "start_time_unix_nano": 1, "end_time_unix_nano": 2, "status": {"code": "STATUS_CODE_OK", "message": ""},
            "attributes": {"mlflow.spanType": '"TOOL"', "mlflow.traceRequestId": json.dumps(old)}, "events": []}
    req = urllib.request.Request(
        f"{server.url}/workspaces/{tracing}/mlflow/api/2.0/mlflow-artifacts/artifacts/{exp}/traces/{old}/artifacts/traces.json",
        method="PUT", data=json.dumps({"spans": [span]}).encode(), headers={"Authorization": f"Bearer {server.token}"})
    urllib.request.urlopen(req).read()
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/batchGet?trace_ids={old}&trace_ids={tid}&trace_ids=tr-none")
    assert status == 200 and [t["trace_info"]["trace_id"] for t in body["traces"]] == [old, tid], body
    assert body["traces"][0]["spans"][0]["name"] == "legacy"
    # More than the client's default batch of 10 (MLFLOW_SEARCH_TRACES_MAX_BATCH_SIZE may ask for more).
    many = "&".join(f"trace_ids=tr-{i:032x}" for i in range(150))
    status, body = raw(server, tracing, "GET", f"/api/3.0/mlflow/traces/batchGet?trace_ids={tid}&{many}")
    assert status == 200 and [t["trace_info"]["trace_id"] for t in body["traces"]] == [tid], body
    assert mlflow.get_trace(old).data.spans[0].span_type == "TOOL"


def test_bad_otlp_exports_get_clear_errors_and_write_nothing(server, tracing):
    exp = MlflowClient().create_experiment("bad-otlp")
    good = ("s", b"\x01" * 8, None, 1, 2, [])
    ok = export_request(bytes(range(16)), [good]).SerializeToString()
    for args, kwargs, want, words in [
        ((ok, "text/plain"), {}, 400, "Invalid Content-Type"),
        ((ok,), {"experiment": None}, 400, "x-mlflow-experiment-id"),
        ((ok,), {"experiment": "424242"}, 404, "No Experiment with id=424242"),
        ((b"\xff\xff\xff not protobuf",), {}, 400, "Invalid OpenTelemetry format"),
        ((b"{not json", "application/json"), {}, 400, "OTLP JSON"),
        ((b"",), {}, 400, "no spans found"),
        ((ok,), {"headers": {"Content-Encoding": "gzip"}}, 400, "not valid gzip"),
        ((ok,), {"headers": {"Content-Encoding": "br"}}, 415, "gzip, deflate or none"),
        ((export_request(b"\x01" * 8, [good]).SerializeToString(),), {}, 400, "trace_id has 8 bytes, not 16"),
        ((export_request(b"\x05" * 16, [("s", b"\x01" * 3, None, 1, 2, [])]).SerializeToString(),), {}, 400, "span_id has 3 bytes"),
        ((export_request(bytes(16), [good]).SerializeToString(),), {}, 400, "of zeros is not a valid id"),
        ((ok,), {"headers": {"x-mlflow-run-id": "no-such-run"}}, 404, "Run with id=no-such-run not found"),
    ]:
        kwargs.setdefault("experiment", exp)
        status, _, body = otlp(server, tracing, *args, **kwargs)
        assert status == want and words in body.decode(), (args[1:], kwargs, status, body)
    status, _, body = otlp(server, tracing, ok, experiment=exp, headers={"Authorization": "Bearer wrong"})
    assert status == 401, body
    assert mlflow.search_traces(locations=[exp], return_type="list") == []

    # A trace's spans go to its own experiment: an export naming another fails whole.
    status, _, body = otlp(server, tracing, ok, experiment=exp)
    assert status == 200, body
    other = MlflowClient().create_experiment("elsewhere")
    both = export_request(bytes(range(16)), [("late", b"\x02" * 8, b"\x01" * 8, 1, 2, [])])
    second = both.resource_spans[0].scope_spans[0].spans.add()
    second.CopyFrom(both.resource_spans[0].scope_spans[0].spans[0])
    second.trace_id, second.span_id, second.parent_span_id = b"\x09" * 16, b"\x03" * 8, b""
    status, _, body = otlp(server, tracing, both.SerializeToString(), experiment=other)
    assert status == 400 and b"is in experiment" in body, body
    assert mlflow.search_traces(locations=[other], return_type="list") == []
    [kept] = mlflow.search_traces(locations=[exp], return_type="list")
    assert [s.name for s in kept.data.spans] == ["s"]


def test_the_default_experiment_is_0_as_on_mlflows_server(server, tracing):
    """A script that sets no experiment logs into `"0"`, and reads `"0"` back wherever an
    experiment id is shown: the client compares them (`search_traces(run_id=…)` searches the
    current experiment, `"0"`, and refuses a run whose experiment it does not see there)."""
    @mlflow.trace
    def ask(q):
        return q.upper()

    with mlflow.start_run() as run:
        ask("where")
    mlflow.flush_trace_async_logging()
    assert run.info.experiment_id == "0"
    assert mlflow.get_run(run.info.run_id).info.experiment_id == "0"
    traces = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    assert [t.data.spans[0].outputs for t in traces] == ["WHERE"]
    assert traces[0].info.experiment_id == "0"
    assert mlflow.get_experiment("0").experiment_id == "0"
    assert mlflow.get_experiment_by_name("Default").experiment_id == "0"
    assert "0" in [e.experiment_id for e in mlflow.search_experiments()]
    assert [r.info.run_id for r in mlflow.search_runs(output_format="list")] == [run.info.run_id]
    # Other experiments keep their ids, and the run is the native API's too, under its real id.
    other = mlflow.create_experiment("other")
    assert other != "0" and mlflow.get_experiment(other).experiment_id == other
    runs = json.loads(server.cli("run", "list", "-w", tracing, "--experiment", "Default", "--output", "json"))
    assert [r["id"] for r in runs] == [run.info.run_id]
