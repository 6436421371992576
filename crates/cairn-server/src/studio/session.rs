//! Studio sign-in: the session cookie, the [`Session`] extractor and CSRF tokens.
//!
//! Signing in checks a Cairn token once and sets `cairn_session`, an HttpOnly, SameSite=Strict
//! cookie holding `v1.TOKEN_ID.EXPIRY_MS.NONCE.MAC` — the token's database id, never the token —
//! MAC'd with a key derived from the server secret. Every request re-reads the token row, so
//! revoking the token ends its sessions at once. The CSRF token is the MAC of `csrf:NONCE`: it
//! needs no storage, differs per session, and cannot be computed without the server secret.
//!
//! The sign-in form is protected before any session exists (against login CSRF, where another
//! site signs the browser in to the attacker's account): showing it sets `cairn_login`, a
//! short-lived HttpOnly, SameSite=Strict cookie `login1.EXPIRY.NONCE.MAC` scoped to `/login`,
//! and the form carries MAC(`login-csrf:NONCE`). A sign-in is acted on only when both arrive
//! and match (double submit, signed), so a form posted from elsewhere gets 403 and no session.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use cairn_core::{now_ms, Error};
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::secret::ServerSecret;
use crate::state::AppState;

/// Name of the session cookie.
pub const COOKIE: &str = "cairn_session";
/// Header carrying the CSRF token on state-changing `fetch` calls.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token on state-changing forms.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts (12 h).
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
const VERSION: &str = "v1";
/// Name of the cookie that carries the sign-in form's CSRF nonce.
pub const LOGIN_COOKIE: &str = "cairn_login";
/// How long a sign-in form can be submitted (1 h).
pub const LOGIN_FORM_MS: i64 = 3600 * 1000;
/// A shown form reuses a login cookie with at least this much life left, so that two sign-in
/// tabs do not invalidate each other.
const LOGIN_REUSE_MS: i64 = 10 * 60 * 1000;
const LOGIN_VERSION: &str = "login1";

/// A signed-in studio user.
#[derive(Clone, Debug)]
pub struct Session {
    pub caller: Caller,
    /// The CSRF token forms and `fetch` calls of this session must send back.
    pub csrf: String,
    /// When the session ends (ms since the epoch).
    pub expires_at: i64,
}

/// The fields of a cookie value whose MAC checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct CookieClaims {
    pub token_id: String,
    pub expires_at: i64,
    pub nonce: String,
}

/// A new cookie value for token `token_id`, valid until `expires_at`.
pub fn sign_cookie(secret: &ServerSecret, token_id: &str, expires_at: i64) -> String {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let body = format!("{VERSION}.{token_id}.{expires_at}.{}", hex::encode(nonce));
    let mac = secret.studio_mac(&body);
    format!("{body}.{mac}")
}

/// Checks a cookie value's MAC and expiry; `None` for anything forged, damaged or expired.
pub fn verify_cookie(secret: &ServerSecret, value: &str, now: i64) -> Option<CookieClaims> {
    let (body, mac) = value.rsplit_once('.')?;
    if !secret.verify_studio_mac(body, mac) {
        return None;
    }
    let mut parts = body.split('.');
    let (Some(VERSION), Some(token_id), Some(expiry), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let expires_at: i64 = expiry.parse().ok()?;
    if now >= expires_at {
        return None;
    }
    Some(CookieClaims { token_id: token_id.to_string(), expires_at, nonce: nonce.to_string() })
}

/// The CSRF token of the session with this nonce.
pub fn csrf_token(secret: &ServerSecret, nonce: &str) -> String {
    secret.studio_mac(&format!("csrf:{nonce}"))
}

/// The sign-in form's CSRF protection: the `cairn_login` cookie value and the form field that
/// must come back with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCsrf {
    pub cookie: String,
    pub field: String,
    pub expires_at: i64,
}

fn login_field(secret: &ServerSecret, nonce: &str) -> String {
    secret.studio_mac(&format!("login-csrf:{nonce}"))
}

/// A new sign-in form token pair, valid until `expires_at`.
pub fn sign_login_cookie(secret: &ServerSecret, expires_at: i64) -> LoginCsrf {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    let nonce = hex::encode(nonce);
    let body = format!("{LOGIN_VERSION}.{expires_at}.{nonce}");
    let mac = secret.studio_mac(&body);
    LoginCsrf { cookie: format!("{body}.{mac}"), field: login_field(secret, &nonce), expires_at }
}

