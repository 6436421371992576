//! A trace's spans: taken over OTLP/HTTP (`POST …/mlflow/v1/traces`, protobuf or JSON, as
//! MLflow 3.4+'s server takes them) and read back whole (`GetTrace`, `BatchGetTraces`, and the
//! studio's trace page).
//!
//! MLflow's client asks the server's `/version` first: from 3.4 on it sends each span over OTLP
//! as it ends, then the trace's info (`StartTraceV3`, `traces.rs`), and uploads no
//! `traces.json` when the answer's tags say `mlflow.trace.spansLocation = TRACKING_STORE`. So
//! does any OpenTelemetry exporter pointed at the endpoint with an `x-mlflow-experiment-id`
//! header; a trace seen first through its spans is created in progress, with its root span's
//! name, times, state and inputs/outputs, and completed by whatever comes later. Spans are kept
//! as MLflow's `Span.to_dict` writes them, the same JSON as a `traces.json` holds, so both kinds
//! of trace are read the same way.

use std::collections::BTreeMap;
use std::io::Read;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use cairn_core::api::{Role, Workspace};
use cairn_core::{Error, RelPath};
use cairn_store::{SpanRecord, TraceRecord, TraceSpans, SOURCE_RUN, SPANS_IN_STORE, SPANS_LOCATION};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span};
use prost::Message;
use serde_json::{json, Map, Value};

use super::experiments::{experiment, experiment_ids};
use super::traces::{
    authorize, check_entry, check_source_run, load, named_traces, require_read, trace_info_json,
};
use super::wire::{ExperimentIds, MlError, MlResult, Req};
use super::Ctx;
use crate::state::AppState;

/// What `GET …/mlflow/version` answers: the first MLflow server version whose clients send
/// spans over OTLP. Not a newer one: a client would take that as a promise of APIs this server
/// may not have.
pub const MLFLOW_SERVER_VERSION: &str = "3.4.0";
/// The header naming the experiment an OTLP export's traces belong to (MLflow's), and the
/// optional one naming their run.
const EXPERIMENT_HEADER: &str = "x-mlflow-experiment-id";
const RUN_HEADER: &str = "x-mlflow-run-id";
/// The largest OTLP body taken, compressed or not (413 past it).
pub const OTLP_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// MLflow's length of a trace's request and response previews, in characters.
const PREVIEW_CHARS: usize = 1000;
/// The largest `traces.json` a read of a trace takes (bytes).
const MAX_TRACE_FILE: u64 = 64 * 1024 * 1024;

/// `GET …/mlflow/version`.
pub async fn version() -> &'static str {
    MLFLOW_SERVER_VERSION
}

/// An OTLP failure: MLflow's error shape, with the status OTLP exporters act on (they retry
/// 429/502/503/504 only, so a bad export is a 4xx that they drop, as they should).
fn bad(message: impl Into<String>) -> MlError {
    MlError::invalid(message)
}

/// The body, uncompressed (`Content-Encoding: gzip`, `deflate` or none), at most
/// `OTLP_BODY_LIMIT` bytes.
fn decompress(body: Bytes, encoding: Option<&str>) -> MlResult<Bytes> {
    let mut reader: Box<dyn Read> = match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => return Ok(body),
        Some("gzip") => Box::new(flate2::read::GzDecoder::new(&body[..])),
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        Some(other) => {
            return Err(MlError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_PARAMETER_VALUE",
                format!("Content-Encoding {other:?} is not taken: gzip, deflate or none"),
            ))
        }
    };
    let mut out = Vec::new();
    (&mut reader)
        .take(OTLP_BODY_LIMIT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("the body is not valid {}: {e}", encoding.unwrap_or_default())))?;
    if out.len() > OTLP_BODY_LIMIT {
        return Err(MlError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESOURCE_LIMIT_EXCEEDED",
            format!("the uncompressed body is past the limit of {OTLP_BODY_LIMIT} bytes"),
        ));
    }
    Ok(out.into())
}

/// An OTLP attribute value as the JSON value it stands for (what MLflow's
/// `_decode_otel_proto_anyvalue` gives); bytes as base64 text, non-finite doubles as null.
pub fn any_to_json(v: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(V::StringValue(s)) => json!(s),
        Some(V::BoolValue(b)) => json!(b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any_to_json(Some(v))).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(
            kv.values.iter().map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref()))).collect(),
        ),
        Some(V::BytesValue(b)) => json!(B64.encode(b)),
        // An index into a profile's string table: meaningless in a trace export.
        Some(V::StringValueStrindex(_)) => Value::Null,
    }
}

