//! The servers of one database and what each owns (migration 0016).
//!
//! Several `cairn server`s may share a PostgreSQL database. A job's processes and folder, and a
//! deployment's replicas, live on the machine of the server that started them, so each run and
//! deployment records its server (`server_id`) and only that server recovers or relaunches it.
//! Servers register at start and refresh `last_seen` (a heartbeat) so that others can say whether
//! the owner of a run still answers; nothing is ever taken over on that basis.
//!
//! Claiming a queued run is where servers compete: [`Store::claim_run`] admits it against the
//! compute's `max_nodes` counted over every server's active runs, in one transaction serialised
//! per compute (a row lock on the compute on PostgreSQL; SQLite has a single writer anyway).
//! What servers must order beyond one statement (an environment's delete against deployments
//! made to use it) takes a [`ClusterLock`].

use cairn_core::runs::{RunServer, RunStatus};
use cairn_core::{now_ms, Error};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{map_err, Backend};
use crate::Store;

/// A lock every server on the database sees, shared or exclusive, held until dropped: a
/// transaction-scoped advisory lock on PostgreSQL (dropping the transaction rolls it back, which
/// sqlx sends when the connection goes back to the pool). On SQLite, which one server uses,
/// it is nothing: that server's own locks order its requests.
pub struct ClusterLock {
    _tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
}

/// A registered server.
#[derive(Clone, Debug)]
pub struct ServerRecord {
    pub id: String,
    pub host: String,
    pub url: String,
    pub started_at: i64,
    pub last_seen: i64,
    /// Milliseconds without a heartbeat after which the server counts as unreachable.
    pub stale_after: i64,
    /// Set by a clean stop.
    pub stopped_at: Option<i64>,
}

impl ServerRecord {
    /// Running and heard from within its stale limit, at `now` (Unix ms).
    pub fn alive(&self, now: i64) -> bool {
        self.stopped_at.is_none() && now.saturating_sub(self.last_seen) <= self.stale_after
    }

    fn from_row(row: &AnyRow) -> Result<ServerRecord, Error> {
        Ok(ServerRecord {
            id: row.try_get("id").map_err(map_err)?,
            host: row.try_get("host").map_err(map_err)?,
            url: row.try_get("url").map_err(map_err)?,
            started_at: row.try_get("started_at").map_err(map_err)?,
            last_seen: row.try_get("last_seen").map_err(map_err)?,
            stale_after: row.try_get("stale_after").map_err(map_err)?,
            stopped_at: row.try_get("stopped_at").map_err(map_err)?,
        })
    }
}

/// What [`Store::claim_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The run is now `Preparing` and this server's.
    Claimed,
    /// The compute's nodes are all busy (counting every server's runs).
    Full,
    /// The compute no longer exists.
    ComputeGone,
    /// Someone else claimed or canceled the run first.
    NotQueued,
}

/// What a registered server records about itself ([`Store::mark_server`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMark {
    /// The heartbeat: this server is still here (`last_seen`).
    Seen,
    /// A clean stop: others see the server as gone at once instead of after its stale limit
    /// (`stopped_at`).
    Stopped,
}

const ACTIVE: [RunStatus; 4] =
    [RunStatus::Preparing, RunStatus::Starting, RunStatus::Running, RunStatus::Finalizing];

const SERVER_COLUMNS: &str = "s.id, s.host, s.url, s.started_at, s.last_seen, s.stale_after, s.stopped_at";

impl Store {
    /// Takes the cluster-wide lock `name` (see [`ClusterLock`]), waiting for an exclusive holder
    /// to drop it (or, `exclusive`, for every holder).
    pub async fn cluster_lock(&self, name: &str, exclusive: bool) -> Result<ClusterLock, Error> {
        if self.backend() != Backend::Postgres {
            return Ok(ClusterLock { _tx: None });
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let lock = if exclusive { "pg_advisory_xact_lock" } else { "pg_advisory_xact_lock_shared" };
        // The lock function returns void, which sqlx's Any driver cannot decode: selected inside.
        sqlx::query(&format!("SELECT 1 AS held FROM (SELECT {lock}(hashtext($1))) AS l"))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        Ok(ClusterLock { _tx: Some(tx) })
    }

    /// Records this server's start (a restart of the same id replaces its row).
    pub async fn register_server(
        &self,
        id: &str,
        host: &str,
        url: &str,
        stale_after_ms: i64,
    ) -> Result<(), Error> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO servers (id, host, url, started_at, last_seen, stale_after, stopped_at) \
             VALUES ($1, $2, $3, $4, $4, $5, NULL) ON CONFLICT (id) DO UPDATE SET host = $2, url = $3, \
             started_at = $4, last_seen = $4, stale_after = $5, stopped_at = NULL",
        )
        .bind(id)
        .bind(host)
        .bind(url)
        .bind(now)
        .bind(stale_after_ms)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    /// Records now as the time of `mark` for server `id`.
    pub async fn mark_server(&self, id: &str, mark: ServerMark) -> Result<(), Error> {
        let sql = match mark {
            ServerMark::Seen => "UPDATE servers SET last_seen = $1 WHERE id = $2",
            ServerMark::Stopped => "UPDATE servers SET stopped_at = $1 WHERE id = $2",
        };
        sqlx::query(sql).bind(now_ms()).bind(id).execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }

