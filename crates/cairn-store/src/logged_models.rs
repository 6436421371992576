//! MLflow 3's logged models (a model's files and metadata before, and apart from, registration)
//! and a run's inputs and outputs (datasets it used, models it used or produced).

use std::collections::{BTreeMap, HashMap};

use cairn_core::api::Workspace;
use cairn_core::runs::KeyValue;
use cairn_core::{now_ms, Error};
use sqlx::any::AnyRow;

use crate::binds::Placeholders;
use crate::db::{get, map_err, new_id};
use crate::runs::ROWS_PER_STATEMENT;
use crate::Store;

/// A logged model. `status` is MLflow's name (`LOGGED_MODEL_PENDING`, `LOGGED_MODEL_READY`, …).
#[derive(Clone, Debug)]
pub struct LoggedModel {
    pub id: String,
    pub experiment_id: String,
    pub name: String,
    pub model_type: String,
    /// Empty when the model was logged outside a run.
    pub source_run_id: String,
    pub status: String,
    pub status_message: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    pub tags: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
    /// Every point logged for the model, by key, then step and timestamp.
    pub metrics: Vec<ModelMetric>,
}

/// One metric point of a logged model: a run's metric logged with the model's id (MLflow's
/// `Metric` with `model_id`), optionally measured on a dataset (empty name and digest if not).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMetric {
    pub model_id: String,
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub run_id: String,
    pub dataset_name: String,
    pub dataset_digest: String,
}

/// What creating a logged model needs.
pub struct NewLoggedModel<'a> {
    pub experiment_id: &'a str,
    pub name: &'a str,
    pub model_type: &'a str,
    pub source_run_id: &'a str,
    pub status: &'a str,
    pub tags: &'a [KeyValue],
    pub params: &'a [KeyValue],
}

/// A model a run used (`input`) or produced (`output`, at a step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunModel {
    pub model_id: String,
    pub output: bool,
    pub step: i64,
}

/// What a run used and produced.
#[derive(Clone, Debug, Default)]
pub struct RunIo {
    pub models: Vec<RunModel>,
    pub datasets: Vec<RunDataset>,
}

/// A dataset a run used: MLflow's JSON, kept as sent.
#[derive(Clone, Debug)]
pub struct RunDataset {
    pub name: String,
    pub digest: String,
    pub dataset_json: String,
    pub tags_json: String,
}

const COLUMNS: &str = "id, experiment_id, name, model_type, source_run_id, status, status_message, \
                       created_at, updated_at, deleted_at";

fn model_of(r: &AnyRow) -> Result<LoggedModel, Error> {
    Ok(LoggedModel {
        id: get(r, "id")?,
        experiment_id: get(r, "experiment_id")?,
        name: get(r, "name")?,
        model_type: get(r, "model_type")?,
        source_run_id: get(r, "source_run_id")?,
        status: get(r, "status")?,
        status_message: get(r, "status_message")?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
        deleted_at: get(r, "deleted_at")?,
        tags: BTreeMap::new(),
        params: BTreeMap::new(),
        metrics: Vec::new(),
    })
}