/// A span attribute as MLflow keeps it: its value JSON-encoded (`"\"LLM\""`). A non-finite
/// double is written as Python's `json.dumps` writes it (`NaN`, `Infinity`), which MLflow reads.
fn attribute_text(v: Option<&AnyValue>) -> String {
    if let Some(any_value::Value::DoubleValue(d)) = v.and_then(|v| v.value.as_ref()) {
        if d.is_nan() {
            return "NaN".into();
        } else if d.is_infinite() {
            return if *d > 0.0 { "Infinity".into() } else { "-Infinity".into() };
        }
    }
    any_to_json(v).to_string()
}

fn attributes_map(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs.iter().map(|kv| (kv.key.clone(), any_to_json(kv.value.as_ref()))).collect()
}

/// A JSON value as an OTLP `AnyValue` in protobuf's JSON mapping (the reverse of `any_to_json`).
fn json_to_any(v: &Value) -> Value {
    match v {
        Value::Null => json!({}),
        Value::Bool(b) => json!({"bool_value": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"int_value": n.to_string()}),
        Value::Number(n) => json!({"double_value": n}),
        Value::String(s) => json!({"string_value": s}),
        Value::Array(a) => json!({"array_value": {"values": a.iter().map(json_to_any).collect::<Vec<_>>()}}),
        Value::Object(m) => json!({"kvlist_value": {"values": key_values(m, |v| v.clone())}}),
    }
}

/// `{k: v}` as OTLP's `[{"key": k, "value": AnyValue}]`, each value read through `value`.
fn key_values(m: &Map<String, Value>, value: impl Fn(&Value) -> Value) -> Vec<Value> {
    m.iter().map(|(k, v)| json!({"key": k, "value": json_to_any(&value(v))})).collect()
}

fn status_name(code: i32) -> &'static str {
    match status::StatusCode::try_from(code) {
        Ok(status::StatusCode::Ok) => "STATUS_CODE_OK",
        Ok(status::StatusCode::Error) => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// The MLflow trace id of an OpenTelemetry trace id (MLflow's `tr-` and its hex digits).
pub fn mlflow_trace_id(otel: &[u8]) -> String {
    format!("tr-{}", hex::encode(otel))
}

/// One OTLP span, checked, as MLflow's `Span.to_dict` writes it and as the store keeps it. The
/// trace id it is filed under is the server's (`mlflow.traceRequestId`), whatever the client
/// put in that attribute.
pub fn span_record(span: &Span) -> Result<(String, SpanRecord), String> {
    let name = if span.name.is_empty() { "(no name)" } else { &span.name };
    if span.trace_id.len() != 16 {
        return Err(format!("span {name:?}: trace_id has {} bytes, not 16", span.trace_id.len()));
    }
    if span.span_id.len() != 8 {
        return Err(format!("span {name:?}: span_id has {} bytes, not 8", span.span_id.len()));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(format!("span {name:?}: parent_span_id has {} bytes, not 8", span.parent_span_id.len()));
    }
    // OpenTelemetry's invalid ids: a trace or span id of zeros names nothing.
    if span.trace_id.iter().all(|b| *b == 0) || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!("span {name:?}: a trace_id or span_id of zeros is not a valid id"));
    }
    let nanos = |n: u64, what: &str| {
        i64::try_from(n).map_err(|_| format!("span {name:?}: {what} {n} is past what a time can be"))
    };
    let start_ns = nanos(span.start_time_unix_nano, "start_time_unix_nano")?;
    let end_ns = match span.end_time_unix_nano {
        0 => None,
        n => Some(nanos(n, "end_time_unix_nano")?),
    };
    let trace_id = mlflow_trace_id(&span.trace_id);
    let mut attributes: Map<String, Value> =
        span.attributes.iter().map(|kv| (kv.key.clone(), json!(attribute_text(kv.value.as_ref())))).collect();
    attributes.insert("mlflow.traceRequestId".into(), json!(json!(trace_id).to_string()));
    let span_type = span
        .attributes
        .iter()
        .find(|kv| kv.key == "mlflow.spanType")
        .and_then(|kv| any_to_json(kv.value.as_ref()).as_str().map(str::to_string));
    let code = span.status.as_ref().map_or(0, |s| s.code);
    let dict = json!({
        "trace_id": B64.encode(&span.trace_id),
        "span_id": B64.encode(&span.span_id),
        "parent_span_id": (!span.parent_span_id.is_empty()).then(|| B64.encode(&span.parent_span_id)),
        "name": span.name,
        "start_time_unix_nano": start_ns,
        "end_time_unix_nano": end_ns,
        "events": span.events.iter().map(|e| json!({
            "name": e.name,
            "time_unix_nano": e.time_unix_nano,
            "attributes": attributes_map(&e.attributes),
        })).collect::<Vec<_>>(),
        "status": {
            "code": status_name(code),
            "message": span.status.as_ref().map(|s| s.message.as_str()).unwrap_or(""),
        },
        "attributes": attributes,
        "links": span.links.iter().filter(|l| l.trace_id.len() == 16 && l.span_id.len() == 8).map(|l| json!({
            "trace_id": mlflow_trace_id(&l.trace_id),
            "span_id": hex::encode(&l.span_id),
            "attributes": attributes_map(&l.attributes),
        })).collect::<Vec<_>>(),
    });
    let record = SpanRecord {
        span_id: hex::encode(&span.span_id),
        parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex::encode(&span.parent_span_id)),
        name: span.name.clone(),
        span_type,
        status: status_name(code).trim_start_matches("STATUS_CODE_").to_string(),
        start_ns,
        end_ns,
        content: dict.to_string(),
    };
    Ok((trace_id, record))
}

