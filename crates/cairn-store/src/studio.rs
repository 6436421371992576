//! Read queries only the studio's pages need: experiment summaries, the param and metric keys
//! of an experiment's runs (the runs table's columns), the statuses of a few runs (live
//! updates) and a page of the models list. Each costs a fixed number of queries, whatever the
//! number of runs, models or versions, so pages stay fast when those grow.
//!
//! The one write, [`record_column_keys`], keeps `experiment_keys` (an experiment's param and
//! metric keys) current from `log_batch`, which is what lets the column keys be read at once;
//! [`KnownKeys`] remembers which rows are already there, so most batches write none.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_core::api::Workspace;
use cairn_core::models::Model;
use cairn_core::runs::RunStatus;
use cairn_core::Error;
use sqlx::{AnyConnection, Row};

use crate::binds::{in_list, values_rows, Placeholders};
use crate::db::Backend;
use crate::db::{get, map_err};
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
        let mut p = Placeholders::new(self.backend());
        let sql = format!(
            "SELECT id, status, started_at, ended_at FROM runs WHERE workspace_id = {} AND id IN ({})",
            p.one(),
            p.list(ids.len())
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
        let list = in_list(self.backend(), ids.len());
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

/// The `experiment_keys` rows this process has committed, so that a batch whose keys are all
/// known (every batch of a run after its first, and most first batches of an experiment's runs)
/// writes no key row at all; and each run's experiment, which never changes.
///
/// It may only skip *redundant* inserts, never make a key go missing: an entry is added after the
/// transaction that inserted (or found) the row has committed, and a committed row is never
/// removed while its experiment exists (experiments are only soft-deleted; the row goes with the
/// experiment, whose id is never reused, so no run can log to it again). Another process or server
/// on the same database keeps its own set; its misses only cost an `INSERT … ON CONFLICT DO
/// NOTHING`. Past [`KnownKeys::MAX`] entries everything is forgotten and refilled by later batches.
#[derive(Debug, Default)]
pub(crate) struct KnownKeys {
    inner: std::sync::Mutex<KnownInner>,
}

#[derive(Debug, Default)]
struct KnownInner {
    /// experiment id → the param keys and the metric keys known to be stored.
    keys: HashMap<String, [HashSet<String>; 2]>,
    /// run id → experiment id.
    runs: HashMap<String, String>,
    len: usize,
}

/// Where a kind's keys are in [`KnownInner::keys`].
fn slot(kind: &str) -> usize {
    (kind != "param") as usize
}

impl KnownKeys {
    /// Most entries (keys and runs) kept: a few MB at most.
    const MAX: usize = 100_000;

    /// The experiment of `run_id`, if known.
    pub(crate) fn experiment_of(&self, run_id: &str) -> Option<String> {
        self.inner.lock().expect("known keys lock").runs.get(run_id).cloned()
    }

    /// The (kind, key) pairs of `keys` not known to be stored for `experiment`.
    pub(crate) fn missing<'a>(
        &self,
        experiment: &str,
        keys: Vec<(&'static str, &'a str)>,
    ) -> Vec<(&'static str, &'a str)> {
        let inner = self.inner.lock().expect("known keys lock");
        match inner.keys.get(experiment) {
            None => keys,
            Some(sets) => keys.into_iter().filter(|(kind, key)| !sets[slot(kind)].contains(*key)).collect(),
        }
    }

    /// Records that `run_id` is in `experiment` and that the rows of `keys` are committed.
    pub(crate) fn add(&self, run_id: &str, experiment: &str, keys: &[(&'static str, &str)]) {
        let mut inner = self.inner.lock().expect("known keys lock");
        if inner.len + keys.len() + 1 > Self::MAX {
            *inner = KnownInner::default();
        }
        let mut added = 0;
        if !inner.runs.contains_key(run_id) {
            inner.runs.insert(run_id.to_string(), experiment.to_string());
            added += 1;
        }
        if !keys.is_empty() {
            let sets = inner.keys.entry(experiment.to_string()).or_default();
            for (kind, key) in keys {
                added += sets[slot(kind)].insert((*key).to_string()) as usize;
            }
        }
        inner.len += added;
    }
}

/// The experiment of `run_id`, read inside the caller's transaction (`None` if there is no such run).
pub(crate) async fn experiment_of(conn: &mut AnyConnection, run_id: &str) -> Result<Option<String>, Error> {
    sqlx::query_scalar("SELECT experiment_id FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)
}

/// Records in `experiment_keys` (kind, key) pairs of `experiment` (called by `log_batch`, in its
/// transaction, with the pairs [`KnownKeys`] does not know). One statement per chunk of keys;
/// rows already there are left alone.
pub(crate) async fn record_column_keys(
    conn: &mut AnyConnection,
    backend: Backend,
    experiment: &str,
    keys: &[(&'static str, &str)],
) -> Result<(), Error> {
    /// Keys per statement (three bound values each), far under both engines' limits.
    const KEYS_PER_STATEMENT: usize = 250;
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO experiment_keys (experiment_id, kind, key) VALUES {} \
             ON CONFLICT (experiment_id, kind, key) DO NOTHING",
            values_rows(backend, chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for (kind, key) in chunk {
            q = q.bind(experiment).bind(*kind).bind(*key);
        }
        q.execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}
