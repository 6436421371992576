//! `runs/*` and `metrics/get-history`: runs, their tracking data, search.

use std::collections::BTreeMap;

use axum::response::IntoResponse;
use axum::Json;
use cairn_core::api::{Role, Workspace};
use cairn_core::runs::{KeyValue, LogBatch, LogMetric, Run, RunStatus};
use cairn_core::search::{Entity, Value as FilterValue};
use cairn_store::{MlflowRunMeta, NewRun, RunDataset, RunModel, RunScope};
use serde_json::{json, Value};

use super::experiments::{experiment, experiment_ids, page_offset};
use super::wire::*;
use super::Ctx;
use crate::auth::Caller;
use crate::routes::runs::validate_batch;
use crate::state::AppState;

/// A run with what its MLflow view needs; 404 `RESOURCE_DOES_NOT_EXIST` if it is not in `ws`.
pub(super) async fn load(state: &AppState, ws: &Workspace, id: &str) -> MlResult<(Run, MlflowRunMeta)> {
    let run = state
        .store
        .run(ws, id)
        .await
        .map_err(|_| MlError::does_not_exist(format!("Run with id={id} not found")))?;
    let meta = state
        .store
        .mlflow_run_meta(std::slice::from_ref(&run.id))
        .await?
        .remove(&run.id)
        .ok_or_else(|| MlError::does_not_exist(format!("Run with id={id} not found")))?;
    Ok((run, meta))
}

pub async fn create(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let mut tags: BTreeMap<String, String> =
        req.key_values("tags")?.into_iter().map(|t| (t.key, t.value)).collect();
    let batch = LogBatch {
        tags: tags.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
        ..Default::default()
    };
    validate_batch(&batch)?;
    let name_tag = tags.remove(RUN_NAME_TAG);
    // As MLflow's store: the client's name, else its tag, else a generated one, so that every
    // MLflow run has a name (and the `mlflow.runName` tag the UI and `search_runs` columns show).
    let name = req
        .opt_str("run_name")
        .filter(|n| !n.is_empty())
        .or(name_tag.filter(|n| !n.is_empty()))
        .unwrap_or_else(super::run_names::generate);
    let workspace = state.store.workspace(&ws).await?;
    let exp =
        experiment(&state, &workspace, &req.opt_str("experiment_id").unwrap_or_else(|| "0".into())).await?;
    if exp.deleted_at.is_some() {
        return Err(MlError::new(
            axum::http::StatusCode::BAD_REQUEST,
            INVALID_STATE,
            format!("The experiment {} must be in the 'active' state.", exp.id),
        ));
    }
    let parent = tags.get("mlflow.parentRunId").cloned();
    if let Some(p) = &parent {
        load(&state, &workspace, p).await?;
    }
    // MLflow keeps the `user_id` the client sends (the stock client: its `mlflow.user` tag, or
    // "unknown"); a request without one is the caller's.
    let user = req.opt_str("user_id").filter(|u| !u.is_empty()).unwrap_or_else(|| caller.token.name.clone());
    let id = state
        .store
        .create_run(
            &workspace,
            NewRun {
                experiment_id: &exp.id,
                display_name: &name,
                status: RunStatus::Running,
                job: None,
                compute: None,
                environment: None,
                parent_id: parent.as_deref(),
                created_by: Some(&user),
                tags: &tags,
                started_at: req.opt_i64("start_time")?.filter(|t| *t > 0),
            },
        )
        .await?;
    let (run, meta) = load(&state, &workspace, &id).await?;
    let ids = experiment_ids(&state, &workspace).await?;
    Ok(Json(json!({"run": run_json(&run, &meta, None, &ids)})))
}

pub async fn get(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Reader, &ws, &id)?;
    let workspace = state.store.workspace(&ws).await?;
    let (run, meta) = load(&state, &workspace, &id).await?;
    let io = state.store.run_inputs_outputs(std::slice::from_ref(&run.id)).await?;
    let ids = experiment_ids(&state, &workspace).await?;
    Ok(Json(json!({"run": run_json(&run, &meta, io.get(&run.id), &ids)})))
}