/// A decoded span attribute (MLflow's JSON-encoded text), for previews and tags.
fn decoded(dict: &Value, key: &str) -> Option<Value> {
    let text = dict.get("attributes")?.get(key)?.as_str()?;
    serde_json::from_str(text).ok()
}

/// A preview as MLflow writes one: the value's JSON (a string as itself), at most 1000 chars.
fn preview(v: Value) -> String {
    let text = match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text,
    }
}

/// What the spans of one trace say of it, for a trace first seen through them: its times and
/// state (from its root span, when among them), name, previews and the tags its root span and
/// the exporter's resource carry (`mlflow.traceTag.K` attributes, resource attributes other
/// than the SDK's and MLflow's own). Invalid tags are left out, as MLflow's server does.
fn trace_of_spans(
    id: &str,
    experiment_id: &str,
    spans: Vec<SpanRecord>,
    resource: &[KeyValue],
) -> TraceSpans {
    let start_ms = spans.iter().map(|s| s.start_ns).min().unwrap_or(0) / 1_000_000;
    let root = spans.iter().find(|s| s.parent_span_id.is_none());
    let mut trace = TraceRecord {
        id: id.to_string(),
        experiment_id: experiment_id.to_string(),
        request_time: start_ms,
        state: "IN_PROGRESS".into(),
        ..Default::default()
    };
    trace.tags.insert(
        super::traces::ARTIFACT_LOCATION.into(),
        format!("mlflow-artifacts:/{experiment_id}/traces/{id}/artifacts"),
    );
    for kv in resource {
        if kv.key.starts_with("telemetry.sdk.") || kv.key.starts_with("mlflow.") {
            continue;
        }
        let value = match any_to_json(kv.value.as_ref()) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        if check_entry("tag", &kv.key, &value).is_ok() {
            trace.tags.insert(kv.key.clone(), value);
        }
    }
    if let Some(root) = root {
        trace.request_time = root.start_ns / 1_000_000;
        trace.execution_duration = root.end_ns.map(|e| (e - root.start_ns) / 1_000_000);
        trace.state = if root.status == "ERROR" { "ERROR" } else { "OK" }.into();
        if root.end_ns.is_none() {
            trace.state = "IN_PROGRESS".into();
        }
        if let Ok(dict) = serde_json::from_str::<Value>(&root.content) {
            trace.request_preview = decoded(&dict, "mlflow.spanInputs").map(preview);
            trace.response_preview = decoded(&dict, "mlflow.spanOutputs").map(preview);
            for (k, v) in dict.get("attributes").and_then(Value::as_object).into_iter().flatten() {
                if let (Some(key), Some(text)) = (k.strip_prefix("mlflow.traceTag."), v.as_str()) {
                    let value = match serde_json::from_str::<Value>(text) {
                        Ok(Value::String(s)) => s,
                        _ => text.to_string(),
                    };
                    if check_entry("tag", key, &value).is_ok() {
                        trace.tags.insert(key.to_string(), value);
                    }
                }
            }
        }
        trace.tags.entry("mlflow.traceName".into()).or_insert_with(|| root.name.clone());
    }
    let has_root = root.is_some();
    TraceSpans { trace, has_root, spans }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> MlResult<Option<&'a str>> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| bad(format!("the header {name} is not text"))))
        .transpose()
}

