//! The studio: Cairn's web UI, served by `cairn server` at `/`.
//!
//! Pages are rendered on the server with maud (which escapes all text) and enhanced by small
//! hand-written scripts in `assets/` (embedded with `include_str!`, served under `/static/` with
//! a content-hash query so they can be cached for long). Pages need a [`session::Session`]
//! (sign-in with a Cairn token); without one the browser is sent to `/login?next=…`.
//!
//! Conventions for page modules: each exposes `routes()`, merged by [`router`]; handlers take
//! `Session` first, return [`layout::PageResult`], and turn store errors into pages with
//! [`layout::OrPage::or_page`]; a workspace is opened with [`open_workspace`] (rights + 404).
//! Every response carries a Content-Security-Policy that refuses inline scripts: pages pass
//! data to scripts in `data-*` attributes, never in `<script>` blocks.

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use cairn_core::api::{Role, Workspace};
use sha2::{Digest, Sha256};

use crate::state::AppState;

pub mod compare;
pub mod compute;
pub mod data;
pub mod endpoints;
pub mod environments;
pub mod experiments;
pub mod layout;
pub mod mlflow_links;
pub mod models;
pub mod run;
pub mod runs;
pub mod series;
pub mod session;
pub mod traces;
pub mod workspaces;

use layout::{OrPage, PageError};
use session::Session;

/// The studio's routes: `/`, `/login`, `/logout`, `/static/*`, `/w/*`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .merge(session::routes())
        .merge(workspaces::routes())
        .merge(experiments::routes())
        .merge(runs::routes())
        .merge(run::routes())
        .merge(traces::routes())
        .merge(models::routes())
        .merge(endpoints::routes())
        .merge(data::routes())
        .merge(environments::routes())
        .merge(compute::routes())
        .merge(series::routes())
        .merge(compare::routes())
        .merge(mlflow_links::routes())
        .layer(axum::middleware::map_response(security_headers))
        .route("/static/{name}", get(asset))
}

/// Headers of every studio page: no framing, no inline scripts, no referrer leaks.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show live state and the session's CSRF token: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The embedded static files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("studio.css", "text/css; charset=utf-8", include_str!("assets/studio.css")),
    ("studio.js", "text/javascript; charset=utf-8", include_str!("assets/studio.js")),
    ("charts.js", "text/javascript; charset=utf-8", include_str!("assets/charts.js")),
    ("ops.js", "text/javascript; charset=utf-8", include_str!("assets/ops.js")),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

/// `/static/NAME?v=HASH`: the hash changes with the content, so the file may be cached for long.
pub fn asset_url(name: &str) -> String {
    static HASHES: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let hashes = HASHES.get_or_init(|| {
        ASSETS.iter().map(|(n, _, body)| (*n, hex::encode(&Sha256::digest(body.as_bytes())[..6]))).collect()
    });
    match hashes.iter().find(|(n, _)| *n == name) {
        Some((_, h)) => format!("/static/{name}?v={h}"),
        None => format!("/static/{name}"),
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The workspace `ws` if the session may read it; the 404 page if it does not exist, the 403
/// page if the token is limited to another workspace.
pub async fn open_workspace(state: &AppState, s: &Session, ws: &str) -> Result<Workspace, PageError> {
    s.caller.require(Role::Reader, Some(ws)).or_page(s)?;
    state.store.workspace(ws).await.or_page(s)
}

/// `/w/{ws}` → its experiments.
pub(crate) async fn workspace_home(_s: Session, Path(ws): Path<String>) -> Redirect {
    Redirect::to(&format!("{}/experiments", layout::ws_url(&ws)))
}

/// True for paths the studio answers (the global fallback shows them the HTML 404 page).
pub fn is_studio_path(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path.starts_with("/workspaces/")
        || path.starts_with("/endpoints/")
        || path == "/metrics"
        || path == "/healthz"
        || path == "/readyz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_get_content_hashes_and_api_paths_stay_api() {
        let u = asset_url("studio.css");
        assert!(u.starts_with("/static/studio.css?v=") && u.len() > "/static/studio.css?v=".len(), "{u}");
        assert!(is_studio_path("/w/x/nope"));
        assert!(is_studio_path("/nope"));
        assert!(!is_studio_path("/api/v1/nope"));
        assert!(!is_studio_path("/workspaces/x/mlflow/nope"));
    }
    /// WCAG 2.1 contrast of the palette's text/background pairs: 4.5:1 for text (AA), 3:1 for the
    /// focus ring (non-text). Every page colours its text from these variables.
    #[test]
    fn the_palette_meets_wcag_aa_contrast() {
        let css = include_str!("assets/studio.css");
        let var = |name: &str| -> [f64; 3] {
            let at =
                css.find(&format!("--{name}: #")).unwrap_or_else(|| panic!("--{name} is not in studio.css"));
            let hex = &css[at + name.len() + 5..at + name.len() + 11];
            let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as f64 / 255.0;
            [c(0), c(2), c(4)]
        };
        let luminance = |rgb: [f64; 3]| {
            let f = |c: f64| if c <= 0.03928 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) };
            0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2])
        };
        let ratio = |a: &str, b: &str| {
            let (la, lb) = (luminance(var(a)), luminance(var(b)));
            (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
        };
        for (fg, bg, min) in [
            ("fg", "bg", 4.5),
            ("fg", "panel", 4.5),
            ("muted", "bg", 4.5),
            ("muted", "panel", 4.5),
            ("accent", "bg", 4.5),
            ("accent", "panel", 4.5),
            ("ok", "ok-bg", 4.5),
            ("bad", "bad-bg", 4.5),
            ("run", "run-bg", 4.5),
            ("wait", "wait-bg", 4.5),
            ("focus", "bg", 3.0),
        ] {
            let r = ratio(fg, bg);
            assert!(r >= min, "--{fg} on --{bg}: {r:.2}:1, below {min}:1");
        }
    }
}
