//! Runs one job: `Preparing` (environment, code, inputs) → `Starting` → `Running` →
//! `Finalizing` (outputs and logs become artifacts) → `Completed` | `Failed` | `Canceled`.
//!
//! The command runs under a shim (`cairn_jobs::shim`) that writes its log and `exit.json`, so the
//! job does not depend on this server: [`run_job`] starts it, [`reattach`] takes over one a
//! previous server started, and both end in the same supervision and finalization.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_core::api::Role;
use cairn_core::runs::{InputMode, JobInput, RunStatus, SnapshotFile, SubmitJob};
use cairn_core::{Error, RelPath};
use cairn_jobs::env::spec::EnvironmentSpec;
use cairn_store::{ComputeRecord, NewToken};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::StopReason;
use crate::state::AppState;

/// Seconds a job gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where a run's working folder lives on the server's machine.
pub fn run_dir(state: &AppState, run_id: &str) -> PathBuf {
    state.data_dir.join("runs").join(run_id)
}

/// The live log of a run (while it runs; afterwards it is also an artifact).
pub fn log_path(state: &AppState, run_id: &str) -> PathBuf {
    cairn_jobs::shim::log_path(&run_dir(state, run_id))
}

pub async fn run_job(
    state: &AppState,
    run_id: &str,
    compute: &ComputeRecord,
    mut stop: oneshot::Receiver<StopReason>,
) -> Result<(), Error> {
    let ws = state.store.run_workspace(run_id).await?;
    let run = state.store.run(&ws, run_id).await?;
    let job: SubmitJob = serde_json::from_value(run.job.clone().unwrap_or_default())
        .map_err(|e| Error::internal(format!("run {run_id} has an unreadable job: {e}")))?;
    let dir = run_dir(state, run_id);
    let log = open_log(state, run_id).await?;
    let say = |msg: String| {
        let log = &log;
        async move {
            let _ = log.write(format!("[cairn] {msg}\n").as_bytes()).await;
        }
    };

    // Preparing: environment, code snapshot, inputs.
    let (env_name, env_version) =
        cairn_core::names::parse_environment_ref(run.environment.as_deref().unwrap_or(&job.environment))?;
    let environment = state.store.environment(&ws, &env_name, env_version).await?;
    let spec: EnvironmentSpec = serde_json::from_value(environment.spec.clone())
        .map_err(|e| Error::internal(format!("environment {env_name} has an unreadable spec: {e}")))?;
    say(format!(
        "preparing environment {}@{} ({})",
        environment.name,
        environment.version,
        &environment.hash[..12]
    ))
    .await;
    let built = match state.env_builder()?.ensure(&spec).await {
        Ok(b) => b,
        Err(e) => return fail(state, run_id, &log, &format!("environment build failed: {e}")).await,
    };
    say(format!(
        "environment {} ({})",
        built.python.display(),
        if built.reused { "cached" } else { "built" }
    ))
    .await;
    if let Some(snapshot) = &job.snapshot {
        materialize_snapshot(state, &ws.id, snapshot, &dir).await?;
    }
    let mut inputs = Vec::new();
    for (name, input) in &job.inputs {
        let text = match input {
            JobInput::Data(data) => {
                materialize_input(state, &ws, name, &data.path, data.mode, &dir).await?.display().to_string()
            }
            JobInput::Literal(value) => value.text(),
        };
        inputs.push((name.clone(), text));
    }
    if stopped(&mut stop) {
        return finish_canceled(state, run_id, &log).await;
    }

    // Starting: the command, its environment and a token that may write only this run.
    state.store.transition_run(run_id, &[RunStatus::Preparing], RunStatus::Starting, None).await?;
    let command = substitute(&job.command, &inputs)?;
    let token = crate::auth::generate_token();
    let (lookup, hash) = crate::auth::hash_token(&token);
    state
        .store
        .insert_token(NewToken {
            name: &format!("run-{run_id}"),
            lookup: &lookup,
            hash: &hash,
            role: Role::Writer,
            workspace: Some(&ws.name),
            run_id: Some(run_id),
        })
        .await?;
    let size = crate::routes::resources::resolve_size(state, &ws.id, &compute.size)
        .await?
        .unwrap_or(cairn_jobs::compute::SIZES[0].clone());
    let mut env =
        job_environment(state, &ws.name, &run.experiment, run_id, &token, &built.python, &spec, &job, &size);
    if let Some(venv) = &built.venv {
        env.push(("VIRTUAL_ENV".into(), venv.display().to_string()));
    }
    tokio::fs::create_dir_all(dir.join("outputs")).await.map_err(io)?;
    say(format!("running: {command}")).await;
    // From here the shim writes the log; the server only appends notes, through a fresh handle.
    let _ = log.flush().await;
    drop(log);
    let child = match cairn_jobs::shim::spawn(&dir, &command, &env) {
        Ok(c) => c,
        Err(e) => {
            let log = open_log(state, run_id).await?;
            return fail(state, run_id, &log, &format!("cannot start the job's supervisor: {e}")).await;
        }
    };
    state.store.set_run_pid(run_id, child.id().map(i64::from)).await?;
    state.store.transition_run(run_id, &[RunStatus::Starting], RunStatus::Running, None).await?;
    let started = Started {
        ws_id: ws.id.clone(),
        run_id: run_id.to_string(),
        dir,
        deadline: job.timeout.map(|s| (tokio::time::Instant::now() + Duration::from_secs(s), s)),
        memory: Some((size.memory_gb, compute.size.clone())),
    };
    supervise(state, started, Shim::Child(child), stop).await
}

