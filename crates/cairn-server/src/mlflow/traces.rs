//! MLflow 3's traces: what `@mlflow.trace`, `mlflow.start_span` and the autologgers export, and
//! what `mlflow.get_trace`, `mlflow.search_traces`, `MlflowClient.set_trace_tag` and
//! `delete_traces` read and change.
//!
//! The client logs a trace's spans over OTLP as they end (`spans.rs`: `POST …/v1/traces`, since
//! this server's `/version` says 3.4), then its info with `StartTraceV3`
//! (`POST /api/3.0/mlflow/traces`): ids, times, state, previews, metadata, tags. The answer's
//! tags say where the spans are: `mlflow.trace.spansLocation = TRACKING_STORE` when they came
//! over OTLP; otherwise (an older client, or spans not there yet) the client uploads them as
//! `traces.json` to the answer's `mlflow.artifactLocation`, through the artifact proxy
//! (`artifacts.rs` resolves `{exp}/traces/{id}/artifacts`). Assessments sent with a trace are
//! kept with it and returned with it (`assessments.rs` serves their own endpoints). MLflow 2's
//! trace RPCs (`traces_v2.rs`) record and read the same traces. Trace metrics (the MLflow UI's
//! dashboards) are not served (ENDPOINT_NOT_FOUND).

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::Json;
use cairn_core::api::{Role, Workspace};
use cairn_core::{Error, RelPath};
use cairn_store::{TraceRecord, SOURCE_RUN, SPANS_LOCATION};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::experiments::{experiment, experiment_ids_in, page_offset};
use super::wire::{ExperimentIds, MlError, MlResult, Req};
use super::Ctx;
use crate::auth::Caller;
use crate::state::AppState;

/// The tag that tells the client where the trace's spans go.
pub(super) const ARTIFACT_LOCATION: &str = "mlflow.artifactLocation";
/// MLflow's limits on a trace tag (and, here, a metadata entry), in characters.
const MAX_KEY: usize = 250;
const MAX_VALUE: usize = 8000;
/// MLflow's largest `max_results`, its default, and the most traces one page of ours holds (the
/// client asks for the rest with the page token until it has what it asked for).
const MAX_SEARCH_RESULTS: i64 = 50_000;
const DEFAULT_SEARCH_RESULTS: i64 = 100;
pub(super) const MAX_PAGE: i64 = 500;
/// The most ids one `batchGetInfos` or `delete-traces` call names.
pub(super) const MAX_IDS: usize = 1000;
const STATES: [&str; 4] = ["STATE_UNSPECIFIED", "OK", "ERROR", "IN_PROGRESS"];

/// A trace id from a client: it names a folder of the artifact store, so it is one plain path
/// segment (MLflow's are `tr-` and 32 hex digits).
fn check_id(id: &str) -> MlResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err(MlError::invalid(format!(
        "Invalid trace ID {}: letters, digits, '-', '_' and '.', starting with a letter or digit, \
         at most 128 characters",
        cairn_core::quoted(id)
    )))
}

/// A trace of `ws`, 404 in MLflow's words otherwise.
/// Only a missing trace is a 404: a busy database stays the retryable error it is.
pub(super) async fn load(state: &AppState, ws: &Workspace, id: &str) -> MlResult<TraceRecord> {
    state.store.trace(ws, id).await.map_err(|e| match e {
        Error::NotFound { .. } => MlError::does_not_exist(format!("Trace with ID '{id}' not found.")),
        other => other.into(),
    })
}

/// Checks that `caller` may use trace `t` (or, for a new one, the trace it describes) with
/// `role`: a workspace token, or a job's run-scoped token for the traces of its own run.
pub(super) fn authorize(caller: &Caller, role: Role, ws: &str, t: &TraceRecord) -> MlResult<()> {
    match (&caller.token.run_id, t.metadata.get(SOURCE_RUN)) {
        (Some(_), Some(run)) => Ok(caller.require_run(role, ws, run)?),
        _ => Ok(caller.require(role, Some(ws))?),
    }
}

/// Checks a tag's or metadata entry's key and value against MLflow's limits.
pub(super) fn check_entry(what: &str, key: &str, value: &str) -> MlResult<()> {
    if key.is_empty() {
        return Err(MlError::invalid(format!("a trace {what} key must not be empty")));
    }
    for (part, text, max) in [("key", key, MAX_KEY), ("value", value, MAX_VALUE)] {
        if text.len() > max && text.chars().count() > max {
            return Err(MlError::invalid(format!(
                "trace {what} {part} of {} characters exceeds the maximum of {max}",
                text.chars().count()
            )));
        }
    }
    Ok(())
}

