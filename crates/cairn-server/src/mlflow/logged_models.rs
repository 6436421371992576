//! `logged-models/*`: MLflow 3's logged models. `mlflow.<flavor>.log_model` creates one, uploads
//! its files to `mlflow-artifacts:/{exp}/models/{id}/artifacts` (see `artifacts.rs`), links it to
//! the run (`runs/outputs`) and finalizes it (`PATCH logged-models/{id}`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cairn_core::api::{Role, Workspace};
use cairn_core::runs::{KeyValue, LogBatch};
use cairn_store::{LoggedModel, NewLoggedModel};
use serde_json::{json, Value};

use super::experiments::{experiment, like, page_offset};
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
    Ok(Json(json!({"model": logged_model_json(&model)})))
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
    Ok(Json(json!({"model": logged_model_json(&model)})))
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
    Ok(Json(json!({"model": logged_model_json(&model)})))
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
    Ok(Json(json!({"model": logged_model_json(&model)})))
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

/// One `FIELD OP 'value'` test of a logged-models filter.
#[derive(Debug)]
struct Test {
    field: String,
    op: String,
    value: String,
}

/// Parses what logged-models filters need: `FIELD OP 'value'` clauses joined by AND, FIELD an
/// attribute (`name`, `model_id`, `source_run_id`, `status`, `model_type`, optionally written
/// `attributes.…`), `tags.KEY` or `params.KEY`, OP one of `=`, `!=`, `LIKE`, `ILIKE`. Metric
/// filters are refused (400) rather than ignored.
fn parse_model_filter(filter: &str) -> MlResult<Vec<Test>> {
    let mut tests = Vec::new();
    let mut rest = filter.trim();
    let bad = |at: &str, why: &str| {
        let pos = filter.len() - at.len();
        MlError::invalid(format!("Invalid filter {filter:?} at position {pos}: {why}"))
    };
    while !rest.is_empty() {
        let end = rest.find(|c: char| c.is_whitespace() || "=!<>".contains(c)).unwrap_or(rest.len());
        let field = rest[..end].replace('`', "");
        let field = field.strip_prefix("attributes.").unwrap_or(&field).to_string();
        let known = ["name", "model_id", "source_run_id", "status", "model_type"].contains(&field.as_str())
            || field.starts_with("tags.")
            || field.starts_with("params.");
        if !known {
            return Err(bad(
                rest,
                "expected name, model_id, source_run_id, status, model_type, tags.KEY or params.KEY",
            ));
        }
        rest = rest[end..].trim_start();
        let op = ["!=", "=", "ILIKE", "LIKE"]
            .into_iter()
            .find(|op| rest.len() >= op.len() && rest[..op.len()].eq_ignore_ascii_case(op))
            .ok_or_else(|| bad(rest, "expected =, !=, LIKE or ILIKE"))?;
        rest = rest[op.len()..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| bad(rest, "expected a quoted value"))?;
        let close = rest[1..].find(quote).ok_or_else(|| bad(rest, "unterminated string"))?;
        tests.push(Test { field, op: op.to_ascii_uppercase(), value: rest[1..1 + close].to_string() });
        rest = rest[close + 2..].trim_start();
        if !rest.is_empty() {
            let and = rest.get(..3).filter(|w| w.eq_ignore_ascii_case("and"));
            if and.is_none() || !rest[3..].starts_with(char::is_whitespace) {
                return Err(bad(rest, "expected AND"));
            }
            rest = rest[3..].trim_start();
        }
    }
    Ok(tests)
}

fn admits(m: &LoggedModel, tests: &[Test]) -> bool {
    tests.iter().all(|t| {
        let got = match t.field.as_str() {
            "name" => Some(m.name.as_str()),
            "model_id" => Some(m.id.as_str()),
            "source_run_id" => Some(m.source_run_id.as_str()),
            "status" => Some(m.status.as_str()),
            "model_type" => Some(m.model_type.as_str()),
            f => match f.split_once('.') {
                Some(("tags", k)) => m.tags.get(k).map(String::as_str),
                Some((_, k)) => m.params.get(k).map(String::as_str),
                None => None,
            },
        };
        let Some(got) = got else { return false };
        match t.op.as_str() {
            "=" => got == t.value,
            "!=" => got != t.value,
            "LIKE" => like(&got.chars().collect::<Vec<_>>(), &t.value.chars().collect::<Vec<_>>()),
            _ => like(
                &got.to_lowercase().chars().collect::<Vec<_>>(),
                &t.value.to_lowercase().chars().collect::<Vec<_>>(),
            ),
        }
    })
}

/// `POST logged-models/search`: the experiments' live models, newest first, filtered.
pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Reader, Some(&ws))?;
    let tests = parse_model_filter(&req.opt_str("filter").unwrap_or_default())?;
    let workspace = state.store.workspace(&ws).await?;
    let mut ids = Vec::new();
    for e in req.list("experiment_ids") {
        ids.push(experiment(&state, &workspace, &e).await?.id);
    }
    if ids.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'experiment_ids'."));
    }
    let limit = req.opt_i64("max_results")?.unwrap_or(50).clamp(1, 1000) as usize;
    let offset = page_offset(&req)?;
    let mut models = state.store.logged_models(&workspace, &ids).await?;
    models.retain(|m| admits(m, &tests));
    let page: Vec<Value> = models.iter().skip(offset).take(limit).map(logged_model_json).collect();
    let mut body = json!({"models": page});
    if models.len() > offset + limit {
        body["next_page_token"] = json!((offset + limit).to_string());
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> LoggedModel {
        LoggedModel {
            id: "m-1".into(),
            experiment_id: "e".into(),
            name: "wine_model".into(),
            model_type: String::new(),
            source_run_id: "r1".into(),
            status: "LOGGED_MODEL_READY".into(),
            status_message: String::new(),
            created_at: 0,
            updated_at: 0,
            deleted_at: None,
            tags: [("k".to_string(), "v".to_string())].into(),
            params: [("alpha".to_string(), "0.5".to_string())].into(),
        }
    }

    #[test]
    fn logged_model_filters() {
        let m = model();
        let ok = |f: &str| admits(&m, &parse_model_filter(f).unwrap());
        assert!(ok("name = 'wine_model'"));
        assert!(ok("name = 'wine_model' AND source_run_id = 'r1'"));
        assert!(ok("params.alpha = '0.5' and tags.k LIKE 'v%'"));
        assert!(!ok("name != 'wine_model'"));
        assert!(!ok("tags.missing = 'x'"));
        let e = parse_model_filter("metrics.acc > 0.3").unwrap_err().message;
        assert!(e.contains("position 0"), "{e}");
        let e = parse_model_filter("name = 'a' OR name = 'b'").unwrap_err().message;
        assert!(e.contains("position 11"), "{e}");
    }
}
