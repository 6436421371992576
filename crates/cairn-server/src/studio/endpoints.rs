//! Studio pages of online endpoints: the list, and one endpoint with its state, scoring URI,
//! traffic split, deployments and their replicas, recent traffic from the gateway's metrics,
//! its keys (masked until asked for), key regeneration, and a form that sends a test request.
//!
//! Keys never appear in a page: `assets/ops.js` fetches them from the keys API with the session
//! when the user presses "Reveal". The test form posts to this module, which opens the key on the
//! server and hands the request to the gateway's own handler (`gateway::score`), so a test is
//! authenticated, capped, routed and counted exactly like any scoring request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use cairn_core::api::{Role, Workspace};
use cairn_core::deployments::{DeployedModel, DeploymentState};
use cairn_core::endpoints::{AuthMode, KeyType, ProvisioningState};
use cairn_core::Error;
use cairn_store::{DeploymentRecord, EndpointRecord};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, badge, Nav, OrPage, PageResult, Tone};
use super::open_workspace;
use super::session::Session;
use crate::deployments::ReplicaHealth;
use crate::metrics::{EndpointTraffic, RECENT_SECONDS};
use crate::state::AppState;

/// What the test form starts with: the shape `score.py` scripts like the walkthrough's expect.
const SAMPLE_BODY: &str = "{\"data\": [[1.0, 2.0, 3.0]]}";
/// Most of a test response shown in the page.
const MAX_SHOWN_RESPONSE: usize = 64 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/w/{ws}/endpoints", get(list))
        .route("/w/{ws}/endpoints/{name}", get(show))
        .route("/w/{ws}/endpoints/{name}/test", post(test))
        .route("/w/{ws}/endpoints/{name}/regenerate-key", post(regenerate))
}

fn endpoint_badge(p: ProvisioningState) -> Markup {
    let tone = match p {
        ProvisioningState::Succeeded => Tone::Ok,
        ProvisioningState::Failed | ProvisioningState::Canceled => Tone::Failed,
        ProvisioningState::Creating | ProvisioningState::Updating | ProvisioningState::Deleting => Tone::Busy,
    };
    badge(p.as_str(), tone)
}

fn deployment_badge(d: DeploymentState) -> Markup {
    let tone = match d {
        DeploymentState::Healthy => Tone::Ok,
        DeploymentState::Failed => Tone::Failed,
        DeploymentState::Unhealthy => Tone::Waiting,
        DeploymentState::Creating | DeploymentState::Updating | DeploymentState::Deleting => Tone::Busy,
    };
    badge(d.as_str(), tone)
}

/// A latency: `0.42 ms`, `3.1 ms`, `250 ms`, `1.50 s`.
fn fmt_seconds(s: f64) -> String {
    let ms = s * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{s:.2} s")
    }
}

fn endpoint_href(ws: &str, name: &str) -> String {
    format!("{}/endpoints/{}", layout::ws_url(ws), layout::seg(name))
}

fn traffic_text(t: &std::collections::BTreeMap<String, i64>) -> String {
    if t.is_empty() {
        return "none".into();
    }
    t.iter().map(|(d, p)| format!("{d} {p}%")).collect::<Vec<_>>().join(", ")
}

async fn list(State(state): State<Arc<AppState>>, s: Session, Path(ws): Path<String>) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let body = list_body(&state, &workspace).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Endpoints, "Endpoints", body).into_response())
}

async fn list_body(state: &AppState, workspace: &Workspace) -> Result<Markup, Error> {
    let ws = &workspace.name;
    let endpoints = state.store.list_endpoints(workspace).await?;
    let mut rows = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let deployments = state.store.list_deployments(&e.id).await?;
        rows.push((crate::endpoints::view(state, &e), deployments));
    }
    let body = html! {
        h1 { "Endpoints" }
        @if rows.is_empty() {
            p.empty { "No endpoints yet. Create one with " code { "cairn endpoint create" } "." }
        } @else {
            div.table-wrap { table #endpoints-table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Deployments" }
                    th scope="col" { "Traffic" } th scope="col" { "Auth" } th scope="col" { "Scoring URI" }
                    th scope="col" { "Updated" }
                } }
                tbody { @for (e, deployments) in &rows {
                    tr data-endpoint=(e.name) {
                        td { a href=(endpoint_href(ws, &e.name)) { (e.name) } }
                        td { (endpoint_badge(e.provisioning_state)) }
                        td { @for d in deployments {
                            (d.name) " " (deployment_badge(d.state)) " "
                        } }
                        td { (traffic_text(&e.traffic)) }
                        td { (e.auth_mode.as_str()) }
                        td { code { (e.scoring_uri) } }
                        td { (layout::time_el(e.updated_at)) }
                    }
                } }
            } }
        }
    };
    Ok(body)
}

