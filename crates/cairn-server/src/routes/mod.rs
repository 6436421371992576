//! The router: which path goes to which handler, and the layers around them.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{middleware, Router};
use cairn_core::Error;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::AppState;

pub mod datastores;
pub mod deployments;
pub mod endpoints;
pub mod files;
pub mod health;
pub mod jobs;
pub mod models;
pub mod resources;
pub mod runs;
pub mod tokens;
pub mod workspaces;

/// JSON bodies larger than this are refused with 413 (upload plans are sent in chunks).
pub const JSON_LIMIT: usize = 4 * 1024 * 1024;

/// The whole HTTP surface of the control plane.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/whoami", get(tokens::whoami))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        .route("/admin/gc", axum::routing::post(crate::gc::handle))
        .route("/workspaces", get(workspaces::list).post(workspaces::create))
        .route("/workspaces/{ws}", get(workspaces::show).delete(workspaces::delete))
        .route("/workspaces/{ws}/datastores", get(datastores::list).post(datastores::create))
        .route("/workspaces/{ws}/datastores/{ds}", get(datastores::show).delete(datastores::delete))
        .route("/workspaces/{ws}/datastores/{ds}/upload-plan", axum::routing::post(files::plan))
        .route(
            "/workspaces/{ws}/datastores/{ds}/upload-batch",
            axum::routing::post(files::upload_batch).layer(DefaultBodyLimit::max(files::BATCH_BODY_LIMIT)),
        )
        .route("/workspaces/{ws}/datastores/{ds}/download-batch", axum::routing::post(files::download_batch))
        .route("/workspaces/{ws}/datastores/{ds}/files", get(files::list))
        .route(
            "/workspaces/{ws}/datastores/{ds}/files/{*path}",
            get(files::download).put(files::upload).delete(files::delete).layer(DefaultBodyLimit::disable()),
        )
        .route("/workspaces/{ws}/experiments", get(runs::list_experiments).post(runs::create_experiment))
        .route("/workspaces/{ws}/runs", get(runs::list_runs).post(runs::create_run))
        .route("/workspaces/{ws}/runs/search", axum::routing::post(runs::search_runs))
        .route("/workspaces/{ws}/runs/{run}", get(runs::show_run).patch(runs::update_run))
        .route("/workspaces/{ws}/runs/{run}/log-batch", axum::routing::post(runs::log_batch))
        .route("/workspaces/{ws}/runs/{run}/properties", axum::routing::post(runs::add_properties))
        .route("/workspaces/{ws}/runs/{run}/metrics", get(runs::run_metrics))
        .route("/workspaces/{ws}/runs/{run}/artifacts", get(runs::list_artifacts))
        .route("/workspaces/{ws}/runs/{run}/download-batch", axum::routing::post(runs::download_batch))
        .route(
            "/workspaces/{ws}/runs/{run}/artifacts/{*path}",
            get(runs::download_artifact).put(runs::upload_artifact).layer(DefaultBodyLimit::disable()),
        )
        .route("/workspaces/{ws}/runs/{run}/cancel", axum::routing::post(jobs::cancel))
        .route("/workspaces/{ws}/runs/{run}/logs", get(jobs::logs))
        .route("/workspaces/{ws}/jobs", axum::routing::post(jobs::submit))
        .route("/workspaces/{ws}/snapshots", axum::routing::post(jobs::create_snapshot))
        .route("/workspaces/{ws}/blobs/missing", axum::routing::post(jobs::missing_blobs))
        .route(
            "/workspaces/{ws}/blobs/{sha256}",
            axum::routing::put(jobs::upload_blob).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/workspaces/{ws}/environments",
            get(resources::list_environments).post(resources::create_environment),
        )
        .route(
            "/workspaces/{ws}/environments/{name}",
            get(resources::show_environment).delete(resources::delete_environment),
        )
        .route(
            "/workspaces/{ws}/environments/{name}/build",
            axum::routing::post(resources::build_environment),
        )
        .route("/workspaces/{ws}/computes", get(resources::list_computes).post(resources::create_compute))
        .route(
            "/workspaces/{ws}/computes/{name}",
            get(resources::show_compute).delete(resources::delete_compute),
        )
        .route("/workspaces/{ws}/sizes", get(resources::list_sizes).post(resources::create_size))
        .route("/workspaces/{ws}/sizes/{name}", axum::routing::delete(resources::delete_size))
        .route("/workspaces/{ws}/endpoints", get(endpoints::list).post(endpoints::create))
        .route(
            "/workspaces/{ws}/endpoints/{name}",
            get(endpoints::show).patch(endpoints::update).delete(endpoints::delete),
        )
        .route("/workspaces/{ws}/endpoints/{name}/keys", get(endpoints::keys))
        .route(
            "/workspaces/{ws}/endpoints/{name}/regenerate-keys",
            axum::routing::post(endpoints::regenerate_key),
        )
        .route("/workspaces/{ws}/endpoints/{name}/token", axum::routing::post(endpoints::token))
        .route(
            "/workspaces/{ws}/endpoints/{endpoint}/deployments",
            get(deployments::list).post(deployments::create),
        )
        .route(
            "/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}",
            get(deployments::show)
                .put(deployments::replace)
                .patch(deployments::patch)
                .delete(deployments::delete),
        )
        .route("/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}/logs", get(deployments::logs))
        .route("/workspaces/{ws}/models", get(models::list))
        .route(
            "/workspaces/{ws}/models/{name}",
            get(models::show).patch(models::update).delete(models::delete),
        )
        .route("/workspaces/{ws}/models/{name}/versions", get(models::list_versions).post(models::register))
        .route(
            "/workspaces/{ws}/models/{name}/versions/{v}",
            get(models::show_version).patch(models::update_version).delete(models::delete_version),
        )
        .route("/workspaces/{ws}/models/{name}/versions/{v}/files", get(models::files))
        .route("/workspaces/{ws}/models/{name}/versions/{v}/files/{*path}", get(models::download))
        .route(
            "/workspaces/{ws}/models/{name}/aliases/{alias}",
            axum::routing::put(models::set_alias).delete(models::delete_alias),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_token));

    // The scoring gateway authenticates with endpoint keys and tokens, not Cairn tokens.
    let gateway = Router::new()
        .route("/endpoints/{name}", get(crate::gateway::health))
        .route(
            "/endpoints/{name}/score",
            get(crate::gateway::score).post(crate::gateway::score).options(crate::gateway::score),
        )
        .route("/endpoints/{name}/swagger.json", get(crate::gateway::swagger))
        .route("/endpoints/{name}/invocations", axum::routing::post(crate::gateway::invocations))
        .route("/endpoints/{name}/v2", get(crate::gateway::oip_server))
        .route("/endpoints/{name}/v2/health/live", get(crate::gateway::oip_live))
        .route("/endpoints/{name}/v2/health/ready", get(crate::gateway::oip_ready))
        .route("/endpoints/{name}/v2/models/{model}", get(crate::gateway::oip_metadata))
        .route("/endpoints/{name}/v2/models/{model}/ready", get(crate::gateway::oip_model_ready))
        .route("/endpoints/{name}/v2/models/{model}/infer", axum::routing::post(crate::gateway::oip_infer))
        .route("/endpoints/{name}/v2/models/{model}/versions/{version}", get(crate::gateway::oip_metadata))
        .route(
            "/endpoints/{name}/v2/models/{model}/versions/{version}/ready",
            get(crate::gateway::oip_model_ready),
        )
        .route(
            "/endpoints/{name}/v2/models/{model}/versions/{version}/infer",
            axum::routing::post(crate::gateway::oip_infer),
        )
        .route_layer(middleware::from_fn(crate::gateway::request_ids));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::require_token));

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/openapi.json", get(crate::openapi::serve))
        .nest("/api/v1", api)
        .merge(crate::mlflow::router(state.clone()))
        .merge(gateway)
        .merge(metrics)
        .merge(crate::studio::router())
        .fallback(fallback)
        .layer(middleware::map_request(crate::linger::lingering_bodies))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, for tokens valid in every workspace (the series name endpoints
/// of all workspaces).
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    caller.require(cairn_core::api::Role::Reader, None)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(&state.deployments.gauges()),
    ))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(Error::NotFound { kind: "route", name: uri.path().to_string() })
}

/// A known path asked with a method it does not take: 405 in the API's error shape (axum's own
/// has no body); axum adds the `Allow` header.
async fn method_not_allowed(
    method: axum::http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = format!("{} does not take {method}", uri.path());
    let body = serde_json::json!({"error": {"code": "method_not_allowed", "message": message}});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Unknown paths: the JSON 404 for API clients, the studio's 404 page for browsers.
async fn fallback(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !crate::studio::is_studio_path(uri.path()) {
        return not_found(uri).await.into_response();
    }
    let session = crate::studio::session::from_headers(&state, &headers).await.ok().flatten();
    crate::studio::layout::not_found(session.as_ref(), &format!("There is no page at {}.", uri.path()))
}
