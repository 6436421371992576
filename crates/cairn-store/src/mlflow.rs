//! What the MLflow-compatible API needs beyond the native one: experiments by id with their tags
//! and lifecycle (MLflow deletes softly and restores), renaming, run lifecycle and tag deletion.

use std::collections::{BTreeMap, HashMap};

use cairn_core::api::Workspace;
use cairn_core::{now_ms, Error};

use crate::db::{get, is_unique_violation, map_err, WriteTx};
use crate::Store;

/// An experiment as MLflow sees it: with its id, lifecycle and tags.
#[derive(Clone, Debug)]
pub struct MlflowExperiment {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// What a run's MLflow view needs that [`cairn_core::runs::Run`] does not hold.
#[derive(Clone, Debug)]
pub struct MlflowRunMeta {
    pub experiment_id: String,
    pub deleted_at: Option<i64>,
}

/// A run's artifact location as MLflow's client sees it: the artifact proxy's path of its
/// experiment and id (`mlflow/artifacts.rs::resolve` maps it back onto the run's artifacts).
pub fn run_artifact_uri(experiment_id: &str, run_id: &str) -> String {
    format!("mlflow-artifacts:/{experiment_id}/{run_id}/artifacts")
}

/// [`run_artifact_uri`] of a run `r`, in SQL: what run searches filter and order on.
pub(crate) const RUN_ARTIFACT_URI_SQL: &str =
    "('mlflow-artifacts:/' || r.experiment_id || '/' || r.id || '/artifacts')";

impl Store {
    /// Experiments of `ws` (all, or the one with `id`, or the one named `name`), newest first.
    async fn mlflow_experiments_where(
        &self,
        ws: &Workspace,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<MlflowExperiment>, Error> {
        let rows = sqlx::query(
            "SELECT id, name, created_at, deleted_at FROM experiments WHERE workspace_id = $1 \
             AND ($2 = '' OR id = $2) AND ($3 = '' OR name = $3) ORDER BY created_at DESC, id",
        )
        .bind(&ws.id)
        .bind(id.unwrap_or(""))
        .bind(name.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut out: Vec<MlflowExperiment> = rows
            .iter()
            .map(|r| {
                Ok(MlflowExperiment {
                    id: get(r, "id")?,
                    name: get(r, "name")?,
                    created_at: get(r, "created_at")?,
                    deleted_at: get(r, "deleted_at")?,
                    tags: BTreeMap::new(),
                })
            })
            .collect::<Result<_, Error>>()?;
        if out.is_empty() {
            return Ok(out);
        }
        let tags = sqlx::query(
            "SELECT t.experiment_id, t.key, t.value FROM experiment_tags t \
             JOIN experiments e ON e.id = t.experiment_id WHERE e.workspace_id = $1",
        )
        .bind(&ws.id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let index: HashMap<String, usize> = out.iter().enumerate().map(|(i, e)| (e.id.clone(), i)).collect();
        for t in tags {
            let exp: String = get(&t, "experiment_id")?;
            if let Some(&i) = index.get(&exp) {
                out[i].tags.insert(get(&t, "key")?, get(&t, "value")?);
            }
        }
        Ok(out)
    }

    /// Every experiment of a workspace, deleted ones included, newest first.
    pub async fn mlflow_experiments(&self, ws: &Workspace) -> Result<Vec<MlflowExperiment>, Error> {
        self.mlflow_experiments_where(ws, None, None).await
    }

    pub async fn mlflow_experiment_by_id(&self, ws: &Workspace, id: &str) -> Result<MlflowExperiment, Error> {
        if id.is_empty() {
            return Err(Error::not_found("experiment", id));
        }
        self.mlflow_experiments_where(ws, Some(id), None).await?.pop().ok_or_else(|| Error::NotFound {
            kind: "experiment",
            name: format!("{id}\" in workspace \"{}", ws.name),
        })
    }

    pub async fn mlflow_experiment_by_name(
        &self,
        ws: &Workspace,
        name: &str,
    ) -> Result<Option<MlflowExperiment>, Error> {
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self.mlflow_experiments_where(ws, None, Some(name)).await?.pop())
    }

    /// Renames an experiment; a name already taken in the workspace is a conflict.
    pub async fn rename_experiment(&self, ws: &Workspace, id: &str, name: &str) -> Result<(), Error> {
        let done = sqlx::query("UPDATE experiments SET name = $1 WHERE id = $2 AND workspace_id = $3")
            .bind(name)
            .bind(id)
            .bind(&ws.id)
            .execute(&self.pool)
            .await;
        match done {
            Ok(r) if r.rows_affected() == 0 => Err(Error::not_found("experiment", id)),
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(Error::conflict(format!("an experiment named {name:?} already exists")))
            }
            Err(e) => Err(map_err(e)),
        }
    }

    /// Marks an experiment deleted (soft, as MLflow does) or restores it.
    /// Deletes or restores an experiment with its runs, as MLflow does: deleting marks the
    /// experiment's live runs deleted at the experiment's instant, and restoring brings back
    /// those runs (runs deleted by themselves before stay deleted).
    pub async fn set_experiment_deleted(&self, ws: &Workspace, id: &str, deleted: bool) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let found = if deleted {
            delete_experiment(&mut tx, ws, id).await?
        } else {
            restore_experiment(&mut tx, ws, id).await?
        };
        if !found {
            return Err(Error::not_found("experiment", id));
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    pub async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (experiment_id, key) DO UPDATE SET value = $3",
        )
        .bind(experiment_id)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    /// Removes an experiment's tag; false if the experiment had no such tag.
    pub async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> Result<bool, Error> {
        self.delete_tag(
            "DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2",
            experiment_id,
            key,
        )
        .await
    }

    /// Removes a run's tag; false if the run had no such tag.
    pub async fn delete_run_tag(&self, run_id: &str, key: &str) -> Result<bool, Error> {
        self.delete_tag("DELETE FROM run_tags WHERE run_id = $1 AND key = $2", run_id, key).await
    }

    async fn delete_tag(&self, statement: &'static str, owner: &str, key: &str) -> Result<bool, Error> {
        let r = sqlx::query(statement).bind(owner).bind(key).execute(&self.pool).await.map_err(map_err)?;
        Ok(r.rows_affected() > 0)
    }

    /// Marks a run deleted (soft, as MLflow does) or restores it.
    pub async fn set_run_deleted(&self, run_id: &str, deleted: bool) -> Result<(), Error> {
        sqlx::query("UPDATE runs SET deleted_at = $1 WHERE id = $2")
            .bind(if deleted { Some(now_ms()) } else { None })
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Experiment id and lifecycle of each of `ids` (ids not found are left out).
    pub async fn mlflow_run_meta(&self, ids: &[String]) -> Result<HashMap<String, MlflowRunMeta>, Error> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT id, experiment_id, deleted_at FROM runs WHERE id IN ({})",
            crate::binds::in_list(self.backend(), ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(id.clone());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "id")?,
                    MlflowRunMeta {
                        experiment_id: get(r, "experiment_id")?,
                        deleted_at: get(r, "deleted_at")?,
                    },
                ))
            })
            .collect()
    }
}

