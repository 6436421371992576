//! The scoring gateway's front door (data plane): `POST|GET /endpoints/{name}/score`,
//! `GET /endpoints/{name}/swagger.json`, `GET /endpoints/{name}` (health), MLflow's
//! `POST /endpoints/{name}/invocations` and the Open Inference Protocol v2 REST routes under
//! `/endpoints/{name}/v2/` (see `oip_*` below and `cairn_core::inference`).
//!
//! Every request is authenticated first, with one 401 answer for a wrong credential whether or not
//! the endpoint exists; then the body is capped (413 naming the limit); then a deployment is chosen
//! by the `azureml-model-deployment` header or the traffic split. Errors the gateway itself gives
//! take the shape each protocol's clients expect: `{"message": …}` (`azureml-inference-server-http`)
//! on `/score`, `{"error_code", "message"}` (MLflow) on `/invocations`, `{"error": …}` on `/v2/`.
//! What a replica answers passes through unchanged (MLflow's own error bodies included).
//!
//! The chosen deployment's replicas answer through `deployments::Deployments::forward` (framed
//! protocol over a Unix socket); 503 with `Retry-After` when none is ready (or when the worker a
//! request waited on stopped before reaching it), 424 when the chosen deployment has `Failed`
//! (its scoring code did not start: retrying will not help until it is updated), 429 past the
//! concurrency limit, 504 past request_timeout_ms, 502 when the replica dies mid-request.
//!
//! Every answer carries the request ids azureml-inference-server-http keeps ([`request_ids`]),
//! and a scoring answer names the deployment that gave it (`azureml-model-deployment`); an error
//! status from the scoring code itself also gets Azure's `ms-azureml-model-error-statuscode` and
//! `ms-azureml-model-error-reason` headers, the status and body staying the reference's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::deployments::{DeployedModel, DeploymentState, ScoringMode};
use cairn_core::endpoints::pick_by_traffic;
use cairn_core::inference::{script, InferRequest, Signature};
use cairn_core::{now_ms, Error};
use cairn_store::{DeploymentRecord, EndpointRecord};
use rand::Rng;

use crate::deployments::{ForwardError, Reply, Request};
use crate::endpoints::{authenticate, deployment_names};
use crate::metrics::UNAUTHENTICATED;
use crate::state::AppState;

/// The header that pins a request to one deployment, bypassing the traffic split (Azure's name).
pub const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";
/// Seconds a client is told to wait when no deployment can serve.
const RETRY_AFTER_SECONDS: &str = "10";

/// Which protocol's error body an answer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `{"message": …}` (azureml-inference-server-http).
    Azure,
    /// `{"error_code", "message"}` (MLflow's scoring server).
    Mlflow,
    /// `{"error": …}` (Open Inference Protocol).
    Oip,
}

/// A data-plane error answer with a status and optional extra headers.
struct Answer {
    status: StatusCode,
    message: String,
    retry_after: bool,
    shape: Shape,
}

impl Answer {
    fn new(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer { status, message: message.into(), retry_after: false, shape: Shape::Azure }
    }

    fn shaped(self, shape: Shape) -> Answer {
        Answer { shape, ..self }
    }
}

impl From<Error> for Answer {
    fn from(e: Error) -> Self {
        Answer::new(crate::error::status_of(&e), e.to_string())
    }
}

/// MLflow's `error_code` for a status (`mlflow/exceptions.py`'s table, read backwards).
fn mlflow_error_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 => "BAD_REQUEST",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "ENDPOINT_NOT_FOUND",
        429 => "REQUEST_LIMIT_EXCEEDED",
        503 => "TEMPORARILY_UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL_ERROR",
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(status = %self.status, message = %self.message, "scoring request failed");
        }
        let body = match self.shape {
            Shape::Azure => serde_json::json!({ "message": self.message }),
            Shape::Mlflow => {
                serde_json::json!({ "error_code": mlflow_error_code(self.status), "message": self.message })
            }
            Shape::Oip => serde_json::json!({ "error": self.message }),
        };
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        r
    }
}

/// The longest request id taken (azureml-inference-server-http's `HEADER_LIMIT`).
const REQUEST_ID_MAX: usize = 100;
const REQUEST_ID: &str = "x-request-id";
const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";
/// Deprecated by the reference, which still fills it in for old clients.
const LEGACY_REQUEST_ID: &str = "x-ms-request-id";

/// A request's ids as azureml-inference-server-http keeps them: `x-request-id` is the client's
/// or a new UUID; `x-ms-client-request-id` is the client's (or the legacy header's);
/// `x-ms-request-id` is the client's, or else the client request id, or else the request id.
#[derive(Debug, PartialEq, Eq)]
struct RequestIds {
    request: String,
    client: String,
    legacy: String,
}