/// `POST …/mlflow/v1/traces`: an OTLP/HTTP trace export (`application/x-protobuf` or
/// `application/json`, optionally gzip or deflate), into the experiment its
/// `x-mlflow-experiment-id` header names (and, with `x-mlflow-run-id`, that run's). All or
/// nothing: a span that cannot be taken fails the export and nothing of it is kept.
pub async fn export(Ctx { state, caller, ws }: Ctx, headers: HeaderMap, body: Bytes) -> MlResult<Response> {
    let content_type = header_text(&headers, header::CONTENT_TYPE.as_str())?.unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json_body = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => false,
        "application/json" => true,
        _ => {
            return Err(bad(format!(
                "Invalid Content-Type: {content_type:?}. Expected: application/x-protobuf or application/json"
            )))
        }
    };
    let exp_id = header_text(&headers, EXPERIMENT_HEADER)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            bad(format!("Missing header {EXPERIMENT_HEADER}: the experiment the traces belong to"))
        })?
        .trim()
        .to_string();
    let run_header = header_text(&headers, RUN_HEADER)?.map(str::trim).filter(|s| !s.is_empty());
    let body = decompress(body, header_text(&headers, header::CONTENT_ENCODING.as_str())?)?;
    let request: ExportTraceServiceRequest = if json_body {
        serde_json::from_slice(&body)
            .map_err(|e| bad(format!("Invalid OpenTelemetry format (OTLP JSON): {e}")))?
    } else {
        ExportTraceServiceRequest::decode(body)
            .map_err(|e| bad(format!("Invalid OpenTelemetry format (OTLP protobuf): {e}")))?
    };
    if request.resource_spans.is_empty() {
        return Err(bad("Invalid OpenTelemetry format - no spans found"));
    }

    // Checked and converted before anything is read or written.
    let mut by_trace: BTreeMap<String, (Vec<SpanRecord>, Vec<KeyValue>)> = BTreeMap::new();
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let (trace_id, record) = span_record(span).map_err(bad)?;
            let entry = by_trace.entry(trace_id).or_insert_with(|| (Vec::new(), resource.clone()));
            entry.0.push(record);
        }
    }

    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &exp_id).await?;
    if exp.deleted_at.is_some() {
        return Err(bad(format!("The experiment {exp_id} must be in the 'active' state.")));
    }
    // A job's traces are its run's; otherwise the header's run, checked to be the experiment's.
    let run = caller.token.run_id.clone().or_else(|| run_header.map(str::to_string));
    if let Some(run) = &run {
        check_source_run(&state, &workspace, &exp.id, run).await?;
    }
    let ids: Vec<String> = by_trace.keys().cloned().collect();
    let existing = state.store.traces(&workspace, Some(&ids), &[]).await?;
    let mut batch = Vec::with_capacity(by_trace.len());
    for (id, (spans, resource)) in by_trace {
        let mut ts = trace_of_spans(&id, &exp.id, spans, &resource);
        if let Some(run) = &run {
            ts.trace.metadata.insert(SOURCE_RUN.into(), run.clone());
        }
        match existing.iter().find(|t| t.id == id) {
            Some(old) => authorize(&caller, Role::Writer, &ws, old)?,
            None => authorize(&caller, Role::Writer, &ws, &ts.trace)?,
        }
        batch.push(ts);
    }
    if !batch.is_empty() {
        state.store.log_spans(&workspace, &batch).await?;
    }
    // An empty ExportTraceServiceResponse: no bytes in protobuf, `{}` in JSON.
    Ok(if json_body {
        Json(json!({})).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/x-protobuf")], Bytes::new()).into_response()
    })
}

/// Whether the trace's spans came over OTLP and are kept in the store.
fn kept_here(trace: &TraceRecord) -> bool {
    trace.tags.get(SPANS_LOCATION).map(String::as_str) == Some(SPANS_IN_STORE)
}

/// A trace's spans as MLflow's span dicts: those kept here (a trace that came over OTLP), else
/// its `traces.json` (none when the client uploaded none). Errors: a `traces.json` past
/// `max_file` bytes, or not what MLflow writes.
pub async fn span_dicts(
    state: &AppState,
    workspace: &Workspace,
    trace: &TraceRecord,
    max_file: u64,
) -> Result<Vec<Value>, Error> {
    let kept = match kept_here(trace) {
        true => state.store.trace_spans(workspace, std::slice::from_ref(&trace.id)).await?.remove(&trace.id),
        false => None,
    };
    spans_of(state, workspace, trace, kept.unwrap_or_default(), max_file).await
}

/// The trace's spans given those the store keeps of it (`kept`, read by the caller): those when
/// whole, else its `traces.json`, else what is kept.
async fn spans_of(
    state: &AppState,
    workspace: &Workspace,
    trace: &TraceRecord,
    kept: Vec<SpanRecord>,
    max_file: u64,
) -> Result<Vec<Value>, Error> {
    let kept = stored_dicts(kept)?;
    if whole(&kept) {
        return Ok(kept);
    }
    // Spans kept here but not yet whole: the client may have uploaded the whole trace too (its
    // StartTraceV3 came before its last spans, so it was not told they are here).
    match traces_json(state, workspace, trace, max_file).await {
        Ok(file) if kept.is_empty() || whole(&file) => Ok(file),
        Err(e) if kept.is_empty() => Err(e),
        _ => Ok(kept),
    }
}