    /// Every registered server.
    pub async fn servers(&self) -> Result<Vec<ServerRecord>, Error> {
        let rows =
            sqlx::query(&format!("SELECT {SERVER_COLUMNS} FROM servers s ORDER BY s.started_at, s.id"))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        rows.iter().map(ServerRecord::from_row).collect()
    }

    /// Servers other than `me` that are alive now.
    pub async fn other_live_servers(&self, me: &str) -> Result<Vec<ServerRecord>, Error> {
        let now = now_ms();
        Ok(self.servers().await?.into_iter().filter(|s| s.id != me && s.alive(now)).collect())
    }

    /// Moves run `run_id` from `Queued` to `Preparing` for server `server_id`, if compute
    /// `compute` of workspace `workspace_id` has fewer active runs than its `max_nodes`, counted
    /// over all servers. One transaction, serialised per compute, so that servers claiming at
    /// the same time cannot together exceed the limit.
    pub async fn claim_run(
        &self,
        run_id: &str,
        server_id: &str,
        workspace_id: &str,
        compute: &str,
    ) -> Result<Claim, Error> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // On PostgreSQL the compute's row lock queues concurrent claimers of one compute; the
        // count below then sees every run they claimed (READ COMMITTED reads per statement).
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT max_nodes FROM computes WHERE workspace_id = $1 AND name = $2{lock}"
        ))
        .bind(workspace_id)
        .bind(compute)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(Claim::ComputeGone) };
        let max_nodes: i64 = row.try_get("max_nodes").map_err(map_err)?;
        let busy = sqlx::query(
            "SELECT COUNT(*) AS n FROM runs WHERE workspace_id = $1 AND compute = $2 AND status IN ($3, $4, $5, $6)",
        )
        .bind(workspace_id)
        .bind(compute)
        .bind(ACTIVE[0].as_str())
        .bind(ACTIVE[1].as_str())
        .bind(ACTIVE[2].as_str())
        .bind(ACTIVE[3].as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(map_err)?;
        let busy: i64 = busy.try_get("n").map_err(map_err)?;
        if busy >= max_nodes {
            return Ok(Claim::Full);
        }
        let claimed =
            sqlx::query("UPDATE runs SET status = $1, server_id = $2 WHERE id = $3 AND status = $4")
                .bind(RunStatus::Preparing.as_str())
                .bind(server_id)
                .bind(run_id)
                .bind(RunStatus::Queued.as_str())
                .execute(&mut **tx)
                .await
                .map_err(map_err)?
                .rows_affected();
        if claimed != 1 {
            return Ok(Claim::NotQueued);
        }
        sqlx::query("INSERT INTO run_transitions (run_id, status, at) VALUES ($1, $2, $3)")
            .bind(run_id)
            .bind(RunStatus::Preparing.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Claim::Claimed)
    }

    /// Makes a run recorded without a server (before migration 0016) `server_id`'s; false when
    /// it already has one (another server took it first).
    pub async fn adopt_run(&self, run_id: &str, server_id: &str) -> Result<bool, Error> {
        let n = sqlx::query("UPDATE runs SET server_id = $1 WHERE id = $2 AND server_id IS NULL")
            .bind(server_id)
            .bind(run_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(n == 1)
    }

    /// The server that claimed run `run_id`, and whether it is alive.
    pub async fn run_server(&self, run_id: &str) -> Result<Option<RunServer>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {SERVER_COLUMNS} FROM runs r JOIN servers s ON s.id = r.server_id WHERE r.id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let s = ServerRecord::from_row(&row)?;
        Ok(Some(RunServer {
            alive: s.alive(now_ms()),
            id: s.id,
            host: s.host,
            url: s.url,
            last_seen: s.last_seen,
        }))
    }

    /// Records the server that runs deployment `id` (set when it is created).
    pub async fn set_deployment_server(&self, id: &str, server_id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE deployments SET server_id = $1 WHERE id = $2")
            .bind(server_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// The server recorded for deployment `id` (None: recorded before migration 0016).
    pub async fn deployment_server_id(&self, id: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT server_id FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            Some(r) => r.try_get("server_id").map_err(map_err),
            None => Ok(None),
        }
    }

    /// Like [`Store::adopt_run`], for a deployment.
    pub async fn adopt_deployment(&self, id: &str, server_id: &str) -> Result<bool, Error> {
        let n = sqlx::query("UPDATE deployments SET server_id = $1 WHERE id = $2 AND server_id IS NULL")
            .bind(server_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(n == 1)
    }

    /// The server that runs deployment `name` of endpoint `endpoint_id`, if one is recorded.
    pub async fn deployment_server(
        &self,
        endpoint_id: &str,
        name: &str,
    ) -> Result<Option<ServerRecord>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {SERVER_COLUMNS} FROM deployments d JOIN servers s ON s.id = d.server_id \
             WHERE d.endpoint_id = $1 AND d.name = $2"
        ))
        .bind(endpoint_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(ServerRecord::from_row).transpose()
    }
}
