//! Online deployments on the local target: creating and deleting them, launching and supervising
//! their replicas (`python -m cairn.replica`, see python/cairn/replica.py for the framed protocol),
//! and forwarding one scoring request to a replica (called by `gateway.rs`).
//!
//! Layout: `DATA_DIR/deployments/ID/` holds `model/NAME/VERSION/` (the model files, read-only;
//! `AZUREML_MODEL_DIR` points there, the one-model layout of `cairn.serving`), `code/` (the
//! unpacked snapshot), `sock/N` (replica N's socket: its appearing means ready) and `replicas.log`
//! (every replica's stderr and cairn's own `[cairn]` lines).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_core::api::Workspace;
use cairn_core::deployments::*;
use cairn_core::{now_ms, Error, RelPath};
use cairn_jobs::env::EnvironmentSpec;
use cairn_store::{DeploymentRecord, EndpointRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Who a model-version use belongs to (see `Store::add_model_version_use`).
const USE_KIND: &str = "deployment";
/// Most of the log shown in a Failed reason.
const REASON_TAIL_BYTES: u64 = 4096;
/// Most of the log `logs` returns.
const LOGS_TAIL_BYTES: u64 = 256 * 1024;

/// The running deployments of this server, by `ENDPOINT_ID/NAME`.
#[derive(Default)]
pub struct Deployments {
    live: Mutex<HashMap<String, Arc<Live>>>,
}

fn key(endpoint_id: &str, name: &str) -> String {
    format!("{endpoint_id}/{name}")
}

/// One deployment's replicas and its admission counters.
pub struct Live {
    id: String,
    replicas: Vec<Arc<Replica>>,
    next: AtomicUsize,
    in_flight: AtomicUsize,
    /// max_concurrent_requests_per_instance × instance_count.
    limit: usize,
    timeout: Duration,
    cancel: CancellationToken,
    /// Set by a replica whose first start failed; the launcher turns it into Failed.
    first_failure: Mutex<Option<String>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Replica {
    index: usize,
    socket: PathBuf,
    /// Process group of the running worker (0 when none).
    pgid: AtomicU32,
    ready: AtomicBool,
    /// Idle connections to this replica, reused by later requests.
    idle: Mutex<Vec<UnixStream>>,
    restarts: AtomicU32,
}

impl Replica {
    /// Kills the worker; its supervisor starts a new one.
    fn recycle(&self) {
        self.ready.store(false, Ordering::SeqCst);
        self.idle.lock().unwrap().clear();
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid != 0 {
            cairn_jobs::process::signal_group(pgid, libc::SIGKILL);
        }
    }
}

pub fn dir_of(state: &AppState, id: &str) -> PathBuf {
    state.data_dir.join("deployments").join(id)
}

fn log_path(state: &AppState, id: &str) -> PathBuf {
    dir_of(state, id).join("replicas.log")
}

fn say(state: &AppState, id: &str, msg: &str) {
    use std::io::Write;
    let path = log_path(state, id);
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
    Deployment {
        id: d.id.clone(),
        name: d.name.clone(),
        endpoint_name: d.endpoint_name.clone(),
        model: format!("{}:{}", d.model_name, d.model_version),
        spec: d.spec.clone(),
        state: d.state,
        reason: d.reason.clone(),
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// The names of the deployments of `e` that may take traffic (not being deleted).
pub async fn names(state: &AppState, e: &EndpointRecord) -> Result<Vec<String>, Error> {
    Ok(state
        .store
        .list_deployments(&e.id)
        .await?
        .into_iter()
        .filter(|d| d.state != DeploymentState::Deleting)
        .map(|d| d.name)
        .collect())
}

/// Validates and records a deployment (state Creating, its model version marked as used), then
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
    let (model_name, vref) = parse_model_ref(&req.model)?;
    let mv = state.store.model_version(ws, &model_name, &vref).await?;
    let (env_name, env_version) = parse_environment_ref(&req.environment)?;
    state.store.environment(ws, &env_name, env_version).await?;
    crate::routes::jobs::read_snapshot(state, &ws.id, &req.code_configuration.code).await?;
    let now = now_ms();
    let d = DeploymentRecord {
        id: DeploymentRecord::new_id(),
        endpoint_id: e.id.clone(),
        endpoint_name: e.name.clone(),
        workspace_id: ws.id.clone(),
        workspace: ws.name.clone(),
        name: req.name.clone(),
        spec: req,
        model_name: mv.name.clone(),
        model_version: mv.version,
        state: DeploymentState::Creating,
        reason: String::new(),
        created_at: now,
        updated_at: now,
    };
    state.store.create_deployment(&d).await?;
    if let Err(err) = state.store.add_model_version_use(ws, &mv.name, mv.version, USE_KIND, &d.id).await {
        state.store.delete_deployment(&d.id).await?;
        return Err(err);
    }
    launch(state.clone(), d.clone());
    Ok(d)
}

/// Starts preparing and running `d` in the background.
pub fn launch(state: Arc<AppState>, d: DeploymentRecord) {
    tokio::spawn(async move {
        if let Err(err) = prepare_and_start(&state, &d).await {
            let reason = format!("{err}");
            say(&state, &d.id, &format!("failed: {reason}"));
            let _ = state.store.set_deployment_state(&d.id, DeploymentState::Failed, &reason, now_ms()).await;
        }
    });
}

/// Re-launches the deployments that were Creating, Healthy or Unhealthy when the server stopped.
pub async fn relaunch_all(state: &Arc<AppState>) -> Result<(), Error> {
    for d in state.store.all_deployments().await? {
        match d.state {
            DeploymentState::Failed => {}
            DeploymentState::Deleting => {
                // The server stopped mid-delete: finish it.
                if let Ok(ws) = state.store.workspace(&d.workspace).await {
                    let _ = finish_delete(state, &ws, &d).await;
                }
            }
            _ => {
                state.store.set_deployment_state(&d.id, DeploymentState::Creating, "", now_ms()).await?;
                launch(state.clone(), d);
            }
        }
    }
    Ok(())
}

async fn prepare_and_start(state: &Arc<AppState>, d: &DeploymentRecord) -> Result<(), Error> {
    let io = |what: &'static str| move |e: std::io::Error| Error::internal(format!("{what}: {e}"));
    let dir = dir_of(state, &d.id);
    tokio::fs::create_dir_all(&dir).await.map_err(io("cannot create the deployment's folder"))?;
    let ws = state.store.workspace(&d.workspace).await?;

    let (env_name, env_version) = parse_environment_ref(&d.spec.environment)?;
    let environment = state.store.environment(&ws, &env_name, env_version).await?;
    let spec: EnvironmentSpec = serde_json::from_value(environment.spec.clone())
        .map_err(|e| Error::internal(format!("environment {env_name} has an unreadable spec: {e}")))?;
    say(state, &d.id, &format!("preparing environment {}@{}", environment.name, environment.version));
    let built = state
        .env_builder()?
        .ensure(&spec)
        .await
        .map_err(|e| Error::invalid(format!("environment build failed: {e}")))?;

    // Model files, read-only, in the one-model layout AZUREML_MODEL_DIR expects.
    let model_dir = dir.join("model").join(&d.model_name).join(d.model_version.to_string());
    if !model_dir.exists() {
        let files = state.store.model_version_files(&ws, &d.model_name, d.model_version).await?;
        let blobs = crate::routes::jobs::blobs_of(state, &ws.id);
        let partial = dir.join("model.partial");
        let _ = tokio::fs::remove_dir_all(&partial).await;
        for f in &files {
            let rel = RelPath::parse(&f.path)?;
            let target = rel.as_str().split('/').fold(partial.clone(), |p, c| p.join(c));
            let (_, stream) = blobs.get_stream(&RelPath::parse(&f.sha256)?).await.map_err(|_| {
                Error::invalid(format!(
                    "model {}:{} file \"{}\" is missing from the store",
                    d.model_name, d.model_version, f.path
                ))
            })?;
            crate::jobs::runner::write_stream(&target, stream).await?;
            let mut perm = tokio::fs::metadata(&target).await.map_err(io("model file"))?.permissions();
            perm.set_readonly(true);
            tokio::fs::set_permissions(&target, perm).await.map_err(io("model file"))?;
        }
        tokio::fs::create_dir_all(&partial).await.map_err(io("model folder"))?;
        tokio::fs::create_dir_all(model_dir.parent().expect("has a parent"))
            .await
            .map_err(io("model folder"))?;
        tokio::fs::rename(&partial, &model_dir).await.map_err(io("model folder"))?;
    }
    let code_dir = dir.join("code");
    if !code_dir.exists() {
        let partial = dir.join("code.partial");
        let _ = tokio::fs::remove_dir_all(&partial).await;
        tokio::fs::create_dir_all(&partial).await.map_err(io("code folder"))?;
        crate::jobs::runner::materialize_snapshot(state, &ws.id, &d.spec.code_configuration.code, &partial)
            .await?;
        tokio::fs::rename(&partial, &code_dir).await.map_err(io("code folder"))?;
    }
    let script_rel = RelPath::parse(&d.spec.code_configuration.scoring_script)?;
    let script = script_rel.as_str().split('/').fold(code_dir.clone(), |p, c| p.join(c));
    if !script.is_file() {
        return Err(Error::invalid(format!(
            "code_configuration.scoring_script \"{}\" is not in the code snapshot",
            script_rel.as_str()
        )));
    }

    let sock_dir = dir.join("sock");
    tokio::fs::create_dir_all(&sock_dir).await.map_err(io("socket folder"))?;
    let mut env: Vec<(String, String)> = vec![
        ("PYTHONPATH".into(), state.runtime_dir().display().to_string()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("AZUREML_MODEL_DIR".into(), model_dir.display().to_string()),
        ("CAIRN_SCORING_SCRIPT".into(), script.display().to_string()),
        ("CAIRN_REPLICA_CONCURRENCY".into(), d.spec.request_settings.max_concurrent().to_string()),
        ("CAIRN_REPLICA_MAX_BODY_BYTES".into(), state.max_score_body_bytes.to_string()),
    ];
    if let Some(venv) = &built.venv {
        env.push(("VIRTUAL_ENV".into(), venv.display().to_string()));
    }
    env.extend(spec.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(d.spec.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())));

    let n = d.spec.instance_count as usize;
    let live = Arc::new(Live {
        id: d.id.clone(),
        replicas: (0..n)
            .map(|i| {
                Arc::new(Replica {
                    index: i,
                    socket: sock_dir.join(i.to_string()),
                    pgid: AtomicU32::new(0),
                    ready: AtomicBool::new(false),
                    idle: Mutex::new(Vec::new()),
                    restarts: AtomicU32::new(0),
                })
            })
            .collect(),
        next: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        limit: n * d.spec.request_settings.max_concurrent() as usize,
        timeout: Duration::from_millis(d.spec.request_settings.timeout_ms() as u64),
        cancel: CancellationToken::new(),
        first_failure: Mutex::new(None),
        tasks: Mutex::new(Vec::new()),
    });
    if let Some(old) =
        state.deployments.live.lock().unwrap().insert(key(&d.endpoint_id, &d.name), live.clone())
    {
        old.cancel.cancel();
    }
    let launch = Launch {
        python: built.python.clone(),
        cwd: code_dir,
        env: Arc::new(env),
        log: log_path(state, &d.id),
    };
    say(state, &d.id, &format!("starting {n} replica(s) with {}", built.python.display()));
    for r in &live.replicas {
        let task = tokio::spawn(supervise(state.clone(), live.clone(), r.clone(), launch.clone()));
        live.tasks.lock().unwrap().push(task);
    }
    // Healthy once every socket exists; Failed as soon as one replica's first start fails.
    loop {
        if live.cancel.is_cancelled() {
            return Ok(());
        }
        let failure = live.first_failure.lock().unwrap().clone();
        if let Some(reason) = failure {
            stop(&live).await;
            state.deployments.live.lock().unwrap().remove(&key(&d.endpoint_id, &d.name));
            return Err(Error::invalid(reason));
        }
        if live.replicas.iter().all(|r| r.ready.load(Ordering::SeqCst)) {
            say(state, &d.id, "all replicas ready: Healthy");
            state.store.set_deployment_state(&d.id, DeploymentState::Healthy, "", now_ms()).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[derive(Clone)]
struct Launch {
    python: PathBuf,
    cwd: PathBuf,
    env: Arc<Vec<(String, String)>>,
    log: PathBuf,
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
        .kill_on_drop(true);
    cmd.process_group(0);
    for (k, v) in l.env.iter() {
        cmd.env(k, v);
    }
    cmd.spawn()
}

/// Runs replica `r` until the deployment stops: starts it, waits for its socket, and restarts it
/// with backoff whenever it exits (the deployment is Unhealthy meanwhile).
async fn supervise(state: Arc<AppState>, live: Arc<Live>, r: Arc<Replica>, l: Launch) {
    let mut attempt: u32 = 0;
    let mut ever_ready = false;
    loop {
        let _ = std::fs::remove_file(&r.socket);
        let mut child = match spawn_replica(&l, &r.socket) {
            Ok(c) => c,
            Err(e) => {
                *live.first_failure.lock().unwrap() = Some(format!("cannot start replica {}: {e}", r.index));
                return;
            }
        };
        r.pgid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let started = Instant::now();
        // Wait for readiness (the socket appearing), an exit, or the stop.
        let exit = loop {
            if live.cancel.is_cancelled() {
                break None;
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if !r.ready.load(Ordering::SeqCst) && r.socket.exists() {
                r.ready.store(true, Ordering::SeqCst);
                if ever_ready {
                    say(&state, &live.id, &format!("replica {} ready again", r.index));
                    mark_healthy_if_all_ready(&state, &live).await;
                }
                ever_ready = true;
            }
            let wait = if r.ready.load(Ordering::SeqCst) { 200 } else { 20 };
            tokio::select! {
                _ = live.cancel.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        };
        r.ready.store(false, Ordering::SeqCst);
        r.idle.lock().unwrap().clear();
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
        if !ever_ready {
            let why = if status.code() == Some(3) {
                "the scoring script failed to import or its init() raised"
            } else {
                "it exited before it was ready"
            };
            *live.first_failure.lock().unwrap() = Some(format!(
                "replica {} exited with code {code}: {why}. Log tail:\n{}",
                r.index,
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
        let reason =
            format!("replica {} exited (code {code}); restarting in {} ms", r.index, backoff.as_millis());
        say(&state, &live.id, &reason);
        let _ =
            state.store.set_deployment_state(&live.id, DeploymentState::Unhealthy, &reason, now_ms()).await;
        tokio::select! {
            _ = live.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

async fn mark_healthy_if_all_ready(state: &AppState, live: &Live) {
    if live.replicas.iter().all(|r| r.ready.load(Ordering::SeqCst)) {
        let _ = state.store.set_deployment_state(&live.id, DeploymentState::Healthy, "", now_ms()).await;
    }
}

/// Stops every replica of `live` and waits for their supervisors.
async fn stop(live: &Live) {
    live.cancel.cancel();
    let tasks: Vec<_> = std::mem::take(&mut *live.tasks.lock().unwrap());
    for t in tasks {
        let _ = t.await;
    }
}

/// Deletes a deployment: Deleting, replicas stopped, files removed, model use forgotten.
pub async fn delete(state: &AppState, ws: &Workspace, d: &DeploymentRecord) -> Result<(), Error> {
    state.store.set_deployment_state(&d.id, DeploymentState::Deleting, "", now_ms()).await?;
    finish_delete(state, ws, d).await
}

async fn finish_delete(state: &AppState, ws: &Workspace, d: &DeploymentRecord) -> Result<(), Error> {
    let live = state.deployments.live.lock().unwrap().remove(&key(&d.endpoint_id, &d.name));
    if let Some(live) = live {
        stop(&live).await;
    }
    // Read-only model files do not stop removal (it needs the folders' write permission only).
    let _ = tokio::fs::remove_dir_all(dir_of(state, &d.id)).await;
    match state.store.remove_model_version_use(ws, &d.model_name, d.model_version, USE_KIND, &d.id).await {
        Ok(_) | Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    state.store.delete_deployment(&d.id).await
}

/// The tail of a deployment's log (cairn's lines and every replica's stderr).
pub fn logs(state: &AppState, d: &DeploymentRecord) -> String {
    tail(&log_path(state, &d.id), LOGS_TAIL_BYTES)
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
    pub body: Vec<u8>,
}

/// Why a request got no reply from a replica (the gateway maps each to a status).
pub enum ForwardError {
    /// No replica of the deployment is ready (503).
    NotReady,
    /// Past max_concurrent_requests_per_instance × instances (429).
    Busy(usize),
    /// request_timeout_ms passed; the replica is being recycled (504).
    Timeout(u64),
    /// The replica closed the connection or died mid-request (502).
    Broken(String),
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
        Some(ReplicaHealth {
            ready: live.replicas.iter().filter(|r| r.ready.load(Ordering::SeqCst)).count(),
            total: live.replicas.len(),
            restarts: live.replicas.iter().map(|r| r.restarts.load(Ordering::SeqCst)).sum(),
            in_flight: live.in_flight.load(Ordering::SeqCst),
        })
    }

    /// Sends `req` to a ready replica of deployment `name` of endpoint `endpoint_id` (round robin
    /// over the ready ones) and returns its answer.
    pub async fn forward(
        &self,
        endpoint_id: &str,
        name: &str,
        req: Request<'_>,
    ) -> Result<Reply, ForwardError> {
        let live = self.get(endpoint_id, name).ok_or(ForwardError::NotReady)?;
        let ready: Vec<&Arc<Replica>> =
            live.replicas.iter().filter(|r| r.ready.load(Ordering::SeqCst)).collect();
        if ready.is_empty() {
            return Err(ForwardError::NotReady);
        }
        if live.in_flight.fetch_add(1, Ordering::SeqCst) >= live.limit {
            live.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ForwardError::Busy(live.limit));
        }
        let _guard = InFlight(&live.in_flight);
        let r = ready[live.next.fetch_add(1, Ordering::Relaxed) % ready.len()];
        let header = serde_json::json!({
            "id": 0, "route": req.route, "method": req.method, "query": req.query,
            "content_type": req.content_type, "headers": req.headers,
        });
        let head = serde_json::to_vec(&header).expect("JSON serialises");
        let pooled = r.idle.lock().unwrap().pop();
        let attempt = async {
            let mut stream = match pooled {
                Some(s) => s,
                None => UnixStream::connect(&r.socket)
                    .await
                    .map_err(|e| format!("cannot connect to replica {}: {e}", r.index))?,
            };
            let reply = exchange(&mut stream, &head, &req.body)
                .await
                .map_err(|e| format!("replica {} failed mid-request: {e}", r.index))?;
            Ok::<_, String>((stream, reply))
        };
        match tokio::time::timeout(live.timeout, attempt).await {
            Err(_) => {
                r.recycle();
                Err(ForwardError::Timeout(live.timeout.as_millis() as u64))
            }
            Ok(Err(msg)) => Err(ForwardError::Broken(msg)),
            Ok(Ok((stream, reply))) => {
                r.idle.lock().unwrap().push(stream);
                Ok(reply)
            }
        }
    }
}

async fn exchange(s: &mut UnixStream, head: &[u8], body: &[u8]) -> Result<Reply, String> {
    let mut out = Vec::with_capacity(8 + head.len() + body.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut prefix = [0u8; 8];
    s.read_exact(&mut prefix).await.map_err(|e| format!("no answer ({e})"))?;
    let h = u32::from_be_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    let b = u32::from_be_bytes(prefix[4..].try_into().expect("4 bytes")) as usize;
    let mut hbuf = vec![0u8; h];
    s.read_exact(&mut hbuf).await.map_err(|e| e.to_string())?;
    let mut bbuf = vec![0u8; b];
    s.read_exact(&mut bbuf).await.map_err(|e| e.to_string())?;
    let header: serde_json::Value =
        serde_json::from_slice(&hbuf).map_err(|e| format!("unreadable response header: {e}"))?;
    let status = header["status"].as_u64().unwrap_or(500) as u16;
    let headers = header["headers"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    Ok(Reply {
        status,
        content_type: header["content_type"].as_str().map(str::to_string),
        headers,
        body: bbuf,
    })
}
