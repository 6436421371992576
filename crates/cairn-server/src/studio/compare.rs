//! The compare page (`/w/{ws}/compare?runs=ID,ID,…`, 2 to 20 runs): a side-by-side table of
//! attributes, params, tags and latest metrics with differing rows marked, one overlaid line chart
//! per metric, a scatter of any metric against any param and parallel coordinates (params → one
//! metric). The charts are drawn by `assets/charts.js`; the scatter and parallel coordinates read
//! the runs from a JSON data block (`#compare-data`, not executable, so the CSP allows it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_core::runs::Run;
use maud::{html, Markup, PreEscaped};

use super::layout::{
    fmt_value, page, run_duration, seg, status_badge, time_el, ws_url, Nav, OrPage, PageResult,
};
use super::session::Session;
use super::{asset_url, open_workspace};
use crate::state::AppState;

/// The most runs one page compares: beyond this the table and charts stop being readable.
pub const MAX_RUNS: usize = 20;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/w/{ws}/compare", get(compare))
}

/// The run ids of `?runs=A,B` (repeatable), in order, each once; or what is wrong with them.
fn parse_runs(raw: Option<&str>) -> Result<Vec<String>, String> {
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k == "runs" {
            for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !ids.iter().any(|x| x == id) {
                    ids.push(id.to_string());
                }
            }
        }
    }
    match ids.len() {
        n if n < 2 => Err(format!(
            "Select at least two runs to compare (this link names {n}). Tick runs in the runs table, then \
             press Compare."
        )),
        n if n > MAX_RUNS => {
            Err(format!("At most {MAX_RUNS} runs can be compared at once; this link names {n}."))
        }
        _ => Ok(ids),
    }
}

async fn compare(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let ids = match parse_runs(raw.as_deref()) {
        Ok(ids) => ids,
        Err(message) => {
            let body = html! {
                h1 { "Compare runs" }
                p.error role="alert" { (message) }
                p { a href={ (ws_url(&ws)) "/runs" } { "Back to the runs" } }
            };
            return Ok((StatusCode::BAD_REQUEST, page(&s, Some(&ws), Nav::Runs, "Compare runs", body))
                .into_response());
        }
    };
    let mut runs = Vec::with_capacity(ids.len());
    for id in &ids {
        runs.push(state.store.run(&workspace, id).await.or_page(&s)?);
    }
    let body = html! {
        h1 { "Compare " (runs.len()) " runs" }
        (table(&ws, &runs))
        (charts(&runs))
        (views(&runs))
        script type="application/json" id="compare-data" { (PreEscaped(script_json(&data(&runs)))) }
        script src=(asset_url("charts.js")) defer {}
    };
    Ok(page(&s, Some(&ws), Nav::Runs, "Compare runs", body).into_response())
}

/// One row of the table: a value per run (`None` = not set) as compared and as shown.
struct Row {
    group: &'static str,
    label: String,
    values: Vec<Option<String>>,
    shown: Vec<Markup>,
}

impl Row {
    fn differs(&self) -> bool {
        self.values.windows(2).any(|w| w[0] != w[1])
    }
}

fn text_row(group: &'static str, label: &str, values: Vec<Option<String>>) -> Row {
    let shown =
        values.iter().map(|v| html! { @match v { Some(v) => (v), None => span.muted { "—" } } }).collect();
    Row { group, label: label.into(), values, shown }
}

