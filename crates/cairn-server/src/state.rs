//! What every handler can reach: the metadata store, the artifact store, and the limits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cairn_blob::BlobStore;
use cairn_core::Error;
use cairn_jobs::env::builder::EnvBuilder;
use cairn_store::Store;

use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::secret::ServerSecret;

pub struct AppState {
    pub store: Store,
    /// Root of the server's own storage: workspaces' default datastores, later run artifacts.
    pub artifacts: BlobStore,
    /// The data directory; local datastores may not point into it (it holds the admin token).
    pub data_dir: PathBuf,
    /// Largest file a single upload may carry.
    pub max_upload_bytes: u64,
    /// Opened datastore locations by datastore id, so an S3 client is built once, not per request.
    pub(crate) blob_cache: Mutex<HashMap<String, BlobStore>>,
    /// Datastores by workspace and datastore name (see [`AppState::datastore_record`]).
    pub(crate) datastore_cache: crate::datastores::DatastoreCache,
    /// The scheduler's wake-up signal and the cancel switches of running jobs.
    pub jobs: Jobs,
    /// Builds environments into `DATA_DIR/envs` (set at start when `uv` is found).
    pub(crate) env_builder: OnceLock<EnvBuilder>,
    /// Where the builder keeps venvs: set once at start-up (`--env-cache`); `DATA_DIR/envs` if unset.
    pub env_cache: OnceLock<PathBuf>,
    /// The URL jobs use to reach this server (known once the listener is bound).
    pub(crate) public_url: OnceLock<String>,
    /// Seals endpoint keys and signs endpoint tokens.
    pub secret: ServerSecret,
    /// Largest scoring request body the gateway accepts (413 beyond).
    pub max_score_body_bytes: usize,
    /// The scoring gateway's request counts and latencies.
    pub metrics: Metrics,
    /// Set once the server is stopping: ends long-lived responses (log follow streams) so that
    /// the graceful stop does not wait for them.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Running deployments and their replicas.
    pub deployments: crate::deployments::Deployments,
    /// Held for reading while a manifest is checked against existing blobs and recorded, for
    /// writing while blobs are garbage-collected (`gc.rs`).
    pub(crate) blob_refs: tokio::sync::RwLock<()>,
    /// Held by a sweep of expired multipart uploads (`mlflow/multipart.rs`): one at a time, and
    /// `cairn admin gc` waits for a background sweep instead of racing it.
    pub(crate) upload_sweep: Arc<tokio::sync::Mutex<()>>,
    /// Who this server is among the servers of one database (runs and deployments it owns).
    pub server: ServerIdentity,
}

/// A server's identity: a stable id kept in the data directory (`server-id`, made at first
/// start), its host name and the URL other servers and clients reach it at.
#[derive(Clone, Debug, Default)]
pub struct ServerIdentity {
    pub id: String,
    pub host: String,
    pub url: String,
}

/// The limits and secret of a server, beyond its stores.
pub struct Limits {
    pub max_upload_bytes: u64,
    pub max_score_body_bytes: usize,
}

impl AppState {
    pub fn new(
        store: Store,
        artifacts: BlobStore,
        data_dir: PathBuf,
        limits: Limits,
        secret: ServerSecret,
        server: ServerIdentity,
    ) -> Arc<Self> {
        Arc::new(AppState {
            store,
            artifacts,
            data_dir,
            max_upload_bytes: limits.max_upload_bytes,
            max_score_body_bytes: limits.max_score_body_bytes,
            secret,
            metrics: Metrics::default(),
            deployments: Default::default(),
            blob_cache: Mutex::default(),
            datastore_cache: crate::datastores::datastore_cache(),
            jobs: Jobs::default(),
            env_builder: OnceLock::new(),
            env_cache: OnceLock::new(),
            public_url: OnceLock::new(),
            stopping: tokio::sync::watch::Sender::new(false),
            blob_refs: tokio::sync::RwLock::new(()),
            upload_sweep: Arc::default(),
            server,
        })
    }

    /// The environment builder (uv is looked up once; without it only builds fail, clearly).
    pub fn env_builder(&self) -> Result<&EnvBuilder, Error> {
        Ok(self.env_builder.get_or_init(|| {
            // Without uv, user_managed environments still work; a build says that uv is missing.
            let uv = cairn_jobs::env::builder::find_uv(None).unwrap_or_else(|| PathBuf::from("uv"));
            let dir = self.env_cache.get().cloned().unwrap_or_else(|| self.data_dir.join("envs"));
            EnvBuilder::new(dir, uv)
        }))
    }

    pub fn public_url(&self) -> String {
        self.public_url.get().cloned().unwrap_or_else(|| "http://127.0.0.1:8080".into())
    }

    /// Where the in-job Python runtime is unpacked (put on every job's PYTHONPATH).
    pub fn runtime_dir(&self) -> PathBuf {
        self.data_dir.join("runtime").join(env!("CARGO_PKG_VERSION"))
    }
}
