//! Builds environments into venvs with `uv`, cached by the spec's hash.
//!
//! Layout, one folder per hash:
//!
//! ```text
//! cache_dir/<hash>.lock          exclusive file lock: one builder per hash across processes
//! cache_dir/<hash>/build.log     uv's output, streamed as it runs (readable during the build)
//! cache_dir/<hash>/requirements.txt
//! cache_dir/<hash>/venv/         the environment
//! cache_dir/<hash>/READY         written last, atomically (write + rename): the only proof of
//!                                a complete build
//! ```
//!
//! The venv is built in its final folder rather than in a temporary one renamed at the end,
//! because venvs are not relocatable: console scripts (`bin/pip`, `bin/jupyter`, …) carry the
//! absolute path of their interpreter in their shebang, and a rename would break them. Safety
//! comes from the lock and the marker instead: only the lock holder builds, a folder without
//! `READY` is never used, and the next builder deletes whatever a crashed or failed build left.
//!
//! Within one process, concurrent `ensure` calls for one hash wait on a per-hash async mutex (so
//! they do not each block a thread on the file lock); the file lock covers other processes.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::process::Command;

use super::spec::{EnvironmentSpec, SpecError};

const READY: &str = "READY";
/// How a failed build's log ends (then the reason).
const FAILED: &str = "# FAILED:";
const LOG: &str = "build.log";
const VENV: &str = "venv";
/// Lines of the build log quoted in a failure, enough to show pip's resolver error.
const LOG_TAIL_LINES: usize = 30;
/// A build that takes longer is stuck (a hung download), not slow.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const INTERPRETER_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Where an environment's build stands ([`EnvBuilder::build_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    NotBuilt,
    Building,
    Built,
    Failed,
    /// A build started and never finished (its process died): the next use builds again.
    Interrupted,
}

fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid environment spec: {0}")]
    Spec(#[from] SpecError),
    /// The build ran and failed; nothing was marked ready, so the next `ensure` tries again.
    #[error(
        "environment {} failed to build: {reason}\n--- last lines of {} (retried on next use) ---\n{log_tail}",
        short(hash), log_path.display()
    )]
    Failed { hash: String, reason: String, log_path: PathBuf, log_tail: String },
    /// A `user_managed` environment's interpreter is missing or does not run.
    #[error("interpreter `{interpreter}` is not usable: {message}")]
    Interpreter { interpreter: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<BuildError> for cairn_core::Error {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Spec(_) => cairn_core::Error::Invalid(e.to_string()),
            BuildError::Failed { .. } | BuildError::Interpreter { .. } => {
                cairn_core::Error::Unprocessable(e.to_string())
            }
            BuildError::Io { .. } => cairn_core::Error::Internal(e.to_string()),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// A usable environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltEnv {
    pub hash: String,
    /// The interpreter to run jobs with (`venv/bin/python`, or the user-managed interpreter).
    pub python: PathBuf,
    /// None for `user_managed` environments.
    pub venv: Option<PathBuf>,
    /// True when no build ran (already cached, built by a concurrent caller, or user-managed).
    pub reused: bool,
    /// None for `user_managed` environments, which have no build.
    pub log_path: Option<PathBuf>,
}

impl BuiltEnv {
    /// Variables for a job's process: `VIRTUAL_ENV` and `PATH` (venv `bin` first, then this
    /// process's `PATH`) as `activate` would set them, then the spec's own `variables`.
    pub fn env_vars(&self, spec: &EnvironmentSpec) -> Vec<(String, OsString)> {
        let mut vars = Vec::new();
        if let Some(venv) = &self.venv {
            vars.push(("VIRTUAL_ENV".to_string(), venv.clone().into_os_string()));
            let mut paths = vec![venv.join("bin")];
            paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
            if let Ok(path) = std::env::join_paths(paths) {
                vars.push(("PATH".to_string(), path));
            }
        }
        vars.extend(spec.variables.iter().map(|(k, v)| (k.clone(), OsString::from(v))));
        vars
    }
}

type Gates = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Builds and caches environments; share one per process (it holds the in-process gates).
pub struct EnvBuilder {
    cache_dir: PathBuf,
    uv: PathBuf,
    timeout: Duration,
    gates: Gates,
    builds: AtomicU64,
}

impl EnvBuilder {
    pub fn new(cache_dir: PathBuf, uv: PathBuf) -> Self {
        EnvBuilder {
            cache_dir,
            uv,
            timeout: DEFAULT_TIMEOUT,
            gates: Mutex::default(),
            builds: AtomicU64::new(0),
        }
    }

    /// Limits each uv step (default 30 minutes); a step that runs longer is killed and fails.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// How many builds this builder has started (a metric, and how tests prove reuse).
    pub fn builds_started(&self) -> u64 {
        self.builds.load(Ordering::SeqCst)
    }

    /// Returns the environment for `spec`, building it if no complete build is cached.
    pub async fn ensure(&self, spec: &EnvironmentSpec) -> Result<BuiltEnv, BuildError> {
        spec.validate()?;
        let hash = spec.hash();
        if spec.user_managed {
            return self.user_managed(spec, hash).await;
        }
        if let Some(env) = self.ready(&hash) {
            return Ok(env);
        }
        let _gate = Gate::enter(&self.gates, &hash).await;
        let _lock = self.lock_across_processes(&hash).await?;
        // Whoever held the lock before us may have just finished this very build.
        if let Some(env) = self.ready(&hash) {
            return Ok(env);
        }
        self.build(spec, &hash).await
    }

    /// The build log of `hash` (complete, failed or in progress), if there is one.
    pub fn build_log(&self, hash: &str) -> Option<String> {
        if !is_hash(hash) {
            return None;
        }
        std::fs::read(self.cache_dir.join(hash).join(LOG))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Where the build of `hash` stands, from what the builder records rather than from the log's
    /// text: `Built` on the same proof `ensure` trusts (the `READY` marker and its interpreter),
    /// `Building` while a builder (of any process) holds the hash's lock, `Failed` when the last
    /// build wrote its failure line, `Interrupted` when a build left a log but neither (a crash
    /// or a stopped server: the next use builds again), else `NotBuilt`.
    pub fn build_status(&self, hash: &str) -> BuildStatus {
        if !is_hash(hash) {
            return BuildStatus::NotBuilt;
        }
        if self.ready(hash).is_some() {
            return BuildStatus::Built;
        }
        if self.lock_is_held(hash) {
            return BuildStatus::Building;
        }
        match self.build_log(hash) {
            None => BuildStatus::NotBuilt,
            Some(log)
                if log.lines().rev().find(|l| l.starts_with("# ")).is_some_and(|l| l.starts_with(FAILED)) =>
            {
                BuildStatus::Failed
            }
            Some(_) => BuildStatus::Interrupted,
        }
    }

    /// True while some builder holds `hash`'s lock file (never creates it). The probe takes the
    /// lock for an instant when it is free, which a builder waiting in `lock` only notices as
    /// that instant.
    fn lock_is_held(&self, hash: &str) -> bool {
        let path = self.cache_dir.join(format!("{hash}.lock"));
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else { return false };
        matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    fn ready(&self, hash: &str) -> Option<BuiltEnv> {
        let dir = self.cache_dir.join(hash);
        let venv = dir.join(VENV);
        let python = venv.join("bin").join("python");
        // `exists` follows the symlink: a venv whose base interpreter vanished is rebuilt.
        (dir.join(READY).is_file() && python.exists()).then(|| BuiltEnv {
            hash: hash.to_string(),
            python,
            venv: Some(venv),
            reused: true,
            log_path: Some(dir.join(LOG)),
        })
    }

    async fn lock_across_processes(&self, hash: &str) -> Result<File, BuildError> {
        std::fs::create_dir_all(&self.cache_dir)
            .map_err(io(format!("cannot create environment cache {}", self.cache_dir.display())))?;
        let path = self.cache_dir.join(format!("{hash}.lock"));
        let context = format!("cannot lock {}", path.display());
        let locked = tokio::task::spawn_blocking(move || {
            let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()));
        locked.and_then(|r| r).map_err(io(context))
    }

    async fn build(&self, spec: &EnvironmentSpec, hash: &str) -> Result<BuiltEnv, BuildError> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let dir = self.cache_dir.join(hash);
        let venv = dir.join(VENV);
        let log_path = dir.join(LOG);
        // Leftovers of a crashed or failed build are never trusted.
        remove_file_if_exists(&dir.join(READY))?;
        if venv.exists() {
            std::fs::remove_dir_all(&venv).map_err(io(format!("cannot remove stale {}", venv.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log_path)
            .map_err(io(format!("cannot create {}", log_path.display())))?;
        let spec_json = serde_json::to_string(spec).unwrap_or_default();
        writeln!(log, "# cairn environment {hash}\n# spec: {spec_json}")
            .map_err(io("cannot write build log"))?;
        tracing::info!(hash = short(hash), "building environment");
        let mut step = Step { builder: self, hash, dir: &dir, log_path: &log_path, log: &mut log };

        let python = match &spec.python {
            Some(p) => interpreter_for(p).await.unwrap_or_else(|| p.clone()),
            None => match default_python().await {
                Ok(p) => p,
                Err(reason) => return Err(step.fail(reason)),
            },
        };
        step.run(vec![
            "venv".into(),
            "--no-config".into(),
            "--no-project".into(),
            "--python".into(),
            python.into(),
            venv.clone().into(),
        ])
        .await?;
        if !spec.packages.is_empty() {
            let requirements = dir.join("requirements.txt");
            std::fs::write(&requirements, spec.packages.join("\n") + "\n")
                .map_err(io(format!("cannot write {}", requirements.display())))?;
            let venv_python = venv.join("bin").join("python");
            step.run(vec![
                "pip".into(),
                "install".into(),
                "--no-config".into(),
                // Compiled once here rather than by every process that imports the packages:
                // a job or replica that runs with PYTHONDONTWRITEBYTECODE, or under a user who
                // cannot write to the cache, would otherwise compile them from source at every
                // start (seconds for scikit-learn or mlflow).
                "--compile-bytecode".into(),
                "--python".into(),
                venv_python.into(),
                "-r".into(),
                requirements.into(),
            ])
            .await?;
        }
        writeln!(log, "# built in {:.1}s", started.elapsed().as_secs_f64())
            .map_err(io("cannot write build log"))?;
        drop(log);

        let marker = serde_json::json!({
            "hash": hash,
            "spec": spec,
            "built_at_ms": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
        });
        let tmp = dir.join("READY.tmp");
        let write_marker = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(marker.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(READY))
        };
        write_marker().map_err(io(format!("cannot mark {} ready", dir.display())))?;
        tracing::info!(hash = short(hash), secs = started.elapsed().as_secs(), "environment built");
        self.ready(hash).map(|env| BuiltEnv { reused: false, ..env }).ok_or_else(|| BuildError::Io {
            context: format!("environment {} vanished after its build", short(hash)),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    async fn user_managed(&self, spec: &EnvironmentSpec, hash: String) -> Result<BuiltEnv, BuildError> {
        let interpreter = spec.interpreter.clone().unwrap_or_default();
        let unusable =
            |message: String| BuildError::Interpreter { interpreter: interpreter.clone(), message };
        let python = if interpreter.contains('/') {
            PathBuf::from(&interpreter)
        } else {
            which(&interpreter).ok_or_else(|| unusable("not found on PATH".into()))?
        };
        let run =
            Command::new(&python).args(["-c", "import sys"]).stdin(Stdio::null()).kill_on_drop(true).output();
        match tokio::time::timeout(INTERPRETER_CHECK_TIMEOUT, run).await {
            Err(_) => return Err(unusable("`-c \"import sys\"` did not finish within a minute".into())),
            Ok(Err(e)) => return Err(unusable(format!("cannot run {}: {e}", python.display()))),
            Ok(Ok(out)) if !out.status.success() => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(unusable(format!(
                    "`-c \"import sys\"` failed ({}): {}",
                    out.status,
                    last_lines(&stderr, 10)
                )));
            }
            Ok(Ok(_)) => {}
        }
        Ok(BuiltEnv { hash, python, venv: None, reused: true, log_path: None })
    }
}

/// One build's context, so that every uv step logs and fails the same way.
struct Step<'a> {
    builder: &'a EnvBuilder,
    hash: &'a str,
    dir: &'a Path,
    log_path: &'a Path,
    log: &'a mut File,
}

impl Step<'_> {
    /// Runs uv with its output streamed straight into the build log.
    async fn run(&mut self, args: Vec<OsString>) -> Result<(), BuildError> {
        let uv = &self.builder.uv;
        let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let what =
            format!("uv {} {}", shown[0], shown.get(1).filter(|s| !s.starts_with('-')).map_or("", |s| s));
        writeln!(self.log, "$ {} {}", uv.display(), shown.join(" ")).map_err(io("cannot write build log"))?;
        let (out, err) = match (self.log.try_clone(), self.log.try_clone()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => return Err(io("cannot share the build log")(e)),
        };
        let spawned = Command::new(uv)
            .args(&args)
            .current_dir(self.dir)
            // Interpreters come from this machine; only packages come from the network (PyPI).
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env_remove("VIRTUAL_ENV")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.fail(format!(
                    "uv was not found (tried {}): install it (scripts/setup.sh puts it in .venv-tools/bin) or set CAIRN_UV",
                    uv.display()
                )))
            }
            Err(e) => return Err(self.fail(format!("cannot run uv at {}: {e}", uv.display()))),
        };
        let timeout = self.builder.timeout;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self.fail(format!("`{}` failed ({status})", what.trim_end()))),
            Ok(Err(e)) => Err(self.fail(format!("waiting for `{}`: {e}", what.trim_end()))),
            Err(_) => {
                let _ = child.kill().await;
                Err(self.fail(format!("`{}` timed out after {}s", what.trim_end(), timeout.as_secs())))
            }
        }
    }

    /// Records the failure in the log, removes the partial venv and quotes the log's tail.
    fn fail(&mut self, reason: String) -> BuildError {
        let _ = writeln!(self.log, "{FAILED} {reason}");
        let _ = std::fs::remove_dir_all(self.dir.join(VENV));
        tracing::warn!(hash = short(self.hash), %reason, "environment build failed");
        BuildError::Failed {
            hash: self.hash.to_string(),
            reason,
            log_path: self.log_path.to_path_buf(),
            log_tail: tail(self.log_path, LOG_TAIL_LINES),
        }
    }
}