/// The spans of a trace's `traces.json` (none when there is no such file).
async fn traces_json(
    state: &AppState,
    workspace: &Workspace,
    trace: &TraceRecord,
    max_file: u64,
) -> Result<Vec<Value>, Error> {
    let files = super::artifacts::trace_files(state, &workspace.id, &trace.id);
    let bytes = match files.read_many(vec![RelPath::parse("traces.json")?], max_file).await {
        Ok(mut b) => b.remove(0),
        Err(Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("traces.json is not JSON: {e}")))?;
    match doc.get_mut("spans").map(Value::take) {
        Some(Value::Array(spans)) => Ok(spans.into_iter().map(v3_span_dict).collect()),
        _ => Err(Error::invalid("traces.json has no \"spans\" list")),
    }
}

/// A span dict of MLflow 2's schema (`context`, `parent_id`, `start_time`, `status_code`: what
/// mlflow 2.x clients upload in `traces.json`) in MLflow 3's (`Span.to_dict`: base64 ids,
/// `start_time_unix_nano`, `status`), which the rest of this module and the studio read; a dict
/// already in MLflow 3's schema is returned as it is.
pub fn v3_span_dict(d: Value) -> Value {
    let Some(context) = d.get("context").and_then(Value::as_object) else { return d };
    // MLflow 2 writes ids as "0x" and hex digits; anything else is kept as it came.
    let id = |v: Option<&Value>| {
        v.and_then(Value::as_str).map(|s| match hex::decode(s.trim_start_matches("0x")) {
            Ok(bytes) => B64.encode(bytes),
            Err(_) => s.to_string(),
        })
    };
    let code = match d.get("status_code").and_then(Value::as_str) {
        Some("OK") => "STATUS_CODE_OK",
        Some("ERROR") => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    };
    let events: Vec<Value> = d
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            json!({
                "name": e.get("name").cloned().unwrap_or(json!("")),
                "time_unix_nano": e.get("timestamp").cloned().unwrap_or(json!(0)),
                "attributes": e.get("attributes").cloned().unwrap_or(json!({})),
            })
        })
        .collect();
    json!({
        "trace_id": id(context.get("trace_id")),
        "span_id": id(context.get("span_id")),
        "parent_span_id": id(d.get("parent_id")),
        "name": d.get("name").cloned().unwrap_or(json!("")),
        "start_time_unix_nano": d.get("start_time").cloned().unwrap_or(json!(0)),
        "end_time_unix_nano": d.get("end_time").cloned().unwrap_or(Value::Null),
        "events": events,
        "status": {"code": code, "message": d.get("status_message").cloned().unwrap_or(json!(""))},
        "attributes": d.get("attributes").cloned().unwrap_or(json!({})),
    })
}

fn stored_dicts(spans: Vec<SpanRecord>) -> Result<Vec<Value>, Error> {
    spans
        .into_iter()
        .map(|s| {
            serde_json::from_str(&s.content)
                .map_err(|e| Error::Internal(format!("stored span {} is not JSON: {e}", s.span_id)))
        })
        .collect()
}

/// An MLflow span dict as an OpenTelemetry `Span` in protobuf's JSON mapping (what a `Trace`
/// message holds; MLflow's client reads it with `Span.from_otel_proto`).
pub fn otel_span_json(d: &Value) -> Value {
    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let nanos = |k: &str| d.get(k).and_then(Value::as_i64).map(|n| n.to_string());
    // Attributes are JSON-encoded; one that is not (a hand-made file) is taken as plain text.
    let attribute = |v: &Value| match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        other => other.clone(),
    };
    let empty = Map::new();
    let attributes = d.get("attributes").and_then(Value::as_object).unwrap_or(&empty);
    let status = d.get("status");
    let mut span = json!({
        "trace_id": text("trace_id"),
        "span_id": text("span_id"),
        "name": text("name"),
        "start_time_unix_nano": nanos("start_time_unix_nano").unwrap_or_else(|| "0".into()),
        "attributes": key_values(attributes, attribute),
        "status": {
            "code": status.and_then(|s| s.get("code")).and_then(Value::as_str).unwrap_or("STATUS_CODE_UNSET"),
            "message": status.and_then(|s| s.get("message")).and_then(Value::as_str).unwrap_or(""),
        },
        "events": d.get("events").and_then(Value::as_array).map(|evs| evs.iter().map(|e| json!({
            "name": e.get("name").and_then(Value::as_str).unwrap_or(""),
            "time_unix_nano": e.get("time_unix_nano").and_then(Value::as_i64).unwrap_or(0).to_string(),
            "attributes": key_values(e.get("attributes").and_then(Value::as_object).unwrap_or(&empty), Value::clone),
        })).collect::<Vec<_>>()).unwrap_or_default(),
    });
    if let Some(parent) = d.get("parent_span_id").and_then(Value::as_str) {
        span["parent_span_id"] = json!(parent);
    }
    if let Some(end) = nanos("end_time_unix_nano") {
        span["end_time_unix_nano"] = json!(end);
    }
    span
}

