//! MLflow's wire format: requests (a JSON body, or the query string of a GET, both read into one
//! map), errors (`{"error_code", "message"}`, which the client turns into `MlflowException`) and
//! the JSON of experiments and runs.

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::runs::{KeyValue, Run, RunStatus};
use cairn_core::Error;
use cairn_store::{LoggedModel, MlflowExperiment, MlflowRunMeta, RunIo};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// An error as the MLflow client expects it.
#[derive(Debug)]
pub struct MlError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

pub type MlResult<T> = Result<T, MlError>;

pub const INVALID_PARAMETER_VALUE: &str = "INVALID_PARAMETER_VALUE";
pub const RESOURCE_DOES_NOT_EXIST: &str = "RESOURCE_DOES_NOT_EXIST";
pub const RESOURCE_ALREADY_EXISTS: &str = "RESOURCE_ALREADY_EXISTS";
pub const INVALID_STATE: &str = "INVALID_STATE";

impl MlError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> MlError {
        MlError { status, code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> MlError {
        MlError::new(StatusCode::BAD_REQUEST, INVALID_PARAMETER_VALUE, message)
    }
    pub fn already_exists(message: impl Into<String>) -> MlError {
        MlError::new(StatusCode::BAD_REQUEST, RESOURCE_ALREADY_EXISTS, message)
    }
    pub fn does_not_exist(message: impl Into<String>) -> MlError {
        MlError::new(StatusCode::NOT_FOUND, RESOURCE_DOES_NOT_EXIST, message)
    }
}

impl From<Error> for MlError {
    fn from(e: Error) -> MlError {
        let (status, code) = match &e {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, INVALID_PARAMETER_VALUE),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, RESOURCE_DOES_NOT_EXIST),
            Error::Conflict(_) => (StatusCode::BAD_REQUEST, INVALID_STATE),
            Error::TooLarge(_) | Error::Unprocessable(_) => {
                (StatusCode::BAD_REQUEST, INVALID_PARAMETER_VALUE)
            }
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
            Error::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "RESOURCE_EXHAUSTED"),
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
            }
        };
        MlError { status, code, message: e.to_string() }
    }
}

impl IntoResponse for MlError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error_code": self.code, "message": self.message}))).into_response()
    }
}

/// A request's fields: the JSON body of a POST, or the query string of a GET (repeated keys
/// become lists). Unknown fields are ignored, as MLflow's server does.
pub struct Req(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = MlError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.method() == Method::GET {
            let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
                .map_err(|e| MlError::invalid(format!("bad query string: {e}")))?;
            let mut map = Map::new();
            for (k, v) in pairs {
                match map.get_mut(&k) {
                    Some(Value::Array(a)) => a.push(Value::String(v)),
                    Some(old) => *old = Value::Array(vec![old.take(), Value::String(v)]),
                    None => {
                        map.insert(k, Value::String(v));
                    }
                }
            }
            return Ok(Req(map));
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| MlError::invalid(format!("cannot read the request body: {e}")))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Req(Map::new()));
        }
        match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => Ok(Req(map)),
            Ok(_) => Err(MlError::invalid("the request body must be a JSON object")),
            Err(e) => Err(MlError::invalid(format!("the request body is not valid JSON: {e}"))),
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn missing(key: &str) -> MlError {
    MlError::invalid(format!("Missing value for required parameter '{key}'."))
}

impl Req {
    pub fn opt_str(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(text)
    }

    /// A required, non-empty field.
    pub fn str(&self, key: &str) -> MlResult<String> {
        self.opt_str(key).filter(|s| !s.is_empty()).ok_or_else(|| missing(key))
    }

    /// `run_id`, or the older `run_uuid` that clients still send.
    pub fn run_id(&self) -> MlResult<String> {
        self.str("run_id").or_else(|_| self.str("run_uuid")).map_err(|_| missing("run_id"))
    }

