//! Studio pages of compute targets: each cluster's size, node bounds and idle time, its nodes
//! (busy, idle, starting) and, on a cluster's page, its queue and running jobs linked to their
//! runs. The numbers are the API's own (`routes::resources::compute_view`), so the studio and
//! `cairn compute show` never disagree.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_core::api::Workspace;
use cairn_core::runs::{Compute, ComputeState};
use cairn_core::Error;
use maud::{html, Markup};

use super::layout::{self, Nav, OrPage, PageResult};
use super::open_workspace;
use super::session::Session;
use crate::routes::resources::compute_view;
use crate::state::AppState;

/// Most runs listed per table on a cluster's page (the counts are always complete).
const MAX_LISTED_RUNS: usize = 200;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/w/{ws}/compute", get(list)).route("/w/{ws}/compute/{name}", get(show))
}

fn compute_href(ws: &str, name: &str) -> String {
    format!("{}/compute/{}", layout::ws_url(ws), layout::seg(name))
}

fn size_text(c: &Compute) -> String {
    format!("{} ({} cores, {} GB)", c.size, c.cores, c.memory_gb)
}

fn nodes(st: Option<&ComputeState>) -> Markup {
    match st {
        None => html! { "—" },
        Some(st) => html! {
            span.nodes data-busy=(st.busy_nodes) data-idle=(st.idle_nodes) data-starting=(st.starting_nodes) {
                (st.current_nodes) " allocated: " (st.busy_nodes) " busy, " (st.idle_nodes) " idle, " (st.starting_nodes) " starting"
            }
        },
    }
}

async fn list(State(state): State<Arc<AppState>>, s: Session, Path(ws): Path<String>) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = list_body(&state, &workspace).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Compute, "Compute", body).into_response())
}

async fn list_body(state: &AppState, workspace: &Workspace) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let mut computes = Vec::new();
    for c in state.store.list_computes(workspace).await? {
        computes.push(compute_view(state, &c).await?);
    }
    let body = html! {
        h1 { "Compute" }
        @if computes.is_empty() {
            p.empty { "No compute targets yet. Create one with " code { "cairn compute create" } "." }
        } @else {
            div.table-wrap { table #compute-table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Size" }
                    th scope="col" { "Min nodes" } th scope="col" { "Max nodes" } th scope="col" { "Idle before scale-down" }
                    th scope="col" { "Nodes" } th scope="col" { "Queued" } th scope="col" { "Running" }
                } }
                tbody { @for c in &computes {
                    tr data-compute=(c.name) {
                        td { a href=(compute_href(ws, &c.name)) { (c.name) } }
                        td { (c.kind) }
                        td { (size_text(c)) }
                        td { (c.min_nodes) }
                        td { (c.max_nodes) }
                        td { (layout::fmt_duration(c.idle_seconds * 1000)) }
                        td { (nodes(c.state.as_ref())) }
                        td.queued { (c.state.as_ref().map(|s| s.queued_runs.len()).unwrap_or(0)) }
                        td.running { (c.state.as_ref().map(|s| s.running_runs.len()).unwrap_or(0)) }
                    }
                } }
            } }
        }
    };
    Ok(body)
}

async fn show(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name)): Path<(String, String)>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = show_body(&state, &workspace, &name).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Compute, &format!("Compute {name}"), body).into_response())
}

async fn show_body(state: &AppState, workspace: &Workspace, name: &str) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let record = state.store.compute(&workspace.id, name).await?;
    let c = compute_view(state, &record).await?;
    let (queued, running) = match &c.state {
        Some(st) => (
            runs_table(state, workspace, "queue-table", &st.queued_runs).await?,
            runs_table(state, workspace, "running-table", &st.running_runs).await?,
        ),
        None => (html! {}, html! {}),
    };
    let body = html! {
        nav.breadcrumbs aria-label="Breadcrumbs" {
            a href={ (layout::ws_url(ws)) "/compute" } { "Compute" } " / " span { (c.name) }
        }
        h1 { "Compute " (c.name) }
        dl.facts {
            dt { "Kind" } dd { (c.kind) }
            dt { "Size" } dd { (size_text(&c)) }
            dt { "Nodes" } dd #compute-nodes { (nodes(c.state.as_ref())) }
            dt { "Min / max nodes" } dd { (c.min_nodes) " / " (c.max_nodes) }
            dt { "Idle before scale-down" } dd { (layout::fmt_duration(c.idle_seconds * 1000)) }
            @if let Some(st) = &c.state { dt { "Limits" } dd { (st.limits) } }
            dt { "Created" } dd { (layout::time_el(c.created_at)) }
        }
        @if let Some(st) = &c.state {
            section #node-list aria-labelledby="nodes-h" {
                h2 #nodes-h { "Nodes" }
                @if st.nodes.is_empty() {
                    p.empty { "No node is allocated (the minimum is 0 and nothing runs)." }
                } @else {
                    table #nodes-table {
                        thead { tr { th scope="col" { "Node" } th scope="col" { "State" } th scope="col" { "Since" } } }
                        tbody {
                            @for n in &st.nodes {
                                tr data-node=(n.id) { td { (n.id) } td { (n.state) } td { (layout::time_el(n.since)) } }
                            }
                        }
                    }
                }
            }
        }
        section #queue aria-labelledby="queue-h" {
            h2 #queue-h { "Queue" }
            (queued)
        }
        section #running aria-labelledby="running-h" {
            h2 #running-h { "Running" }
            (running)
        }
    };
    Ok(body)
}

async fn runs_table(state: &AppState, ws: &Workspace, id: &str, ids: &[String]) -> Result<Markup, Error> {
    if ids.is_empty() {
        return Ok(html! { p.empty { "None." } });
    }
    let mut runs = Vec::new();
    for run_id in ids.iter().take(MAX_LISTED_RUNS) {
        match state.store.run(ws, run_id).await {
            Ok(r) => runs.push(r),
            // It may have ended (and been deleted) since the compute was read.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(html! {
        div.table-wrap { table id=(id) {
            thead { tr {
                th scope="col" { "Run" } th scope="col" { "Experiment" } th scope="col" { "Status" }
                th scope="col" { "Created" } th scope="col" { "Started" }
            } }
            tbody { @for r in &runs {
                tr data-run-id=(r.id) {
                    td { a href={ (layout::ws_url(&ws.name)) "/runs/" (layout::seg(&r.id)) } {
                        @if r.display_name.is_empty() { (r.id) } @else { (r.display_name) }
                    } }
                    td { (r.experiment) }
                    td { (layout::status_badge(r.status)) }
                    td { (layout::time_el(r.created_at)) }
                    td { @if let Some(t) = r.started_at { (layout::time_el(t)) } @else { "—" } }
                }
            } }
        } }
        @if ids.len() > MAX_LISTED_RUNS { p { "… and " (ids.len() - MAX_LISTED_RUNS) " more." } }
    })
}