/// What a test request got back, shown under the form.
struct TestOutcome {
    status: u16,
    content_type: String,
    body: String,
}

#[derive(Deserialize)]
struct ShowQuery {
    /// Set by the redirect after a key was regenerated.
    regenerated: Option<String>,
}

async fn show(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> PageResult {
    let workspace = open_workspace(&state, &s, &ws).await?;
    let notice = match q.regenerated.as_deref() {
        Some(slot @ ("primary" | "secondary")) => Some(format!("The {slot} key was regenerated.")),
        _ => None,
    };
    let body = endpoint_body(&state, &s, &workspace, &name, notice, None).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Endpoints, &format!("Endpoint {name}"), body).into_response())
}

async fn endpoint_body(
    state: &AppState,
    s: &Session,
    workspace: &Workspace,
    name: &str,
    notice: Option<String>,
    outcome: Option<(&str, TestOutcome)>,
) -> Result<Markup, Error> {
    let ws = workspace.name.as_str();
    let record = state.store.endpoint(workspace, name).await?;
    let e = crate::endpoints::view(state, &record);
    let deployments = state.store.list_deployments(&record.id).await?;
    let health: Vec<Option<ReplicaHealth>> =
        deployments.iter().map(|d| state.deployments.health(&record.id, &d.name)).collect();
    let traffic = state.metrics.traffic(&record.name);
    let can_write = s.caller.require(Role::Writer, Some(ws)).is_ok();
    let here = endpoint_href(ws, &e.name);
    let keys_api = format!("/api/v1/workspaces/{}/endpoints/{}/keys", layout::seg(ws), layout::seg(&e.name));
    let body = html! {
        nav.breadcrumbs aria-label="Breadcrumbs" {
            a href={ (layout::ws_url(ws)) "/endpoints" } { "Endpoints" } " / " span { (e.name) }
        }
        h1 { "Endpoint " (e.name) }
        @if let Some(n) = &notice { p.notice role="status" { (n) } }
        @if !e.description.is_empty() { p.description { (e.description) } }
        dl.facts {
            dt { "State" } dd #endpoint-state { (endpoint_badge(e.provisioning_state)) }
            dt { "Scoring URI" } dd { code #scoring-uri { (e.scoring_uri) } }
            dt { "Swagger URI" } dd { code #swagger-uri { (e.swagger_uri) } }
            dt { "Authentication" } dd #auth-mode { (e.auth_mode.as_str()) }
            dt { "Traffic" } dd #traffic {
                @if e.traffic.is_empty() { "No deployment takes live traffic." }
                @else { ul { @for (d, p) in &e.traffic { li data-deployment=(d) { (d) ": " (p) "%" } } } }
                @if !e.mirror_traffic.is_empty() { p { "Mirrored: " (traffic_text(&e.mirror_traffic)) } }
            }
            dt { "Created" } dd { (layout::time_el(e.created_at)) }
        }
        section #deployments aria-labelledby="deployments-h" {
            h2 #deployments-h { "Deployments" }
            @if deployments.is_empty() {
                p.empty { "No deployments. Create one with " code { "cairn deployment create" } "." }
            } @else {
                div.table-wrap { table #deployments-table {
                    thead { tr {
                        th scope="col" { "Deployment" } th scope="col" { "Models" } th scope="col" { "State" }
                        th scope="col" { "Instances" } th scope="col" { "Replicas ready" }
                        th scope="col" { "Restarts" } th scope="col" { "Updated" }
                    } }
                    tbody { @for (d, h) in deployments.iter().zip(&health) { (deployment_row(ws, d, h.as_ref())) } }
                } }
            }
        }
        section #requests aria-labelledby="requests-h" {
            h2 #requests-h { "Requests" }
            (traffic_summary(traffic.as_ref()))
        }
        @if e.auth_mode == AuthMode::Key {
            section #keys aria-labelledby="keys-h" data-keys-url=(keys_api) {
                h2 #keys-h { "Keys" }
                @if can_write {
                    (key_row(s, &here, "primary", "Primary key"))
                    (key_row(s, &here, "secondary", "Secondary key"))
                    p #key-error .error role="alert" hidden {}
                } @else {
                    p { "Keys are shown to writers and admins only." }
                }
            }
        } @else {
            section #keys aria-labelledby="keys-h" {
                h2 #keys-h { "Tokens" }
                p { "This endpoint takes short-lived tokens: get one with "
                    code { "cairn endpoint get-token " (e.name) } "." }
            }
        }
        @if can_write {
            (test_form(s, &here, &deployments, outcome))
        }
        script src=(super::asset_url("ops.js")) defer {}
    };
    Ok(body)
}

