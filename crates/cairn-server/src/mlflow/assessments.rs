//! Assessments of MLflow 3 traces: the feedback and expectations that `mlflow.log_feedback`,
//! `mlflow.log_expectation`, `override_feedback`, `update_assessment` and `delete_assessment`
//! send (`/api/3.0/mlflow/traces/{trace_id}/assessments[/{assessment_id}]`).
//!
//! A trace's assessments are kept with it, as the JSON list of MLflow's `Assessment` messages
//! (`traces.assessments_json`), and come back in its `TraceInfoV3`. Each change is one locked
//! read-modify-write of that list (`Store::change_trace_assessments`). As in MLflow's store: an
//! assessment that `overrides` another makes that one invalid, and deleting it makes that one
//! valid again; an update changes only the fields its mask names, merges metadata, and cannot
//! turn feedback into an expectation or back.

use axum::extract::Path;
use axum::Json;
use cairn_core::api::Role;
use cairn_core::Error;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::traces::{authorize, load, require_read};
use super::wire::{MlError, MlResult, Req};
use super::Ctx;

/// The value kinds an assessment holds exactly one of.
const KINDS: [&str; 2] = ["feedback", "expectation"];
/// Fields an update may name (in the mask's snake or camel case).
const UPDATABLE: [&str; 5] = ["assessment_name", "expectation", "feedback", "rationale", "metadata"];

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn not_found(trace: &str, id: &str) -> MlError {
    MlError::does_not_exist(format!("Assessment with ID '{id}' not found for trace '{trace}'"))
}

/// The stored list (empty when the trace has none).
fn parse(stored: Option<&str>) -> Result<Vec<Value>, Error> {
    match stored {
        None => Ok(Vec::new()),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| Error::Internal(format!("stored assessments: {e}")))
        }
    }
}

fn id_of(a: &Value) -> Option<&str> {
    a.get("assessment_id").and_then(Value::as_str)
}

fn kind_of(a: &Value) -> Option<&'static str> {
    KINDS.into_iter().find(|k| a.get(*k).is_some_and(|v| !v.is_null()))
}

/// Marks assessment `id` of `list` valid or not; false if there is none.
fn set_valid(list: &mut [Value], id: &str, valid: bool) -> bool {
    match list.iter_mut().find(|a| id_of(a) == Some(id)) {
        Some(a) => {
            a["valid"] = json!(valid);
            true
        }
        None => false,
    }
}

/// The `assessment` object of a request.
fn body_assessment(req: &Req) -> MlResult<Map<String, Value>> {
    req.0
        .get("assessment")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| MlError::invalid("Missing value for required parameter 'assessment'."))
}

/// Checks an assessment's fields have the types MLflow's client parses (one bad assessment would
/// make every read of its trace fail there): a name, exactly one of feedback and expectation,
/// string metadata, RFC 3339 times, text where text belongs, and a source that is an object.
fn check_fields(trace_id: &str, a: &Map<String, Value>) -> MlResult<()> {
    if let Some(other) = a.get("trace_id").and_then(Value::as_str).filter(|t| !t.is_empty() && *t != trace_id)
    {
        return Err(MlError::invalid(format!(
            "the assessment names trace {other}, but is sent to trace {trace_id}"
        )));
    }
    if a.get("assessment_name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(MlError::invalid("Missing value for required parameter 'assessment.assessment_name'."));
    }
    let kinds = KINDS.iter().filter(|k| a.get(**k).is_some_and(|v| !v.is_null())).count();
    if kinds != 1 {
        return Err(MlError::invalid("An assessment holds exactly one of `feedback` and `expectation`."));
    }
    for kind in KINDS {
        if a.get(kind).is_some_and(|v| !v.is_null() && !v.is_object()) {
            return Err(MlError::invalid(format!("assessment.{kind} must be an object")));
        }
    }
    if let Some(m) = a.get("metadata").filter(|m| !m.is_null()) {
        if !m.as_object().is_some_and(|m| m.values().all(Value::is_string)) {
            return Err(MlError::invalid("assessment.metadata must map keys to strings"));
        }
    }
    for field in ["create_time", "last_update_time"] {
        match a.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => {}
            Some(other) => {
                return Err(MlError::invalid(format!("assessment.{field} {other} is not an RFC 3339 time")))
            }
        }
    }
    for field in ["assessment_id", "span_id", "rationale", "overrides"] {
        if a.get(field).is_some_and(|v| !v.is_null() && !v.is_string()) {
            return Err(MlError::invalid(format!("assessment.{field} must be a string")));
        }
    }
    if a.get("source").is_some_and(|v| !v.is_null() && !v.is_object()) {
        return Err(MlError::invalid("assessment.source must be an object"));
    }
    Ok(())
}

