//! MLflow 3's traces: a trace's info (ids, times, state, previews), its tags (mutable), its
//! request metadata (set once) and, for traces that came over OTLP, their spans. The spans of
//! other traces are their `traces.json` artifact, which the client uploads and downloads itself.

use std::collections::{BTreeMap, HashMap};

use cairn_core::api::Workspace;
use cairn_core::Error;
use sqlx::any::AnyRow;

use crate::binds::Placeholders;
use crate::db::{get, map_err, WriteTx};
use crate::runs::ROWS_PER_STATEMENT;
use crate::Store;

/// The metadata key naming the run a trace was logged in (MLflow's).
pub const SOURCE_RUN: &str = "mlflow.sourceRun";

/// The tag saying where a trace's spans are (MLflow's), and its value for spans kept here.
pub const SPANS_LOCATION: &str = "mlflow.trace.spansLocation";
pub const SPANS_IN_STORE: &str = "TRACKING_STORE";

/// One span of a trace, as it came over OTLP.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanRecord {
    /// 16 lowercase hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `mlflow.spanType`, when the span has one.
    pub span_type: Option<String>,
    /// `OK`, `ERROR` or `UNSET`.
    pub status: String,
    pub start_ns: i64,
    pub end_ns: Option<i64>,
    /// The span as MLflow's `Span.to_dict` writes it (JSON).
    pub content: String,
}

/// What one OTLP call brings for one trace: the info to create it with if it is not there yet
/// (and the tags and metadata to add where it has none of theirs), whether those spans hold its
/// root (whose times and state then become the trace's while it is in progress), and the spans.
#[derive(Clone, Debug, Default)]
pub struct TraceSpans {
    pub trace: TraceRecord,
    pub has_root: bool,
    pub spans: Vec<SpanRecord>,
}

/// A trace's info, as MLflow's `TraceInfoV3` holds it (times in ms).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceRecord {
    /// The client's id (`tr-` and 32 hex digits for a trace of the stock client).
    pub id: String,
    pub experiment_id: String,
    pub client_request_id: Option<String>,
    pub request_time: i64,
    /// None while the trace is in progress.
    pub execution_duration: Option<i64>,
    /// `OK`, `ERROR` or `IN_PROGRESS`.
    pub state: String,
    pub request_preview: Option<String>,
    pub response_preview: Option<String>,
    /// The assessments that came with the trace, as the JSON list the client sent.
    pub assessments_json: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    /// Runs the trace was linked to after it was logged (not the run it was logged in).
    pub linked_runs: Vec<String>,
}

const COLUMNS: &str = "id, experiment_id, client_request_id, request_time, execution_duration, state, \
                       request_preview, response_preview, assessments_json";

fn trace_of(r: &AnyRow) -> Result<TraceRecord, Error> {
    Ok(TraceRecord {
        id: get(r, "id")?,
        experiment_id: get(r, "experiment_id")?,
        client_request_id: get(r, "client_request_id")?,
        request_time: get(r, "request_time")?,
        execution_duration: get(r, "execution_duration")?,
        state: get(r, "state")?,
        request_preview: get(r, "request_preview")?,
        response_preview: get(r, "response_preview")?,
        assessments_json: get(r, "assessments_json")?,
        tags: BTreeMap::new(),
        metadata: BTreeMap::new(),
        linked_runs: Vec::new(),
    })
}

