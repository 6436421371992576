//! Online endpoints as stored: settings, provisioning state and their two keys (sealed and
//! hashed; the store never sees a key in clear and knows nothing of how they are sealed).

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_core::api::Workspace;
use cairn_core::cache::{ClearOnDrop, LookupCache};
use cairn_core::endpoints::{AuthMode, KeyType, ProvisioningState};
use cairn_core::Error;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{is_unique_violation, map_err, new_id};
use crate::Store;

/// One key slot: the key sealed with the server secret, and its SHA-256 (hex).
#[derive(Clone, Debug)]
pub struct StoredKey {
    pub sealed: String,
    pub hash: String,
}

/// An endpoint as stored.
#[derive(Clone, Debug)]
pub struct EndpointRecord {
    pub id: String,
    pub workspace_id: String,
    /// The workspace's name (joined in).
    pub workspace: String,
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub auth_mode: AuthMode,
    pub traffic: BTreeMap<String, i64>,
    pub mirror_traffic: BTreeMap<String, i64>,
    pub provisioning_state: ProvisioningState,
    pub primary: StoredKey,
    pub secondary: StoredKey,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EndpointRecord {
    /// A new record with a fresh id (for [`Store::create_endpoint`]).
    pub fn new_id() -> String {
        new_id()
    }
}

const COLUMNS: &str =
    "e.id, e.workspace_id, w.name AS workspace, e.name, e.description, e.tags, e.auth_mode, \
     e.traffic, e.mirror_traffic, e.provisioning_state, e.primary_key_sealed, e.secondary_key_sealed, \
     e.primary_key_hash, e.secondary_key_hash, e.created_at, e.updated_at";

fn json_map<T: serde::de::DeserializeOwned>(text: &str, column: &str) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("endpoints.{column} is not valid JSON: {e}")))
}

fn from_row(r: &AnyRow) -> Result<EndpointRecord, Error> {
    let get = |c: &str| r.try_get::<String, _>(c).map_err(map_err);
    let auth_mode = AuthMode::parse(&get("auth_mode")?)?;
    let state = get("provisioning_state")?;
    Ok(EndpointRecord {
        id: get("id")?,
        workspace_id: get("workspace_id")?,
        workspace: get("workspace")?,
        name: get("name")?,
        description: get("description")?,
        tags: json_map(&get("tags")?, "tags")?,
        auth_mode,
        traffic: json_map(&get("traffic")?, "traffic")?,
        mirror_traffic: json_map(&get("mirror_traffic")?, "mirror_traffic")?,
        provisioning_state: ProvisioningState::parse(&state)
            .ok_or_else(|| Error::internal(format!("unknown provisioning state {state:?}")))?,
        primary: StoredKey { sealed: get("primary_key_sealed")?, hash: get("primary_key_hash")? },
        secondary: StoredKey { sealed: get("secondary_key_sealed")?, hash: get("secondary_key_hash")? },
        created_at: r.try_get("created_at").map_err(map_err)?,
        updated_at: r.try_get("updated_at").map_err(map_err)?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("maps of strings and integers serialise")
}

/// Copies of the lookups every scoring request makes (the endpoint by name, its deployments), so
/// that the data plane does not run two queries per request. Every write of an endpoint, a
/// deployment or a workspace through this `Store` empties it at once; entries also expire after
/// [`SCORING_CACHE_TTL`], which bounds how long a change made by another server process sharing
/// the database (a regenerated key, a deleted endpoint) can go unseen here. Unknown names are
/// cached too (any caller can send them), so the size is bounded.
#[derive(Debug)]
pub(crate) struct ScoringCache {
    // Shared, not copied, with each request: a deployment record holds its whole spec.
    endpoints: LookupCache<String, Option<Arc<EndpointRecord>>>,
    deployments: LookupCache<String, Arc<Vec<crate::DeploymentRecord>>>,
}

/// How long a cached scoring lookup is trusted without a write through this process.
pub const SCORING_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Scoring lookups cached at most, per kind.
const SCORING_CACHE_MAX: usize = 10_000;

impl Default for ScoringCache {
    fn default() -> Self {
        ScoringCache {
            endpoints: LookupCache::new(Some(SCORING_CACHE_TTL), SCORING_CACHE_MAX),
            deployments: LookupCache::new(Some(SCORING_CACHE_TTL), SCORING_CACHE_MAX),
        }
    }
}

type ClearScoring<'a> = (
    ClearOnDrop<'a, String, Option<Arc<EndpointRecord>>>,
    ClearOnDrop<'a, String, Arc<Vec<crate::DeploymentRecord>>>,
);

impl ScoringCache {
    /// A guard that empties the cache when the write holding it ends.
    pub(crate) fn invalidate_after(&self) -> ClearScoring<'_> {
        (self.endpoints.clear_after(), self.deployments.clear_after())
    }
}

impl Store {
    /// [`Store::endpoint_by_name`] through the scoring cache (the data plane's lookup).
    pub async fn endpoint_for_scoring(&self, name: &str) -> Result<Option<Arc<EndpointRecord>>, Error> {
        let load = || async { Ok(self.endpoint_by_name(name).await?.map(Arc::new)) };
        self.scoring_cache.endpoints.get_or_load(name, load, |_| true).await
    }

