//! Online deployments on the local target: creating, updating and deleting them, launching and
//! supervising their replicas (`python -m cairn.replica`, see python/cairn/replica.py for the
//! framed protocol) with liveness and readiness probes, and forwarding one scoring request to a
//! replica (called by `gateway.rs`).
//!
//! Layout: `DATA_DIR/deployments/ID/` holds `model/NAME/VERSION/` (the model files, read-only,
//! shared by the generations that use them), `gen/G/code/` (the unpacked snapshot of generation
//! G), `gen/G/models/NAME/VERSION` (with several models: links to the `model/` folders of G's
//! versions), `gen/G/sock/N` (replica N's socket: its appearing means ready) and
//! `logs/generation-G.log` (generation G's replicas' stderr and cairn's own `[cairn]` lines about
//! it; `deployment logs` shows the current generation's). `AZUREML_MODEL_DIR` is Azure ML v1's:
//! with one model, that version's folder `model/NAME/VERSION`; with several, `gen/G/models`, which
//! holds exactly G's versions (see `cairn.serving` for how scripts find them).
//!
//! An update that changes what replicas start with is a rolling replacement: generation G+1 is
//! prepared and started beside G, and only once all its replicas are ready does the gateway's map
//! switch to it (one pointer swap); G is then drained (requests already on it finish, see `Gate`)
//! and stopped. If G+1 fails to start, G keeps serving and the failure is recorded as
//! `update_error`. Changing only `instance_count` adds or removes replicas of the running
//! generation. A restart abandons an unfinished update: the recorded generation comes back and
//! the model versions only the update used are released (`release_abandoned`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use cairn_core::api::Workspace;
use cairn_core::deployments::*;
use cairn_core::{now_ms, Error, RelPath};
use cairn_jobs::env::EnvironmentSpec;
use cairn_store::{DeploymentRecord, EndpointRecord};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Who a model-version use belongs to (see `Store::add_model_version_use`).
const USE_KIND: &str = "deployment";
/// Most of the log shown in a Failed reason.
const REASON_TAIL_BYTES: u64 = 4096;
/// How long a drained generation or replica may take beyond request_timeout_ms to finish.
const DRAIN_MARGIN: Duration = Duration::from_secs(2);
/// Most of the log `logs` returns.
const LOGS_TAIL_BYTES: u64 = 256 * 1024;
/// Requests one worker holds at once: the one it runs and the next, already in its socket, so that
/// it starts that one as soon as it has answered instead of waiting a round trip through the
/// gateway for it (see `Pipe`).
const PIPELINE_DEPTH: usize = 2;

/// The running deployments of this server, by `ENDPOINT_ID/NAME`, and the background work on
/// them.
#[derive(Default)]
pub struct Deployments {
    live: Mutex<HashMap<String, Arc<Live>>>,
    work: Mutex<WorkRegistry>,
    /// Serialises, per endpoint id, what adds deployments to an endpoint (create) with what
    /// removes the endpoint (delete): an endpoint delete never misses a deployment created
    /// beside it.
    endpoint_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This server's half of [`EnvironmentUse`].
    environment_uses: tokio::sync::RwLock<()>,
}

/// Orders what makes a deployment name an environment (create, update: shared) with an
/// environment's delete (exclusive), so that a delete's in-use check never misses a deployment
/// created or updated beside it (which would then fail at its next start): this server's lock,
/// then, for the other servers on the same database, the cluster lock of the workspace
/// ([`cairn_store::ClusterLock`]). Held until dropped.
pub struct EnvironmentUse<'a> {
    _cluster: cairn_store::ClusterLock,
    _local: LocalUse<'a>,
}

// The guards are held for their drop, never read.
#[allow(dead_code)]
enum LocalUse<'a> {
    Shared(tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Takes [`EnvironmentUse`] for workspace `ws_id`: shared to make deployments use environments,
/// `exclusive` to delete one.
pub async fn environment_use<'a>(
    state: &'a AppState,
    ws_id: &str,
    exclusive: bool,
) -> Result<EnvironmentUse<'a>, Error> {
    let uses = &state.deployments.environment_uses;
    // Always this server's lock first, then the cluster's: the same order everywhere.
    let local =
        if exclusive { LocalUse::Exclusive(uses.write().await) } else { LocalUse::Shared(uses.read().await) };
    let cluster = state.store.cluster_lock(&format!("environment-uses:{ws_id}"), exclusive).await?;
    Ok(EnvironmentUse { _cluster: cluster, _local: local })
}

/// The tasks working on each deployment (its start, an update, a scale), by deployment id, and
/// the deployments a delete has closed to new work. A delete closes the deployment, cancels its
/// tasks and waits for them before it removes the deployment's folder and model-version uses,
/// so that nothing they start (a replica, a generation's folder) outlives the deployment.
#[derive(Default)]
struct WorkRegistry {
    tasks: HashMap<String, Vec<Work>>,
    /// Ids of deployments deleted (or being deleted) by this server; ids are never reused.
    closed: std::collections::HashSet<String>,
}

struct Work {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The deployment is being deleted: no new work starts on it.
#[derive(Debug)]
struct Closed;

impl Deployments {
    /// Runs `work(cancel)` in the background as work on deployment `id`; `Err(Closed)` (nothing
    /// started) once a delete has closed it.
    fn spawn_work<F, Fut>(&self, id: &str, work: F) -> Result<(), Closed>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut reg = self.work.lock().unwrap();
        if reg.closed.contains(id) {
            return Err(Closed);
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(work(cancel.clone()));
        let tasks = reg.tasks.entry(id.to_string()).or_default();
        tasks.retain(|w| !w.task.is_finished());
        tasks.push(Work { cancel, task });
        Ok(())
    }

    /// Closes deployment `id` to new work, cancels what runs on it and returns those tasks (to be
    /// awaited).
    fn close(&self, id: &str) -> Vec<tokio::task::JoinHandle<()>> {
        let mut reg = self.work.lock().unwrap();
        reg.closed.insert(id.to_string());
        let tasks = reg.tasks.remove(id).unwrap_or_default();
        tasks
            .into_iter()
            .map(|w| {
                w.cancel.cancel();
                w.task
            })
            .collect()
    }