/// Takes over a job whose shim outlived the previous server (or ended while no server was
/// there, leaving `exit.json`): the same cancel switch, timeout (counted from the run's start),
/// memory watchdog and finalization as a job started by this server.
pub async fn reattach(
    state: &AppState,
    run_id: &str,
    shim: cairn_jobs::shim::ProcessIdentity,
    stop: oneshot::Receiver<StopReason>,
) -> Result<(), Error> {
    let ws = state.store.run_workspace(run_id).await?;
    let run = state.store.run(&ws, run_id).await?;
    let job: SubmitJob = serde_json::from_value(run.job.clone().unwrap_or_default())
        .map_err(|e| Error::internal(format!("run {run_id} has an unreadable job: {e}")))?;
    let compute_name = run.compute.clone().unwrap_or_default();
    let memory = match state.store.compute(&ws.id, &compute_name).await {
        Ok(compute) => crate::routes::resources::resolve_size(state, &ws.id, &compute.size)
            .await?
            .map(|size| (size.memory_gb, compute.size.clone())),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    // A shim started just before the server died: the run was still `Starting`.
    state.store.transition_run(run_id, &[RunStatus::Starting], RunStatus::Running, None).await?;
    let started_at = state.store.run(&ws, run_id).await?.started_at.unwrap_or(run.created_at);
    let deadline = job.timeout.map(|s| {
        let end = started_at.saturating_add(s.saturating_mul(1000) as i64);
        let left = end.saturating_sub(chrono::Utc::now().timestamp_millis()).max(0) as u64;
        (tokio::time::Instant::now() + Duration::from_millis(left), s)
    });
    let dir = run_dir(state, run_id);
    if shim.is_running() {
        note(
            state,
            run_id,
            &format!("the server restarted; reattached to the job (supervisor pid {})", shim.pid),
        )
        .await;
    }
    let started = Started { ws_id: ws.id.clone(), run_id: run_id.to_string(), dir, deadline, memory };
    supervise(state, started, Shim::Adopted(shim), stop).await
}

/// A started job, as much as supervising it needs (rebuilt from the store after a restart).
struct Started {
    ws_id: String,
    run_id: String,
    dir: PathBuf,
    /// When the job is stopped, and its timeout in seconds.
    deadline: Option<(tokio::time::Instant, u64)>,
    /// The node's memory (GiB) and the compute's size name; None when the compute is gone.
    memory: Option<(f64, String)>,
}

/// The shim of a job: this server's child, or one a previous server started.
enum Shim {
    Child(tokio::process::Child),
    Adopted(cairn_jobs::shim::ProcessIdentity),
}

impl Shim {
    /// The job's process group (the shim leads it).
    fn pgid(&self) -> Option<u32> {
        match self {
            Shim::Child(c) => c.id(),
            Shim::Adopted(id) => Some(id.pid),
        }
    }

    async fn exited(&mut self) {
        match self {
            Shim::Child(c) => {
                let _ = c.wait().await;
            }
            Shim::Adopted(id) => id.wait_gone().await,
        }
    }
}

/// Running → Finalizing → an end: waits for the shim, a cancel, the timeout or the memory
/// watchdog; then keeps `outputs/` and `logs/` and decides the run's status from `exit.json`.
async fn supervise(
    state: &AppState,
    job: Started,
    mut shim: Shim,
    mut stop: oneshot::Receiver<StopReason>,
) -> Result<(), Error> {
    let run_id = job.run_id.as_str();
    let pgid = shim.pgid();
    state.jobs.supervising(run_id, true);
    let timeout = async {
        match job.deadline {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    // The node's memory size is a limit: the group's resident memory is watched (no cgroups needed).
    let memory = async {
        match (pgid, &job.memory) {
            (Some(pgid), Some((gb, _))) => {
                cairn_jobs::process::exceeds_memory(pgid, (gb * (1u64 << 30) as f64) as u64).await
            }
            _ => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        // A shim that has already ended wins over a deadline that has passed meanwhile.
        biased;
        _ = shim.exited() => None,
        reason = &mut stop => Some(reason.unwrap_or(StopReason::Canceled)),
        _ = timeout => Some(StopReason::TimedOut(job.deadline.map(|(_, s)| s).unwrap_or_default())),
        _ = memory => Some(StopReason::OutOfMemory(job.memory.as_ref().map(|(gb, _)| *gb).unwrap_or_default())),
    };
    if let Some(reason) = outcome {
        note(
            state,
            run_id,
            &format!("stopping the job ({reason:?}): SIGTERM, SIGKILL after {}s", STOP_GRACE.as_secs()),
        )
        .await;
        if let Some(pgid) = pgid {
            cairn_jobs::process::stop_group(pgid, STOP_GRACE, shim.exited()).await;
        }
        state.jobs.supervising(run_id, false);
        finalize(state, &job.ws_id, run_id, &job.dir).await;
        state.store.set_run_pid(run_id, None).await?;
        let (to, msg) = match reason {
            StopReason::Canceled => (RunStatus::Canceled, None),
            StopReason::TimedOut(s) => {
                (RunStatus::Failed, Some(format!("the job timed out after {s} s and was stopped")))
            }
            StopReason::OutOfMemory(gb) => (
                RunStatus::Failed,
                Some(format!(
                    "the job exceeded the memory limit of {gb} GiB of its compute's size ({}) and was stopped",
                    job.memory.as_ref().map(|(_, name)| name.as_str()).unwrap_or("?")
                )),
            ),
        };
        state.store.transition_run(run_id, &[], to, msg.as_deref()).await?;
        return Ok(());
    }
    state.jobs.supervising(run_id, false);
    // Grandchildren left running in the group are stopped too: the job is over.
    if let Some(pgid) = pgid {
        cairn_jobs::process::signal_group(pgid, libc::SIGKILL);
    }
    state.store.set_run_pid(run_id, None).await?;

    // Finalizing: outputs and logs become artifacts.
    state.store.transition_run(run_id, &[RunStatus::Running], RunStatus::Finalizing, None).await?;
    let exit = cairn_jobs::shim::ExitRecord::read(&job.dir);
    if exit.is_none() {
        note(state, run_id, "the job's supervisor ended without recording how the command ended").await;
    }
    finalize(state, &job.ws_id, run_id, &job.dir).await;
    match exit {
        Some(exit) if exit.success() => {
            state.store.transition_run(run_id, &[], RunStatus::Completed, None).await?;
        }
        Some(exit) => {
            let tail = cairn_jobs::process::tail(&log_path(state, run_id), 20);
            let msg =
                format!("the command failed ({}); last lines of logs/std_log.txt:\n{tail}", exit.describe());
            state.store.transition_run(run_id, &[], RunStatus::Failed, Some(&msg)).await?;
        }
        None => {
            let msg = "the job's supervisor (cairn __job-shim) was killed before it could record how the \
                       command ended; the job's processes were stopped. Submit the job again.";
            state.store.transition_run(run_id, &[], RunStatus::Failed, Some(msg)).await?;
        }
    }
    Ok(())
}

async fn open_log(state: &AppState, run_id: &str) -> Result<cairn_jobs::process::JobLog, Error> {
    cairn_jobs::process::JobLog::create(log_path(state, run_id))
        .await
        .map_err(|e| Error::internal(format!("cannot open the run's log: {e}")))
}

/// Appends a `[cairn] …` line to a run's log (while its shim may be writing it too).
async fn note(state: &AppState, run_id: &str, msg: &str) {
    if let Ok(log) = open_log(state, run_id).await {
        let _ = log.write(format!("[cairn] {msg}\n").as_bytes()).await;
        let _ = log.flush().await;
    }
}

fn io(e: std::io::Error) -> Error {
    Error::internal(e)
}

fn stopped(stop: &mut oneshot::Receiver<StopReason>) -> bool {
    stop.try_recv().is_ok()
}

async fn fail(
    state: &AppState,
    run_id: &str,
    log: &cairn_jobs::process::JobLog,
    msg: &str,
) -> Result<(), Error> {
    let _ = log.write(format!("[cairn] {msg}\n").as_bytes()).await;
    let _ = log.flush().await;
    state.store.transition_run(run_id, &[], RunStatus::Failed, Some(msg)).await?;
    Ok(())
}

async fn finish_canceled(
    state: &AppState,
    run_id: &str,
    log: &cairn_jobs::process::JobLog,
) -> Result<(), Error> {
    let _ = log.write(b"[cairn] canceled before it started\n").await;
    state.store.transition_run(run_id, &[], RunStatus::Canceled, None).await?;
    Ok(())
}

/// Replaces `${{inputs.NAME}}` with the input's text (a data input's local path, a literal's
/// value); an unknown name is an error.
pub fn substitute(command: &str, inputs: &[(String, String)]) -> Result<String, Error> {
    let mut out = String::new();
    let mut rest = command;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::invalid(format!("unclosed ${{{{ in command {command:?}")))?;
        let expr = after[..end].trim();
        let name = expr.strip_prefix("inputs.").ok_or_else(|| {
            Error::invalid(format!("unknown substitution ${{{{{expr}}}}}: only inputs.NAME is supported"))
        })?;
        let text = inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
            Error::invalid(format!(
                "the command uses ${{{{inputs.{name}}}}} but the job has no input named \"{name}\""
            ))
        })?;
        out.push_str(text);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn job_environment(
    state: &AppState,
    ws: &str,
    experiment: &str,
    run_id: &str,
    token: &str,
    python: &Path,
    spec: &EnvironmentSpec,
    job: &SubmitJob,
    size: &cairn_jobs::compute::Size,
) -> Vec<(String, String)> {
    let url = state.public_url();
    let bin = python.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("PYTHONPATH".into(), state.runtime_dir().display().to_string()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("CAIRN_TRACKING_URI".into(), url.clone()),
        ("CAIRN_WORKSPACE".into(), ws.into()),
        ("CAIRN_EXPERIMENT".into(), experiment.into()),
        ("CAIRN_RUN_ID".into(), run_id.into()),
        ("CAIRN_RUN_TOKEN".into(), token.into()),
        ("CAIRN_RUN_MANAGED".into(), "1".into()),
        ("MLFLOW_TRACKING_URI".into(), format!("{url}/workspaces/{ws}/mlflow")),
        ("MLFLOW_TRACKING_TOKEN".into(), token.into()),
        ("MLFLOW_RUN_ID".into(), run_id.into()),
        ("MLFLOW_EXPERIMENT_NAME".into(), experiment.into()),
        ("AZUREML_RUN_ID".into(), run_id.into()),
        ("AZUREML_EXPERIMENT_NAME".into(), experiment.into()),
    ];
    env.extend(cairn_jobs::compute::thread_limits(size));
    env.extend(spec.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(job.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Copies the snapshot's files (content-addressed blobs) into the run's folder.
pub(crate) async fn materialize_snapshot(
    state: &AppState,
    ws_id: &str,
    snapshot: &str,
    dir: &Path,
) -> Result<(), Error> {
    let files = crate::routes::jobs::read_snapshot(state, ws_id, snapshot).await?;
    let blobs = crate::routes::jobs::blobs_of(state, ws_id);
    for SnapshotFile { path, sha256, .. } in files {
        let rel = RelPath::parse(&path)?;
        let (_, stream) = blobs.get_stream(&RelPath::parse(&sha256)?).await?;
        write_stream(&rel.as_str().split('/').fold(dir.to_path_buf(), |p, c| p.join(c)), stream).await?;
    }
    Ok(())
}

/// Copies a datastore folder (or file) into `dir/inputs/NAME/…` and returns the local path
/// that stands for `datastore://DS/path`. In `mount` mode the copy is made read-only.
async fn materialize_input(
    state: &AppState,
    ws: &cairn_core::api::Workspace,
    name: &str,
    uri: &str,
    mode: InputMode,
    dir: &Path,
) -> Result<PathBuf, Error> {
    let (ds_name, path) = parse_datastore_uri(uri)?;
    let ds = state.store.datastore(ws, ds_name).await?;
    let blobs = state.blobs_of(&ds)?;
    let root = dir.join("inputs").join(name);
    let local_of = |p: &str| p.split('/').fold(root.clone(), |acc, c| acc.join(c));
    let mut files = blobs.list(&path).await?;
    if files.is_empty() && !path.is_root() {
        if let Some(f) = blobs.head(&path).await? {
            files.push(f);
        }
    }
    for f in &files {
        let rel = RelPath::parse(&f.path)?;
        let (_, stream) = blobs.get_stream(&rel).await?;
        let target = local_of(rel.as_str());
        write_stream(&target, stream).await?;
        if mode == InputMode::Mount {
            use std::os::unix::fs::PermissionsExt;
            let _ = tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o444)).await;
        }
    }
    tokio::fs::create_dir_all(&root).await.map_err(io)?;
    Ok(if path.is_root() { root } else { local_of(path.as_str()) })
}

/// `datastore://NAME/path`, or Azure's `azureml://datastores/NAME/paths/path`, → (NAME, path).
pub fn parse_datastore_uri(uri: &str) -> Result<(&str, RelPath), Error> {
    let malformed = || {
        Error::invalid(format!(
            "input path {} must look like datastore://NAME/path or azureml://datastores/NAME/paths/path",
            cairn_core::quoted(uri)
        ))
    };
    let (name, path) = if let Some(rest) = uri.strip_prefix("datastore://") {
        rest.split_once('/').unwrap_or((rest, ""))
    } else if let Some(rest) = uri.strip_prefix("azureml://datastores/") {
        let (name, rest) = rest.split_once('/').ok_or_else(malformed)?;
        let path = rest.strip_prefix("paths").ok_or_else(malformed)?;
        match path.strip_prefix('/') {
            Some(p) => (name, p),
            None if path.is_empty() => (name, ""),
            None => return Err(malformed()),
        }
    } else {
        return Err(malformed());
    };
    cairn_core::validate_name("datastore name", name)?;
    Ok((name, RelPath::parse_dir(path)?))
}

pub(crate) async fn write_stream(
    target: &Path,
    mut stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, Error>>,
) -> Result<(), Error> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    let mut f = tokio::fs::File::create(target).await.map_err(io)?;
    while let Some(chunk) = stream.next().await {
        f.write_all(&chunk?).await.map_err(io)?;
    }
    f.flush().await.map_err(io)
}

/// Uploads `outputs/` and `logs/` as the run's artifacts (streamed, file by file).
async fn finalize(state: &AppState, ws_id: &str, run_id: &str, dir: &Path) {
    let artifacts = crate::routes::runs::artifacts_of(state, ws_id, run_id);
    for sub in ["outputs", "logs"] {
        let root = dir.join(sub);
        for entry in walk(&root) {
            let Ok(rel) = entry.strip_prefix(dir) else { continue };
            let Some(rel) = rel.to_str() else { continue };
            let Ok(rel) = RelPath::parse(rel) else { continue };
            let file = match tokio::fs::File::open(&entry).await {
                Ok(f) => f,
                Err(_) => continue,
            };
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
            let opts = cairn_blob::PutOpts { overwrite: true, ..Default::default() };
            if let Err(e) = artifacts.put_stream(&rel, stream, opts).await {
                tracing::warn!(run = %run_id, file = %rel, error = %e, "could not keep an output file");
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => out.extend(walk(&p)),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_inputs_and_names_unknown_ones() {
        let inputs = vec![("data".to_string(), "/r/inputs/data".to_string()), ("depth".into(), "10".into())];
        assert_eq!(
            substitute(
                "python train.py --data-folder ${{inputs.data}} --max-depth ${{ inputs.depth }}",
                &inputs
            )
            .unwrap(),
            "python train.py --data-folder /r/inputs/data --max-depth 10"
        );
        let err = substitute("python t.py ${{inputs.nope}}", &inputs).unwrap_err().to_string();
        assert!(err.contains("no input named \"nope\""), "{err}");
        assert!(substitute("x ${{outputs.y}}", &inputs).is_err());
        assert!(substitute("x ${{inputs.data", &inputs).is_err());
    }

    #[test]
    fn parses_datastore_uris_safely() {
        let (n, p) = parse_datastore_uri("datastore://default/winedata").unwrap();
        assert_eq!((n, p.as_str()), ("default", "winedata"));
        for (uri, path) in [
            ("azureml://datastores/default/paths/winedata/", "winedata"),
            ("azureml://datastores/default/paths/a/b.csv", "a/b.csv"),
            ("azureml://datastores/default/paths/", ""),
            ("azureml://datastores/default/paths", ""),
        ] {
            let (n, p) = parse_datastore_uri(uri).unwrap();
            assert_eq!((n, p.as_str()), ("default", path), "{uri}");
        }
        for bad in [
            "azureml://datastores/default",
            "azureml://datastores/default/x/y",
            "azureml://datastores/default/pathsx",
        ] {
            assert!(parse_datastore_uri(bad).is_err(), "{bad}");
        }
        assert!(parse_datastore_uri("azureml://datastores/default/paths/../x").is_err());
        assert!(parse_datastore_uri("datastore://default/../x").is_err());
        assert!(parse_datastore_uri("s3://x").is_err());
    }
}