    /// [`Store::list_deployments`] through the scoring cache (the data plane's lookup).
    pub async fn deployments_for_scoring(
        &self,
        endpoint_id: &str,
    ) -> Result<Arc<Vec<crate::DeploymentRecord>>, Error> {
        let load = || async { Ok(Arc::new(self.list_deployments(endpoint_id).await?)) };
        self.scoring_cache.deployments.get_or_load(endpoint_id, load, |_| true).await
    }
}

impl Store {
    /// Stores a new endpoint (`e.id` must be fresh). A name taken anywhere on the server is a
    /// conflict that does not say where (the caller may not see the other workspace).
    pub async fn create_endpoint(&self, ws: &Workspace, e: &EndpointRecord) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        sqlx::query(
            "INSERT INTO endpoints (id, workspace_id, name, description, tags, auth_mode, traffic, mirror_traffic, \
             provisioning_state, primary_key_sealed, secondary_key_sealed, primary_key_hash, secondary_key_hash, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&e.id)
        .bind(&ws.id)
        .bind(&e.name)
        .bind(&e.description)
        .bind(to_json(&e.tags))
        .bind(e.auth_mode.as_str())
        .bind(to_json(&e.traffic))
        .bind(to_json(&e.mirror_traffic))
        .bind(e.provisioning_state.as_str())
        .bind(&e.primary.sealed)
        .bind(&e.secondary.sealed)
        .bind(&e.primary.hash)
        .bind(&e.secondary.hash)
        .bind(e.created_at)
        .bind(e.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                Error::conflict(format!(
                    "endpoint name \"{}\" is already taken on this server (endpoint names are unique across \
                     workspaces because the scoring URI carries no workspace); choose another name",
                    e.name
                ))
            } else {
                map_err(err)
            }
        })?;
        Ok(())
    }

    /// The endpoint `name` of workspace `ws` (one in another workspace is not found here).
    pub async fn endpoint(&self, ws: &Workspace, name: &str) -> Result<EndpointRecord, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id \
             WHERE e.workspace_id = $1 AND e.name = $2"
        );
        let row = sqlx::query(&sql)
            .bind(&ws.id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::NotFound {
                kind: "endpoint",
                name: format!("{name}\" in workspace \"{}", ws.name),
            })?;
        from_row(&row)
    }

    /// The endpoint called `name`, whatever its workspace (the scoring gateway's lookup).
    pub async fn endpoint_by_name(&self, name: &str) -> Result<Option<EndpointRecord>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id WHERE e.name = $1"
        );
        let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await.map_err(map_err)?;
        row.as_ref().map(from_row).transpose()
    }

    /// The endpoints of a workspace, by name.
    pub async fn list_endpoints(&self, ws: &Workspace) -> Result<Vec<EndpointRecord>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM endpoints e JOIN workspaces w ON w.id = e.workspace_id \
             WHERE e.workspace_id = $1 ORDER BY e.name"
        );
        let rows = sqlx::query(&sql).bind(&ws.id).fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(from_row).collect()
    }

    /// Saves the settings of `e` (description, tags, auth mode, traffic, state, `updated_at`).
    pub async fn update_endpoint(&self, e: &EndpointRecord) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let done = sqlx::query(
            "UPDATE endpoints SET description = $1, tags = $2, auth_mode = $3, traffic = $4, mirror_traffic = $5, \
             provisioning_state = $6, updated_at = $7 WHERE id = $8",
        )
        .bind(&e.description)
        .bind(to_json(&e.tags))
        .bind(e.auth_mode.as_str())
        .bind(to_json(&e.traffic))
        .bind(to_json(&e.mirror_traffic))
        .bind(e.provisioning_state.as_str())
        .bind(e.updated_at)
        .bind(&e.id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("endpoint", e.name.clone()));
        }
        Ok(())
    }

    /// Replaces one key of endpoint `id`, leaving the other as it is.
    pub async fn set_endpoint_key(
        &self,
        id: &str,
        slot: KeyType,
        key: &StoredKey,
        updated_at: i64,
    ) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let sql = match slot {
            KeyType::Primary => {
                "UPDATE endpoints SET primary_key_sealed = $1, primary_key_hash = $2, updated_at = $3 WHERE id = $4"
            }
            KeyType::Secondary => {
                "UPDATE endpoints SET secondary_key_sealed = $1, secondary_key_hash = $2, updated_at = $3 \
                 WHERE id = $4"
            }
        };
        let done = sqlx::query(sql)
            .bind(&key.sealed)
            .bind(&key.hash)
            .bind(updated_at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("endpoint", id));
        }
        Ok(())
    }

    /// Deletes an endpoint and, through foreign keys, everything that hangs under it.
    pub async fn delete_endpoint(&self, ws: &Workspace, name: &str) -> Result<(), Error> {
        let _invalidate = self.scoring_cache.invalidate_after();
        let done = sqlx::query("DELETE FROM endpoints WHERE workspace_id = $1 AND name = $2")
            .bind(&ws.id)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                kind: "endpoint",
                name: format!("{name}\" in workspace \"{}", ws.name),
            });
        }
        Ok(())
    }
}
