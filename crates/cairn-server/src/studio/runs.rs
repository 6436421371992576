//! The runs table: one experiment's runs (`/w/{ws}/experiments/{name}`) or all of a workspace's
//! (`/w/{ws}/runs`), one row per run with a column per param and per latest metric value.
//!
//! Filtering and ordering use the API's grammar (`cairn_core::search`) and the store's search,
//! which loads only the page shown; column keys are the experiment's whole key set
//! (`Store::run_column_keys`, kept by `log_batch` in `experiment_keys`), never read from the
//! runs themselves. A filter that does not parse is shown inline with the unfiltered table, so
//! the user loses nothing and sees what to fix. `/w/{ws}/run-status?ids=` answers
//! live status updates for the rows (and the run page) of runs that have not ended.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use cairn_core::runs::Run;
use cairn_core::search::{parse_filter, parse_order_by, Entity, OrderBy};
use cairn_core::Error;
use cairn_store::{RunColumnKeys, RunScope};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, seg, Nav, OrPage, PageResult};
use super::session::Session;
use crate::state::AppState;

/// Runs per page.
pub const PAGE_SIZE: i64 = 50;
/// The order when none is asked for.
const DEFAULT_ORDER: &str = "attributes.created DESC";
/// Most runs one status request may ask about.
const MAX_STATUS_IDS: usize = 200;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/w/{ws}/experiments/{name}", get(experiment_runs))
        .route("/w/{ws}/runs", get(all_runs))
        .route("/w/{ws}/run-status", get(run_status))
}

#[derive(Deserialize, Default, Clone)]
pub struct TableQuery {
    pub filter: Option<String>,
    pub order: Option<String>,
    pub page: Option<i64>,
    pub cols: Option<String>,
}

async fn experiment_runs(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<TableQuery>,
) -> PageResult {
    table(&state, s, &ws, Some(&name), q).await
}

async fn all_runs(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<TableQuery>,
) -> PageResult {
    table(&state, s, &ws, None, q).await
}

/// A key as the filter grammar reads it: bare when it is a plain word, else back-quoted.
pub fn quote_key(key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_')
        && key.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_string()
    } else if !key.contains('`') {
        format!("`{key}`")
    } else if !key.contains('"') {
        format!("\"{key}\"")
    } else {
        format!("'{key}'")
    }
}

fn entity_prefix(e: Entity) -> &'static str {
    match e {
        Entity::Metric => "metrics",
        Entity::Param => "params",
        Entity::Tag => "tags",
        Entity::Attribute => "attributes",
        Entity::Dataset => "datasets",
        Entity::Metadata => "request_metadata",
        Entity::Span => "span",
    }
}

/// The `data-col` name of a column: `metrics.KEY`, `params.KEY`, `attributes.created`, …
fn col_name(e: Entity, key: &str) -> String {
    format!("{}.{key}", entity_prefix(e))
}

/// Builds table URLs that keep the filter, order and chosen columns.
struct Links<'a> {
    base: String,
    filter: &'a str,
    order: &'a str,
    cols: Option<&'a str>,
}

impl Links<'_> {
    fn url(&self, order: &str, page: i64) -> String {
        let mut u = format!("{}?", self.base);
        if !self.filter.is_empty() {
            u.push_str(&format!("filter={}&", layout::q(self.filter)));
        }
        u.push_str(&format!("order={}", layout::q(order)));
        if page > 1 {
            u.push_str(&format!("&page={page}"));
        }
        if let Some(c) = self.cols {
            u.push_str(&format!("&cols={}", layout::q(c)));
        }
        u
    }
}