/// A trace is whole when its root span is there (MLflow's reads hand out only whole ones,
/// unless asked for part of one).
fn whole(spans: &[Value]) -> bool {
    spans.iter().any(|s| s.get("parent_span_id").is_none_or(Value::is_null))
}

/// A trace with its spans, as MLflow's `Trace` message.
fn trace_json(trace: &TraceRecord, spans: &[Value], ids: &ExperimentIds) -> Value {
    json!({"trace_info": trace_info_json(trace, ids), "spans": spans.iter().map(otel_span_json).collect::<Vec<_>>()})
}

/// `GET /api/3.0/mlflow/traces/get` (GetTrace): a trace with its spans; 404 while its root span
/// has not come yet, unless `allow_partial`.
pub async fn get_trace(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    require_read(&caller, &ws)?;
    let id = req.str("trace_id")?;
    let partial = matches!(req.0.get("allow_partial"), Some(Value::Bool(true)))
        || req.opt_str("allow_partial").is_some_and(|s| s.eq_ignore_ascii_case("true"));
    let workspace = state.store.workspace(&ws).await?;
    let trace = load(&state, &workspace, &id).await?;
    authorize(&caller, Role::Reader, &ws, &trace)?;
    let spans = span_dicts(&state, &workspace, &trace, MAX_TRACE_FILE).await?;
    if !partial && !whole(&spans) {
        return Err(MlError::does_not_exist(format!(
            "Trace with ID {id} is not fully exported yet, please try again later."
        )));
    }
    Ok(Json(json!({"trace": trace_json(&trace, &spans, &experiment_ids(&state, &workspace).await?)})))
}