fn deployment_row(ws: &str, d: &DeploymentRecord, h: Option<&ReplicaHealth>) -> Markup {
    let link =
        |m: &DeployedModel| format!("{}/models/{}/{}", layout::ws_url(ws), layout::seg(&m.name), m.version);
    html! {
        tr data-deployment=(d.name) {
            td { (d.name) }
            td.models { @for (i, m) in d.models.iter().enumerate() {
                @if i > 0 { ", " }
                a href=(link(m)) { (m.name) ":" (m.version) }
            } }
            td {
                (deployment_badge(d.state))
                @if !d.reason.is_empty() {
                    details.reason { summary { "Why" } pre.log { (d.reason) } }
                }
            }
            td { (d.spec.instance_count) }
            td.replicas { @match h {
                Some(h) => { (h.ready) " / " (h.total) },
                None if d.state == DeploymentState::Failed => "none (failed)",
                None => "—",
            } }
            td.restarts { @if let Some(h) = h { (h.restarts) } @else { "—" } }
            td { (layout::time_el(d.updated_at)) }
        }
    }
}

fn traffic_summary(t: Option<&EndpointTraffic>) -> Markup {
    let Some(t) = t else {
        return html! { p #traffic-summary .empty { "No traffic yet (since this server started)." } };
    };
    let le = |v: Option<f64>| match v {
        Some(s) => format!("≤ {}", fmt_seconds(s)),
        None => "> 60 s".into(),
    };
    html! {
        dl #traffic-summary .facts {
            dt { "Last " (RECENT_SECONDS) " s" } dd { (t.recent) " requests ("
                (format!("{:.2}", t.recent as f64 / RECENT_SECONDS as f64)) "/s)" }
            dt { "Since the server started" } dd { (t.total) " requests" }
            dt { "By status" } dd { @for (status, n) in &t.by_status {
                span.status-count data-status=(status) { (status) ": " (n) } " "
            } }
            dt { "Latency" } dd { "mean " (fmt_seconds(t.mean_seconds)) ", median " (le(t.p50_le))
                ", 95th percentile " (le(t.p95_le)) }
        }
    }
}

fn key_row(s: &Session, here: &str, slot: &str, label: &str) -> Markup {
    html! {
        div.key-row.toolbar data-slot=(slot) {
            span.key-label id={ (slot) "-key-label" } { (label) }
            code.key id={ (slot) "-key" } aria-labelledby={ (slot) "-key-label" } aria-live="polite" { "••••••••••••" }
            button.reveal type="button" id={ "reveal-" (slot) } data-slot=(slot) aria-controls={ (slot) "-key" } { "Reveal" }
            button.copy type="button" id={ "copy-" (slot) } data-slot=(slot) { "Copy" }
            form.regenerate method="post" action={ (here) "/regenerate-key" }
                data-confirm={ "Regenerate the " (slot) " key? Clients using it will be refused." } {
                (layout::csrf_field(s))
                input type="hidden" name="key_type" value=(slot);
                button type="submit" id={ "regenerate-" (slot) } { "Regenerate" }
            }
        }
    }
}

fn test_form(
    s: &Session,
    here: &str,
    deployments: &[DeploymentRecord],
    outcome: Option<(&str, TestOutcome)>,
) -> Markup {
    let (sent, result) = match outcome {
        Some((b, o)) => (b, Some(o)),
        None => (SAMPLE_BODY, None),
    };
    html! {
        section #test aria-labelledby="test-h" {
            h2 #test-h { "Test" }
            form #test-form method="post" action={ (here) "/test#test" } {
                (layout::csrf_field(s))
                label for="test-body" { "Request body (JSON)" }
                textarea #test-body name="body" rows="6" spellcheck="false" style="width: 100%; max-width: 60rem;" { (sent) }
                label for="test-deployment" { "Deployment" }
                select #test-deployment name="deployment" {
                    option value="" { "By traffic split" }
                    @for d in deployments { option value=(d.name) { (d.name) } }
                }
                button #test-send type="submit" { "Send" }
            }
            h3 { "Response" }
            p #test-status aria-live="polite" { @if let Some(o) = &result { "HTTP " (o.status) " " (o.content_type) } }
            pre #test-response .log { @if let Some(o) = &result { (o.body) } }
        }
    }
}