    /// An integer field (JSON number or, as protobuf's JSON writes int64, a string).
    pub fn opt_i64(&self, key: &str) -> MlResult<Option<i64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).map(Some).ok_or_else(|| not_int(key))
            }
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| not_int(key)),
            Some(_) => Err(not_int(key)),
        }
    }

    /// A list of strings (a lone string counts as a list of one).
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.0.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(text).collect(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    pub fn array(&self, key: &str) -> &[Value] {
        match self.0.get(key) {
            Some(Value::Array(a)) => a,
            _ => &[],
        }
    }

    /// `[{"key": …, "value": …}]`.
    pub fn key_values(&self, key: &str) -> MlResult<Vec<KeyValue>> {
        self.array(key).iter().map(key_value).collect()
    }
}

fn not_int(key: &str) -> MlError {
    MlError::invalid(format!("parameter '{key}' must be an integer"))
}

pub fn key_value(v: &Value) -> MlResult<KeyValue> {
    let key = v.get("key").and_then(text).filter(|k| !k.is_empty()).ok_or_else(|| missing("key"))?;
    let value = v.get("value").and_then(text).unwrap_or_default();
    Ok(KeyValue { key, value })
}

/// A metric value: a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (or any number as text).
pub fn metric_value(v: Option<&Value>) -> MlResult<f64> {
    match v {
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| MlError::invalid("metric value is not a number")),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            other => {
                other.parse().map_err(|_| MlError::invalid(format!("metric value {other:?} is not a number")))
            }
        },
        _ => Err(missing("value")),
    }
}

/// A float as MLflow writes it: NaN and infinities as strings.
pub fn number(v: f64) -> Value {
    cairn_core::runs::float_json::serialize(&v, serde_json::value::Serializer)
        .expect("a double always makes a JSON value")
}

/// Cairn's run status in MLflow's words.
pub fn status_to_mlflow(s: RunStatus) -> &'static str {
    match s {
        RunStatus::NotStarted | RunStatus::Queued => "SCHEDULED",
        RunStatus::Preparing | RunStatus::Starting | RunStatus::Running | RunStatus::Finalizing => "RUNNING",
        RunStatus::Completed => "FINISHED",
        RunStatus::Failed => "FAILED",
        RunStatus::Canceled => "KILLED",
    }
}

/// MLflow's run status in Cairn's words.
pub fn status_from_mlflow(s: &str) -> Option<RunStatus> {
    Some(match s {
        "RUNNING" => RunStatus::Running,
        "SCHEDULED" => RunStatus::Queued,
        "FINISHED" => RunStatus::Completed,
        "FAILED" => RunStatus::Failed,
        "KILLED" => RunStatus::Canceled,
        _ => return None,
    })
}

fn lifecycle(deleted_at: Option<i64>) -> &'static str {
    if deleted_at.is_some() {
        "deleted"
    } else {
        "active"
    }
}

/// An experiment's `last_update_time`: its deletion or restoration is the one change recorded.
pub fn last_update_time(e: &MlflowExperiment) -> i64 {
    e.deleted_at.unwrap_or(e.created_at)
}

/// The ids MLflow's clients know experiments by. MLflow's default experiment is `"0"`; here it is
/// the workspace's experiment named `Default`, which `"0"` names on the way in
/// (`experiments::experiment`) and which is shown as `"0"` on the way out, since clients compare
/// ids with the `"0"` they fall back to when no experiment is set: `search_traces(run_id=…)`
/// refuses a run whose experiment is not among the locations it searched. Artifact locations
/// keep the real id: they are addresses, not compared.
#[derive(Clone, Debug, Default)]
pub struct ExperimentIds {
    default: Option<String>,
}

impl ExperimentIds {
    pub fn with_default(default: Option<String>) -> ExperimentIds {
        ExperimentIds { default }
    }

    pub fn shown<'a>(&self, id: &'a str) -> &'a str {
        if self.default.as_deref() == Some(id) {
            "0"
        } else {
            id
        }
    }
}

pub fn experiment_json(e: &MlflowExperiment, ids: &ExperimentIds) -> Value {
    json!({
        "experiment_id": ids.shown(&e.id),
        "name": e.name,
        "artifact_location": format!("mlflow-artifacts:/{}", e.id),
        "lifecycle_stage": lifecycle(e.deleted_at),
        "creation_time": e.created_at,
        "last_update_time": last_update_time(e),
        "tags": e.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    })
}

/// The tag that holds a run's name in MLflow (Cairn's `display_name`).
pub const RUN_NAME_TAG: &str = "mlflow.runName";

