//! `/api/v1/tokens` and `/api/v1/whoami`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_core::api::{CreateToken, CreatedToken, Page, Role, TokenInfo, Whoami};
use cairn_core::{validate_name, Error};
use cairn_store::NewToken;

use crate::auth::{generate_token, hash_token, Caller};
use crate::error::ApiResult;
use crate::extract;
use crate::routes::workspaces::PageQuery;
use crate::state::AppState;

/// Who the presented token belongs to.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens",
    responses((status = 200, body = Whoami), (status = 401, body = cairn_core::api::ErrorBody)))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Whoami> {
    Json(Whoami { token_name: caller.token.name, role: caller.token.role, workspace: caller.token.workspace })
}

/// Lists API tokens by name (never their secrets), a page at a time. Admin only.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, body = Page<TokenInfo>), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 403, body = cairn_core::api::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    extract::Query(q): extract::Query<PageQuery>,
) -> ApiResult<Json<Page<TokenInfo>>> {
    caller.require(Role::Admin, None)?;
    cairn_core::api::check_page_size(q.page_size)?;
    Ok(Json(state.store.list_tokens(q.page_token.as_deref(), q.page_size).await?))
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
    let target = state.store.named_token(&name).await?.ok_or_else(|| Error::not_found("token", &name))?;
    if target.role == Role::Admin && state.store.count_admin_tokens().await? == 1 {
        return Err(Error::conflict(format!(
            "\"{name}\" is the last admin token; create another admin token before revoking it"
        ))
        .into());
    }
    state.store.delete_token(&name).await?;
    tracing::info!(token = %name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
