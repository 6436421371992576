//! Runs one job: `Preparing` (environment, code, inputs) → `Starting` → `Running` →
//! `Finalizing` (outputs and logs become artifacts) → `Completed` | `Failed` | `Canceled`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_core::api::Role;
use cairn_core::runs::{InputMode, RunStatus, SnapshotFile, SubmitJob};
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
    run_dir(state, run_id).join("logs").join("std_log.txt")
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
    let log = cairn_jobs::process::JobLog::create(log_path(state, run_id))
        .await
        .map_err(|e| Error::internal(format!("cannot create the run's log: {e}")))?;
    let say = |msg: String| {
        let log = &log;
        async move {
            let _ = log.write(format!("[cairn] {msg}\n").as_bytes()).await;
        }
    };

    // Preparing: environment, code snapshot, inputs.
    let (env_name, env_version) = parse_env_ref(run.environment.as_deref().unwrap_or(&job.environment));
    let environment = state.store.environment(&ws, env_name, env_version).await?;
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
        let local = materialize_input(state, &ws, name, &input.path, input.mode, &dir).await?;
        inputs.push((name.clone(), local));
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
    let mut child = match cairn_jobs::process::spawn_job(&command, &dir, &env) {
        Ok(c) => c,
        Err(e) => return fail(state, run_id, &log, &format!("cannot start the command: {e}")).await,
    };
    state.store.set_run_pid(run_id, child.id().map(i64::from)).await?;
    state.store.transition_run(run_id, &[RunStatus::Starting], RunStatus::Running, None).await?;

    // Running: pump output, wait for exit, a cancel or the timeout.
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let pumps = async { tokio::join!(log.pump(stdout), log.pump(stderr)) };
    let timeout = job.timeout.map(Duration::from_secs).unwrap_or(Duration::from_secs(u64::MAX / 4));
    // The node's memory size is a limit: the group's resident memory is watched (no cgroups needed).
    let memory_limit = (size.memory_gb * (1u64 << 30) as f64) as u64;
    let pgid = child.id();
    let memory = async {
        match pgid {
            Some(pgid) => cairn_jobs::process::exceeds_memory(pgid, memory_limit).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        (status, _) = async { tokio::join!(child.wait(), pumps) } => Ok(status),
        reason = &mut stop => Err(reason.unwrap_or(StopReason::Canceled)),
        _ = tokio::time::sleep(timeout) => Err(StopReason::TimedOut(job.timeout.unwrap_or_default())),
        _ = memory => Err(StopReason::OutOfMemory(size.memory_gb)),
    };
    let exit = match outcome {
        Ok(status) => Some(status.map_err(io)?),
        Err(reason) => {
            say(format!("stopping the job ({reason:?}): SIGTERM, SIGKILL after {}s", STOP_GRACE.as_secs()))
                .await;
            cairn_jobs::process::stop_group(&mut child, STOP_GRACE).await;
            let _ = log.flush().await;
            finalize(state, &ws.id, run_id, &dir).await;
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
                        compute.size
                    )),
                ),
            };
            state.store.transition_run(run_id, &[], to, msg.as_deref()).await?;
            return Ok(());
        }
    };
    // Grandchildren left running in the group are stopped too: the job is over.
    if let Some(pid) = child.id() {
        cairn_jobs::process::signal_group(pid, libc::SIGKILL);
    }
    let _ = log.flush().await;
    state.store.set_run_pid(run_id, None).await?;

    // Finalizing: outputs and logs become artifacts.
    state.store.transition_run(run_id, &[RunStatus::Running], RunStatus::Finalizing, None).await?;
    finalize(state, &ws.id, run_id, &dir).await;
    let status = exit.expect("set above");
    if status.success() {
        state.store.transition_run(run_id, &[], RunStatus::Completed, None).await?;
    } else {
        let code =
            status.code().map(|c| format!("exit code {c}")).unwrap_or_else(|| "killed by a signal".into());
        let tail = cairn_jobs::process::tail(log.path(), 20);
        let msg = format!("the command failed ({code}); last lines of logs/std_log.txt:\n{tail}");
        state.store.transition_run(run_id, &[], RunStatus::Failed, Some(&msg)).await?;
    }
    Ok(())
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

/// `name@version` or `name` (latest).
pub fn parse_env_ref(r: &str) -> (&str, Option<i64>) {
    match r.split_once('@') {
        Some((n, v)) => (n, v.parse().ok()),
        None => (r, None),
    }
}

/// Replaces `${{inputs.NAME}}` with the input's local path; an unknown name is an error.
pub fn substitute(command: &str, inputs: &[(String, PathBuf)]) -> Result<String, Error> {
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
        let path = inputs.iter().find(|(n, _)| n == name).map(|(_, p)| p).ok_or_else(|| {
            Error::invalid(format!(
                "the command uses ${{{{inputs.{name}}}}} but the job has no input named \"{name}\""
            ))
        })?;
        out.push_str(&path.display().to_string());
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

/// `datastore://NAME/path` → (NAME, path).
pub fn parse_datastore_uri(uri: &str) -> Result<(&str, RelPath), Error> {
    let rest = uri
        .strip_prefix("datastore://")
        .ok_or_else(|| Error::invalid(format!("input path {uri:?} must look like datastore://NAME/path")))?;
    let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
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
        let inputs = vec![("data".to_string(), PathBuf::from("/r/inputs/data"))];
        assert_eq!(
            substitute("python train.py --data-folder ${{inputs.data}} --max-depth 10", &inputs).unwrap(),
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
        assert!(parse_datastore_uri("datastore://default/../x").is_err());
        assert!(parse_datastore_uri("s3://x").is_err());
        assert_eq!(parse_env_ref("wine-env@3"), ("wine-env", Some(3)));
    }
}