/// A protobuf map (`{"k": "v"}`) of strings; absent is empty.
fn string_map(info: &Map<String, Value>, field: &str) -> MlResult<BTreeMap<String, String>> {
    match info.get(field) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => {
                    Err(MlError::invalid(format!("trace_info.{field}.{k} must be a string, not {other}")))
                }
            })
            .collect(),
        Some(other) => Err(MlError::invalid(format!("trace_info.{field} must be an object, not {other}"))),
    }
}

fn opt_string(info: &Map<String, Value>, field: &str) -> MlResult<Option<String>> {
    match info.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(MlError::invalid(format!("trace_info.{field} must be a string, not {other}"))),
    }
}

/// A protobuf `Timestamp` in its JSON form (RFC 3339), in ms since the epoch.
fn timestamp_ms(text: &str) -> MlResult<i64> {
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| {
        MlError::invalid(format!("trace_info.request_time {text:?} is not an RFC 3339 time: {e}"))
    })
}

/// A protobuf `Duration` in its JSON form (`"1.5s"`), in ms.
fn duration_ms(text: &str) -> MlResult<i64> {
    let bad = || {
        MlError::invalid(format!("trace_info.execution_duration {text:?} is not a duration such as \"1.5s\""))
    };
    let secs: f64 = text.strip_suffix('s').ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok((secs * 1000.0).round() as i64)
}

fn state_name(v: Option<&Value>) -> MlResult<String> {
    proto_enum(v, &STATES, "trace_info.state").map(|i| STATES[i].to_string())
}

/// The position in `names` of a protobuf enum value as JSON clients send it: its name or its
/// number; absent is the first (the proto's unspecified value).
pub(super) fn proto_enum(v: Option<&Value>, names: &[&str], field: &str) -> MlResult<usize> {
    let found = match v {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => n.as_u64().map(|i| i as usize).filter(|i| *i < names.len()),
        Some(Value::String(s)) => names.iter().position(|n| n == s),
        _ => None,
    };
    found.ok_or_else(|| {
        MlError::invalid(format!("{field} {} is not one of {}", v.unwrap_or(&Value::Null), names.join(", ")))
    })
}

/// The experiment a `TraceLocation` names; other kinds of location are Databricks'.
fn location_experiment(location: Option<&Value>) -> MlResult<String> {
    let exp = location.and_then(|l| l.get("mlflow_experiment")).and_then(|e| e.get("experiment_id"));
    match exp {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(MlError::invalid(
            "trace_location must name an MLflow experiment ({\"type\": \"MLFLOW_EXPERIMENT\", \
             \"mlflow_experiment\": {\"experiment_id\": …}}); this server keeps no other kind",
        )),
    }
}

/// A trace's info in MLflow's `TraceInfoV3` JSON.
pub fn trace_info_json(t: &TraceRecord, ids: &ExperimentIds) -> Value {
    // Written by `start` from a JSON list; anything else would be a bug, shown as none.
    let assessments: Value =
        t.assessments_json.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_else(|| json!([]));
    let time = DateTime::<Utc>::from_timestamp_millis(t.request_time)
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    let mut info = json!({
        "trace_id": t.id,
        "trace_location": {
            "type": "MLFLOW_EXPERIMENT",
            "mlflow_experiment": {"experiment_id": ids.shown(&t.experiment_id)},
        },
        "request_time": time,
        "state": t.state,
        "trace_metadata": t.metadata,
        "tags": t.tags,
        "assessments": assessments,
    });
    for (field, v) in [
        ("client_request_id", &t.client_request_id),
        ("request_preview", &t.request_preview),
        ("response_preview", &t.response_preview),
    ] {
        if let Some(v) = v {
            info[field] = json!(v);
        }
    }
    if let Some(ms) = t.execution_duration {
        info["execution_duration"] = json!(format!("{}.{:03}s", ms / 1000, ms % 1000));
    }
    info
}