/// Inserts trace `t` of `ws`, or, if it is there, updates it with `on_conflict` (an `UPDATE SET`
/// list that may use `excluded.*` and `$12`, bound to `extra`). Returns the experiment the
/// trace's row is in, which an update never changes.
async fn upsert_trace_row(
    tx: &mut WriteTx,
    ws: &Workspace,
    t: &TraceRecord,
    on_conflict: &str,
    extra: Option<i64>,
) -> Result<String, Error> {
    let sql = format!(
        "INSERT INTO traces (workspace_id, {COLUMNS}, source_run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (workspace_id, id) DO UPDATE SET {on_conflict} RETURNING experiment_id"
    );
    let mut q = sqlx::query(&sql)
        .bind(&ws.id)
        .bind(&t.id)
        .bind(&t.experiment_id)
        .bind(&t.client_request_id)
        .bind(t.request_time)
        .bind(t.execution_duration)
        .bind(&t.state)
        .bind(&t.request_preview)
        .bind(&t.response_preview)
        .bind(&t.assessments_json)
        .bind(t.metadata.get(SOURCE_RUN).map(String::as_str));
    if let Some(extra) = extra {
        q = q.bind(extra);
    }
    let row = q.fetch_one(&mut ***tx).await.map_err(map_err)?;
    get(&row, "experiment_id")
}

impl Store {
    /// Records a trace of `ws`. A trace already there with this id (a client's retry of a call
    /// whose answer it lost, or a trace logged again) takes the new info, and the new tags and
    /// metadata are added to its own (and its assessments kept unless new ones came): nothing it
    /// had is lost. The caller checks that the experiment is the trace's.
    pub async fn put_trace(&self, ws: &Workspace, t: &TraceRecord) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        upsert_trace_row(
            &mut tx,
            ws,
            t,
            "client_request_id = excluded.client_request_id, request_time = excluded.request_time, \
             execution_duration = excluded.execution_duration, state = excluded.state, \
             request_preview = excluded.request_preview, response_preview = excluded.response_preview, \
             assessments_json = COALESCE(excluded.assessments_json, traces.assessments_json), \
             source_run_id = COALESCE(excluded.source_run_id, traces.source_run_id)",
            None,
        )
        .await?;
        self.add_entries(&mut tx, ws, t, "DO UPDATE SET value = excluded.value").await?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// Adds `t`'s tags and metadata to those its trace has; `conflict` says what a key it
    /// already has gets (`DO NOTHING`, or `DO UPDATE SET value = excluded.value`).
    async fn add_entries(
        &self,
        tx: &mut WriteTx,
        ws: &Workspace,
        t: &TraceRecord,
        conflict: &str,
    ) -> Result<(), Error> {
        for (table, items) in [("trace_tags", &t.tags), ("trace_metadata", &t.metadata)] {
            let items: Vec<(&String, &String)> = items.iter().collect();
            for chunk in items.chunks(ROWS_PER_STATEMENT) {
                let mut p = Placeholders::new(self.backend());
                let sql = format!(
                    "INSERT INTO {table} (workspace_id, trace_id, key, value) VALUES {} \
                     ON CONFLICT (workspace_id, trace_id, key) {conflict}",
                    p.rows(chunk.len(), 4)
                );
                let mut q = sqlx::query(&sql);
                for (k, v) in chunk {
                    q = q.bind(&ws.id).bind(&t.id).bind(*k).bind(*v);
                }
                q.execute(&mut ***tx).await.map_err(map_err)?;
            }
        }
        Ok(())
    }

