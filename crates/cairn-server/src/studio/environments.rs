//! Studio pages of environments: their names and versions, and one version's spec (as YAML),
//! build state and the tail of its build log.
//!
//! The build state is what the builder records (`EnvBuilder::build_status`: the `READY` marker,
//! the hash's build lock, the failure line), not a guess from the log's last line; the log itself
//! (`EnvBuilder::build_log`) is shown as it is. Nothing here starts a build.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cairn_core::api::Workspace;
use cairn_core::runs::Environment;
use cairn_core::Error;
use cairn_jobs::env::BuildStatus;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, Nav, OrPage, PageResult};
use super::layout::{badge, Tone};
use super::open_workspace;
use super::session::Session;
use crate::state::AppState;

/// Most of a build log shown (its end, where failures are).
const LOG_TAIL_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/w/{ws}/environments", get(list)).route("/w/{ws}/environments/{name}", get(show))
}

/// Where an environment's venv stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BuildState {
    /// `user_managed`: an existing interpreter, nothing to build.
    UserManaged,
    NotBuilt,
    Building,
    Built,
    Failed,
    /// A build that never finished (its server stopped); the next use builds again.
    Interrupted,
    /// The builder is unavailable (no `uv`), so nothing is known.
    Unknown,
}

impl BuildState {
    fn label(self) -> &'static str {
        match self {
            BuildState::UserManaged => "user-managed",
            BuildState::NotBuilt => "not built",
            BuildState::Building => "building",
            BuildState::Built => "built",
            BuildState::Failed => "failed",
            BuildState::Interrupted => "interrupted",
            BuildState::Unknown => "unknown",
        }
    }
}

fn build_badge(b: BuildState) -> Markup {
    let tone = match b {
        BuildState::Built | BuildState::UserManaged => Tone::Ok,
        BuildState::Failed => Tone::Failed,
        BuildState::Building => Tone::Busy,
        BuildState::NotBuilt | BuildState::Interrupted | BuildState::Unknown => Tone::Waiting,
    };
    badge(b.label(), tone)
}

/// `status` is `None` when the builder is unavailable.
fn build_state(env: &Environment, status: Option<BuildStatus>) -> BuildState {
    if env.spec.get("user_managed").and_then(|v| v.as_bool()).unwrap_or(false) {
        return BuildState::UserManaged;
    }
    match status {
        None => BuildState::Unknown,
        Some(BuildStatus::NotBuilt) => BuildState::NotBuilt,
        Some(BuildStatus::Building) => BuildState::Building,
        Some(BuildStatus::Built) => BuildState::Built,
        Some(BuildStatus::Failed) => BuildState::Failed,
        Some(BuildStatus::Interrupted) => BuildState::Interrupted,
    }
}

/// The build state of `env` and (with `with_log`) its build log.
fn build_info(state: &AppState, env: &Environment, with_log: bool) -> (BuildState, Option<String>) {
    match state.env_builder() {
        Ok(b) => {
            let log = if with_log { b.build_log(&env.hash) } else { None };
            (build_state(env, Some(b.build_status(&env.hash))), log)
        }
        Err(_) => (build_state(env, None), None),
    }
}

fn env_href(ws: &str, name: &str) -> String {
    format!("{}/environments/{}", layout::ws_url(ws), layout::seg(name))
}

async fn list(State(state): State<Arc<AppState>>, s: Session, Path(ws): Path<String>) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = list_body(&state, &workspace).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Environments, "Environments", body).into_response())
}

async fn list_body(state: &AppState, workspace: &Workspace) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let mut by_name: BTreeMap<String, Vec<Environment>> = BTreeMap::new();
    for e in state.store.list_environments(workspace).await? {
        by_name.entry(e.name.clone()).or_default().push(e);
    }
    let body = html! {
        h1 { "Environments" }
        @if by_name.is_empty() {
            p.empty { "No environments yet. Create one with " code { "cairn env create" } "." }
        } @else {
            div.table-wrap { table #environments-table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Latest version" } th scope="col" { "Versions" }
                    th scope="col" { "Build (latest)" } th scope="col" { "Created (latest)" }
                } }
                tbody { @for (name, versions) in &by_name {
                    @let latest = versions.iter().max_by_key(|e| e.version).expect("grouped from rows");
                    @let (bstate, _) = build_info(state, latest, false);
                    tr data-environment=(name) {
                        td { a href=(env_href(ws, name)) { (name) } }
                        td { (latest.version) }
                        td { (versions.len()) }
                        td { (build_badge(bstate)) }
                        td { (layout::time_el(latest.created_at)) }
                    }
                } }
            } }
        }
    };
    Ok(body)
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<String>,
}

