//! `registered-models/*` and `model-versions/*`: MLflow's model registry as a view of Cairn's
//! native registry (`cairn-store/src/models.rs`): an MLflow registered model is a Cairn model,
//! a model version a Cairn version, so `cairn model list` and MLflow see the same things.
//! A version's files are downloaded through the artifact proxy at
//! `mlflow-artifacts:/registry/{name}/{version}` (see `artifacts.rs`); versions are created
//! through `models::register_from_blobs`, as native ones are.

use std::collections::BTreeMap;

use axum::Json;
use cairn_core::api::{Role, Workspace};
use cairn_core::models::{Model, ModelFile, ModelFilter, ModelVersion, NewModelVersion, VersionRef};
use cairn_core::Error;
use serde_json::{json, Value};

use super::experiments::like;
use super::wire::*;
use super::Ctx;
use crate::auth::Caller;
use crate::state::AppState;

/// MLflow's stages; Cairn keeps the stage as text.
const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

fn kv(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter().map(|(k, v)| json!({"key": k, "value": v})).collect()
}

pub fn version_json(v: &ModelVersion) -> Value {
    let stage = STAGES.iter().find(|s| s.eq_ignore_ascii_case(&v.stage)).copied().unwrap_or("None");
    let mut out = json!({
        "name": v.name,
        "version": v.version.to_string(),
        "creation_timestamp": v.created_at,
        "last_updated_timestamp": v.updated_at,
        "user_id": v.created_by,
        "current_stage": stage,
        "description": v.description,
        "source": v.source,
        "run_id": v.run_id.clone().unwrap_or_default(),
        "status": "READY",
        "tags": kv(&v.tags),
        "aliases": v.aliases,
    });
    if let Some(m) = &v.logged_model_id {
        out["model_id"] = json!(m);
    }
    out
}

async fn model_json(state: &AppState, ws: &Workspace, m: &Model) -> MlResult<Value> {
    let mut latest = Vec::new();
    if let Some(v) = m.latest_version {
        if let Ok(v) = state.store.model_version(ws, &m.name, &VersionRef::Number(v)).await {
            latest.push(version_json(&v));
        }
    }
    let aliases: Vec<Value> =
        m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect();
    Ok(json!({
        "name": m.name,
        "creation_timestamp": m.created_at,
        "last_updated_timestamp": m.updated_at,
        "user_id": m.created_by,
        "description": m.description,
        "latest_versions": latest,
        "tags": kv(&m.tags),
        "aliases": aliases,
    }))
}

/// A store error in MLflow's words: a missing model or version is RESOURCE_DOES_NOT_EXIST, a
/// name taken is RESOURCE_ALREADY_EXISTS (400), a version in use stays a conflict.
pub(super) fn ml(e: Error) -> MlError {
    match &e {
        Error::Conflict(m) if m.contains("already exists") => MlError::already_exists(m.clone()),
        _ => e.into(),
    }
}

/// The workspace, once the caller may use its registry with `role`. A job's run-scoped token
/// may read it (a job loads `models:/NAME/VERSION`; the client also probes the registry before
/// falling back to `models:/m-…` logged models) but not change it — except registering its own
/// run's work (`create_model`, `create_version`, which check that themselves).
async fn workspace(state: &AppState, caller: &Caller, ws: &str, role: Role) -> MlResult<Workspace> {
    if role == Role::Reader {
        super::require_read(caller, ws)?;
    } else {
        caller.require(role, Some(ws))?;
    }
    Ok(state.store.workspace(ws).await?)
}

fn version_number(req: &Req) -> MlResult<i64> {
    let raw = req.str("version")?;
    match raw.parse::<i64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(MlError::invalid(format!("Invalid value {raw} for parameter 'version' supplied"))),
    }
}

fn tags_of(req: &Req) -> MlResult<BTreeMap<String, String>> {
    Ok(req.key_values("tags")?.into_iter().map(|t| (t.key, t.value)).collect())
}

pub async fn create_model(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    cairn_core::names::validate_model_name(&name)?;
    let tags = tags_of(&req)?;
    // `mlflow.register_model` creates the model before its version, so a job's run-scoped token
    // may create one (as the native `Run.register_model` does on first registration); it may
    // change nothing else of the registry.
    let workspace = match &caller.token.run_id {
        Some(own) => {
            caller.require_run(Role::Writer, &ws, own)?;
            state.store.workspace(&ws).await?
        }
        None => workspace(&state, &caller, &ws, Role::Writer).await?,
    };
    let description = req.opt_str("description").unwrap_or_default();
    let m = state
        .store
        .create_model(&workspace, &name, &description, &tags, &caller.token.name)
        .await
        .map_err(ml)?;
    Ok(Json(json!({"registered_model": model_json(&state, &workspace, &m).await?})))
}