/// Ends or renames a run. A job's status belongs to its runner: the client's `end_run` in a
/// job changes nothing there.
pub async fn update(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Writer, &ws, &id)?;
    let status = match req.opt_str("status").filter(|s| !s.is_empty()) {
        Some(s) => Some(status_from_mlflow(&s).ok_or_else(|| {
            MlError::invalid(format!(
                "unknown run status {s:?}: RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"
            ))
        })?),
        None => None,
    };
    let workspace = state.store.workspace(&ws).await?;
    let (current, _) = load(&state, &workspace, &id).await?;
    if let Some(name) = req.opt_str("run_name").filter(|n| !n.is_empty()) {
        state.store.set_run_display_name(&id, &name).await?;
    }
    // A job's run is its job's to end; any other run takes the status as MLflow's server does:
    // an ended one may be resumed (`start_run(run_id=…)`) or said to have ended otherwise.
    if let Some(to) = status.filter(|to| current.job.is_none() && *to != current.status) {
        let at = req.opt_i64("end_time")?.filter(|t| *t > 0).unwrap_or_else(cairn_core::now_ms);
        state.store.set_run_status(&id, to, at).await?;
    }
    let (run, meta) = load(&state, &workspace, &id).await?;
    let ids = experiment_ids(&state, &workspace).await?;
    Ok(Json(json!({"run_info": run_info_json(&run, &meta, &ids)})))
}

async fn set_deleted(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    req: &Req,
    deleted: bool,
) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Writer, ws, &id)?;
    let workspace = state.store.workspace(ws).await?;
    load(state, &workspace, &id).await?;
    state.store.set_run_deleted(&id, deleted).await?;
    Ok(Json(json!({})))
}

pub async fn delete(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    set_deleted(&state, &caller, &ws, &req, true).await
}

pub async fn restore(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    set_deleted(&state, &caller, &ws, &req, false).await
}

/// Logs a batch to a run: the native API's validation and store; `mlflow.runName` renames.
/// Metrics sent with a `model_id` also become points of that logged model (same transaction).
async fn log(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    run_id: &str,
    mut batch: LogBatch,
    links: Vec<ModelLink>,
) -> MlResult<Json<Value>> {
    caller.require_run(Role::Writer, ws, run_id)?;
    truncate_long_values(&mut batch);
    validate_batch(&batch)?;
    let workspace = state.store.workspace(ws).await?;
    loggable(state, &workspace, run_id).await?;
    let model_metrics = model_metrics(state, &workspace, run_id, &mut batch, links).await?;
    if let Some(name) = batch.tags.iter().rev().find(|t| t.key == RUN_NAME_TAG).map(|t| t.value.clone()) {
        state.store.set_run_display_name(run_id, &name).await?;
        batch.tags.retain(|t| t.key != RUN_NAME_TAG);
    }
    state.store.log_batch_with_model_metrics(run_id, &batch, &model_metrics).await?;
    Ok(Json(json!({})))
}

/// The longest run tag value MLflow's store keeps from `set-tag` and `log-batch`, in characters.
const MAX_TAG_VALUE_LEN: usize = 8000;

/// Cuts param values past `MAX_PARAM_VALUE_LEN` (6,000) characters and tag values past
/// `MAX_TAG_VALUE_LEN` to those lengths, as MLflow 3's server does by default
/// (`MLFLOW_TRUNCATE_LONG_VALUES`) where the native API refuses them. A param logged again
/// with a long value is the same param when the cut values are equal, as there. Tags given to
/// `runs/create` are kept whole, as MLflow keeps them.
fn truncate_long_values(batch: &mut LogBatch) {
    let cut = |value: &mut String, max: usize| {
        if value.len() > max {
            if let Some((end, _)) = value.char_indices().nth(max) {
                value.truncate(end);
            }
        }
    };
    for p in &mut batch.params {
        cut(&mut p.value, cairn_core::runs::MAX_PARAM_VALUE_LEN);
    }
    for t in &mut batch.tags {
        cut(&mut t.value, MAX_TAG_VALUE_LEN);
    }
}

/// The logged model (and dataset) an MLflow metric was sent with; `index` is the metric's place
/// in its batch.
struct ModelLink {
    index: usize,
    model_id: String,
    dataset_name: String,
    dataset_digest: String,
}

