//! The studio's home: the workspaces the session's token can see.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav, OrPage, PageResult};
use super::session::Session;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/", get(list)).route("/w/{ws}", get(super::workspace_home))
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
}

async fn list(s: Session, State(state): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> PageResult {
    let page = match &s.caller.token.workspace {
        // A token limited to one workspace sees only that one.
        Some(own) => cairn_core::api::Page {
            items: vec![state.store.workspace(own).await.or_page(&s)?],
            next_page_token: None,
        },
        None => state.store.list_workspaces(q.after.as_deref(), Some(100)).await.or_page(&s)?,
    };
    let body = html! {
        h1 { "Workspaces" }
        @if page.items.is_empty() {
            (layout::empty("No workspace yet: create one with `cairn workspace create NAME`."))
        } @else {
            div.table-wrap {
                table #workspaces-table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Created" } } }
                    tbody {
                        @for w in &page.items {
                            tr data-workspace=(w.name) {
                                td { a href=(layout::ws_url(&w.name)) { (w.name) } }
                                td { (w.description) }
                                td { (layout::time_el(w.created_at)) }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = &page.next_page_token {
                nav.pager aria-label="Pages" { a #next-page href={ "/?after=" (layout::q(next)) } { "Next page →" } }
            }
        }
    };
    Ok(layout::page(&s, None, Nav::Workspaces, "Workspaces", body).into_response())
}