pub async fn get_model(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    let m = state.store.model(&workspace, &name).await.map_err(ml)?;
    Ok(Json(json!({"registered_model": model_json(&state, &workspace, &m).await?})))
}

/// A test on a registered model.
type ModelTest = Box<dyn Fn(&Model) -> bool + Send>;

/// Filters MLflow's clients send for registered models: clauses joined by AND, each
/// `name OP '…'` or `tags.KEY OP '…'` (also `tag.`, keys may be back-quoted) with OP one of `=`,
/// `!=`, `LIKE`, `ILIKE`. A model without the tag passes `!=` (the client itself adds
/// ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every search).
fn model_filter(filter: &str) -> MlResult<ModelTest> {
    let bad = || {
        MlError::invalid(format!(
            "unsupported registered-model filter {filter:?}: use clauses name OP '…' or tags.KEY OP '…' \
             (OP one of =, !=, LIKE, ILIKE) joined by AND"
        ))
    };
    let mut tests: Vec<ModelTest> = Vec::new();
    for clause in split_and(filter) {
        let (lhs, op, value) = split_clause(clause).ok_or_else(bad)?;
        let value = value.to_string();
        let test = move |got: Option<&str>| match (op, got) {
            ("!=", None) => true,
            (_, None) => false,
            ("=", Some(g)) => g == value,
            ("!=", Some(g)) => g != value,
            ("LIKE", Some(g)) => like(&g.chars().collect::<Vec<_>>(), &value.chars().collect::<Vec<_>>()),
            (_, Some(g)) => like(
                &g.to_lowercase().chars().collect::<Vec<_>>(),
                &value.to_lowercase().chars().collect::<Vec<_>>(),
            ),
        };
        let lhs = lhs.trim_matches('`');
        if lhs == "name" {
            tests.push(Box::new(move |m: &Model| test(Some(&m.name))));
        } else if let Some(key) = lhs.strip_prefix("tags.").or_else(|| lhs.strip_prefix("tag.")) {
            let key = key.trim_matches('`').to_string();
            tests.push(Box::new(move |m: &Model| test(m.tags.get(&key).map(String::as_str))));
        } else {
            return Err(bad());
        }
    }
    Ok(Box::new(move |m: &Model| tests.iter().all(|t| t(m))))
}

/// What registered models and versions can be ordered by.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ModelField {
    Name,
    Created,
    Updated,
    /// Versions only.
    Version,
}

/// `order_by` of a registry search: `FIELD [ASC|DESC]` items (ascending by default). MLflow's
/// fields: `name`, `timestamp`/`creation_timestamp`, `last_updated_timestamp`, and for versions
/// `version_number`.
fn parse_registry_order(items: &[String], versions: bool) -> MlResult<Vec<(ModelField, bool)>> {
    let mut out = Vec::new();
    for item in items {
        let mut words = item.split_whitespace();
        let field = words.next().unwrap_or("").trim_matches('`');
        let asc = match words.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => true,
            Some("DESC") => false,
            Some(_) => {
                return Err(MlError::invalid(format!(
                    "Invalid order_by clause {item:?}: use FIELD [ASC|DESC]"
                )))
            }
        };
        if words.next().is_some() {
            return Err(MlError::invalid(format!("Invalid order_by clause {item:?}: use FIELD [ASC|DESC]")));
        }
        let f = match field {
            "name" => ModelField::Name,
            "timestamp" | "creation_timestamp" => ModelField::Created,
            "last_updated_timestamp" => ModelField::Updated,
            "version_number" if versions => ModelField::Version,
            _ => {
                let allowed = if versions {
                    "name, version_number, creation_timestamp, last_updated_timestamp"
                } else {
                    "name, creation_timestamp, last_updated_timestamp"
                };
                return Err(MlError::invalid(format!(
                    "Invalid order_by field {field:?} in {item:?}: order by one of {allowed}"
                )));
            }
        };
        if out.iter().any(|(g, _)| *g == f) {
            return Err(MlError::invalid(format!("order_by names {field:?} twice")));
        }
        out.push((f, asc));
    }
    Ok(out)
}