#[derive(Deserialize)]
struct TestForm {
    /// Missing is a mismatch (403), not a malformed form.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    deployment: String,
}

/// Sends the form's body to the endpoint as a scoring request, through the gateway's handler,
/// with a credential the server opens for itself (the browser never holds it).
async fn test(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name)): Path<(String, String)>,
    Form(form): Form<TestForm>,
) -> PageResult {
    s.check_csrf(&form.csrf).or_page(&s)?;
    // Scoring needs a key, and keys are for writers: so is the test.
    s.caller.require(Role::Writer, Some(&ws)).or_page(&s)?;
    let workspace = open_workspace(&state, &s, &ws).await?;
    let e = state.store.endpoint(&workspace, &name).await.or_page(&s)?;
    let outcome = score(&state, &e, &form).await.or_page(&s)?;
    let body =
        endpoint_body(&state, &s, &workspace, &name, None, Some((&form.body, outcome))).await.or_page(&s)?;
    Ok(layout::page(&s, Some(&ws), Nav::Endpoints, &format!("Endpoint {name}"), body).into_response())
}

async fn score(state: &Arc<AppState>, e: &EndpointRecord, form: &TestForm) -> Result<TestOutcome, Error> {
    let credential = match e.auth_mode {
        AuthMode::Key => crate::endpoints::keys(state, e)?.primary_key,
        AuthMode::AmlToken => crate::endpoints::token(state, e, 60)?.access_token,
    };
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {credential}"))
        .map_err(|_| Error::internal("an endpoint credential is not a valid header value"))?;
    headers.insert(header::AUTHORIZATION, bearer);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !form.deployment.is_empty() {
        let pinned = HeaderValue::from_str(&form.deployment)
            .map_err(|_| Error::invalid(format!("invalid deployment name {:?}", form.deployment)))?;
        headers.insert(crate::gateway::DEPLOYMENT_HEADER, pinned);
    }
    let response = crate::gateway::score(
        State(state.clone()),
        Path(e.name.clone()),
        Method::POST,
        axum::extract::RawQuery(None),
        headers,
        Body::from(form.body.clone()),
    )
    .await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| Error::internal(format!("cannot read the endpoint's answer: {e}")))?;
    let mut body = pretty_json(&bytes).unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    if body.len() > MAX_SHOWN_RESPONSE {
        let cut = (0..=MAX_SHOWN_RESPONSE).rev().find(|i| body.is_char_boundary(*i)).unwrap_or(0);
        body.truncate(cut);
        body.push_str("\n… (cut)");
    }
    Ok(TestOutcome { status, content_type, body })
}

fn pretty_json(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    serde_json::to_string_pretty(&v).ok()
}

#[derive(Deserialize)]
struct RegenerateForm {
    /// Missing is a mismatch (403), not a malformed form.
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key_type: String,
}

/// Replaces one key (the form asks for confirmation first, in `ops.js`), then back to the page.
async fn regenerate(
    State(state): State<Arc<AppState>>,
    s: Session,
    Path((ws, name)): Path<(String, String)>,
    Form(form): Form<RegenerateForm>,
) -> PageResult {
    s.check_csrf(&form.csrf).or_page(&s)?;
    s.caller.require(Role::Writer, Some(&ws)).or_page(&s)?;
    let slot = match form.key_type.as_str() {
        "primary" => KeyType::Primary,
        "secondary" => KeyType::Secondary,
        other => {
            return Err(Error::invalid(format!("key_type {other:?} must be primary or secondary")))
                .or_page(&s)
        }
    };
    let workspace = open_workspace(&state, &s, &ws).await?;
    let mut e = state.store.endpoint(&workspace, &name).await.or_page(&s)?;
    crate::endpoints::regenerate_key(&state, &mut e, slot).await.or_page(&s)?;
    tracing::info!(workspace = %ws, endpoint = %name, key_type = %form.key_type, "endpoint key regenerated in the studio");
    let back = format!("{}?regenerated={}", endpoint_href(&ws, &name), form.key_type);
    Ok(Redirect::to(&back).into_response())
}