    /// The lock that orders deployment creates on endpoint `endpoint_id` with its delete.
    pub fn endpoint_lock(&self, endpoint_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.endpoint_locks.lock().unwrap();
        // Unused locks go: only this map and no caller hold them.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(endpoint_id.to_string()).or_default().clone()
    }
}

fn key(endpoint_id: &str, name: &str) -> String {
    format!("{endpoint_id}/{name}")
}

/// Admission to a generation, which can be retired: requests enter, and
/// `drain` first refuses new ones, then waits for those inside. Both sides use SeqCst on the two
/// atomics so that a request either sees `retired` (and goes elsewhere) or is counted by `drain`.
#[derive(Default)]
struct Gate {
    in_flight: AtomicUsize,
    retired: AtomicBool,
}

/// One request inside a `Gate`; leaving is the drop.
struct Pass<'a>(&'a AtomicUsize);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    fn enter(&self) -> Option<Pass<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let pass = Pass(&self.in_flight);
        if self.retired.load(Ordering::SeqCst) {
            return None;
        }
        Some(pass)
    }

    fn count(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Refuses new requests and waits (at most `max`) until none is inside; false on timeout.
    async fn drain(&self, max: Duration) -> bool {
        self.retired.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + max;
        while self.count() > 0 {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// A probe's settings as durations.
#[derive(Clone, Copy)]
struct Probe {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success: u32,
    failures: u32,
}

impl From<&ProbeSettings> for Probe {
    fn from(p: &ProbeSettings) -> Probe {
        Probe {
            initial_delay: Duration::from_secs(p.initial_delay_s() as u64),
            period: Duration::from_secs(p.period_s() as u64),
            timeout: Duration::from_secs(p.timeout_s() as u64),
            success: p.success() as u32,
            failures: p.failures() as u32,
        }
    }
}

/// One generation of a deployment: its replicas (worker processes), its admission counter and
/// its queue.
///
/// Admission and execution are separate, as in Azure ML: the generation admits up to
/// `max_concurrent_requests_per_instance × instances` requests (429 beyond), but each worker
/// process runs one request at a time. A worker holds at most `PIPELINE_DEPTH` requests: the one
/// it runs and the next one, sent ahead on its connection (an idle worker is always chosen before
/// a busy one gets a second; a request sent ahead waits for the one before it even if another
/// worker frees first, which costs little while requests cost about the same). The others wait here, first come first served, and each goes to a
/// worker as soon as one has room. A worker that answers hands its place to the oldest waiter
/// (`release`), so a worker with room and a waiting request never coexist, except when a worker
/// has just entered the rotation (`dispatch`). `request_timeout_ms` counts from admission, queue
/// included. With `max_queue_wait_ms` a worker holds one request (`depth`) and a request that
/// waits longer than that in the queue gets 503 with Retry-After.
pub struct Live {
    id: String,
    key: String,
    /// Names for metric labels.
    endpoint_name: String,
    name: String,
    generation: i64,
    /// Instance-major: the workers of instance i are `i * workers .. (i + 1) * workers`.
    replicas: RwLock<Vec<Arc<Replica>>>,
    /// Worker processes per instance (`environment_variables.WORKER_COUNT`, default 1).
    workers: usize,
    /// Where `take_free` starts looking.
    next: AtomicUsize,
    gate: Gate,
    /// Requests waiting for a free worker, oldest first. Whoever holds this lock decides which
    /// worker serves which request: `Replica::load` changes only under it.
    queue: Mutex<VecDeque<oneshot::Sender<Arc<Replica>>>>,
    /// max_concurrent_requests_per_instance (the limit is this × the instances).
    per_instance: usize,
    timeout: Duration,
    /// max_queue_wait_ms: longest a request waits in the queue (else its whole timeout).
    queue_wait: Option<Duration>,
    /// Requests a worker holds at once: `PIPELINE_DEPTH`, or 1 with max_queue_wait_ms, so that
    /// every request waiting for a worker waits in the queue, where that limit applies.
    depth: usize,
    liveness: Probe,
    readiness: Probe,
    cancel: CancellationToken,
    /// Set while an update runs: one update at a time, and the replicas of a generation being
    /// replaced do not write the deployment's state.
    updating: AtomicBool,
    /// The generation an update is starting (stopped with this one if the deployment goes).
    successor: Mutex<Option<Arc<Live>>>,
    launch: Launch,
    sock_dir: PathBuf,
}

/// One worker process of an instance, serving one request at a time.
struct Replica {
    /// "replica I", or "replica I worker W" when instances run several workers.
    label: String,
    socket: PathBuf,
    /// Process group of the running worker (0 when none).
    pgid: AtomicU32,
    /// In the gateway's rotation: started and not failing its readiness probe.
    ready: AtomicBool,
    /// Set once the worker first became ready.
    ever_ready: AtomicBool,
    /// Why its first start failed.
    failed: Mutex<Option<String>>,
    /// The connection this worker's requests go over, one after the other (made at first use,
    /// dropped when it breaks or the worker stops).
    pipe: Mutex<Option<Arc<Pipe>>>,
    restarts: AtomicU32,
    /// Requests leased to it (`Lease`s), at most `PIPELINE_DEPTH`; changed only under
    /// `Live::queue`.
    load: AtomicUsize,
    /// Stops this replica only (scaling down); a child of the generation's token.
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Replica {
    /// Kills the worker; its supervisor starts a new one.
    fn recycle(&self) {
        self.ready.store(false, Ordering::SeqCst);
        self.forget_pipe();
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid != 0 {
            cairn_jobs::process::signal_group(pgid, libc::SIGKILL);
        }
    }

    /// Kills the worker that `pipe` leads to, unless it has been replaced meanwhile (another
    /// request on the same connection may have judged it hung first).
    fn recycle_behind(&self, pipe: &Pipe) {
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid != 0 && pgid == pipe.pgid {
            self.recycle();
        }
    }

    /// Later requests open a new connection (requests holding this one keep it).
    fn forget_pipe(&self) {
        *self.pipe.lock().unwrap() = None;
    }

    /// The connection to use, made when there is none or the last one broke.
    async fn pipe(&self) -> Result<Arc<Pipe>, String> {
        if let Some(p) = self.pipe.lock().unwrap().as_ref().filter(|p| p.usable()) {
            return Ok(p.clone());
        }
        let pgid = self.pgid.load(Ordering::SeqCst);
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.label))?;
        let mut slot = self.pipe.lock().unwrap();
        match slot.as_ref().filter(|p| p.usable()) {
            // Made by another request meanwhile: one connection, so that the worker takes them in
            // turn.
            Some(p) => Ok(p.clone()),
            None => {
                let p = Arc::new(Pipe::new(stream, pgid));
                *slot = Some(p.clone());
                Ok(p)
            }
        }
    }
}

impl Live {
    fn replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().unwrap().clone()
    }

    /// Instances (not worker processes) and how many have a worker in the rotation.
    fn instances(&self) -> (usize, usize) {
        let replicas = self.replicas();
        let ready = replicas
            .chunks(self.workers)
            .filter(|workers| workers.iter().any(|r| r.ready.load(Ordering::SeqCst)))
            .count();
        (replicas.len() / self.workers, ready)
    }

    fn new_replica(&self, position: usize) -> Arc<Replica> {
        let (instance, worker) = (position / self.workers, position % self.workers);
        let (label, socket) = if self.workers == 1 {
            (format!("replica {instance}"), instance.to_string())
        } else {
            (format!("replica {instance} worker {worker}"), format!("{instance}.{worker}"))
        };
        Arc::new(Replica {
            label,
            socket: self.sock_dir.join(socket),
            pgid: AtomicU32::new(0),
            ready: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            failed: Mutex::new(None),
            pipe: Mutex::new(None),
            restarts: AtomicU32::new(0),
            load: AtomicUsize::new(0),
            cancel: self.cancel.child_token(),
            task: Mutex::new(None),
        })
    }

    /// A worker in the rotation with room for a request, its load counted: the least loaded, and
    /// among those the first after the last chosen, so that light load still visits every worker
    /// (a busy one is never given a second request while another is idle). Call with the queue
    /// locked.
    fn take_free(&self) -> Option<Arc<Replica>> {
        let replicas = self.replicas.read().unwrap();
        let n = replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for load in 0..self.depth {
            let found = (0..n)
                .map(|i| &replicas[(start + i) % n])
                .find(|r| r.ready.load(Ordering::SeqCst) && r.load.load(Ordering::SeqCst) == load);
            if let Some(r) = found {
                r.load.fetch_add(1, Ordering::SeqCst);
                return Some(r.clone());
            }
        }
        None
    }

    /// Hands free workers to waiting requests (a worker entered the rotation, or one finished
    /// while out of it).
    fn dispatch(&self) {
        let mut queue = self.queue.lock().unwrap();
        while !queue.is_empty() {
            let Some(r) = self.take_free() else { return };
            if let Err(r) = hand_over(&mut queue, r) {
                r.load.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Worker `r` is done with a request: its place goes to the oldest waiting request, or is
    /// freed.
    fn release(&self, r: Arc<Replica>) {
        if r.ready.load(Ordering::SeqCst) {
            let mut queue = self.queue.lock().unwrap();
            match hand_over(&mut queue, r) {
                Ok(()) => return,
                Err(r) => r.load.fetch_sub(1, Ordering::SeqCst),
            };
        } else {
            // Out of the rotation (restarting, failing readiness, retired): nobody gets it, but
            // another worker may be free for the waiters.
            let _queue = self.queue.lock().unwrap();
            r.load.fetch_sub(1, Ordering::SeqCst);
        }
        self.dispatch();
    }

    /// A free worker for a request that has been admitted: at once when one is free and nobody
    /// waits, else after the requests queued before it, at most until `deadline`, or for
    /// max_queue_wait_ms when that comes first.
    async fn acquire(self: &Arc<Self>, deadline: tokio::time::Instant) -> Result<Lease, ForwardError> {
        let rx = {
            let mut queue = self.queue.lock().unwrap();
            if queue.is_empty() {
                if let Some(r) = self.take_free() {
                    return Ok(Lease { live: self.clone(), replica: Some(r), queued: false });
                }
            }
            let (tx, rx) = oneshot::channel();
            queue.push_back(tx);
            rx
        };
        let mut waiting = Waiting { live: self, rx };
        let queue_deadline = match self.queue_wait {
            Some(wait) => deadline.min(tokio::time::Instant::now() + wait),
            None => deadline,
        };
        match tokio::time::timeout_at(queue_deadline, &mut waiting.rx).await {
            Ok(Ok(r)) => Ok(Lease { live: self.clone(), replica: Some(r), queued: true }),
            // The generation is being stopped (its queue dropped).
            Ok(Err(_)) => Err(ForwardError::NotReady),
            Err(_) if queue_deadline < deadline => {
                Err(ForwardError::QueueWait(self.queue_wait.unwrap_or_default().as_millis() as u64))
            }
            Err(_) => Err(ForwardError::Queued(self.timeout.as_millis() as u64)),
        }
    }
}

/// Gives a place on worker `r` (counted in its load) to the oldest waiter still waiting; `Err(r)`
/// when nobody waits.
fn hand_over(
    queue: &mut VecDeque<oneshot::Sender<Arc<Replica>>>,
    mut r: Arc<Replica>,
) -> Result<(), Arc<Replica>> {
    while let Some(waiter) = queue.pop_front() {
        match waiter.send(r) {
            Ok(()) => return Ok(()),
            // Gave up (timed out, or its client went away): the next one.
            Err(back) => r = back,
        }
    }
    Err(r)
}

/// A request waiting in a generation's queue. Dropped without having taken its worker (timed
/// out or cancelled just as a worker was handed to it), it gives that worker back.
struct Waiting<'a> {
    live: &'a Live,
    rx: oneshot::Receiver<Arc<Replica>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(r) = self.rx.try_recv() {
            self.live.release(r);
        }
    }
}

/// A place on a worker for one request; the drop gives it back (`Live::release`).
struct Lease {
    live: Arc<Live>,
    replica: Option<Arc<Replica>>,
    /// It waited in the queue for its worker.
    queued: bool,
}

impl Lease {
    fn replica(&self) -> &Arc<Replica> {
        self.replica.as_ref().expect("held until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.replica.take() {
            self.live.release(r);
        }
    }
}

pub fn dir_of(state: &AppState, id: &str) -> PathBuf {
    state.data_dir.join("deployments").join(id)
}

/// Generation `generation`'s log: its replicas' stderr and cairn's lines about it. One file per
/// generation, so that the tail of a failed update shows only the generation that failed.
fn log_path(state: &AppState, id: &str, generation: i64) -> PathBuf {
    dir_of(state, id).join("logs").join(format!("generation-{generation}.log"))
}

fn say(state: &AppState, id: &str, generation: i64, msg: &str) {
    use std::io::Write;
    let path = log_path(state, id, generation);
    if let Some(dir) = path.parent() {
        // Only `logs/` of a folder that is there: a line said by a task that outlived the
        // deployment's delete (a replica's supervisor winding down) must not bring its removed
        // folder back. `launch` makes the folder before the first line.
        let _ = std::fs::create_dir(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "[cairn] {msg}");
    }
}

fn tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The API view of a stored deployment.
pub fn view(d: &DeploymentRecord) -> Deployment {
    let models: Vec<String> = d.models.iter().map(|m| m.to_string()).collect();
    Deployment {
        id: d.id.clone(),
        name: d.name.clone(),
        endpoint_name: d.endpoint_name.clone(),
        model: if models.len() == 1 { models.first().cloned() } else { None },
        models,
        spec: d.spec.clone(),
        state: d.state,
        reason: d.reason.clone(),
        generation: d.generation,
        update_error: d.update_error.clone(),
        pending_update: d.pending_update.clone(),
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// The names of the deployments of `e` that may take traffic (not being deleted).
pub async fn names(state: &AppState, e: &EndpointRecord) -> Result<Vec<String>, Error> {
    Ok(state
        .store
        .deployments_for_scoring(&e.id)
        .await?
        .iter()
        .filter(|d| d.state != DeploymentState::Deleting)
        .map(|d| d.name.clone())
        .collect())
}

/// `d`'s model versions as the store's model-version uses take them.
fn versions_of(d: &DeploymentRecord) -> Vec<(&str, i64)> {
    d.models.iter().map(|m| (m.name.as_str(), m.version)).collect()
}

/// The versions the spec's model references name now (404 for an unknown model or version).
async fn resolve_models(
    state: &AppState,
    ws: &Workspace,
    req: &CreateDeployment,
) -> Result<Vec<cairn_core::models::ModelVersion>, Error> {
    let mut out = Vec::new();
    for (name, vref) in req.model_refs()? {
        out.push(state.store.model_version(ws, &name, &vref).await?);
    }
    Ok(out)
}

fn deployed(versions: &[cairn_core::models::ModelVersion]) -> Vec<DeployedModel> {
    versions.iter().map(|mv| DeployedModel { name: mv.name.clone(), version: mv.version }).collect()
}

/// Validates and records a deployment (state Creating, its model versions marked as used), then
/// launches it in the background.
pub async fn create(
    state: &Arc<AppState>,
    ws: &Workspace,
    e: &EndpointRecord,
    req: CreateDeployment,
) -> Result<DeploymentRecord, Error> {
    validate_create(&req)?;
    if let Some(en) = &req.endpoint_name {
        if en != &e.name {
            return Err(Error::invalid(format!(
                "the deployment names endpoint_name \"{en}\" but is being created under endpoint \"{}\"",
                e.name
            )));
        }
    }
    let versions = resolve_models(state, ws, &req).await?;
    let _environment_use = environment_use(state, &ws.id, false).await?;
    check_sources(state, ws, &req, &versions).await?;
    let now = now_ms();
    let d = DeploymentRecord {
        id: DeploymentRecord::new_id(),
        endpoint_id: e.id.clone(),
        endpoint_name: e.name.clone(),
        workspace_id: ws.id.clone(),
        workspace: ws.name.clone(),
        name: req.name.clone(),
        spec: req,
        models: deployed(&versions),
        state: DeploymentState::Creating,
        reason: String::new(),
        generation: 0,
        update_error: String::new(),
        pending_update: None,
        created_at: now,
        updated_at: now,
    };
    // Held until the deployment is launched: an endpoint delete waits for it, then finds and
    // deletes this deployment, or goes first, and the insert finds no endpoint (404).
    let endpoint_lock = state.deployments.endpoint_lock(&e.id);
    let _creating = endpoint_lock.lock().await;
    state.store.create_deployment(&d).await?;
    state.store.set_deployment_server(&d.id, &state.server.id).await?;
    if let Err(err) = state.store.add_model_version_uses(ws, &versions_of(&d), USE_KIND, &d.id).await {
        state.store.delete_deployment(&d.id).await?;
        return Err(err);
    }
    if launch(state.clone(), d.clone()).is_err() {
        // Deleted (through its endpoint or workspace, by another request) before it started.
        let _ = state.store.keep_only_model_version_uses(ws, &[], USE_KIND, &d.id).await;
        return Err(Error::conflict(format!(
            "deployment \"{}\" of endpoint \"{}\" was deleted while it was being created",
            d.name, e.name
        )));
    }
    Ok(d)
}

/// Checks that what `req` starts replicas from exists: its environment (when named), and its code
/// snapshot, or, without code, that its one model is in MLflow format.
async fn check_sources(
    state: &AppState,
    ws: &Workspace,
    req: &CreateDeployment,
    versions: &[cairn_core::models::ModelVersion],
) -> Result<(), Error> {
    if let Some(env) = &req.environment {
        let (env_name, env_version) = cairn_core::names::parse_environment_ref(env)?;
        state.store.environment(ws, &env_name, env_version).await?;
    }
    match &req.code_configuration {
        Some(code) => crate::routes::jobs::read_snapshot(state, &ws.id, &code.code).await.map(|_| ()),
        None => match versions {
            [mv] => crate::serving::require_mlflow_model(state, ws, mv).await,
            _ => Err(Error::invalid("a deployment without code_configuration serves exactly one model")),
        },
    }
}

/// Starts preparing and running `d` in the background; `Err(Closed)` when it is being deleted.
fn launch(state: Arc<AppState>, d: DeploymentRecord) -> Result<(), Closed> {
    let id = d.id.clone();
    state.clone().deployments.spawn_work(&id, move |cancel| async move {
        let _ = tokio::fs::create_dir_all(dir_of(&state, &d.id)).await;
        match prepare_and_start(&state, &d, &cancel).await {
            Ok(()) => {}
            // Deleted meanwhile: the delete removes what was prepared.
            Err(_) if cancel.is_cancelled() => {}
            Err(err) => {
                let reason = format!("{err}");
                say(&state, &d.id, d.generation, &format!("failed: {reason}"));
                let _ =
                    state.store.set_deployment_state(&d.id, DeploymentState::Failed, &reason, now_ms()).await;
            }
        }
    })
}

/// Re-launches the deployments that were Creating, Updating, Healthy or Unhealthy when the server
/// stopped; an update that was running is abandoned: the generation recorded (the one serving
/// before it) comes back.
pub async fn relaunch_all(state: &Arc<AppState>) -> Result<(), Error> {
    // Replicas run on the server that owns the deployment (with several servers on one database,
    // each starts only its own). One recorded before owners were (migration 0016) is taken when
    // its folder is in this data directory, or when no other server is alive to own it.
    let me = state.server.id.as_str();
    let others_alive = !state.store.other_live_servers(me).await?.is_empty();
    for d in state.store.all_deployments().await? {
        match state.store.deployment_server_id(&d.id).await? {
            Some(owner) if owner == me => {}
            Some(_) => continue,
            None => {
                let local = state.data_dir.join("deployments").join(&d.id).exists();
                if (others_alive && !local) || !state.store.adopt_deployment(&d.id, me).await? {
                    continue;
                }
            }
        }
        match d.state {
            DeploymentState::Failed => {}
            DeploymentState::Deleting => {
                // The server stopped mid-delete: finish it.
                if let Ok(ws) = state.store.workspace(&d.workspace).await {
                    let _ = finish_delete(state, &ws, &d).await;
                }
            }
            _ => {
                // Its log goes on in its folder (made here when it was adopted from elsewhere).
                let _ = tokio::fs::create_dir_all(dir_of(state, &d.id)).await;
                release_abandoned(state, &d).await;
                let d = DeploymentRecord {
                    state: DeploymentState::Creating,
                    reason: String::new(),
                    pending_update: None,
                    updated_at: now_ms(),
                    ..d
                };
                state.store.update_deployment(&d).await?;
                // Not deleted by this server since it started: it cannot be closed.
                let _ = launch(state.clone(), d);
            }
        }
    }
    Ok(())
}

/// What an update cut short by a stop leaves behind, released: the model-version uses it added
/// (only the recorded versions stay used; an update records its new versions when it switches,
/// so before that the new versions' uses are stale, after it the old ones') and the folders of
/// other generations and model versions.
async fn release_abandoned(state: &AppState, d: &DeploymentRecord) {
    if let Ok(ws) = state.store.workspace(&d.workspace).await {
        match state.store.keep_only_model_version_uses(&ws, &versions_of(d), USE_KIND, &d.id).await {
            Ok(0) => {}
            Ok(n) => say(
                state,
                &d.id,
                d.generation,
                &format!("restart: released {n} model version(s) an unfinished update had reserved"),
            ),
            Err(e) => tracing::warn!(deployment = %d.id, error = %e, "cannot reconcile model-version uses"),
        }
    }
    let keep_gen = d.generation.to_string();
    if let Ok(mut gens) = tokio::fs::read_dir(dir_of(state, &d.id).join("gen")).await {
        while let Ok(Some(g)) = gens.next_entry().await {
            if g.file_name().to_str() != Some(keep_gen.as_str()) {
                let _ = tokio::fs::remove_dir_all(g.path()).await;
            }
        }
    }
    let keep_models: Vec<PathBuf> = d.models.iter().map(|m| model_dir(state, &d.id, m)).collect();
    if let Ok(mut models) = tokio::fs::read_dir(dir_of(state, &d.id).join("model")).await {
        while let Ok(Some(m)) = models.next_entry().await {
            let Ok(mut versions) = tokio::fs::read_dir(m.path()).await else { continue };
            while let Ok(Some(v)) = versions.next_entry().await {
                if !keep_models.contains(&v.path()) {
                    let _ = tokio::fs::remove_dir_all(v.path()).await;
                }
            }
        }
    }
}

/// The folder of generation `generation` of deployment `id` (its code and sockets).
fn gen_dir(state: &AppState, id: &str, generation: i64) -> PathBuf {
    dir_of(state, id).join("gen").join(generation.to_string())
}

/// Longest socket path used as it is: Unix socket addresses hold 107 bytes (plus NUL), and a
/// replica's socket is this folder plus `/N`.
const MAX_SOCKET_DIR: usize = 100;

/// Creates and returns the folder for a generation's replica sockets: `preferred` when its path
/// is short enough for a socket address, else a private folder under the temporary directory
/// named by a hash of `preferred` (a data directory deep in a tree must not break deployments).
fn socket_dir(preferred: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let dir = if preferred.as_os_str().len() <= MAX_SOCKET_DIR {
        preferred.to_path_buf()
    } else {
        // SAFETY: getuid(2) cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        let base = std::env::temp_dir().join(format!("cairn-{uid}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Another user could have made the folder first (or a symlink in its place): use it only
        // if it is a real folder of ours that nobody else can enter.
        let meta = std::fs::symlink_metadata(&base)?;
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is not a private folder of this user; remove it",
                base.display()
            )));
        }
        let digest = Sha256::digest(preferred.as_os_str().as_encoded_bytes());
        base.join(&hex::encode(digest)[..16])
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    Ok(dir)
}

/// The folder of model version `m` of deployment `id` (shared by the generations using it).
fn model_dir(state: &AppState, id: &str, m: &DeployedModel) -> PathBuf {
    dir_of(state, id).join("model").join(&m.name).join(m.version.to_string())
}

/// Writes the files of model version `m` read-only into its folder, unless they are there.
async fn materialise_model(
    state: &Arc<AppState>,
    ws: &Workspace,
    d: &DeploymentRecord,
    m: &DeployedModel,
) -> Result<PathBuf, Error> {
    let io = |what: &'static str| move |e: std::io::Error| Error::internal(format!("{what}: {e}"));
    let model_dir = model_dir(state, &d.id, m);
    if model_dir.exists() {
        return Ok(model_dir);
    }
    let files = state.store.model_version_files(ws, &m.name, m.version).await?;
    let blobs = crate::routes::jobs::blobs_of(state, &ws.id);
    let partial = dir_of(state, &d.id).join("model.partial");
    let _ = tokio::fs::remove_dir_all(&partial).await;
    for f in &files {
        let rel = RelPath::parse(&f.path)?;
        let target = rel.as_str().split('/').fold(partial.clone(), |p, c| p.join(c));
        let (_, stream) = blobs.get_stream(&RelPath::parse(&f.sha256)?).await.map_err(|_| {
            Error::invalid(format!("model {m} file \"{}\" is missing from the store", f.path))
        })?;
        crate::jobs::runner::write_stream(&target, stream).await?;
        let mut perm = tokio::fs::metadata(&target).await.map_err(io("model file"))?.permissions();
        perm.set_readonly(true);
        tokio::fs::set_permissions(&target, perm).await.map_err(io("model file"))?;
    }
    tokio::fs::create_dir_all(&partial).await.map_err(io("model folder"))?;
    tokio::fs::create_dir_all(model_dir.parent().expect("has a parent")).await.map_err(io("model folder"))?;
    tokio::fs::rename(&partial, &model_dir).await.map_err(io("model folder"))?;
    Ok(model_dir)
}

/// `AZUREML_MODEL_DIR` for generation `gen` of `d`: with one model its version's folder (as
/// before deployments held several); with several, `gen/G/models` holding `NAME/VERSION` for
/// each (links to the shared folders), so that the newest version a script finds is its own
/// generation's, never one an update is bringing beside it.
async fn model_root(
    state: &Arc<AppState>,
    ws: &Workspace,
    d: &DeploymentRecord,
    gen: &Path,
) -> Result<PathBuf, Error> {
    let io = |what: &'static str| move |e: std::io::Error| Error::internal(format!("{what}: {e}"));
    let mut dirs = Vec::with_capacity(d.models.len());
    for m in &d.models {
        dirs.push(materialise_model(state, ws, d, m).await?);
    }
    if let [one] = dirs.as_slice() {
        return Ok(one.clone());
    }
    let root = gen.join("models");
    let _ = tokio::fs::remove_dir_all(&root).await;
    for (m, dir) in d.models.iter().zip(&dirs) {
        let by_name = root.join(&m.name);
        tokio::fs::create_dir_all(&by_name).await.map_err(io("models folder"))?;
        tokio::fs::symlink(dir, by_name.join(m.version.to_string())).await.map_err(io("models folder"))?;
    }
    Ok(root)
}

/// Materialises the model files and the code of `d`'s generation and builds (or finds) the
/// environment: the one named, or for a deployment without code the MLflow model's own; returns
/// how its replicas are started.
async fn materialise(state: &Arc<AppState>, d: &DeploymentRecord) -> Result<Launch, Error> {
    let io = |what: &'static str| move |e: std::io::Error| Error::internal(format!("{what}: {e}"));
    let gen = gen_dir(state, &d.id, d.generation);
    tokio::fs::create_dir_all(&gen).await.map_err(io("cannot create the deployment's folder"))?;
    let ws = state.store.workspace(&d.workspace).await?;

    // Model files, read-only, in the layout AZUREML_MODEL_DIR has in Azure ML v1 (one model or
    // several); generations using the same version share its files.
    let model_dir = model_root(state, &ws, d, &gen).await?;
    // Without code, the MLflow model is served as is: its folder tells the environment (when the
    // deployment names none) and the tensor signature.
    let mlflow_folder = match d.spec.mode() {
        ScoringMode::Mlflow => Some(crate::serving::model_folder(&model_dir)?),
        ScoringMode::Script => None,
    };
    let spec: EnvironmentSpec = match (&d.spec.environment, &mlflow_folder) {
        (Some(env), _) => {
            let (env_name, env_version) = cairn_core::names::parse_environment_ref(env)?;
            let environment = state.store.environment(&ws, &env_name, env_version).await?;
            say(
                state,
                &d.id,
                d.generation,
                &format!(
                    "generation {}: preparing environment {}@{}",
                    d.generation, environment.name, environment.version
                ),
            );
            serde_json::from_value(environment.spec.clone())
                .map_err(|e| Error::internal(format!("environment {env_name} has an unreadable spec: {e}")))?
        }
        (None, Some(folder)) => {
            let (spec, from) = crate::serving::derived_environment(folder)?;
            say(
                state,
                &d.id,
                d.generation,
                &format!(
                    "generation {}: preparing the environment of the model's {from} ({} package(s), python {})",
                    d.generation,
                    spec.packages.len(),
                    spec.python.as_deref().unwrap_or("of the server")
                ),
            );
            spec
        }
        (None, None) => return Err(Error::invalid("environment is required with code_configuration")),
    };
    let built = state
        .env_builder()?
        .ensure(&spec)
        .await
        .map_err(|e| Error::invalid(format!("environment build failed: {e}")))?;

    let mut env: Vec<(String, String)> = vec![
        ("PYTHONPATH".into(), state.runtime_dir().display().to_string()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("AZUREML_MODEL_DIR".into(), model_dir.display().to_string()),
        ("CAIRN_SCORING_MODE".into(), d.spec.mode().as_str().into()),
        // Each worker process takes one request at a time (the gateway queues the others), as
        // gunicorn's sync workers do: score.py code is rarely thread-safe, and threads would only
        // share the GIL.
        ("CAIRN_REPLICA_CONCURRENCY".into(), "1".into()),
        ("CAIRN_REPLICA_MAX_BODY_BYTES".into(), state.max_score_body_bytes.to_string()),
    ];
    let code_dir = gen.join("code");
    let served = match (&d.spec.code_configuration, &mlflow_folder) {
        (Some(code), _) => {
            if !code_dir.exists() {
                let partial = gen.join("code.partial");
                let _ = tokio::fs::remove_dir_all(&partial).await;
                tokio::fs::create_dir_all(&partial).await.map_err(io("code folder"))?;
                crate::jobs::runner::materialize_snapshot(state, &ws.id, &code.code, &partial).await?;
                tokio::fs::rename(&partial, &code_dir).await.map_err(io("code folder"))?;
            }
            let script_rel = RelPath::parse(&code.scoring_script)?;
            let script = script_rel.as_str().split('/').fold(code_dir.clone(), |p, c| p.join(c));
            if !script.is_file() {
                return Err(Error::invalid(format!(
                    "code_configuration.scoring_script \"{}\" is not in the code snapshot",
                    script_rel.as_str()
                )));
            }
            env.push(("CAIRN_SCORING_SCRIPT".into(), script.display().to_string()));
            crate::serving::Served::script()
        }
        (None, folder) => {
            // No code to run in: the replica's working directory is an empty folder of its own.
            tokio::fs::create_dir_all(&code_dir).await.map_err(io("code folder"))?;
            crate::serving::Served::mlflow(folder.as_deref().unwrap_or(&model_dir))
        }
    };

    let sock_dir = socket_dir(&gen.join("sock")).map_err(io("socket folder"))?;
    if let Some(venv) = &built.venv {
        env.push(("VIRTUAL_ENV".into(), venv.display().to_string()));
    }
    // A known size profile limits each replica as a job's node is limited: thread variables for
    // its cores, the resident-memory watchdog for its memory. Other names (Azure's many VM sizes)
    // are accepted and only noted.
    let mut memory_limit = None;
    if let Some(resources) = &d.spec.resources {
        // Checked at create; threads get whole cores (a fraction still needs one thread).
        let limits = resources.limits()?;
        let size = cairn_jobs::compute::Size {
            name: "resources".into(),
            cores: limits.cores.ceil().max(1.0) as u32,
            memory_gb: limits.memory_bytes as f64 / (1u64 << 30) as f64,
        };
        env.extend(cairn_jobs::compute::thread_limits(&size));
        memory_limit = Some(limits.memory_bytes);
        say(
            state,
            &d.id,
            d.generation,
            &format!(
                "resources: {} core(s) ({} thread(s)), {} MiB of memory per replica",
                limits.cores,
                size.cores,
                limits.memory_bytes >> 20
            ),
        );
    }
    if let Some(name) = &d.spec.instance_type {
        match crate::routes::resources::resolve_size(state, &ws.id, name).await? {
            Some(size) => {
                env.extend(cairn_jobs::compute::thread_limits(&size));
                memory_limit = Some((size.memory_gb * (1u64 << 30) as f64) as u64);
                say(
                    state,
                    &d.id,
                    d.generation,
                    &format!(
                        "instance_type {name}: {} core(s) (thread variables), {} GiB of memory per replica",
                        size.cores, size.memory_gb
                    ),
                );
            }
            None => say(
                state,
                &d.id,
                d.generation,
                &format!("instance_type {name} is not a known size: no per-replica limits"),
            ),
        }
    }
    env.extend(spec.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(d.spec.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Launch {
        python: built.python.clone(),
        cwd: code_dir,
        env: Arc::new(env),
        log: log_path(state, &d.id, d.generation),
        sock_dir,
        memory_limit,
        served: Arc::new(served),
    })
}

/// A generation of `d` with no replica yet.
fn new_live(d: &DeploymentRecord, launch: Launch) -> Arc<Live> {
    Arc::new(Live {
        id: d.id.clone(),
        key: key(&d.endpoint_id, &d.name),
        endpoint_name: d.endpoint_name.clone(),
        name: d.name.clone(),
        generation: d.generation,
        replicas: RwLock::new(Vec::new()),
        workers: d.spec.worker_count().unwrap_or(1),
        next: AtomicUsize::new(0),
        gate: Gate::default(),
        queue: Mutex::new(VecDeque::new()),
        per_instance: d.spec.request_settings.max_concurrent() as usize,
        timeout: Duration::from_millis(d.spec.request_settings.timeout_ms() as u64),
        queue_wait: d.spec.request_settings.max_queue_wait_ms.map(|ms| Duration::from_millis(ms as u64)),
        depth: if d.spec.request_settings.max_queue_wait_ms.is_some() { 1 } else { PIPELINE_DEPTH },
        liveness: Probe::from(&d.spec.liveness()),
        readiness: Probe::from(&d.spec.readiness()),
        cancel: CancellationToken::new(),
        updating: AtomicBool::new(false),
        successor: Mutex::new(None),
        sock_dir: launch.sock_dir.clone(),
        launch,
    })
}

/// Adds instances until `live` has `n` (each `live.workers` worker processes with their
/// supervisors); returns the new workers.
fn add_replicas(state: &Arc<AppState>, live: &Arc<Live>, n: usize) -> Vec<Arc<Replica>> {
    let mut added = Vec::new();
    let mut replicas = live.replicas.write().unwrap();
    while replicas.len() < n * live.workers {
        let r = live.new_replica(replicas.len());
        let task = tokio::spawn(supervise(state.clone(), live.clone(), r.clone()));
        *r.task.lock().unwrap() = Some(task);
        replicas.push(r.clone());
        added.push(r);
    }
    added
}

/// Waits until every replica of `these` is ready: Ok(true); Ok(false) when the generation is
/// stopped meanwhile; Err with the reason when one's first start failed.
async fn wait_ready(live: &Live, these: &[Arc<Replica>]) -> Result<bool, String> {
    loop {
        if live.cancel.is_cancelled() {
            return Ok(false);
        }
        if let Some(reason) = these.iter().find_map(|r| r.failed.lock().unwrap().clone()) {
            return Err(reason);
        }
        if these.iter().all(|r| r.ever_ready.load(Ordering::SeqCst)) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Prepares `d` and starts its replicas; returns early, starting nothing more, once `cancel` (its
/// delete) fires.
async fn prepare_and_start(
    state: &Arc<AppState>,
    d: &DeploymentRecord,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    // An environment build cut short is left Interrupted, to be built again by its next use.
    let launch = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Ok(()),
        launch = materialise(state, d) => launch?,
    };
    let live = new_live(d, launch);
    {
        // Checked under the map's lock: a delete that cancels after this finds `live` in the map.
        let mut map = state.deployments.live.lock().unwrap();
        if cancel.is_cancelled() {
            return Ok(());
        }
        if let Some(old) = map.insert(live.key.clone(), live.clone()) {
            old.cancel.cancel();
        }
    }
    let n = d.spec.instance_count as usize;
    say(
        state,
        &d.id,
        d.generation,
        &format!(
            "generation {}: starting {n} replica(s) with {}",
            d.generation,
            live.launch.python.display()
        ),
    );
    let added = add_replicas(state, &live, n);
    // Healthy once every socket exists; Failed as soon as one replica's first start fails.
    match wait_ready(&live, &added).await {
        Ok(false) => Ok(()),
        Ok(true) => {
            say(state, &d.id, d.generation, "all replicas ready: Healthy");
            state.store.set_deployment_state(&d.id, DeploymentState::Healthy, "", now_ms()).await?;
            Ok(())
        }
        Err(reason) => {
            stop(&live).await;
            let mut map = state.deployments.live.lock().unwrap();
            if map.get(&live.key).is_some_and(|l| Arc::ptr_eq(l, &live)) {
                map.remove(&live.key);
            }
            Err(Error::invalid(reason))
        }
    }
}

#[derive(Clone)]
struct Launch {
    python: PathBuf,
    cwd: PathBuf,
    env: Arc<Vec<(String, String)>>,
    log: PathBuf,
    sock_dir: PathBuf,
    /// Resident memory a replica's process group may use (its size profile), in bytes.
    memory_limit: Option<u64>,
    /// What the inference-protocol routes show and check.
    served: Arc<crate::serving::Served>,
}

fn spawn_replica(l: &Launch, socket: &Path) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&l.log)?;
    let mut cmd = tokio::process::Command::new(&l.python);
    cmd.args(["-m", "cairn.replica"])
        .current_dir(&l.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("CAIRN_REPLICA_SOCKET", socket)
        // A replica whose server dies while it starts would otherwise see init as its parent and
        // take it for the one it must outlive no longer than.
        .env("CAIRN_REPLICA_PARENT_PID", std::process::id().to_string())
        .kill_on_drop(true);
    cmd.process_group(0);
    for (k, v) in l.env.iter() {
        cmd.env(k, v);
    }
    cmd.spawn()
}

/// Whether `live`'s replicas may write the deployment's state: it is the generation serving and
/// no update is running.
fn owns_state(state: &AppState, live: &Arc<Live>) -> bool {
    !live.updating.load(Ordering::SeqCst)
        && state.deployments.live.lock().unwrap().get(&live.key).is_some_and(|l| Arc::ptr_eq(l, live))
}

/// One `ping` over a fresh connection, answered with 200 within `timeout`.
async fn ping(socket: &Path, timeout: Duration) -> bool {
    let head = FrameHeader {
        id: 0,
        route: "ping",
        method: "",
        query: "",
        content_type: None,
        headers: &serde_json::Map::new(),
        deadline_ns: None,
    }
    .encode();
    let attempt = async {
        let mut s = UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
        exchange(&mut s, &head, &[]).await
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(reply)) if reply.status == 200)
}

/// The probes' counters for one run of a worker.
struct Probing {
    next_live: Instant,
    next_ready: Instant,
    live_failures: u32,
    ready_failures: u32,
    ready_successes: u32,
}

/// Runs replica `r` until it is stopped: starts it, waits for its socket, probes it, and restarts
/// it with backoff whenever it exits or fails its liveness probe (the deployment is Unhealthy
/// meanwhile).
async fn supervise(state: Arc<AppState>, live: Arc<Live>, r: Arc<Replica>) {
    let l = &live.launch;
    // Each worker is its own process group: an instance's memory is shared out equally.
    let memory_limit = l.memory_limit.map(|m| m / live.workers as u64);
    let mut attempt: u32 = 0;
    loop {
        let _ = std::fs::remove_file(&r.socket);
        let mut child = match spawn_replica(l, &r.socket) {
            Ok(c) => c,
            Err(e) => {
                *r.failed.lock().unwrap() = Some(format!("cannot start {}: {e}", r.label));
                return;
            }
        };
        r.pgid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let started = Instant::now();
        let exit = 'run: {
            // Wait for readiness (the socket appearing), an exit, or the stop.
            loop {
                if r.cancel.is_cancelled() {
                    break 'run None;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    break 'run Some(status);
                }
                if r.socket.exists() {
                    break;
                }
                tokio::select! {
                    _ = r.cancel.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            r.ready.store(true, Ordering::SeqCst);
            live.dispatch();
            if r.ever_ready.swap(true, Ordering::SeqCst) {
                say(&state, &live.id, live.generation, &format!("{} ready again", r.label));
                mark_healthy_if_all_ready(&state, &live).await;
            }
            // Probe until it exits or is stopped.
            let mut p = Probing {
                next_live: started + live.liveness.initial_delay,
                next_ready: started + live.readiness.initial_delay,
                live_failures: 0,
                ready_failures: 0,
                ready_successes: 0,
            };
            loop {
                let due = p.next_live.min(p.next_ready);
                let pgid = r.pgid.load(Ordering::SeqCst);
                let over_memory = async {
                    match memory_limit {
                        Some(limit) if pgid != 0 => cairn_jobs::process::exceeds_memory(pgid, limit).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = r.cancel.cancelled() => break 'run None,
                    status = child.wait() => break 'run status.ok(),
                    _ = over_memory => {
                        say(&state, &live.id, live.generation, &format!(
                            "{} exceeded its instance_type's memory ({} MiB resident): killing it",
                            r.label, memory_limit.unwrap_or(0) >> 20
                        ));
                        r.recycle();
                        continue;
                    }
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
                let now = Instant::now();
                if now >= p.next_live {
                    p.next_live = now + live.liveness.period;
                    if ping(&r.socket, live.liveness.timeout).await {
                        p.live_failures = 0;
                    } else {
                        p.live_failures += 1;
                        if p.live_failures >= live.liveness.failures {
                            say(
                                &state,
                                &live.id,
                                live.generation,
                                &format!(
                                    "{} failed its liveness probe {} time(s) in a row: killing it",
                                    r.label, p.live_failures
                                ),
                            );
                            r.recycle();
                            p.next_live = now + Duration::from_secs(3600);
                        }
                    }
                }
                if now >= p.next_ready {
                    p.next_ready = now + live.readiness.period;
                    let ok = ping(&r.socket, live.readiness.timeout).await;
                    if ok {
                        p.ready_failures = 0;
                        p.ready_successes += 1;
                    } else {
                        p.ready_successes = 0;
                        p.ready_failures += 1;
                    }
                    let in_rotation = r.ready.load(Ordering::SeqCst);
                    if in_rotation && p.ready_failures >= live.readiness.failures {
                        r.ready.store(false, Ordering::SeqCst);
                        r.forget_pipe();
                        let reason = format!(
                            "{} failed its readiness probe {} time(s) in a row: out of rotation",
                            r.label, p.ready_failures
                        );
                        say(&state, &live.id, live.generation, &reason);
                        if owns_state(&state, &live) {
                            let _ = state
                                .store
                                .set_deployment_state(&live.id, DeploymentState::Unhealthy, &reason, now_ms())
                                .await;
                        }
                    } else if !in_rotation && p.ready_successes >= live.readiness.success {
                        r.ready.store(true, Ordering::SeqCst);
                        live.dispatch();
                        say(
                            &state,
                            &live.id,
                            live.generation,
                            &format!("{} answers its readiness probe: back in rotation", r.label),
                        );
                        mark_healthy_if_all_ready(&state, &live).await;
                    }
                }
            }
        };
        r.ready.store(false, Ordering::SeqCst);
        r.forget_pipe();
        let Some(status) = exit else {
            // Stopping: SIGTERM lets requests in flight finish, SIGKILL after a grace period.
            if let Some(pid) = child.id() {
                cairn_jobs::process::signal_group(pid, libc::SIGTERM);
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            r.pgid.store(0, Ordering::SeqCst);
            let _ = std::fs::remove_file(&r.socket);
            return;
        };
        r.pgid.store(0, Ordering::SeqCst);
        let code = status.code().map(|c| c.to_string()).unwrap_or_else(|| "none (killed by a signal)".into());
        if !r.ever_ready.load(Ordering::SeqCst) {
            let why = if status.code() == Some(3) {
                "the scoring script failed to import or its init() raised"
            } else {
                "it exited before it was ready"
            };
            *r.failed.lock().unwrap() = Some(format!(
                "{} exited with code {code}: {why}. Log tail:\n{}",
                r.label,
                tail(&l.log, REASON_TAIL_BYTES)
            ));
            return;
        }
        // A replica that ran for a while starts over with short backoff.
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
        }
        let backoff = Duration::from_millis((100u64 << attempt.min(7)).min(10_000));
        attempt += 1;
        r.restarts.fetch_add(1, Ordering::SeqCst);
        let reason = format!("{} exited (code {code}); restarting in {} ms", r.label, backoff.as_millis());
        say(&state, &live.id, live.generation, &reason);
        if owns_state(&state, &live) {
            let _ = state
                .store
                .set_deployment_state(&live.id, DeploymentState::Unhealthy, &reason, now_ms())
                .await;
        }
        tokio::select! {
            _ = r.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

async fn mark_healthy_if_all_ready(state: &AppState, live: &Arc<Live>) {
    if live.replicas().iter().all(|r| r.ready.load(Ordering::SeqCst)) && owns_state(state, live) {
        let _ = state.store.set_deployment_state(&live.id, DeploymentState::Healthy, "", now_ms()).await;
    }
}

/// Stops every replica of `live` (and of the generation an update is starting beside it) and
/// waits for their supervisors.
async fn stop(live: &Live) {
    live.cancel.cancel();
    // Requests waiting for a worker get 503 now rather than 504 later.
    live.queue.lock().unwrap().clear();
    let successor = live.successor.lock().unwrap().take();
    if let Some(next) = successor {
        Box::pin(stop(&next)).await;
    }
    let tasks: Vec<_> = live.replicas().iter().filter_map(|r| r.task.lock().unwrap().take()).collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// Applies an update (the whole new spec): refused while the deployment is being created, updated
/// or deleted (409). Returns the deployment as it is now (Updating when replicas start or stop in
/// the background; `--wait` polls until a final state).
pub async fn update(
    state: &Arc<AppState>,
    ws: &Workspace,
    e: &EndpointRecord,
    d: DeploymentRecord,
    mut req: CreateDeployment,
) -> Result<DeploymentRecord, Error> {
    if let Some(en) = &req.endpoint_name {
        if en != &e.name {
            return Err(Error::invalid(format!(
                "an update cannot move deployment \"{}\" from endpoint \"{}\" to \"{en}\"",
                d.name, e.name
            )));
        }
    }
    req.endpoint_name = d.spec.endpoint_name.clone().or(req.endpoint_name);
    // Only the server running the replicas can replace them (several servers on one database).
    if let Some(owner) = state.store.deployment_server(&d.endpoint_id, &d.name).await? {
        if owner.id != state.server.id {
            return Err(Error::Unavailable(format!(
                "deployment \"{}\" runs on another server ({}, {}): send the update there",
                d.name, owner.host, owner.url
            )));
        }
    }
    let mut kind = classify_update(&d.spec, &req)?;
    let versions = resolve_models(state, ws, &req).await?;
    // Held until the new spec is stored, on every path below.
    let _environment_use = environment_use(state, &ws.id, false).await?;
    check_sources(state, ws, &req, &versions).await?;
    let models = deployed(&versions);
    if models != d.models {
        // The same reference (an alias) may now name another version.
        kind = UpdateKind::Roll;
    }
    let busy = |what: &str| {
        Error::conflict(format!(
            "deployment \"{}\" of endpoint \"{}\" is {what}: wait until it is Healthy, Unhealthy or Failed",
            d.name, e.name
        ))
    };
    match d.state {
        DeploymentState::Creating => return Err(busy("being created")),
        DeploymentState::Updating => return Err(busy("being updated")),
        DeploymentState::Deleting => return Err(busy("being deleted")),
        _ => {}
    }
    let mut next = DeploymentRecord {
        spec: req,
        models,
        update_error: String::new(),
        pending_update: None,
        updated_at: now_ms(),
        ..d.clone()
    };
    let current = state.deployments.get(&d.endpoint_id, &d.name);
    let Some(live) = current.filter(|_| d.state != DeploymentState::Failed) else {
        // Nothing runs (Failed): start the new spec as a new generation, like a create.
        if d.state != DeploymentState::Failed {
            return Err(busy("not running yet"));
        }
        next.generation = d.generation + 1;
        next.state = DeploymentState::Creating;
        next.reason = String::new();
        state.store.add_model_version_uses(ws, &versions_of(&next), USE_KIND, &d.id).await?;
        state.store.update_deployment(&next).await?;
        release_model(state, ws, &d, &next).await;
        let _ = tokio::fs::remove_dir_all(gen_dir(state, &d.id, d.generation)).await;
        say(
            state,
            &d.id,
            next.generation,
            &format!("update: starting generation {} in place of the failed one", next.generation),
        );
        if launch(state.clone(), next.clone()).is_err() {
            release_model(state, ws, &next, &d).await;
            return Err(busy("being deleted"));
        }
        return Ok(next);
    };
    if live.updating.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return Err(busy("being updated"));
    }
    match kind {
        UpdateKind::Nothing => {
            live.updating.store(false, Ordering::SeqCst);
            state.store.update_deployment(&next).await?;
            Ok(next)
        }
        UpdateKind::Scale => {
            next.state = DeploymentState::Updating;
            next.reason =
                format!("scaling from {} to {} replica(s)", d.spec.instance_count, next.spec.instance_count);
            // What serves stays recorded until the scaling is done; what was asked for is shown
            // beside it.
            let scaling = DeploymentRecord {
                spec: d.spec.clone(),
                pending_update: Some(next.spec.clone()),
                ..next.clone()
            };
            if let Err(err) = state.store.update_deployment(&scaling).await {
                live.updating.store(false, Ordering::SeqCst);
                return Err(err);
            }
            let (st, l, n) = (state.clone(), live.clone(), next);
            if state.deployments.spawn_work(&d.id, move |_| scale(st, l, n)).is_err() {
                live.updating.store(false, Ordering::SeqCst);
                return Err(busy("being deleted"));
            }
            Ok(scaling)
        }
        UpdateKind::Roll => {
            next.generation = d.generation + 1;
            let updating = DeploymentRecord {
                state: DeploymentState::Updating,
                reason: format!("starting generation {} beside generation {}", next.generation, d.generation),
                pending_update: Some(next.spec.clone()),
                ..d.clone()
            };
            let begun = async {
                state.store.add_model_version_uses(ws, &versions_of(&next), USE_KIND, &d.id).await?;
                state.store.update_deployment(&updating).await?;
                Ok::<_, Error>(())
            };
            if let Err(err) = begun.await {
                live.updating.store(false, Ordering::SeqCst);
                return Err(err);
            }
            let (st, w, l, old, new) = (state.clone(), ws.clone(), live.clone(), d.clone(), next.clone());
            if state.deployments.spawn_work(&d.id, move |cancel| roll(st, w, l, old, new, cancel)).is_err() {
                live.updating.store(false, Ordering::SeqCst);
                release_model(state, ws, &next, &d).await;
                return Err(busy("being deleted"));
            }
            Ok(updating)
        }
    }
}

/// Forgets the model-version uses of `old` that `new` does not share (and removes their files).
async fn release_model(state: &AppState, ws: &Workspace, old: &DeploymentRecord, new: &DeploymentRecord) {
    for m in old.models.iter().filter(|m| !new.models.contains(m)) {
        let _ = state.store.remove_model_version_use(ws, &m.name, m.version, USE_KIND, &old.id).await;
        let _ = tokio::fs::remove_dir_all(model_dir(state, &old.id, m)).await;
    }
}

/// The state a generation's replicas add up to, with the reason when not Healthy.
fn health_of(live: &Live) -> (DeploymentState, String) {
    let down: Vec<String> =
        live.replicas().iter().filter(|r| !r.ready.load(Ordering::SeqCst)).map(|r| r.label.clone()).collect();
    if down.is_empty() {
        (DeploymentState::Healthy, String::new())
    } else {
        (DeploymentState::Unhealthy, format!("not ready: {}", down.join(", ")))
    }
}

/// Changes the number of replicas of the running generation: new ones start (the others keep
/// serving); removed ones leave the rotation, finish their requests and stop.
async fn scale(state: Arc<AppState>, live: Arc<Live>, mut next: DeploymentRecord) {
    let n = next.spec.instance_count as usize;
    let before = live.replicas().len();
    say(&state, &live.id, live.generation, &format!("scaling from {before} to {n} replica(s)"));
    if n > before {
        let added = add_replicas(&state, &live, n);
        if let Err(reason) = wait_ready(&live, &added).await {
            // Keep what served before: drop the new replicas, record why.
            retire_replicas(&live, before).await;
            next.spec.instance_count = before as i64;
            next.update_error = format!("scaling to {n} replica(s) failed: {reason}");
            say(&state, &live.id, live.generation, &next.update_error);
        }
    } else {
        retire_replicas(&live, n).await;
    }
    live.updating.store(false, Ordering::SeqCst);
    (next.state, next.reason) = health_of(&live);
    next.updated_at = now_ms();
    if !live.cancel.is_cancelled() {
        let _ = state.store.update_deployment(&next).await;
    }
}

/// Removes the instances past the first `keep`: out of the rotation first, then drained (their
/// requests finish) and stopped.
async fn retire_replicas(live: &Live, keep: usize) {
    let gone: Vec<Arc<Replica>> = {
        let mut replicas = live.replicas.write().unwrap();
        let k = (keep * live.workers).min(replicas.len());
        replicas.split_off(k)
    };
    {
        // Under the queue's lock: once out of the rotation, no request is handed to them.
        let _queue = live.queue.lock().unwrap();
        for r in &gone {
            r.ready.store(false, Ordering::SeqCst);
        }
    }
    let deadline = Instant::now() + live.timeout + DRAIN_MARGIN;
    for r in &gone {
        while r.load.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        r.cancel.cancel();
    }
    for r in gone {
        let task = r.task.lock().unwrap().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// The rolling replacement: generation `next` starts beside `old`'s; once all its replicas are
/// ready the gateway switches to it and `old` drains and stops. If it fails to start, `old`
/// keeps serving and the failure is recorded. `cancel` (a delete) stops the preparation; the
/// delete stops the replicas.
async fn roll(
    state: Arc<AppState>,
    ws: Workspace,
    old: Arc<Live>,
    d: DeploymentRecord,
    mut next: DeploymentRecord,
    cancel: CancellationToken,
) {
    let started = async {
        let launch = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(None),
            _ = old.cancel.cancelled() => return Ok(None),
            launch = materialise(&state, &next) => launch?,
        };
        let live = new_live(&next, launch);
        *old.successor.lock().unwrap() = Some(live.clone());
        if old.cancel.is_cancelled() || cancel.is_cancelled() {
            // Deleted while preparing: `stop(old)` may have run before the successor was set.
            stop(&live).await;
            return Ok(None);
        }
        let n = next.spec.instance_count as usize;
        say(
            &state,
            &d.id,
            next.generation,
            &format!(
                "generation {}: starting {n} replica(s) with {}",
                next.generation,
                live.launch.python.display()
            ),
        );
        let added = add_replicas(&state, &live, n);
        match wait_ready(&live, &added).await {
            Ok(true) => Ok(Some(live)),
            Ok(false) => Ok(None),
            Err(reason) => {
                stop(&live).await;
                Err(Error::invalid(reason))
            }
        }
    };
    let outcome = started.await;
    match outcome {
        Ok(Some(live)) => {
            // The switch: one map update; requests that already hold `old` finish there. A
            // deployment deleted meanwhile is no longer `old` in the map: stop what was started.
            // Its replicas leave the deployment's state to this task until the update is done.
            live.updating.store(true, Ordering::SeqCst);
            let switched = {
                let mut map = state.deployments.live.lock().unwrap();
                let current = map.get(&live.key).is_some_and(|l| Arc::ptr_eq(l, &old));
                if current {
                    map.insert(live.key.clone(), live.clone());
                }
                current
            };
            old.successor.lock().unwrap().take();
            if !switched {
                stop(&live).await;
                release_model(&state, &ws, &next, &d).await;
                return;
            }
            // Recorded at once (a restart brings the new generation back), but still Updating
            // until the old one has drained and its model version is released.
            next.state = DeploymentState::Updating;
            next.reason =
                format!("generation {} serves; draining generation {}", next.generation, old.generation);
            next.updated_at = now_ms();
            let _ = state.store.update_deployment(&next).await;
            say(&state, &d.id, next.generation, &next.reason);
            old.gate.drain(old.timeout + DRAIN_MARGIN).await;
            stop(&old).await;
            let _ = tokio::fs::remove_dir_all(gen_dir(&state, &d.id, d.generation)).await;
            release_model(&state, &ws, &d, &next).await;
            say(&state, &d.id, next.generation, &format!("generation {} stopped: update done", d.generation));
            live.updating.store(false, Ordering::SeqCst);
            (next.state, next.reason) = health_of(&live);
            next.updated_at = now_ms();
            if !live.cancel.is_cancelled() {
                let _ = state.store.update_deployment(&next).await;
            }
        }
        Ok(None) => {
            old.successor.lock().unwrap().take();
            // The deployment was deleted meanwhile (its files and record go with it).
            release_model(&state, &ws, &next, &d).await;
        }
        Err(err) => {
            old.successor.lock().unwrap().take();
            let reason = format!(
                "update to generation {} failed; generation {} still serves: {err}",
                next.generation, d.generation
            );
            say(&state, &d.id, d.generation, &reason);
            let _ = tokio::fs::remove_dir_all(gen_dir(&state, &d.id, next.generation)).await;
            release_model(&state, &ws, &next, &d).await;
            old.updating.store(false, Ordering::SeqCst);
            let (st, why) = health_of(&old);
            let kept =
                DeploymentRecord { state: st, reason: why, update_error: reason, updated_at: now_ms(), ..d };
            if !old.cancel.is_cancelled() {
                let _ = state.store.update_deployment(&kept).await;
            }
        }
    }
}

/// Deletes a deployment: Deleting, replicas stopped, files removed, model uses forgotten.
pub async fn delete(state: &AppState, ws: &Workspace, d: &DeploymentRecord) -> Result<(), Error> {
    state.store.set_deployment_state(&d.id, DeploymentState::Deleting, "", now_ms()).await?;
    finish_delete(state, ws, d).await
}

/// Stops everything of `d` (its start or update cut short, then its replicas), then removes its
/// files, its model-version uses and its record, in that order: a retry after a failure finds
/// the record and finishes.
async fn finish_delete(state: &AppState, ws: &Workspace, d: &DeploymentRecord) -> Result<(), Error> {
    // Closed first: a start that has not put its generation in the map yet will not; one that
    // has is stopped below with it.
    let work = state.deployments.close(&d.id);
    let live = state.deployments.live.lock().unwrap().remove(&key(&d.endpoint_id, &d.name));
    if let Some(live) = &live {
        stop(live).await;
    }
    for task in work {
        let _ = task.await;
    }
    // An update that switched generations while we stopped the old one left the new in the map.
    let switched = {
        let mut map = state.deployments.live.lock().unwrap();
        let k = key(&d.endpoint_id, &d.name);
        if map.get(&k).is_some_and(|l| l.id == d.id) {
            map.remove(&k)
        } else {
            None
        }
    };
    if let Some(live) = switched {
        stop(&live).await;
    }
    // Its request series go with it: label values stay bounded by the deployments that exist.
    state.metrics.remove_deployment(&d.endpoint_name, &d.name);
    // Read-only model files do not stop removal (it needs the folders' write permission only).
    let _ = tokio::fs::remove_dir_all(dir_of(state, &d.id)).await;
    // Every use it recorded, including those of an update cut short.
    state.store.keep_only_model_version_uses(ws, &[], USE_KIND, &d.id).await?;
    state.store.delete_deployment(&d.id).await
}

/// Stops the replicas of deployments that no longer exist: with several servers on one database a
/// deployment may be deleted through another server, and its owner notices here (on each
/// heartbeat) instead of serving it until its next restart.
pub async fn stop_deleted(state: &AppState) -> Result<usize, Error> {
    // Uses of deployments whose rows went without their own delete (a cascade from an endpoint
    // or workspace deleted through another server) would hold their model versions forever.
    state.store.forget_uses_of_missing_deployments(USE_KIND).await?;
    let running: Vec<(String, String)> =
        state.deployments.live.lock().unwrap().iter().map(|(k, l)| (k.clone(), l.id.clone())).collect();
    if running.is_empty() {
        return Ok(0);
    }
    let existing: std::collections::HashSet<String> =
        state.store.all_deployments().await?.into_iter().map(|d| d.id).collect();
    let mut stopped = 0;
    for (key, id) in running.into_iter().filter(|(_, id)| !existing.contains(id)) {
        for task in state.deployments.close(&id) {
            let _ = task.await;
        }
        let live = state.deployments.live.lock().unwrap().remove(&key);
        if let Some(live) = live {
            tracing::info!(deployment = %live.name, endpoint = %live.endpoint_name, "deleted elsewhere: stopping its replicas");
            stop(&live).await;
            state.metrics.remove_deployment(&live.endpoint_name, &live.name);
            let _ = tokio::fs::remove_dir_all(dir_of(state, &id)).await;
            stopped += 1;
        }
    }
    Ok(stopped)
}

/// The tail of a deployment's log (cairn's lines and every replica's stderr): its last `lines`
/// lines, else its last `LOGS_TAIL_BYTES` from the first whole line; and the offset of what it
/// read up to, for a client that follows on from there.
pub fn logs(state: &AppState, d: &DeploymentRecord, lines: Option<u32>) -> (String, u64) {
    let path = log_path(state, &d.id, d.generation);
    match lines {
        None => read_since(&path, 0, LOGS_TAIL_BYTES),
        Some(n) => {
            let (text, end) = read_since(&path, 0, LOG_LINES_BYTES);
            (last_lines(&text, n as usize).to_string(), end)
        }
    }
}

/// The log of deployment `d`'s serving generation from byte `since` on, when `generation` is that
/// generation (else from its start), at most its last `LOGS_TAIL_BYTES` (then from the first line
/// inside them): the text and the offset to ask from next. A client following the log (`--wait`)
/// reads only what is new.
pub fn logs_since(state: &AppState, d: &DeploymentRecord, generation: i64, since: u64) -> (String, u64) {
    let since = if generation == d.generation { since } else { 0 };
    read_since(&log_path(state, &d.id, d.generation), since, LOGS_TAIL_BYTES)
}

/// The text of `path` from byte `since` on, at most its last `max` bytes (then from the first
/// line inside them), and the offset to read from next.
fn read_since(path: &Path, since: u64, max: u64) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = since.min(len);
    let skip_partial = len - from > max;
    let from = from.max(len.saturating_sub(max));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.take(len - from).read_to_end(&mut buf).is_err() {
        return (String::new(), from);
    }
    let end = from + buf.len() as u64;
    let start =
        if skip_partial { buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1) } else { 0 };
    // A character cut by the end of what is written so far is left for the next read.
    let stop = match std::str::from_utf8(&buf[start..]) {
        Err(e) if e.error_len().is_none() => start + e.valid_up_to(),
        _ => buf.len(),
    };
    let text = String::from_utf8_lossy(&buf[start..stop]).into_owned();
    (text, end - (buf.len() - stop) as u64)
}

/// The most lines `logs` gives, and how far back it reads for them.
pub const LOG_LINES_MAX: u32 = 100_000;
const LOG_LINES_BYTES: u64 = 16 << 20;

/// The last `n` lines of `text` (a final line without its newline counts).
fn last_lines(text: &str, n: usize) -> &str {
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &text[i + 1..],
        _ if n > 0 => text,
        _ => "",
    }
}

/// A request for a replica, in the framed protocol's terms.
pub struct Request<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: bytes::Bytes,
}

/// A replica's answer.
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

/// Why a request got no reply from a replica (the gateway maps each to a status).
pub enum ForwardError {
    /// No replica of the deployment is ready (503).
    NotReady,
    /// Past max_concurrent_requests_per_instance × instances (429).
    Busy(usize),
    /// request_timeout_ms passed on the worker; the replica is being recycled (504).
    Timeout(u64),
    /// request_timeout_ms passed before a worker started the request (504): it waited in the
    /// queue, or on its worker behind an earlier request (a worker starts nothing past its
    /// deadline).
    Queued(u64),
    /// request_timeout_ms passed, partly in the queue and partly on a worker, which finishes the
    /// request unhurried (504).
    Expired(u64),
    /// max_queue_wait_ms passed while the request waited in the queue for a worker (503, with
    /// Retry-After: the deployment is saturated, not broken).
    QueueWait(u64),
    /// The replica closed the connection or died mid-request (502).
    Broken(String),
    /// The worker stopped before it reached the request, which was waiting on it behind an
    /// earlier one (503).
    Stranded(String),
}

/// The replicas of a running deployment as the studio shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaHealth {
    pub ready: usize,
    pub total: usize,
    /// Restarts since this server launched the deployment, over all replicas.
    pub restarts: u32,
    pub in_flight: usize,
}

impl Deployments {
    fn get(&self, endpoint_id: &str, name: &str) -> Option<Arc<Live>> {
        self.live.lock().unwrap().get(&key(endpoint_id, name)).cloned()
    }

    /// The replicas of deployment `name` of endpoint `endpoint_id`; `None` when this server runs
    /// none for it (failed, being deleted, or not launched yet).
    pub fn health(&self, endpoint_id: &str, name: &str) -> Option<ReplicaHealth> {
        let live = self.get(endpoint_id, name)?;
        let (total, ready) = live.instances();
        Some(ReplicaHealth {
            ready,
            total,
            restarts: live.replicas().iter().map(|r| r.restarts.load(Ordering::SeqCst)).sum(),
            in_flight: live.gate.count(),
        })
    }

    /// What deployment `name` of endpoint `endpoint_id` serves (its mode, platform and tensor
    /// signature); `None` when this server runs none for it.
    pub fn served(&self, endpoint_id: &str, name: &str) -> Option<Arc<crate::serving::Served>> {
        Some(self.get(endpoint_id, name)?.launch.served.clone())
    }

    /// The gauges `/metrics` shows for every running deployment.
    pub fn gauges(&self) -> Vec<crate::metrics::DeploymentGauges> {
        let all: Vec<Arc<Live>> = self.live.lock().unwrap().values().cloned().collect();
        let mut out: Vec<_> = all
            .iter()
            .map(|live| {
                let (replicas, ready) = live.instances();
                crate::metrics::DeploymentGauges {
                    endpoint: live.endpoint_name.clone(),
                    deployment: live.name.clone(),
                    replicas,
                    ready,
                    restarts: live.replicas().iter().map(|r| r.restarts.load(Ordering::SeqCst) as u64).sum(),
                    in_flight: live.gate.count(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.endpoint, &a.deployment).cmp(&(&b.endpoint, &b.deployment)));
        out
    }

    /// Sends `req` to a free worker of deployment `name` of endpoint `endpoint_id` (after the
    /// requests queued before it) and returns its answer.
    pub async fn forward(
        &self,
        endpoint_id: &str,
        name: &str,
        req: Request<'_>,
    ) -> Result<Reply, ForwardError> {
        // A generation retired between the lookup and the admission means an update just switched:
        // the map already holds its successor, so look again.
        for _ in 0..4 {
            let live = self.get(endpoint_id, name).ok_or(ForwardError::NotReady)?;
            let Some(_admitted) = live.gate.enter() else {
                tokio::task::yield_now().await;
                continue;
            };
            let deadline = tokio::time::Instant::now() + live.timeout;
            let (any_ready, instances) = {
                let replicas = live.replicas.read().unwrap();
                (replicas.iter().any(|r| r.ready.load(Ordering::SeqCst)), replicas.len() / live.workers)
            };
            if !any_ready {
                return Err(ForwardError::NotReady);
            }
            let limit = live.per_instance * instances;
            if live.gate.count() > limit {
                return Err(ForwardError::Busy(limit));
            }
            let lease = live.acquire(deadline).await?;
            return send(&live, lease, &req, deadline).await;
        }
        Err(ForwardError::NotReady)
    }
}

/// One request/answer exchange with the worker `lease` holds, by `deadline` (request_timeout_ms
/// from admission). A worker that has had a request and answered nothing for a whole
/// request_timeout_ms is taken for hung and recycled. A request that reached its worker late
/// (after queueing, or behind an earlier request on it) keeps its place there until the worker
/// answers it or is judged hung, while the client gets its 504 at the deadline.
async fn send(
    live: &Arc<Live>,
    lease: Lease,
    req: &Request<'_>,
    deadline: tokio::time::Instant,
) -> Result<Reply, ForwardError> {
    let head = FrameHeader {
        id: 0,
        route: req.route,
        method: req.method,
        query: req.query,
        content_type: req.content_type,
        headers: &req.headers,
        deadline_ns: monotonic_ns(deadline),
    }
    .encode();
    let frame = frame(&head, &req.body);
    let r = lease.replica().clone();
    // When the worker could start on it: admission, unless it queued.
    let since = if lease.queued { tokio::time::Instant::now() } else { deadline - live.timeout };
    let placed: Arc<OnceLock<(Arc<Pipe>, u64)>> = Arc::default();
    let (worker, at) = (r.clone(), placed.clone());
    // Boxed so that a late answer can be awaited by a task of its own (below).
    let mut attempt = Box::pin(async move {
        let failed = |e: String| ForwardError::Broken(format!("{} failed mid-request: {e}", worker.label));
        let pipe = worker.pipe().await.map_err(ForwardError::Broken)?;
        let ticketed = |ticket| drop(at.set((pipe.clone(), ticket)));
        let (ticket, answer) = match pipe.send(&frame, since, ticketed).await {
            Ok(sent) => sent,
            Err(why) => return Err(stranded_or(&worker, at.get().map(|(p, t)| p.standing(*t)), why)),
        };
        match pipe.answer(ticket, answer).await {
            Ok(reply) => Ok(reply),
            Err(Lost { why, started: true }) => Err(failed(why)),
            Err(Lost { why, .. }) => Err(stranded_or(&worker, Some(Standing::Behind), why)),
        }
    });
    let ms = live.timeout.as_millis() as u64;
    if let Ok(result) = tokio::time::timeout_at(deadline, &mut attempt).await {
        return result;
    }
    let standing = match placed.get() {
        Some((pipe, ticket)) => pipe.standing(*ticket),
        None => Standing::Running,
    };
    let stalled = match placed.get() {
        Some((pipe, _)) => pipe.stalled(live.timeout),
        None => since + live.timeout <= tokio::time::Instant::now(),
    };
    match standing {
        // It arrived as the time ran out.
        Standing::Answered => return attempt.await,
        Standing::Running if stalled => {
            recycle(&r, &placed);
            return Err(ForwardError::Timeout(ms));
        }
        Standing::Behind if stalled => {
            recycle(&r, &placed);
            return Err(ForwardError::Queued(ms));
        }
        _ => {}
    }
    let timeout = live.timeout;
    tokio::spawn(async move {
        loop {
            let hung_at = match placed.get() {
                Some((pipe, _)) => pipe.hung_at(timeout),
                None => since + timeout,
            };
            if tokio::time::timeout_at(hung_at, &mut attempt).await.is_ok() {
                break;
            }
            let stalled = match placed.get() {
                Some((pipe, _)) => pipe.stalled(timeout),
                None => true,
            };
            if stalled {
                recycle(&r, &placed);
                break;
            }
        }
        drop(lease);
    });
    Err(match standing {
        Standing::Behind => ForwardError::Queued(ms),
        _ => ForwardError::Expired(ms),
    })
}

/// The error of a request whose worker's connection failed: 503 when the request was waiting behind
/// an earlier one (it never started), else 502.
fn stranded_or(worker: &Replica, standing: Option<Standing>, why: String) -> ForwardError {
    match standing {
        Some(Standing::Behind) => ForwardError::Stranded(format!(
            "{} stopped before it answered the request ahead of this one ({why}); this request was \
             waiting behind it and was not answered",
            worker.label
        )),
        _ => ForwardError::Broken(format!("{} failed mid-request: {why}", worker.label)),
    }
}

/// Kills worker `r`, hung: the process behind the connection the request went over, or, when it
/// never got that far, the one running now.
fn recycle(r: &Replica, placed: &OnceLock<(Arc<Pipe>, u64)>) {
    match placed.get() {
        Some((pipe, _)) => r.recycle_behind(pipe),
        None => r.recycle(),
    }
}

/// `at` as CLOCK_MONOTONIC nanoseconds, the clock a replica on this machine reads with
/// `time.monotonic_ns()`.
fn monotonic_ns(at: tokio::time::Instant) -> Option<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let now = u64::try_from(now.tv_sec).ok()? * 1_000_000_000 + u64::try_from(now.tv_nsec).ok()?;
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    Some(now + u64::try_from(left.as_nanos()).ok()?)
}

/// Where a request stands on its worker's connection.
enum Standing {
    /// Its answer has been read.
    Answered,
    /// The worker is on it: it has answered every request before it.
    Running,
    /// The worker has not answered an earlier request yet.
    Behind,
}

/// Why a request sent over a `Pipe` got no answer, and whether the worker had reached it
/// (answered every request before it).
struct Lost {
    why: String,
    started: bool,
}

/// The connection over which a worker gets its requests, up to `PIPELINE_DEPTH` at a time. The
/// worker reads a frame only once it has answered the one before, so answers come back in the order
/// the frames were written: a ticket drawn with the write side locked names the answer to expect
/// (the ticket-th frame read), and a request's next one already waits in the socket when the
/// worker finishes it. Whoever holds the read side reads the next frame and hands it to its
/// ticket's owner, so nobody waits for an answer that another has read; the unread part of a
/// frame stays in the connection's buffer, so a reader that is cancelled loses nothing, and the
/// answer of a request whose caller went away is read and dropped.
struct Pipe {
    write: tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>,
    read: tokio::sync::Mutex<ReadSide>,
    flow: Mutex<Flow>,
    /// The process group of the worker it was made to.
    pgid: u32,
}

struct ReadSide {
    half: tokio::net::unix::OwnedReadHalf,
    buf: bytes::BytesMut,
}

struct Flow {
    /// Tickets drawn (frames written).
    written: u64,
    /// Answers read.
    answered: u64,
    /// When the worker last made progress: answered, or got a request while it had none.
    progress: tokio::time::Instant,
    /// Where to hand each expected answer, by ticket.
    waiting: HashMap<u64, oneshot::Sender<Result<Reply, String>>>,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
}

impl Pipe {
    fn new(stream: UnixStream, pgid: u32) -> Pipe {
        let (half, write) = stream.into_split();
        Pipe {
            write: tokio::sync::Mutex::new(write),
            read: tokio::sync::Mutex::new(ReadSide { half, buf: bytes::BytesMut::new() }),
            flow: Mutex::new(Flow {
                written: 0,
                answered: 0,
                progress: tokio::time::Instant::now(),
                waiting: HashMap::new(),
                broken: None,
            }),
            pgid,
        }
    }

    fn usable(&self) -> bool {
        self.flow.lock().unwrap().broken.is_none()
    }

    fn fail(&self, why: String) {
        let mut f = self.flow.lock().unwrap();
        f.broken.get_or_insert(why.clone());
        for (_, tx) in f.waiting.drain() {
            let _ = tx.send(Err(why.clone()));
        }
    }

    /// Writes a request frame; its ticket and where its answer will come. `since`: when the worker
    /// could start on it if it has nothing else. `ticketed` learns the ticket before the frame is
    /// written: a large frame behind a running request waits for the worker to read it, and the
    /// request must count as behind that one meanwhile, not as a worker that does not answer.
    async fn send(
        &self,
        frame: &[u8],
        since: tokio::time::Instant,
        ticketed: impl FnOnce(u64),
    ) -> Result<(u64, oneshot::Receiver<Result<Reply, String>>), String> {
        let mut write = self.write.lock().await;
        let (tx, rx) = oneshot::channel();
        let ticket = {
            let mut f = self.flow.lock().unwrap();
            if let Some(why) = &f.broken {
                return Err(why.clone());
            }
            if f.written == f.answered {
                f.progress = since;
            }
            let ticket = f.written;
            f.waiting.insert(ticket, tx);
            f.written += 1;
            ticket
        };
        ticketed(ticket);
        // A frame cut short would have the worker take the next one's bytes for its rest.
        let mut cut = CutShort(Some(self));
        let written = write.write_all(frame).await;
        cut.0 = None;
        written.map_err(|e| {
            let why = format!("cannot send the request ({e})");
            self.fail(why.clone());
            why
        })?;
        Ok((ticket, rx))
    }

    /// The answer to `ticket`, read by this task or handed over by another reader.
    async fn answer(
        &self,
        ticket: u64,
        mut mine: oneshot::Receiver<Result<Reply, String>>,
    ) -> Result<Reply, Lost> {
        let lost = |why: String| Lost { why, started: self.flow.lock().unwrap().answered >= ticket };
        loop {
            let mut side = tokio::select! {
                biased;
                handed = &mut mine => return handed.unwrap_or_else(|_| Err("no answer".into())).map_err(lost),
                side = self.read.lock() => side,
            };
            if let Ok(handed) = mine.try_recv() {
                return handed.map_err(lost);
            }
            // Handed over before the read side is let go, so that its owner, once it holds it,
            // finds its answer there rather than waiting for the next frame.
            match read_frame(&mut side).await {
                Ok(reply) => {
                    let mut f = self.flow.lock().unwrap();
                    let t = f.answered;
                    f.answered += 1;
                    f.progress = tokio::time::Instant::now();
                    let owner = f.waiting.remove(&t);
                    if t == ticket {
                        return Ok(reply);
                    }
                    if let Some(tx) = owner {
                        let _ = tx.send(Ok(reply));
                    }
                }
                Err(why) => {
                    self.fail(why.clone());
                    return Err(lost(why));
                }
            }
            drop(side);
        }
    }

    fn standing(&self, ticket: u64) -> Standing {
        let f = self.flow.lock().unwrap();
        match f.answered.cmp(&ticket) {
            std::cmp::Ordering::Greater => Standing::Answered,
            std::cmp::Ordering::Equal => Standing::Running,
            std::cmp::Ordering::Less => Standing::Behind,
        }
    }

    /// When the worker will count as hung if it answers nothing before.
    fn hung_at(&self, timeout: Duration) -> tokio::time::Instant {
        self.flow.lock().unwrap().progress + timeout
    }

    /// It has requests and has answered nothing for `timeout`.
    fn stalled(&self, timeout: Duration) -> bool {
        let f = self.flow.lock().unwrap();
        f.written > f.answered && f.progress + timeout <= tokio::time::Instant::now()
    }
}

/// Breaks the connection if dropped armed: a frame was being written when its request was given up.
struct CutShort<'a>(Option<&'a Pipe>);

impl Drop for CutShort<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.0 {
            pipe.fail("a request before this one was abandoned while it was being sent".into());
        }
    }
}

/// The next answer frame on a connection. Cancel-safe: what was read stays in `side.buf`.
async fn read_frame(side: &mut ReadSide) -> Result<Reply, String> {
    loop {
        if side.buf.len() >= 8 {
            let h = u32::from_be_bytes(side.buf[..4].try_into().expect("4 bytes")) as usize;
            let b = u32::from_be_bytes(side.buf[4..8].try_into().expect("4 bytes")) as usize;
            let total = 8 + h + b;
            if side.buf.len() >= total {
                return parse_reply(side.buf.split_to(total).freeze(), h);
            }
            side.buf.reserve(total - side.buf.len());
        }
        match side.half.read_buf(&mut side.buf).await {
            Ok(0) if side.buf.is_empty() => return Err("no answer (the connection closed)".into()),
            Ok(0) => return Err("the connection closed in the middle of the answer".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("no answer ({e})")),
        }
    }
}

/// A request frame's header (python/cairn/replica.py documents the fields).
#[derive(serde::Serialize)]
struct FrameHeader<'a> {
    id: u8,
    route: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    method: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    query: &'a str,
    /// A string when present: a request without a Content-Type header sends none (null would be
    /// refused with a 400).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    headers: &'a serde_json::Map<String, serde_json::Value>,
    /// request_timeout_ms's end on CLOCK_MONOTONIC: a worker that reaches the request later
    /// answers 504 without running it (it may have waited in the socket behind another).
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_ns: Option<u64>,
}

impl FrameHeader<'_> {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("JSON serialises")
    }
}