impl RequestIds {
    /// The ids of a request, or the 431 message when one is longer than [`REQUEST_ID_MAX`].
    fn of(headers: &HeaderMap) -> Result<RequestIds, String> {
        let given =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let request = match headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
            Some(id) if id.len() > REQUEST_ID_MAX => {
                return Err(format!("{REQUEST_ID} must not exceed {REQUEST_ID_MAX} characters"))
            }
            Some(id) => id.to_string(),
            // From the thread's generator: no system call per request.
            None => uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid().to_string(),
        };
        let (mut legacy, mut client) = (given(LEGACY_REQUEST_ID), given(CLIENT_REQUEST_ID));
        if !legacy.is_empty() {
            if client.is_empty() {
                client = legacy.clone();
            }
        } else {
            legacy = if client.is_empty() { request.clone() } else { client.clone() };
        }
        if legacy.len() > REQUEST_ID_MAX || client.len() > REQUEST_ID_MAX {
            return Err(format!(
                "{LEGACY_REQUEST_ID} and {CLIENT_REQUEST_ID} must not exceed {REQUEST_ID_MAX} characters"
            ));
        }
        Ok(RequestIds { request, client, legacy })
    }

    fn set(&self, h: &mut HeaderMap) {
        let ids = [
            (REQUEST_ID, &self.request),
            (LEGACY_REQUEST_ID, &self.legacy),
            (CLIENT_REQUEST_ID, &self.client),
        ];
        for (name, value) in ids.into_iter().filter(|(_, v)| !v.is_empty()) {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
    }
}

/// Middleware of every data-plane route: gives the request its ids (431 when one is too long,
/// before anything else), shows the replica the `x-request-id` the client gets back, and puts
/// the ids (and a `TraceId` the client sent) on the answer, whatever it is.
pub async fn request_ids(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let shape = shape_of(req.uri().path());
    let ids = match RequestIds::of(req.headers()) {
        Ok(ids) => ids,
        Err(message) => {
            return Answer::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message)
                .shaped(shape)
                .into_response()
        }
    };
    if let Ok(v) = HeaderValue::from_str(&ids.request) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let trace = req.headers().get("traceid").cloned();
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    ids.set(h);
    if let Some(t) = trace {
        h.insert("traceid", t);
    }
    response
}

/// The error shape of a data-plane path.
fn shape_of(path: &str) -> Shape {
    let rest = path.strip_prefix("/endpoints/").and_then(|p| p.split_once('/')).map_or("", |(_, r)| r);
    if rest == "v2" || rest.starts_with("v2/") {
        Shape::Oip
    } else if rest == "invocations" {
        Shape::Mlflow
    } else {
        Shape::Azure
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::auth::bearer_credentials(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Looks the endpoint up and checks the credential; on failure, the answer and the metrics label.
async fn admit(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
) -> Result<Arc<EndpointRecord>, (Answer, String)> {
    let presented = bearer(headers);
    let found = if presented.is_some() {
        state
            .store
            .endpoint_for_scoring(name)
            .await
            .map_err(|e| (Answer::from(e), UNAUTHENTICATED.to_string()))?
    } else {
        None
    };
    match authenticate(&state.secret, found.as_deref(), presented, now_ms()) {
        Ok(()) => Ok(found.expect("authenticated against an endpoint")),
        Err(denied) => {
            Err((Answer::new(StatusCode::UNAUTHORIZED, denied.message()), UNAUTHENTICATED.to_string()))
        }
    }
}

/// The deployment that should answer, or why none can.
async fn choose(state: &AppState, e: &EndpointRecord, headers: &HeaderMap) -> Result<String, Answer> {
    let deployments = deployment_names(state, e).await?;
    if let Some(pinned) = headers.get(DEPLOYMENT_HEADER) {
        let pinned = pinned.to_str().unwrap_or_default().trim();
        return if deployments.iter().any(|d| d == pinned) {
            Ok(pinned.to_string())
        } else {
            Err(Answer::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no deployment \"{pinned}\" on endpoint \"{}\" (named by the {DEPLOYMENT_HEADER} header)",
                    e.name
                ),
            ))
        };
    }
    if deployments.is_empty() {
        return Err(Answer {
            retry_after: true,
            ..Answer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("endpoint \"{}\" has no deployment yet: nothing can score this request", e.name),
            )
        });
    }
    let roll = rand::rng().random_range(0..100u32);
    match pick_by_traffic(&e.traffic, roll) {
        Some(d) => Ok(d.to_string()),
        None => Err(Answer::new(
            StatusCode::NOT_FOUND,
            format!(
                "endpoint \"{}\" gives no deployment live traffic: set its traffic, or pin a deployment with \
                 the {DEPLOYMENT_HEADER} header",
                e.name
            ),
        )),
    }
}

/// The replica protocol's request for an HTTP request's route, method, headers (but its
/// credential and host) and body; no query (callers that pass one set it).
fn request<'a>(route: &'a str, method: &'a str, headers: &'a HeaderMap, body: bytes::Bytes) -> Request<'a> {
    let forwarded = headers
        .iter()
        .filter(|(k, _)| *k != header::AUTHORIZATION && *k != header::HOST)
        .filter_map(|(k, v)| Some((k.as_str().to_string(), serde_json::Value::from(v.to_str().ok()?))))
        .collect();
    Request {
        route,
        method,
        query: "",
        content_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        headers: forwarded,
        body,
    }
}

