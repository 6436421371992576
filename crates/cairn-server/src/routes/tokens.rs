//! `/api/v1/tokens` and `/api/v1/whoami`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_core::api::{CreateToken, CreatedToken, Role, TokenInfo, Whoami};
use cairn_core::{validate_name, Error};
use cairn_store::NewToken;

use crate::auth::{generate_token, hash_token, Caller};
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

/// Who the presented token belongs to.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses((status = 200, body = Whoami), (status = 401, body = cairn_core::api::ErrorBody)))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami { token_name: caller.token.name, role: caller.token.role, workspace: caller.token.workspace })
}

/// Lists API tokens (never their secrets). Admin only.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 403, body = cairn_core::api::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    caller.require(Role::Admin, None)?;
    Ok(Json(state.store.list_tokens().await?))
}

/// Creates a named token; the response is the only time its secret is shown. Admin only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    extract::Json(req): extract::Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    caller.require(Role::Admin, None)?;
    validate_name("token name", &req.name)?;
    if let Some(ws) = &req.workspace {
        if req.role == Role::Admin {
            return Err(Error::invalid("an admin token cannot be limited to one workspace").into());
        }
        state.store.workspace(ws).await?;
    }
    let token = generate_token();
    let (lookup, hash) = hash_token(&token);
    let info = state
        .store
        .insert_token(NewToken {
            name: &req.name,
            lookup: &lookup,
            hash: &hash,
            role: req.role,
            workspace: req.workspace.as_deref(),
            run_id: None,
        })
        .await?;
    tracing::info!(token = %req.name, role = req.role.as_str(), "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Revokes a token: it stops working at once. The last admin token cannot be revoked.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "tokens",
    params(("name" = String, Path, description = "token name")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, None)?;
    let tokens = state.store.list_tokens().await?;
    let target = tokens.iter().find(|t| t.name == name).ok_or_else(|| Error::not_found("token", &name))?;
    if target.role == Role::Admin && tokens.iter().filter(|t| t.role == Role::Admin).count() == 1 {
        return Err(Error::conflict(format!(
            "\"{name}\" is the last admin token; create another admin token before revoking it"
        ))
        .into());
    }
    state.store.delete_token(&name).await?;
    tracing::info!(token = %name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
