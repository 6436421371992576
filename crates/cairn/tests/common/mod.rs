//! Test harness: starts the real `cairn` binary on an ephemeral 127.0.0.1 port with a temporary
//! data directory and home, and runs CLI commands against it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod jobs;

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// `text` parsed as JSON (a command's `-o json` output), or a panic showing it.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Sends `request` and parses the answer's body as JSON, whatever its status.
pub async fn send_json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The repository's root (for examples and the tools installed by scripts/setup.sh).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Removes the caller's Cairn, MLflow and Azure ML settings, keeping the rest of the environment
/// (certificates, proxies and PATH are needed to reach PyPI when environments are built).
pub fn clear_cairn_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CAIRN_")
            || k.starts_with("MLFLOW_")
            || k.starts_with("AZUREML_")
            || k.starts_with("AWS_")
        {
            cmd.env_remove(&k);
        }
    }
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct Opts {
    pub database_url: Option<String>,
    pub artifact_store: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Reuse this data directory (for restart tests) instead of a fresh one.
    pub data_dir: Option<PathBuf>,
    /// `HOST:PORT` to listen on instead of an ephemeral port (a restart at the same address).
    pub listen: Option<String>,
    /// Mount a tmpfs of this many KiB at this directory, seen only by the server: it runs in its
    /// own user and mount namespace (`unshare -Urm`), so no root is needed (disk-full tests).
    pub small_disk: Option<(PathBuf, u64)>,
}

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub home: PathBuf,
    pub opts: Opts,
    log: Arc<Mutex<String>>,
    _tmp: Arc<tempfile::TempDir>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Server {
        let tmp = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::spawn(opts, tmp)
    }

    fn spawn(opts: Opts, tmp: Arc<tempfile::TempDir>) -> Server {
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| tmp.path().join("data"));
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = match &opts.small_disk {
            None => Command::new(BIN),
            Some((dir, kib)) => {
                std::fs::create_dir_all(dir).unwrap();
                let mut c = Command::new("unshare");
                c.args([
                    "-Urm",
                    "sh",
                    "-c",
                    "mount -t tmpfs -o size=\"$1\"k tmpfs \"$0\" && shift && exec \"$@\"",
                ])
                .arg(dir)
                .arg(kib.to_string())
                .arg(BIN);
                c
            }
        };
        let listen = opts.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        cmd.arg("server").arg("--listen").arg(&listen).arg("--data-dir").arg(&data_dir);
        if let Some(db) = &opts.database_url {
            cmd.arg("--database-url").arg(db);
        }
        if let Some(a) = &opts.artifact_store {
            cmd.arg("--artifact-store").arg(a);
        }
        cmd.args(&opts.args);
        clear_cairn_env(&mut cmd);
        cmd.env("HOME", &home)
            .env("CAIRN_LOG", "info,sqlx=warn")
            .env("CAIRN_UV", repo_root().join(".venv-tools/bin/uv"))
            .env("UV_CACHE_DIR", repo_root().join(".cache/uv"))
            .current_dir(tmp.path());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start cairn server");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(i) = line.find("listening on http://") {
                    let url: String = line[i + "listening on ".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(url);
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Server { child: Some(child), url, token, data_dir, home, opts, log, _tmp: tmp }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A typed client with the admin token.
    pub fn client(&self) -> cairn_client::Client {
        cairn_client::Client::new(&self.url, Some(self.token.clone())).unwrap()
    }

    pub fn client_with(&self, token: &str) -> cairn_client::Client {
        cairn_client::Client::new(&self.url, Some(token.to_string())).unwrap()
    }

    /// The pids of this server's online-endpoint replicas (`python -m cairn.replica` processes
    /// whose environment names this server's data directory), sorted.
    pub fn replica_pids(&self) -> Vec<i32> {
        processes_with_env("cairn.replica", &self.data_dir.display().to_string())
    }

    /// A raw API call with the admin token, for what the typed client does not send (bad bodies,
    /// unknown fields, pages by hand): `path` is under the server's URL (`/api/v1/…`). Returns the
    /// status and the body as JSON, or as a JSON string when it is not JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req =
            reqwest::Client::new().request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// `POST path` with a JSON body: see [`Server::call`].
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `GET path`: see [`Server::call`].
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A `cairn` client command with this server's URL and admin token in its environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        clear_cairn_env(&mut cmd);
        cmd.env("HOME", &self.home).env("CAIRN_URL", &self.url).env("CAIRN_TOKEN", &self.token);
        cmd
    }

    /// Runs a CLI command and returns its output (whatever the exit code).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run cairn")
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "cairn {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Sends SIGKILL and waits.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new server process on the same data directory and options.
    pub fn restart(mut self) -> Server {
        self.kill9();
        let mut opts = self.opts.clone();
        opts.data_dir = Some(self.data_dir.clone());
        Self::spawn(opts, self._tmp.clone())
    }

    /// Like [`Server::restart`], at the same address: what a real restart does, and what jobs
    /// that outlive the server need to reach the next one (their tracking URI is fixed).
    pub fn restart_keeping_address(mut self) -> Server {
        self.opts.listen = Some(authority(&self.url));
        self.restart()
    }

    pub fn tmp(&self) -> &Path {
        self._tmp.path()
    }

    /// Kills the process groups of this data directory's jobs, which outlive the server by
    /// design (their shims are reattached by the next server). Only groups whose shim is still
    /// the recorded process are touched.
    pub fn kill_jobs(&self) {
        let Ok(runs) = std::fs::read_dir(self.data_dir.join("runs")) else { return };
        for run in runs.flatten() {
            if let Some(shim) = cairn_jobs::shim::ProcessIdentity::load(&run.path()) {
                shim.kill_leftovers();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        // The last server of a data directory takes its jobs along (a restart hands them on).
        if Arc::strong_count(&self._tmp) == 1 {
            self.kill_jobs();
        }
    }
}

/// A fresh, empty PostgreSQL database for one test, dropped when the guard goes.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// The PostgreSQL server tests use (`CAIRN_TEST_POSTGRES`, default the local one, trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let name = format!("cairn_test_{}", uuid_like());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL must be reachable at {admin_url} (scripts/setup.sh starts it): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin_url).to_string();
        PgDatabase { url: format!("{base}/{name}"), admin_url, name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            })
        })
        .join();
    }
}

pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{}_{}_{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Writes `files` (relative path → content) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, content) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// `host:port` of a server URL.
pub fn authority(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// Sends bytes exactly as given (no URL normalisation) and returns status and body.
pub fn raw_http(url: &str, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(authority(url)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A raw PUT of `body` to a datastore file path given verbatim (may contain `..`, `%2e` …).
pub fn raw_put(server: &Server, ws: &str, raw_path: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "PUT /api/v1/workspaces/{ws}/datastores/default/files/{raw_path} HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        authority(&server.url),
        server.token,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw_http(&server.url, &req)
}

/// Every file under `dir`, relative, sorted (to prove nothing was written elsewhere).
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> =
        walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The studio's sign-in form as a browser gets it: its CSRF cookie (`cairn_login=…`, ready for a
/// `Cookie` header) and the value of its hidden `csrf` field.
pub async fn studio_login_form(http: &reqwest::Client, url: &str) -> (String, String) {
    let r = http.get(format!("{url}/login")).send().await.unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cairn_login="))
        .unwrap_or_else(|| panic!("the sign-in form sets no cairn_login cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = r.text().await.unwrap();
    let marker = r#"name="csrf" value=""#;
    let at = body.find(marker).unwrap_or_else(|| panic!("no csrf field in the sign-in form: {body}"));
    let rest = &body[at + marker.len()..];
    (cookie, rest[..rest.find('"').unwrap()].to_string())
}

/// Signs in to the studio as a browser does (the form, then its post with `token`); returns the
/// post's answer, redirects not followed.
pub async fn studio_login(http: &reqwest::Client, url: &str, token: &str, next: &str) -> reqwest::Response {
    let (cookie, csrf) = studio_login_form(http, url).await;
    http.post(format!("{url}/login"))
        .header("cookie", cookie)
        .form(&[("token", token), ("next", next), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap()
}

/// The metadata backends the behaviour tests run on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A server on `backend` with `opts`; the PostgreSQL database lives as long as the returned guard.
pub async fn start_on(backend: Backend, mut opts: Opts) -> (Server, Option<PgDatabase>) {
    match backend {
        Backend::Sqlite => (Server::start_with(opts), None),
        Backend::Postgres => {
            let db = PgDatabase::create().await;
            opts.database_url = Some(db.url.clone());
            (Server::start_with(opts), Some(db))
        }
    }
}

/// Runs each `async fn NAME(Backend)` named as two tests, `sqlite::NAME` and `postgres::NAME`
/// (the test file declares `#[macro_use] mod common;` and has `Backend` in scope).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread")] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

/// The pids of the processes whose command line matches `pattern` (`pgrep -f`) and whose
/// environment contains `needle`, sorted.
pub fn processes_with_env(pattern: &str, needle: &str) -> Vec<i32> {
    let out = Command::new("pgrep").args(["-f", pattern]).output().unwrap();
    let mut pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|e| String::from_utf8_lossy(&e).contains(needle))
                .unwrap_or(false)
        })
        .collect();
    pids.sort();
    pids
}
