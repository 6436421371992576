//! `logged-models/*`: MLflow 3's logged models. `mlflow.<flavor>.log_model` creates one, uploads
//! its files to `mlflow-artifacts:/{exp}/models/{id}/artifacts` (see `artifacts.rs`), links it to
//! the run (`runs/outputs`) and finalizes it (`PATCH logged-models/{id}`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cairn_core::api::{Role, Workspace};
use cairn_core::runs::{KeyValue, LogBatch};
use cairn_core::search::{Clause, Entity, Value as FilterValue};
use cairn_store::{LoggedModel, ModelMetric, NewLoggedModel};
use serde_json::{json, Value};

use super::experiments::{experiment, experiment_ids, number_matches, page_offset, text_matches};
use super::wire::*;
use super::Ctx;
use crate::auth::Caller;
use crate::routes::runs::validate_batch;
use crate::state::AppState;

/// A logged model of `ws`, 404 in MLflow's words otherwise.
async fn load(state: &AppState, ws: &Workspace, id: &str) -> MlResult<LoggedModel> {
    state
        .store
        .logged_model(ws, id)
        .await
        .map_err(|_| MlError::does_not_exist(format!("Logged model with ID '{id}' not found.")))
}

/// Checks the caller may change model `m`: a workspace writer, or the run-scoped token of the
/// run that logged it.
fn require_write(caller: &Caller, ws: &str, m: &LoggedModel) -> MlResult<()> {
    if caller.token.run_id.is_some() && !m.source_run_id.is_empty() {
        return Ok(caller.require_run(Role::Writer, ws, &m.source_run_id)?);
    }
    Ok(caller.require(Role::Writer, Some(ws))?)
}

/// Tags and params share the native limits (key length, value length, reserved characters).
fn validate(tags: &[KeyValue], params: &[KeyValue]) -> MlResult<()> {
    Ok(validate_batch(&LogBatch { tags: tags.to_vec(), params: params.to_vec(), ..Default::default() })?)
}

pub async fn create(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let source_run = req.opt_str("source_run_id").unwrap_or_default();
    if source_run.is_empty() {
        caller.require(Role::Writer, Some(&ws))?;
    } else {
        caller.require_run(Role::Writer, &ws, &source_run)?;
    }
    let exp_id = req.str("experiment_id")?;
    let tags = req.key_values("tags")?;
    let params = req.key_values("params")?;
    validate(&tags, &params)?;
    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &exp_id).await?;
    if exp.deleted_at.is_some() {
        return Err(MlError::invalid(format!("The experiment {exp_id} must be in the 'active' state.")));
    }
    if !source_run.is_empty() {
        state
            .store
            .run(&workspace, &source_run)
            .await
            .map_err(|_| MlError::does_not_exist(format!("Run with id={source_run} not found")))?;
    }
    // MLflow names an unnamed model itself; a readable default keeps listings useful.
    let name = req.opt_str("name").filter(|n| !n.is_empty()).unwrap_or_else(|| "model".into());
    let id = state
        .store
        .create_logged_model(
            &workspace,
            NewLoggedModel {
                experiment_id: &exp.id,
                name: &name,
                model_type: &req.opt_str("model_type").unwrap_or_default(),
                source_run_id: &source_run,
                status: "LOGGED_MODEL_PENDING",
                tags: &tags,
                params: &params,
            },
        )
        .await?;
    let model = load(&state, &workspace, &id).await?;
    Ok(Json(json!({"model": logged_model_json(&model, &experiment_ids(&state, &workspace).await?)})))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    if caller.token.run_id.is_none() {
        caller.require(Role::Reader, Some(&ws))?;
    }
    let workspace = state.store.workspace(&ws).await?;
    let model = load(&state, &workspace, &id).await?;
    if caller.token.run_id.is_some() {
        caller.require_run(Role::Reader, &ws, &model.source_run_id)?;
    }
    let allow_deleted = req.opt_str("allow_deleted").is_some_and(|v| v == "true");
    if model.deleted_at.is_some() && !allow_deleted {
        return Err(MlError::does_not_exist(format!("Logged model with ID '{id}' not found.")));
    }
    Ok(Json(json!({"model": logged_model_json(&model, &experiment_ids(&state, &workspace).await?)})))
}

