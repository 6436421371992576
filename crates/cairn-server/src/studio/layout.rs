//! The studio's page frame and the small formatting helpers every page shares: one place for
//! each, so pages look and format alike.
//!
//! Everything goes through maud, which escapes text by default; nothing here builds HTML by
//! string concatenation. Scripts are static files (the pages' Content-Security-Policy refuses
//! inline scripts), so pages hand data to them in `data-*` attributes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_core::runs::RunStatus;
use cairn_core::Error;
use maud::{html, Markup, DOCTYPE};

use super::session::{Session, CSRF_FIELD};

/// The left navigation's entries (and the top-level workspaces list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Workspaces,
    Experiments,
    Runs,
    Traces,
    Models,
    Endpoints,
    Data,
    Environments,
    Compute,
}

impl Nav {
    const IN_WORKSPACE: [Nav; 8] = [
        Nav::Experiments,
        Nav::Runs,
        Nav::Traces,
        Nav::Models,
        Nav::Endpoints,
        Nav::Data,
        Nav::Environments,
        Nav::Compute,
    ];

    /// The URL segment and `data-nav` value.
    pub fn slug(self) -> &'static str {
        match self {
            Nav::Workspaces => "workspaces",
            Nav::Experiments => "experiments",
            Nav::Runs => "runs",
            Nav::Traces => "traces",
            Nav::Models => "models",
            Nav::Endpoints => "endpoints",
            Nav::Data => "data",
            Nav::Environments => "environments",
            Nav::Compute => "compute",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Nav::Workspaces => "Workspaces",
            Nav::Experiments => "Experiments",
            Nav::Runs => "Runs",
            Nav::Traces => "Traces",
            Nav::Models => "Models",
            Nav::Endpoints => "Endpoints",
            Nav::Data => "Data",
            Nav::Environments => "Environments",
            Nav::Compute => "Compute",
        }
    }
}

/// `/w/{ws}` with the workspace name percent-encoded as a path segment.
pub fn ws_url(ws: &str) -> String {
    format!("/w/{}", seg(ws))
}

/// Percent-encodes one path segment (names may hold spaces and other characters).
pub fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

/// A relative file path for a URL: each segment escaped, the slashes kept.
pub fn path_url(path: &str) -> String {
    path.split('/').map(seg).collect::<Vec<_>>().join("/")
}

/// Percent-encodes a value for a query string.
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(c) = csrf { meta name="csrf-token" content=(c); }
            title { (title) " · Cairn" }
            link rel="stylesheet" href=(super::asset_url("studio.css"));
            link rel="icon" type="image/svg+xml" href=(super::asset_url("icon.svg"));
            script src=(super::asset_url("studio.js")) defer {}
        }
    }
}

/// A full page without navigation (sign-in, errors before a session exists).
pub fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top { a.brand href="/" { "Cairn" } }
                div.frame { main #main { (body) } }
            }
        }
    }
}

/// A full studio page: header (with sign-out), the workspace's left navigation when `ws` is
/// given, and `body` inside `<main id="main">`.
pub fn page(s: &Session, ws: Option<&str>, active: Nav, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(s.csrf.as_str())))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Cairn" }
                    nav.crumbs aria-label="Breadcrumb" {
                        a href="/" aria-current=[(active == Nav::Workspaces && ws.is_none()).then_some("page")] { "Workspaces" }
                        @if let Some(w) = ws { span.sep aria-hidden="true" { "/" } a href=(ws_url(w)) { (w) } }
                    }
                    div.who {
                        span.token-name title="Signed in with this token" { (s.caller.token.name) }
                        form.logout method="post" action="/logout" {
                            (csrf_field(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                div.frame {
                    @if let Some(w) = ws {
                        nav #ws-nav aria-label="Workspace" {
                            ul {
                                @for n in Nav::IN_WORKSPACE {
                                    li { a href={ (ws_url(w)) "/" (n.slug()) } data-nav=(n.slug())
                                        aria-current=[(n == active).then_some("page")] { (n.label()) } }
                                }
                            }
                        }
                    }
                    main #main { (body) }
                }
            }
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(s.csrf); }
}

/// The 404 page (`<h1>Not found</h1>`), status 404.
pub fn not_found(s: Option<&Session>, what: &str) -> Response {
    let body = html! {
        h1 { "Not found" }
        p { (what) }
        p { a href="/" { "Back to the workspaces" } }
    };
    let markup = match s {
        Some(s) => page(s, None, Nav::Workspaces, "Not found", body),
        None => bare_page("Not found", body),
    };
    (StatusCode::NOT_FOUND, markup).into_response()
}