fn union<'a, T: 'a>(maps: impl Iterator<Item = &'a BTreeMap<String, T>>) -> BTreeSet<&'a str> {
    maps.flat_map(|m| m.keys().map(String::as_str)).collect()
}

fn rows(ws: &str, runs: &[Run]) -> Vec<Row> {
    let run_url = |r: &Run| format!("{}/runs/{}", ws_url(ws), seg(&r.id));
    let mut out = vec![
        Row {
            group: "attributes",
            label: "Name".into(),
            values: runs.iter().map(|r| Some(r.display_name.clone())).collect(),
            shown: runs.iter().map(|r| html! { a href=(run_url(r)) { (r.display_name) } }).collect(),
        },
        text_row("attributes", "Experiment", runs.iter().map(|r| Some(r.experiment.clone())).collect()),
        Row {
            group: "attributes",
            label: "Status".into(),
            values: runs.iter().map(|r| Some(r.status.as_str().to_string())).collect(),
            shown: runs.iter().map(|r| status_badge(r.status)).collect(),
        },
        Row {
            group: "attributes",
            label: "Created".into(),
            values: runs.iter().map(|r| Some(r.created_at.to_string())).collect(),
            shown: runs.iter().map(|r| time_el(r.created_at)).collect(),
        },
        text_row(
            "attributes",
            "Duration",
            runs.iter().map(|r| Some(run_duration(r.started_at, r.ended_at))).collect(),
        ),
        text_row("attributes", "Compute", runs.iter().map(|r| r.compute.clone()).collect()),
        text_row("attributes", "Environment", runs.iter().map(|r| r.environment.clone()).collect()),
    ];
    for key in union(runs.iter().map(|r| &r.params)) {
        out.push(text_row("params", key, runs.iter().map(|r| r.params.get(key).cloned()).collect()));
    }
    for key in union(runs.iter().map(|r| &r.metrics)) {
        let points: Vec<_> = runs.iter().map(|r| r.metrics.get(key)).collect();
        out.push(Row {
            group: "metrics",
            label: key.into(),
            // Compared exactly (all digits), shown short.
            values: points.iter().map(|p| p.map(|p| format!("{:?}", p.value))).collect(),
            shown: points
                .iter()
                .map(|p| match p {
                    Some(p) => html! { span title={ "step " (p.step) } { (fmt_value(p.value)) } },
                    None => html! { span.muted { "—" } },
                })
                .collect(),
        });
    }
    for key in union(runs.iter().map(|r| &r.tags)) {
        out.push(text_row("tags", key, runs.iter().map(|r| r.tags.get(key).cloned()).collect()));
    }
    out
}

fn table(ws: &str, runs: &[Run]) -> Markup {
    let rows = rows(ws, runs);
    let differing = rows.iter().filter(|r| r.differs()).count();
    html! {
        section #compare-summary aria-labelledby="compare-table-h" {
            h2 #compare-table-h { "Side by side" }
            p.muted { (differing) " of " (rows.len()) " rows differ; they are marked ≠." }
            div.table-scroll {
                table #compare-table {
                    thead {
                        tr {
                            th scope="col" { "" }
                            @for r in runs { th scope="col" data-run-id=(r.id) { span.mono { (r.id) } } }
                        }
                    }
                    tbody {
                        @for row in &rows {
                            @let diff = row.differs();
                            tr class=[diff.then_some("diff")] data-group=(row.group) data-key=(row.label) {
                                th scope="row" {
                                    span.group { (row.group.trim_end_matches('s')) " " }
                                    (row.label)
                                    @if diff { " " span.diff-mark title="values differ" aria-label="values differ" { "≠" } }
                                }
                                @for cell in &row.shown { td { (cell) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One figure per metric key, overlaying the runs that logged it.
fn charts(runs: &[Run]) -> Markup {
    let keys = union(runs.iter().map(|r| &r.metrics));
    html! {
        section #metrics aria-labelledby="compare-metrics-h" {
            h2 #compare-metrics-h { "Metrics" }
            @if keys.is_empty() { p.empty { "These runs logged no metrics." } }
            div.charts {
                @for key in &keys {
                    @let ids: Vec<&str> = runs.iter().filter(|r| r.metrics.contains_key(*key)).map(|r| r.id.as_str()).collect();
                    figure.metric-chart data-metric=(key) data-run=(ids.join(",")) {
                        figcaption { (key) }
                    }
                }
            }
        }
    }
}

fn options(keys: &BTreeSet<&str>) -> Markup {
    html! { @for k in keys { option value=(k) { (k) } } }
}

/// The scatter and parallel-coordinates sections with their selects (drawn by charts.js).
fn views(runs: &[Run]) -> Markup {
    let metrics = union(runs.iter().map(|r| &r.metrics));
    let params = union(runs.iter().map(|r| &r.params));
    html! {
        section aria-labelledby="scatter-h" {
            h2 #scatter-h { "Metric against param" }
            div #scatter {
                div.chart-controls {
                    label for="scatter-metric" { "Metric" }
                    select #scatter-metric name="metric" { (options(&metrics)) }
                    label for="scatter-param" { "Param" }
                    select #scatter-param name="param" { (options(&params)) }
                }
                div.chart-area {}
            }
        }
        section aria-labelledby="parallel-h" {
            h2 #parallel-h { "Parallel coordinates" }
            div #parallel-coords {
                div.chart-controls {
                    label for="parallel-metric" { "Metric" }
                    select #parallel-metric name="metric" { (options(&metrics)) }
                }
                div.chart-area {}
            }
        }
    }
}

/// What charts.js needs of the runs: names, params and latest metric values.
fn data(runs: &[Run]) -> serde_json::Value {
    let runs_json: Vec<_> = runs
        .iter()
        .map(|r| {
            let metrics: BTreeMap<&str, Option<f64>> =
                r.metrics.iter().map(|(k, p)| (k.as_str(), p.value.is_finite().then_some(p.value))).collect();
            serde_json::json!({ "id": r.id, "name": r.display_name, "params": r.params, "metrics": metrics })
        })
        .collect();
    serde_json::json!({
        "runs": runs_json,
        "metric_keys": union(runs.iter().map(|r| &r.metrics)),
        "param_keys": union(runs.iter().map(|r| &r.params)),
    })
}

/// JSON safe inside `<script type="application/json">`: `<`, `>` and `&` become `\u` escapes, so
/// no value can close the element (`</script>`) or open a comment; JSON.parse reads them back.
fn script_json(v: &serde_json::Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lists_are_split_deduplicated_and_bounded() {
        assert_eq!(parse_runs(Some("runs=a,b,a")).unwrap(), ["a", "b"]);
        assert_eq!(parse_runs(Some("runs=a&runs=%20b%20")).unwrap(), ["a", "b"]);
        assert!(parse_runs(Some("runs=a")).unwrap_err().contains("at least two"));
        assert!(parse_runs(None).unwrap_err().contains("names 0"));
        let many = (0..21).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse_runs(Some(&format!("runs={many}"))).unwrap_err().contains("At most 20"));
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let v = serde_json::json!({ "p": "</script><script>alert(1)</script> & <!--" });
        let s = script_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'), "{s}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&s).unwrap(), v);
    }
}
