//! The scheduler: hands queued runs to free node slots of their compute target, keeps the
//! cancel switches of running jobs, and recovers at start-up from runs a previous server left
//! behind.
//!
//! Runs are queued durably in the metadata store (status `Queued`); the scheduler only keeps
//! what can be rebuilt (cancel switches), so a restart loses no queued job. A job's command runs
//! under a shim that outlives the server (`cairn_jobs::shim`), so a running job is reattached by
//! the next server ([`recover`]) instead of being lost.
//!
//! Several servers may share one database. Each run records the server that claimed it
//! (`runs.server_id`): its processes and folder are on that server's machine, so only that server
//! supervises and recovers it. Claims compete through [`cairn_store::Store::claim_run`], which
//! admits a run against the compute's `max_nodes` counted over every server's active runs; the
//! local node pools only describe this server's own nodes.

pub mod runner;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_core::runs::RunStatus;
use cairn_core::Error;
use tokio::sync::{oneshot, Notify};

use crate::state::AppState;
use cairn_jobs::compute::{Node, NodePool};
use cairn_store::{Claim, ComputeRecord};

/// Why a running job is being stopped.
#[derive(Clone, Debug)]
pub enum StopReason {
    Canceled,
    TimedOut(u64),
    /// The job's processes together held more resident memory than its node's size (GiB).
    OutOfMemory(f64),
}

/// The scheduler's shared state, held by [`AppState`].
#[derive(Default)]
pub struct Jobs {
    wake: Notify,
    stops: Mutex<HashMap<String, oneshot::Sender<StopReason>>>,
    /// Node pools by (workspace id, compute name); rebuilt from the runs table after a restart.
    pools: Mutex<HashMap<(String, String), NodePool>>,
    /// Runs whose shim this server is waiting for (they keep running when the server stops).
    supervised: Mutex<HashSet<String>>,
}

impl Jobs {
    /// Tells the scheduler to look at the queue now (a job was submitted or a node freed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops a running job; false if this server is not running it.
    pub fn stop(&self, run_id: &str, reason: StopReason) -> bool {
        match self.stops.lock().expect("stops lock").remove(run_id) {
            Some(tx) => tx.send(reason).is_ok(),
            None => false,
        }
    }

    /// Reconciles one compute's node pool with its `starting` and `busy` jobs and returns its nodes.
    pub fn observe_pool(
        &self,
        workspace_id: &str,
        compute: &ComputeRecord,
        starting: usize,
        busy: usize,
    ) -> Vec<Node> {
        let mut pools = self.pools.lock().expect("pools lock");
        let pool = pools.entry((workspace_id.to_string(), compute.name.clone())).or_default();
        pool.observe(
            chrono::Utc::now().timestamp_millis(),
            starting,
            busy,
            compute.min_nodes.max(0) as usize,
            compute.idle_seconds.max(0).saturating_mul(1000),
        );
        pool.nodes().to_vec()
    }

    /// How many jobs' shims this server is waiting for.
    pub fn supervised(&self) -> usize {
        self.supervised.lock().expect("supervised lock").len()
    }

    fn supervising(&self, run_id: &str, yes: bool) {
        let mut set = self.supervised.lock().expect("supervised lock");
        if yes {
            set.insert(run_id.to_string());
        } else {
            set.remove(run_id);
        }
    }

    fn register(&self, run_id: &str) -> oneshot::Receiver<StopReason> {
        let (tx, rx) = oneshot::channel();
        self.stops.lock().expect("stops lock").insert(run_id.to_string(), tx);
        rx
    }

    fn unregister(&self, run_id: &str) {
        self.stops.lock().expect("stops lock").remove(run_id);
    }
}

