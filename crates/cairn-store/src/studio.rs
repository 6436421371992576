//! Read queries only the studio's pages need: experiment summaries, the param and metric keys
//! of an experiment's runs (the runs table's columns), the statuses of a few runs (live
//! updates) and a page of the models list. Each costs a fixed number of queries, whatever the
//! number of runs, models or versions, so pages stay fast when those grow.
//!
//! The one write, [`record_column_keys`], keeps `experiment_keys` (an experiment's param and
//! metric keys) current from `log_batch`, which is what lets the column keys be read at once.

use std::collections::BTreeMap;

use cairn_core::api::Workspace;
use cairn_core::models::Model;
use cairn_core::runs::RunStatus;
use cairn_core::Error;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::db::map_err;
use crate::runs::placeholders;
use crate::Store;

/// An experiment with how many runs it has and when the last one was created.
#[derive(Clone, Debug)]
pub struct ExperimentSummary {
    pub name: String,
    pub created_at: i64,
    pub runs: i64,
    pub last_run_at: Option<i64>,
}

/// The keys of params and of latest metrics found on a set of runs, sorted.
#[derive(Clone, Debug, Default)]
pub struct RunColumnKeys {
    pub params: Vec<String>,
    pub metrics: Vec<String>,
}

/// A run's status and times, for live updates.
#[derive(Clone, Debug)]
pub struct RunStatusRow {
    pub id: String,
    pub status: RunStatus,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

/// A model as the models list shows it: the model (with its tags and aliases), how many versions
/// it has, and its latest version's framework.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub model: Model,
    pub versions: i64,
    pub framework: Option<String>,
    pub framework_version: Option<String>,
}

/// Most columns of each kind the runs table offers (keys beyond are still filterable).
pub const MAX_COLUMN_KEYS: i64 = 500;

fn get<T>(row: &AnyRow, col: &str) -> Result<T, Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(map_err)
}

impl Store {
    /// The table `name` a run logged with the runtime's `log_row`/`log_table` (its metrics
    /// `NAME.COLUMN`, one step per row): the columns in key order, the first `max_rows` rows (the
    /// last value logged at each step; `None` where a column has no value) and the number of rows.
    /// One range read of the metrics' `(run_id, key, …)` index, bounded by the row limit.
    pub async fn run_metric_table(
        &self,
        run_id: &str,
        name: &str,
        max_rows: usize,
    ) -> Result<(Vec<String>, Vec<Vec<Option<f64>>>, usize), Error> {
        // Keys `NAME.` … up to but excluding `NAME/` ('/' follows '.' in ASCII): the prefix as a range.
        let (lo, hi) = (format!("{name}."), format!("{name}/"));
        let rows = sqlx::query(
            "SELECT key, step, value FROM metrics WHERE run_id = $1 AND key >= $2 AND key < $3 \
             AND step >= 0 AND step < $4 ORDER BY key, step, timestamp",
        )
        .bind(run_id)
        .bind(&lo)
        .bind(&hi)
        .bind(max_rows as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let total: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(step) FROM metrics WHERE run_id = $1 AND key >= $2 AND key < $3 AND step >= 0",
        )
        .bind(run_id)
        .bind(&lo)
        .bind(&hi)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        let mut columns: BTreeMap<String, BTreeMap<i64, Option<f64>>> = BTreeMap::new();
        for r in rows {
            let key: String = r.try_get("key").map_err(map_err)?;
            let step: i64 = r.try_get("step").map_err(map_err)?;
            let value: Option<f64> = r.try_get("value").map_err(map_err)?;
            let column = key[lo.len()..].to_string();
            // NULL is how a NaN was stored; later points at a step replace earlier ones.
            columns.entry(column).or_default().insert(step, Some(value.unwrap_or(f64::NAN)));
        }
        let total = total.map_or(0, |m| m as usize + 1);
        let shown = total.min(max_rows);
        let names: Vec<String> = columns.keys().cloned().collect();
        let table = (0..shown as i64)
            .map(|step| columns.values().map(|c| c.get(&step).copied().flatten()).collect())
            .collect();
        Ok((names, table, total))
    }