/// The pair of a `cairn_login` cookie value whose MAC and expiry check out.
pub fn verify_login_cookie(secret: &ServerSecret, value: &str, now: i64) -> Option<LoginCsrf> {
    let (body, mac) = value.rsplit_once('.')?;
    if !secret.verify_studio_mac(body, mac) {
        return None;
    }
    let mut parts = body.split('.');
    let (Some(LOGIN_VERSION), Some(expiry), Some(nonce), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let expires_at: i64 = expiry.parse().ok()?;
    if now >= expires_at {
        return None;
    }
    Some(LoginCsrf { cookie: value.to_string(), field: login_field(secret, nonce), expires_at })
}

/// True when the sign-in form's field matches the request's valid `cairn_login` cookie.
pub fn login_csrf_matches(secret: &ServerSecret, cookie: Option<&str>, field: &str, now: i64) -> bool {
    cookie
        .and_then(|c| verify_login_cookie(secret, c, now))
        .is_some_and(|pair| csrf_matches(&pair.field, field))
}

/// True if `presented` is `expected`, compared in constant time.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    !presented.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// `next` if it is a path on this site (starts with one `/`, no backslash or control
/// characters), else `/`: signing in must never send the browser elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

fn named_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    named_cookie(headers, COOKIE)
}

/// True if the request carries a session cookie (valid or not).
pub fn has_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers).is_some()
}

/// The session of a request: `None` when there is no valid cookie or its token is gone.
pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, Error> {
    let Some(value) = cookie_value(headers) else { return Ok(None) };
    let Some(claims) = verify_cookie(&state.secret, value, now_ms()) else { return Ok(None) };
    let Some(record) = state.store.token_by_id(&claims.token_id).await? else { return Ok(None) };
    if let Err(e) = state.store.touch_token(&record.id).await {
        tracing::debug!(error = %e, "could not record token use");
    }
    Ok(Some(Session {
        caller: Caller { token: record.info },
        csrf: csrf_token(&state.secret, &claims.nonce),
        expires_at: claims.expires_at,
    }))
}

/// 403 unless the request's `x-csrf-token` header is the session's CSRF token.
pub fn check_csrf_header(session: &Session, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if csrf_matches(&session.csrf, presented) {
        Ok(())
    } else {
        Err(ApiError(Error::Forbidden(format!(
            "a request authenticated by the studio session cookie must carry the {CSRF_HEADER} header"
        ))))
    }
}

impl Session {
    /// 403 unless a form's `csrf` field is this session's CSRF token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Error> {
        if csrf_matches(&self.csrf, presented) {
            Ok(())
        } else {
            Err(Error::Forbidden("the form's CSRF token does not match this session: reload the page".into()))
        }
    }
}

/// Where to send a request without a session: the sign-in page, then back to `parts`' path.
fn to_login(parts: &Parts) -> Response {
    let asked = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let next: String = url::form_urlencoded::byte_serialize(asked.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        if let Some(s) = parts.extensions.get::<Session>() {
            return Ok(s.clone());
        }
        match from_headers(state, &parts.headers).await {
            Ok(Some(s)) => {
                parts.extensions.insert(s.clone());
                Ok(s)
            }
            Ok(None) => Err(to_login(parts)),
            Err(e) => Err(super::layout::error_page(None, &e)),
        }
    }
}

/// `/login` and `/logout`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/login", get(login_form).post(login)).route("/logout", axum::routing::post(logout))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    login_page(&state, &headers, &safe_next(q.next.as_deref()), None, StatusCode::OK, true)
}

/// The sign-in form. With `reuse`, it keeps the CSRF pair of the request's login cookie when
/// that has enough life left; otherwise it makes a new pair (and sets its cookie).
fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
    reuse: bool,
) -> Response {
    let now = now_ms();
    let reused = named_cookie(headers, LOGIN_COOKIE)
        .filter(|_| reuse)
        .and_then(|c| verify_login_cookie(&state.secret, c, now))
        .filter(|pair| pair.expires_at - now >= LOGIN_REUSE_MS);
    let (pair, fresh) = match reused {
        Some(pair) => (pair, false),
        None => (sign_login_cookie(&state.secret, now + LOGIN_FORM_MS), true),
    };
    let body = html! {
        section.login {
            h1 { "Sign in to Cairn" }
            form #login-form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                input type="hidden" name=(CSRF_FIELD) value=(pair.field);
                label for="token" { "Access token" }
                input #token name="token" type="password" autocomplete="current-password" required
                    aria-describedby=[error.map(|_| "login-error")] autofocus;
                @if let Some(e) = error {
                    p #login-error .error role="alert" { (e) }
                }
                button #login-submit type="submit" { "Sign in" }
            }
            p .hint { "Use a token from " code { "cairn token create" } " or the " code { "admin-token" }
                " file in the server's data directory." }
        }
    };
    let mut response = (status, super::layout::bare_page("Sign in", body)).into_response();
    if fresh {
        response
            .headers_mut()
            .append(header::SET_COOKIE, login_cookie(&pair.cookie, LOGIN_FORM_MS / 1000, is_https(headers)));
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// True when the browser reached us over https (directly or through a proxy that says so).
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("cookie values are ASCII")
}