/// The model points of a batch's linked metrics, each model checked to be in `ws` (404 naming
/// it otherwise, before anything is written). A linked metric without a timestamp gets one
/// here, so that the run's point and the model's are the same point.
async fn model_metrics(
    state: &AppState,
    ws: &Workspace,
    run_id: &str,
    batch: &mut LogBatch,
    links: Vec<ModelLink>,
) -> MlResult<Vec<cairn_store::ModelMetric>> {
    let mut checked = std::collections::BTreeSet::new();
    for link in &links {
        if checked.insert(link.model_id.as_str())
            && !state.store.logged_model_exists(ws, &link.model_id).await?
        {
            return Err(MlError::does_not_exist(format!(
                "Logged model with ID '{}' not found.",
                link.model_id
            )));
        }
    }
    let now = cairn_core::now_ms();
    Ok(links
        .into_iter()
        .map(|link| {
            let m = &mut batch.metrics[link.index];
            let timestamp = *m.timestamp.get_or_insert(now);
            cairn_store::ModelMetric {
                model_id: link.model_id,
                key: m.key.clone(),
                value: m.value,
                timestamp,
                step: m.step.unwrap_or(0),
                run_id: run_id.to_string(),
                dataset_name: link.dataset_name,
                dataset_digest: link.dataset_digest,
            }
        })
        .collect())
}

/// One MLflow `Metric`, and its link to a logged model when it names one.
fn metric(index: usize, v: &Value) -> MlResult<(LogMetric, Option<ModelLink>)> {
    let key = v.get("key").and_then(Value::as_str).filter(|k| !k.is_empty());
    let key = key.ok_or_else(|| MlError::invalid("Missing value for required parameter 'key'."))?;
    let fields = Req(v.as_object().cloned().unwrap_or_default());
    let metric = LogMetric {
        key: key.into(),
        value: metric_value(v.get("value"))?,
        step: fields.opt_i64("step")?,
        timestamp: fields.opt_i64("timestamp")?,
    };
    let link = fields.opt_str("model_id").filter(|m| !m.is_empty()).map(|model_id| ModelLink {
        index,
        model_id,
        dataset_name: fields.opt_str("dataset_name").unwrap_or_default(),
        dataset_digest: fields.opt_str("dataset_digest").unwrap_or_default(),
    });
    Ok((metric, link))
}

pub async fn log_metric(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let run = req.run_id()?;
    let (m, link) = metric(0, &Value::Object(req.0))?;
    let batch = LogBatch { metrics: vec![m], ..Default::default() };
    log(&state, &caller, &ws, &run, batch, link.into_iter().collect()).await
}

pub async fn log_param(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let run = req.run_id()?;
    let p = key_value(&Value::Object(req.0))?;
    log(&state, &caller, &ws, &run, LogBatch { params: vec![p], ..Default::default() }, Vec::new()).await
}

pub async fn set_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let run = req.run_id()?;
    let t = key_value(&Value::Object(req.0))?;
    log(&state, &caller, &ws, &run, LogBatch { tags: vec![t], ..Default::default() }, Vec::new()).await
}

pub async fn log_batch(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let run = req.run_id()?;
    let mut metrics = Vec::new();
    let mut links = Vec::new();
    for (i, v) in req.array("metrics").iter().enumerate() {
        let (m, link) = metric(i, v)?;
        metrics.push(m);
        links.extend(link);
    }
    let batch = LogBatch { metrics, params: req.key_values("params")?, tags: req.key_values("tags")? };
    log(&state, &caller, &ws, &run, batch, links).await
}

pub async fn delete_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Writer, &ws, &id)?;
    let key = req.str("key")?;
    let workspace = state.store.workspace(&ws).await?;
    load(&state, &workspace, &id).await?;
    if !state.store.delete_run_tag(&id, &key).await? {
        return Err(MlError::does_not_exist(format!("No tag with name: {key} in run with id {id}")));
    }
    Ok(Json(json!({})))
}

/// The largest `max_results` MLflow's run search accepts.
const MAX_RESULTS: i64 = 50_000;

