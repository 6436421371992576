//! `experiments/*`: create, get (by id or name), search, rename, delete/restore, tags.

use axum::Json;
use cairn_core::api::{Role, Workspace};
use cairn_core::runs::{KeyValue, LogBatch};
use cairn_core::Error;
use cairn_store::MlflowExperiment;
use serde_json::{json, Value};

use super::wire::{experiment_json, MlError, MlResult, Req};
use super::Ctx;
use crate::auth::Caller;
use crate::routes::runs::{validate_batch, validate_experiment_name};
use crate::state::AppState;

/// Name of the experiment MLflow's id `"0"` (its default experiment) stands for.
pub const DEFAULT_EXPERIMENT: &str = "Default";

/// The experiment with MLflow id `id`; `"0"` is the workspace's default experiment.
pub async fn experiment(state: &AppState, ws: &Workspace, id: &str) -> MlResult<MlflowExperiment> {
    if id == "0" {
        let (id, _) = state.store.ensure_experiment(ws, DEFAULT_EXPERIMENT).await?;
        return Ok(state.store.mlflow_experiment_by_id(ws, &id).await?);
    }
    state
        .store
        .mlflow_experiment_by_id(ws, id)
        .await
        .map_err(|_| MlError::does_not_exist(format!("No Experiment with id={id} exists")))
}

fn validate_tag(key: &str, value: &str) -> MlResult<()> {
    let batch =
        LogBatch { tags: vec![KeyValue { key: key.into(), value: value.into() }], ..Default::default() };
    Ok(validate_batch(&batch)?)
}

pub async fn create(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let name = req.str("name")?;
    validate_experiment_name(&name)?;
    let tags = req.key_values("tags")?;
    for t in &tags {
        validate_tag(&t.key, &t.value)?;
    }
    let workspace = state.store.workspace(&ws).await?;
    if state.store.mlflow_experiment_by_name(&workspace, &name).await?.is_some() {
        return Err(MlError::already_exists(format!("Experiment(name={name}) already exists.")));
    }
    let (id, _) = state.store.ensure_experiment(&workspace, &name).await?;
    for t in &tags {
        state.store.set_experiment_tag(&id, &t.key, &t.value).await?;
    }
    Ok(Json(json!({"experiment_id": id})))
}

pub async fn get(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    super::require_read(&caller, &ws)?;
    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &req.str("experiment_id")?).await?;
    Ok(Json(json!({"experiment": experiment_json(&exp)})))
}

pub async fn get_by_name(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    super::require_read(&caller, &ws)?;
    let name = req.str("experiment_name")?;
    let workspace = state.store.workspace(&ws).await?;
    match state.store.mlflow_experiment_by_name(&workspace, &name).await? {
        Some(exp) => Ok(Json(json!({"experiment": experiment_json(&exp)}))),
        None => Err(MlError::does_not_exist(format!("Could not find experiment with name '{name}'"))),
    }
}

/// `run_view_type`/`view_type`: which lifecycle stages a search returns.
pub fn view_admits(view: Option<&str>, deleted: bool) -> MlResult<bool> {
    match view.unwrap_or("ACTIVE_ONLY") {
        "ACTIVE_ONLY" | "" | "1" => Ok(!deleted),
        "DELETED_ONLY" | "2" => Ok(deleted),
        "ALL" | "3" => Ok(true),
        other => {
            Err(MlError::invalid(format!("unknown view type {other:?}: ACTIVE_ONLY, DELETED_ONLY or ALL")))
        }
    }
}

/// SQL's LIKE on text: `%` any run of characters, `_` one character.
pub(super) fn like(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| like(&text[i..], rest)),
        Some((c, rest)) => {
            text.split_first().is_some_and(|(t, trest)| (*c == '_' || c == t) && like(trest, rest))
        }
    }
}

/// The experiment filters supported: empty, or one `name OP 'value'` clause (OP one of `=`,
/// `!=`, `LIKE`, `ILIKE`), optionally written `attribute.name`.
/// A test on an experiment's name.
type NameTest = Box<dyn Fn(&str) -> bool + Send + Sync>;