/// Hands `req` to a replica of the chosen deployment and returns its answer; `replica_time` is
/// set to the time spent waiting for it (queue and replica).
async fn call(
    state: &AppState,
    e: &EndpointRecord,
    deployment: &str,
    req: Request<'_>,
    replica_time: &mut Duration,
) -> Result<Reply, Answer> {
    let who = format!("deployment \"{deployment}\" of endpoint \"{}\"", e.name);
    let started = Instant::now();
    let forwarded = state.deployments.forward(&e.id, deployment, req).await;
    *replica_time = started.elapsed();
    match forwarded {
        Ok(reply) => Ok(reply),
        Err(ForwardError::NotReady) => Err(not_ready(state, e, deployment, &who).await),
        Err(ForwardError::Busy(limit)) => Err(Answer {
            retry_after: true,
            ..Answer::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{who} is at its limit of {limit} concurrent requests \
                     (max_concurrent_requests_per_instance × instance_count)"
                ),
            )
        }),
        Err(ForwardError::Timeout(ms)) => Err(Answer::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{who} did not answer within request_timeout_ms ({ms} ms); the replica is being restarted"
            ),
        )),
        Err(ForwardError::Queued(ms)) => Err(Answer::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{who} had no free worker within request_timeout_ms ({ms} ms): the request was still \
                 waiting for one (in the queue, or on a worker behind an earlier request), and a worker \
                 starts no request past its time"
            ),
        )),
        Err(ForwardError::Expired(ms)) => Err(Answer::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{who} did not answer within request_timeout_ms ({ms} ms, time spent queued included)"),
        )),
        Err(ForwardError::QueueWait(ms)) => Err(Answer {
            retry_after: true,
            ..Answer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{who} had no free worker within max_queue_wait_ms ({ms} ms): every worker is busy; \
                     retry later, or add instances"
                ),
            )
        }),
        Err(ForwardError::Broken(msg)) => Err(Answer::new(StatusCode::BAD_GATEWAY, format!("{who}: {msg}"))),
        Err(ForwardError::Stranded(msg)) => Err(Answer {
            retry_after: true,
            ..Answer::new(StatusCode::SERVICE_UNAVAILABLE, format!("{who}: {msg}"))
        }),
    }
}

/// Why no replica answers here: the deployment has failed (424: its scoring code did not start,
/// and retrying will not help until it is updated), none is ready yet (503, retry later), or
/// (several servers on one database) the deployment runs on another server, whose URL the caller
/// should use.
async fn not_ready(state: &AppState, e: &EndpointRecord, deployment: &str, who: &str) -> Answer {
    let unavailable = |message: String| Answer {
        retry_after: true,
        ..Answer::new(StatusCode::SERVICE_UNAVAILABLE, message)
    };
    match state.store.deployment_server(&e.id, deployment).await {
        Ok(Some(s)) if s.id != state.server.id => {
            return unavailable(format!(
                "{who} runs on another server ({}{}); send scoring requests to {}",
                s.url,
                if s.alive(cairn_core::now_ms()) { "" } else { ", currently unreachable" },
                s.url
            ))
        }
        _ => {}
    }
    match state.store.deployment(&e.id, &e.name, deployment).await {
        Ok(d) if d.state == DeploymentState::Failed => {
            // The reason's first line, without the log tail that follows it.
            let first = d.reason.lines().next().unwrap_or_default();
            let why = first.split(". Log tail").next().unwrap_or_default().trim_end_matches([' ', ':', '.']);
            let why = if why.is_empty() { String::new() } else { format!(": {why}") };
            Answer::new(
                StatusCode::FAILED_DEPENDENCY,
                format!(
                    "{who} has failed{why}; its log: `cairn deployment logs {}/{deployment}`; it serves \
                     again once updated",
                    e.name
                ),
            )
        }
        _ => unavailable(format!("{who} has no ready replica")),
    }
}

