//! Bearer-token authentication and the rights of a caller.
//!
//! Only `sha256(token)` is stored. A request's token is hashed, its first 16 hex digits find the
//! row, and the full hash is compared in constant time. Tokens are high-entropy random strings,
//! so a fast hash is the right tool (a password hash would only slow every request).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use cairn_core::api::{Role, TokenInfo};
use cairn_core::Error;
use cairn_store::{NewToken, Store};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request, put into the request's extensions by [`require_token`].
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: TokenInfo,
}

impl Caller {
    /// Allows the call if the token has at least `role` and, when scoped, is scoped to `workspace`.
    pub fn require(&self, role: Role, workspace: Option<&str>) -> Result<(), Error> {
        if let Some(run) = &self.token.run_id {
            return Err(Error::Forbidden(format!("this token may only be used for run {run}")));
        }
        self.require_role_and_scope(role, workspace)
    }

    /// Like [`Caller::require`], but also admits the run-scoped token of `run_id`.
    pub fn require_run(&self, role: Role, workspace: &str, run_id: &str) -> Result<(), Error> {
        match &self.token.run_id {
            Some(own) if own != run_id => {
                Err(Error::Forbidden(format!("this token may only be used for run {own}, not {run_id}")))
            }
            _ => self.require_role_and_scope(role, Some(workspace)),
        }
    }

    /// Like [`Caller::require_run`], but a run's token also reaches the children of its run (a job
    /// creates them with `Run.child_run()` and logs to them with its own token).
    pub async fn require_run_or_child(
        &self,
        store: &Store,
        role: Role,
        workspace: &str,
        run_id: &str,
    ) -> Result<(), Error> {
        match &self.token.run_id {
            Some(own) if own != run_id => {
                if store.run_parent(run_id).await?.as_deref() == Some(own.as_str()) {
                    self.require_role_and_scope(role, Some(workspace))
                } else {
                    Err(Error::Forbidden(format!(
                        "this token may only be used for run {own} and its child runs, not {run_id}"
                    )))
                }
            }
            _ => self.require_run(role, workspace, run_id),
        }
    }

    /// Allows creating a run: a run's token may create only children of its own run.
    pub fn require_new_run(&self, workspace: &str, parent: Option<&str>) -> Result<(), Error> {
        match (&self.token.run_id, parent) {
            (Some(own), Some(parent)) if own == parent => {
                self.require_role_and_scope(Role::Writer, Some(workspace))
            }
            (Some(own), _) => Err(Error::Forbidden(format!(
                "this token may only create child runs of run {own} (set parent_run_id to it)"
            ))),
            (None, _) => self.require(Role::Writer, Some(workspace)),
        }
    }

    fn require_role_and_scope(&self, role: Role, workspace: Option<&str>) -> Result<(), Error> {
        if self.token.role < role {
            return Err(Error::Forbidden(format!(
                "token \"{}\" has role {} but this needs {}",
                self.token.name,
                self.token.role.as_str(),
                role.as_str()
            )));
        }
        match (&self.token.workspace, workspace) {
            (Some(own), Some(ws)) if own != ws => Err(Error::Forbidden(format!(
                "token \"{}\" is limited to workspace \"{own}\"",
                self.token.name
            ))),
            (Some(own), None) => Err(Error::Forbidden(format!(
                "token \"{}\" is limited to workspace \"{own}\"; this needs a token valid everywhere",
                self.token.name
            ))),
            _ => Ok(()),
        }
    }

    /// True if the caller may see `workspace` at all (used to filter lists).
    pub fn can_see(&self, workspace: &str) -> bool {
        self.token.workspace.as_deref().is_none_or(|w| w == workspace)
    }
}

/// The credentials of an `Authorization: Bearer …` header value; the scheme's name is
/// case-insensitive (RFC 7235), as clients send `Bearer`, `bearer` or `BEARER`.
pub fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
}

/// A new random token: `cairn_` and 64 hex digits (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("cairn_{}", hex::encode(bytes))
}

/// `(lookup, hash)` of a token as stored.
pub fn hash_token(token: &str) -> (String, String) {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (hash[..16].to_string(), hash)
}

/// Finds the stored token matching `presented`, comparing hashes in constant time.
pub async fn verify(store: &Store, presented: &str) -> Result<TokenInfo, Error> {
    Ok(verify_record(store, presented).await?.info)
}

