//! Read queries only the studio's pages need: experiment summaries, the param and metric keys
//! of an experiment's runs (the runs table's columns), and the statuses of a few runs (live
//! updates). Each is one query, so pages stay fast with many runs.

use cairn_core::api::Workspace;
use cairn_core::runs::RunStatus;
use cairn_core::Error;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::map_err;
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

/// Most columns of each kind the runs table offers (keys beyond are still filterable).
pub const MAX_COLUMN_KEYS: i64 = 500;

fn get<T>(row: &AnyRow, col: &str) -> Result<T, Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(map_err)
}

impl Store {
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

    /// The param and metric keys of the live runs of `experiment` (all experiments when `None`).
    /// Reads `params` and `latest_metrics` (one row per run and key), never the metric history.
    pub async fn run_column_keys(
        &self,
        ws: &Workspace,
        experiment: Option<&str>,
    ) -> Result<RunColumnKeys, Error> {
        let mut keys = RunColumnKeys::default();
        for (table, out) in [("params", &mut keys.params), ("latest_metrics", &mut keys.metrics)] {
            let runs = match experiment {
                Some(_) => {
                    "SELECT r.id FROM runs r WHERE r.experiment_id = \
                     (SELECT id FROM experiments WHERE workspace_id = $1 AND name = $2) AND r.deleted_at IS NULL"
                }
                None => "SELECT r.id FROM runs r WHERE r.workspace_id = $1 AND r.deleted_at IS NULL",
            };
            let sql = format!(
                "SELECT DISTINCT x.key FROM {table} x WHERE x.run_id IN ({runs}) ORDER BY x.key LIMIT {MAX_COLUMN_KEYS}"
            );
            let mut q = sqlx::query(&sql).bind(&ws.id);
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
        let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id, status, started_at, ended_at FROM runs WHERE workspace_id = $1 AND id IN ({})",
            list.join(", ")
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
}