/// `PATCH logged-models/{id}`: sets the final status (READY or UPLOAD_FAILED).
pub async fn finalize(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let status = req.str("status")?;
    // protobuf's JSON may carry the enum as its number.
    let status = match status.as_str() {
        "1" => LOGGED_MODEL_STATUSES[0].to_string(),
        "2" => LOGGED_MODEL_STATUSES[1].to_string(),
        "3" => LOGGED_MODEL_STATUSES[2].to_string(),
        s if LOGGED_MODEL_STATUSES.contains(&s) => status,
        other => {
            return Err(MlError::invalid(format!(
                "Invalid value {other} for parameter 'status' supplied: one of {}",
                LOGGED_MODEL_STATUSES.join(", ")
            )))
        }
    };
    let workspace = state.store.workspace(&ws).await?;
    let model = load(&state, &workspace, &id).await?;
    require_write(&caller, &ws, &model)?;
    state
        .store
        .set_logged_model_status(&id, &status, &req.opt_str("status_message").unwrap_or_default())
        .await?;
    let model = load(&state, &workspace, &id).await?;
    Ok(Json(json!({"model": logged_model_json(&model, &experiment_ids(&state, &workspace).await?)})))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, id)): Path<(String, String)>,
) -> MlResult<Json<Value>> {
    let workspace = state.store.workspace(&ws).await?;
    let model = load(&state, &workspace, &id).await?;
    require_write(&caller, &ws, &model)?;
    state.store.delete_logged_model(&id).await?;
    Ok(Json(json!({})))
}

/// `PATCH logged-models/{id}/tags`.
pub async fn set_tags(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let tags = req.key_values("tags")?;
    validate(&tags, &[])?;
    let workspace = state.store.workspace(&ws).await?;
    let model = load(&state, &workspace, &id).await?;
    require_write(&caller, &ws, &model)?;
    state.store.set_logged_model_values(&id, false, &tags).await?;
    let model = load(&state, &workspace, &id).await?;
    Ok(Json(json!({"model": logged_model_json(&model, &experiment_ids(&state, &workspace).await?)})))
}

/// `DELETE logged-models/{id}/tags/{key}`.
pub async fn delete_tag(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, id, key)): Path<(String, String, String)>,
) -> MlResult<Json<Value>> {
    let workspace = state.store.workspace(&ws).await?;
    let model = load(&state, &workspace, &id).await?;
    require_write(&caller, &ws, &model)?;
    if !state.store.delete_logged_model_tag(&id, &key).await? {
        return Err(MlError::does_not_exist(format!("No tag with key '{key}' on logged model '{id}'.")));
    }
    Ok(Json(json!({})))
}

/// `POST logged-models/{id}/params`.
pub async fn log_params(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let params = req.key_values("params")?;
    validate(&[], &params)?;
    let workspace = state.store.workspace(&ws).await?;
    let model = load(&state, &workspace, &id).await?;
    require_write(&caller, &ws, &model)?;
    state.store.set_logged_model_values(&id, true, &params).await?;
    Ok(Json(json!({})))
}

/// MLflow's logged-model filter, parsed by `cairn_core::search` (a 400 naming the position).
fn model_filter(filter: &str) -> MlResult<Vec<Clause>> {
    cairn_core::search::parse_logged_model_filter(filter)
        .map_err(|e| MlError::invalid(format!("Invalid filter {filter:?}: {e}")))
}

/// The `datasets` a search's metric clauses and ordering are restricted to: a name, and
/// optionally a digest.
#[derive(Debug, Default)]
struct DatasetScope(Vec<(String, Option<String>)>);

impl DatasetScope {
    fn admits(&self, m: &ModelMetric) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|(name, digest)| {
                m.dataset_name == *name && digest.as_ref().is_none_or(|d| m.dataset_digest == *d)
            })
    }
}

fn dataset_scope(req: &Req) -> MlResult<DatasetScope> {
    let mut scope = DatasetScope::default();
    for d in req.array("datasets") {
        let name = d.get("dataset_name").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name
            .ok_or_else(|| MlError::invalid("`dataset_name` in the `datasets` clause must be specified."))?;
        let digest = d.get("dataset_digest").and_then(Value::as_str).filter(|d| !d.is_empty());
        scope.0.push((name.to_string(), digest.map(str::to_string)));
    }
    Ok(scope)
}

