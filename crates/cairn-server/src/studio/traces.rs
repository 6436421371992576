//! MLflow 3 traces in the studio: a workspace's traces (`/w/{ws}/traces`, optionally one
//! experiment's or one run's) and one trace (`/w/{ws}/traces/{id}`): its info, tags and metadata,
//! and its spans as a tree, those that came over OTLP or the `traces.json` the client uploaded
//! (`mlflow::spans::span_dicts`). The run page lists the run's traces with
//! [`run_section`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_core::api::Workspace;
use cairn_core::Error;
use cairn_store::{TraceRecord, SOURCE_RUN};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, badge, seg, Nav, OrPage, PageResult, Tone};
use super::session::Session;
use crate::state::AppState;

/// Most traces a list shows (newest first).
const MAX_LISTED: usize = 500;
/// Most traces the run page lists.
pub const RUN_TRACES: i64 = 50;
/// Larger span files are not read for the page.
const MAX_SPANS_BYTES: u64 = 8 * 1024 * 1024;
/// Characters of a preview, an input or an output shown (the rest is cut, with an ellipsis).
const SHOWN_CHARS: usize = 2000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/w/{ws}/traces", get(list)).route("/w/{ws}/traces/{id}", get(show))
}

fn trace_url(ws: &str, id: &str) -> String {
    format!("{}/traces/{}", layout::ws_url(ws), seg(id))
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn state_badge(state: &str) -> Markup {
    let tone = match state {
        "OK" => Tone::Ok,
        "ERROR" => Tone::Failed,
        "IN_PROGRESS" => Tone::Busy,
        _ => Tone::Waiting,
    };
    badge(state, tone)
}

/// The traces table (shared by the list and the run page).
fn table(ws: &str, traces: &[TraceRecord], with_run: bool) -> Markup {
    html! {
        div.table-wrap { table.traces-table {
            thead { tr {
                th scope="col" { "Trace" }
                th scope="col" { "Name" }
                th scope="col" { "State" }
                th scope="col" { "Request time" }
                th.num scope="col" { "Duration" }
                @if with_run { th scope="col" { "Run" } }
                th scope="col" { "Request" }
            } }
            tbody {
                @for t in traces {
                    tr data-trace=(t.id) {
                        td.mono { a href=(trace_url(ws, &t.id)) { (t.id) } }
                        td { (t.tags.get("mlflow.traceName").map_or("—", String::as_str)) }
                        td { (state_badge(&t.state)) }
                        td { (layout::time_el(t.request_time)) }
                        td.num { (t.execution_duration.map_or_else(|| "—".to_string(), layout::fmt_duration)) }
                        @if with_run {
                            td { @if let Some(run) = t.metadata.get(SOURCE_RUN) {
                                a.mono href={ (layout::ws_url(ws)) "/runs/" (seg(run)) } { (run) }
                            } @else { "—" } }
                        }
                        td.mono { (t.request_preview.as_deref().map(cut).unwrap_or_default()) }
                    }
                }
            }
        } }
    }
}

/// The run page's section: the traces logged in the run, if there are any.
pub fn run_section(ws: &str, run_id: &str, traces: &[TraceRecord]) -> Markup {
    html! {
        @if !traces.is_empty() {
            section #traces {
                h2 { "Traces" }
                (table(ws, traces, false))
                @if traces.len() as i64 >= RUN_TRACES {
                    p { a href={ (layout::ws_url(ws)) "/traces?run=" (layout::q(run_id)) } { "All traces of this run →" } }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    experiment: Option<String>,
    run: Option<String>,
}

async fn list(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    let experiment = q.experiment.filter(|e| !e.is_empty());
    let mut title = "Traces".to_string();
    // One page of the newest, read as one query (the whole list is a search away).
    let limit = MAX_LISTED as i64;
    let (traces, more) = match (&q.run, &experiment) {
        (Some(run), _) => {
            title = format!("Traces of run {run}");
            let mut traces = state.store.traces_of_run(&workspace, run, limit + 1).await.or_page(&s)?;
            let more = traces.len() > MAX_LISTED;
            traces.truncate(MAX_LISTED);
            (traces, more)
        }
        (None, Some(name)) => {
            title = format!("Traces of experiment {name}");
            let (id, _) = state
                .store
                .find_experiment(&workspace, name)
                .await
                .or_page(&s)?
                .ok_or_else(|| Error::not_found("experiment", name))
                .or_page(&s)?;
            state.store.search_traces(&workspace, &[id], &[], &[], 0, limit).await.or_page(&s)?
        }
        (None, None) => state.store.search_traces(&workspace, &[], &[], &[], 0, limit).await.or_page(&s)?,
    };
    let body = html! {
        h1 { (title) }
        @if traces.is_empty() {
            (layout::empty("No trace yet: decorate a function with @mlflow.trace and call it with MLFLOW_TRACKING_URI set to this workspace's tracking URI."))
        } @else {
            @if more {
                p.muted { "The newest " (traces.len()) " traces." }
            }
            (table(&ws, &traces, true))
        }
    };
    Ok(layout::page(&s, Some(&ws), Nav::Traces, &title, body).into_response())
}

/// One span of `traces.json` (MLflow's `Span.to_dict`), as the page shows it.
#[derive(Debug, PartialEq)]
struct SpanView {
    id: String,
    parent: Option<String>,
    name: String,
    kind: String,
    ok: bool,
    status_message: String,
    duration_ms: Option<i64>,
    inputs: Option<String>,
    outputs: Option<String>,
    events: Vec<String>,
}

/// A span attribute: MLflow stores each JSON-encoded (`"\"LLM\""`), which is shown decoded.
fn attribute(span: &Value, key: &str) -> Option<String> {
    let raw = span.get("attributes")?.get(key)?;
    let text = raw.as_str().map(str::to_string).unwrap_or_else(|| raw.to_string());
    Some(match serde_json::from_str::<Value>(&text) {
        Ok(Value::String(s)) => s,
        _ => text,
    })
}

/// MLflow's span dicts as the page shows them, in the order given (parents before children in
/// a `traces.json`; by start time for spans kept here).
fn span_views(spans: &[Value]) -> Vec<SpanView> {
    spans
        .iter()
        .map(|sp| {
            let text = |k: &str| sp.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let nanos = |k: &str| sp.get(k).and_then(Value::as_i64);
            let code = sp.get("status").and_then(|s| s.get("code")).and_then(Value::as_str).unwrap_or("");
            SpanView {
                id: text("span_id"),
                parent: sp.get("parent_span_id").and_then(Value::as_str).map(str::to_string),
                name: text("name"),
                kind: attribute(sp, "mlflow.spanType").unwrap_or_default(),
                ok: code != "STATUS_CODE_ERROR",
                status_message: sp
                    .get("status")
                    .and_then(|s| s.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                duration_ms: nanos("end_time_unix_nano")
                    .zip(nanos("start_time_unix_nano"))
                    .map(|(e, s)| (e - s) / 1_000_000),
                inputs: attribute(sp, "mlflow.spanInputs"),
                outputs: attribute(sp, "mlflow.spanOutputs"),
                events: sp
                    .get("events")
                    .and_then(Value::as_array)
                    .map(|evs| {
                        evs.iter()
                            .map(|e| {
                                let name = e.get("name").and_then(Value::as_str).unwrap_or("event");
                                let msg = e
                                    .get("attributes")
                                    .and_then(|a| a.get("exception.message"))
                                    .and_then(Value::as_str);
                                msg.map_or_else(|| name.to_string(), |m| format!("{name}: {m}"))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The spans as nested lists: each span's children below it, roots (and orphans) at the top.
fn span_tree(spans: &[SpanView]) -> Markup {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&SpanView>> = HashMap::new();
    let mut roots = Vec::new();
    for s in spans {
        match s.parent.as_deref().filter(|p| ids.contains(p) && *p != s.id) {
            Some(p) => children.entry(p).or_default().push(s),
            None => roots.push(s),
        }
    }
    fn node(s: &SpanView, children: &HashMap<&str, Vec<&SpanView>>, depth: usize) -> Markup {
        html! {
            li.span data-span=(s.name) {
                details open {
                    summary {
                        strong { (s.name) }
                        @if !s.kind.is_empty() { " " span.muted { (s.kind) } }
                        " " (if s.ok { badge("OK", Tone::Ok) } else { badge("ERROR", Tone::Failed) })
                        @if let Some(ms) = s.duration_ms { " " span.muted { (layout::fmt_duration(ms)) } }
                    }
                    @if !s.status_message.is_empty() { p.error { (s.status_message) } }
                    @if let Some(i) = &s.inputs { div { "Inputs " code.span-inputs { (cut(i)) } } }
                    @if let Some(o) = &s.outputs { div { "Outputs " code.span-outputs { (cut(o)) } } }
                    @for e in &s.events { div.muted { "Event " (cut(e)) } }
                    // A cycle in a file cannot recurse forever: children are only ever nested
                    // as deep as there are spans.
                    @if let Some(kids) = children.get(s.id.as_str()).filter(|_| depth < 64) {
                        ul { @for k in kids { (node(k, children, depth + 1)) } }
                    }
                }
            }
        }
    }
    html! { ul #spans { @for r in roots { (node(r, &children, 0)) } } }
}

async fn show(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path((ws, id)): Path<(String, String)>,
) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    let trace = state.store.trace(&workspace, &id).await.or_page(&s)?;
    let spans = read_spans(&state, &workspace, &trace).await;
    let experiment =
        state.store.mlflow_experiment_by_id(&workspace, &trace.experiment_id).await.or_page(&s)?;
    let name = trace.tags.get("mlflow.traceName").cloned().unwrap_or_else(|| trace.id.clone());
    let body = html! {
        h1 { (name) " " (state_badge(&trace.state)) }
        p.muted { "Trace " code { (trace.id) } " in experiment "
            a href={ (layout::ws_url(&ws)) "/traces?experiment=" (layout::q(&experiment.name)) } { (experiment.name) }
            @if let Some(run) = trace.metadata.get(SOURCE_RUN) {
                ", run " a.mono href={ (layout::ws_url(&ws)) "/runs/" (seg(run)) } { (run) }
            }
        }
        section #trace-overview {
            dl.kv {
                dt { "Request time" } dd { (layout::time_el(trace.request_time)) }
                dt { "Duration" } dd #trace-duration { (trace.execution_duration.map_or_else(|| "—".to_string(), layout::fmt_duration)) }
                @if let Some(c) = &trace.client_request_id { dt { "Client request id" } dd.mono { (c) } }
                @if let Some(p) = &trace.request_preview { dt { "Request" } dd.mono { (cut(p)) } }
                @if let Some(p) = &trace.response_preview { dt { "Response" } dd.mono { (cut(p)) } }
            }
        }
        section #trace-spans {
            h2 { "Spans" }
            @match &spans {
                Ok(spans) if spans.is_empty() => (layout::empty("No spans were uploaded for this trace.")),
                Ok(spans) => (span_tree(spans)),
                Err(e) => p.error { "The spans could not be read: " (e) },
            }
        }
        div.grid-2 {
            section #trace-tags {
                h2 { "Tags" }
                div.table-wrap { table.kv { tbody { @for (k, v) in &trace.tags { tr { th scope="row" { (k) } td { (cut(v)) } } } } } }
            }
            section #trace-metadata {
                h2 { "Metadata" }
                div.table-wrap { table.kv { tbody { @for (k, v) in &trace.metadata { tr { th scope="row" { (k) } td { (cut(v)) } } } } } }
            }
        }
    };
    Ok(layout::page(&s, Some(&ws), Nav::Traces, &format!("Trace {name}"), body).into_response())
}

/// The trace's spans, kept here or in its `traces.json`: empty when none came, an error text when
/// the file is too large or not what MLflow writes.
async fn read_spans(
    state: &AppState,
    workspace: &Workspace,
    trace: &TraceRecord,
) -> Result<Vec<SpanView>, String> {
    let dicts = crate::mlflow::spans::span_dicts(state, workspace, trace, MAX_SPANS_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    Ok(span_views(&dicts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_come_from_mlflows_span_dicts_as_a_tree() {
        let doc = json!([
            {"span_id": "a", "parent_span_id": null, "name": "predict", "start_time_unix_nano": 1_000_000_000i64,
             "end_time_unix_nano": 1_250_000_000i64, "status": {"code": "STATUS_CODE_OK", "message": ""},
             "attributes": {"mlflow.spanType": "\"CHAIN\"", "mlflow.spanInputs": "{\"x\": 21}", "mlflow.spanOutputs": "42"},
             "events": []},
            {"span_id": "b", "parent_span_id": "a", "name": "features<script>", "start_time_unix_nano": 1_000_000_000i64,
             "end_time_unix_nano": 1_010_000_000i64, "status": {"code": "STATUS_CODE_ERROR", "message": "bad wine"},
             "attributes": {}, "events": [{"name": "exception", "attributes": {"exception.message": "bad wine"}}]},
            {"span_id": "c", "parent_span_id": "c", "name": "loop", "attributes": {}},
        ]);
        let spans = span_views(doc.as_array().unwrap());
        assert_eq!(spans[0].kind, "CHAIN");
        assert_eq!(spans[0].inputs.as_deref(), Some("{\"x\": 21}"));
        assert_eq!(spans[0].outputs.as_deref(), Some("42"));
        assert_eq!(spans[0].duration_ms, Some(250));
        assert!(!spans[1].ok && spans[1].events == ["exception: bad wine"]);
        assert_eq!(spans[2].duration_ms, None);
        let html = span_tree(&spans).into_string();
        // b nests under a; c, its own parent, is a root; names are escaped.
        let a = html.find("predict").unwrap();
        let b = html.find("features&lt;script&gt;").unwrap();
        assert!(a < b && html[a..b].contains("<ul>"), "{html}");
        assert!(html.matches("<ul").count() == 2, "{html}");
        assert_eq!(cut(&"é".repeat(SHOWN_CHARS + 5)).chars().count(), SHOWN_CHARS + 1);
    }
}