/// `POST /api/3.0/mlflow/traces` (StartTraceV3): records a finished (or in-progress) trace's info
/// and answers with it, plus where its spans go.
pub async fn start(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let info = req
        .0
        .get("trace")
        .and_then(|t| t.get("trace_info"))
        .and_then(Value::as_object)
        .ok_or_else(|| MlError::invalid("Missing value for required parameter 'trace.trace_info'."))?;
    let id = match info.get("trace_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(MlError::invalid("Missing value for required parameter 'trace_info.trace_id'.")),
    };
    check_id(&id)?;
    let exp_id = location_experiment(info.get("trace_location"))?;
    let request_time = match info.get("request_time") {
        None | Some(Value::Null) => 0,
        Some(Value::String(s)) => timestamp_ms(s)?,
        Some(other) => {
            return Err(MlError::invalid(format!("trace_info.request_time must be a string, not {other}")))
        }
    };
    let execution_duration = match info.get("execution_duration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(duration_ms(s)?),
        Some(other) => {
            return Err(MlError::invalid(format!(
                "trace_info.execution_duration must be a string, not {other}"
            )))
        }
    };
    let trace = TraceRecord {
        id,
        experiment_id: String::new(),
        client_request_id: opt_string(info, "client_request_id")?,
        request_time,
        execution_duration,
        state: state_name(info.get("state"))?,
        request_preview: opt_string(info, "request_preview")?,
        response_preview: opt_string(info, "response_preview")?,
        tags: string_map(info, "tags")?,
        metadata: string_map(info, "trace_metadata")?,
        assessments_json: None,
        linked_runs: Vec::new(),
    };
    for (k, v) in &trace.tags {
        check_entry("tag", k, v)?;
    }
    for (k, v) in &trace.metadata {
        check_entry("metadata", k, v)?;
    }
    let assessments: &[Value] = match info.get("assessments") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(MlError::invalid(format!("trace_info.assessments must be a list, not {other}")))
        }
    };
    let trace = record(&state, &caller, &ws, trace, &exp_id, assessments).await?;
    Ok(Json(
        json!({"trace": {"trace_info": trace_info_json(&trace, &experiment_ids_in(&state, &ws).await?)}}),
    ))
}