/// Compares two items field by field in `order` (`cmp` compares them on one field, ascending).
fn ordered(
    order: &[(ModelField, bool)],
    cmp: impl Fn(ModelField) -> std::cmp::Ordering,
) -> std::cmp::Ordering {
    order
        .iter()
        .map(|&(f, asc)| if asc { cmp(f) } else { cmp(f).reverse() })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

fn model_order(items: &[String]) -> MlResult<Vec<(ModelField, bool)>> {
    parse_registry_order(items, false)
}

/// A test on a model version.
type VersionTest = Box<dyn Fn(&ModelVersion) -> bool + Send>;

/// MLflow's model-version filter: clauses joined by AND over `name`, `run_id`, `source_path`
/// (also `source`), `version_number` and `tags.KEY`. Text fields take `=`, `!=`, `LIKE`, `ILIKE`
/// and `IN ('a', 'b')`; `version_number` takes `=`, `!=`, `<`, `<=`, `>`, `>=` with a number.
/// Returns the test and, when a clause pins them, the name and run id to narrow the query with.
fn version_filter(filter: &str) -> MlResult<(VersionTest, Option<String>, Option<String>)> {
    let bad = |why: &str| {
        MlError::invalid(format!(
            "Invalid model-version filter {filter:?}: {why}. Use clauses joined by AND: name, run_id, \
             source_path or tags.KEY with =, !=, LIKE, ILIKE or IN ('…', …); version_number with =, !=, <, <=, >, >="
        ))
    };
    let (mut pin_name, mut pin_run) = (None, None);
    let mut tests: Vec<VersionTest> = Vec::new();
    for clause in split_and(filter) {
        let (lhs, op, rhs) =
            split_any_clause(clause).ok_or_else(|| bad(&format!("cannot read {clause:?}")))?;
        let lhs = lhs.trim_matches('`');
        if lhs == "version_number" {
            let n: i64 = rhs.trim().parse().map_err(|_| bad(&format!("{rhs:?} is not a version number")))?;
            let cmp: fn(i64, i64) -> bool = match op {
                "=" => |a, b| a == b,
                "!=" => |a, b| a != b,
                "<" => |a, b| a < b,
                "<=" => |a, b| a <= b,
                ">" => |a, b| a > b,
                ">=" => |a, b| a >= b,
                _ => return Err(bad(&format!("version_number does not take {op}"))),
            };
            tests.push(Box::new(move |v: &ModelVersion| cmp(v.version, n)));
            continue;
        }
        let values: Vec<String> = if op == "IN" {
            let inner = rhs
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad("IN takes a parenthesised list"))?;
            let mut vals = Vec::new();
            for item in inner.split(',') {
                vals.push(
                    unquote(item.trim()).ok_or_else(|| bad(&format!("{item:?} is not a quoted string")))?,
                );
            }
            vals
        } else if matches!(op, "=" | "!=" | "LIKE" | "ILIKE") {
            vec![unquote(rhs.trim()).ok_or_else(|| bad(&format!("{rhs:?} is not a quoted string")))?]
        } else {
            return Err(bad(&format!("{lhs} does not take {op}")));
        };
        let pin = (op == "=").then(|| values[0].clone());
        let op = op.to_string();
        let test = move |got: Option<&str>| match (op.as_str(), got) {
            ("!=", None) => true,
            (_, None) => false,
            ("=", Some(g)) => g == values[0],
            ("!=", Some(g)) => g != values[0],
            ("IN", Some(g)) => values.iter().any(|v| v == g),
            ("LIKE", Some(g)) => like(&g.chars().collect::<Vec<_>>(), &values[0].chars().collect::<Vec<_>>()),
            (_, Some(g)) => like(
                &g.to_lowercase().chars().collect::<Vec<_>>(),
                &values[0].to_lowercase().chars().collect::<Vec<_>>(),
            ),
        };
        match lhs {
            "name" => {
                pin_name = pin.or(pin_name);
                tests.push(Box::new(move |v: &ModelVersion| test(Some(&v.name))))
            }
            "run_id" => {
                pin_run = pin.or(pin_run);
                tests.push(Box::new(move |v: &ModelVersion| test(v.run_id.as_deref())))
            }
            "source_path" | "source" => tests.push(Box::new(move |v: &ModelVersion| test(Some(&v.source)))),
            _ => match lhs.strip_prefix("tags.").or_else(|| lhs.strip_prefix("tag.")) {
                Some(key) => {
                    let key = key.trim_matches('`').to_string();
                    tests.push(Box::new(move |v: &ModelVersion| test(v.tags.get(&key).map(String::as_str))))
                }
                None => return Err(bad(&format!("unknown field {lhs:?}"))),
            },
        }
    }
    Ok((Box::new(move |v: &ModelVersion| tests.iter().all(|t| t(v))), pin_name, pin_run))
}

/// `'text'` or `"text"` without its quotes.
fn unquote(s: &str) -> Option<String> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    Some(s.strip_prefix(q)?.strip_suffix(q)?.to_string())
}