/// The sign-in form's cookie: only `/login` ever receives it.
fn login_cookie(value: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("cookie values are ASCII")
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    // Checked before the token, so that a form posted from another site learns nothing.
    if !login_csrf_matches(&state.secret, named_cookie(&headers, LOGIN_COOKIE), &form.csrf, now_ms()) {
        return login_page(
            &state,
            &headers,
            &next,
            Some("This sign-in form has expired or was not sent from this site: sign in again."),
            StatusCode::FORBIDDEN,
            false,
        );
    }
    let record = match crate::auth::verify_record(&state.store, form.token.trim()).await {
        Ok(r) => r,
        Err(Error::Unauthenticated(_)) => {
            return login_page(
                &state,
                &headers,
                &next,
                Some("That token is not valid (or was revoked)."),
                StatusCode::UNAUTHORIZED,
                true,
            )
        }
        Err(e) => return super::layout::error_page(None, &e),
    };
    if record.info.run_id.is_some() {
        return login_page(
            &state,
            &headers,
            &next,
            Some("A job's run token cannot sign in to the studio."),
            StatusCode::FORBIDDEN,
            true,
        );
    }
    let expires_at = now_ms() + SESSION_MS;
    let value = sign_cookie(&state.secret, &record.id, expires_at);
    let secure = is_https(&headers);
    let mut response = Redirect::to(&next).into_response();
    let h = response.headers_mut();
    h.insert(header::SET_COOKIE, set_cookie(&value, SESSION_MS / 1000, secure));
    // The form's nonce has served: a later sign-in starts from a new form.
    h.append(header::SET_COOKIE, login_cookie("", 0, secure));
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(session: Session, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if let Err(e) = session.check_csrf(&form.csrf) {
        return super::layout::error_page(Some(&session), &e);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0, is_https(&headers)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ServerSecret {
        ServerSecret::from_material(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/w/a/runs?page=2")), "/w/a/runs?page=2");
        for bad in ["//evil.example/x", "https://evil.example/", "evil", "/\\evil.example", "/a\nb", ""] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_verify_until_expiry_and_resist_tampering() {
        let s = secret();
        let c = sign_cookie(&s, "tok-1", 10_000);
        let claims = verify_cookie(&s, &c, 9_999).expect("valid");
        assert_eq!(claims.token_id, "tok-1");
        assert_eq!(claims.expires_at, 10_000);
        assert_eq!(verify_cookie(&s, &c, 10_000), None, "expired");
        assert_eq!(verify_cookie(&s, &c.replacen(".10000.", ".99999.", 1), 0), None, "expiry moved");
        assert_eq!(verify_cookie(&s, &c.replacen("tok-1", "tok-2", 1), 0), None, "other token");
        let other = ServerSecret::from_material(b"another secret of enough length!!");
        assert_eq!(verify_cookie(&other, &c, 0), None, "another server's secret");
        for bad in ["", "v1", "v1.a.1.n", "x.y.z", &format!("{c}.x")] {
            assert_eq!(verify_cookie(&s, bad, 0), None, "{bad:?}");
        }
        assert_ne!(sign_cookie(&s, "tok-1", 10_000), c, "random nonces");
    }

    #[test]
    fn csrf_tokens_are_per_session_and_checked_exactly() {
        let s = secret();
        let a = csrf_token(&s, "nonce-a");
        assert_eq!(a, csrf_token(&s, "nonce-a"));
        assert_ne!(a, csrf_token(&s, "nonce-b"));
        assert!(csrf_matches(&a, &a));
        assert!(!csrf_matches(&a, ""));
        assert!(!csrf_matches(&a, &a[..a.len() - 1]));
        assert!(!csrf_matches(&a, &csrf_token(&s, "nonce-b")));
    }

    #[test]
    fn sign_in_forms_need_their_own_signed_cookie_back() {
        let s = secret();
        let pair = sign_login_cookie(&s, 10_000);
        assert!(login_csrf_matches(&s, Some(&pair.cookie), &pair.field, 9_999));
        assert!(!login_csrf_matches(&s, Some(&pair.cookie), &pair.field, 10_000), "expired");
        assert!(!login_csrf_matches(&s, None, &pair.field, 0), "no cookie");
        assert!(!login_csrf_matches(&s, Some(&pair.cookie), "", 0), "no field");
        let other = sign_login_cookie(&s, 10_000);
        assert_ne!(other.field, pair.field, "random nonces");
        assert!(!login_csrf_matches(&s, Some(&other.cookie), &pair.field, 0), "another form's field");
        let moved = pair.cookie.replacen(".10000.", ".99999.", 1);
        assert!(!login_csrf_matches(&s, Some(&moved), &pair.field, 0), "expiry moved");
        let foreign = ServerSecret::from_material(b"another secret of enough length!!");
        assert!(!login_csrf_matches(&foreign, Some(&pair.cookie), &pair.field, 0), "another server");
        assert_eq!(verify_login_cookie(&s, &pair.cookie, 0).map(|p| p.field), Some(pair.field.clone()));
        // Neither kind of cookie passes for the other.
        let session = sign_cookie(&s, "tok", 10_000);
        assert_eq!(verify_login_cookie(&s, &session, 0), None);
        assert_eq!(verify_cookie(&s, &pair.cookie, 0), None);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; cairn_session=v1.x.2.n.m; b=2"));
        assert_eq!(cookie_value(&h), Some("v1.x.2.n.m"));
        assert!(has_cookie(&h));
        assert!(!has_cookie(&HeaderMap::new()));
    }
}
