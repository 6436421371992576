//! The experiments list of a workspace (`/w/{ws}/experiments`): name, run count, last run.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use maud::html;

use super::layout::{self, seg, Nav, OrPage, PageResult};
use super::session::Session;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/w/{ws}/experiments", get(list))
}

async fn list(s: Session, State(state): State<Arc<AppState>>, Path(ws): Path<String>) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    let experiments = state.store.experiment_summaries(&workspace).await.or_page(&s)?;
    let base = layout::ws_url(&ws);
    let body = html! {
        h1 { "Experiments" }
        p { a href={ (base) "/runs" } { "All runs of " (ws) " →" } }
        @if experiments.is_empty() {
            (layout::empty("No experiment yet: submit a job (`cairn job submit`) or log a run with MLflow."))
        } @else {
            div.table-wrap {
                table #experiments-table {
                    thead { tr {
                        th scope="col" { "Name" }
                        th.num scope="col" { "Runs" }
                        th scope="col" { "Last run" }
                        th scope="col" { "Created" }
                    } }
                    tbody {
                        @for e in &experiments {
                            tr data-experiment=(e.name) {
                                td.name { a href={ (base) "/experiments/" (seg(&e.name)) } { (e.name) } }
                                td.num { (e.runs) }
                                td { @if let Some(t) = e.last_run_at { (layout::time_el(t)) } @else { "—" } }
                                td { (layout::time_el(e.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&s, Some(&ws), Nav::Experiments, &format!("Experiments · {ws}"), body).into_response())
}