/// Searches the runs of some experiments with MLflow's filter grammar (Cairn's own parser and query).
pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<axum::response::Response> {
    caller.require(Role::Reader, Some(&ws))?;
    let filter = req.opt_str("filter").unwrap_or_default();
    let mut clauses = cairn_core::search::parse_filter(&filter)
        .map_err(|e| MlError::invalid(format!("Invalid filter {filter:?}: {e}")))?;
    // MLflow's status names, stored as Cairn's.
    for c in clauses.iter_mut().filter(|c| c.entity == Entity::Attribute && c.key == "status") {
        if let FilterValue::Text(t) = &c.value {
            if let Some(s) = status_from_mlflow(t) {
                c.value = FilterValue::Text(s.as_str().into());
            }
        }
    }
    let mut order = cairn_core::search::parse_order_by(&req.list("order_by"))?;
    // MLflow's `created` (its UI's column) is the run's start time, not when the record was
    // made: they differ for a run whose client gave its start time.
    let keys = clauses.iter_mut().map(|c| (c.entity, &mut c.key));
    for (_, key) in keys
        .chain(order.iter_mut().map(|o| (o.entity, &mut o.key)))
        .filter(|(e, k)| *e == Entity::Attribute && matches!(k.as_str(), "created" | "Created"))
    {
        *key = "start_time".into();
    }
    let deleted = match req.opt_str("run_view_type").as_deref().unwrap_or("ACTIVE_ONLY") {
        "ACTIVE_ONLY" | "" | "1" => Some(false),
        "DELETED_ONLY" | "2" => Some(true),
        "ALL" | "3" => None,
        other => {
            return Err(MlError::invalid(format!(
            "Invalid value {other} for parameter 'run_view_type' supplied: ACTIVE_ONLY, DELETED_ONLY or ALL"
        )))
        }
    };
    // MLflow accepts up to 50,000 per page; a shorter page with a token is what its client
    // expects from any server, so pages are served at the store's size.
    let limit = match req.opt_i64("max_results")?.unwrap_or(1000) {
        n if (1..=MAX_RESULTS).contains(&n) => n.min(cairn_store::MAX_PAGE_SIZE),
        n => {
            return Err(MlError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied: from 1 to {MAX_RESULTS}"
            )))
        }
    };
    let offset = page_offset(&req)? as i64;
    let workspace = state.store.workspace(&ws).await?;
    let mut exp_ids = Vec::new();
    for id in req.list("experiment_ids") {
        exp_ids.push(experiment(&state, &workspace, &id).await?.id);
    }
    if exp_ids.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'experiment_ids'."));
    }
    let scope = RunScope {
        experiment_names: Vec::new(),
        experiment_ids: &exp_ids,
        deleted,
        status_sort_key: Some(status_to_mlflow),
    };
    let (runs, more) =
        state.store.search_runs_in(&workspace, &scope, &clauses, &order, offset, limit).await?;
    let run_ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let (meta, io, ids) = tokio::try_join!(
        async { Ok::<_, MlError>(state.store.mlflow_run_meta(&run_ids).await?) },
        async { Ok(state.store.run_inputs_outputs(&run_ids).await?) },
        experiment_ids(&state, &workspace),
    )?;
    let page = SearchRunsPage {
        runs: runs
            .iter()
            .filter_map(|run| meta.get(&run.id).map(|m| run_json(run, m, io.get(&run.id), &ids)))
            .collect(),
        next_page_token: more.then(|| (offset + limit).to_string()),
    };
    // Written straight to bytes: a page holds up to 1,000 runs.
    let body = serde_json::to_vec(&page)
        .map_err(|e| cairn_core::Error::internal(format!("cannot encode a page of runs: {e}")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(serde::Serialize)]
struct SearchRunsPage<'a> {
    runs: Vec<RunView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// `metrics/get-history`: a metric's points ordered as MLflow orders them (timestamp, step,
/// value). Without `max_results` every point at once; with it (a positive number), pages of
/// that many and a `next_page_token` while more follow, as MLflow's client pages (25,000).
pub async fn metric_history(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Reader, &ws, &id)?;
    let key = req.str("metric_key")?;
    let limit = req.opt_i64("max_results")?;
    if let Some(n) = limit.filter(|n| *n <= 0) {
        return Err(MlError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer."
        )));
    }
    let offset = page_offset(&req)? as i64;
    let workspace = state.store.workspace(&ws).await?;
    load(&state, &workspace, &id).await?;
    let (points, more) = state.store.metric_history_page(&id, &key, offset, limit).await?;
    let metrics: Vec<Value> = points
        .iter()
        .map(|p| json!({"key": key, "value": number(p.value), "timestamp": p.timestamp, "step": p.step}))
        .collect();
    let mut page = json!({"metrics": metrics});
    if let (true, Some(n)) = (more, limit) {
        page["next_page_token"] = json!(offset.saturating_add(n).to_string());
    }
    Ok(Json(page))
}

