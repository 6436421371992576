//! Online deployments as stored: the spec they were created with, their state and why.

use cairn_core::deployments::{CreateDeployment, DeployedModel, DeploymentState};
use cairn_core::Error;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{is_foreign_key_violation, is_unique_violation, map_err, new_id};
use crate::Store;

/// A deployment as stored (the endpoint's name and workspace are joined in).
#[derive(Clone, Debug)]
pub struct DeploymentRecord {
    pub id: String,
    pub endpoint_id: String,
    pub endpoint_name: String,
    pub workspace_id: String,
    /// The workspace's name.
    pub workspace: String,
    pub name: String,
    pub spec: CreateDeployment,
    /// The model versions the spec's references resolved to, in its order (at least one).
    pub models: Vec<DeployedModel>,
    pub state: DeploymentState,
    pub reason: String,
    /// The generation that serves (see `cairn_core::deployments::Deployment::generation`).
    pub generation: i64,
    /// Why the last update failed, else empty.
    pub update_error: String,
    /// The spec an update in progress asked for (`spec` is what serves until it is done).
    pub pending_update: Option<CreateDeployment>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DeploymentRecord {
    pub fn new_id() -> String {
        new_id()
    }
}

/// What the `spec` column holds: the request plus the versions it resolved to, the generation
/// that serves and the last update's failure (both absent in rows written before updates existed).
/// Rows written before deployments held several models name their one version in `model_name`
/// and `model_version` instead of `models`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    spec: CreateDeployment,
    #[serde(default)]
    models: Vec<DeployedModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_version: Option<i64>,
    #[serde(default)]
    generation: i64,
    #[serde(default)]
    update_error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_update: Option<CreateDeployment>,
}

fn stored_json(d: &DeploymentRecord) -> String {
    serde_json::to_string(&Stored {
        spec: d.spec.clone(),
        models: d.models.clone(),
        model_name: None,
        model_version: None,
        generation: d.generation,
        update_error: d.update_error.clone(),
        pending_update: d.pending_update.clone(),
    })
    .expect("a deployment spec serialises")
}

const COLUMNS: &str = "d.id, d.endpoint_id, e.name AS endpoint_name, e.workspace_id, w.name AS workspace, d.name, d.spec, d.state, \
     d.reason, d.created_at, d.updated_at";

fn from_row(r: &AnyRow) -> Result<DeploymentRecord, Error> {
    let get = |c: &str| r.try_get::<String, _>(c).map_err(map_err);
    let mut stored: Stored = serde_json::from_str(&get("spec")?)
        .map_err(|e| Error::internal(format!("deployments.spec is unreadable: {e}")))?;
    if let (true, Some(name), Some(version)) =
        (stored.models.is_empty(), stored.model_name.take(), stored.model_version)
    {
        stored.models.push(DeployedModel { name, version });
    }
    if stored.models.is_empty() {
        return Err(Error::internal("deployments.spec names no model version"));
    }
    let state = get("state")?;
    Ok(DeploymentRecord {
        id: get("id")?,
        endpoint_id: get("endpoint_id")?,
        endpoint_name: get("endpoint_name")?,
        workspace_id: get("workspace_id")?,
        workspace: get("workspace")?,
        name: get("name")?,
        spec: stored.spec,
        models: stored.models,
        state: DeploymentState::parse(&state)
            .ok_or_else(|| Error::internal(format!("unknown deployment state {state:?}")))?,
        reason: get("reason")?,
        generation: stored.generation,
        update_error: stored.update_error,
        pending_update: stored.pending_update,
        created_at: r.try_get("created_at").map_err(map_err)?,
        updated_at: r.try_get("updated_at").map_err(map_err)?,
    })
}

impl Store {
    /// Stores a new deployment; a name already used on the endpoint is a conflict.
    pub async fn create_deployment(&self, d: &DeploymentRecord) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let spec = stored_json(d);
        sqlx::query(
            "INSERT INTO deployments (id, endpoint_id, name, spec, state, reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&d.id)
        .bind(&d.endpoint_id)
        .bind(&d.name)
        .bind(spec)
        .bind(d.state.as_str())
        .bind(&d.reason)
        .bind(d.created_at)
        .bind(d.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                Error::conflict(format!(
                    "endpoint \"{}\" already has a deployment \"{}\"; delete it first or choose another name",
                    d.endpoint_name, d.name
                ))
            } else if is_foreign_key_violation(&err) {
                // The endpoint was deleted after the caller found it.
                Error::NotFound {
                    kind: "endpoint",
                    name: format!("{}\" in workspace \"{}", d.endpoint_name, d.workspace),
                }
            } else {
                map_err(err)
            }
        })?;
        Ok(())
    }

    /// Forgets the model-version uses of `user_kind` (deployments) whose deployment no longer
    /// exists; returns how many went.
    pub async fn forget_uses_of_missing_deployments(&self, user_kind: &str) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM model_version_uses WHERE user_kind = $1 \
             AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.id = model_version_uses.user_id)",
        )
        .bind(user_kind)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    /// The deployments of an endpoint, by name.
    pub async fn list_deployments(&self, endpoint_id: &str) -> Result<Vec<DeploymentRecord>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deployments d JOIN endpoints e ON e.id = d.endpoint_id JOIN workspaces w ON w.id = e.workspace_id \
             WHERE d.endpoint_id = $1 ORDER BY d.name"
        );
        let rows = sqlx::query(&sql).bind(endpoint_id).fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(from_row).collect()
    }

    /// Every deployment on the server (for re-launching them at start-up).
    pub async fn all_deployments(&self) -> Result<Vec<DeploymentRecord>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM deployments d JOIN endpoints e ON e.id = d.endpoint_id JOIN workspaces w ON w.id = e.workspace_id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(from_row).collect()
    }

    /// Deployment `name` of endpoint `endpoint_id`.
    pub async fn deployment(
        &self,
        endpoint_id: &str,
        endpoint_name: &str,
        name: &str,
    ) -> Result<DeploymentRecord, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM deployments d JOIN endpoints e ON e.id = d.endpoint_id JOIN workspaces w ON w.id = e.workspace_id \
             WHERE d.endpoint_id = $1 AND d.name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(endpoint_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::NotFound {
                kind: "deployment",
                name: format!("{name}\" of endpoint \"{endpoint_name}"),
            })?;
        from_row(&row)
    }

    /// Sets a deployment's state and reason; false when it no longer exists.
    pub async fn set_deployment_state(
        &self,
        id: &str,
        state: DeploymentState,
        reason: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let done =
            sqlx::query("UPDATE deployments SET state = $1, reason = $2, updated_at = $3 WHERE id = $4")
                .bind(state.as_str())
                .bind(reason)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a deployment's spec, resolved models, generation, update error, state and reason
    /// (an update's outcome); false when it no longer exists.
    pub async fn update_deployment(&self, d: &DeploymentRecord) -> Result<bool, Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let done = sqlx::query(
            "UPDATE deployments SET spec = $1, state = $2, reason = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(stored_json(d))
        .bind(d.state.as_str())
        .bind(&d.reason)
        .bind(d.updated_at)
        .bind(&d.id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_deployment(&self, id: &str) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        sqlx::query("DELETE FROM deployments WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
