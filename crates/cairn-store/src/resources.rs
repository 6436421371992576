//! Environments (named, versioned specs) and compute targets.

use cairn_core::api::Workspace;
use cairn_core::runs::Environment;
use cairn_core::{now_ms, Error};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{is_unique_violation, map_err, new_id};
use crate::Store;

/// A compute target as stored.
#[derive(Clone, Debug)]
pub struct ComputeRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub kind: String,
    pub size: String,
    pub min_nodes: i64,
    pub max_nodes: i64,
    pub idle_seconds: i64,
    pub created_at: i64,
}

fn env_from_row(r: &AnyRow) -> Result<Environment, Error> {
    (|| -> Result<Environment, sqlx::Error> {
        let spec: String = r.try_get("spec")?;
        Ok(Environment {
            name: r.try_get("name")?,
            version: r.try_get("version")?,
            description: r.try_get("description")?,
            spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
            hash: r.try_get("hash")?,
            created_at: r.try_get("created_at")?,
        })
    })()
    .map_err(map_err)
}

fn compute_from_row(r: &AnyRow) -> Result<ComputeRecord, Error> {
    (|| -> Result<ComputeRecord, sqlx::Error> {
        Ok(ComputeRecord {
            id: r.try_get("id")?,
            workspace_id: r.try_get("workspace_id")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            size: r.try_get("size")?,
            min_nodes: r.try_get("min_nodes")?,
            max_nodes: r.try_get("max_nodes")?,
            idle_seconds: r.try_get("idle_seconds")?,
            created_at: r.try_get("created_at")?,
        })
    })()
    .map_err(map_err)
}

impl Store {
    /// Registers a version of an environment: `version` or the next one after the latest.
    pub async fn create_environment(
        &self,
        ws: &Workspace,
        name: &str,
        version: Option<i64>,
        description: &str,
        spec: &serde_json::Value,
        hash: &str,
    ) -> Result<Environment, Error> {
        let mut tx = self.begin_write().await?;
        let version = match version {
            Some(v) if v < 1 => return Err(Error::invalid(format!("version {v} must be 1 or more"))),
            Some(v) => v,
            None => {
                let row = sqlx::query(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM environments WHERE workspace_id = $1 AND name = $2",
                )
                .bind(&ws.id)
                .bind(name)
                .fetch_one(&mut **tx)
                .await
                .map_err(map_err)?;
                row.try_get::<i64, _>("v").map_err(map_err)? + 1
            }
        };
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO environments (id, workspace_id, name, version, description, spec, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(&ws.id)
        .bind(name)
        .bind(version)
        .bind(description)
        .bind(spec.to_string())
        .bind(hash)
        .bind(created_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!("environment \"{name}\" already has a version {version}"))
            } else {
                map_err(e)
            }
        })?;
        tx.commit().await.map_err(map_err)?;
        Ok(Environment {
            name: name.into(),
            version,
            description: description.into(),
            spec: spec.clone(),
            hash: hash.into(),
            created_at,
        })
    }

    /// One version of an environment, or its latest when `version` is `None`.
    pub async fn environment(
        &self,
        ws: &Workspace,
        name: &str,
        version: Option<i64>,
    ) -> Result<Environment, Error> {
        let row = sqlx::query(
            "SELECT name, version, description, spec, hash, created_at FROM environments \
             WHERE workspace_id = $1 AND name = $2 AND ($3 = 0 OR version = $3) ORDER BY version DESC LIMIT 1",
        )
        .bind(&ws.id)
        .bind(name)
        .bind(version.unwrap_or(0))
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        match (row, version) {
            (Some(r), _) => env_from_row(&r),
            (None, Some(v)) => {
                let latest = sqlx::query(
                    "SELECT MAX(version) AS v FROM environments WHERE workspace_id = $1 AND name = $2",
                )
                .bind(&ws.id)
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(map_err)?
                .try_get::<Option<i64>, _>("v")
                .map_err(map_err)?;
                Err(Error::NotFound {
                    kind: "environment version",
                    name: match latest {
                        Some(l) => format!("{name}@{v}\" (latest is {l}) in workspace \"{}", ws.name),
                        None => format!("{name}@{v}\" in workspace \"{}", ws.name),
                    },
                })
            }
            (None, None) => Err(Error::NotFound {
                kind: "environment",
                name: format!("{name}\" in workspace \"{}", ws.name),
            }),
        }
    }

    pub async fn list_environments(&self, ws: &Workspace) -> Result<Vec<Environment>, Error> {
        let rows = sqlx::query(
            "SELECT name, version, description, spec, hash, created_at FROM environments WHERE workspace_id = $1 \
             ORDER BY name, version",
        )
        .bind(&ws.id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(env_from_row).collect()
    }

    pub async fn delete_environment(&self, ws: &Workspace, name: &str, version: i64) -> Result<(), Error> {
        let done =
            sqlx::query("DELETE FROM environments WHERE workspace_id = $1 AND name = $2 AND version = $3")
                .bind(&ws.id)
                .bind(name)
                .bind(version)
                .execute(&self.pool)
                .await
                .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("environment version", format!("{name}@{version}")));
        }
        Ok(())
    }

    /// Stores a compute target (`c.id` and `c.workspace_id` are assigned here).
    pub async fn create_compute(&self, ws: &Workspace, c: &ComputeRecord) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO computes (id, workspace_id, name, kind, size, min_nodes, max_nodes, idle_seconds, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id())
        .bind(&ws.id)
        .bind(&c.name)
        .bind(&c.kind)
        .bind(&c.size)
        .bind(c.min_nodes)
        .bind(c.max_nodes)
        .bind(c.idle_seconds)
        .bind(c.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!("compute \"{}\" already exists in workspace \"{}\"", c.name, ws.name))
            } else {
                map_err(e)
            }
        })?;
        Ok(())
    }

    pub async fn compute(&self, workspace_id: &str, name: &str) -> Result<ComputeRecord, Error> {
        let row = sqlx::query("SELECT * FROM computes WHERE workspace_id = $1 AND name = $2")
            .bind(workspace_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::not_found("compute", name))?;
        compute_from_row(&row)
    }

    pub async fn list_computes(&self, ws: &Workspace) -> Result<Vec<ComputeRecord>, Error> {
        let rows = sqlx::query("SELECT * FROM computes WHERE workspace_id = $1 ORDER BY name")
            .bind(&ws.id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(compute_from_row).collect()
    }

    pub async fn delete_compute(&self, ws: &Workspace, name: &str) -> Result<(), Error> {
        let done = sqlx::query("DELETE FROM computes WHERE workspace_id = $1 AND name = $2")
            .bind(&ws.id)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("compute", name));
        }
        Ok(())
    }
}