/// The sort link of a column header: descending first, ascending when already descending.
fn sort_header(
    links: &Links,
    current: Option<&OrderBy>,
    e: Entity,
    key: &str,
    label: &str,
    class: &str,
    hidden: bool,
) -> Markup {
    let sorted = current.filter(|o| o.entity == e && o.key == key);
    let next_dir = match sorted {
        Some(o) if !o.ascending => "ASC",
        _ => "DESC",
    };
    let order = format!("{}.{} {next_dir}", entity_prefix(e), quote_key(key));
    let aria = sorted.map(|o| if o.ascending { "ascending" } else { "descending" });
    let arrow = match sorted {
        Some(o) if o.ascending => " ▲",
        Some(_) => " ▼",
        None => "",
    };
    html! {
        th scope="col" class=(class) data-col=(col_name(e, key)) aria-sort=[aria] hidden[hidden] {
            a.sort href=(links.url(&order, 1)) data-keep-cols title={ "Sort by " (label) } { (label) (arrow) }
        }
    }
}

/// Tags the runs table shows (MLflow's bookkeeping tags would only add noise).
fn shown_tags(run: &Run) -> impl Iterator<Item = (&String, &String)> {
    run.tags.iter().filter(|(k, _)| !k.starts_with("mlflow."))
}

