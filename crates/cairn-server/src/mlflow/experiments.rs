//! `experiments/*`: create, get (by id or name), search, rename, delete/restore, tags.

use axum::Json;
use cairn_core::api::{Role, Workspace};
use cairn_core::runs::{KeyValue, LogBatch};
use cairn_core::search::{Clause, Entity, Op, Value as FilterValue};
use cairn_core::Error;
use cairn_store::MlflowExperiment;
use serde_json::{json, Value};

use super::wire::{experiment_json, last_update_time, ExperimentIds, MlError, MlResult, Req};
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

/// How this workspace's experiments are shown to MLflow's clients (its default one as `"0"`).
pub async fn experiment_ids(state: &AppState, ws: &Workspace) -> MlResult<ExperimentIds> {
    let default = state.store.find_experiment(ws, DEFAULT_EXPERIMENT).await?;
    Ok(ExperimentIds::with_default(default.map(|(id, _)| id)))
}

/// [`experiment_ids`] of the workspace named `ws`.
pub async fn experiment_ids_in(state: &AppState, ws: &str) -> MlResult<ExperimentIds> {
    experiment_ids(state, &state.store.workspace(ws).await?).await
}

/// The longest experiment tag value MLflow stores, in characters.
const MAX_EXPERIMENT_TAG_VALUE: usize = 20_000;

fn validate_tag(key: &str, value: &str) -> MlResult<()> {
    if value.len() > MAX_EXPERIMENT_TAG_VALUE && value.chars().count() > MAX_EXPERIMENT_TAG_VALUE {
        return Err(MlError::invalid(format!(
            "'value' exceeds the maximum length of {MAX_EXPERIMENT_TAG_VALUE} characters"
        )));
    }
    let batch =
        LogBatch { tags: vec![KeyValue { key: key.into(), value: value.into() }], ..Default::default() };
    Ok(validate_batch(&batch)?)
}

/// `experiments/create`. MLflow stores an `artifact_location` as given, and its runs' artifacts
/// go to `LOCATION/RUN_ID/artifacts`: to a bucket or a path the client writes to directly,
/// past the server. Here every artifact is the server's own (a run's are `cairn run show`'s,
/// served at `mlflow-artifacts:/EXPERIMENT_ID/RUN_ID/artifacts`), so a location is refused
/// rather than accepted and ignored: the caller learns at once that artifacts will not go
/// where it asked, instead of finding them missing from its bucket later.
pub async fn create(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let name = req.str("name")?;
    validate_experiment_name(&name)?;
    if let Some(location) = req.opt_str("artifact_location").filter(|l| !l.is_empty()) {
        return Err(MlError::invalid(format!(
            "artifact_location {location:?} is not supported: this server keeps every run's artifacts \
             itself, at mlflow-artifacts:/EXPERIMENT_ID/RUN_ID/artifacts; create the experiment \
             without an artifact_location"
        )));
    }
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
    Ok(Json(json!({"experiment": experiment_json(&exp, &experiment_ids(&state, &workspace).await?)})))
}