/// Checks a new assessment and fills in what the server owns: its id, trace, times and validity.
fn new_assessment(trace_id: &str, mut a: Map<String, Value>) -> MlResult<Map<String, Value>> {
    check_fields(trace_id, &a)?;
    let at = now();
    a.insert("assessment_id".into(), json!(format!("a-{}", uuid::Uuid::new_v4().simple())));
    a.insert("trace_id".into(), json!(trace_id));
    a.entry("create_time").or_insert_with(|| json!(at));
    a.insert("last_update_time".into(), json!(at));
    a.insert("valid".into(), json!(true));
    Ok(a)
}

/// The assessments a logged trace came with (StartTraceV3), checked, merged into those the trace
/// already has (`stored`, a trace logged again): one with an id already there replaces it, the
/// others are added; those without an id or times get them. Returns the JSON list to store.
pub(super) fn merge_incoming(trace_id: &str, stored: Option<&str>, incoming: &[Value]) -> MlResult<String> {
    let mut list = parse(stored)?;
    for a in incoming {
        let mut a = a
            .as_object()
            .cloned()
            .ok_or_else(|| MlError::invalid("trace_info.assessments must hold objects"))?;
        check_fields(trace_id, &a)?;
        let at = now();
        a.insert("trace_id".into(), json!(trace_id));
        a.entry("assessment_id").or_insert_with(|| json!(format!("a-{}", uuid::Uuid::new_v4().simple())));
        a.entry("create_time").or_insert_with(|| json!(at));
        a.entry("last_update_time").or_insert_with(|| json!(at));
        a.entry("valid").or_insert(json!(true));
        let a = Value::Object(a);
        match list.iter_mut().find(|old| id_of(old).is_some() && id_of(old) == id_of(&a)) {
            Some(old) => *old = a,
            None => list.push(a),
        }
    }
    serde_json::to_string(&list).map_err(|e| Error::Internal(format!("assessments: {e}")).into())
}

/// Changes trace `trace_id`'s assessments with `change` (given the list, it edits it and says
/// what to answer), once the caller's right to change the trace is checked. A change that fails
/// writes nothing, even if it had edited the list before failing.
async fn change_assessments<R>(
    Ctx { state, caller, ws }: Ctx,
    trace_id: &str,
    change: impl FnOnce(&mut Vec<Value>) -> MlResult<R>,
) -> MlResult<R> {
    require_read(&caller, &ws)?;
    let workspace = state.store.workspace(&ws).await?;
    let trace = load(&state, &workspace, trace_id).await?;
    authorize(&caller, Role::Writer, &ws, &trace)?;
    let changed = state
        .store
        .change_trace_assessments(&workspace, trace_id, |stored| {
            let mut list = parse(stored)?;
            let out = change(&mut list);
            let text = match out {
                Ok(_) => Some(
                    serde_json::to_string(&list).map_err(|e| Error::Internal(format!("assessments: {e}")))?,
                ),
                Err(_) => None,
            };
            Ok((text, out))
        })
        .await;
    match changed {
        Ok(out) => out,
        // A trace deleted between the check and the change is the same 404 as one never there.
        Err(Error::NotFound { .. }) => {
            Err(MlError::does_not_exist(format!("Trace with ID '{trace_id}' not found.")))
        }
        Err(other) => Err(other.into()),
    }
}