/// `GET /api/3.0/mlflow/traces/batchGet` (BatchGetTraces): the named traces that exist and are
/// whole (in the given experiments, when some are named), with their spans; at most 1,000 ids.
pub async fn batch_get(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    // As many as `batchGetInfos` takes (MLflow's server sets no limit; its client asks for 10 at a
    // time unless `MLFLOW_SEARCH_TRACES_MAX_BATCH_SIZE` says more).
    let (workspace, traces) = named_traces(&state, &caller, &ws, &req, super::traces::MAX_IDS).await?;
    // The spans kept here for the whole batch in one query; the others read file by file.
    let stored: Vec<String> = traces.iter().filter(|t| kept_here(t)).map(|t| t.id.clone()).collect();
    let mut kept = state.store.trace_spans(&workspace, &stored).await?;
    let ids = experiment_ids(&state, &workspace).await?;
    let mut out = Vec::new();
    // In the order asked for, as MLflow's server answers.
    for id in &req.list("trace_ids") {
        let Some(trace) = traces.iter().find(|t| &t.id == id) else { continue };
        let spans =
            spans_of(&state, &workspace, trace, kept.remove(id).unwrap_or_default(), MAX_TRACE_FILE).await?;
        if whole(&spans) {
            out.push(trace_json(trace, &spans, &ids));
        }
    }
    Ok(Json(json!({"traces": out})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{span::Event, Status};

    #[test]
    fn mlflow_2_span_dicts_read_as_mlflow_3_ones() {
        let v2 = json!({
            "name": "add",
            "context": {"span_id": "0x0102030405060708", "trace_id": "0x000102030405060708090a0b0c0d0e0f"},
            "parent_id": "0x1112131415161718",
            "start_time": 1_700_000_000_000_000_000i64,
            "end_time": 1_700_000_000_500_000_000i64,
            "status_code": "ERROR",
            "status_message": "boom",
            "attributes": {"mlflow.spanInputs": "{\"a\": 1}"},
            "events": [{"name": "exception", "timestamp": 1_700_000_000_400_000_000i64, "attributes": {"k": "v"}}],
        });
        let d = v3_span_dict(v2);
        assert_eq!(d["span_id"], B64.encode([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(d["trace_id"], B64.encode((0u8..16).collect::<Vec<_>>()));
        assert_eq!(d["parent_span_id"], B64.encode([0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]));
        assert_eq!(d["start_time_unix_nano"], 1_700_000_000_000_000_000i64);
        assert_eq!(d["status"], json!({"code": "STATUS_CODE_ERROR", "message": "boom"}));
        assert_eq!(d["events"][0]["time_unix_nano"], 1_700_000_000_400_000_000i64);
        let otel = otel_span_json(&d);
        assert_eq!(otel["end_time_unix_nano"], "1700000000500000000");
        assert_eq!(otel["attributes"][0]["value"]["kvlist_value"]["values"][0]["key"], "a");
        // A root span (no parent) and a dict already in MLflow 3's schema.
        let root = v3_span_dict(
            json!({"name": "r", "context": {"span_id": "0x01", "trace_id": "0x02"}, "parent_id": null}),
        );
        assert!(whole(&[root]));
        let v3 = json!({"span_id": "AQ==", "name": "x"});
        assert_eq!(v3_span_dict(v3.clone()), v3);
    }

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }

    fn span() -> Span {
        use any_value::Value as V;
        Span {
            trace_id: (0u8..16).collect(),
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "predict".into(),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: vec![
                kv("mlflow.spanType", V::StringValue("LLM".into())),
                kv("mlflow.spanInputs", V::StringValue("{\"x\": 21}".into())),
                kv("tokens", V::IntValue(42)),
                kv("ratio", V::DoubleValue(f64::NAN)),
                kv(
                    "tags",
                    V::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(V::BoolValue(true)) }] }),
                ),
                kv(
                    "nested",
                    V::KvlistValue(KeyValueList { values: vec![kv("a", V::StringValue("b".into()))] }),
                ),
                kv("mlflow.traceRequestId", V::StringValue("\"tr-forged\"".into())),
            ],
            events: vec![Event {
                time_unix_nano: 5,
                name: "exception".into(),
                attributes: vec![kv("exception.message", V::StringValue("bad wine".into()))],
                ..Default::default()
            }],
            status: Some(Status { message: "boom".into(), code: status::StatusCode::Error as i32 }),
            ..Default::default()
        }
    }

    #[test]
    fn an_otlp_span_becomes_mlflows_span_dict() {
        let (trace_id, rec) = span_record(&span()).unwrap();
        assert_eq!(trace_id, "tr-000102030405060708090a0b0c0d0e0f");
        assert_eq!(rec.span_id, "0102030405060708");
        assert_eq!(rec.parent_span_id, None);
        assert_eq!(rec.span_type.as_deref(), Some("LLM"));
        assert_eq!(rec.status, "ERROR");
        assert_eq!(rec.end_ns, Some(1_700_000_000_250_000_000));
        let d: Value = serde_json::from_str(&rec.content).unwrap();
        assert_eq!(d["span_id"], B64.encode([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(d["parent_span_id"], Value::Null);
        let a = &d["attributes"];
        // Every attribute JSON-encoded, as MLflow keeps them; the trace id is the server's.
        assert_eq!(a["mlflow.spanType"], "\"LLM\"");
        assert_eq!(a["mlflow.spanInputs"], "\"{\\\"x\\\": 21}\"");
        assert_eq!(a["tokens"], "42");
        assert_eq!(a["ratio"], "NaN");
        assert_eq!(a["tags"], "[true]");
        assert_eq!(a["nested"], "{\"a\":\"b\"}");
        assert_eq!(a["mlflow.traceRequestId"], "\"tr-000102030405060708090a0b0c0d0e0f\"");
        assert_eq!(d["status"], json!({"code": "STATUS_CODE_ERROR", "message": "boom"}));
        assert_eq!(d["events"][0]["attributes"]["exception.message"], "bad wine");
    }

    #[test]
    fn bad_ids_are_refused_with_the_span_named() {
        let mut s = span();
        s.trace_id = vec![1; 8];
        assert!(span_record(&s).unwrap_err().contains("\"predict\": trace_id has 8 bytes, not 16"));
        let mut s = span();
        s.span_id = Vec::new();
        assert!(span_record(&s).unwrap_err().contains("span_id has 0 bytes"));
        let mut s = span();
        s.parent_span_id = vec![1; 3];
        assert!(span_record(&s).unwrap_err().contains("parent_span_id has 3 bytes"));
        let mut s = span();
        s.start_time_unix_nano = u64::MAX;
        assert!(span_record(&s).is_err());
        let mut s = span();
        s.trace_id = vec![0; 16];
        assert!(span_record(&s).unwrap_err().contains("of zeros"));
    }

    #[test]
    fn a_stored_span_reads_back_as_the_otlp_span_it_was() {
        let (_, rec) = span_record(&span()).unwrap();
        let d: Value = serde_json::from_str(&rec.content).unwrap();
        let o = otel_span_json(&d);
        assert_eq!(o["trace_id"], B64.encode((0u8..16).collect::<Vec<_>>()));
        assert_eq!(o["start_time_unix_nano"], "1700000000000000000");
        assert!(o.get("parent_span_id").is_none());
        let attr = |k: &str| {
            o["attributes"].as_array().unwrap().iter().find(|a| a["key"] == k).unwrap()["value"].clone()
        };
        assert_eq!(attr("mlflow.spanType"), json!({"string_value": "LLM"}));
        assert_eq!(attr("tokens"), json!({"int_value": "42"}));
        assert_eq!(attr("tags"), json!({"array_value": {"values": [{"bool_value": true}]}}));
        assert_eq!(
            attr("nested"),
            json!({"kvlist_value": {"values": [{"key": "a", "value": {"string_value": "b"}}]}})
        );
        assert_eq!(o["status"]["code"], "STATUS_CODE_ERROR");
        assert_eq!(o["events"][0]["time_unix_nano"], "5");
    }

    #[test]
    fn a_trace_seen_first_through_its_spans_takes_its_roots_times_name_and_previews() {
        let (_, mut root) = span_record(&span()).unwrap();
        root.status = "OK".into();
        let mut child = root.clone();
        child.span_id = "ff".into();
        child.parent_span_id = Some(root.span_id.clone());
        child.start_ns -= 5_000_000; // a child that (oddly) started first
        let resource = vec![
            kv("service.name", any_value::Value::StringValue("wine-api".into())),
            kv("telemetry.sdk.name", any_value::Value::StringValue("opentelemetry".into())),
            kv("mlflow.trace.spansLocation", any_value::Value::StringValue("forged".into())),
        ];
        let ts = trace_of_spans("tr-1", "7", vec![child.clone(), root.clone()], &resource);
        assert!(ts.has_root);
        assert_eq!(ts.trace.request_time, 1_700_000_000_000);
        assert_eq!(ts.trace.execution_duration, Some(250));
        assert_eq!(ts.trace.state, "OK");
        assert_eq!(ts.trace.request_preview.as_deref(), Some("{\"x\": 21}"));
        assert_eq!(ts.trace.tags["mlflow.traceName"], "predict");
        assert_eq!(ts.trace.tags["service.name"], "wine-api");
        assert_eq!(ts.trace.tags["mlflow.artifactLocation"], "mlflow-artifacts:/7/traces/tr-1/artifacts");
        assert!(!ts.trace.tags.contains_key("telemetry.sdk.name"));
        assert!(!ts.trace.tags.contains_key("mlflow.trace.spansLocation"));
        let alone = trace_of_spans("tr-1", "7", vec![child], &[]);
        assert!(!alone.has_root);
        assert_eq!(alone.trace.state, "IN_PROGRESS");
        assert_eq!(alone.trace.request_time, 1_699_999_999_995);
        assert!(!alone.trace.tags.contains_key("mlflow.traceName"));
    }

    #[test]
    fn otlp_json_is_read_as_the_spec_writes_it() {
        // Hex ids, camelCase, 64-bit integers as strings, enums as numbers.
        let doc = r#"{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
            "scopeSpans": [{"scope": {"name": "wine"}, "spans": [{"traceId": "000102030405060708090a0b0c0d0e0f",
            "spanId": "0102030405060708", "name": "root", "kind": 2, "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
            "attributes": [{"key": "n", "value": {"intValue": "7"}}, {"key": "ok", "value": {"boolValue": true}},
            {"key": "r", "value": {"doubleValue": 0.5}}, {"key": "l", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}],
            "status": {"code": 1}}]}]}]}"#;
        let req: ExportTraceServiceRequest = serde_json::from_str(doc).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        let (trace_id, rec) = span_record(span).unwrap();
        assert_eq!(trace_id, "tr-000102030405060708090a0b0c0d0e0f");
        assert_eq!((rec.start_ns, rec.end_ns, rec.status.as_str()), (1000, Some(2000), "OK"));
        let d: Value = serde_json::from_str(&rec.content).unwrap();
        assert_eq!(d["attributes"]["n"], "7");
        assert_eq!(d["attributes"]["ok"], "true");
        assert_eq!(d["attributes"]["r"], "0.5");
        assert_eq!(d["attributes"]["l"], "[\"a\"]");
    }

    #[test]
    fn previews_are_cut_at_mlflows_length() {
        assert_eq!(preview(json!("é".repeat(1200))).chars().count(), 1000);
        assert_eq!(preview(json!({"a": 1})), "{\"a\":1}");
    }

    #[test]
    fn bodies_are_uncompressed_within_the_limit() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"spans").unwrap();
        let packed = Bytes::from(gz.finish().unwrap());
        assert_eq!(&decompress(packed.clone(), Some("gzip")).unwrap()[..], b"spans");
        assert_eq!(decompress(packed.clone(), None).unwrap(), packed);
        assert_eq!(
            decompress(Bytes::from_static(b"not gzip"), Some("gzip")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(decompress(packed, Some("br")).unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // A small body that inflates past the limit is refused, not held in memory.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; OTLP_BODY_LIMIT + 1]).unwrap();
        let bomb = Bytes::from(gz.finish().unwrap());
        assert!(bomb.len() < 1024 * 1024);
        assert_eq!(decompress(bomb, Some("gzip")).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