/// Records `trace` (its tags and metadata checked) in experiment `exp_id` for `caller`, as
/// StartTraceV3 and MLflow 2's StartTrace and EndTrace do, and returns it as stored: a job's
/// trace is its run's; the experiment must be active and the trace's run one of it; a trace
/// already there keeps its experiment and gets the new info, tags, metadata and assessments
/// (merged); where the spans go (`mlflow.artifactLocation`) is the server's to say.
pub(super) async fn record(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    mut trace: TraceRecord,
    exp_id: &str,
    assessments: &[Value],
) -> MlResult<TraceRecord> {
    // A job's traces are its run's, even those traced outside `mlflow.start_run()`.
    if let Some(own) = &caller.token.run_id {
        trace.metadata.entry(SOURCE_RUN.into()).or_insert_with(|| own.clone());
    }
    authorize(caller, Role::Writer, ws, &trace)?;
    let workspace = state.store.workspace(ws).await?;
    let exp = experiment(state, &workspace, exp_id).await?;
    if exp.deleted_at.is_some() {
        return Err(MlError::invalid(format!("The experiment {exp_id} must be in the 'active' state.")));
    }
    if let Some(run) = trace.metadata.get(SOURCE_RUN) {
        check_source_run(state, &workspace, &exp.id, run).await?;
    }
    let old = match state.store.trace(&workspace, &trace.id).await {
        Ok(old) => Some(old),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(old) = &old {
        if old.experiment_id != exp.id {
            return Err(MlError::already_exists(format!(
                "Trace with ID {} already exists in experiment {}",
                trace.id, old.experiment_id
            )));
        }
        authorize(caller, Role::Writer, ws, old)?;
    }
    trace.experiment_id = exp.id.clone();
    trace.tags.insert(
        ARTIFACT_LOCATION.into(),
        format!("mlflow-artifacts:/{}/traces/{}/artifacts", exp.id, trace.id),
    );
    // Checked before anything is written; merged with what a trace logged again already has.
    let stored = old.as_ref().and_then(|o| o.assessments_json.as_deref());
    trace.assessments_json = match (assessments.is_empty(), stored) {
        (true, stored) => stored.map(str::to_string),
        (false, stored) => Some(super::assessments::merge_incoming(&trace.id, stored, assessments)?),
    };
    state.store.put_trace(&workspace, &trace).await?;
    load(state, &workspace, &trace.id).await
}

/// Checks that `run`, named as the run of a trace of experiment `exp_id`, is a run of that
/// experiment in `workspace`.
pub(super) async fn check_source_run(
    state: &AppState,
    workspace: &Workspace,
    exp_id: &str,
    run: &str,
) -> MlResult<()> {
    let meta = state.store.mlflow_run_meta(&[run.to_string()]).await?;
    match meta.get(run) {
        Some(m) if m.experiment_id == exp_id => {}
        Some(m) => {
            return Err(MlError::invalid(format!(
                "run {run} of the trace's {SOURCE_RUN} is in experiment {}, not in {exp_id}",
                m.experiment_id
            )))
        }
        None => return Err(MlError::does_not_exist(format!("Run with id={run} not found"))),
    }
    // `mlflow_run_meta` looks in every workspace; the run must be this one's.
    state
        .store
        .run(workspace, run)
        .await
        .map_err(|_| MlError::does_not_exist(format!("Run with id={run} not found")))?;
    Ok(())
}

/// Reading traces: a workspace token, or a job's run-scoped token (checked per trace).
pub(super) fn require_read(caller: &Caller, ws: &str) -> MlResult<()> {
    Ok(super::require_read(caller, ws)?)
}

/// Trace `id` of workspace `ws`, once `caller` is found allowed to read it.
pub(super) async fn readable(state: &AppState, caller: &Caller, ws: &str, id: &str) -> MlResult<TraceRecord> {
    require_read(caller, ws)?;
    let workspace = state.store.workspace(ws).await?;
    let trace = load(state, &workspace, id).await?;
    authorize(caller, Role::Reader, ws, &trace)?;
    Ok(trace)
}

/// `GET /api/3.0/mlflow/traces/{trace_id}` (GetTraceInfoV3).
pub async fn get_info(
    Ctx { state, caller, ws }: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> MlResult<Json<Value>> {
    let trace = readable(&state, &caller, &ws, &id).await?;
    Ok(Json(
        json!({"trace": {"trace_info": trace_info_json(&trace, &experiment_ids_in(&state, &ws).await?)}}),
    ))
}

/// `POST /api/3.0/mlflow/traces/batchGetInfos`: the infos of the named traces that exist (in
/// the given experiments, when some are named), newest first.
pub async fn batch_get_infos(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let (_, traces) = named_traces(&state, &caller, &ws, &req, MAX_IDS).await?;
    let ids = experiment_ids_in(&state, &ws).await?;
    Ok(Json(json!({"trace_infos": traces.iter().map(|t| trace_info_json(t, &ids)).collect::<Vec<_>>()})))
}

/// The traces a batch read names (`trace_ids`, at most `max`; in the `experiment_ids`, when
/// some are named) that exist and the caller may read (a job's token sees its own run's traces;
/// the others are left out, as if not there), newest first, with the workspace.
pub(super) async fn named_traces(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    req: &Req,
    max: usize,
) -> MlResult<(Workspace, Vec<TraceRecord>)> {
    require_read(caller, ws)?;
    let ids = req.list("trace_ids");
    if ids.len() > max {
        return Err(MlError::invalid(format!("at most {max} trace_ids per call, not {}", ids.len())));
    }
    let workspace = state.store.workspace(ws).await?;
    let mut exps = Vec::new();
    for e in req.list("experiment_ids") {
        exps.push(experiment(state, &workspace, &e).await?.id);
    }
    let mut traces = state.store.traces(&workspace, Some(&ids), &exps).await?;
    traces.retain(|t| authorize(caller, Role::Reader, ws, t).is_ok());
    Ok((workspace, traces))
}

/// The experiments a search names: V3's `locations` (MLflow experiments only), or V2's
/// `experiment_ids`.
fn search_experiments(req: &Req) -> MlResult<Vec<String>> {
    let mut ids = req.list("experiment_ids");
    for l in req.array("locations") {
        ids.push(location_experiment(Some(l))?);
    }
    if ids.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'locations'."));
    }
    Ok(ids)
}

/// `POST /api/3.0/mlflow/traces/search` (SearchTracesV3): the experiments' traces, filtered and
/// ordered with MLflow's trace grammar, newest first by default.
pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let (traces, next) = search_page(&state, &caller, &ws, &req, MAX_SEARCH_RESULTS).await?;
    let ids = experiment_ids_in(&state, &ws).await?;
    let mut body = json!({"traces": traces.iter().map(|t| trace_info_json(t, &ids)).collect::<Vec<_>>()});
    if let Some(token) = next {
        body["next_page_token"] = json!(token);
    }
    Ok(Json(body))
}

