//! Datastores and the checksums of the files Cairn wrote into them.

use std::collections::HashMap;

use cairn_core::api::{CreateDatastore, Datastore, DatastoreKind, Page, Workspace};
use cairn_core::{now_ms, Error};
use sqlx::Row;

use crate::binds::Placeholders;
use crate::db::{is_unique_violation, map_err, new_id};
use crate::workspaces::{page_size, paginate};
use crate::Store;

/// A datastore with its internal id (used to key its files).
#[derive(Clone, Debug)]
pub struct DatastoreRecord {
    pub id: String,
    pub workspace_id: String,
    pub datastore: Datastore,
}

/// What Cairn knows of a file it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub size: u64,
    pub sha256: String,
    pub updated_at: i64,
}

fn from_row(row: &sqlx::any::AnyRow, workspace: &str) -> Result<DatastoreRecord, Error> {
    (|| -> Result<DatastoreRecord, sqlx::Error> {
        let kind: String = row.try_get("kind")?;
        Ok(DatastoreRecord {
            id: row.try_get("id")?,
            workspace_id: row.try_get("workspace_id")?,
            datastore: Datastore {
                name: row.try_get("name")?,
                workspace: workspace.to_string(),
                kind: DatastoreKind::parse(&kind).unwrap_or(DatastoreKind::Local),
                location: row.try_get("location")?,
                description: row.try_get("description")?,
                created_at: row.try_get("created_at")?,
            },
        })
    })()
    .map_err(map_err)
}

const COLUMNS: &str = "id, workspace_id, name, kind, location, description, created_at";

