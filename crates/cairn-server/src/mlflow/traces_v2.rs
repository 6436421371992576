//! MLflow 2's trace RPCs, which mlflow 2.x clients (2.14 to 2.22) send for `@mlflow.trace` and
//! `mlflow.search_traces`, and which MLflow 3's server still serves (deprecated): `StartTrace`
//! (`POST /api/2.0/mlflow/traces`, the server names the trace), `EndTrace` (`PATCH
//! /api/2.0/mlflow/traces/{id}`), `GetTraceInfo` (`GET …/traces/{id}/info`) and `SearchTraces`
//! (`GET …/traces`). They read and write the same traces as MLflow 3's (`traces.rs`), in the V2
//! `TraceInfo` shape (`request_id`, `timestamp_ms`, `execution_time_ms`, `status`, lists of
//! key/value pairs). The client uploads the spans as `traces.json` to the trace's
//! `mlflow.artifactLocation` in MLflow 2's span schema, which `spans.rs` reads as MLflow 3's.

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::Json;
use cairn_core::api::Role;
use cairn_store::TraceRecord;
use serde_json::{json, Value};

use super::experiments::experiment_ids_in;
use super::traces::{
    authorize, check_entry, load, proto_enum, readable, record, require_read, search_page, MAX_PAGE,
};
use super::wire::{ExperimentIds, MlError, MlResult, Req};
use super::Ctx;

/// MLflow 2's `TraceStatus` names, by number, and the MLflow 3 state each is.
const STATUSES: [(&str, &str); 4] = [
    ("TRACE_STATUS_UNSPECIFIED", "STATE_UNSPECIFIED"),
    ("OK", "OK"),
    ("ERROR", "ERROR"),
    ("IN_PROGRESS", "IN_PROGRESS"),
];
/// Where MLflow 2 clients put a trace's inputs and outputs (cut short), which MLflow 3 keeps as
/// the trace's request and response previews.
const INPUTS: &str = "mlflow.traceInputs";
const OUTPUTS: &str = "mlflow.traceOutputs";

/// A trace's info in MLflow 2's `TraceInfo` JSON.
pub fn trace_info_v2_json(t: &TraceRecord, ids: &ExperimentIds) -> Value {
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()
    };
    let status = STATUSES.iter().find(|(_, state)| *state == t.state).map_or(STATUSES[0].0, |(s, _)| s);
    json!({
        "request_id": t.id,
        "experiment_id": ids.shown(&t.experiment_id),
        "timestamp_ms": t.request_time,
        "execution_time_ms": t.execution_duration.unwrap_or(0),
        "status": status,
        "request_metadata": pairs(&t.metadata),
        "tags": pairs(&t.tags),
    })
}

/// A list of `{"key": …, "value": …}` (`TraceRequestMetadata`, `TraceTag`), each checked against
/// MLflow's limits; absent is empty.
fn key_values(req: &Req, field: &str, what: &str) -> MlResult<BTreeMap<String, String>> {
    let items = match req.0.get(field) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(MlError::invalid(format!("{field} must be a list of {{key, value}}, not {other}")))
        }
    };
    let mut out = BTreeMap::new();
    for item in items {
        let text = |k: &str| match item.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if k == "value" => Ok(String::new()),
            _ => Err(MlError::invalid(format!("each entry of {field} needs a string {k:?}, not {item}"))),
        };
        let (key, value) = (text("key")?, text("value")?);
        check_entry(what, &key, &value)?;
        out.insert(key, value);
    }
    Ok(out)
}

/// A `TraceStatus` by name or number, as the MLflow 3 state it is.
fn state_of(v: Option<&Value>) -> MlResult<String> {
    let names = STATUSES.map(|(name, _)| name);
    proto_enum(v, &names, "status").map(|i| STATUSES[i].1.to_string())
}

/// The previews MLflow 3 shows, from the metadata an MLflow 2 client sends.
fn previews_from_metadata(t: &mut TraceRecord) {
    if let Some(inputs) = t.metadata.get(INPUTS) {
        t.request_preview = Some(inputs.clone());
    }
    if let Some(outputs) = t.metadata.get(OUTPUTS) {
        t.response_preview = Some(outputs.clone());
    }
}

/// `POST /api/2.0/mlflow/traces` (StartTrace): a new trace, in progress, named by the server (a
/// UUID's 32 hex digits, as MLflow 2's server names them).
pub async fn start(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let exp_id = req.str("experiment_id")?;
    let mut trace = TraceRecord {
        id: uuid::Uuid::new_v4().simple().to_string(),
        request_time: req.opt_i64("timestamp_ms")?.unwrap_or(0),
        state: "IN_PROGRESS".into(),
        metadata: key_values(&req, "request_metadata", "metadata")?,
        tags: key_values(&req, "tags", "tag")?,
        ..Default::default()
    };
    previews_from_metadata(&mut trace);
    let trace = record(&state, &caller, &ws, trace, &exp_id, &[]).await?;
    Ok(Json(json!({"trace_info": trace_info_v2_json(&trace, &experiment_ids_in(&state, &ws).await?)})))
}