/// A run's `RunInfo`.
#[derive(Serialize)]
pub struct RunInfoView<'a> {
    run_id: &'a str,
    run_uuid: &'a str,
    experiment_id: &'a str,
    run_name: &'a str,
    status: &'static str,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    lifecycle_stage: &'static str,
    artifact_uri: String,
    user_id: &'a str,
}

pub fn run_info_json<'a>(run: &'a Run, meta: &'a MlflowRunMeta, ids: &ExperimentIds) -> RunInfoView<'a> {
    RunInfoView {
        run_id: &run.id,
        run_uuid: &run.id,
        experiment_id: ids.shown(&meta.experiment_id),
        run_name: &run.display_name,
        status: status_to_mlflow(run.status),
        start_time: run.started_at.unwrap_or(run.created_at),
        end_time: run.ended_at,
        lifecycle_stage: lifecycle(meta.deleted_at),
        artifact_uri: cairn_store::run_artifact_uri(&meta.experiment_id, &run.id),
        user_id: run.created_by.as_deref().or(run.tags.get("mlflow.user").map(String::as_str)).unwrap_or(""),
    }
}

/// A run's `inputs` (datasets, models it used) and `outputs` (models it produced).
fn run_io_json(io: Option<&RunIo>) -> (Value, Value) {
    let Some(io) = io else { return (json!({}), json!({})) };
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let datasets: Vec<Value> = io
        .datasets
        .iter()
        .map(|d| json!({"tags": parse(&d.tags_json), "dataset": parse(&d.dataset_json)}))
        .collect();
    let inputs: Vec<Value> =
        io.models.iter().filter(|m| !m.output).map(|m| json!({"model_id": m.model_id})).collect();
    let outputs: Vec<Value> = io
        .models
        .iter()
        .filter(|m| m.output)
        .map(|m| json!({"model_id": m.model_id, "step": m.step}))
        .collect();
    (json!({"dataset_inputs": datasets, "model_inputs": inputs}), json!({"model_outputs": outputs}))
}

/// A run as MLflow's `Run` message, serialised straight from the store's record: a page of a
/// search holds thousands of metrics, params and tags, and building a `Value` for each cost half
/// the server's CPU for a page of 1,000 runs (`bench/mlflow_search_page.py`).
#[derive(Serialize)]
pub struct RunView<'a> {
    info: RunInfoView<'a>,
    data: RunData<'a>,
    inputs: Value,
    outputs: Value,
}

#[derive(Serialize)]
struct RunData<'a> {
    metrics: Vec<MetricView<'a>>,
    params: Vec<KeyValueView<'a>>,
    tags: Vec<KeyValueView<'a>>,
}

#[derive(Serialize)]
struct MetricView<'a> {
    key: &'a str,
    #[serde(serialize_with = "cairn_core::runs::float_json::serialize")]
    value: f64,
    timestamp: i64,
    step: i64,
}

#[derive(Serialize)]
struct KeyValueView<'a> {
    key: &'a str,
    value: &'a str,
}

pub fn run_json<'a>(
    run: &'a Run,
    meta: &'a MlflowRunMeta,
    io: Option<&RunIo>,
    ids: &ExperimentIds,
) -> RunView<'a> {
    let kv = |(key, value): (&'a String, &'a String)| KeyValueView { key, value };
    let metrics = run
        .metrics
        .iter()
        .map(|(key, m)| MetricView { key, value: m.value, timestamp: m.timestamp, step: m.step })
        .collect();
    let params = run.params.iter().map(kv).collect();
    let mut tags: Vec<KeyValueView> =
        run.tags.iter().filter(|(k, _)| k.as_str() != RUN_NAME_TAG).map(kv).collect();
    if !run.display_name.is_empty() {
        tags.push(KeyValueView { key: RUN_NAME_TAG, value: &run.display_name });
    }
    if let Some(parent) = &run.parent_id {
        if !run.tags.contains_key("mlflow.parentRunId") {
            tags.push(KeyValueView { key: "mlflow.parentRunId", value: parent });
        }
    }
    let (inputs, outputs) = run_io_json(io);
    RunView { info: run_info_json(run, meta, ids), data: RunData { metrics, params, tags }, inputs, outputs }
}