/// A replica's answer as the HTTP response, status, content type and headers as it gave them.
fn respond(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = Response::new(Body::from(reply.body));
    *r.status_mut() = status;
    if let Some(ct) = reply.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (header::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// Azure's model-error headers: the status the scoring code answered, when it is an error.
const MODEL_ERROR_STATUS: &str = "ms-azureml-model-error-statuscode";
const MODEL_ERROR_REASON: &str = "ms-azureml-model-error-reason";

/// Names the deployment that served a scoring request (when one was chosen), and marks an error
/// status that came from the scoring code rather than from the gateway.
fn mark_scored(h: &mut HeaderMap, deployment: Option<&str>, model_status: Option<u16>) {
    if let Some(v) = deployment.and_then(|d| HeaderValue::from_str(d).ok()) {
        h.insert(DEPLOYMENT_HEADER, v);
    }
    if let Some(status) = model_status.filter(|s| *s >= 400) {
        h.insert(MODEL_ERROR_STATUS, HeaderValue::from(status));
        h.insert(MODEL_ERROR_REASON, HeaderValue::from_static("model_error"));
    }
}

/// A GET of `route` (and `query`) without a body, answered as the replica answers it.
async fn get(
    state: &AppState,
    e: &EndpointRecord,
    deployment: &str,
    route: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response, Answer> {
    let req = Request { query, ..request(route, "GET", headers, bytes::Bytes::new()) };
    let mut replica_time = Duration::ZERO;
    call(state, e, deployment, req, &mut replica_time).await.map(respond)
}

async fn read_capped(state: &AppState, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, Answer> {
    let cap = state.max_score_body_bytes;
    let too_large = || {
        Answer::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than this server's limit of {cap} bytes (max_score_body_bytes)"
            ),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, cap).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            Answer::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
        }
    })
}

/// A scoring request (`/score` or `/invocations`) from admission to the replica's answer, counted
/// in the metrics under its endpoint and deployment.
#[allow(clippy::too_many_arguments)]
async fn score_inner(
    state: &Arc<AppState>,
    name: &str,
    method: &axum::http::Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    route: &str,
    shape: Shape,
) -> Response {
    let started = Instant::now();
    let e = match admit(state, name, headers).await {
        Ok(e) => e,
        Err((answer, label)) => {
            let response = answer.shaped(shape).into_response();
            state.metrics.observe(&label, None, response.status().as_u16(), started.elapsed());
            return response;
        }
    };
    let mut chosen = None;
    let (mut replica_time, mut answered) = (Duration::ZERO, false);
    let mut model_status = None;
    let result = async {
        let body = read_capped(state, headers, body).await?;
        let deployment = choose(state, &e, headers).await?;
        chosen = Some(deployment.clone());
        let served = state.deployments.served(&e.id, &deployment);
        if route == "/invocations" && served.is_some_and(|s| s.mode == ScoringMode::Script) {
            return Err(Answer::new(
                StatusCode::NOT_FOUND,
                format!(
                    "deployment \"{deployment}\" of endpoint \"{}\" runs a scoring script: /invocations \
                     serves MLflow models deployed without code; POST …/score instead",
                    e.name
                ),
            ));
        }
        mirror(state, &e, headers, route, method, query, &body);
        let req =
            Request { query: query.unwrap_or_default(), ..request(route, method.as_str(), headers, body) };
        let reply = call(state, &e, &deployment, req, &mut replica_time).await?;
        answered = true;
        model_status = Some(reply.status);
        Ok(respond(reply))
    }
    .await;
    if answered {
        // What the gateway itself added to a request a replica answered.
        state.metrics.observe_overhead(started.elapsed().saturating_sub(replica_time));
    }
    let mut response = result.unwrap_or_else(|a| a.shaped(shape).into_response());
    mark_scored(response.headers_mut(), chosen.as_deref(), model_status);
    state.metrics.observe(&e.name, chosen.as_deref(), response.status().as_u16(), started.elapsed());
    response
}

/// Azure's mirror traffic: a share (`mirror_traffic`, at most 50%) of the requests the traffic
/// split routes is also sent to the mirror deployment, on a task of its own, and its answer is
/// dropped: the caller's answer neither waits for it nor depends on it. A request pinned to a
/// deployment by the header is not mirrored (as on Azure). Mirrored calls show in `/metrics`
/// under the mirror deployment's name.
fn mirror(
    state: &Arc<AppState>,
    e: &EndpointRecord,
    headers: &HeaderMap,
    route: &str,
    method: &axum::http::Method,
    query: Option<&str>,
    body: &bytes::Bytes,
) {
    if headers.contains_key(DEPLOYMENT_HEADER) {
        return;
    }
    let Some((name, percent)) = e.mirror_traffic.iter().find(|(_, p)| **p > 0) else { return };
    if i64::from(rand::rng().random_range(0..100u32)) >= *percent {
        return;
    }
    let (state, e, name) = (state.clone(), e.clone(), name.clone());
    let (route, method, query) =
        (route.to_string(), method.as_str().to_string(), query.unwrap_or_default().to_string());
    let (headers, body) = (headers.clone(), body.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let req = Request { query: &query, ..request(&route, &method, &headers, body) };
        let mut replica_time = Duration::ZERO;
        let status = match call(&state, &e, &name, req, &mut replica_time).await {
            Ok(reply) => reply.status,
            Err(answer) => answer.status.as_u16(),
        };
        state.metrics.observe(&e.name, Some(&name), status, started.elapsed());
    });
}