    /// The live experiments of a workspace, by name, with run counts and last run times.
    pub async fn experiment_summaries(&self, ws: &Workspace) -> Result<Vec<ExperimentSummary>, Error> {
        let rows = sqlx::query(
            "SELECT e.name, e.created_at, COUNT(r.id) AS runs, MAX(r.created_at) AS last_run_at \
             FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id AND r.deleted_at IS NULL \
             WHERE e.workspace_id = $1 AND e.deleted_at IS NULL \
             GROUP BY e.id, e.name, e.created_at ORDER BY e.name",
        )
        .bind(&ws.id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(ExperimentSummary {
                    name: get(r, "name")?,
                    created_at: get(r, "created_at")?,
                    runs: get(r, "runs")?,
                    last_run_at: get(r, "last_run_at")?,
                })
            })
            .collect()
    }

    /// The param and metric keys logged in `experiment` (in every experiment of the workspace
    /// when `None`), sorted, at most [`MAX_COLUMN_KEYS`] of each: one range of the
    /// `experiment_keys` index per kind, whatever the number of runs.
    pub async fn run_column_keys(
        &self,
        ws: &Workspace,
        experiment: Option<&str>,
    ) -> Result<RunColumnKeys, Error> {
        let mut keys = RunColumnKeys::default();
        for (kind, out) in [("param", &mut keys.params), ("metric", &mut keys.metrics)] {
            let sql = match experiment {
                Some(_) => format!(
                    "SELECT k.key FROM experiment_keys k JOIN experiments e ON e.id = k.experiment_id \
                     WHERE e.workspace_id = $1 AND e.name = $3 AND k.kind = $2 ORDER BY k.key LIMIT {MAX_COLUMN_KEYS}"
                ),
                None => format!(
                    "SELECT DISTINCT k.key FROM experiment_keys k JOIN experiments e ON e.id = k.experiment_id \
                     WHERE e.workspace_id = $1 AND e.deleted_at IS NULL AND k.kind = $2 \
                     ORDER BY k.key LIMIT {MAX_COLUMN_KEYS}"
                ),
            };
            let mut q = sqlx::query(&sql).bind(&ws.id).bind(kind);
            if let Some(e) = experiment {
                q = q.bind(e);
            }
            for r in q.fetch_all(&self.pool).await.map_err(map_err)? {
                out.push(get(&r, "key")?);
            }
        }
        Ok(keys)
    }

    /// Status and times of the runs among `ids` that exist in `ws` (unknown ids are left out).
    pub async fn run_statuses(&self, ws: &Workspace, ids: &[String]) -> Result<Vec<RunStatusRow>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, status, started_at, ended_at FROM runs WHERE workspace_id = $1 AND id IN ({})",
            placeholders(2, ids.len())
        );
        let mut q = sqlx::query(&sql).bind(&ws.id);
        for id in ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let s: String = get(r, "status")?;
                Ok(RunStatusRow {
                    id: get(r, "id")?,
                    status: RunStatus::parse(&s).ok_or_else(|| {
                        Error::internal(format!("unknown run status {s:?} in the database"))
                    })?,
                    started_at: get(r, "started_at")?,
                    ended_at: get(r, "ended_at")?,
                })
            })
            .collect()
    }

    /// A page of the workspace's models, most recently updated first (the order of
    /// `Store::list_models`), and whether more follow. Three queries for the whole page: the
    /// models with their version counts and latest versions, then the tags and the aliases of
    /// all of them.
    pub async fn model_summaries(
        &self,
        ws: &Workspace,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ModelSummary>, bool), Error> {
        let rows = sqlx::query(
            "SELECT m.id, m.name, m.description, m.created_by, m.created_at, m.updated_at, \
             (SELECT COUNT(*) FROM model_versions c WHERE c.model_id = m.id) AS versions, \
             lv.version AS latest, lv.framework, lv.framework_version \
             FROM registered_models m LEFT JOIN model_versions lv ON lv.model_id = m.id \
             AND lv.version = (SELECT MAX(x.version) FROM model_versions x WHERE x.model_id = m.id) \
             WHERE m.workspace_id = $1 ORDER BY m.updated_at DESC, m.name LIMIT $2 OFFSET $3",
        )
        .bind(&ws.id)
        .bind(limit + 1)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let more = rows.len() as i64 > limit;
        let mut ids = Vec::new();
        let mut out = Vec::new();
        for r in rows.iter().take(limit as usize) {
            ids.push(get::<String>(r, "id")?);
            out.push(ModelSummary {
                model: Model {
                    name: get(r, "name")?,
                    workspace: ws.name.clone(),
                    description: get(r, "description")?,
                    tags: BTreeMap::new(),
                    created_by: get(r, "created_by")?,
                    created_at: get(r, "created_at")?,
                    updated_at: get(r, "updated_at")?,
                    latest_version: get(r, "latest")?,
                    aliases: BTreeMap::new(),
                },
                versions: get(r, "versions")?,
                framework: get(r, "framework")?,
                framework_version: get(r, "framework_version")?,
            });
        }
        if ids.is_empty() {
            return Ok((out, more));
        }
        let position: BTreeMap<&str, usize> =
            ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let list = placeholders(1, ids.len());
        let tags_sql =
            format!("SELECT model_id, key, value FROM registered_model_tags WHERE model_id IN ({list})");
        let aliases_sql = format!(
            "SELECT a.model_id, a.alias, v.version FROM model_aliases a JOIN model_versions v ON v.id = a.version_id \
             WHERE a.model_id IN ({list})"
        );
        let mut tags = sqlx::query(&tags_sql);
        let mut aliases = sqlx::query(&aliases_sql);
        for id in &ids {
            tags = tags.bind(id);
            aliases = aliases.bind(id);
        }
        for r in tags.fetch_all(&self.pool).await.map_err(map_err)? {
            let id: String = get(&r, "model_id")?;
            if let Some(&i) = position.get(id.as_str()) {
                out[i].model.tags.insert(get(&r, "key")?, get(&r, "value")?);
            }
        }
        for r in aliases.fetch_all(&self.pool).await.map_err(map_err)? {
            let id: String = get(&r, "model_id")?;
            if let Some(&i) = position.get(id.as_str()) {
                out[i].model.aliases.insert(get(&r, "alias")?, get(&r, "version")?);
            }
        }
        Ok((out, more))
    }
}