/// MLflow's status names for logged models.
pub const LOGGED_MODEL_STATUSES: [&str; 3] =
    ["LOGGED_MODEL_PENDING", "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"];

pub fn logged_model_json(m: &LoggedModel, ids: &ExperimentIds) -> Value {
    let kv = |map: &std::collections::BTreeMap<String, String>| -> Vec<Value> {
        map.iter().map(|(k, v)| json!({"key": k, "value": v})).collect()
    };
    json!({
        "info": {
            "model_id": m.id,
            "experiment_id": ids.shown(&m.experiment_id),
            "name": m.name,
            "creation_timestamp_ms": m.created_at,
            "last_updated_timestamp_ms": m.updated_at,
            "artifact_uri": format!("mlflow-artifacts:/{}/models/{}/artifacts", m.experiment_id, m.id),
            "status": m.status,
            "model_type": m.model_type,
            "source_run_id": m.source_run_id,
            "status_message": m.status_message,
            "tags": kv(&m.tags),
        },
        "data": {
            "params": kv(&m.params),
            "metrics": m.metrics.iter().map(|p| {
                let mut metric = json!({
                    "key": p.key,
                    "value": number(p.value),
                    "timestamp": p.timestamp,
                    "step": p.step,
                    "run_id": p.run_id,
                    "model_id": p.model_id,
                });
                // Absent, as MLflow writes a metric measured on no dataset.
                for (field, v) in [("dataset_name", &p.dataset_name), ("dataset_digest", &p.dataset_digest)] {
                    if !v.is_empty() {
                        metric[field] = json!(v);
                    }
                }
                metric
            }).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact JSON of MLflow's `Run` message, which the stock client parses into its protobuf:
    /// non-finite metric values as MLflow's strings, the run name and parent as tags, `end_time`
    /// only once the run ended.
    #[test]
    fn a_run_is_written_as_mlflow_writes_it() {
        let run: Run = serde_json::from_value(json!({
            "id": "r1", "workspace": "w", "experiment": "e", "display_name": "wine",
            "status": "Completed", "parent_id": "p0", "created_at": 10, "started_at": 11,
            "ended_at": 12, "params": {"alpha": "0.5"}, "tags": {"mlflow.user": "ada", "model": "tree"},
            "metrics": {
                "nan": {"value": "NaN", "step": 1, "timestamp": 5},
                "inf": {"value": "-Infinity", "step": 2, "timestamp": 6},
                "rmse": {"value": 0.1, "step": 3, "timestamp": 7},
            },
        }))
        .unwrap();
        let meta = MlflowRunMeta { experiment_id: "4".into(), deleted_at: None };
        let got = serde_json::to_value(run_json(&run, &meta, None, &ExperimentIds::default())).unwrap();
        let want = json!({
            "info": {
                "run_id": "r1", "run_uuid": "r1", "experiment_id": "4", "run_name": "wine",
                "status": "FINISHED", "start_time": 11, "end_time": 12, "lifecycle_stage": "active",
                "artifact_uri": "mlflow-artifacts:/4/r1/artifacts", "user_id": "ada",
            },
            "data": {
                "metrics": [
                    {"key": "inf", "value": "-Infinity", "timestamp": 6, "step": 2},
                    {"key": "nan", "value": "NaN", "timestamp": 5, "step": 1},
                    {"key": "rmse", "value": 0.1, "timestamp": 7, "step": 3},
                ],
                "params": [{"key": "alpha", "value": "0.5"}],
                "tags": [
                    {"key": "mlflow.user", "value": "ada"},
                    {"key": "model", "value": "tree"},
                    {"key": "mlflow.runName", "value": "wine"},
                    {"key": "mlflow.parentRunId", "value": "p0"},
                ],
            },
            "inputs": {},
            "outputs": {},
        });
        assert_eq!(got, want);

        let running = Run { ended_at: None, started_at: None, ..run };
        let info = serde_json::to_value(run_info_json(&running, &meta, &ExperimentIds::default())).unwrap();
        assert_eq!(info["start_time"], 10, "a run not started yet starts when it was created");
        assert!(info.get("end_time").is_none(), "{info}");
    }
}