// -- CORS ------------------------------------------------------------------------------------------
//
// As Azure ML's inference server with `AML_CORS_ORIGINS` (flask-cors): a deployment that lists
// origins lets browser pages from them call the endpoint. Their preflight (`OPTIONS` with
// `Origin` and `Access-Control-Request-Method`, sent without the key) is answered with what
// they may send; every answer to such an origin, errors too, carries
// `Access-Control-Allow-Origin` so that the page can read it. An origin is allowed when any
// deployment of the endpoint lists it (or `*`). This tells a page from an allowed origin that
// the endpoint exists, as CORS must; other callers learn nothing new.

/// What `Access-Control-Allow-Origin` says to `origin` calling endpoint `name`, if it may.
async fn cors_allowed(state: &AppState, name: &str, origin: &str) -> Option<HeaderValue> {
    let e = state.store.endpoint_for_scoring(name).await.ok()??;
    let deployments = state.store.deployments_for_scoring(&e.id).await.ok()?;
    let wanted = origin.trim_end_matches('/').to_ascii_lowercase();
    let mut allowed = None;
    for d in deployments.iter() {
        for listed in d.spec.cors_origins().unwrap_or_default() {
            if listed == wanted {
                return HeaderValue::from_str(origin).ok();
            }
            if listed == "*" {
                allowed = Some(HeaderValue::from_static("*"));
            }
        }
    }
    allowed
}

/// `answer`, for a page from an allowed origin with `Access-Control-Allow-Origin`; or, for its
/// preflight, the preflight's answer instead (`answer` is then never run).
async fn with_cors(
    state: &AppState,
    name: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    answer: impl std::future::Future<Output = Response>,
) -> Response {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return answer.await };
    if method == axum::http::Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        // A preflight carries no key: answered for an allowed origin, else it goes on to the
        // 401 any keyless request gets.
        if let Some(allowed) = cors_allowed(state, name, origin).await {
            return preflight(allowed, headers);
        }
    }
    let mut response = answer.await;
    if let Some(allowed) = cors_allowed(state, name, origin).await {
        allow_origin(response.headers_mut(), allowed);
    }
    response
}

/// Headers a page may read from an answer (the request ids and which deployment answered).
const EXPOSED: &str = "x-request-id, x-ms-request-id, x-ms-client-request-id, azureml-model-deployment, \
                       x-ms-run-fn-exec-ms, x-ms-run-function-failed";

fn allow_origin(headers: &mut HeaderMap, allowed: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED));
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to an allowed origin's preflight: the methods of the scoring route and the headers
/// it asked to send (the key, `Content-Type`, `azureml-model-deployment`, …), cached 10 minutes.
fn preflight(allowed: HeaderValue, request: &HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, allowed);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

/// `POST|GET|OPTIONS /endpoints/{name}/score` (a GET's query arguments are run()'s input).
pub async fn score(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    method: axum::http::Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer =
        score_inner(&state, &name, &method, query.as_deref(), &headers, body, "/score", Shape::Azure);
    with_cors(&state, &name, &method, &headers, answer).await
}

/// `POST /endpoints/{name}/invocations`: MLflow's scoring route (`dataframe_split`,
/// `dataframe_records`, `instances`, `inputs`, CSV), answered by MLflow's own code in the replica
/// of a deployment without scoring code.
pub async fn invocations(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    method: axum::http::Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer =
        score_inner(&state, &name, &method, query.as_deref(), &headers, body, "/invocations", Shape::Mlflow);
    with_cors(&state, &name, &method, &headers, answer).await
}

/// `GET /endpoints/{name}/swagger.json[?version=2|3|3.1]`: the chosen deployment's API description.
pub async fn swagger(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let e = match admit(&state, &name, &headers).await {
        Ok(e) => e,
        Err((answer, _)) => return answer.into_response(),
    };
    match choose(&state, &e, &headers).await {
        Ok(d) => get(&state, &e, &d, "/swagger.json", query.as_deref().unwrap_or_default(), &headers)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(a) => a.into_response(),
    }
}

/// `GET /endpoints/{name}`: the health of the deployment that would serve (503 when none can).
pub async fn health(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let e = match admit(&state, &name, &headers).await {
        Ok(e) => e,
        Err((answer, _)) => return answer.into_response(),
    };
    // "Healthy" is the chosen deployment's replica answering its health route.
    match choose(&state, &e, &headers).await {
        Ok(d) => get(&state, &e, &d, "/", "", &headers).await.unwrap_or_else(IntoResponse::into_response),
        Err(a) => a.into_response(),
    }
}

// -- Open Inference Protocol v2 (REST) -------------------------------------------------------------
//
// `{model}` is the name of a model of a deployment of the endpoint (optionally `/versions/V`); a
// deployment with several models (a scoring script's) answers for each. With the deployment
// header, that deployment answers (404 when it serves another model); otherwise the traffic
// split, narrowed to the deployments serving that model, picks one. Readiness answers 200
// when ready and 503 (with the same body) when not, so load balancers need no body parsing.

/// The path of the model routes.
#[derive(serde::Deserialize)]
pub struct ModelPath {
    name: String,
    model: String,
    #[serde(default)]
    version: Option<String>,
}