/// Brings every known node pool up to date with this server's active runs, so that nodes become
/// idle when their job ends and are released after the idle time even when nobody looks.
async fn reconcile_pools(state: &AppState, active: &[cairn_store::RunRef]) -> Result<(), Error> {
    let mut counts: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for r in active.iter().filter(|r| r.server_id.as_deref() == Some(state.server.id.as_str())) {
        let c = counts.entry((r.workspace_id.clone(), r.compute.clone().unwrap_or_default())).or_default();
        if matches!(r.status, RunStatus::Preparing | RunStatus::Starting) {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }
    let mut keys: Vec<(String, String)> =
        state.jobs.pools.lock().expect("pools lock").keys().cloned().collect();
    keys.extend(counts.keys().filter(|k| !keys.contains(k)).cloned().collect::<Vec<_>>());
    for key in keys {
        match state.store.compute(&key.0, &key.1).await {
            Ok(compute) => {
                let (starting, busy) = counts.get(&key).copied().unwrap_or_default();
                state.jobs.observe_pool(&key.0, &compute, starting, busy);
            }
            Err(Error::NotFound { .. }) => {
                state.jobs.pools.lock().expect("pools lock").remove(&key);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deals with the runs this server left active when it stopped. A job whose shim still runs (the
/// same process: pid and start time match) is reattached; one whose shim ended meanwhile is
/// finalized from its `exit.json`. The others (still `Preparing`, or a shim gone without
/// `exit.json`) are marked `Failed` saying why, their leftover processes killed.
///
/// Runs of other servers are never touched, even when their server looks gone: their
/// processes are on its machine, where only it can see them (`run show` says the server is
/// unreachable). A run claimed before servers were recorded (no `server_id`) is taken when its
/// folder is in this data directory, or when no other server is alive to own it.
pub async fn recover(state: &Arc<AppState>) -> Result<(), Error> {
    let active = [RunStatus::Preparing, RunStatus::Starting, RunStatus::Running, RunStatus::Finalizing];
    let me = state.server.id.as_str();
    let others_alive = !state.store.other_live_servers(me).await?.is_empty();
    for run in state.store.runs_in_status(&active).await? {
        let dir = runner::run_dir(state, &run.id);
        match run.server_id.as_deref() {
            Some(owner) if owner == me => {}
            Some(_) => continue,
            None => {
                if (others_alive && !dir.exists()) || !state.store.adopt_run(&run.id, me).await? {
                    continue;
                }
            }
        }
        let shim = match run.status {
            RunStatus::Preparing => None,
            _ => cairn_jobs::shim::ProcessIdentity::load(&dir),
        };
        if let Some(shim) = &shim {
            let alive = shim.is_running();
            if alive || cairn_jobs::shim::ExitRecord::read(&dir).is_some() {
                tracing::info!(
                    run = %run.id,
                    pid = shim.pid,
                    "{}",
                    if alive { "reattaching to a running job" } else { "finalizing a job that ended while the server was away" }
                );
                let stop = state.jobs.register(&run.id);
                let (st, id, shim) = (state.clone(), run.id.clone(), shim.clone());
                spawn_runner(state, &run.id, async move { runner::reattach(&st, &id, shim, stop).await });
                continue;
            }
            shim.kill_leftovers();
        }
        let reason = match run.status {
            RunStatus::Preparing => format!(
                "the server stopped while this run was {} (its environment, code and inputs were not ready); \
                 Submit the job again.",
                run.status.as_str()
            ),
            _ => format!(
                "the server stopped while this run was {} and the job's supervisor is gone without recording \
                 how the command ended (it was killed, or the machine restarted); its processes were stopped. \
                 Submit the job again.",
                run.status.as_str()
            ),
        };
        state.store.transition_run(&run.id, &[], RunStatus::Failed, Some(&reason)).await?;
        state.store.set_run_pid(&run.id, None).await?;
        state.store.delete_run_tokens(&run.id).await?;
        tracing::warn!(run = %run.id, "run was active when the server stopped and cannot be reattached; marked Failed");
    }
    Ok(())
}

/// Runs a job's runner (or reattached supervision) as a task; whatever happens, the run ends up
/// ended, its token is deleted and the scheduler looks at the queue again. A server that stops
/// drops the task before that: the job keeps running and its token stays for the next server.
fn spawn_runner(
    state: &Arc<AppState>,
    run_id: &str,
    work: impl Future<Output = Result<(), Error>> + Send + 'static,
) {
    let (state, id) = (state.clone(), run_id.to_string());
    tokio::spawn(async move {
        if let Err(e) = work.await {
            tracing::error!(run = %id, error = %e, "runner failed");
            let _ = state.store.transition_run(&id, &[], RunStatus::Failed, Some(&e.to_string())).await;
        }
        let _ = state.store.delete_run_tokens(&id).await;
        state.jobs.supervising(&id, false);
        state.jobs.unregister(&id);
        state.jobs.wake();
    });
}

/// The scheduler loop: runs until the process ends.
pub async fn schedule(state: Arc<AppState>) {
    loop {
        if let Err(e) = dispatch(&state).await {
            tracing::warn!(error = %e, "scheduler pass failed; retrying");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), state.jobs.wake.notified()).await;
    }
}

/// One pass: for each queued run (oldest first), claim and start it if its compute has a free
/// node (counting the runs of every server of the database).
async fn dispatch(state: &Arc<AppState>) -> Result<(), Error> {
    let active = [RunStatus::Preparing, RunStatus::Starting, RunStatus::Running, RunStatus::Finalizing];
    // Taken before the active runs are read: every run registered by then is either active or
    // ended in the database by the time of that read.
    let mine: Vec<String> = state.jobs.stops.lock().expect("stops lock").keys().cloned().collect();
    let running = state.store.runs_in_status(&active).await?;
    // A job of this server that the database says has ended was canceled through another server
    // (which cannot reach its processes): stop it here.
    for id in mine.iter().filter(|id| !running.iter().any(|r| &r.id == *id)) {
        if state.jobs.stop(id, StopReason::Canceled) {
            tracing::info!(run = %id, "canceled through another server; stopping it");
        }
    }
    // A pre-check only (it saves a transaction per queued run when nodes are full); the claim
    // itself counts again, serialised with other servers' claims.
    let mut busy: HashMap<(String, String), i64> = HashMap::new();
    for r in &running {
        *busy.entry((r.workspace_id.clone(), r.compute.clone().unwrap_or_default())).or_default() += 1;
    }
    reconcile_pools(state, &running).await?;
    for run in state.store.runs_in_status(&[RunStatus::Queued]).await? {
        let compute_name = run.compute.clone().unwrap_or_default();
        let compute = match state.store.compute(&run.workspace_id, &compute_name).await {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => {
                let msg = format!("compute \"{compute_name}\" was deleted while the run was queued");
                state
                    .store
                    .transition_run(&run.id, &[RunStatus::Queued], RunStatus::Failed, Some(&msg))
                    .await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let key = (run.workspace_id.clone(), compute_name);
        let used = busy.get(&key).copied().unwrap_or(0);
        if used >= compute.max_nodes {
            continue;
        }
        match state.store.claim_run(&run.id, &state.server.id, &key.0, &key.1).await? {
            Claim::Claimed => {}
            // Another server took the last node meanwhile: nothing more fits this pass.
            Claim::Full => {
                busy.insert(key, compute.max_nodes);
                continue;
            }
            // Deleted meanwhile (failed on the next pass), or claimed or canceled by someone else.
            Claim::ComputeGone | Claim::NotQueued => continue,
        }
        *busy.entry(key).or_default() += 1;
        let stop = state.jobs.register(&run.id);
        let (st, id) = (state.clone(), run.id.clone());
        spawn_runner(state, &run.id, async move { runner::run_job(&st, &id, &compute, stop).await });
    }
    Ok(())
}
