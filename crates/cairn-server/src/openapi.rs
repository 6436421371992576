//! The OpenAPI 3 document of the native API, generated from the handlers' annotations.

use axum::Json;
use cairn_core::api::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{datastores, files, tokens, workspaces};

#[derive(OpenApi)]
#[openapi(
    info(title = "Cairn API", description = "Cairn's native REST API. Every call needs `Authorization: Bearer <token>`."),
    paths(
        tokens::whoami, tokens::list, tokens::create, tokens::revoke,
        workspaces::list, workspaces::create, workspaces::show, workspaces::delete,
        datastores::list, datastores::create, datastores::show, datastores::delete,
        files::plan, files::list, files::upload, files::download, files::delete,
    ),
    components(schemas(
        Role, TokenInfo, CreateToken, CreatedToken, Whoami, Workspace, CreateWorkspace,
        DatastoreKind, Datastore, CreateDatastore, PlannedFile, UploadPlanRequest, PlanAction,
        PlanEntry, UploadPlan, PutStatus, PutFileResult, FileEntry, ErrorBody, ErrorDetail,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /api/v1/openapi.json` (public, like any API documentation).
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