/// The deployment of `e` that serves `model` (and `version`) for this request, the version it
/// holds, and what it serves.
async fn model_deployment(
    state: &AppState,
    e: &EndpointRecord,
    headers: &HeaderMap,
    model: &str,
    version: Option<&str>,
) -> Result<(DeploymentRecord, DeployedModel, Arc<crate::serving::Served>), Answer> {
    let version = match version {
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            Answer::new(StatusCode::NOT_FOUND, format!("model version {v:?} is not a version number"))
        })?),
        None => None,
    };
    let all: Vec<DeploymentRecord> = state
        .store
        .list_deployments(&e.id)
        .await?
        .into_iter()
        .filter(|d| d.state != DeploymentState::Deleting)
        .collect();
    let holds = |d: &DeploymentRecord| {
        d.models.iter().find(|m| m.name == model && version.is_none_or(|v| v == m.version)).cloned()
    };
    let serves = |d: &DeploymentRecord| holds(d).is_some();
    let names = |d: &DeploymentRecord| d.models.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
    let wanted = match version {
        Some(v) => format!("model \"{model}\" version {v}"),
        None => format!("model \"{model}\""),
    };
    let d = if let Some(pinned) = headers.get(DEPLOYMENT_HEADER) {
        let pinned = pinned.to_str().unwrap_or_default().trim();
        let d = all.iter().find(|d| d.name == pinned).ok_or_else(|| {
            Answer::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no deployment \"{pinned}\" on endpoint \"{}\" (named by the {DEPLOYMENT_HEADER} header)",
                    e.name
                ),
            )
        })?;
        if !serves(d) {
            return Err(Answer::new(
                StatusCode::NOT_FOUND,
                format!("deployment \"{pinned}\" serves model {}, not {wanted}", names(d)),
            ));
        }
        d.clone()
    } else {
        let candidates: Vec<&DeploymentRecord> = all.iter().filter(|d| serves(d)).collect();
        if candidates.is_empty() {
            let served: Vec<String> = all.iter().map(|d| format!("{} ({})", names(d), d.name)).collect();
            return Err(Answer::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{wanted} is not served by endpoint \"{}\" (it serves: {})",
                    e.name,
                    if served.is_empty() { "nothing yet".to_string() } else { served.join(", ") }
                ),
            ));
        }
        let traffic: std::collections::BTreeMap<String, i64> = candidates
            .iter()
            .map(|d| (d.name.clone(), e.traffic.get(&d.name).copied().unwrap_or(0).max(0)))
            .collect();
        let total: i64 = traffic.values().sum();
        if total == 0 {
            return Err(Answer::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{wanted} is served only by deployments with no live traffic on endpoint \"{}\": set its \
                     traffic, or pin one with the {DEPLOYMENT_HEADER} header",
                    e.name
                ),
            ));
        }
        let roll = rand::rng().random_range(0..total as u32);
        let name = pick_by_traffic(&traffic, roll).expect("a roll below the total picks one");
        candidates.into_iter().find(|d| d.name == name).expect("picked among the candidates").clone()
    };
    let served = state.deployments.served(&e.id, &d.name).ok_or_else(|| Answer {
        retry_after: true,
        ..Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "deployment \"{}\" of endpoint \"{}\" is not running ({})",
                d.name,
                e.name,
                d.state.as_str()
            ),
        )
    })?;
    let held = holds(&d).expect("chosen among the deployments holding the model");
    Ok((d, held, served))
}

/// The deployment's tensor signature (or why it has none). A scoring script's comes from its
/// swagger document, asked of a replica the first time and kept for the generation.
async fn signature<'a>(
    state: &AppState,
    e: &EndpointRecord,
    deployment: &str,
    served: &'a crate::serving::Served,
    headers: &HeaderMap,
) -> Result<&'a Result<Signature, String>, Answer> {
    served
        .signature
        .get_or_try_init(|| async {
            let ask = async |query: &'static str| {
                let req = Request { query, ..request("/swagger.json", "GET", headers, bytes::Bytes::new()) };
                call(state, e, deployment, req, &mut Duration::default()).await
            };
            // The default (swagger 2) first; a script whose decorators support only OpenAPI 3
            // answers 404 to it.
            let mut reply = ask("").await?;
            if reply.status == 404 {
                reply = ask("version=3").await?;
            }
            if reply.status != 200 {
                return Ok(Err(format!(
                    "the scoring script's swagger document answered {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body).chars().take(200).collect::<String>()
                )));
            }
            Ok(serde_json::from_slice(&reply.body)
                .map_err(|err| format!("the scoring script's swagger document is not JSON: {err}"))
                .and_then(|doc| Signature::from_script_swagger(&doc)))
        })
        .await
}