async fn show(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = show_body(&state, &workspace, &name, q.version.as_deref()).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Environments, &format!("Environment {name}"), body).into_response())
}

async fn show_body(
    state: &AppState,
    workspace: &Workspace,
    name: &str,
    version: Option<&str>,
) -> Result<Markup, Error> {
    let ws = &workspace.name;
    // Text that cannot be a version names none: a 404 page like any unknown version.
    let version = match version.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| Error::not_found("environment version", format!("{name}@{v}")))?,
        ),
    };
    let env = state.store.environment(workspace, name, version).await?;
    let mut versions: Vec<Environment> =
        state.store.list_environments(workspace).await?.into_iter().filter(|e| e.name == name).collect();
    versions.sort_by_key(|e| std::cmp::Reverse(e.version));
    let (bstate, log) = build_info(state, &env, true);
    let spec = serde_yaml::to_string(&env.spec).unwrap_or_else(|_| env.spec.to_string());
    let here = env_href(ws, name);
    let body = html! {
        nav.breadcrumbs aria-label="Breadcrumbs" {
            a href={ (layout::ws_url(ws)) "/environments" } { "Environments" } " / " span { (env.name) }
        }
        h1 { "Environment " (env.name) " version " (env.version) }
        @if !env.description.is_empty() { p.description { (env.description) } }
        dl.facts {
            dt { "Build" } dd #build-state { (build_badge(bstate)) }
            dt { "Hash" } dd { code.hash { (env.hash) } }
            dt { "Created" } dd { (layout::time_el(env.created_at)) }
        }
        section #env-versions aria-labelledby="versions-h" {
            h2 #versions-h { "Versions" }
            ul.versions { @for v in &versions {
                li { @if v.version == env.version { strong aria-current="page" { (v.version) } }
                     @else { a href={ (here) "?version=" (v.version) } { (v.version) } }
                     " — " (layout::time_el(v.created_at)) }
            } }
        }
        section #env-spec aria-labelledby="spec-h" {
            h2 #spec-h { "Spec" }
            pre #spec .log { (spec) }
        }
        section #env-build aria-labelledby="build-h" {
            h2 #build-h { "Build log" }
            @match (&log, bstate) {
                (_, BuildState::UserManaged) => p.empty { "A user-managed environment is not built: it runs its interpreter as is." },
                (_, BuildState::Unknown) => p.empty { "The environment builder is not available on this server (uv was not found)." },
                (None, _) => p.empty { "Not built yet: it is built when a job or deployment first uses it (or with " code { "cairn env build" } ")." },
                (Some(l), _) => pre #build-log .log { (tail(l, LOG_TAIL_BYTES)) },
            }
        }
    };
    Ok(body)
}

/// The end of `text`, at most `max` bytes, starting on a line.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    let from_line = cut.find('\n').map(|i| &cut[i + 1..]).unwrap_or(cut);
    format!("… (earlier lines cut)\n{from_line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(spec: serde_json::Value) -> Environment {
        Environment {
            name: "e".into(),
            version: 1,
            description: String::new(),
            spec,
            hash: "h".into(),
            created_at: 0,
        }
    }

    #[test]
    fn build_state_is_the_builders_record() {
        let e = env(serde_json::json!({"packages": []}));
        for (status, expected) in [
            (BuildStatus::NotBuilt, BuildState::NotBuilt),
            (BuildStatus::Building, BuildState::Building),
            (BuildStatus::Built, BuildState::Built),
            (BuildStatus::Failed, BuildState::Failed),
            (BuildStatus::Interrupted, BuildState::Interrupted),
        ] {
            assert_eq!(build_state(&e, Some(status)), expected);
        }
        assert_eq!(build_state(&e, None), BuildState::Unknown);
        let um = env(serde_json::json!({"user_managed": true, "interpreter": "python3"}));
        assert_eq!(build_state(&um, Some(BuildStatus::NotBuilt)), BuildState::UserManaged);
    }

    #[test]
    fn tail_keeps_the_end_from_a_line_start() {
        assert_eq!(tail("short", 10), "short");
        let t = tail("line one\nline two\nline three\n", 15);
        assert_eq!(t, "… (earlier lines cut)\nline three\n");
        // Never splits a character.
        assert!(tail("ééééé\nx", 4).ends_with('x'));
    }
}