/// A run that may still be logged to: not deleted (MLflow refuses those with INVALID_PARAMETER_VALUE).
async fn loggable(state: &AppState, ws: &Workspace, id: &str) -> MlResult<()> {
    let (_, meta) = load(state, ws, id).await?;
    active(id, &meta)
}

/// [`loggable`] for a run already loaded.
fn active(id: &str, meta: &MlflowRunMeta) -> MlResult<()> {
    if meta.deleted_at.is_some() {
        return Err(MlError::invalid(format!(
            "The run {id} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(())
}

/// The run tag in which MLflow keeps the models a run logged, as a JSON list (`runs/log-model`).
const LOGGED_MODELS_TAG: &str = "mlflow.log-model.history";

/// `runs/log-model`: MLflow 2's record of a model a run logged (its `MLmodel` as a dict), which
/// mlflow 2.x clients send on every `log_model`; appended to the run's
/// `mlflow.log-model.history` tag, as MLflow's store does (a read, then a write of the whole
/// list: two records sent at once to one run may keep one, as there).
pub async fn log_model(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    let text = req.str("model_json")?;
    let model: Value = serde_json::from_str(&text)
        .map_err(|_| MlError::invalid(format!("Malformed model info. \n {text} \n is not a valid JSON.")))?;
    let Some(fields) = model.as_object() else {
        return Err(MlError::invalid(format!("Malformed model info. \n {text} \n is not a JSON object.")));
    };
    let mut missing: Vec<&str> = ["artifact_path", "flavors", "utc_time_created", "run_id"]
        .into_iter()
        .filter(|f| !fields.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(MlError::invalid(format!("Model json is missing mandatory fields: {missing:?}")));
    }
    caller.require_run(Role::Writer, &ws, &id)?;
    let workspace = state.store.workspace(&ws).await?;
    let (run, meta) = load(&state, &workspace, &id).await?;
    active(&id, &meta)?;
    let mut history = match run.tags.get(LOGGED_MODELS_TAG).map(|t| serde_json::from_str::<Value>(t)) {
        Some(Ok(Value::Array(list))) => list,
        // Set by hand to something else: started again, as MLflow would fail to read it.
        _ => Vec::new(),
    };
    history.push(model);
    let value = Value::Array(history).to_string();
    if value.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(MlError::invalid(format!(
            "Tag value '{LOGGED_MODELS_TAG}' had length {}, which exceeded length limit of {MAX_TAG_VALUE_LEN}",
            value.chars().count()
        )));
    }
    // The run is loaded and checked above, and the one tag's key and length too: stored as is.
    let tag = KeyValue { key: LOGGED_MODELS_TAG.to_string(), value };
    state.store.log_batch(&id, &LogBatch { tags: vec![tag], ..Default::default() }).await?;
    Ok(Json(json!({})))
}

/// `runs/outputs`: models a run produced (MLflow 3's `log_model` links each one here).
pub async fn log_outputs(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Writer, &ws, &id)?;
    let mut models = Vec::new();
    for m in req.array("models") {
        let m = Req(m.as_object().cloned().unwrap_or_default());
        models.push(RunModel {
            model_id: m.str("model_id")?,
            output: true,
            step: m.opt_i64("step")?.unwrap_or(0),
        });
    }
    let workspace = state.store.workspace(&ws).await?;
    loggable(&state, &workspace, &id).await?;
    known_models(&state, &workspace, &models).await?;
    state.store.link_run_models(&id, &models).await?;
    Ok(Json(json!({})))
}

/// Every model a run links to must exist in the workspace (checked before anything is written).
async fn known_models(state: &AppState, ws: &Workspace, models: &[RunModel]) -> MlResult<()> {
    for m in models {
        state.store.logged_model(ws, &m.model_id).await.map_err(|_| {
            MlError::does_not_exist(format!("Logged model with ID '{}' not found.", m.model_id))
        })?;
    }
    Ok(())
}

/// `runs/log-inputs`: datasets (with their tags) and models a run used.
pub async fn log_inputs(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Writer, &ws, &id)?;
    let mut datasets = Vec::new();
    for d in req.array("datasets") {
        let dataset =
            d.get("dataset").and_then(Value::as_object).cloned().ok_or_else(|| {
                MlError::invalid("Missing value for required parameter 'datasets.dataset'.")
            })?;
        let fields = Req(dataset.clone());
        for required in ["name", "digest", "source_type", "source"] {
            fields.str(required).map_err(|_| {
                MlError::invalid(format!("Missing value for required parameter 'dataset.{required}'."))
            })?;
        }
        let tags = Req(d.as_object().cloned().unwrap_or_default()).key_values("tags")?;
        let tags: Vec<Value> = tags.iter().map(|t| json!({"key": t.key, "value": t.value})).collect();
        datasets.push(RunDataset {
            name: fields.str("name")?,
            digest: fields.str("digest")?,
            dataset_json: Value::Object(dataset).to_string(),
            tags_json: Value::Array(tags).to_string(),
        });
    }
    let mut models = Vec::new();
    for m in req.array("models") {
        let m = Req(m.as_object().cloned().unwrap_or_default());
        models.push(RunModel { model_id: m.str("model_id")?, output: false, step: 0 });
    }
    let workspace = state.store.workspace(&ws).await?;
    loggable(&state, &workspace, &id).await?;
    known_models(&state, &workspace, &models).await?;
    state.store.log_run_datasets(&id, &datasets).await?;
    state.store.link_run_models(&id, &models).await?;
    Ok(Json(json!({})))
}

/// `metrics/get-history-bulk-interval`: one metric's history for several runs (the UI's charts),
/// limited to `start_step..=end_step`; at most `max_results` points per run, evenly sampled
/// with the first and last kept, as MLflow samples.
pub async fn metric_history_bulk_interval(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let key = req.str("metric_key")?;
    let run_ids = req.list("run_ids");
    if run_ids.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'run_ids'."));
    }
    if run_ids.len() > 100 {
        return Err(MlError::invalid(format!(
            "Invalid value {} for parameter 'run_ids' supplied: at most 100 runs",
            run_ids.len()
        )));
    }
    let start = req.opt_i64("start_step")?;
    let end = req.opt_i64("end_step")?;
    if start.is_some() != end.is_some() {
        return Err(MlError::invalid("start_step and end_step must be given together"));
    }
    let max = req.opt_i64("max_results")?.unwrap_or(320);
    if !(1..=1000).contains(&max) {
        return Err(MlError::invalid(format!("Invalid value {max} for parameter 'max_results' supplied")));
    }
    let workspace = state.store.workspace(&ws).await?;
    let mut out = Vec::new();
    for id in &run_ids {
        caller.require_run(Role::Reader, &ws, id)?;
        load(&state, &workspace, id).await?;
        let mut points = state.store.run_metrics(id).await?.remove(&key).unwrap_or_default();
        if let (Some(s), Some(e)) = (start, end) {
            points.retain(|p| p.step >= s && p.step <= e);
        }
        let n = points.len();
        let max = max as usize;
        let picked: Vec<usize> = if n <= max {
            (0..n).collect()
        } else {
            let mut idx: Vec<usize> = (0..max).map(|i| i * (n - 1) / (max - 1).max(1)).collect();
            idx.dedup();
            idx
        };
        for i in picked {
            let p = &points[i];
            out.push(json!({"key": key, "value": number(p.value), "timestamp": p.timestamp, "step": p.step, "run_id": id}));
        }
    }
    Ok(Json(json!({"metrics": out})))
}
