//! The scoring gateway's front door (data plane): `POST|GET /endpoints/{name}/score`,
//! `GET /endpoints/{name}/swagger.json` and `GET /endpoints/{name}` (health).
//!
//! Every request is authenticated first, with one 401 answer for a wrong credential whether or not
//! the endpoint exists; then the body is capped (413 naming the limit); then a deployment is chosen
//! by the `azureml-model-deployment` header or the traffic split. Errors use the shape of
//! `azureml-inference-server-http`, `{"message": …}`, which scoring clients already expect.
//!
//! The chosen deployment's replicas answer through `deployments::Deployments::forward` (framed
//! protocol over a Unix socket); 503 with `Retry-After` when none is ready, 429 past the
//! concurrency limit, 504 past request_timeout_ms, 502 when the replica dies mid-request.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_core::endpoints::pick_by_traffic;
use cairn_core::{now_ms, Error};
use cairn_store::EndpointRecord;
use rand::Rng;

use crate::endpoints::{authenticate, deployment_names};
use crate::metrics::UNAUTHENTICATED;
use crate::state::AppState;

/// The header that pins a request to one deployment, bypassing the traffic split (Azure's name).
pub const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";
/// Seconds a client is told to wait when no deployment can serve.
const RETRY_AFTER_SECONDS: &str = "10";

/// A data-plane answer: `{"message": …}` with a status and optional extra headers.
struct Answer {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl Answer {
    fn new(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer { status, message: message.into(), retry_after: false }
    }
}

impl From<Error> for Answer {
    fn from(e: Error) -> Self {
        Answer { status: crate::error::status_of(&e), message: e.to_string(), retry_after: false }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(status = %self.status, message = %self.message, "scoring request failed");
        }
        let mut r = (self.status, Json(serde_json::json!({ "message": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        r
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))
}

/// Looks the endpoint up and checks the credential; on failure, the answer and the metrics label.
async fn admit(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
) -> Result<EndpointRecord, (Answer, String)> {
    let presented = bearer(headers);
    let found = if presented.is_some() {
        state
            .store
            .endpoint_by_name(name)
            .await
            .map_err(|e| (Answer::from(e), UNAUTHENTICATED.to_string()))?
    } else {
        None
    };
    match authenticate(&state.secret, found.as_ref(), presented, now_ms()) {
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

/// Hands the request to a replica of the chosen deployment and maps its answer back to HTTP.
async fn forward(
    state: &AppState,
    e: &EndpointRecord,
    deployment: &str,
    route: &str,
    method: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, Answer> {
    use crate::deployments::{ForwardError, Request};
    let forwarded = headers
        .iter()
        .filter(|(k, _)| *k != header::AUTHORIZATION && *k != header::HOST)
        .filter_map(|(k, v)| Some((k.as_str().to_string(), serde_json::Value::from(v.to_str().ok()?))))
        .collect();
    let req = Request {
        route,
        method,
        query: "",
        content_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        headers: forwarded,
        body,
    };
    let who = format!("deployment \"{deployment}\" of endpoint \"{}\"", e.name);
    match state.deployments.forward(&e.id, deployment, req).await {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = Response::new(Body::from(reply.body));
            *r.status_mut() = status;
            if let Some(ct) = reply.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            for (k, v) in reply.headers {
                if let (Ok(k), Ok(v)) =
                    (header::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v))
                {
                    r.headers_mut().insert(k, v);
                }
            }
            Ok(r)
        }
        Err(ForwardError::NotReady) => Err(Answer {
            retry_after: true,
            ..Answer::new(StatusCode::SERVICE_UNAVAILABLE, format!("{who} has no ready replica"))
        }),
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
        Err(ForwardError::Broken(msg)) => Err(Answer::new(StatusCode::BAD_GATEWAY, format!("{who}: {msg}"))),
    }
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

async fn score_inner(
    state: &AppState,
    name: &str,
    method: &axum::http::Method,
    headers: &HeaderMap,
    body: Body,
) -> (Response, String) {
    let e = match admit(state, name, headers).await {
        Ok(e) => e,
        Err((answer, label)) => return (answer.into_response(), label),
    };
    let result = async {
        let body = read_capped(state, headers, body).await?;
        let deployment = choose(state, &e, headers).await?;
        forward(state, &e, &deployment, "/score", method.as_str(), headers, body).await
    }
    .await;
    (result.unwrap_or_else(IntoResponse::into_response), e.name)
}

/// `POST|GET /endpoints/{name}/score`.
pub async fn score(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let (response, label) = score_inner(&state, &name, &method, &headers, body).await;
    state.metrics.observe(&label, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /endpoints/{name}/swagger.json`: the chosen deployment's API description.
pub async fn swagger(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let e = match admit(&state, &name, &headers).await {
        Ok(e) => e,
        Err((answer, _)) => return answer.into_response(),
    };
    match choose(&state, &e, &headers).await {
        Ok(d) => forward(&state, &e, &d, "/swagger.json", "GET", &headers, bytes::Bytes::new())
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
        Ok(d) => forward(&state, &e, &d, "/", "GET", &headers, bytes::Bytes::new())
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(a) => a.into_response(),
    }
}