/// Serialises `ensure` calls for one hash within the process; forgets the hash when unused.
struct Gate<'a> {
    gates: &'a Gates,
    hash: String,
    entry: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<'a> Gate<'a> {
    async fn enter(gates: &'a Gates, hash: &str) -> Gate<'a> {
        let entry =
            gates.lock().unwrap_or_else(|p| p.into_inner()).entry(hash.to_string()).or_default().clone();
        let guard = entry.clone().lock_owned().await;
        Gate { gates, hash: hash.to_string(), entry, guard: Some(guard) }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this gate hold it: nobody is waiting, so the entry can go.
        if Arc::strong_count(&self.entry) == 2 {
            gates.remove(&self.hash);
        }
    }
}

/// The real path of the `python3` on PATH (not a pyenv shim), as `scripts/setup.sh` does.
async fn default_python() -> Result<String, String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("no `python:` given and no python3 on PATH ({e}); set `python:`"))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !path.is_empty() {
        Ok(path)
    } else {
        Err(format!("no `python:` given and python3 on PATH does not run ({}); set `python:`", out.status))
    }
}

/// A local interpreter for a bare `X.Y` version request, or None to leave the request to uv.
///
/// uv looks for `pythonX.Y` on PATH (and among its own managed builds, which it cannot download
/// offline); an interpreter installed with pyenv is often only a shim there, which fails unless
/// that version is selected. So the same places users install Pythons are searched here — PATH,
/// pyenv's versions, /usr/bin, /usr/local/bin — and the first `pythonX.Y` that runs and reports
/// that version is used. The request, not the path found, is what the environment's hash covers.
async fn interpreter_for(request: &str) -> Option<String> {
    let (major, minor) = request.split_once('.')?;
    if major != "3" || minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let name = format!("python{request}");
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(&name)).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
    {
        let mut versions: Vec<PathBuf> = std::fs::read_dir(home.join("versions"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let file = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                file == request || file.starts_with(&format!("{request}."))
            })
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|v| v.join("bin").join(&name)));
    }
    candidates.extend(["/usr/bin", "/usr/local/bin"].iter().map(|d| Path::new(d).join(&name)));
    let probe =
        format!("import sys; assert sys.version_info[:2] == ({major}, {minor}); print(sys.executable)");
    for candidate in candidates.into_iter().filter(|c| c.is_file()) {
        let out = Command::new(&candidate)
            .args(["-c", &probe])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        if let Ok(out) = out {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !path.is_empty() {
                return Some(path);
            }
        }
    }
    None
}

