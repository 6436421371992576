//! Connecting, migrating, and turning driver errors into domain errors.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use cairn_core::Error;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// Which database engine is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The metadata store. Cheap to clone: it is a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// Serialises SQLite's write transactions in arrival order. Left to SQLite, waiting writers
    /// sleep and retry in its busy handler, which serves no queue: under load some wait past the
    /// busy timeout and fail with "database is locked".
    write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// When this process last recorded each token's use (token id → ms), so that a busy client
    /// costs one `last_used_at` write a minute instead of a write (and the write lock) per request.
    pub(crate) token_touches: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
    /// Endpoint and deployment lookups of the scoring path (`crate::endpoints::ScoringCache`).
    pub(crate) scoring_cache: std::sync::Arc<crate::endpoints::ScoringCache>,
    /// The experiments' column keys known to be in `experiment_keys` (`crate::studio::KnownKeys`).
    pub(crate) known_keys: std::sync::Arc<crate::studio::KnownKeys>,
    /// The queue of datastore file records to write, started on first use
    /// (`crate::datastores::FileRecordWriter`).
    pub(crate) file_records: std::sync::Arc<std::sync::OnceLock<crate::datastores::FileRecordWriter>>,
    /// Tokens recently found by lookup (`crate::tokens::TokenCache`).
    pub(crate) token_cache: std::sync::Arc<crate::tokens::TokenCache>,
}

/// A write transaction; on SQLite it also holds the store's write gate until it ends.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::Transaction<'static, sqlx::Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Store, Error> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::open(&url).await
    }

    /// Opens `sqlite://…` or `postgres://…` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::invalid(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                redact(url)
            )));
        };
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("bad database URL {:?}: {e}", redact(url))))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; NORMAL sync is durable across process
                        // crashes (the guarantee we test) and much faster than FULL. (temp_store =
                        // MEMORY was tried to keep statement journals off disk: it made the run
                        // search of bench/tracking.py 60 % slower and ingestion no faster.)
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| match map_err(e) {
                Error::Internal(m) => {
                    Error::Unavailable(format!("cannot open the metadata database {}: {m}", redact(url)))
                }
                other => other,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Internal(format!("migrating the metadata database failed: {e}")))?;
        Ok(Store {
            pool,
            backend,
            write_gate: Default::default(),
            token_touches: Default::default(),
            scoring_cache: Default::default(),
            known_keys: Default::default(),
            file_records: Default::default(),
            token_cache: std::sync::Arc::new(crate::tokens::token_cache()),
        })
    }

    /// Starts a transaction that writes. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first cannot wait for the lock when it
    /// later writes, and would fail with "database is locked" under concurrent writers.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, Error> {
        match self.backend {
            Backend::Sqlite => {
                let gate = self.write_gate.clone().lock_owned().await;
                let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)?;
                Ok(WriteTx { tx, _gate: Some(gate) })
            }
            Backend::Postgres => Ok(WriteTx { tx: self.pool.begin().await.map_err(map_err)?, _gate: None }),
        }
    }

    /// What a writer outside a `Store` method needs to write on SQLite without meeting the busy
    /// handler: the pool, the write gate and the backend.
    pub(crate) fn writer_parts(&self) -> (AnyPool, std::sync::Arc<tokio::sync::Mutex<()>>, Backend) {
        (self.pool.clone(), self.write_gate.clone(), self.backend)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Succeeds when the database answers a trivial query (used by `/readyz`).
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }

    /// Waits for connections to be returned and closes them (checkpointing SQLite's WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Hides the password of a database URL before it is shown or logged.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Column `col` of a row, decoded (a driver error mapped as [`map_err`] maps it).
pub(crate) fn get<T>(row: &sqlx::any::AnyRow, col: &str) -> Result<T, Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(col).map_err(map_err)
}

/// Maps a driver error onto the domain error users understand.
pub(crate) fn map_err(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            match code.as_str() {
                // SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
                c if c == "5"
                    || c == "6"
                    || c.parse::<i32>().is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6) =>
                {
                    Error::Unavailable(
                        "the metadata database is locked by another process; retry shortly".into(),
                    )
                }
                // SQLITE_FULL, PostgreSQL disk_full / insufficient_resources
                c if c == "13"
                    || c.parse::<i32>().is_ok_and(|n| n & 0xff == 13)
                    || c == "53100"
                    || c == "53000" =>
                {
                    Error::StorageFull("the metadata database is out of disk space".into())
                }
                _ => Error::Internal(format!("database error: {db}")),
            }
        }
        sqlx::Error::PoolTimedOut => {
            Error::Unavailable("the metadata database did not answer in time; retry shortly".into())
        }
        sqlx::Error::Io(io) if io.raw_os_error() == Some(28) => {
            Error::StorageFull("the metadata database is out of disk space".into())
        }
        _ => Error::Internal(format!("database error: {e}")),
    }
}

/// True when `e` is a unique-constraint violation (both backends).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// A new time-ordered id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