/// Marks experiment `id` and its live runs deleted; false if `ws` has no such experiment. A
/// second deletion keeps the first instant, so that a restore still finds the runs it deleted.
async fn delete_experiment(tx: &mut WriteTx, ws: &Workspace, id: &str) -> Result<bool, Error> {
    let r = sqlx::query(
        "UPDATE experiments SET deleted_at = COALESCE(deleted_at, $1) WHERE id = $2 AND workspace_id = $3",
    )
    .bind(now_ms())
    .bind(id)
    .bind(&ws.id)
    .execute(&mut ***tx)
    .await
    .map_err(map_err)?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE runs SET deleted_at = (SELECT deleted_at FROM experiments WHERE id = $1) \
         WHERE experiment_id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut ***tx)
    .await
    .map_err(map_err)?;
    Ok(true)
}

/// Restores experiment `id` and the runs its deletion deleted; false if `ws` has no such
/// experiment.
async fn restore_experiment(tx: &mut WriteTx, ws: &Workspace, id: &str) -> Result<bool, Error> {
    // Runs first: they are known by the experiment's deletion instant, which is then cleared.
    sqlx::query(
        "UPDATE runs SET deleted_at = NULL WHERE experiment_id = $1 AND deleted_at = \
         (SELECT deleted_at FROM experiments WHERE id = $1 AND workspace_id = $2)",
    )
    .bind(id)
    .bind(&ws.id)
    .execute(&mut ***tx)
    .await
    .map_err(map_err)?;
    let r = sqlx::query("UPDATE experiments SET deleted_at = NULL WHERE id = $1 AND workspace_id = $2")
        .bind(id)
        .bind(&ws.id)
        .execute(&mut ***tx)
        .await
        .map_err(map_err)?;
    Ok(r.rows_affected() > 0)
}