/// [`verify`], returning the stored record (with the token's id, which studio sessions name).
pub async fn verify_record(store: &Store, presented: &str) -> Result<cairn_store::TokenRecord, Error> {
    let (lookup, hash) = hash_token(presented);
    let invalid = || Error::Unauthenticated("invalid or revoked token".into());
    let record = store.token_by_lookup(&lookup).await?.ok_or_else(invalid)?;
    if !bool::from(record.hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(invalid());
    }
    if let Err(e) = store.touch_token(&record.id).await {
        tracing::debug!(error = %e, "could not record token use");
    }
    Ok(record)
}

/// Middleware for the API: 401 without a valid bearer token, before any routing or lookup, so
/// that a bad token learns nothing about what exists.
///
/// Without an `Authorization` header, a studio session cookie stands in for the token (so the
/// studio's JavaScript can call the API); for methods that change state it must come with the
/// session's `x-csrf-token` header, else 403 — a cookie alone proves nothing about who sent it.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let presented = match header.and_then(bearer_credentials) {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        None if header.is_none() && crate::studio::session::has_cookie(request.headers()) => {
            let session =
                crate::studio::session::from_headers(&state, request.headers()).await?.ok_or_else(|| {
                    ApiError(Error::Unauthenticated("the studio session has expired: sign in again".into()))
                })?;
            if !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
                crate::studio::session::check_csrf_header(&session, request.headers())?;
            }
            request.extensions_mut().insert(session.caller);
            return Ok(next.run(request).await);
        }
        _ => {
            return Err(ApiError(Error::Unauthenticated(
                "missing bearer token: send 'Authorization: Bearer <token>'".into(),
            )))
        }
    };
    let token = verify(&state.store, &presented).await?;
    request.extensions_mut().insert(Caller { token });
    Ok(next.run(request).await)
}

/// Name of the token created at first start.
pub const ADMIN_TOKEN_NAME: &str = "admin";
/// File in the data directory holding the first admin token (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// On first start (no token at all), creates the admin token — `fixed` if given
/// (`CAIRN_ADMIN_TOKEN`), random otherwise — and writes it to `data_dir/admin-token` (0600).
/// Returns the file's path when a token was created.
pub async fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    fixed: Option<&str>,
) -> Result<Option<std::path::PathBuf>, Error> {
    if store.count_tokens().await? > 0 {
        if fixed.is_some() {
            if let Some(f) = fixed {
                if verify(store, f).await.is_err() {
                    tracing::warn!(
                        "CAIRN_ADMIN_TOKEN is only used at first start; the stored tokens are kept"
                    );
                }
            }
        }
        return Ok(None);
    }
    let token = match fixed {
        Some(t) if t.len() < 16 => {
            return Err(Error::invalid("CAIRN_ADMIN_TOKEN must be at least 16 characters long"))
        }
        Some(t) => t.to_string(),
        None => generate_token(),
    };
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret(&path, &token)?;
    let (lookup, hash) = hash_token(&token);
    store
        .insert_token(NewToken {
            name: ADMIN_TOKEN_NAME,
            lookup: &lookup,
            hash: &hash,
            role: Role::Admin,
            workspace: None,
            run_id: None,
        })
        .await?;
    Ok(Some(path))
}

/// Writes a secret to a file only its owner can read, atomically.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_whatever_its_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr abc"] {
            assert_eq!(bearer_credentials(value), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_credentials(value), None, "{value}");
        }
    }

    fn caller(role: Role, ws: Option<&str>) -> Caller {
        Caller {
            token: TokenInfo {
                name: "t".into(),
                role,
                workspace: ws.map(str::to_string),
                created_at: 0,
                last_used_at: None,
                run_id: None,
            },
        }
    }

    #[test]
    fn roles_are_ordered_and_scopes_are_enforced() {
        assert!(caller(Role::Admin, None).require(Role::Writer, Some("w")).is_ok());
        assert!(caller(Role::Reader, None).require(Role::Writer, Some("w")).is_err());
        assert!(caller(Role::Writer, Some("w")).require(Role::Writer, Some("w")).is_ok());
        assert!(caller(Role::Writer, Some("w")).require(Role::Reader, Some("other")).is_err());
        assert!(caller(Role::Writer, Some("w")).require(Role::Reader, None).is_err());
    }

    #[test]
    fn generated_tokens_are_long_random_and_hash_stably() {
        let a = generate_token();
        assert_ne!(a, generate_token());
        assert_eq!(a.len(), 6 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).0.len(), 16);
    }
}