pub async fn get_by_name(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    super::require_read(&caller, &ws)?;
    let name = req.str("experiment_name")?;
    let workspace = state.store.workspace(&ws).await?;
    match state.store.mlflow_experiment_by_name(&workspace, &name).await? {
        Some(exp) => {
            Ok(Json(json!({"experiment": experiment_json(&exp, &experiment_ids(&state, &workspace).await?)})))
        }
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

/// SQL's LIKE on text: `%` any run of characters, `_` one character. Greedy, going back only to
/// the last `%`: at most len(text) × len(pattern) steps whatever the pattern (trying every split
/// at every `%` is exponential: `'%%%%%%%%%%x'` against a long name held a runtime thread).
pub(super) fn like(text: &[char], pattern: &[char]) -> bool {
    let (mut t, mut p) = (0, 0);
    // After the last `%`: where the pattern resumes, and the text position it was tried at.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('%') => {
                p += 1;
                resume = Some((p, t));
            }
            Some(c) if *c == '_' || *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                // Let the last `%` take one character more and try again from there.
                Some((rp, rt)) => {
                    resume = Some((rp, rt + 1));
                    (p, t) = (rp, rt + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

/// MLflow's experiment filter (`name`, `creation_time`, `last_update_time`, `tags.KEY`, joined by
/// `and`), parsed by `cairn_core::search`; experiments are few, so it is applied here.
fn experiment_filter(filter: &str) -> MlResult<Vec<Clause>> {
    cairn_core::search::parse_experiment_filter(filter)
        .map_err(|e| MlError::invalid(format!("Invalid experiment filter {filter:?}: {e}")))
}

pub(super) fn text_matches(text: &str, op: Op, value: &FilterValue) -> bool {
    let chars = |s: &str| s.chars().collect::<Vec<_>>();
    match (op, value) {
        (Op::Eq, FilterValue::Text(v)) => text == v,
        (Op::Ne, FilterValue::Text(v)) => text != v,
        (Op::Like, FilterValue::Text(v)) => like(&chars(text), &chars(v)),
        (Op::ILike, FilterValue::Text(v)) => like(&chars(&text.to_lowercase()), &chars(&v.to_lowercase())),
        (Op::In, FilterValue::List(vs)) => vs.iter().any(|v| v == text),
        (Op::NotIn, FilterValue::List(vs)) => !vs.iter().any(|v| v == text),
        _ => false,
    }
}

fn experiment_matches(e: &MlflowExperiment, clauses: &[Clause]) -> bool {
    clauses.iter().all(|c| match (c.entity, c.key.as_str(), &c.value) {
        (Entity::Tag, key, v) => e.tags.get(key).is_some_and(|t| text_matches(t, c.op, v)),
        (_, "name", v) => text_matches(&e.name, c.op, v),
        (_, key, FilterValue::Number(n)) => {
            let t = if key == "creation_time" { e.created_at } else { last_update_time(e) };
            number_matches(t as f64, c.op, *n)
        }
        _ => false,
    })
}

/// `x OP n` for the numeric comparisons (a NaN matches none but `!=`).
pub(super) fn number_matches(x: f64, op: Op, n: f64) -> bool {
    match op {
        Op::Eq => x == n,
        Op::Ne => x != n,
        Op::Lt => x < n,
        Op::Le => x <= n,
        Op::Gt => x > n,
        Op::Ge => x >= n,
        _ => false,
    }
}

pub fn page_offset(req: &Req) -> MlResult<usize> {
    match req.opt_str("page_token").filter(|t| !t.is_empty()) {
        Some(t) => {
            t.parse().map_err(|_| MlError::invalid(format!("page_token {t:?} is not one this server gave")))
        }
        None => Ok(0),
    }
}

/// The attributes MLflow orders experiments by.
#[derive(Clone, Copy, PartialEq)]
enum SortKey {
    Name,
    CreationTime,
    LastUpdateTime,
    ExperimentId,
}

/// MLflow's experiment `order_by`: `[attribute.]KEY [ASC|DESC]` terms; without any, newest
/// first (MLflow's `creation_time DESC, experiment_id ASC`). Unknown keys are a 400, as there.
fn experiment_order(terms: &[String]) -> MlResult<Vec<(SortKey, bool)>> {
    if terms.is_empty() {
        return Ok(vec![(SortKey::CreationTime, false), (SortKey::ExperimentId, true)]);
    }
    terms.iter().map(|t| order_term(t)).collect()
}

fn order_term(term: &str) -> MlResult<(SortKey, bool)> {
    let invalid = || {
        MlError::invalid(format!(
        "Invalid order_by clause {term:?}: name, experiment_id, creation_time or last_update_time, then ASC or DESC"
    ))
    };
    let mut words = term.split_whitespace();
    let key = words.next().ok_or_else(invalid)?;
    let key = key.strip_prefix("attribute.").or(key.strip_prefix("attributes.")).unwrap_or(key);
    let key = match key.trim_matches('`') {
        "name" => SortKey::Name,
        "creation_time" => SortKey::CreationTime,
        "last_update_time" => SortKey::LastUpdateTime,
        "experiment_id" => SortKey::ExperimentId,
        _ => return Err(invalid()),
    };
    let ascending = match words.next() {
        None => true,
        Some(w) if w.eq_ignore_ascii_case("asc") => true,
        Some(w) if w.eq_ignore_ascii_case("desc") => false,
        Some(_) => return Err(invalid()),
    };
    match words.next() {
        None => Ok((key, ascending)),
        Some(_) => Err(invalid()),
    }
}

/// Sorts by `order`, then by id descending unless the order names it (MLflow's tie-breaker), so
/// that pages cut at the same places from one request to the next.
fn sort_experiments(all: &mut [MlflowExperiment], order: &[(SortKey, bool)]) {
    let compare = |a: &MlflowExperiment, b: &MlflowExperiment, key: SortKey| match key {
        SortKey::Name => a.name.cmp(&b.name),
        SortKey::CreationTime => a.created_at.cmp(&b.created_at),
        SortKey::LastUpdateTime => last_update_time(a).cmp(&last_update_time(b)),
        SortKey::ExperimentId => a.id.cmp(&b.id),
    };
    let by_id = order.iter().any(|(k, _)| *k == SortKey::ExperimentId);
    all.sort_by(|a, b| {
        let terms = order.iter().map(|&(k, asc)| if asc { compare(a, b, k) } else { compare(b, a, k) });
        let tie = if by_id { std::cmp::Ordering::Equal } else { b.id.cmp(&a.id) };
        terms.chain([tie]).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
    });
}

pub async fn search(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    super::require_read(&caller, &ws)?;
    let clauses = experiment_filter(&req.opt_str("filter").unwrap_or_default())?;
    let order = experiment_order(&req.list("order_by"))?;
    let view = req.opt_str("view_type");
    let max = req.opt_i64("max_results")?.unwrap_or(1000).clamp(1, 50_000) as usize;
    let offset = page_offset(&req)?;
    let workspace = state.store.workspace(&ws).await?;
    let experiments = state.store.mlflow_experiments(&workspace).await?;
    let default = experiments.iter().find(|e| e.name == DEFAULT_EXPERIMENT).map(|e| e.id.clone());
    let ids = ExperimentIds::with_default(default);
    let mut all = Vec::new();
    for e in experiments {
        if view_admits(view.as_deref(), e.deleted_at.is_some())? && experiment_matches(&e, &clauses) {
            all.push(e);
        }
    }
    sort_experiments(&mut all, &order);
    let page: Vec<Value> = all.iter().skip(offset).take(max).map(|e| experiment_json(e, &ids)).collect();
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

pub async fn delete_tag(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    caller.require(Role::Writer, Some(&ws))?;
    let key = req.str("key")?;
    let workspace = state.store.workspace(&ws).await?;
    let exp = experiment(&state, &workspace, &req.str("experiment_id")?).await?;
    if !state.store.delete_experiment_tag(&exp.id, &key).await? {
        return Err(MlError::does_not_exist(format!(
            "No tag with name: {key} in experiment with id {}",
            exp.id
        )));
    }
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The greedy matcher agrees with LIKE's definition (every split tried) on every pattern of
    /// up to four signs over `a`, `b`, `%`, `_` against every text of up to five `a`/`b`s, and
    /// answers a pattern that is exponential for the definition.
    #[test]
    fn like_matches_the_definition_without_its_cost() {
        fn by_definition(text: &[char], pattern: &[char]) -> bool {
            match pattern.split_first() {
                None => text.is_empty(),
                Some(('%', rest)) => (0..=text.len()).any(|i| by_definition(&text[i..], rest)),
                Some((c, rest)) => text
                    .split_first()
                    .is_some_and(|(t, trest)| (*c == '_' || c == t) && by_definition(trest, rest)),
            }
        }
        fn all(signs: &[char], max: usize) -> Vec<Vec<char>> {
            let mut out = vec![vec![]];
            let mut last = vec![vec![]];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w: &Vec<char>| signs.iter().map(move |c| [w.clone(), vec![*c]].concat()))
                    .collect();
                out.extend(last.clone());
            }
            out
        }
        let texts = all(&['a', 'b'], 5);
        for pattern in all(&['a', 'b', '%', '_'], 4) {
            for text in &texts {
                assert_eq!(like(text, &pattern), by_definition(text, &pattern), "{text:?} LIKE {pattern:?}");
            }
        }
        // By the definition this takes about C(250, 40) steps: the test would never end.
        let text: Vec<char> = "a".repeat(250).chars().collect();
        let pattern: Vec<char> = format!("{}b", "%a".repeat(40)).chars().collect();
        assert!(!like(&text, &pattern));
        assert!(like(&text, &pattern[..pattern.len() - 1]));
    }

    #[test]
    fn experiment_filters() {
        let exp = |name: &str, created: i64, tags: &[(&str, &str)]| MlflowExperiment {
            id: "1".into(),
            name: name.into(),
            created_at: created,
            deleted_at: None,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let m =
            |filter: &str, e: &MlflowExperiment| experiment_matches(e, &experiment_filter(filter).unwrap());
        let wine = exp("wine_expt", 1000, &[("team", "wine"), ("mlflow.note.content", "x")]);
        let beer = exp("beer", 2000, &[]);
        assert!(m("name LIKE 'wine%'", &wine) && !m("name LIKE 'wine%'", &beer));
        assert!(m("attribute.name = 'wine_expt'", &wine) && !m("attributes.name = 'a'", &wine));
        assert!(
            m("name ILIKE '%EXP_'", &exp("my expt", 0, &[]))
                && !m("name ILIKE '%EXP_'", &exp("my exp", 0, &[]))
        );
        assert!(
            m("tags.team = 'wine'", &wine) && !m("tags.team = 'wine'", &beer),
            "a missing tag never matches"
        );
        assert!(m("tags.mlflow.note.content LIKE '%'", &wine));
        assert!(m("creation_time > 1500 and name != 'x'", &beer) && !m("creation_time > 1500", &wine));
        assert!(m("name IN ('beer', 'cider')", &beer) && m("name NOT IN ('beer')", &wine));
        assert!(m("", &beer));
        for bad in ["metrics.x > 1", "name = 3", "creation_time = 'x'", "status = 'x'"] {
            assert!(experiment_filter(bad).is_err(), "{bad}");
        }
    }
}
