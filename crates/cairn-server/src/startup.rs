//! Start-up and shutdown of `cairn server`: the data directory, the stores, the first admin
//! token, the listener, and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cairn_blob::BlobStore;
use cairn_store::Store;

use crate::state::AppState;

/// Everything `cairn server` needs, already merged from flags, environment and `cairn.toml`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds the SQLite database, the local artifact store, the admin token and the lock file.
    pub data_dir: PathBuf,
    /// `postgres://…` to keep metadata in PostgreSQL; SQLite in the data directory otherwise.
    pub database_url: Option<String>,
    /// `s3://bucket/prefix` or a directory; `DATA_DIR/artifacts` otherwise.
    pub artifact_store: Option<String>,
    /// `HOST:PORT`; port 0 picks a free port.
    pub listen: String,
    /// Fixes the admin token created at first start (`CAIRN_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Largest file one upload may carry.
    pub max_upload_bytes: u64,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// `CAIRN_SECRET_KEY`: the server secret shared by every server of one database; otherwise a
    /// `secret-key` file is made in the data directory at first start.
    pub secret_key: Option<String>,
    /// Largest scoring request body (413 beyond).
    pub max_score_body_bytes: u64,
    /// Where built environments are cached (`DATA_DIR/envs` unless configured).
    pub env_cache: PathBuf,
    /// The URL other servers and clients reach this one at (`--advertise-url`); the listening
    /// address otherwise (with the host name when listening on all interfaces).
    pub advertise_url: Option<String>,
    /// How long without a heartbeat before other servers show this one as unreachable.
    pub server_stale_after: Duration,
}

/// File in the data directory holding the server's stable id.
pub const SERVER_ID_FILE: &str = "server-id";

/// File in the data directory that tells local clients where the server listens.
pub const SERVER_FILE: &str = "server.json";

/// Runs the server until `shutdown` resolves, then lets in-flight requests finish (up to the
/// grace period) and closes the database.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    create_private_dir(&config.data_dir)?;
    let lock = lock_data_dir(&config.data_dir)?;
    let id = server_id(&config.data_dir)?;

    let store = match &config.database_url {
        Some(url) => Store::open(url).await?,
        None => Store::open_sqlite(&config.data_dir.join("cairn.db")).await?,
    };
    let artifacts = match &config.artifact_store {
        Some(location) => BlobStore::open(location)?,
        None => {
            BlobStore::open(config.data_dir.join("artifacts").to_str().context("data dir is not UTF-8")?)?
        }
    };
    let secret = crate::secret::ServerSecret::load(&config.data_dir, config.secret_key.as_deref())?;
    let created_token =
        crate::auth::bootstrap_admin(&store, &config.data_dir, config.admin_token.as_deref()).await?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    let url = format!("http://{addr}");
    tracing::info!("listening on {url}");
    tracing::info!(
        data_dir = %config.data_dir.display(),
        database = if config.database_url.is_some() { "postgres" } else { "sqlite" },
        artifacts = artifacts.location(),
        "cairn server ready"
    );
    if let Some(path) = created_token {
        tracing::info!("created the admin token; it is in {} (readable only by you)", path.display());
    }
    let server_file = config.data_dir.join(SERVER_FILE);
    std::fs::write(&server_file, serde_json::json!({ "url": url, "pid": std::process::id() }).to_string())
        .with_context(|| format!("cannot write {}", server_file.display()))?;

    let limits = crate::state::Limits {
        max_upload_bytes: config.max_upload_bytes,
        max_score_body_bytes: usize::try_from(config.max_score_body_bytes).unwrap_or(usize::MAX),
    };
    let host = host_name();
    let identity = crate::state::ServerIdentity {
        id,
        url: config.advertise_url.clone().unwrap_or_else(|| advertised(addr, &host)),
        host,
    };
    let stale_ms = i64::try_from(config.server_stale_after.as_millis()).unwrap_or(i64::MAX);
    store.register_server(&identity.id, &identity.host, &identity.url, stale_ms).await?;
    tracing::info!(id = %identity.id, host = %identity.host, url = %identity.url, "server identity");
    let state = AppState::new(store.clone(), artifacts, config.data_dir.clone(), limits, secret, identity);
    let _ = state.env_cache.set(config.env_cache.clone());
    let _ = state.public_url.set(url.clone());
    let heartbeat = tokio::spawn(heartbeat(state.clone(), config.server_stale_after));
    crate::runtime::unpack(&state.runtime_dir())?;
    crate::jobs::recover(&state).await?;
    crate::deployments::relaunch_all(&state).await?;
    let scheduler = tokio::spawn(crate::jobs::schedule(state.clone()));
    let jobs_state = state.clone();
    let stop_tx = state.stopping.clone();
    let mut stop_rx = state.stopping.subscribe();
    let app = crate::routes::router(state);

    // Without TCP_NODELAY, a response whose body is streamed (a file, an artifact, a model) goes
    // out in two writes, and the second waits for the client's delayed ACK of the first: up to
    // 40 ms per response on Linux, which made downloading 10,000 small files take 40 s.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    stop_tx.send_replace(true);
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(joined) => joined.context("server task failed")??,
        Err(_) => tracing::warn!(
            "in-flight requests did not finish within {:?}; stopping anyway",
            config.shutdown_grace
        ),
    }
    scheduler.abort();
    heartbeat.abort();
    if let Err(e) = store.mark_server(&jobs_state.server.id, cairn_store::ServerMark::Stopped).await {
        tracing::warn!(error = %e, "cannot record the stop in the servers table");
    }
    // Jobs are not stopped with the server: their shims run on and the next start reattaches them.
    let kept = jobs_state.jobs.supervised();
    if kept > 0 {
        tracing::info!("{kept} jobs keep running; they will be reattached at next start");
    }
    store.close().await;
    let _ = std::fs::remove_file(&server_file);
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// Refreshes this server's `last_seen` until the task is aborted at shutdown (a few beats fit in
/// the stale limit, so one slow write does not make the server look gone), and stops the replicas
/// of deployments deleted through other servers.
async fn heartbeat(state: std::sync::Arc<AppState>, stale_after: Duration) {
    let every = (stale_after / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.store.mark_server(&state.server.id, cairn_store::ServerMark::Seen).await {
            tracing::warn!(error = %e, "heartbeat failed; retrying");
        }
        if let Err(e) = crate::deployments::stop_deleted(&state).await {
            tracing::warn!(error = %e, "could not check for deployments deleted elsewhere; retrying");
        }
    }
}

/// The server's stable id, made at first start (random, 128 bits) and kept in the data directory.
fn server_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SERVER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let id = hex::encode(bytes);
    let tmp = data_dir.join(format!("{SERVER_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// The URL to advertise without `--advertise-url`: the bound address, or the host name and port
/// when bound to all interfaces (0.0.0.0 reaches nothing from another machine).
fn advertised(addr: SocketAddr, host: &str) -> String {
    if addr.ip().is_unspecified() {
        format!("http://{host}:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    Ok(())
}

/// Holds an exclusive lock on the data directory for the server's lifetime, so that two servers
/// never share one SQLite database or artifact folder.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another cairn server is already using the data directory {}; stop it or pass another --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
