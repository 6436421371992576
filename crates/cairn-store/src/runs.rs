//! Experiments, runs, their status transitions and their tracking data (metrics, params, tags).

use std::collections::{BTreeMap, HashMap};

use cairn_core::api::Workspace;
use cairn_core::runs::{Experiment, LogBatch, MetricPoint, Run, RunStatus, Transition};
use cairn_core::{now_ms, Error};
use sqlx::any::AnyRow;

use crate::binds::{in_list, values_rows, Placeholders};
use crate::db::{get, is_unique_violation, map_err, new_id, WriteTx};
use crate::Store;

/// A run to create.
pub struct NewRun<'a> {
    pub experiment_id: &'a str,
    pub display_name: &'a str,
    pub status: RunStatus,
    pub job: Option<&'a serde_json::Value>,
    pub compute: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub parent_id: Option<&'a str>,
    /// Who creates it (see `Run::created_by`).
    pub created_by: Option<&'a str>,
    pub tags: &'a BTreeMap<String, String>,
    /// When a running run started, if not now (MLflow clients backfilling or importing runs).
    pub started_at: Option<i64>,
}

/// What the scheduler needs of a queued or active run.
#[derive(Clone, Debug)]
pub struct RunRef {
    pub id: String,
    pub workspace_id: String,
    pub status: RunStatus,
    pub compute: Option<String>,
    pub pid: Option<i64>,
    pub created_at: i64,
    /// The server that claimed it (None: queued, or claimed before migration 0016).
    pub server_id: Option<String>,
}

fn status_of(row: &AnyRow) -> Result<RunStatus, Error> {
    let s: String = get(row, "status")?;
    RunStatus::parse(&s).ok_or_else(|| Error::internal(format!("unknown run status {s:?} in the database")))
}