/// `PATCH /api/2.0/mlflow/traces/{request_id}` (EndTrace): the trace's end time (its duration
/// is counted from its start), status, and metadata and tags added to those it has.
pub async fn end(
    Ctx { state, caller, ws }: Ctx,
    Path((_, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    require_read(&caller, &ws)?;
    let end_ms = req.opt_i64("timestamp_ms")?;
    let state_name = state_of(req.0.get("status"))?;
    let metadata = key_values(&req, "request_metadata", "metadata")?;
    let tags = key_values(&req, "tags", "tag")?;
    let workspace = state.store.workspace(&ws).await?;
    let mut trace = load(&state, &workspace, &id).await?;
    authorize(&caller, Role::Writer, &ws, &trace)?;
    if let Some(end_ms) = end_ms {
        if end_ms < trace.request_time {
            return Err(MlError::invalid(format!(
                "timestamp_ms {end_ms} is before the trace's start ({})",
                trace.request_time
            )));
        }
        trace.execution_duration = Some(end_ms - trace.request_time);
    }
    trace.state = state_name;
    trace.metadata.extend(metadata);
    trace.tags.extend(tags);
    previews_from_metadata(&mut trace);
    let exp_id = trace.experiment_id.clone();
    let trace = record(&state, &caller, &ws, trace, &exp_id, &[]).await?;
    Ok(Json(json!({"trace_info": trace_info_v2_json(&trace, &experiment_ids_in(&state, &ws).await?)})))
}

/// `GET /api/2.0/mlflow/traces/{request_id}/info` (GetTraceInfo).
pub async fn get_info(
    Ctx { state, caller, ws }: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> MlResult<Json<Value>> {
    let trace = readable(&state, &caller, &ws, &id).await?;
    Ok(Json(json!({"trace_info": trace_info_v2_json(&trace, &experiment_ids_in(&state, &ws).await?)})))
}

/// `GET /api/2.0/mlflow/traces` (SearchTraces): as SearchTracesV3, with `experiment_ids` and at
/// most 500 results (MLflow 2's limit).
pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    if req.list("experiment_ids").is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'experiment_ids'."));
    }
    let (traces, next) = search_page(&state, &caller, &ws, &req, MAX_PAGE).await?;
    let ids = experiment_ids_in(&state, &ws).await?;
    let mut body = json!({"traces": traces.iter().map(|t| trace_info_v2_json(t, &ids)).collect::<Vec<_>>()});
    if let Some(token) = next {
        body["next_page_token"] = json!(token);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_trace_infos_carry_status_names_and_key_value_lists() {
        let t = TraceRecord {
            id: "0123".into(),
            experiment_id: "7".into(),
            request_time: 1_700_000_000_000,
            state: "STATE_UNSPECIFIED".into(),
            tags: [("mlflow.traceName".to_string(), "f".to_string())].into(),
            ..Default::default()
        };
        let j = trace_info_v2_json(&t, &ExperimentIds::default());
        assert_eq!(j["status"], "TRACE_STATUS_UNSPECIFIED");
        assert_eq!(j["execution_time_ms"], 0);
        assert_eq!(j["tags"], json!([{"key": "mlflow.traceName", "value": "f"}]));
        assert_eq!(j["request_metadata"], json!([]));
        for (v, state) in [(json!("OK"), "OK"), (json!(2), "ERROR"), (json!("IN_PROGRESS"), "IN_PROGRESS")] {
            assert_eq!(state_of(Some(&v)).unwrap(), state);
        }
        for bad in [json!("DONE"), json!(9), json!(true)] {
            assert!(state_of(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_value_lists_are_checked() {
        let req = |v: Value| Req(json!({"tags": v}).as_object().unwrap().clone());
        let ok = key_values(&req(json!([{"key": "a", "value": "1"}, {"key": "b"}])), "tags", "tag").unwrap();
        assert_eq!(ok, [("a".to_string(), "1".to_string()), ("b".to_string(), String::new())].into());
        for bad in [
            json!({"a": "1"}),
            json!([{"value": "1"}]),
            json!([{"key": "a", "value": 1}]),
            json!([{"key": ""}]),
        ] {
            assert!(key_values(&req(bad.clone()), "tags", "tag").is_err(), "{bad}");
        }
        let long = json!([{"key": "k", "value": "x".repeat(8001)}]);
        assert!(key_values(&req(long), "tags", "tag").is_err());
    }
}
