//! The OpenAPI 3 document of the native API, generated from the handlers' annotations.

use axum::Json;
use cairn_core::api::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use cairn_core::models::*;
use cairn_core::runs::*;

use cairn_core::endpoints::*;

use crate::routes::{
    datastores, deployments, endpoints, files, jobs, models, resources, runs, tokens, workspaces,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Cairn API", description = "Cairn's native REST API. Every call needs `Authorization: Bearer <token>`."),
    paths(
        tokens::whoami, tokens::list, tokens::create, tokens::revoke,
        workspaces::list, workspaces::create, workspaces::show, workspaces::delete,
        datastores::list, datastores::create, datastores::show, datastores::delete,
        files::plan, files::upload_batch, files::download_batch, files::list, files::upload, files::download, files::delete,
        runs::list_experiments, runs::create_experiment, runs::list_runs, runs::create_run, runs::show_run,
        runs::update_run, runs::log_batch, runs::add_properties, runs::run_metrics, runs::list_artifacts, runs::upload_artifact, runs::download_batch,
        runs::download_artifact, runs::search_runs, jobs::create_snapshot, jobs::missing_blobs, jobs::upload_blob, jobs::submit, jobs::cancel, jobs::logs,
        resources::list_environments, resources::create_environment, resources::show_environment,
        resources::build_environment, resources::delete_environment, resources::list_computes,
        resources::create_compute, resources::show_compute, resources::delete_compute,
        resources::list_sizes, resources::create_size, resources::delete_size,
        endpoints::list, endpoints::create, endpoints::show, endpoints::update, endpoints::delete,
        endpoints::keys, endpoints::regenerate_key, endpoints::token,
        deployments::create, deployments::list, deployments::show, deployments::delete, deployments::logs,
        deployments::replace, deployments::patch,
        models::list, models::show, models::update, models::delete, models::register, models::list_versions,
        models::show_version, models::update_version, models::delete_version, models::set_alias,
        models::delete_alias, models::files, models::download, crate::gc::handle,
    ),
    components(schemas(
        Role, TokenInfo, CreateToken, CreatedToken, Whoami, Workspace, WorkspaceDetail, CreateWorkspace,
        DatastoreKind, Datastore, CreateDatastore, PlannedFile, UploadPlanRequest, PlanAction,
        PlanEntry, UploadPlan, UploadBatchResult, DownloadBatchRequest, PutStatus, PutFileResult, FileEntry, ErrorBody, ErrorDetail,
        RunStatus, Experiment, CreateExperiment, Transition, MetricPoint, Run, RunServer, CreateRun, UpdateRun, LogMetric,
        KeyValue, LogBatch, AddProperties, RunMetrics, Environment, CreateEnvironment, EnvironmentBuild, Compute, ComputeState,
        CreateCompute, ComputeSize, CreateComputeSize, JobInput, DataInput, Literal, InputMode, SubmitJob, SnapshotFile, CreateSnapshot, SnapshotCreated,
        jobs::LogChunk, SearchRuns, RunsPage, Endpoint, CreateEndpoint, UpdateEndpoint, EndpointKeys,
        KeyType, RegenerateKey, TokenRequest, EndpointToken, AuthMode, ProvisioningState,
        cairn_core::deployments::CreateDeployment, cairn_core::deployments::Deployment,
        cairn_core::deployments::DeploymentState, cairn_core::deployments::CodeConfiguration,
        cairn_core::deployments::RequestSettings, cairn_core::deployments::ProbeSettings,
        jobs::LogChunk, SearchRuns, RunsPage, Model, ModelVersion, ModelFile, RegisterModelVersion,
        UpdateModel, UpdateModelVersion, SetAlias, BlobsQuery, MissingBlobs, GcRequest, GcWorkspace, GcReport,
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