fn nan_if_null(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn run_not_found(ws: &Workspace, id: &str) -> Error {
    Error::NotFound { kind: "run", name: format!("{id}\" in workspace \"{}", ws.name) }
}

/// A run's own columns (params, tags, metrics and transitions are loaded separately).
pub(crate) fn run_from_row(row: &AnyRow, workspace: &str) -> Result<Run, Error> {
    let job: String = get(row, "job")?;
    Ok(Run {
        id: get(row, "id")?,
        workspace: workspace.to_string(),
        experiment: get(row, "experiment")?,
        display_name: get(row, "display_name")?,
        status: status_of(row)?,
        parent_id: get(row, "parent_id")?,
        created_by: get(row, "created_by")?,
        compute: get(row, "compute")?,
        environment: get(row, "environment")?,
        error: get(row, "error")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        ended_at: get(row, "ended_at")?,
        params: BTreeMap::new(),
        tags: BTreeMap::new(),
        properties: BTreeMap::new(),
        metrics: BTreeMap::new(),
        transitions: Vec::new(),
        job: if job.is_empty() { None } else { serde_json::from_str(&job).ok() },
        server: None,
    })
}

/// Adds status `to`, reached at `at` (ms), to run `id`'s transitions.
async fn record_transition(tx: &mut WriteTx, id: &str, to: RunStatus, at: i64) -> Result<(), Error> {
    sqlx::query("INSERT INTO run_transitions (run_id, status, at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(to.as_str())
        .bind(at)
        .execute(&mut ***tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

impl Store {
    /// The experiment named `name`, created if it does not exist (as Azure ML and MLflow do).
    pub async fn ensure_experiment(&self, ws: &Workspace, name: &str) -> Result<(String, Experiment), Error> {
        if let Some(found) = self.find_experiment(ws, name).await? {
            return Ok(found);
        }
        let id = new_id();
        let created_at = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO experiments (id, workspace_id, name, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(&ws.id)
        .bind(name)
        .bind(created_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok((id, Experiment { name: name.into(), workspace: ws.name.clone(), created_at })),
            // Created concurrently by another request: use that one.
            Err(e) if is_unique_violation(&e) => {
                self.find_experiment(ws, name).await?.ok_or_else(|| Error::internal("experiment vanished"))
            }
            Err(e) => Err(map_err(e)),
        }
    }

    pub async fn find_experiment(
        &self,
        ws: &Workspace,
        name: &str,
    ) -> Result<Option<(String, Experiment)>, Error> {
        let row =
            sqlx::query("SELECT id, name, created_at FROM experiments WHERE workspace_id = $1 AND name = $2")
                .bind(&ws.id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        row.map(|r| {
            Ok((
                get(&r, "id")?,
                Experiment {
                    name: get(&r, "name")?,
                    workspace: ws.name.clone(),
                    created_at: get(&r, "created_at")?,
                },
            ))
        })
        .transpose()
    }

    pub async fn list_experiments(&self, ws: &Workspace) -> Result<Vec<Experiment>, Error> {
        let rows =
            sqlx::query("SELECT name, created_at FROM experiments WHERE workspace_id = $1 ORDER BY name")
                .bind(&ws.id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(Experiment {
                    name: get(r, "name")?,
                    workspace: ws.name.clone(),
                    created_at: get(r, "created_at")?,
                })
            })
            .collect()
    }

    pub async fn create_run(&self, ws: &Workspace, new: NewRun<'_>) -> Result<String, Error> {
        let id = new_id().replace('-', "");
        let now = now_ms();
        let job = new.job.map(|j| j.to_string()).unwrap_or_default();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO runs (id, workspace_id, experiment_id, parent_id, display_name, status, job, compute, \
             environment, created_at, started_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(&ws.id)
        .bind(new.experiment_id)
        .bind(new.parent_id)
        .bind(new.display_name)
        .bind(new.status.as_str())
        .bind(job)
        .bind(new.compute)
        .bind(new.environment)
        .bind(now)
        .bind(if new.status == RunStatus::Running { Some(new.started_at.unwrap_or(now)) } else { None })
        .bind(new.created_by)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        sqlx::query("INSERT INTO run_transitions (run_id, status, at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(new.status.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        for (k, v) in new.tags {
            sqlx::query("INSERT INTO run_tags (run_id, key, value) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(k)
                .bind(v)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    /// Moves a run to `to` if its status is one of `from` (all statuses when empty); records the
    /// transition and start/end times. Returns false when the run was not in an allowed status.
    pub async fn transition_run(
        &self,
        id: &str,
        from: &[RunStatus],
        to: RunStatus,
        error: Option<&str>,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT status FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_err)?
            .ok_or_else(|| Error::not_found("run", id))?;
        let current = status_of(&row)?;
        if current.is_terminal() || (!from.is_empty() && !from.contains(&current)) {
            return Ok(false);
        }
        let started = if to == RunStatus::Running { Some(now) } else { None };
        let ended = if to.is_terminal() { Some(now) } else { None };
        sqlx::query(
            "UPDATE runs SET status = $1, started_at = COALESCE(started_at, $2), ended_at = COALESCE($3, ended_at), \
             error = COALESCE($4, error) WHERE id = $5 AND status = $6",
        )
        .bind(to.as_str())
        .bind(started)
        .bind(ended)
        .bind(error)
        .bind(id)
        .bind(current.as_str())
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        record_transition(&mut tx, id, to, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    /// Sets the status of a run no job owns as MLflow's `UpdateRun` does, whatever it was: a
    /// terminal status ends it at `at` (ms), any other reopens it (no end), as
    /// `mlflow.start_run(run_id=…)` does to resume a finished run, or `set_terminated` to say how
    /// an ended run ended after all. Recorded among the run's transitions. Cairn's own runs (a
    /// job's) keep [`Store::transition_run`]'s rule: an ended run stays ended.
    pub async fn set_run_status(&self, id: &str, to: RunStatus, at: i64) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE runs SET status = $1, started_at = COALESCE(started_at, $2), ended_at = $3 WHERE id = $4",
        )
        .bind(to.as_str())
        .bind((to == RunStatus::Running).then_some(at))
        .bind(to.is_terminal().then_some(at))
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
        if changed.rows_affected() == 0 {
            return Err(Error::not_found("run", id));
        }
        record_transition(&mut tx, id, to, at).await?;
        tx.commit().await.map_err(map_err)
    }

    pub async fn set_run_pid(&self, id: &str, pid: Option<i64>) -> Result<(), Error> {
        sqlx::query("UPDATE runs SET pid = $1 WHERE id = $2")
            .bind(pid)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    pub async fn set_run_display_name(&self, id: &str, name: &str) -> Result<(), Error> {
        sqlx::query("UPDATE runs SET display_name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Runs in any of `statuses`, oldest first (the scheduler's queue and its recovery at start).
    pub async fn runs_in_status(&self, statuses: &[RunStatus]) -> Result<Vec<RunRef>, Error> {
        let sql = format!(
            "SELECT id, workspace_id, status, compute, pid, created_at, server_id FROM runs WHERE status IN ({}) \
             ORDER BY created_at, id",
            in_list(self.backend(), statuses.len())
        );
        let mut q = sqlx::query(&sql);
        for s in statuses {
            q = q.bind(s.as_str());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok(RunRef {
                    id: get(r, "id")?,
                    workspace_id: get(r, "workspace_id")?,
                    status: status_of(r)?,
                    compute: get(r, "compute")?,
                    pid: get(r, "pid")?,
                    created_at: get(r, "created_at")?,
                    server_id: get(r, "server_id")?,
                })
            })
            .collect()
    }

    /// The workspace a run belongs to (for the runner, which starts from a run id).
    pub async fn run_workspace(&self, id: &str) -> Result<Workspace, Error> {
        let row = sqlx::query(
            "SELECT w.id, w.name, w.description, w.created_at FROM runs r JOIN workspaces w ON w.id = r.workspace_id \
             WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .ok_or_else(|| Error::not_found("run", id))?;
        Ok(Workspace {
            id: get(&row, "id")?,
            name: get(&row, "name")?,
            description: get(&row, "description")?,
            created_at: get(&row, "created_at")?,
        })
    }

    /// The parent of run `id` (None for a top-level run or an unknown id): what decides whether a
    /// job's token may reach a child run the job created.
    pub async fn run_parent(&self, id: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT parent_id FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            Some(r) => get(&r, "parent_id"),
            None => Ok(None),
        }
    }

    /// A run's status and end time: what logging to it needs to know, in one indexed read.
    pub async fn run_status(&self, ws: &Workspace, id: &str) -> Result<(RunStatus, Option<i64>), Error> {
        let row = sqlx::query("SELECT status, ended_at FROM runs WHERE id = $1 AND workspace_id = $2")
            .bind(id)
            .bind(&ws.id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or_else(|| run_not_found(ws, id))?;
        Ok((status_of(&row)?, get(&row, "ended_at")?))
    }

    /// A run with its params, tags, latest metrics and transitions.
    pub async fn run(&self, ws: &Workspace, id: &str) -> Result<Run, Error> {
        let row = sqlx::query(
            "SELECT r.id, e.name AS experiment, r.parent_id, r.display_name, r.status, r.job, r.compute, r.environment, \
             r.error, r.created_at, r.started_at, r.ended_at, r.created_by FROM runs r JOIN experiments e ON e.id = r.experiment_id \
             WHERE r.id = $1 AND r.workspace_id = $2",
        )
        .bind(id)
        .bind(&ws.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .ok_or_else(|| run_not_found(ws, id))?;
        let mut run = run_from_row(&row, &ws.name)?;
        for (table, target) in [
            ("params", &mut run.params),
            ("run_tags", &mut run.tags),
            ("run_properties", &mut run.properties),
        ] {
            let rows = sqlx::query(&format!("SELECT key, value FROM {table} WHERE run_id = $1 ORDER BY key"))
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
            for r in rows {
                target.insert(get(&r, "key")?, get(&r, "value")?);
            }
        }
        let rows = sqlx::query("SELECT key, value, step, timestamp FROM latest_metrics WHERE run_id = $1")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        for r in rows {
            run.metrics.insert(
                get(&r, "key")?,
                MetricPoint {
                    value: nan_if_null(get(&r, "value")?),
                    step: get(&r, "step")?,
                    timestamp: get(&r, "timestamp")?,
                },
            );
        }
        let rows = sqlx::query("SELECT status, at FROM run_transitions WHERE run_id = $1 ORDER BY at")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        for r in rows {
            run.transitions.push(Transition { status: status_of(&r)?, at: get(&r, "at")? });
        }
        run.server = self.run_server(id).await?;
        Ok(run)
    }

    /// Runs of a workspace (optionally of one experiment, or the children of one run), newest first.
    pub async fn list_runs(
        &self,
        ws: &Workspace,
        experiment: Option<&str>,
        parent: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Run>, Error> {
        let rows = sqlx::query(
            "SELECT r.id FROM runs r JOIN experiments e ON e.id = r.experiment_id \
             WHERE r.workspace_id = $1 AND r.deleted_at IS NULL AND ($2 = '' OR e.name = $2) \
             AND ($3 = '' OR r.parent_id = $3) ORDER BY r.created_at DESC, r.id DESC LIMIT $4",
        )
        .bind(&ws.id)
        .bind(experiment.unwrap_or(""))
        .bind(parent.unwrap_or(""))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let ids: Vec<String> = rows.iter().map(|r| get(r, "id")).collect::<Result<_, _>>()?;
        self.runs_by_ids(ws, &ids).await
    }

    /// Appends metrics, sets params (immutable once set) and tags, in one transaction.
    ///
    /// A batch costs a handful of statements whatever its size: multi-row inserts (chunked under
    /// the engines' bind limits), one read of the params it names, and one `latest_metrics`
    /// upsert row per key. Statement count, not row count, dominated ingestion time.
    pub async fn log_batch(&self, run_id: &str, batch: &LogBatch) -> Result<(), Error> {
        self.log_batch_with_model_metrics(run_id, batch, &[]).await
    }

    /// `log_batch`, plus points of logged models (MLflow metrics sent with a `model_id`) written in
    /// the same transaction. The caller has checked that the models exist in the run's workspace.
    pub async fn log_batch_with_model_metrics(
        &self,
        run_id: &str,
        batch: &LogBatch,
        model_metrics: &[crate::ModelMetric],
    ) -> Result<(), Error> {
        let now = now_ms();
        let backend = self.backend();
        let params = new_params(run_id, batch)?;
        let mut tx = self.begin_write().await?;
        let mut fresh: Vec<(&str, &str)> = Vec::with_capacity(params.len());
        for chunk in params.chunks(ROWS_PER_STATEMENT) {
            let mut p = Placeholders::new(backend);
            let sql = format!(
                "SELECT key, value FROM params WHERE run_id = {} AND key IN ({})",
                p.one(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(run_id);
            for (k, _) in chunk {
                q = q.bind(*k);
            }
            let existing: BTreeMap<String, String> = q
                .fetch_all(&mut **tx)
                .await
                .map_err(map_err)?
                .iter()
                .map(|r| Ok((get(r, "key")?, get(r, "value")?)))
                .collect::<Result<_, Error>>()?;
            for &(key, value) in chunk {
                match existing.get(key) {
                    Some(old) if old != value => return Err(param_changed(run_id, key, old)),
                    Some(_) => {}
                    None => fresh.push((key, value)),
                }
            }
        }
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO params (run_id, key, value) VALUES {}",
                values_rows(backend, chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for (k, v) in chunk {
                q = q.bind(run_id).bind(*k).bind(*v);
            }
            q.execute(&mut **tx).await.map_err(map_err)?;
        }
        // The last value given for a tag wins; PostgreSQL refuses to upsert one key twice in a statement.
        let tags: BTreeMap<&str, &str> =
            batch.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect();
        let tags: Vec<(&str, &str)> = tags.into_iter().collect();
        for chunk in tags.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO run_tags (run_id, key, value) VALUES {} \
                 ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                values_rows(backend, chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for (k, v) in chunk {
                q = q.bind(run_id).bind(*k).bind(*v);
            }
            q.execute(&mut **tx).await.map_err(map_err)?;
        }
        let points: Vec<(&str, MetricPoint)> = batch
            .metrics
            .iter()
            .map(|m| {
                let point = MetricPoint {
                    value: m.value,
                    step: m.step.unwrap_or(0),
                    timestamp: m.timestamp.unwrap_or(now),
                };
                (m.key.as_str(), point)
            })
            .collect();
        // Values are bound as floats even when NaN: PostgreSQL stores NaN as such, SQLite stores it
        // as NULL (read back as NaN). Binding a NULL instead breaks PostgreSQL's binary protocol.
        // A point already stored (a retried batch) is not inserted again (migration 0018's unique
        // index); only the points inserted count in the tiles and may become the latest value.
        // Which ones were inserted is asked of the database (RETURNING) only when some were not:
        // sqlx hands every returned row from SQLite's worker thread to ours, which costs more than
        // the insert, so the usual batch of new points is inserted under a savepoint, counted, and
        // inserted again with RETURNING only if the count falls short.
        let insert = |returning: bool, chunk: &[(&str, MetricPoint)]| {
            format!(
                "INSERT INTO metrics (run_id, key, value, step, timestamp) VALUES {} ON CONFLICT DO NOTHING{}",
                values_rows(backend, chunk.len(), 5),
                if returning { " RETURNING key, value, step, timestamp" } else { "" }
            )
        };
        fn bind<'q>(
            sql: &'q str,
            run_id: &'q str,
            chunk: &'q [(&'q str, MetricPoint)],
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
            let mut q = sqlx::query(sql);
            for (k, p) in chunk {
                q = q.bind(run_id).bind(*k).bind(p.value).bind(p.step).bind(p.timestamp);
            }
            q
        }
        sqlx::query("SAVEPOINT new_points").execute(&mut **tx).await.map_err(map_err)?;
        let mut inserted_all = 0u64;
        for chunk in points.chunks(ROWS_PER_STATEMENT) {
            let sql = insert(false, chunk);
            inserted_all +=
                bind(&sql, run_id, chunk).execute(&mut **tx).await.map_err(map_err)?.rows_affected();
        }
        let mut returned: Vec<AnyRow> = Vec::new();
        if inserted_all < points.len() as u64 {
            sqlx::query("ROLLBACK TO SAVEPOINT new_points").execute(&mut **tx).await.map_err(map_err)?;
            for chunk in points.chunks(ROWS_PER_STATEMENT) {
                let sql = insert(true, chunk);
                returned.extend(bind(&sql, run_id, chunk).fetch_all(&mut **tx).await.map_err(map_err)?);
            }
        }
        sqlx::query("RELEASE SAVEPOINT new_points").execute(&mut **tx).await.map_err(map_err)?;
        // RETURNING's order is unspecified, and "the last one logged wins" ties on latest_metrics
        // need the batch's order: the batch's points are kept in order, each as often as inserted.
        let mut points = points;
        if inserted_all < points.len() as u64 {
            let mut inserted: HashMap<(String, i64, i64, u64), usize> = HashMap::new();
            for r in &returned {
                let value = value_identity(nan_if_null(get(r, "value")?));
                *inserted
                    .entry((get(r, "key")?, get(r, "step")?, get(r, "timestamp")?, value))
                    .or_default() += 1;
            }
            points.retain(|(k, p)| {
                let id = (k.to_string(), p.step, p.timestamp, value_identity(p.value));
                match inserted.get_mut(&id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                }
            });
        }
        crate::series::add_to_tiles(&mut tx, backend, run_id, &points).await?;
        crate::logged_models::insert_model_metrics(&mut tx, backend, model_metrics).await?;
        let latest: Vec<(&str, MetricPoint)> = latest_per_key(&points).into_iter().collect();
        for chunk in latest.chunks(ROWS_PER_STATEMENT) {
            // The latest value is the one with the highest step, then the latest timestamp; on a tie
            // the value logged last wins.
            let sql = format!(
                "INSERT INTO latest_metrics (run_id, key, value, step, timestamp) VALUES {} \
                 ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, step = excluded.step, \
                 timestamp = excluded.timestamp WHERE latest_metrics.step < excluded.step \
                 OR (latest_metrics.step = excluded.step AND latest_metrics.timestamp <= excluded.timestamp)",
                values_rows(backend, chunk.len(), 5)
            );
            let mut q = sqlx::query(&sql);
            for (k, p) in chunk {
                q = q.bind(run_id).bind(*k).bind(p.value).bind(p.step).bind(p.timestamp);
            }
            q.execute(&mut **tx).await.map_err(map_err)?;
        }
        // The experiment's column keys: only those this process has not seen committed are written.
        let keys: Vec<(&'static str, &str)> = fresh
            .iter()
            .map(|(k, _)| ("param", *k))
            .chain(latest.iter().map(|(k, _)| ("metric", *k)))
            .collect();
        let mut recorded = None;
        if !keys.is_empty() {
            let experiment = match self.known_keys.experiment_of(run_id) {
                Some(e) => Some(e),
                None => crate::studio::experiment_of(&mut tx, run_id).await?,
            };
            if let Some(experiment) = experiment {
                let missing = self.known_keys.missing(&experiment, keys);
                crate::studio::record_column_keys(&mut tx, backend, &experiment, &missing).await?;
                recorded = Some((experiment, missing));
            }
        }
        tx.commit().await.map_err(map_err)?;
        if let Some((experiment, keys)) = recorded {
            self.known_keys.add(run_id, &experiment, &keys);
        }
        Ok(())
    }

    /// Adds properties to a run in one transaction: a key already set must keep its value
    /// (409 naming it, and nothing is written); the same value again is accepted, so retries are safe.
    pub async fn add_run_properties(
        &self,
        run_id: &str,
        props: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let backend = self.backend();
        let mut tx = self.begin_write().await?;
        let mut fresh: Vec<(&str, &str)> = Vec::new();
        let props: Vec<(&String, &String)> = props.iter().collect();
        for chunk in props.chunks(ROWS_PER_STATEMENT) {
            let mut p = Placeholders::new(backend);
            let sql = format!(
                "SELECT key, value FROM run_properties WHERE run_id = {} AND key IN ({})",
                p.one(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(run_id);
            for (k, _) in chunk {
                q = q.bind(k.as_str());
            }
            let existing: BTreeMap<String, String> = q
                .fetch_all(&mut **tx)
                .await
                .map_err(map_err)?
                .iter()
                .map(|r| Ok((get(r, "key")?, get(r, "value")?)))
                .collect::<Result<_, Error>>()?;
            for (key, value) in chunk {
                match existing.get(key.as_str()) {
                    Some(old) if old != *value => {
                        return Err(Error::conflict(format!(
                            "property \"{key}\" of run {run_id} is already {old:?}; properties cannot change \
                             (use a tag for a value that changes)"
                        )))
                    }
                    Some(_) => {}
                    None => fresh.push((key.as_str(), value.as_str())),
                }
            }
        }
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO run_properties (run_id, key, value) VALUES {}",
                values_rows(backend, chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for (k, v) in chunk {
                q = q.bind(run_id).bind(*k).bind(*v);
            }
            q.execute(&mut **tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// Every metric series of a run, in step order.
    pub async fn run_metrics(&self, run_id: &str) -> Result<BTreeMap<String, Vec<MetricPoint>>, Error> {
        let rows = sqlx::query(
            "SELECT key, value, step, timestamp FROM metrics WHERE run_id = $1 ORDER BY key, step, timestamp",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut out: BTreeMap<String, Vec<MetricPoint>> = BTreeMap::new();
        for r in rows {
            out.entry(get(&r, "key")?).or_default().push(MetricPoint {
                value: nan_if_null(get(&r, "value")?),
                step: get(&r, "step")?,
                timestamp: get(&r, "timestamp")?,
            });
        }
        Ok(out)
    }

    /// One page of a run's series `key` in MLflow's `get-history` order: by timestamp, then step,
    /// then value (a NaN as 0, where MLflow keeps it). Skips `offset` points and returns at most
    /// `limit` (all without one), and whether more follow.
    pub async fn metric_history_page(
        &self,
        run_id: &str,
        key: &str,
        offset: i64,
        limit: Option<i64>,
    ) -> Result<(Vec<MetricPoint>, bool), Error> {
        // One more than asked tells whether another page follows. Without a limit, the
        // largest one both backends take (neither has a portable "no limit" before OFFSET).
        let rows = sqlx::query(&format!(
            "SELECT value, step, timestamp FROM metrics WHERE run_id = $1 AND key = $2 \
             ORDER BY timestamp, step, CASE WHEN {} THEN 0 ELSE value END LIMIT $3 OFFSET $4",
            crate::search::is_nan("value")
        ))
        .bind(run_id)
        .bind(key)
        .bind(limit.map_or(i64::MAX, |n| n.saturating_add(1)))
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut points = rows
            .iter()
            .map(|r| {
                Ok(MetricPoint {
                    value: nan_if_null(get(r, "value")?),
                    step: get(r, "step")?,
                    timestamp: get(r, "timestamp")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let more = limit.is_some_and(|n| points.len() as i64 > n);
        if let Some(n) = limit {
            points.truncate(n as usize);
        }
        Ok((points, more))
    }
}

/// Rows per multi-row statement (and keys per IN list): at most 5 × 250 = 1250 bound values,
/// far under SQLite's (32,766) and PostgreSQL's (65,535) limits. Each connection caches a prepared
/// statement per row count it meets, so much bigger statements would cost memory more than they save.
pub(crate) const ROWS_PER_STATEMENT: usize = 250;

/// The batch's params, each key once. A key given twice with different values is refused, as it
/// would be if the two came in separate batches.
fn new_params<'a>(run_id: &str, batch: &'a LogBatch) -> Result<Vec<(&'a str, &'a str)>, Error> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for p in &batch.params {
        match seen.get(p.key.as_str()) {
            Some(old) if *old != p.value => return Err(param_changed(run_id, &p.key, old)),
            Some(_) => {}
            None => {
                seen.insert(&p.key, &p.value);
            }
        }
    }
    // Keep the batch's order so that errors and inserts are deterministic.
    let mut out = Vec::with_capacity(seen.len());
    for p in &batch.params {
        if seen.remove(p.key.as_str()).is_some() {
            out.push((p.key.as_str(), p.value.as_str()));
        }
    }
    Ok(out)
}

fn param_changed(run_id: &str, key: &str, old: &str) -> Error {
    Error::invalid(format!(
        "param \"{key}\" is already {old:?} in run {run_id}; params cannot change (log a new run, or use a tag)"
    ))
}

/// Each key's latest point in the batch: the highest step, then the latest timestamp, and of equal
/// ones the last logged — what applying the points one by one would leave.
/// A metric value as the unique index on points compares it: every NaN alike (NULL in SQLite),
/// and -0.0 the same as 0.0.
fn value_identity(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

fn latest_per_key<'a>(points: &[(&'a str, MetricPoint)]) -> BTreeMap<&'a str, MetricPoint> {
    let mut latest: BTreeMap<&str, MetricPoint> = BTreeMap::new();
    for (key, p) in points {
        match latest.get(key) {
            Some(cur) if (cur.step, cur.timestamp) > (p.step, p.timestamp) => {}
            _ => {
                latest.insert(key, p.clone());
            }
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(value: f64, step: i64, timestamp: i64) -> MetricPoint {
        MetricPoint { value, step, timestamp }
    }

    #[test]
    fn the_latest_point_is_the_highest_step_then_timestamp_then_the_last_logged() {
        let points = vec![
            ("a", point(1.0, 5, 10)),
            ("a", point(2.0, 7, 1)),
            ("a", point(3.0, 6, 99)),
            ("b", point(4.0, 1, 5)),
            ("b", point(5.0, 1, 5)),
            ("b", point(6.0, 1, 4)),
        ];
        let latest = latest_per_key(&points);
        assert_eq!(latest["a"].value, 2.0);
        assert_eq!(latest["b"].value, 5.0, "of equal step and timestamp, the last logged wins");
    }

    #[test]
    fn a_param_given_twice_in_a_batch_must_keep_its_value() {
        let kv = |k: &str, v: &str| cairn_core::runs::KeyValue { key: k.into(), value: v.into() };
        let batch = LogBatch { params: vec![kv("a", "1"), kv("b", "2"), kv("a", "1")], ..Default::default() };
        assert_eq!(new_params("r", &batch).unwrap(), vec![("a", "1"), ("b", "2")]);
        let batch = LogBatch { params: vec![kv("a", "1"), kv("a", "2")], ..Default::default() };
        let err = new_params("r", &batch).unwrap_err().to_string();
        assert!(err.contains("param \"a\" is already \"1\""), "{err}");
    }
}