/// `FIELD OP REST` with OP one of `!=`, `<=`, `>=`, `=`, `<`, `>`, `LIKE`, `ILIKE`, `IN` (any
/// case); REST is returned as written (quoted value, number or parenthesised list).
fn split_any_clause(f: &str) -> Option<(&str, &'static str, &str)> {
    let upper = f.to_ascii_uppercase();
    for (needle, op) in [(" ILIKE ", "ILIKE"), (" LIKE ", "LIKE"), (" IN ", "IN")] {
        if let Some(i) = upper.find(needle) {
            return Some((f[..i].trim(), op, f[i + needle.len()..].trim()));
        }
    }
    for op in ["!=", "<=", ">=", "=", "<", ">"] {
        if let Some(i) = f.find(op) {
            return Some((f[..i].trim(), op, f[i + op.len()..].trim()));
        }
    }
    None
}

/// The clauses of `a AND b and c` (an AND inside a quoted value is not a separator).
fn split_and(filter: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quote) = (0, None);
    let bytes = filter.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' || c == b'`' => quote = Some(c),
            None if i + 5 <= bytes.len()
                && bytes[i].is_ascii_whitespace()
                && filter[i + 1..i + 4].eq_ignore_ascii_case("and")
                && bytes[i + 4].is_ascii_whitespace() =>
            {
                out.push(filter[start..i].trim());
                start = i + 5;
                i += 4;
            }
            None => {}
        }
        i += 1;
    }
    out.push(filter[start..].trim());
    out.into_iter().filter(|c| !c.is_empty()).collect()
}

/// `FIELD OP 'value'` with OP one of `=`, `!=`, `LIKE`, `ILIKE`.
fn split_clause(f: &str) -> Option<(&str, &'static str, &str)> {
    for op in ["!=", "=", " ILIKE ", " LIKE ", " ilike ", " like "] {
        if let Some(i) = f.find(op) {
            let value = f[i + op.len()..].trim();
            let q = value.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let value = value.strip_prefix(q)?.strip_suffix(q)?;
            let op = match op.trim().to_ascii_uppercase().as_str() {
                "!=" => "!=",
                "=" => "=",
                "LIKE" => "LIKE",
                _ => "ILIKE",
            };
            return Some((f[..i].trim(), op, value));
        }
    }
    None
}

pub async fn search_models(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let admit = model_filter(&req.opt_str("filter").unwrap_or_default())?;
    let limit = req.opt_i64("max_results")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(MlError::invalid(format!("Invalid value {limit} for parameter 'max_results' supplied")));
    }
    let offset = super::experiments::page_offset(&req)?;
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = state
            .store
            .list_models(&workspace, &ModelFilter::default(), token.as_deref(), Some(1000))
            .await?;
        all.extend(page.items.into_iter().filter(|m| admit(m)));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let order = model_order(&req.list("order_by"))?;
    all.sort_by(|a, b| {
        ordered(&order, |f| match f {
            ModelField::Name => a.name.cmp(&b.name),
            ModelField::Created => a.created_at.cmp(&b.created_at),
            ModelField::Updated => a.updated_at.cmp(&b.updated_at),
            ModelField::Version => std::cmp::Ordering::Equal,
        })
        .then_with(|| a.name.cmp(&b.name))
    });
    let mut out = Vec::new();
    for m in all.iter().skip(offset).take(limit as usize) {
        out.push(model_json(&state, &workspace, m).await?);
    }
    let mut body = json!({"registered_models": out});
    if all.len() > offset + limit as usize {
        body["next_page_token"] = json!((offset + limit as usize).to_string());
    }
    Ok(Json(body))
}

pub async fn update_model(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let description = req.opt_str("description");
    let m = state
        .store
        .update_model(&workspace, &name, description.as_deref(), &BTreeMap::new(), &[])
        .await
        .map_err(ml)?;
    Ok(Json(json!({"registered_model": model_json(&state, &workspace, &m).await?})))
}

pub async fn rename_model(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let new_name = req.str("new_name")?;
    cairn_core::names::validate_model_name(&new_name)?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let m = state.store.rename_model(&workspace, &name, &new_name).await.map_err(ml)?;
    Ok(Json(json!({"registered_model": model_json(&state, &workspace, &m).await?})))
}

pub async fn delete_model(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    state.store.delete_model(&workspace, &name).await.map_err(ml)?;
    Ok(Json(json!({})))
}

pub async fn set_model_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let key = req.str("key")?;
    let value = req.opt_str("value").unwrap_or_default();
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let tags = BTreeMap::from([(key, value)]);
    state.store.update_model(&workspace, &name, None, &tags, &[]).await.map_err(ml)?;
    Ok(Json(json!({})))
}

pub async fn delete_model_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let key = req.str("key")?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    state.store.update_model(&workspace, &name, None, &BTreeMap::new(), &[key]).await.map_err(ml)?;
    Ok(Json(json!({})))
}

/// MLflow's alias rule: letters, digits, `_` and `-`, at most 255 characters, and not `latest`
/// or `v<digits>` (those name versions).
fn validate_alias(alias: &str) -> MlResult<()> {
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias.starts_with(['v', 'V'])
            && alias[1..].bytes().all(|b| b.is_ascii_digit()));
    if alias.is_empty()
        || alias.len() > 255
        || reserved
        || !alias.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(MlError::invalid(format!(
            "Invalid alias name: '{alias}'. Aliases may only contain letters, digits, '_' and '-', \
             at most 255 characters, and must not be 'latest' or 'v<number>'."
        )));
    }
    Ok(())
}

pub async fn set_alias(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let alias = req.str("alias")?;
    validate_alias(&alias)?;
    let version = version_number(&req)?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    state.store.set_model_alias(&workspace, &name, &alias, version).await.map_err(ml)?;
    Ok(Json(json!({})))
}

pub async fn delete_alias(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let alias = req.str("alias")?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    state.store.delete_model_alias(&workspace, &name, &alias).await.map_err(ml)?;
    Ok(Json(json!({})))
}

pub async fn get_by_alias(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let alias = req.str("alias")?;
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    // As MLflow's store: `latest` (any case) is the newest version; no alias may take that name.
    let by = if alias.eq_ignore_ascii_case("latest") { VersionRef::Latest } else { VersionRef::Alias(alias) };
    let v = state.store.model_version(&workspace, &name, &by).await.map_err(ml)?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

/// The newest version per stage (all stages, or those asked for): MLflow's deprecated stage API.
pub async fn latest_versions(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let stages: Vec<String> = req.list("stages").iter().map(|s| s.to_lowercase()).collect();
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    state.store.model(&workspace, &name).await.map_err(ml)?;
    let versions = state.store.list_model_versions(&workspace, &name).await?;
    let mut newest: BTreeMap<String, &ModelVersion> = BTreeMap::new();
    for v in &versions {
        let stage = v.stage.to_lowercase();
        let stage = if stage.is_empty() { "none".to_string() } else { stage };
        if !stages.is_empty() && !stages.contains(&stage) {
            continue;
        }
        if newest.get(&stage).is_none_or(|n| n.version < v.version) {
            newest.insert(stage, v);
        }
    }
    let out: Vec<Value> = newest.values().map(|v| version_json(v)).collect();
    Ok(Json(json!({"model_versions": out})))
}

async fn load_version(state: &AppState, ws: &Workspace, req: &Req) -> MlResult<ModelVersion> {
    let name = req.str("name")?;
    let version = version_number(req)?;
    state.store.model_version(ws, &name, &VersionRef::Number(version)).await.map_err(ml)
}

pub async fn get_version(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    let v = load_version(&state, &workspace, &req).await?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

pub async fn update_version(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let v = load_version(&state, &workspace, &req).await?;
    let description = req.opt_str("description");
    let v = state
        .store
        .update_model_version(&workspace, &v.name, v.version, description.as_deref(), &BTreeMap::new(), &[])
        .await
        .map_err(ml)?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

pub async fn transition_stage(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let stage = req.str("stage")?;
    let stage = STAGES.iter().find(|s| s.eq_ignore_ascii_case(&stage)).copied().ok_or_else(|| {
        MlError::invalid(format!(
            "Invalid Model Version stage: {stage}. Value must be one of {}.",
            STAGES.join(", ")
        ))
    })?;
    let archive = req.opt_str("archive_existing_versions").is_some_and(|a| a == "true");
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let v = load_version(&state, &workspace, &req).await?;
    let v = state
        .store
        .set_model_version_stage(&workspace, &v.name, v.version, stage, archive)
        .await
        .map_err(ml)?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

pub async fn delete_version(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let v = load_version(&state, &workspace, &req).await?;
    state.store.delete_model_version(&workspace, &v.name, v.version).await.map_err(ml)?;
    Ok(Json(json!({})))
}

pub async fn set_version_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let key = req.str("key")?;
    let value = req.opt_str("value").unwrap_or_default();
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let v = load_version(&state, &workspace, &req).await?;
    let tags = BTreeMap::from([(key, value)]);
    state.store.update_model_version(&workspace, &v.name, v.version, None, &tags, &[]).await.map_err(ml)?;
    Ok(Json(json!({})))
}

pub async fn delete_version_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let key = req.str("key")?;
    let workspace = workspace(&state, &caller, &ws, Role::Writer).await?;
    let v = load_version(&state, &workspace, &req).await?;
    state
        .store
        .update_model_version(&workspace, &v.name, v.version, None, &BTreeMap::new(), &[key])
        .await
        .map_err(ml)?;
    Ok(Json(json!({})))
}

/// Searches versions with MLflow's filter grammar for versions (see [`version_filter`]) and
/// `order_by` (default: name ascending, then version descending, as MLflow).
pub async fn search_versions(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let filter = req.opt_str("filter").unwrap_or_default();
    let (admit, name, run) = version_filter(&filter)?;
    let mut order = parse_registry_order(&req.list("order_by"), true)?;
    if !order.iter().any(|(f, _)| *f == ModelField::Name) {
        order.push((ModelField::Name, true));
    }
    if !order.iter().any(|(f, _)| *f == ModelField::Version) {
        order.push((ModelField::Version, false));
    }
    let limit = req.opt_i64("max_results")?.unwrap_or(10_000);
    if !(1..=200_000).contains(&limit) {
        return Err(MlError::invalid(format!("Invalid value {limit} for parameter 'max_results' supplied")));
    }
    let offset = super::experiments::page_offset(&req)?;
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    let mut found = state.store.search_model_versions(&workspace, name.as_deref(), run.as_deref()).await?;
    found.retain(|v| admit(v));
    found.sort_by(|a, b| {
        ordered(&order, |f| match f {
            ModelField::Name => a.name.cmp(&b.name),
            ModelField::Created => a.created_at.cmp(&b.created_at),
            ModelField::Updated => a.updated_at.cmp(&b.updated_at),
            ModelField::Version => a.version.cmp(&b.version),
        })
    });
    let out: Vec<Value> = found.iter().skip(offset).take(limit as usize).map(version_json).collect();
    let mut body = json!({"model_versions": out});
    if found.len() > offset + limit as usize {
        body["next_page_token"] = json!((offset + limit as usize).to_string());
    }
    Ok(Json(body))
}

/// Where MLflow downloads a version's files from: the artifact proxy's registry area.
pub async fn download_uri(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let workspace = workspace(&state, &caller, &ws, Role::Reader).await?;
    let v = load_version(&state, &workspace, &req).await?;
    Ok(Json(json!({"artifact_uri": format!("mlflow-artifacts:/registry/{}/{}", v.name, v.version)})))
}

/// `model-versions/create`: resolves `source` (`models:/m-…`, `runs:/RUN/path`,
/// `mlflow-artifacts:/…`) to files through the artifact resolver and registers them as the
/// next native version (content-addressed copy, manifest, framework from `MLmodel`).
pub async fn create_version(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let name = req.str("name")?;
    let source = req.str("source")?;
    let tags = tags_of(&req)?;
    // A job's run-scoped token may register its own run's artifacts or a model its run logged
    // (like the native `Run.register_model`); `authorize` below checks the source.
    let workspace = match &caller.token.run_id {
        Some(own) => {
            caller.require_run(Role::Writer, &ws, own)?;
            state.store.workspace(&ws).await?
        }
        None => workspace(&state, &caller, &ws, Role::Writer).await?,
    };
    state.store.model(&workspace, &name).await.map_err(ml)?;
    if is_prompt(&tags) {
        return create_prompt_version(&state, &caller, &workspace, &req, name, source, tags).await;
    }
    let resolved = super::artifacts::resolve(&state, &workspace, &source).await?;
    resolved.authorize(&caller, Role::Writer, &ws)?;
    let (run_id, logged_model_id, experiment_id) = match &resolved.owner {
        super::artifacts::Owner::Run { run_id } => (Some(run_id.clone()), None, None),
        super::artifacts::Owner::Model(m) => (
            (!m.source_run_id.is_empty()).then(|| m.source_run_id.clone()),
            Some(m.id.clone()),
            Some(m.experiment_id.clone()),
        ),
        // A copy of a registered version (`copy_model_version`) keeps the source's lineage.
        super::artifacts::Owner::Version { version, .. } => {
            (version.run_id.clone(), version.logged_model_id.clone(), version.experiment_id.clone())
        }
        super::artifacts::Owner::Trace(t) => {
            return Err(MlError::invalid(format!(
                "source {source:?} is trace {}'s files, not a model's",
                t.id
            )))
        }
    };
    let claimed_run = req.opt_str("run_id").filter(|r| !r.is_empty());
    let claimed_model = req.opt_str("model_id").filter(|m| !m.is_empty());
    if let Some(own) = &caller.token.run_id {
        // Lineage a run token records must be its own: no other run, no other logged model.
        if let Some(r) = &claimed_run {
            caller.require_run(Role::Writer, &ws, r)?;
        }
        if let Some(m) = claimed_model.as_ref().filter(|m| Some(*m) != logged_model_id.as_ref()) {
            return Err(Error::Forbidden(format!(
                "this token may only be used for run {own}; model_id {m} is not the registered source"
            ))
            .into());
        }
    }
    // As MLflow: a run_id given with a source must be the run that holds the source, or at least
    // a run that exists; lineage pointing nowhere is refused, not recorded.
    if let Some(claimed) = &claimed_run {
        match &run_id {
            Some(holder) if holder != claimed => {
                return Err(Error::invalid(format!(
                    "The run_id request parameter must identify the resource that contains the source: \
                     {source} belongs to run {holder}, not {claimed}"
                ))
                .into());
            }
            Some(_) => {}
            None => {
                if state.store.run(&workspace, claimed).await.is_err() {
                    return Err(Error::invalid(format!("run_id {claimed}: no such run")).into());
                }
            }
        }
    }
    let new = NewModelVersion {
        name,
        description: req.opt_str("description").unwrap_or_default(),
        tags,
        run_id: claimed_run.or(run_id),
        experiment_id,
        logged_model_id: claimed_model.or(logged_model_id),
        source: Some(source.clone()),
        ..Default::default()
    };
    let v = match &resolved.owner {
        super::artifacts::Owner::Version { files, .. } => {
            // The same blobs under the new version: nothing is copied.
            let files: Vec<_> = files
                .iter()
                .filter_map(|f| {
                    let rel = cairn_core::RelPath::parse(&f.path).ok()?.strip_prefix(&resolved.path)?;
                    (!rel.is_root()).then(|| ModelFile { path: rel.to_string(), ..f.clone() })
                })
                .collect();
            if files.is_empty() {
                return Err(MlError::does_not_exist(format!(
                    "no files under {}",
                    cairn_core::quoted(&source)
                )));
            }
            crate::models::register_from_manifest(&state, &caller.token.name, &workspace, files, new).await
        }
        _ => {
            crate::models::register_from_blobs(
                &state,
                &caller.token.name,
                &workspace,
                &resolved.blobs,
                &resolved.path,
                new,
            )
            .await
        }
    }
    .map_err(ml)?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

/// The tag by which MLflow's clients mark a registered model or version as a prompt (MLflow's
/// prompt registry is its model registry with these tags and no files).
const IS_PROMPT: &str = "mlflow.prompt.is_prompt";
/// The `source` a prompt version is created with: placeholders, since a prompt's template is in
/// its tags (the client's and MLflow's own store's).
const PROMPT_SOURCES: [&str; 2] = ["dummy-source", "prompt-template"];

/// As MLflow's handler: the last `mlflow.prompt.is_prompt` tag wins, and only `true` (any case)
/// makes a prompt.
fn is_prompt(tags: &BTreeMap<String, String>) -> bool {
    tags.get(IS_PROMPT).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A prompt's version (`mlflow.genai.register_prompt`): tags hold the template, so there are no
/// files to resolve; the source must be one of MLflow's placeholders, and lineage to a run, if
/// given, must point at a run of this workspace.
async fn create_prompt_version(
    state: &AppState,
    caller: &Caller,
    workspace: &Workspace,
    req: &Req,
    name: String,
    source: String,
    tags: BTreeMap<String, String>,
) -> MlResult<Json<Value>> {
    if !PROMPT_SOURCES.contains(&source.as_str()) {
        return Err(MlError::invalid(format!(
            "Invalid prompt source: '{source}'. Prompt sources must use an MLflow placeholder."
        )));
    }
    let run_id = req.opt_str("run_id").filter(|r| !r.is_empty());
    if let Some(r) = &run_id {
        if caller.token.run_id.is_some() {
            caller.require_run(Role::Writer, &workspace.name, r)?;
        }
        state
            .store
            .run(workspace, r)
            .await
            .map_err(|_| Error::invalid(format!("run_id {r}: no such run")))?;
    }
    let new = NewModelVersion {
        name,
        description: req.opt_str("description").unwrap_or_default(),
        tags,
        run_id,
        source: Some(source),
        ..Default::default()
    };
    let v = state.store.create_model_version(workspace, &new, &caller.token.name, &[]).await.map_err(ml)?;
    Ok(Json(json!({"model_version": version_json(&v)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, tags: &[(&str, &str)]) -> Model {
        Model {
            name: name.into(),
            workspace: "w".into(),
            description: String::new(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            created_by: "t".into(),
            created_at: 0,
            updated_at: 0,
            latest_version: None,
            aliases: BTreeMap::new(),
        }
    }

    fn version(name: &str, n: i64, run: Option<&str>, tags: &[(&str, &str)]) -> ModelVersion {
        ModelVersion {
            id: format!("{name}:{n}"),
            name: name.into(),
            version: n,
            workspace: "w".into(),
            description: String::new(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            properties: BTreeMap::new(),
            status: "READY".into(),
            stage: "None".into(),
            source: format!("runs:/{}/model", run.unwrap_or("none")),
            run_id: run.map(String::from),
            experiment_id: None,
            logged_model_id: None,
            framework: None,
            framework_version: None,
            created_by: "t".into(),
            created_at: n,
            updated_at: n,
            size: 0,
            aliases: Vec::new(),
        }
    }

    #[test]
    fn version_filters_take_mlflows_fields_and_operators() {
        let (f, name, run) = version_filter("name = 'wine' and run_id IN ('r1', 'r2')").unwrap();
        assert_eq!((name.as_deref(), run), (Some("wine"), None), "only = pins the query");
        assert!(f(&version("wine", 1, Some("r2"), &[])));
        assert!(!f(&version("wine", 1, Some("r3"), &[])));
        assert!(!f(&version("beer", 1, Some("r1"), &[])));
        let (f, _, run) =
            version_filter("run_id = 'r1' AND version_number >= 2 AND tags.stage != 'old'").unwrap();
        assert_eq!(run.as_deref(), Some("r1"));
        assert!(f(&version("m", 2, Some("r1"), &[])));
        assert!(!f(&version("m", 1, Some("r1"), &[])));
        assert!(!f(&version("m", 3, Some("r1"), &[("stage", "old")])));
        let (f, _, _) = version_filter("source_path LIKE 'runs:/r9/%' and name ILIKE 'WI%'").unwrap();
        assert!(f(&version("wine", 1, Some("r9"), &[])));
        assert!(!f(&version("wine", 1, Some("r8"), &[])));
        for bad in ["version_number > 'x'", "colour = 'red'", "name > 'a'", "run_id IN 'r1'", "name = wine"] {
            let e = version_filter(bad).err().unwrap_or_else(|| panic!("{bad} was accepted"));
            assert!(e.message.contains("Invalid model-version filter"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn registry_order_by_is_checked_and_applied_in_order() {
        let o = parse_registry_order(&["version_number ASC".into(), "name desc".into()], true).unwrap();
        assert_eq!(o, [(ModelField::Version, true), (ModelField::Name, false)]);
        assert_eq!(model_order(&["last_updated_timestamp".into()]).unwrap(), [(ModelField::Updated, true)]);
        assert!(model_order(&["version_number DESC".into()]).is_err(), "models have no version number");
        assert!(model_order(&["name sideways".into()]).is_err());
        assert!(model_order(&["name".into(), "name DESC".into()]).is_err());
        let (a, b) = (version("a", 1, None, &[]), version("a", 2, None, &[]));
        let cmp = |f| match f {
            ModelField::Version => a.version.cmp(&b.version),
            _ => std::cmp::Ordering::Equal,
        };
        assert_eq!(
            ordered(&[(ModelField::Name, true), (ModelField::Version, false)], cmp),
            std::cmp::Ordering::Greater
        );
    }

    #[test]
    fn model_filters_combine_clauses_with_and() {
        let f = model_filter("name LIKE 'wi%' AND tag.`mlflow.prompt.is_prompt` != 'true'").unwrap();
        assert!(f(&model("wine", &[])));
        assert!(!f(&model("wine", &[("mlflow.prompt.is_prompt", "true")])));
        assert!(!f(&model("beer", &[])));
        let f = model_filter("tags.team = 'a and b'").unwrap();
        assert!(f(&model("x", &[("team", "a and b")])));
        assert!(!f(&model("x", &[])));
        assert!(model_filter("").unwrap()(&model("any", &[])));
        assert!(model_filter("version > 3").is_err());
    }

    #[test]
    fn aliases_follow_mlflows_rule() {
        assert!(validate_alias("production").is_ok());
        assert!(validate_alias("champion-2_b").is_ok());
        for bad in ["latest", "v3", "", "a b", "x/y"] {
            assert!(validate_alias(bad).is_err(), "{bad}");
        }
        assert!(validate_alias("version").is_ok());
    }
}
