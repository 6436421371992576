//! What every handler can reach: the metadata store, the artifact store, and the limits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn_blob::BlobStore;
use cairn_store::Store;

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
}

impl AppState {
    pub fn new(store: Store, artifacts: BlobStore, data_dir: PathBuf, max_upload_bytes: u64) -> Arc<Self> {
        Arc::new(AppState { store, artifacts, data_dir, max_upload_bytes, blob_cache: Mutex::default() })
    }
}