/// Records in `experiment_keys` the param and metric keys a batch of `run_id` wrote (called by
/// `log_batch`, in its transaction). One statement per chunk of keys; known keys are left alone.
pub(crate) async fn record_column_keys(
    conn: &mut AnyConnection,
    run_id: &str,
    params: &[&str],
    metrics: &[&str],
) -> Result<(), Error> {
    /// Keys per statement (two bound values each), far under both engines' limits.
    const KEYS_PER_STATEMENT: usize = 250;
    let keys: Vec<(&str, &str)> =
        params.iter().map(|k| ("param", *k)).chain(metrics.iter().map(|k| ("metric", *k))).collect();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        // `VALUES` names its columns column1, column2 on both engines. The WHERE clause also
        // lets SQLite parse ON CONFLICT after INSERT … SELECT.
        let sql = format!(
            "INSERT INTO experiment_keys (experiment_id, kind, key) \
             SELECT r.experiment_id, k.column1, k.column2 FROM runs r, (VALUES {}) AS k WHERE r.id = $1 \
             ON CONFLICT (experiment_id, kind, key) DO NOTHING",
            (0..chunk.len())
                .map(|i| format!("({})", placeholders(2 + 2 * i, 2)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(&sql).bind(run_id);
        for (kind, key) in chunk {
            q = q.bind(*kind).bind(*key);
        }
        q.execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}