/// Where `uv` is: `$CAIRN_UV` (if set, it alone is used), else `uv` on PATH, else
/// `<repo>/.venv-tools/bin/uv` as installed by `scripts/setup.sh`.
pub fn find_uv(repo_hint: Option<&Path>) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("CAIRN_UV") {
        let path = PathBuf::from(explicit);
        if is_executable(&path) {
            return Some(path);
        }
        tracing::warn!(path = %path.display(), "CAIRN_UV is not an executable file");
        return None;
    }
    which("uv").or_else(|| {
        let uv = repo_hint?.join(".venv-tools/bin/uv");
        is_executable(&uv).then(|| std::fs::canonicalize(&uv).unwrap_or(uv))
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), BuildError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("cannot remove {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The last `n` lines of a (possibly large) log: only its final 64 KiB are read.
fn tail(path: &Path, n: usize) -> String {
    let mut buf = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        f.read_to_end(&mut buf)
    });
    match read {
        Ok(_) => last_lines(&String::from_utf8_lossy(&buf), n),
        Err(e) => format!("(cannot read the build log: {e})"),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_of(python: &str) -> String {
        let out = std::process::Command::new(python)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
            .expect("python runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[tokio::test]
    async fn a_bare_version_finds_a_local_interpreter_of_that_version() {
        let version = version_of("python3");
        let found = interpreter_for(&version).await.expect("python3's own version is found");
        assert_eq!(version_of(&found), version, "{found} is not python {version}");
        // Anything but a bare X.Y is left to uv as it is.
        assert_eq!(interpreter_for(">=3.9").await, None);
        assert_eq!(interpreter_for("3.x").await, None);
        assert_eq!(interpreter_for("2.7.18").await, None);
        assert_eq!(interpreter_for("3.1999").await, None);
    }

    #[test]
    fn build_status_comes_from_the_marker_the_lock_and_the_failure_line() {
        let dir = tempfile::tempdir().unwrap();
        let b = EnvBuilder::new(dir.path().to_path_buf(), PathBuf::from("/nonexistent/uv"));
        let hash = "ab".repeat(32);
        let env_dir = dir.path().join(&hash);
        assert_eq!(b.build_status(&hash), BuildStatus::NotBuilt);
        assert_eq!(b.build_status("../etc"), BuildStatus::NotBuilt);
        assert!(!dir.path().join(format!("{hash}.lock")).exists(), "probing creates no lock file");

        // A log without a marker or a held lock: a build that died.
        std::fs::create_dir_all(&env_dir).unwrap();
        std::fs::write(env_dir.join(LOG), "# cairn environment x\nuv venv\n").unwrap();
        assert_eq!(b.build_status(&hash), BuildStatus::Interrupted);

        // The lock held (by another open file, as another builder would): building.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.path().join(format!("{hash}.lock")))
            .unwrap();
        lock.lock().unwrap();
        assert_eq!(b.build_status(&hash), BuildStatus::Building);
        drop(lock);
        // A child forked by another test of this process between our open and its exec shares the
        // lock's open file for that instant (flock belongs to the open file, not the fd), so the
        // release may show a moment late: wait for it rather than racing it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.build_status(&hash) == BuildStatus::Building && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(b.build_status(&hash), BuildStatus::Interrupted, "a released lock is no build");

        std::fs::write(env_dir.join(LOG), "# cairn environment x\nerr\n# FAILED: no such package\n").unwrap();
        assert_eq!(b.build_status(&hash), BuildStatus::Failed);

        // A log saying "built" is not enough: the marker and the interpreter are.
        std::fs::write(env_dir.join(LOG), "# cairn environment x\n# built in 1.0s\n").unwrap();
        assert_eq!(b.build_status(&hash), BuildStatus::Interrupted);
        std::fs::create_dir_all(env_dir.join("venv/bin")).unwrap();
        std::fs::write(env_dir.join("venv/bin/python"), "").unwrap();
        std::fs::write(env_dir.join(READY), "{}").unwrap();
        assert_eq!(b.build_status(&hash), BuildStatus::Built);
    }
}
