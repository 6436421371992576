//! Environments (named, versioned specs), compute targets and workspace compute sizes.

use cairn_core::api::Workspace;
use cairn_core::runs::{ComputeSize, Environment};
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

fn size_from_row(r: &AnyRow) -> Result<ComputeSize, Error> {
    (|| -> Result<ComputeSize, sqlx::Error> {
        let cores: i64 = r.try_get("cores")?;
        let memory_mb: i64 = r.try_get("memory_mb")?;
        Ok(ComputeSize {
            name: r.try_get("name")?,
            cores: cores as u32,
            memory_gb: memory_mb as f64 / 1024.0,
            shipped: false,
            created_by: Some(r.try_get("created_by")?),
            created_at: Some(r.try_get("created_at")?),
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

    /// Stores a workspace compute size (validated by the caller); memory is kept in whole MiB.
    pub async fn create_size(
        &self,
        ws: &Workspace,
        size: &ComputeSize,
        by: &str,
    ) -> Result<ComputeSize, Error> {
        let memory_mb = (size.memory_gb * 1024.0).round() as i64;
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO compute_sizes (id, workspace_id, name, cores, memory_mb, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id())
        .bind(&ws.id)
        .bind(&size.name)
        .bind(i64::from(size.cores))
        .bind(memory_mb)
        .bind(by)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!("size \"{}\" already exists in workspace \"{}\"", size.name, ws.name))
            } else {
                map_err(e)
            }
        })?;
        self.size(&ws.id, &size.name).await?.ok_or_else(|| Error::not_found("size", &size.name))
    }

    /// A workspace's own size of that exact name (shipped sizes are not stored).
    pub async fn size(&self, workspace_id: &str, name: &str) -> Result<Option<ComputeSize>, Error> {
        let row = sqlx::query("SELECT * FROM compute_sizes WHERE workspace_id = $1 AND name = $2")
            .bind(workspace_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(size_from_row).transpose()
    }

    pub async fn list_sizes(&self, ws: &Workspace) -> Result<Vec<ComputeSize>, Error> {
        let rows = sqlx::query("SELECT * FROM compute_sizes WHERE workspace_id = $1 ORDER BY name")
            .bind(&ws.id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(size_from_row).collect()
    }

    /// Deletes a workspace size unless a compute target uses it (409 naming them). The check is
    /// repeated inside the DELETE so that a compute created meanwhile still keeps its size.
    pub async fn delete_size(&self, ws: &Workspace, name: &str) -> Result<(), Error> {
        let users: Vec<String> =
            sqlx::query("SELECT name FROM computes WHERE workspace_id = $1 AND size = $2 ORDER BY name")
                .bind(&ws.id)
                .bind(name)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?
                .iter()
                .map(|r| r.try_get::<String, _>("name"))
                .collect::<Result<_, _>>()
                .map_err(map_err)?;
        let in_use = |users: &[String]| {
            Error::conflict(format!(
                "size \"{name}\" is used by compute {}; delete those first",
                users.join(", ")
            ))
        };
        if !users.is_empty() {
            return Err(in_use(&users));
        }
        let done = sqlx::query(
            "DELETE FROM compute_sizes WHERE workspace_id = $1 AND name = $2 \
             AND NOT EXISTS (SELECT 1 FROM computes WHERE workspace_id = $3 AND size = $4)",
        )
        .bind(&ws.id)
        .bind(name)
        .bind(&ws.id)
        .bind(name)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            if self.size(&ws.id, name).await?.is_some() {
                return Err(in_use(&["(created meanwhile)".to_string()]));
            }
            return Err(Error::not_found("size", name));
        }
        Ok(())
    }
}