/// One page of a trace search (V3's or V2's request: `max_results` up to `max_results`, served
/// in pages of at most 500), and the token of the next page when there is one.
pub(super) async fn search_page(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    req: &Req,
    max_results: i64,
) -> MlResult<(Vec<TraceRecord>, Option<String>)> {
    caller.require(Role::Reader, Some(ws))?;
    let filter = req.opt_str("filter").unwrap_or_default();
    let clauses = cairn_core::search::parse_trace_filter(&filter)
        .map_err(|e| MlError::invalid(format!("Invalid filter {filter:?}: {e}")))?;
    let terms = cairn_core::search::parse_trace_order_by(&req.list("order_by"))
        .map_err(|e| MlError::invalid(format!("Invalid order_by: {e}")))?;
    let limit = req.opt_i64("max_results")?.unwrap_or(DEFAULT_SEARCH_RESULTS);
    if !(1..=max_results).contains(&limit) {
        return Err(MlError::invalid(format!(
            "Invalid value {limit} for parameter 'max_results': it must be between 1 and {max_results}"
        )));
    }
    let limit = limit.min(MAX_PAGE);
    let offset = page_offset(req)?;
    let workspace = state.store.workspace(ws).await?;
    let mut exps = Vec::new();
    for e in search_experiments(req)? {
        exps.push(experiment(state, &workspace, &e).await?.id);
    }
    let (traces, more) =
        state.store.search_traces(&workspace, &exps, &clauses, &terms, offset as i64, limit).await?;
    Ok((traces, more.then(|| (offset + limit as usize).to_string())))
}

/// The workspace of a tag change on trace `id`, once checked: the tag is not the server's and
/// the caller may change the trace.
async fn tag_change(state: &AppState, caller: &Caller, ws: &str, id: &str, key: &str) -> MlResult<Workspace> {
    require_read(caller, ws)?;
    if key == ARTIFACT_LOCATION || key == SPANS_LOCATION {
        return Err(MlError::invalid(format!(
            "the tag {key} is the server's and cannot be changed or removed"
        )));
    }
    let workspace = state.store.workspace(ws).await?;
    let trace = load(state, &workspace, id).await?;
    authorize(caller, Role::Writer, ws, &trace)?;
    Ok(workspace)
}