fn ready_answer(body: serde_json::Value, ready: bool) -> Response {
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /endpoints/{name}/v2`: the protocol's server metadata (what `get_server_metadata()` of
/// KServe's and Triton's clients asks first).
pub async fn oip_server(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match admit(&state, &name, &headers).await {
        Ok(_) => Json(serde_json::json!({
            "name": "cairn",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": [],
        }))
        .into_response(),
        Err((answer, _)) => answer.shaped(Shape::Oip).into_response(),
    }
}

/// `GET /endpoints/{name}/v2/health/live`: the gateway is up and the caller may use the endpoint.
pub async fn oip_live(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match admit(&state, &name, &headers).await {
        Ok(_) => Json(serde_json::json!({ "live": true })).into_response(),
        Err((answer, _)) => answer.shaped(Shape::Oip).into_response(),
    }
}

/// `GET /endpoints/{name}/v2/health/ready`: every deployment with live traffic (or the pinned
/// one) has a ready replica.
pub async fn oip_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let e = match admit(&state, &name, &headers).await {
        Ok(e) => e,
        Err((answer, _)) => return answer.shaped(Shape::Oip).into_response(),
    };
    let targets: Vec<String> = match headers.get(DEPLOYMENT_HEADER) {
        Some(p) => vec![p.to_str().unwrap_or_default().trim().to_string()],
        None => e.traffic.iter().filter(|(_, p)| **p > 0).map(|(d, _)| d.clone()).collect(),
    };
    let ready = !targets.is_empty()
        && targets.iter().all(|d| state.deployments.health(&e.id, d).is_some_and(|h| h.ready > 0));
    ready_answer(serde_json::json!({ "ready": ready }), ready)
}

/// `GET /endpoints/{name}/v2/models/{model}[/versions/{version}]`: the model's metadata; its
/// tensors when it declares a signature, else empty lists and `parameters.signature` saying why.
pub async fn oip_metadata(
    State(state): State<Arc<AppState>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let e = admit(&state, &p.name, &headers).await.map_err(|(a, _)| a)?;
        let (d, m, served) = model_deployment(&state, &e, &headers, &p.model, p.version.as_deref()).await?;
        let mut body = serde_json::json!({
            "name": m.name,
            "versions": [m.version.to_string()],
            "platform": served.platform,
        });
        match signature(&state, &e, &d.name, &served, &headers).await? {
            Ok(sig) => {
                body["inputs"] = serde_json::json!(sig.inputs);
                body["outputs"] = serde_json::json!(sig.outputs);
            }
            Err(why) => {
                body["inputs"] = serde_json::json!([]);
                body["outputs"] = serde_json::json!([]);
                body["parameters"] = serde_json::json!({ "signature": why });
            }
        }
        Ok::<_, Answer>(Json(body).into_response())
    }
    .await;
    result.unwrap_or_else(|a| a.shaped(Shape::Oip).into_response())
}

/// `GET /endpoints/{name}/v2/models/{model}[/versions/{version}]/ready`.
pub async fn oip_model_ready(
    State(state): State<Arc<AppState>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let e = admit(&state, &p.name, &headers).await.map_err(|(a, _)| a)?;
        let (d, m, _) = model_deployment(&state, &e, &headers, &p.model, p.version.as_deref()).await?;
        let ready = state.deployments.health(&e.id, &d.name).is_some_and(|h| h.ready > 0);
        Ok::<_, Answer>(ready_answer(serde_json::json!({ "name": m.name, "ready": ready }), ready))
    }
    .await;
    result.unwrap_or_else(|a| a.shaped(Shape::Oip).into_response())
}

/// `POST /endpoints/{name}/v2/models/{model}[/versions/{version}]/infer`: checked against the
/// signature here (400 naming the tensor), converted and predicted in the replica.
pub async fn oip_infer(
    State(state): State<Arc<AppState>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut label = UNAUTHENTICATED.to_string();
    let mut chosen = None;
    let (mut replica_time, mut answered) = (Duration::ZERO, false);
    let result = async {
        let e = admit(&state, &p.name, &headers).await.map_err(|(a, _)| a)?;
        label = e.name.clone();
        let body = read_capped(&state, &headers, body).await?;
        let (d, m, served) = model_deployment(&state, &e, &headers, &p.model, p.version.as_deref()).await?;
        chosen = Some(d.name.clone());
        let sig = signature(&state, &e, &d.name, &served, &headers).await?.as_ref().map_err(|why| {
            Answer::new(
                StatusCode::BAD_REQUEST,
                format!("model {m} has no tensor signature to infer with: {why}"),
            )
        })?;
        let req: InferRequest = serde_json::from_slice(&body).map_err(|err| {
            Answer::new(StatusCode::BAD_REQUEST, format!("invalid inference request: {err}"))
        })?;
        sig.check(&req).map_err(|m| Answer::new(StatusCode::BAD_REQUEST, m))?;
        let not_json = |err: serde_json::Error| {
            Answer::new(StatusCode::BAD_GATEWAY, format!("the replica's inference answer is not JSON: {err}"))
        };
        let mut answer = serde_json::Value::Null;
        let mut outputs: Vec<serde_json::Value> = match &sig.script {
            // A scoring script: run() gets the tensors as the JSON body its decorators convert.
            Some(script) => {
                let frame = Request {
                    content_type: Some("application/json"),
                    ..request("/score", "POST", &headers, script.body(sig, &req).into())
                };
                let reply = call(&state, &e, &d.name, frame, &mut replica_time).await?;
                answered = true;
                if reply.status != 200 {
                    // run()'s error as the protocol's error body: the reference's {"message"} or
                    // whatever the script answered.
                    let text = String::from_utf8_lossy(&reply.body);
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_string))
                        .unwrap_or_else(|| text.into_owned());
                    let status =
                        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return Err(Answer::new(status, message));
                }
                let result: serde_json::Value = serde_json::from_slice(&reply.body).map_err(not_json)?;
                script::outputs_of(&result, &sig.outputs).map_err(|why| {
                    Answer::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("run()'s answer has no tensor form: {why}"),
                    )
                })?
            }
            None => {
                let frame = request("/v2/infer", "POST", &headers, body);
                let reply = call(&state, &e, &d.name, frame, &mut replica_time).await?;
                answered = true;
                if reply.status != 200 {
                    return Ok(respond(reply));
                }
                answer = serde_json::from_slice(&reply.body).map_err(not_json)?;
                match answer["outputs"].take() {
                    serde_json::Value::Array(o) => o,
                    _ => Vec::new(),
                }
            }
        };
        if let Some(wanted) = &req.outputs {
            outputs.retain(|o| wanted.iter().any(|w| o["name"].as_str() == Some(w.name.as_str())));
        }
        let id = req.id.clone().unwrap_or_else(|| format!("{:032x}", rand::rng().random::<u128>()));
        let mut out = serde_json::json!({
            "model_name": m.name,
            "model_version": m.version.to_string(),
            "id": id,
            "outputs": outputs,
        });
        if let Some(parameters) = answer.get("parameters").filter(|v| v.is_object()) {
            out["parameters"] = parameters.clone();
        }
        Ok::<_, Answer>(Json(out).into_response())
    }
    .await;
    let response = result.unwrap_or_else(|a| a.shaped(Shape::Oip).into_response());
    if answered {
        state.metrics.observe_overhead(started.elapsed().saturating_sub(replica_time));
    }
    state.metrics.observe(&label, chosen.as_deref(), response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pairs: &[(&'static str, &str)]) -> Result<RequestIds, String> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        RequestIds::of(&h)
    }

    #[test]
    fn request_ids_follow_the_reference_server() {
        let new = ids(&[]).unwrap();
        assert_eq!(new.request.len(), 36);
        assert_eq!((new.legacy.as_str(), new.client.as_str()), (new.request.as_str(), ""));
        assert_ne!(new.request, ids(&[]).unwrap().request, "a new id per request");
        let r = |request: &str, client: &str, legacy: &str| RequestIds {
            request: request.into(),
            client: client.into(),
            legacy: legacy.into(),
        };
        assert_eq!(ids(&[(REQUEST_ID, "a")]), Ok(r("a", "", "a")));
        assert_eq!(ids(&[(REQUEST_ID, "a"), (CLIENT_REQUEST_ID, "c")]), Ok(r("a", "c", "c")));
        assert_eq!(ids(&[(REQUEST_ID, "a"), (LEGACY_REQUEST_ID, "l")]), Ok(r("a", "l", "l")));
        assert_eq!(
            ids(&[(REQUEST_ID, "a"), (LEGACY_REQUEST_ID, "l"), (CLIENT_REQUEST_ID, "c")]),
            Ok(r("a", "c", "l"))
        );
        let at_limit = "x".repeat(REQUEST_ID_MAX);
        assert!(ids(&[(REQUEST_ID, &at_limit), (CLIENT_REQUEST_ID, &at_limit)]).is_ok());
        let over = "x".repeat(REQUEST_ID_MAX + 1);
        assert_eq!(ids(&[(REQUEST_ID, &over)]), Err("x-request-id must not exceed 100 characters".into()));
        for h in [CLIENT_REQUEST_ID, LEGACY_REQUEST_ID] {
            let err = ids(&[(h, &over)]).unwrap_err();
            assert!(err.contains("x-ms-request-id and x-ms-client-request-id must not exceed 100"), "{err}");
        }
    }

    #[test]
    fn each_protocols_paths_get_its_error_shape() {
        assert_eq!(shape_of("/endpoints/e/score"), Shape::Azure);
        assert_eq!(shape_of("/endpoints/e/swagger.json"), Shape::Azure);
        assert_eq!(shape_of("/endpoints/e"), Shape::Azure);
        assert_eq!(shape_of("/endpoints/e/invocations"), Shape::Mlflow);
        assert_eq!(shape_of("/endpoints/e/v2/models/m/infer"), Shape::Oip);
        assert_eq!(shape_of("/endpoints/e/v2"), Shape::Oip);
        assert_eq!(shape_of("/endpoints/v2/score"), Shape::Azure, "an endpoint may be named v2");
    }
}