async fn table(
    state: &AppState,
    s: Session,
    ws: &str,
    experiment: Option<&str>,
    q: TableQuery,
) -> PageResult {
    let workspace = super::open_workspace(state, &s, ws).await?;
    if let Some(e) = experiment {
        if state.store.find_experiment(&workspace, e).await.or_page(&s)?.is_none() {
            return Err(layout::PageError::from(layout::not_found(
                Some(&s),
                &format!("There is no experiment \"{e}\" in workspace \"{ws}\"."),
            )));
        }
    }
    let filter = q.filter.as_deref().unwrap_or("").trim().to_string();
    let mut errors = Vec::new();
    let clauses = match parse_filter(&filter) {
        Ok(c) => c,
        Err(e) => {
            errors.push(format!("The filter was not applied: {}", message(&e)));
            Vec::new()
        }
    };
    let order_text =
        q.order.as_deref().map(str::trim).filter(|o| !o.is_empty()).unwrap_or(DEFAULT_ORDER).to_string();
    let order = match parse_order_by(std::slice::from_ref(&order_text)) {
        Ok(o) => o,
        Err(e) => {
            errors.push(format!("The order was not applied: {}", message(&e)));
            parse_order_by(&[DEFAULT_ORDER.to_string()]).expect("the default order parses")
        }
    };
    let page = q.page.unwrap_or(1).clamp(1, 1_000_000);
    let scope = RunScope {
        experiment_names: experiment.into_iter().collect(),
        experiment_ids: &[],
        deleted: Some(false),
        status_sort_key: None,
    };
    let (runs, more) = state
        .store
        .search_runs_in(&workspace, &scope, &clauses, &order, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        .await
        .or_page(&s)?;
    let mut keys = state.store.run_column_keys(&workspace, experiment).await.or_page(&s)?;
    add_page_keys(&mut keys, &runs);

    let base = match experiment {
        Some(e) => format!("{}/experiments/{}", layout::ws_url(ws), seg(e)),
        None => format!("{}/runs", layout::ws_url(ws)),
    };
    let cols = q.cols.as_deref();
    let links = Links { base: base.clone(), filter: &filter, order: &order_text, cols };
    let title = match experiment {
        Some(e) => format!("Experiment {e}"),
        None => "All runs".to_string(),
    };
    let body = html! {
        h1 { (title) }
        @if let Some(e) = experiment {
            p {
                a href={ (layout::ws_url(ws)) "/experiments" } { "← Experiments" }
                " · " a #experiment-traces href={ (layout::ws_url(ws)) "/traces?experiment=" (layout::q(e)) } { "Traces" }
            }
        }
        (toolbar(ws, &links, &keys, cols))
        @if !errors.is_empty() {
            p #filter-error .error role="alert" { @for (i, e) in errors.iter().enumerate() { @if i > 0 { br; } (e) } }
        }
        (runs_table(ws, &runs, &keys, cols, &links, order.first(), experiment.is_none(), experiment))
        nav.pager aria-label="Pages" {
            @if page > 1 { a #prev-page href=(links.url(&order_text, page - 1)) data-keep-cols { "← Previous" } }
            span { "Page " (page) }
            @if more { a #next-page href=(links.url(&order_text, page + 1)) data-keep-cols { "Next →" } }
        }
    };
    let nav = if experiment.is_some() { Nav::Experiments } else { Nav::Runs };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, layout::page(&s, Some(ws), nav, &title, body)).into_response())
}

/// Adds the keys of the page's own runs to the recorded ones (past [`cairn_store::MAX_COLUMN_KEYS`]
/// the recorded list is cut), so every value on the page has its column.
fn add_page_keys(keys: &mut RunColumnKeys, runs: &[Run]) {
    let params: BTreeSet<String> =
        keys.params.drain(..).chain(runs.iter().flat_map(|r| r.params.keys().cloned())).collect();
    let metrics: BTreeSet<String> =
        keys.metrics.drain(..).chain(runs.iter().flat_map(|r| r.metrics.keys().cloned())).collect();
    keys.params = params.into_iter().collect();
    keys.metrics = metrics.into_iter().collect();
}

/// An error's message without the variant's prefix.
fn message(e: &Error) -> String {
    match e {
        Error::Invalid(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Which of the discovered columns are shown: those named in `cols=` (all when absent).
fn visible(cols: Option<&str>) -> Option<BTreeSet<&str>> {
    cols.map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).collect())
}

fn toolbar(ws: &str, links: &Links, keys: &RunColumnKeys, cols: Option<&str>) -> Markup {
    let shown = visible(cols);
    let is_on = |c: &str| shown.as_ref().is_none_or(|s| s.contains(c));
    html! {
        div.toolbar {
            form #runs-filter method="get" action=(links.base) role="search" {
                label for="filter" { "Filter" }
                input #filter type="search" name="filter" value=(links.filter) size="40"
                    placeholder="metrics.rmse < 0.7 and params.max_depth = '5'" aria-describedby="filter-help";
                input type="hidden" name="order" value=(links.order);
                @if let Some(c) = cols { input type="hidden" name="cols" value=(c); }
                button type="submit" { "Apply" }
                @if !links.filter.is_empty() { a href=(links.url(links.order, 1)) { "Clear" } }
                span #filter-help .hint { "Clauses joined by " code { "and" } ": metrics., params., tags., attributes." }
            }
            @if !(keys.params.is_empty() && keys.metrics.is_empty()) {
                details.columns {
                    summary.button { "Columns" }
                    div role="group" aria-label="Columns to show" {
                        @for (e, list) in [(Entity::Param, &keys.params), (Entity::Metric, &keys.metrics)] {
                            @for k in list {
                                @let c = col_name(e, k);
                                label { input.col-toggle type="checkbox" value=(c) checked[is_on(&c)]; " " (c) }
                            }
                        }
                    }
                }
            }
            button #compare-button type="button" disabled data-compare-url={ (layout::ws_url(ws)) "/compare" } { "Compare" }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn runs_table(
    ws: &str,
    runs: &[Run],
    keys: &RunColumnKeys,
    cols: Option<&str>,
    links: &Links,
    current: Option<&OrderBy>,
    with_experiment: bool,
    experiment: Option<&str>,
) -> Markup {
    let shown = visible(cols);
    let hidden = |c: &str| shown.as_ref().is_some_and(|s| !s.contains(c));
    let scope = format!("{ws}/{}", experiment.unwrap_or("*"));
    html! {
        div.table-wrap {
            table #runs-table data-scope=(scope) data-status-url={ (layout::ws_url(ws)) "/run-status" } {
                caption.muted { (runs.len()) " run" @if runs.len() != 1 { "s" } " on this page" }
                thead {
                    tr {
                        th scope="col" { input #select-all type="checkbox" aria-label="Select all runs on this page"; }
                        (sort_header(links, current, Entity::Attribute, "run_name", "Run", "", false))
                        @if with_experiment { th scope="col" { "Experiment" } }
                        (sort_header(links, current, Entity::Attribute, "status", "Status", "", false))
                        th scope="col" { "Duration" }
                        (sort_header(links, current, Entity::Attribute, "created", "Created", "", false))
                        th scope="col" { "Tags" }
                        @for k in &keys.params {
                            (sort_header(links, current, Entity::Param, k, &col_name(Entity::Param, k), "", hidden(&col_name(Entity::Param, k))))
                        }
                        @for k in &keys.metrics {
                            (sort_header(links, current, Entity::Metric, k, &col_name(Entity::Metric, k), "num", hidden(&col_name(Entity::Metric, k))))
                        }
                    }
                }
                tbody {
                    @if runs.is_empty() {
                        tr { td colspan=(7 + keys.params.len() + keys.metrics.len()) { (layout::empty("No runs match.")) } }
                    }
                    @for r in runs {
                        tr data-run-id=(r.id) {
                            td { input.run-select type="checkbox" value=(r.id) aria-label={ "Select run " (r.display_name) }; }
                            td.name {
                                a href={ (layout::ws_url(ws)) "/runs/" (seg(&r.id)) } { (r.display_name) }
                                br; small.muted.mono { (r.id) }
                            }
                            @if with_experiment {
                                td { a href={ (layout::ws_url(ws)) "/experiments/" (seg(&r.experiment)) } { (r.experiment) } }
                            }
                            td data-live-run=[(!r.status.is_terminal()).then_some(&r.id)] data-run-id=(r.id) { (layout::status_badge(r.status)) }
                            td.num data-duration { (layout::run_duration(r.started_at, r.ended_at)) }
                            td { (layout::time_el(r.created_at)) }
                            td { @for (k, v) in shown_tags(r) { span.tag { (k) "=" (v) } } }
                            @for k in &keys.params {
                                @let c = col_name(Entity::Param, k);
                                td data-col=(c) hidden[hidden(&c)] { (r.params.get(k).map(String::as_str).unwrap_or("")) }
                            }
                            @for k in &keys.metrics {
                                @let c = col_name(Entity::Metric, k);
                                td.num data-col=(c) hidden[hidden(&c)]
                                    title=[r.metrics.get(k).map(|m| format!("{} (step {})", m.value, m.step))] {
                                    (r.metrics.get(k).map(|m| layout::fmt_value(m.value)).unwrap_or_default())
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    ids: String,
}

/// `{"ID": {"status", "class", "duration"}}` for the runs among `ids` (JSON, for live updates).
async fn run_status(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<BTreeMap<String, serde_json::Value>>, crate::error::ApiError> {
    s.caller.require(cairn_core::api::Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let ids: Vec<String> =
        q.ids.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_string).collect();
    if ids.len() > MAX_STATUS_IDS {
        return Err(Error::invalid(format!("ask for at most {MAX_STATUS_IDS} runs at a time")).into());
    }
    let rows = state.store.run_statuses(&workspace, &ids).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| {
                let v = serde_json::json!({
                    "status": r.status.as_str(),
                    "class": layout::status_class(r.status),
                    "duration": layout::run_duration(r.started_at, r.ended_at),
                });
                (r.id, v)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_quoted_only_when_needed_and_parse_back() {
        for key in ["rmse", "max_depth", "a-b", "max depth", "a.b", "x`y", "x`y\"z"] {
            let order = format!("metrics.{} DESC", quote_key(key));
            let parsed =
                parse_order_by(std::slice::from_ref(&order)).unwrap_or_else(|e| panic!("{order}: {e}"));
            assert_eq!(parsed[0].key, key, "{order}");
        }
        assert_eq!(quote_key("rmse"), "rmse");
        assert_eq!(quote_key("max depth"), "`max depth`");
    }

    #[test]
    fn links_keep_filter_order_and_columns() {
        let links =
            Links { base: "/w/a/runs".into(), filter: "metrics.x > 1", order: "o", cols: Some("params.a") };
        assert_eq!(
            links.url("metrics.x DESC", 2),
            "/w/a/runs?filter=metrics.x+%3E+1&order=metrics.x+DESC&page=2&cols=params.a"
        );
    }
}