/// A response frame's header.
#[derive(serde::Deserialize)]
struct ReplyHeader {
    status: Option<u16>,
    content_type: Option<String>,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
}

/// One frame: the two lengths, the header, the body.
fn frame(head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + head.len() + body.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    out
}

/// An answer frame (`h`: its header's length) as a `Reply`, the body a slice of the frame.
fn parse_reply(frame: bytes::Bytes, h: usize) -> Result<Reply, String> {
    let header: ReplyHeader =
        serde_json::from_slice(&frame[8..8 + h]).map_err(|e| format!("unreadable response header: {e}"))?;
    let headers =
        header.headers.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))).collect();
    Ok(Reply {
        status: header.status.unwrap_or(500),
        content_type: header.content_type,
        headers,
        body: frame.slice(8 + h..),
    })
}

/// Writes one frame and reads the answer frame, on a connection of its own (the probes').
async fn exchange(s: &mut UnixStream, head: &[u8], body: &[u8]) -> Result<Reply, String> {
    s.write_all(&frame(head, body)).await.map_err(|e| e.to_string())?;
    let mut buf = bytes::BytesMut::new();
    loop {
        if buf.len() >= 8 {
            let h = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            let b = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
            if buf.len() >= 8 + h + b {
                return parse_reply(buf.freeze(), h);
            }
        }
        match s.read_buf(&mut buf).await {
            Ok(0) => return Err("no answer (the connection closed)".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("no answer ({e})")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_read_from_an_offset_gives_what_follows_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("generation-0.log");
        assert_eq!(read_since(&log, 0, 16), (String::new(), 0), "no log yet");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        let (text, at) = read_since(&log, 0, 16);
        assert_eq!((text.as_str(), at), ("one\ntwo\n", 8));
        assert_eq!(read_since(&log, at, 16), (String::new(), 8), "nothing new");
        // "é" cut in two by the end of what is written: left for the next read.
        std::fs::write(&log, b"one\ntwo\nthr\xc3").unwrap();
        let (text, at) = read_since(&log, 8, 16);
        assert_eq!((text.as_str(), at), ("thr", 11));
        std::fs::write(&log, "one\ntwo\nthré\nfour\n").unwrap();
        let (text, at) = read_since(&log, at, 16);
        assert_eq!((text.as_str(), at), ("é\nfour\n", 19));
        // Past the window: its last bytes, from the first whole line in them.
        let (text, at) = read_since(&log, 0, 9);
        assert_eq!((text.as_str(), at), ("four\n", 19));
        // An offset past the end (a log started again) reads from the end.
        assert_eq!(read_since(&log, 1000, 16), (String::new(), 19));
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        use super::last_lines;
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc", "a last line without its newline counts");
        assert_eq!(last_lines("a\nb\nc\n", 3), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\n", 0), "");
        assert_eq!(last_lines("", 5), "");
    }

    use super::*;

    #[test]
    fn socket_folders_stay_short_enough_for_a_socket_address() {
        let tmp = tempfile::tempdir().unwrap();
        let short = tmp.path().join("sock");
        assert_eq!(socket_dir(&short).unwrap(), short);

        let long = tmp.path().join("a".repeat(60)).join("b".repeat(60)).join("sock");
        let dir = socket_dir(&long).unwrap();
        assert_ne!(dir, long);
        assert!(dir.is_dir() && dir.as_os_str().len() <= MAX_SOCKET_DIR, "{}", dir.display());
        assert_eq!(socket_dir(&long).unwrap(), dir, "the same generation gets the same folder");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        // A socket can really be bound there.
        std::os::unix::net::UnixListener::bind(dir.join("0")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