/// A logged model's attribute: text, or one of its times (ms).
enum Attr<'a> {
    Text(&'a str),
    Time(i64),
}

/// The attribute `key` of `m` (MLflow's aliases resolved), or None for an unknown key.
fn attribute<'a>(m: &'a LoggedModel, key: &str) -> Option<Attr<'a>> {
    Some(match cairn_core::search::logged_model_attribute(key)? {
        "name" => Attr::Text(&m.name),
        "model_id" => Attr::Text(&m.id),
        "source_run_id" => Attr::Text(&m.source_run_id),
        "status" => Attr::Text(&m.status),
        "model_type" => Attr::Text(&m.model_type),
        "experiment_id" => Attr::Text(&m.experiment_id),
        "creation_timestamp_ms" => Attr::Time(m.created_at),
        _ => Attr::Time(m.updated_at),
    })
}

/// Whether `m` passes every clause. A metric clause holds when any of the model's points of that
/// metric (on the searched datasets) does, as in MLflow's store.
fn admits(m: &LoggedModel, clauses: &[Clause], datasets: &DatasetScope) -> bool {
    clauses.iter().all(|c| match (c.entity, &c.value) {
        (Entity::Metric, FilterValue::Number(n)) => m
            .metrics
            .iter()
            .any(|p| p.key == c.key && datasets.admits(p) && number_matches(p.value, c.op, *n)),
        (Entity::Param, v) => m.params.get(&c.key).is_some_and(|p| text_matches(p, c.op, v)),
        (Entity::Tag, v) => m.tags.get(&c.key).is_some_and(|t| text_matches(t, c.op, v)),
        (_, v) => match (attribute(m, &c.key), v) {
            (Some(Attr::Text(text)), v) => text_matches(text, c.op, v),
            (Some(Attr::Time(t)), FilterValue::Number(n)) => number_matches(t as f64, c.op, *n),
            _ => false,
        },
    }) && (datasets.0.is_empty()
        || clauses.iter().any(|c| c.entity == Entity::Metric)
        || m.metrics.iter().any(|p| datasets.admits(p)))
}

/// One term of a search's `order_by`: an attribute, or a metric's latest value on a dataset.
#[derive(Debug)]
struct OrderTerm {
    field: OrderField,
    ascending: bool,
}

#[derive(Debug)]
enum OrderField {
    Attribute(&'static str),
    Metric { key: String, datasets: DatasetScope },
}

fn order_terms(req: &Req) -> MlResult<Vec<OrderTerm>> {
    let mut terms = Vec::new();
    for ob in req.array("order_by") {
        let field = ob.get("field_name").and_then(Value::as_str).unwrap_or_default();
        let ascending = match ob.get("ascending") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(other) => {
                return Err(MlError::invalid(format!("Invalid value {other} for 'ascending': true or false")))
            }
        };
        let text = |k: &str| ob.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
        let field = match field.split_once('.') {
            Some(("metrics", key)) if !key.is_empty() => {
                let datasets = match text("dataset_name") {
                    Some(name) => DatasetScope(vec![(name, text("dataset_digest"))]),
                    None if text("dataset_digest").is_some() => {
                        return Err(MlError::invalid(
                            "`dataset_digest` in `order_by` may only be set with `dataset_name`.",
                        ))
                    }
                    None => DatasetScope::default(),
                };
                OrderField::Metric { key: key.trim_matches('`').to_string(), datasets }
            }
            Some((entity, _)) if entity != "attributes" => {
                return Err(MlError::invalid(format!(
                    "Invalid order by field name: {field}. Only metrics are supported."
                )))
            }
            _ => {
                let name = field.strip_prefix("attributes.").unwrap_or(field);
                OrderField::Attribute(
                    cairn_core::search::logged_model_attribute(name)
                        .ok_or_else(|| MlError::invalid(format!("Invalid order by field name: {field}")))?,
                )
            }
        };
        terms.push(OrderTerm { field, ascending });
    }
    Ok(terms)
}