/// `POST …/traces/{trace_id}/assessments` (CreateAssessment).
pub async fn create(
    ctx: Ctx,
    Path((_, trace_id)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let new = Value::Object(new_assessment(&trace_id, body_assessment(&req)?)?);
    let overrides =
        new.get("overrides").and_then(Value::as_str).filter(|o| !o.is_empty()).map(str::to_string);
    let created = change_assessments(ctx, &trace_id, |list| {
        if let Some(old) = &overrides {
            if !set_valid(list, old, false) {
                return Err(not_found(&trace_id, old));
            }
        }
        list.push(new.clone());
        Ok(new)
    })
    .await?;
    Ok(Json(json!({"assessment": created})))
}

/// `GET …/traces/{trace_id}/assessments/{assessment_id}` (GetAssessmentRequest).
pub async fn get(
    Ctx { state, caller, ws }: Ctx,
    Path((_, trace_id, id)): Path<(String, String, String)>,
) -> MlResult<Json<Value>> {
    require_read(&caller, &ws)?;
    let workspace = state.store.workspace(&ws).await?;
    let trace = load(&state, &workspace, &trace_id).await?;
    authorize(&caller, Role::Reader, &ws, &trace)?;
    let list = parse(trace.assessments_json.as_deref())?;
    let found =
        list.into_iter().find(|a| id_of(a) == Some(id.as_str())).ok_or_else(|| not_found(&trace_id, &id))?;
    Ok(Json(json!({"assessment": found})))
}

/// The fields an update mask names, in snake case: protobuf's JSON writes a `FieldMask` as one
/// comma-separated string of camel-case paths (`"assessmentName,feedback"`).
fn mask_paths(req: &Req) -> MlResult<Vec<String>> {
    let raw: Vec<String> = match req.0.get("update_mask") {
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Object(m)) => m
            .get("paths")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut paths = Vec::new();
    for p in raw.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let mut snake = String::with_capacity(p.len() + 4);
        for c in p.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        if !UPDATABLE.contains(&snake.as_str()) {
            return Err(MlError::invalid(format!(
                "update_mask names {p:?}: an update may change {}",
                UPDATABLE.join(", ")
            )));
        }
        paths.push(snake);
    }
    if paths.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'update_mask'."));
    }
    Ok(paths)
}

/// Applies an update's masked fields to `old`, as MLflow's store does.
fn apply_update(old: &mut Value, update: &Map<String, Value>, paths: &[String]) -> MlResult<()> {
    if paths.iter().any(|p| p == "feedback") && paths.iter().any(|p| p == "expectation") {
        return Err(MlError::invalid("Cannot specify both `expectation` and `feedback` parameters."));
    }
    for p in paths {
        // A masked field the body lacks would be erased; MLflow's client always sends it.
        let value = update.get(p.as_str()).filter(|v| !v.is_null()).cloned().ok_or_else(|| {
            MlError::invalid(format!("update_mask names {p}, but the assessment sent has no {p}"))
        })?;
        match p.as_str() {
            kind @ ("feedback" | "expectation") => {
                if kind_of(old) != Some(kind) {
                    let other = if kind == "feedback" { "an Expectation" } else { "a Feedback" };
                    return Err(MlError::invalid(format!(
                        "Cannot update {kind} value on {other} assessment."
                    )));
                }
                if !value.is_object() {
                    return Err(MlError::invalid(format!("assessment.{kind} must be an object")));
                }
                old[kind] = value;
            }
            "metadata" => {
                let Some(new) = value.as_object().filter(|m| m.values().all(Value::is_string)) else {
                    return Err(MlError::invalid("assessment.metadata must map keys to strings"));
                };
                let mut merged = old.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
                merged.extend(new.clone());
                old["metadata"] = Value::Object(merged);
            }
            "assessment_name" if value.as_str().is_none_or(str::is_empty) => {
                return Err(MlError::invalid("assessment_name must not be empty"));
            }
            "rationale" if !value.is_string() => {
                return Err(MlError::invalid("assessment.rationale must be a string"));
            }
            field => old[field] = value,
        }
    }
    old["last_update_time"] = json!(now());
    Ok(())
}