impl Store {
    pub async fn create_datastore(
        &self,
        ws: &Workspace,
        req: &CreateDatastore,
    ) -> Result<DatastoreRecord, Error> {
        let id = new_id();
        let created_at = now_ms();
        sqlx::query(
            "INSERT INTO datastores (id, workspace_id, name, kind, location, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&ws.id)
        .bind(&req.name)
        .bind(req.kind.as_str())
        .bind(&req.location)
        .bind(&req.description)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict(format!(
                    "datastore \"{}\" already exists in workspace \"{}\"",
                    req.name, ws.name
                ))
            } else {
                map_err(e)
            }
        })?;
        Ok(DatastoreRecord {
            id,
            workspace_id: ws.id.clone(),
            datastore: Datastore {
                name: req.name.clone(),
                workspace: ws.name.clone(),
                kind: req.kind,
                location: req.location.clone(),
                description: req.description.clone(),
                created_at,
            },
        })
    }

    pub async fn datastore(&self, ws: &Workspace, name: &str) -> Result<DatastoreRecord, Error> {
        cairn_core::validate_name("datastore name", name)?;
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM datastores WHERE workspace_id = $1 AND name = $2"))
                .bind(&ws.id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        match row {
            Some(r) => from_row(&r, &ws.name),
            None => Err(Error::NotFound {
                kind: "datastore",
                name: format!("{name}\" in workspace \"{}", ws.name),
            }),
        }
    }

    pub async fn list_datastores(
        &self,
        ws: &Workspace,
        page_token: Option<&str>,
        size: Option<i64>,
    ) -> Result<Page<DatastoreRecord>, Error> {
        let limit = page_size(size);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM datastores WHERE workspace_id = $1 AND name > $2 ORDER BY name LIMIT $3"
        ))
        .bind(&ws.id)
        .bind(page_token.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let mut items = rows.iter().map(|r| from_row(r, &ws.name)).collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(&mut items, limit, |d| d.datastore.name.clone()))
    }

    /// Forgets a datastore (and the checksums of its files). Never touches the files.
    pub async fn delete_datastore(&self, ds: &DatastoreRecord) -> Result<(), Error> {
        sqlx::query("DELETE FROM datastores WHERE id = $1")
            .bind(&ds.id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// The records of the given paths that exist, keyed by path.
    pub async fn file_records(
        &self,
        datastore_id: &str,
        paths: &[&str],
    ) -> Result<HashMap<String, FileRecord>, Error> {
        let mut found = HashMap::new();
        for chunk in paths.chunks(500) {
            let mut p = Placeholders::new(self.backend());
            let sql = format!(
                "SELECT path, size, sha256, updated_at FROM datastore_files \
                 WHERE datastore_id = {} AND path IN ({})",
                p.one(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(datastore_id);
            for p in chunk {
                q = q.bind(*p);
            }
            for row in q.fetch_all(&self.pool).await.map_err(map_err)? {
                let rec = (|| -> Result<(String, FileRecord), sqlx::Error> {
                    Ok((
                        row.try_get("path")?,
                        FileRecord {
                            size: row.try_get::<i64, _>("size")? as u64,
                            sha256: row.try_get("sha256")?,
                            updated_at: row.try_get("updated_at")?,
                        },
                    ))
                })()
                .map_err(map_err)?;
                found.insert(rec.0, rec.1);
            }
        }
        Ok(found)
    }

    /// Records (or updates) what Cairn wrote at `path`. Concurrent calls are written together:
    /// see [`FileRecordWriter`].
    pub async fn put_file_record(
        &self,
        datastore_id: &str,
        path: &str,
        size: u64,
        sha256: &str,
    ) -> Result<(), Error> {
        let writer = self.file_records.get_or_init(|| FileRecordWriter::start(self));
        let (done, answer) = tokio::sync::oneshot::channel();
        let record = PendingRecord {
            datastore_id: datastore_id.to_string(),
            path: path.to_string(),
            size,
            sha256: sha256.to_string(),
            at: now_ms(),
            done,
        };
        writer.queue.send(record).map_err(|_| Error::internal("the file-record writer has stopped"))?;
        answer.await.map_err(|_| Error::internal("the file-record writer has stopped"))?
    }

    /// Forgets the records of `path` and everything under it.
    pub async fn delete_file_records(&self, datastore_id: &str, path: &str) -> Result<u64, Error> {
        let like = format!("{}/%", path.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let done = sqlx::query(
            "DELETE FROM datastore_files WHERE datastore_id = $1 AND (path = $2 OR path LIKE $3 ESCAPE '\\')",
        )
        .bind(datastore_id)
        .bind(path)
        .bind(like)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

/// A file record waiting to be written, with where its outcome goes.
pub(crate) struct PendingRecord {
    datastore_id: String,
    path: String,
    size: u64,
    sha256: String,
    at: i64,
    done: tokio::sync::oneshot::Sender<Result<(), Error>>,
}

/// Most records written by one statement (5 values each).
const RECORDS_PER_STATEMENT: usize = 500;

/// Writes datastore file records in groups: one task takes every record queued meanwhile and
/// writes them with one multi-row upsert, under the store's write gate on SQLite.
///
/// Why: an upload of many small files sends 16 files at once, and each file ended with its own
/// INSERT. On SQLite those concurrent writers met in its busy handler, which sleeps (1 ms, then
/// longer) instead of queueing: 17,000 sleeps for one upload of 10,000 files of 4 KiB, measured
/// with `strace -c` (docs/benchmarks.md). Each caller still waits until its own record is
/// written, so an upload is answered only once its record is durable, as before.
#[derive(Debug)]
pub(crate) struct FileRecordWriter {
    queue: tokio::sync::mpsc::UnboundedSender<PendingRecord>,
}

impl FileRecordWriter {
    fn start(store: &Store) -> FileRecordWriter {
        let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel::<PendingRecord>();
        // The task holds no `Store` (whose clones hold the queue), so it ends when the last
        // `Store` is dropped.
        let (pool, gate, backend) = store.writer_parts();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(RECORDS_PER_STATEMENT);
            while pending.recv_many(&mut batch, RECORDS_PER_STATEMENT).await > 0 {
                let outcome = upsert_records(&pool, &gate, backend, &batch).await;
                if let (Err(e), true) = (&outcome, batch.len() > 1) {
                    tracing::debug!(records = batch.len(), error = %e, "a batch of file records failed; writing them one by one");
                    // One bad record (its datastore deleted meanwhile, say) must not fail the
                    // others: each is tried on its own, and gets its own answer.
                    for record in batch.drain(..) {
                        let own = upsert_records(&pool, &gate, backend, std::slice::from_ref(&record)).await;
                        let _ = record.done.send(own);
                    }
                    continue;
                }
                for record in batch.drain(..) {
                    let _ = record.done.send(outcome.clone());
                }
            }
        });
        FileRecordWriter { queue }
    }
}

/// One upsert of `records`; of several records for one path, the last queued wins (PostgreSQL
/// refuses a statement that updates a row twice).
async fn upsert_records(
    pool: &sqlx::AnyPool,
    gate: &tokio::sync::Mutex<()>,
    backend: crate::db::Backend,
    records: &[PendingRecord],
) -> Result<(), Error> {
    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        last.insert((r.datastore_id.as_str(), r.path.as_str()), i);
    }
    let mut kept: Vec<usize> = last.into_values().collect();
    kept.sort_unstable();
    let mut p = Placeholders::new(backend);
    let sql = format!(
        "INSERT INTO datastore_files (datastore_id, path, size, sha256, updated_at) VALUES {} \
         ON CONFLICT (datastore_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, \
         updated_at = excluded.updated_at",
        p.rows(kept.len(), 5)
    );
    let mut q = sqlx::query(&sql);
    for &i in &kept {
        let r = &records[i];
        q = q
            .bind(r.datastore_id.as_str())
            .bind(r.path.as_str())
            .bind(r.size as i64)
            .bind(r.sha256.as_str())
            .bind(r.at);
    }
    // On SQLite the gate queues this process's writers, which would otherwise meet in the busy
    // handler.
    let _gate = match backend {
        crate::db::Backend::Sqlite => Some(gate.lock().await),
        crate::db::Backend::Postgres => None,
    };
    q.execute(pool).await.map_err(map_err)?;
    Ok(())
}