/// The page for an error: 404 for unknown things, otherwise the error's HTTP status and message.
pub fn error_page(s: Option<&Session>, e: &Error) -> Response {
    if matches!(e, Error::NotFound { .. }) {
        return not_found(s, &e.to_string());
    }
    let status = crate::error::status_of(e);
    if status.is_server_error() {
        tracing::error!(error = %e, "studio page failed");
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        h1 { (title) }
        p.error role="alert" { (e.to_string()) }
        p { a href="/" { "Back to the workspaces" } }
    };
    let markup = match s {
        Some(s) => page(s, None, Nav::Workspaces, title, body),
        None => bare_page(title, body),
    };
    (status, markup).into_response()
}

/// A handler error rendered as an HTML page (see [`OrPage`]). Boxed: handlers return it on the
/// error path only, and a bare `Response` would make every `PageResult` as large as two.
pub struct PageError(Box<Response>);

impl From<Response> for PageError {
    fn from(page: Response) -> PageError {
        PageError(Box::new(page))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// What studio handlers return.
pub type PageResult = Result<Response, PageError>;

/// `result.or_page(&session)?` turns a `cairn_core::Error` into the error page.
pub trait OrPage<T> {
    fn or_page(self, s: &Session) -> Result<T, PageError>;
}

impl<T> OrPage<T> for Result<T, Error> {
    fn or_page(self, s: &Session) -> Result<T, PageError> {
        self.map_err(|e| PageError::from(error_page(Some(s), &e)))
    }
}

/// A Unix time in ms as `2026-11-29 14:03:07 UTC`.
pub fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// A `<time>` element with the machine-readable instant and the readable one.
pub fn time_el(ms: i64) -> Markup {
    let iso = chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default();
    html! { time datetime=(iso) { (fmt_time(ms)) } }
}

/// A duration in ms as `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`, `3 d 4 h`.
pub fn fmt_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        _ if ms < 1000 => format!("{ms} ms"),
        _ if s < 60 => format!("{:.1} s", ms as f64 / 1000.0),
        _ if s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ if s < 86_400 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A byte count as `512 B`, `1.5 KiB`, `3.2 MiB`, …
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A metric value, short but exact enough to compare: up to 6 significant digits.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞".into() } else { "−∞".into() };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-4..1e9).contains(&a) {
        return format!("{v:.4e}");
    }
    let digits = (5 - a.log10().floor() as i32).clamp(0, 10) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// How a state reads at a glance: every badge (runs, endpoints, deployments, environment builds)
/// takes its class from here, so one state colour means the same everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Ok,
    Failed,
    Canceled,
    Busy,
    Waiting,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ok => "status status-ok",
            Tone::Failed => "status status-failed",
            Tone::Canceled => "status status-canceled",
            Tone::Busy => "status status-running",
            Tone::Waiting => "status status-waiting",
        }
    }
}

/// A state as a badge; `data-status` lets scripts update it.
pub fn badge(text: &str, tone: Tone) -> Markup {
    html! { span class=(tone.class()) data-status=(text) { (text) } }
}

fn run_tone(s: RunStatus) -> Tone {
    match s {
        RunStatus::Completed => Tone::Ok,
        RunStatus::Failed => Tone::Failed,
        RunStatus::Canceled => Tone::Canceled,
        RunStatus::Running | RunStatus::Finalizing => Tone::Busy,
        _ => Tone::Waiting,
    }
}

/// The CSS class of a run status (`status-running`, …), for scripts that redraw badges.
pub fn status_class(s: RunStatus) -> &'static str {
    run_tone(s).class()
}

/// A run status as a badge.
pub fn status_badge(s: RunStatus) -> Markup {
    badge(s.as_str(), run_tone(s))
}

/// A run's duration: end (or now, while it runs) minus start; `—` before it starts.
pub fn run_duration(started: Option<i64>, ended: Option<i64>) -> String {
    match (started, ended) {
        (Some(s), Some(e)) => fmt_duration(e - s),
        (Some(s), None) => fmt_duration(cairn_core::now_ms() - s),
        _ => "—".into(),
    }
}

/// An empty-state paragraph.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_bytes_and_values_read_well() {
        assert_eq!(fmt_duration(850), "850 ms");
        assert_eq!(fmt_duration(12_345), "12.3 s");
        assert_eq!(fmt_duration(245_000), "4 min 05 s");
        assert_eq!(fmt_duration(2 * 3_600_000 + 180_000), "2 h 03 min");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_value(0.123456789), "0.123457");
        assert_eq!(fmt_value(1234.5), "1234.5");
        assert_eq!(fmt_value(2.0), "2");
        assert_eq!(fmt_value(1e-7), "1.0000e-7");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("my ws/x"), "my%20ws%2Fx");
        assert_eq!(ws_url("a"), "/w/a");
    }
}
