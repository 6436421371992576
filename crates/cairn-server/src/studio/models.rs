//! Studio pages of the model registry: the models of a workspace, one model's versions and
//! aliases, and one version (its files with download links, and the run it came from).
//!
//! Read-only: registering, tagging and aliasing stay with the API and the CLI. Files download
//! through the registry API (`…/models/NAME/versions/V/files/PATH`), which accepts the session
//! cookie for GET.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_core::api::Workspace;
use cairn_core::models::{ModelVersion, VersionRef};
use cairn_core::Error;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::path_url;
use super::layout::{self, Nav, OrPage, PageResult};
use super::open_workspace;
use super::session::Session;
use crate::state::AppState;

/// Models per page of the list.
const PAGE_SIZE: i64 = 50;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/w/{ws}/models", get(list))
        .route("/w/{ws}/models/{name}", get(model))
        .route("/w/{ws}/models/{name}/{version}", get(version))
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<String>,
}

fn tags(t: &BTreeMap<String, String>) -> Markup {
    html! {
        @for (k, v) in t {
            span.tag { (k) @if !v.is_empty() { "=" (v) } } " "
        }
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path(ws): Path<String>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = list_body(&state, &workspace, q.page.as_deref()).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Models, "Models", body).into_response())
}

async fn list_body(state: &AppState, workspace: &Workspace, page: Option<&str>) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let offset = match page {
        None | Some("") => 0,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| Error::invalid(format!("invalid page {p:?}")))?,
    };
    let (rows, more) = state.store.model_summaries(workspace, offset, PAGE_SIZE).await?;
    let body = html! {
        h1 { "Models" }
        @if rows.is_empty() {
            p.empty { "No models yet. Register one with " code { "cairn model register" } "." }
        } @else {
            div.table-wrap {
                table #models-table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Latest version" }
                        th scope="col" { "Versions" } th scope="col" { "Aliases" } th scope="col" { "Tags" }
                        th scope="col" { "Framework" } th scope="col" { "Updated" }
                    } }
                    tbody {
                        @for r in &rows {
                            @let m = &r.model;
                            tr data-model=(m.name) {
                                td { a href=(model_href(ws, &m.name)) { (m.name) } }
                                td { @if let Some(v) = m.latest_version {
                                    a href=(version_href(ws, &m.name, v)) { (v) }
                                } @else { "—" } }
                                td { (r.versions) }
                                td { @for (alias, v) in &m.aliases {
                                    a.tag href=(version_href(ws, &m.name, *v)) { "@" (alias) " → " (v) } " "
                                } }
                                td { (tags(&m.tags)) }
                                td { (framework_text(r.framework.as_deref(), r.framework_version.as_deref())) }
                                td { (layout::time_el(m.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
        @if more {
            nav.pager aria-label="Pages" {
                a #next-page href={ (layout::ws_url(ws)) "/models?page=" (offset + PAGE_SIZE) } { "Next page" }
            }
        }
    };
    Ok(body)
}

fn model_href(ws: &str, name: &str) -> String {
    format!("{}/models/{}", layout::ws_url(ws), layout::seg(name))
}

fn version_href(ws: &str, name: &str, v: i64) -> String {
    format!("{}/{v}", model_href(ws, name))
}

fn framework(v: &ModelVersion) -> String {
    framework_text(v.framework.as_deref(), v.framework_version.as_deref())
}

fn framework_text(framework: Option<&str>, version: Option<&str>) -> String {
    match (framework, version) {
        (Some(f), Some(fv)) => format!("{f} {fv}"),
        (Some(f), None) => f.to_string(),
        _ => String::new(),
    }
}

async fn model(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name)): Path<(String, String)>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = model_body(&state, &workspace, &name).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Models, &format!("Model {name}"), body).into_response())
}

async fn model_body(state: &AppState, workspace: &Workspace, name: &str) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let m = state.store.model(workspace, name).await?;
    let versions = state.store.list_model_versions(workspace, name).await?;
    let body = html! {
        nav.breadcrumbs aria-label="Breadcrumbs" {
            a href={ (layout::ws_url(ws)) "/models" } { "Models" } " / " span { (m.name) }
        }
        h1 { "Model " (m.name) }
        @if !m.description.is_empty() { p.description { (m.description) } }
        dl.facts {
            dt { "Tags" } dd { (tags(&m.tags)) }
            dt { "Created" } dd { (layout::time_el(m.created_at)) " by " (m.created_by) }
            dt { "Updated" } dd { (layout::time_el(m.updated_at)) }
        }
        section #aliases aria-labelledby="aliases-h" {
            h2 #aliases-h { "Aliases" }
            @if m.aliases.is_empty() {
                p.empty { "No aliases." }
            } @else {
                ul { @for (alias, v) in &m.aliases {
                    li { code { "@" (alias) } " → " a href=(version_href(ws, &m.name, *v)) { "version " (v) } }
                } }
            }
        }
        section #versions aria-labelledby="versions-h" {
            h2 #versions-h { "Versions" }
            @if versions.is_empty() {
                p.empty { "Every version of this model was deleted." }
            } @else {
                div.table-wrap { table #versions-table {
                    thead { tr {
                        th scope="col" { "Version" } th scope="col" { "Aliases" } th scope="col" { "Framework" }
                        th scope="col" { "Size" } th scope="col" { "Tags" } th scope="col" { "Run" }
                        th scope="col" { "Created" }
                    } }
                    tbody { @for v in &versions {
                        tr data-version=(v.version) {
                            td { a href=(version_href(ws, &m.name, v.version)) { (v.version) } }
                            td { @for a in &v.aliases { code { "@" (a) } " " } }
                            td { (framework(v)) }
                            td { (layout::fmt_bytes(v.size as u64)) }
                            td { (tags(&v.tags)) }
                            td { @if let Some(run) = &v.run_id {
                                a href={ (layout::ws_url(ws)) "/runs/" (layout::seg(run)) } { (run) }
                            } }
                            td { (layout::time_el(v.created_at)) }
                        }
                    } }
                } }
            }
        }
    };
    Ok(body)
}

