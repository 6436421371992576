//! `cairn server`: merges flags, `CAIRN_*` environment variables and an optional `cairn.toml`
//! (in that order of precedence), sets up logging and runs the server until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cairn_server::ServerConfig;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Data directory (SQLite database, local artifacts, admin token). Default: ~/.cairn.
    #[arg(long, env = "CAIRN_HOME")]
    data_dir: Option<PathBuf>,
    /// Keep metadata in PostgreSQL instead of SQLite, e.g. postgres://cairn@db/cairn.
    #[arg(long, env = "CAIRN_DATABASE_URL")]
    database_url: Option<String>,
    /// Keep artifacts and default datastores in s3://bucket/prefix (or another directory).
    #[arg(long, env = "CAIRN_ARTIFACT_STORE")]
    artifact_store: Option<String>,
    /// Address to listen on; port 0 picks a free port. Default: 127.0.0.1:8080.
    #[arg(long, env = "CAIRN_LISTEN")]
    listen: Option<String>,
    /// Largest file one upload may carry, in bytes. Default: 64 GiB.
    #[arg(long, env = "CAIRN_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    /// Largest scoring request body, in bytes (413 beyond). Default: 16 MiB.
    #[arg(long, env = "CAIRN_MAX_SCORE_BODY_BYTES")]
    max_score_body_bytes: Option<u64>,
    /// Log format. Default: text.
    #[arg(long, env = "CAIRN_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Where built environments (venvs) are cached. Default: DATA_DIR/envs. Servers may share
    /// one cache (builds are locked per environment hash).
    #[arg(long, env = "CAIRN_ENV_CACHE")]
    env_cache: Option<PathBuf>,
    /// The URL other servers and clients reach this server at, shown with the runs and
    /// deployments it owns when several servers share one database. Default: the listening
    /// address (the host name when listening on all interfaces).
    #[arg(long, env = "CAIRN_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Seconds without a heartbeat after which other servers of the database show this one as
    /// unreachable (its jobs are left alone either way). Default: 60.
    #[arg(long, env = "CAIRN_SERVER_STALE_AFTER")]
    server_stale_after: Option<u64>,
    /// Threads of the async runtime that answers requests. Default: half the CPUs, at least 1.
    #[arg(long, env = "CAIRN_RUNTIME_THREADS")]
    runtime_threads: Option<usize>,
    /// Configuration file. Default: ./cairn.toml if it exists.
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, ValueEnum, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The keys `cairn.toml` may hold (the same names as the flags, with underscores).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    artifact_store: Option<String>,
    listen: Option<String>,
    max_upload_bytes: Option<u64>,
    max_score_body_bytes: Option<u64>,
    log_format: Option<LogFormat>,
    env_cache: Option<PathBuf>,
    advertise_url: Option<String>,
    server_stale_after: Option<u64>,
    runtime_threads: Option<usize>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_UPLOAD: u64 = 64 << 30;
const DEFAULT_MAX_SCORE_BODY: u64 = 16 << 20;
const DEFAULT_SERVER_STALE_AFTER_S: u64 = 60;

pub fn read_file_config(args: &ServerArgs) -> anyhow::Result<FileConfig> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None if Path::new("cairn.toml").is_file() => PathBuf::from("cairn.toml"),
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// The default data directory: `$CAIRN_HOME`, else `~/.cairn`.
pub fn default_data_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CAIRN_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cairn")
}

/// Keeps glibc's allocator from handing the server fresh pages for every network read. hyper
/// allocates a new read buffer of a few hundred KiB for each socket read of an upload (the last one
/// is still held by the hash and the write queue); glibc serves such sizes with `mmap` (its dynamic
/// threshold never rises above them) and unmaps them on free, so every byte received landed on a
/// page the kernel had to fault in and zero first: about 125,000 page faults per GiB uploaded.
/// Served from the heap and kept there instead (up to 16 MiB of free memory per arena before it is
/// given back), they are reused: about 1,000 faults per GiB, and peak RSS moves by a few MB.
/// Settings made through glibc's own environment variables are left alone.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_env = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !set_by_env {
            // SAFETY: mallopt only changes the allocator's parameters; called before any thread
            // of the runtime exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
            }
        }
    }
}

/// How many threads the server's async runtime gets: the setting (flag, environment, file), else
/// tokio's own `TOKIO_WORKER_THREADS` when set, else half the CPUs (at least one). `None`: leave
/// it to tokio.
///
/// Half, not all: the runtime's threads do little work per request (SQLite runs on sqlx's own
/// threads, large uploads are written from a thread of their own, scoring and jobs run in other
/// processes), and on a small machine every extra runtime thread mostly adds wake-ups across
/// cores: on 2 CPUs, one thread instead of two cut the gateway's CPU per scoring request by a
/// third and left uploads and MLflow logging as fast or faster (docs/benchmarks.md).
pub fn runtime_threads(args: &ServerArgs, file: &FileConfig) -> anyhow::Result<Option<usize>> {
    match args.runtime_threads.or(file.runtime_threads) {
        Some(0) => {
            anyhow::bail!("runtime_threads must be at least 1 (--runtime-threads, CAIRN_RUNTIME_THREADS)")
        }
        Some(n) => Ok(Some(n)),
        None if std::env::var_os("TOKIO_WORKER_THREADS").is_some() => Ok(None),
        None => Ok(Some(std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))),
    }
}

/// Runs the server with `file`, the configuration file `read_file_config` read for `args`.
pub async fn run(args: ServerArgs, file: FileConfig) -> anyhow::Result<()> {
    let log_format = args.log_format.or(file.log_format).unwrap_or(LogFormat::Text);
    init_logging(log_format);

    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(default_data_dir);
    let data_dir = absolute(&data_dir)?;
    let env_cache = args.env_cache.or(file.env_cache).map(|d| absolute(&d)).transpose()?;
    let config = ServerConfig {
        env_cache: env_cache.unwrap_or_else(|| data_dir.join("envs")),
        data_dir,
        database_url: args.database_url.or(file.database_url),
        artifact_store: args.artifact_store.or(file.artifact_store),
        listen: args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        admin_token: std::env::var("CAIRN_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
        max_upload_bytes: args.max_upload_bytes.or(file.max_upload_bytes).unwrap_or(DEFAULT_MAX_UPLOAD),
        shutdown_grace: Duration::from_secs(30),
        secret_key: std::env::var("CAIRN_SECRET_KEY").ok().filter(|t| !t.is_empty()),
        max_score_body_bytes: args
            .max_score_body_bytes
            .or(file.max_score_body_bytes)
            .unwrap_or(DEFAULT_MAX_SCORE_BODY),
        advertise_url: args.advertise_url.or(file.advertise_url).map(|u| u.trim_end_matches('/').to_string()),
        server_stale_after: Duration::from_secs(
            args.server_stale_after
                .or(file.server_stale_after)
                .unwrap_or(DEFAULT_SERVER_STALE_AFTER_S)
                .max(1),
        ),
    };
    cairn_server::serve(config, shutdown_signal()).await
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) })
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