/// `PATCH /api/2.0/mlflow/traces/{trace_id}/tags` (SetTraceTag).
pub async fn set_tag(
    Ctx { state, caller, ws }: Ctx,
    Path((_, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let key = req.str("key")?;
    let value = req.opt_str("value").unwrap_or_default();
    check_entry("tag", &key, &value)?;
    let workspace = tag_change(&state, &caller, &ws, &id, &key).await?;
    state.store.set_trace_tag(&workspace, &id, &key, &value).await?;
    Ok(Json(json!({})))
}

/// `DELETE /api/2.0/mlflow/traces/{trace_id}/tags` (DeleteTraceTag).
pub async fn delete_tag(
    Ctx { state, caller, ws }: Ctx,
    Path((_, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let key = req.str("key")?;
    let workspace = tag_change(&state, &caller, &ws, &id, &key).await?;
    if !state.store.delete_trace_tag(&workspace, &id, &key).await? {
        return Err(MlError::does_not_exist(format!(
            "No trace tag with key '{key}' for trace with ID '{id}'"
        )));
    }
    Ok(Json(json!({})))
}

/// MLflow's limit on the traces one `link-to-run` call names.
const MAX_LINKS: usize = 100;

/// `POST /api/2.0/mlflow/traces/link-to-run` (LinkTracesToRun): the traces then count as the
/// run's too (`search_traces(run_id=…)`, the run's page). Every trace must exist; none is linked
/// otherwise.
pub async fn link_to_run(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let run_id = req.run_id()?;
    caller.require_run(Role::Writer, &ws, &run_id)?;
    let ids = req.list("trace_ids");
    if ids.len() > MAX_LINKS {
        return Err(MlError::invalid(format!(
            "Cannot link more than {MAX_LINKS} traces to a run in a single request. Provided {} traces.",
            ids.len()
        )));
    }
    let workspace = state.store.workspace(&ws).await?;
    state
        .store
        .run(&workspace, &run_id)
        .await
        .map_err(|_| MlError::does_not_exist(format!("Run with id={run_id} not found")))?;
    if ids.is_empty() {
        return Ok(Json(json!({})));
    }
    let found = state.store.traces(&workspace, Some(&ids), &[]).await?;
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|t| &t.id == *id)) {
        return Err(MlError::does_not_exist(format!("Trace with ID '{missing}' not found.")));
    }
    for t in &found {
        authorize(&caller, Role::Writer, &ws, t)?;
    }
    state.store.link_traces_to_run(&workspace, &ids, &run_id).await?;
    Ok(Json(json!({})))
}

/// `POST /api/2.0/mlflow/traces/delete-traces`: an experiment's traces, named (`request_ids`, or
/// V3's `trace_ids`) or older than `max_timestamp_millis` (the oldest `max_traces` of them), with
/// their spans and other artifacts.
pub async fn delete_traces(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let exp_id = req.str("experiment_id")?;
    let mut ids = req.list("request_ids");
    ids.extend(req.list("trace_ids"));
    let max_ts = req.opt_i64("max_timestamp_millis")?;
    let max_traces = req.opt_i64("max_traces")?;
    match (max_ts, ids.is_empty()) {
        (None, true) => {
            return Err(MlError::invalid("Either `max_timestamp_millis` or `request_ids` must be specified."))
        }
        (Some(_), false) => {
            return Err(MlError::invalid(
                "Only one of `max_timestamp_millis` and `request_ids` can be specified.",
            ))
        }
        _ => {}
    }
    if max_traces.is_some() && !ids.is_empty() {
        return Err(MlError::invalid("`max_traces` can't be specified if `request_ids` is specified."));
    }
    if max_traces.is_some_and(|n| n <= 0) {
        return Err(MlError::invalid("`max_traces` must be a positive integer."));
    }
    if ids.len() > MAX_IDS {
        return Err(MlError::invalid(format!("at most {MAX_IDS} request_ids per call, not {}", ids.len())));
    }
    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &exp_id).await?;
    let exps = [exp.id];
    let chosen: Vec<String> = match max_ts {
        // The oldest first, so that `max_traces` takes the oldest.
        Some(ts) => state.store.trace_ids_before(&workspace, &exps[0], ts, max_traces).await?,
        None => state.store.traces(&workspace, Some(&ids), &exps).await?.into_iter().map(|t| t.id).collect(),
    };
    let deleted = state.store.delete_traces(&workspace, &chosen).await?;
    // The rows are gone first: a trace whose files outlive it is invisible; the reverse would
    // show a trace without its spans.
    for id in &chosen {
        let files = super::artifacts::trace_files(&state, &workspace.id, id);
        if let Err(e) = files.delete_all(&RelPath::parse_dir("")?).await {
            tracing::warn!(trace = %id, error = %e, "a deleted trace's files were left behind");
        }
    }
    Ok(Json(json!({"traces_deleted": deleted})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(id: &str, at: i64, ms: Option<i64>, tags: &[(&str, &str)]) -> TraceRecord {
        TraceRecord {
            id: id.into(),
            experiment_id: "e".into(),
            request_time: at,
            execution_duration: ms,
            state: "OK".into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            metadata: [(SOURCE_RUN.to_string(), "r1".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn trace_times_in_protobuf_json() {
        assert_eq!(timestamp_ms("2025-06-01T12:00:00.250Z").unwrap(), 1_748_779_200_250);
        assert_eq!(timestamp_ms("2025-06-01T14:00:00.250+02:00").unwrap(), 1_748_779_200_250);
        assert_eq!(duration_ms("1.5s").unwrap(), 1500);
        assert_eq!(duration_ms("0.005s").unwrap(), 5);
        assert_eq!(duration_ms("3s").unwrap(), 3000);
        for bad in ["1.5", "-1s", "s", "infs", "1.5ms"] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
        assert!(timestamp_ms("yesterday").is_err());
        let t = trace("tr-1", 1_748_779_200_250, Some(1005), &[]);
        let j = trace_info_json(&t, &ExperimentIds::default());
        assert_eq!(j["request_time"], "2025-06-01T12:00:00.250Z");
        assert_eq!(j["execution_duration"], "1.005s");
        assert_eq!(j["trace_location"]["mlflow_experiment"]["experiment_id"], "e");
        assert!(j.get("client_request_id").is_none());
        assert_eq!(state_name(Some(&json!(2))).unwrap(), "ERROR");
        assert!(state_name(Some(&json!("DONE"))).is_err());
    }

    #[test]
    fn trace_ids_are_one_path_segment() {
        for ok in ["tr-0123456789abcdef0123456789abcdef", "a", "req_1.2"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", ".x", "a/b", "a\\b", "tr 1", &"x".repeat(129), "a\0"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