async fn version(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name, v)): Path<(String, String, String)>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let (title, body) = version_body(&state, &workspace, &name, &v).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Models, &title, body).into_response())
}

async fn version_body(
    state: &AppState,
    workspace: &Workspace,
    name: &str,
    v: &str,
) -> Result<(String, Markup), Error> {
    let ws = &workspace.name;
    // Text that cannot name a version names none: a 404 page like any unknown version.
    let vref = VersionRef::parse(v).map_err(|_| Error::not_found("model version", format!("{name}:{v}")))?;
    let mv = state.store.model_version(workspace, name, &vref).await?;
    let files = state.store.model_version_files(workspace, name, mv.version).await?;
    let api = format!(
        "/api/v1/workspaces/{}/models/{}/versions/{}/files",
        layout::seg(ws),
        layout::seg(&mv.name),
        mv.version
    );
    let body = html! {
        nav.breadcrumbs aria-label="Breadcrumbs" {
            a href={ (layout::ws_url(ws)) "/models" } { "Models" } " / "
            a href=(model_href(ws, &mv.name)) { (mv.name) } " / " span { "version " (mv.version) }
        }
        section #model-version aria-labelledby="version-h" {
            h1 #version-h { (mv.name) " version " (mv.version) }
            @if !mv.description.is_empty() { p.description { (mv.description) } }
            dl.facts {
                dt { "Framework" } dd { @let f = framework(&mv); @if f.is_empty() { "—" } @else { (f) } }
                dt { "Aliases" } dd { @for a in &mv.aliases { code { "@" (a) } " " } }
                dt { "Tags" } dd { (tags(&mv.tags)) }
                dt { "Size" } dd { (layout::fmt_bytes(mv.size as u64)) " in " (files.len()) " file(s)" }
                dt { "Source" } dd { code { (mv.source) } }
                dt { "Lineage" } dd {
                    @if let Some(run) = &mv.run_id {
                        "Produced by run "
                        a #lineage-run href={ (layout::ws_url(ws)) "/runs/" (layout::seg(run)) } { (run) }
                        @if let Some(e) = &mv.experiment_id { " (experiment " (e) ")" }
                    } @else {
                        "Registered from local files (no run)"
                    }
                }
                dt { "Created" } dd { (layout::time_el(mv.created_at)) " by " (mv.created_by) }
                dt { "Stage" } dd { (mv.stage) }
            }
            @if !mv.properties.is_empty() {
                h2 { "Properties" }
                div.table-wrap { table #properties-table {
                    thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                    tbody { @for (k, val) in &mv.properties { tr { td { (k) } td { (val) } } } }
                } }
            }
            h2 { "Files" }
            div.table-wrap { table #files-table {
                thead { tr { th scope="col" { "Path" } th scope="col" { "Size" } th scope="col" { "SHA-256" } } }
                tbody { @for f in &files {
                    tr {
                        td { a.download href={ (api) "/" (path_url(&f.path)) } download { (f.path) } }
                        td { (layout::fmt_bytes(f.size as u64)) }
                        td { code.hash title=(f.sha256) { (f.sha256) } }
                    }
                } }
            } }
        }
    };
    Ok((format!("{} version {}", mv.name, mv.version), body))
}