/// `PATCH …/traces/{trace_id}/assessments/{assessment_id}` (UpdateAssessment).
pub async fn update(
    ctx: Ctx,
    Path((_, trace_id, id)): Path<(String, String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let update = body_assessment(&req)?;
    let paths = mask_paths(&req)?;
    let updated = change_assessments(ctx, &trace_id, |list| {
        let a = list
            .iter_mut()
            .find(|a| id_of(a) == Some(id.as_str()))
            .ok_or_else(|| not_found(&trace_id, &id))?;
        apply_update(a, &update, &paths)?;
        Ok(a.clone())
    })
    .await?;
    Ok(Json(json!({"assessment": updated})))
}

/// `DELETE …/traces/{trace_id}/assessments/{assessment_id}` (DeleteAssessment).
pub async fn delete(
    ctx: Ctx,
    Path((_, trace_id, id)): Path<(String, String, String)>,
) -> MlResult<Json<Value>> {
    change_assessments(ctx, &trace_id, |list| {
        // As in MLflow, deleting what is not there succeeds (a retried delete is no error).
        let Some(at) = list.iter().position(|a| id_of(a) == Some(id.as_str())) else { return Ok(()) };
        let gone = list.remove(at);
        // The assessment it overrode counts again.
        if let Some(old) = gone.get("overrides").and_then(Value::as_str) {
            set_valid(list, old, true);
        }
        Ok(())
    })
    .await?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Req {
        Req(v.as_object().unwrap().clone())
    }

    #[test]
    fn new_assessments_get_the_servers_fields_and_need_one_value() {
        let a = new_assessment(
            "tr-1",
            json!({"assessment_name": "quality", "feedback": {"value": 0.9}}).as_object().unwrap().clone(),
        )
        .unwrap();
        assert!(a["assessment_id"].as_str().unwrap().starts_with("a-"));
        assert_eq!((a["trace_id"].as_str(), a["valid"].as_bool()), (Some("tr-1"), Some(true)));
        for (bad, words) in [
            (json!({"feedback": {"value": 1}}), "assessment_name"),
            (json!({"assessment_name": "q"}), "exactly one"),
            (json!({"assessment_name": "q", "feedback": {}, "expectation": {}}), "exactly one"),
            (json!({"assessment_name": "q", "feedback": {}, "trace_id": "tr-2"}), "sent to trace tr-1"),
            (json!({"assessment_name": "q", "feedback": {}, "metadata": {"k": 1}}), "strings"),
        ] {
            let e = new_assessment("tr-1", bad.as_object().unwrap().clone()).unwrap_err();
            assert!(e.message.contains(words), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn updates_change_what_the_mask_names() {
        let mut a = json!({"assessment_id": "a-1", "assessment_name": "q", "feedback": {"value": 1},
                           "rationale": "r", "metadata": {"a": "1"}});
        let paths = mask_paths(&req(json!({"update_mask": "feedback,metadata,assessmentName"}))).unwrap();
        assert_eq!(paths, ["feedback", "metadata", "assessment_name"]);
        let update = json!({"feedback": {"value": 0}, "metadata": {"b": "2"}, "assessment_name": "q2", "rationale": "x"});
        apply_update(&mut a, update.as_object().unwrap(), &paths).unwrap();
        assert_eq!(a["feedback"]["value"], 0);
        assert_eq!(a["metadata"], json!({"a": "1", "b": "2"}));
        assert_eq!((a["assessment_name"].as_str(), a["rationale"].as_str()), (Some("q2"), Some("r")));
        let e = apply_update(
            &mut a,
            json!({"expectation": {"value": 1}}).as_object().unwrap(),
            &["expectation".into()],
        );
        assert!(e.unwrap_err().message.contains("on a Feedback assessment"));
        assert!(mask_paths(&req(json!({"update_mask": "trace_id"}))).is_err());
        assert!(mask_paths(&req(json!({}))).is_err());
        assert_eq!(
            mask_paths(&req(json!({"update_mask": {"paths": ["rationale"]}}))).unwrap(),
            ["rationale"]
        );
    }
}