/// The metric's latest point on the datasets (latest timestamp, then step; MLflow's choice).
fn latest(m: &LoggedModel, key: &str, datasets: &DatasetScope) -> Option<f64> {
    m.metrics
        .iter()
        .filter(|p| p.key == key && datasets.admits(p))
        .max_by(|a, b| (a.timestamp, a.step).cmp(&(b.timestamp, b.step)).then(b.run_id.cmp(&a.run_id)))
        .map(|p| p.value)
}

/// Orders `models` as MLflow does: each term in turn, models without the value last; then newest
/// first (unless a term ordered by creation time) and by id.
fn sort(models: &mut [LoggedModel], terms: &[OrderTerm]) {
    use std::cmp::Ordering;
    let by_creation = terms.iter().any(|t| matches!(t.field, OrderField::Attribute("creation_timestamp_ms")));
    models.sort_by(|a, b| {
        for t in terms {
            let ord = match &t.field {
                OrderField::Metric { key, datasets } => {
                    match (latest(a, key, datasets), latest(b, key, datasets)) {
                        (Some(x), Some(y)) => x.total_cmp(&y),
                        (Some(_), None) => return Ordering::Less,
                        (None, Some(_)) => return Ordering::Greater,
                        (None, None) => Ordering::Equal,
                    }
                }
                OrderField::Attribute(name) => match (attribute(a, name), attribute(b, name)) {
                    (Some(Attr::Text(x)), Some(Attr::Text(y))) => x.cmp(y),
                    (Some(Attr::Time(x)), Some(Attr::Time(y))) => x.cmp(&y),
                    _ => Ordering::Equal,
                },
            };
            let ord = if t.ascending { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        let newest = if by_creation { Ordering::Equal } else { b.created_at.cmp(&a.created_at) };
        newest.then_with(|| a.id.cmp(&b.id))
    });
}

/// `POST logged-models/search`: the experiments' live models, filtered and ordered as MLflow's
/// `search_logged_models` (newest first by default).
pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Reader, Some(&ws))?;
    let clauses = model_filter(&req.opt_str("filter").unwrap_or_default())?;
    let datasets = dataset_scope(&req)?;
    let terms = order_terms(&req)?;
    let workspace = state.store.workspace(&ws).await?;
    let mut exp_ids = Vec::new();
    for e in req.list("experiment_ids") {
        exp_ids.push(experiment(&state, &workspace, &e).await?.id);
    }
    if exp_ids.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'experiment_ids'."));
    }
    let limit = req.opt_i64("max_results")?.unwrap_or(50).clamp(1, 1000) as usize;
    let offset = page_offset(&req)?;
    let mut models = state.store.logged_models(&workspace, &exp_ids).await?;
    let ids = experiment_ids(&state, &workspace).await?;
    models.retain(|m| admits(m, &clauses, &datasets));
    sort(&mut models, &terms);
    let page: Vec<Value> =
        models.iter().skip(offset).take(limit).map(|m| logged_model_json(m, &ids)).collect();
    let mut body = json!({"models": page});
    if models.len() > offset + limit {
        body["next_page_token"] = json!((offset + limit).to_string());
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(key: &str, value: f64, timestamp: i64, dataset: &str) -> ModelMetric {
        ModelMetric {
            model_id: "m-1".into(),
            key: key.into(),
            value,
            timestamp,
            step: 0,
            run_id: "r1".into(),
            dataset_name: dataset.into(),
            dataset_digest: if dataset.is_empty() { String::new() } else { format!("{dataset}-digest") },
        }
    }

    fn model(id: &str, created_at: i64, metrics: Vec<ModelMetric>) -> LoggedModel {
        LoggedModel {
            id: id.into(),
            experiment_id: "e".into(),
            name: "wine_model".into(),
            model_type: String::new(),
            source_run_id: "r1".into(),
            status: "LOGGED_MODEL_READY".into(),
            status_message: String::new(),
            created_at,
            updated_at: created_at,
            deleted_at: None,
            tags: [("k".to_string(), "v".to_string())].into(),
            params: [("alpha".to_string(), "0.5".to_string())].into(),
            metrics,
        }
    }

    fn req(v: Value) -> Req {
        Req(v.as_object().unwrap().clone())
    }

    #[test]
    fn logged_model_filters() {
        let m = model("m-1", 5, vec![point("rmse", 0.7, 1, ""), point("rmse", 0.2, 2, "test")]);
        let none = DatasetScope::default();
        let ok = |f: &str| admits(&m, &model_filter(f).unwrap(), &none);
        assert!(ok("name = 'wine_model'"));
        assert!(ok("name = 'wine_model' AND source_run_id = 'r1'"));
        assert!(ok("attributes.name IN ('a', 'wine_model') and status != 'LOGGED_MODEL_PENDING'"));
        assert!(ok("params.alpha = '0.5' and tags.k LIKE 'v%'"));
        assert!(ok("creation_timestamp >= 5 and last_updated_timestamp_ms < 6"));
        // Any point of the metric may match; a missing metric matches nothing.
        assert!(ok("metrics.rmse < 0.5") && ok("metrics.rmse > 0.5"));
        assert!(!ok("metrics.rmse > 1") && !ok("metrics.acc > 0"));
        assert!(!ok("name != 'wine_model'"));
        assert!(!ok("tags.missing = 'x'"));
        // The datasets restrict metric clauses, and without one, the models at all.
        let test = DatasetScope(vec![("test".into(), None)]);
        assert!(!admits(&m, &model_filter("metrics.rmse > 0.5").unwrap(), &test));
        assert!(admits(&m, &model_filter("metrics.rmse < 0.5").unwrap(), &test));
        assert!(admits(&m, &[], &test));
        assert!(!admits(&m, &[], &DatasetScope(vec![("test".into(), Some("other".into()))])));
        for (bad, at) in [
            ("metrics.acc > '0.3'", "compared as a number"),
            ("name = 'a' OR name = 'b'", "position 11"),
            ("colour = 'red'", "position 0"),
            ("datasets.name = 'x'", "position 0"),
        ] {
            let e = model_filter(bad).unwrap_err().message;
            assert!(e.contains(at), "{bad}: {e}");
        }
    }

    #[test]
    fn logged_models_order_by_a_metrics_latest_value_then_newest_first() {
        let mut models = vec![
            model("m-a", 1, vec![point("rmse", 0.9, 1, ""), point("rmse", 0.1, 2, "")]),
            model("m-b", 2, vec![point("rmse", 0.5, 1, "")]),
            model("m-c", 3, vec![]),
            model("m-d", 4, vec![point("rmse", 0.3, 1, "test")]),
        ];
        let ids = |ms: &[LoggedModel]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        let terms =
            order_terms(&req(json!({"order_by": [{"field_name": "metrics.rmse", "ascending": true}]})));
        sort(&mut models, &terms.unwrap());
        assert_eq!(ids(&models), ["m-a", "m-d", "m-b", "m-c"]); // m-a's latest is 0.1; no rmse last
        let terms =
            order_terms(&req(json!({"order_by": [{"field_name": "metrics.rmse", "ascending": false}]})));
        sort(&mut models, &terms.unwrap());
        assert_eq!(ids(&models), ["m-b", "m-d", "m-a", "m-c"]);
        let on_test = json!({"order_by": [{"field_name": "metrics.rmse", "dataset_name": "test"}]});
        sort(&mut models, &order_terms(&req(on_test)).unwrap());
        assert_eq!(ids(&models), ["m-d", "m-c", "m-b", "m-a"]); // then newest first
        sort(
            &mut models,
            &order_terms(&req(json!({"order_by": [{"field_name": "creation_timestamp"}]}))).unwrap(),
        );
        assert_eq!(ids(&models), ["m-a", "m-b", "m-c", "m-d"]);
        sort(&mut models, &[]);
        assert_eq!(ids(&models), ["m-d", "m-c", "m-b", "m-a"]);
        for bad in [json!({"field_name": "params.alpha"}), json!({"field_name": "colour"})] {
            let e = order_terms(&req(json!({"order_by": [bad]}))).unwrap_err().message;
            assert!(e.contains("Invalid order by field name"), "{e}");
        }
        let e = order_terms(&req(json!({"order_by": [{"field_name": "metrics.a", "dataset_digest": "d"}]})));
        assert!(e.unwrap_err().message.contains("dataset_name"));
    }
}