    /// Traces of `ws`: those with the given ids (all when None) in the given experiments (all
    /// when empty), newest first, with their tags and metadata.
    pub async fn traces(
        &self,
        ws: &Workspace,
        ids: Option<&[String]>,
        experiment_ids: &[String],
    ) -> Result<Vec<TraceRecord>, Error> {
        let mut out = Vec::new();
        match ids {
            // Ids come from a client: in chunks, so that no statement has too many values.
            Some(ids) => {
                for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                    out.extend(self.traces_where(ws, Some(chunk), experiment_ids).await?);
                }
                out.sort_by(|a, b| b.request_time.cmp(&a.request_time).then_with(|| a.id.cmp(&b.id)));
            }
            None => out = self.traces_where(ws, None, experiment_ids).await?,
        }
        Ok(out)
    }

    async fn traces_where(
        &self,
        ws: &Workspace,
        ids: Option<&[String]>,
        experiment_ids: &[String],
    ) -> Result<Vec<TraceRecord>, Error> {
        let mut p = Placeholders::new(self.backend());
        let mut sql = format!("SELECT {COLUMNS} FROM traces WHERE workspace_id = {}", p.one());
        let mut binds: Vec<&str> = vec![&ws.id];
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(&format!(" AND id IN ({})", p.list(ids.len())));
            binds.extend(ids.iter().map(String::as_str));
        }
        if !experiment_ids.is_empty() {
            sql.push_str(&format!(" AND experiment_id IN ({})", p.list(experiment_ids.len())));
            binds.extend(experiment_ids.iter().map(String::as_str));
        }
        sql.push_str(" ORDER BY request_time DESC, id");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(map_err)?;
        let mut out: Vec<TraceRecord> = rows.iter().map(trace_of).collect::<Result<_, _>>()?;
        // Tags and metadata of the whole page in two queries per chunk, not two per trace.
        let index: HashMap<String, usize> = out.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
        let found: Vec<String> = out.iter().map(|t| t.id.clone()).collect();
        for chunk in found.chunks(ROWS_PER_STATEMENT) {
            for table in ["trace_tags", "trace_metadata"] {
                for r in self
                    .rows_of_traces(ws, &format!("SELECT trace_id, key, value FROM {table}"), chunk, "")
                    .await?
                {
                    let t = &mut out[index[&get::<String>(&r, "trace_id")?]];
                    let into = if table == "trace_tags" { &mut t.tags } else { &mut t.metadata };
                    into.insert(get(&r, "key")?, get(&r, "value")?);
                }
            }
            let select = "SELECT trace_id, run_id FROM trace_run_links";
            for r in self.rows_of_traces(ws, select, chunk, " ORDER BY trace_id, run_id").await? {
                out[index[&get::<String>(&r, "trace_id")?]].linked_runs.push(get(&r, "run_id")?);
            }
        }
        Ok(out)
    }

    /// The rows of `select` (a `SELECT … FROM table` whose table has `workspace_id` and
    /// `trace_id`) for traces `ids` of `ws`, then `tail` (an ORDER BY).
    async fn rows_of_traces(
        &self,
        ws: &Workspace,
        select: &str,
        ids: &[String],
        tail: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        let mut p = Placeholders::new(self.backend());
        let sql = format!(
            "{select} WHERE workspace_id = {} AND trace_id IN ({}){tail}",
            p.one(),
            p.list(ids.len())
        );
        let mut q = sqlx::query(&sql).bind(&ws.id);
        for id in ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool).await.map_err(map_err)
    }

    /// The traces logged in, or linked to, run `run_id` of `ws`, newest first, at most `limit`.
    pub async fn traces_of_run(
        &self,
        ws: &Workspace,
        run_id: &str,
        limit: i64,
    ) -> Result<Vec<TraceRecord>, Error> {
        let rows = sqlx::query(
            "SELECT id FROM traces t WHERE workspace_id = $1 AND (source_run_id = $2 OR EXISTS \
             (SELECT 1 FROM trace_run_links l WHERE l.workspace_id = $1 AND l.trace_id = t.id AND l.run_id = $2)) \
             ORDER BY request_time DESC, id LIMIT $3",
        )
        .bind(&ws.id)
        .bind(run_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let ids: Vec<String> = rows.iter().map(|r| get(r, "id")).collect::<Result<_, _>>()?;
        self.traces(ws, Some(&ids), &[]).await
    }

    /// The ids of experiment `experiment_id`'s traces that started at or before `max_time` (ms),
    /// oldest first, at most `limit` of them (all when None).
    pub async fn trace_ids_before(
        &self,
        ws: &Workspace,
        experiment_id: &str,
        max_time: i64,
        limit: Option<i64>,
    ) -> Result<Vec<String>, Error> {
        let rows = sqlx::query(
            "SELECT id FROM traces WHERE workspace_id = $1 AND experiment_id = $2 AND request_time <= $3 \
             ORDER BY request_time, id LIMIT $4",
        )
        .bind(&ws.id)
        .bind(experiment_id)
        .bind(max_time)
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(|r| get(r, "id")).collect()
    }

    /// One trace of `ws`; `NotFound` otherwise.
    pub async fn trace(&self, ws: &Workspace, id: &str) -> Result<TraceRecord, Error> {
        self.traces_where(ws, Some(&[id.to_string()]), &[])
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("trace", id))
    }

    /// Changes the assessments of trace `id` of `ws` as one step: `change` gets the stored JSON
    /// list (None when the trace has none) and returns the new one (None: leave it as it was)
    /// and what the caller wants back. The trace's row is locked meanwhile (PostgreSQL `FOR UPDATE`; SQLite's one writer),
    /// so concurrent changes never lose one another's. `NotFound` if there is no such trace.
    pub async fn change_trace_assessments<R>(
        &self,
        ws: &Workspace,
        id: &str,
        change: impl FnOnce(Option<&str>) -> Result<(Option<String>, R), Error>,
    ) -> Result<R, Error> {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend() {
            crate::Backend::Postgres => " FOR UPDATE",
            crate::Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT assessments_json FROM traces WHERE workspace_id = $1 AND id = $2{lock}"
        ))
        .bind(&ws.id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?
        .ok_or_else(|| Error::not_found("trace", id))?;
        let old: Option<String> = get(&row, "assessments_json")?;
        let (new, out) = change(old.as_deref())?;
        if let Some(new) = new {
            sqlx::query("UPDATE traces SET assessments_json = $1 WHERE workspace_id = $2 AND id = $3")
                .bind(new)
                .bind(&ws.id)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    /// Links traces of `ws` to run `run_id` (a link already there stays as it is).
    pub async fn link_traces_to_run(
        &self,
        ws: &Workspace,
        ids: &[String],
        run_id: &str,
    ) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut p = Placeholders::new(self.backend());
            let sql = format!(
                "INSERT INTO trace_run_links (workspace_id, trace_id, run_id) VALUES {} ON CONFLICT DO NOTHING",
                p.rows(chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(&ws.id).bind(id).bind(run_id);
            }
            q.execute(&mut **tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// Sets (overwrites) a tag of a trace that exists.
    pub async fn set_trace_tag(&self, ws: &Workspace, id: &str, key: &str, value: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO trace_tags (workspace_id, trace_id, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id, trace_id, key) DO UPDATE SET value = $4",
        )
        .bind(&ws.id)
        .bind(id)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    /// Removes a trace's tag; false if it had none with that key.
    pub async fn delete_trace_tag(&self, ws: &Workspace, id: &str, key: &str) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM trace_tags WHERE workspace_id = $1 AND trace_id = $2 AND key = $3")
            .bind(&ws.id)
            .bind(id)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(r.rows_affected() > 0)
    }

    /// Deletes traces of `ws` (their tags and metadata with them); returns how many there were.
    pub async fn delete_traces(&self, ws: &Workspace, ids: &[String]) -> Result<u64, Error> {
        let mut tx = self.begin_write().await?;
        let mut deleted = 0;
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut p = Placeholders::new(self.backend());
            let sql = format!(
                "DELETE FROM traces WHERE workspace_id = {} AND id IN ({})",
                p.one(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(&ws.id);
            for id in chunk {
                q = q.bind(id);
            }
            deleted += q.execute(&mut **tx).await.map_err(map_err)?.rows_affected();
        }
        tx.commit().await.map_err(map_err)?;
        Ok(deleted)
    }

    /// Records spans of `ws` that came over OTLP, as one transaction: each trace not there yet
    /// is created in progress from `TraceSpans::trace`; one that is there keeps its info, takes
    /// the earliest start, and, while still in progress, its root span's duration and state;
    /// its tags and metadata gain the keys it lacks, and `mlflow.trace.spansLocation` says its
    /// spans are here. A span sent again replaces the old one. A trace already in another
    /// experiment than the one its spans name fails the whole call (nothing is written).
    pub async fn log_spans(&self, ws: &Workspace, batch: &[TraceSpans]) -> Result<(), Error> {
        let mut tx = self.begin_write().await?;
        for ts in batch {
            let t = &ts.trace;
            let experiment = upsert_trace_row(
                &mut tx,
                ws,
                t,
                "request_time = CASE WHEN excluded.request_time < traces.request_time \
                   THEN excluded.request_time ELSE traces.request_time END, \
                 execution_duration = CASE WHEN traces.state = 'IN_PROGRESS' AND $12 = 1 \
                   THEN excluded.execution_duration ELSE traces.execution_duration END, \
                 state = CASE WHEN traces.state = 'IN_PROGRESS' AND $12 = 1 \
                   THEN excluded.state ELSE traces.state END, \
                 request_preview = COALESCE(traces.request_preview, excluded.request_preview), \
                 response_preview = COALESCE(traces.response_preview, excluded.response_preview)",
                Some(i64::from(ts.has_root)),
            )
            .await?;
            if experiment != t.experiment_id {
                return Err(Error::invalid(format!(
                    "trace {} is in experiment {experiment}, not in {}: its spans cannot be logged to another",
                    t.id, t.experiment_id
                )));
            }
            self.add_entries(&mut tx, ws, t, "DO NOTHING").await?;
            sqlx::query(
                "INSERT INTO trace_tags (workspace_id, trace_id, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (workspace_id, trace_id, key) DO UPDATE SET value = $4",
            )
            .bind(&ws.id)
            .bind(&t.id)
            .bind(SPANS_LOCATION)
            .bind(SPANS_IN_STORE)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
            for chunk in ts.spans.chunks(ROWS_PER_STATEMENT / 2) {
                let mut p = Placeholders::new(self.backend());
                let sql = format!(
                    "INSERT INTO trace_spans (workspace_id, trace_id, span_id, parent_span_id, name, span_type, \
                     status, start_ns, end_ns, content) VALUES {} \
                     ON CONFLICT (workspace_id, trace_id, span_id) DO UPDATE SET \
                     parent_span_id = excluded.parent_span_id, name = excluded.name, \
                     span_type = excluded.span_type, status = excluded.status, start_ns = excluded.start_ns, \
                     end_ns = excluded.end_ns, content = excluded.content",
                    p.rows(chunk.len(), 10)
                );
                let mut q = sqlx::query(&sql);
                for sp in chunk {
                    q = q
                        .bind(&ws.id)
                        .bind(&t.id)
                        .bind(&sp.span_id)
                        .bind(&sp.parent_span_id)
                        .bind(&sp.name)
                        .bind(&sp.span_type)
                        .bind(&sp.status)
                        .bind(sp.start_ns)
                        .bind(sp.end_ns)
                        .bind(&sp.content);
                }
                q.execute(&mut **tx).await.map_err(map_err)?;
            }
        }
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    /// The spans kept here of traces `ids` of `ws`, by trace, each trace's in start order.
    pub async fn trace_spans(
        &self,
        ws: &Workspace,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<SpanRecord>>, Error> {
        let mut out: HashMap<String, Vec<SpanRecord>> = HashMap::new();
        let select = "SELECT trace_id, span_id, parent_span_id, name, span_type, status, start_ns, end_ns, \
                      content FROM trace_spans";
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            for r in self.rows_of_traces(ws, select, chunk, " ORDER BY trace_id, start_ns, span_id").await? {
                out.entry(get(&r, "trace_id")?).or_default().push(SpanRecord {
                    span_id: get(&r, "span_id")?,
                    parent_span_id: get(&r, "parent_span_id")?,
                    name: get(&r, "name")?,
                    span_type: get(&r, "span_type")?,
                    status: get(&r, "status")?,
                    start_ns: get(&r, "start_ns")?,
                    end_ns: get(&r, "end_ns")?,
                    content: get(&r, "content")?,
                });
            }
        }
        Ok(out)
    }
}