/// Adds model metric points inside a transaction (the run's own `log_batch`, so that a batch's
/// run metrics and model metrics land together or not at all). A point already there is kept.
pub(crate) async fn insert_model_metrics(
    conn: &mut sqlx::AnyConnection,
    backend: crate::Backend,
    metrics: &[ModelMetric],
) -> Result<(), Error> {
    for chunk in metrics.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO logged_model_metrics (model_id, key, value, timestamp, step, run_id, \
             dataset_name, dataset_digest) VALUES {} ON CONFLICT DO NOTHING",
            crate::binds::values_rows(backend, chunk.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for m in chunk {
            // Bound as a float even when NaN (SQLite stores NULL, read back as NaN).
            q = q
                .bind(&m.model_id)
                .bind(&m.key)
                .bind(m.value)
                .bind(m.timestamp)
                .bind(m.step)
                .bind(&m.run_id)
                .bind(&m.dataset_name)
                .bind(&m.dataset_digest);
        }
        q.execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

impl Store {
    /// Creates a logged model with its tags and params; returns its id (`m-<32 hex>`, as MLflow's).
    pub async fn create_logged_model(
        &self,
        ws: &Workspace,
        new: NewLoggedModel<'_>,
    ) -> Result<String, Error> {
        let id = format!("m-{}", new_id().replace('-', ""));
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO logged_models (workspace_id, {COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, $8, NULL)"
        ))
        .bind(&ws.id)
        .bind(&id)
        .bind(new.experiment_id)
        .bind(new.name)
        .bind(new.model_type)
        .bind(new.source_run_id)
        .bind(new.status)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        for (table, items) in [("logged_model_tags", new.tags), ("logged_model_params", new.params)] {
            for kv in items {
                sqlx::query(&format!(
                    "INSERT INTO {table} (model_id, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (model_id, key) DO UPDATE SET value = $3"
                ))
                .bind(&id)
                .bind(&kv.key)
                .bind(&kv.value)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    /// Logged models of `ws` in `experiment_ids` (all experiments when empty; deleted ones only
    /// when `with_deleted`), or the one with `id`, newest first, with tags and params.
    async fn logged_models_where(
        &self,
        ws: &Workspace,
        id: Option<&str>,
        experiment_ids: &[String],
        with_deleted: bool,
    ) -> Result<Vec<LoggedModel>, Error> {
        let mut p = Placeholders::new(self.backend());
        let mut sql = format!("SELECT {COLUMNS} FROM logged_models WHERE workspace_id = {}", p.one());
        let mut binds: Vec<&str> = Vec::new();
        if let Some(id) = id {
            binds.push(id);
            sql.push_str(&format!(" AND id = {}", p.one()));
        }
        if !experiment_ids.is_empty() {
            sql.push_str(&format!(" AND experiment_id IN ({})", p.list(experiment_ids.len())));
            binds.extend(experiment_ids.iter().map(String::as_str));
        }
        if !with_deleted {
            sql.push_str(" AND deleted_at IS NULL");
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        let mut q = sqlx::query(&sql).bind(&ws.id);
        for b in &binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        let mut out: Vec<LoggedModel> = rows.iter().map(model_of).collect::<Result<_, _>>()?;
        // Tags, params and metrics of the whole page in three queries, not three per model.
        let mut index: HashMap<String, usize> = HashMap::with_capacity(out.len());
        for (i, m) in out.iter().enumerate() {
            index.insert(m.id.clone(), i);
        }
        let ids: Vec<String> = out.iter().map(|m| m.id.clone()).collect();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let list = crate::binds::in_list(self.backend(), chunk.len());
            for table in ["logged_model_tags", "logged_model_params"] {
                let sql = format!("SELECT model_id, key, value FROM {table} WHERE model_id IN ({list})");
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                for r in q.fetch_all(&self.pool).await.map_err(map_err)? {
                    let m = &mut out[index[&get::<String>(&r, "model_id")?]];
                    let into = if table == "logged_model_tags" { &mut m.tags } else { &mut m.params };
                    into.insert(get(&r, "key")?, get(&r, "value")?);
                }
            }
            let sql = format!(
                "SELECT model_id, key, value, timestamp, step, run_id, dataset_name, dataset_digest \
                 FROM logged_model_metrics WHERE model_id IN ({list}) ORDER BY model_id, key, step, timestamp"
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await.map_err(map_err)? {
                let metric = ModelMetric {
                    model_id: get(&r, "model_id")?,
                    key: get(&r, "key")?,
                    value: get::<Option<f64>>(&r, "value")?.unwrap_or(f64::NAN),
                    timestamp: get(&r, "timestamp")?,
                    step: get(&r, "step")?,
                    run_id: get(&r, "run_id")?,
                    dataset_name: get(&r, "dataset_name")?,
                    dataset_digest: get(&r, "dataset_digest")?,
                };
                out[index[&metric.model_id]].metrics.push(metric);
            }
        }
        Ok(out)
    }

    /// One logged model of `ws` (deleted ones included); `NotFound` otherwise.
    pub async fn logged_model(&self, ws: &Workspace, id: &str) -> Result<LoggedModel, Error> {
        self.logged_models_where(ws, Some(id), &[], true)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("logged model", id))
    }

    /// Whether `ws` holds a logged model `id` (deleted ones included), without reading its tags,
    /// params and metrics.
    pub async fn logged_model_exists(&self, ws: &Workspace, id: &str) -> Result<bool, Error> {
        let row = sqlx::query("SELECT 1 AS one FROM logged_models WHERE workspace_id = $1 AND id = $2")
            .bind(&ws.id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.is_some())
    }

    /// The live logged models of the given experiments (all when empty), newest first.
    pub async fn logged_models(
        &self,
        ws: &Workspace,
        experiment_ids: &[String],
    ) -> Result<Vec<LoggedModel>, Error> {
        self.logged_models_where(ws, None, experiment_ids, false).await
    }

    pub async fn set_logged_model_status(&self, id: &str, status: &str, message: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE logged_models SET status = $1, status_message = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(message)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    /// Sets (overwrites) tags or, with `params`, adds params of a logged model.
    pub async fn set_logged_model_values(
        &self,
        id: &str,
        params: bool,
        items: &[KeyValue],
    ) -> Result<(), Error> {
        let table = if params { "logged_model_params" } else { "logged_model_tags" };
        let mut tx = self.begin_write().await?;
        for kv in items {
            sqlx::query(&format!(
                "INSERT INTO {table} (model_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (model_id, key) DO UPDATE SET value = $3"
            ))
            .bind(id)
            .bind(&kv.key)
            .bind(&kv.value)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query("UPDATE logged_models SET updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// Removes a logged model's tag; false if it had none with that key.
    pub async fn delete_logged_model_tag(&self, id: &str, key: &str) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2")
            .bind(id)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() > 0)
    }

    /// Marks a logged model deleted (soft, as MLflow does; its files stay until cleaned up).
    pub async fn delete_logged_model(&self, id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE logged_models SET deleted_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Records models a run used or produced (idempotent: a repeated link keeps the last step).
    pub async fn link_run_models(&self, run_id: &str, models: &[RunModel]) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        for m in models {
            sqlx::query(
                "INSERT INTO run_models (run_id, model_id, direction, step) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (run_id, model_id, direction) DO UPDATE SET step = $4",
            )
            .bind(run_id)
            .bind(&m.model_id)
            .bind(if m.output { "output" } else { "input" })
            .bind(m.step)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// Records datasets a run used, one per name and digest, as MLflow's store does: the first
    /// logging wins (a dataset logged again, in this call or a later one, changes neither its
    /// input tags nor its content), and a dataset is the experiment's, so a run logging one
    /// that another run of its experiment logged first gets that one's content (source,
    /// schema, profile) with its own tags.
    pub async fn log_run_datasets(&self, run_id: &str, datasets: &[RunDataset]) -> Result<(), Error> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for d in datasets {
            sqlx::query(
                "INSERT INTO run_datasets (run_id, name, digest, dataset_json, tags_json, logged_at) \
                 VALUES ($1, $2, $3, COALESCE((SELECT d.dataset_json FROM run_datasets d \
                 JOIN runs o ON o.id = d.run_id \
                 WHERE o.experiment_id = (SELECT experiment_id FROM runs WHERE id = $1) \
                 AND d.name = $2 AND d.digest = $3 ORDER BY d.logged_at LIMIT 1), $4), $5, $6) \
                 ON CONFLICT (run_id, name, digest) DO NOTHING",
            )
            .bind(run_id)
            .bind(&d.name)
            .bind(&d.digest)
            .bind(&d.dataset_json)
            .bind(&d.tags_json)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// The models (inputs and outputs) and datasets of each of `run_ids` that has any, in the
    /// order they were logged.
    pub async fn run_inputs_outputs(&self, run_ids: &[String]) -> Result<HashMap<String, RunIo>, Error> {
        let mut out: HashMap<String, RunIo> = HashMap::new();
        if run_ids.is_empty() {
            return Ok(out);
        }
        let list = crate::binds::in_list(self.backend(), run_ids.len());
        let sql = format!(
            "SELECT run_id, model_id, direction, step FROM run_models WHERE run_id IN ({list}) \
             ORDER BY run_id, model_id"
        );
        let mut q = sqlx::query(&sql);
        for id in run_ids {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(&self.pool).await.map_err(map_err)? {
            out.entry(get(&r, "run_id")?).or_default().models.push(RunModel {
                model_id: get(&r, "model_id")?,
                output: get::<String>(&r, "direction")? == "output",
                step: get(&r, "step")?,
            });
        }
        let sql = format!(
            "SELECT run_id, name, digest, dataset_json, tags_json FROM run_datasets \
             WHERE run_id IN ({list}) ORDER BY run_id, logged_at, name, digest"
        );
        let mut q = sqlx::query(&sql);
        for id in run_ids {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(&self.pool).await.map_err(map_err)? {
            out.entry(get(&r, "run_id")?).or_default().datasets.push(RunDataset {
                name: get(&r, "name")?,
                digest: get(&r, "digest")?,
                dataset_json: get(&r, "dataset_json")?,
                tags_json: get(&r, "tags_json")?,
            });
        }
        Ok(out)
    }
}