fn name_filter(filter: &str) -> MlResult<NameTest> {
    let f = filter.trim();
    if f.is_empty() {
        return Ok(Box::new(|_| true));
    }
    let unsupported = || {
        MlError::invalid(format!("unsupported experiment filter {filter:?}: use name = '…' or name LIKE '…'"))
    };
    let rest = f.strip_prefix("attributes.").or_else(|| f.strip_prefix("attribute.")).unwrap_or(f);
    let rest = rest.strip_prefix("name").ok_or_else(unsupported)?.trim_start();
    let (op, rest) = ["!=", "=", "ILIKE", "LIKE", "ilike", "like"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|r| (op.to_ascii_uppercase(), r.trim())))
        .ok_or_else(unsupported)?;
    let value = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        .ok_or_else(unsupported)?
        .to_string();
    Ok(match op.as_str() {
        "=" => Box::new(move |n| n == value),
        "!=" => Box::new(move |n| n != value),
        "LIKE" => {
            let p: Vec<char> = value.chars().collect();
            Box::new(move |n| like(&n.chars().collect::<Vec<_>>(), &p))
        }
        _ => {
            let p: Vec<char> = value.to_lowercase().chars().collect();
            Box::new(move |n| like(&n.to_lowercase().chars().collect::<Vec<_>>(), &p))
        }
    })
}

pub fn page_offset(req: &Req) -> MlResult<usize> {
    match req.opt_str("page_token").filter(|t| !t.is_empty()) {
        Some(t) => {
            t.parse().map_err(|_| MlError::invalid(format!("page_token {t:?} is not one this server gave")))
        }
        None => Ok(0),
    }
}

pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    super::require_read(&caller, &ws)?;
    let matches = name_filter(&req.opt_str("filter").unwrap_or_default())?;
    let view = req.opt_str("view_type");
    let max = req.opt_i64("max_results")?.unwrap_or(1000).clamp(1, 50_000) as usize;
    let offset = page_offset(&req)?;
    let workspace = state.store.workspace(&ws).await?;
    let mut all = Vec::new();
    for e in state.store.mlflow_experiments(&workspace).await? {
        if view_admits(view.as_deref(), e.deleted_at.is_some())? && matches(&e.name) {
            all.push(e);
        }
    }
    let page: Vec<Value> = all.iter().skip(offset).take(max).map(experiment_json).collect();
    let mut body = json!({"experiments": page});
    if offset + max < all.len() {
        body["next_page_token"] = json!((offset + max).to_string());
    }
    Ok(Json(body))
}

pub async fn update(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let new_name = req.str("new_name")?;
    validate_experiment_name(&new_name)?;
    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &req.str("experiment_id")?).await?;
    match state.store.rename_experiment(&workspace, &exp.id, &new_name).await {
        Err(Error::Conflict(m)) => Err(MlError::already_exists(m)),
        other => Ok(other.map(|_| Json(json!({})))?),
    }
}

async fn set_deleted(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    req: &Req,
    deleted: bool,
) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(ws))?;
    let workspace = state.store.workspace(ws).await?;
    let exp = experiment(state, &workspace, &req.str("experiment_id")?).await?;
    state.store.set_experiment_deleted(&workspace, &exp.id, deleted).await?;
    Ok(Json(json!({})))
}

pub async fn delete(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    set_deleted(&state, &caller, &ws, &req, true).await
}

pub async fn restore(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    set_deleted(&state, &caller, &ws, &req, false).await
}

pub async fn set_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let key = req.str("key")?;
    let value = req.opt_str("value").unwrap_or_default();
    validate_tag(&key, &value)?;
    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &req.str("experiment_id")?).await?;
    state.store.set_experiment_tag(&exp.id, &key, &value).await?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiment_name_filters() {
        let f = name_filter("name LIKE 'wine%'").unwrap();
        assert!(f("wine_expt") && !f("beer"));
        let f = name_filter("attribute.name = 'a b'").unwrap();
        assert!(f("a b") && !f("a"));
        let f = name_filter("name ILIKE '%EXP_'").unwrap();
        assert!(f("my expt") && !f("my exp"));
        assert!(name_filter("tags.x = 'y'").is_err());
        assert!(name_filter("").unwrap()("anything"));
    }
}
