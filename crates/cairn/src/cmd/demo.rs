//! `cairn demo`, the main job: the Azure ML walkthrough (`../shared/seed/azureml-walkthrough.md`,
//! steps 1–15) run as Python through the `azureml` compatibility layer against a throw-away
//! server, from the upload of the wine data to a prediction.
//!
//! Everything it needs is compiled into the binary: the walkthrough script
//! (`examples/wine/walkthrough.py`), its `train.py` and `score.py`, the wine data, and the
//! standard-library-only `cairn` SDK and `azureml` packages (`cairn_server::runtime`). The server is
//! this same binary (`cairn server`) in a child process with its own data directory; the built
//! environments live in a cache shared between demo runs, so a second run reuses them.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use crate::config::{ClientArgs, OutputFormat, WorkspaceArg};

/// The files of `examples/wine/` the walkthrough reads, as `(path, bytes)`.
const EXAMPLE: &[(&str, &[u8])] = &[
    ("walkthrough.py", include_bytes!("../../../../examples/wine/walkthrough.py")),
    ("walkthrough/train.py", include_bytes!("../../../../examples/wine/walkthrough/train.py")),
    ("walkthrough/score.py", include_bytes!("../../../../examples/wine/walkthrough/score.py")),
    (
        "winedata/winequality_red.csv",
        include_bytes!("../../../../examples/wine/winedata/winequality_red.csv"),
    ),
];

/// Names the walkthrough uses (its workspace, experiment and service).
const WORKSPACE: &str = "azureml_workspace";
const EXPERIMENT: &str = "wine_expt";
const SERVICE: &str = "wine-service";
/// The walkthrough's sample (step 15).
const SAMPLE: &str = r#"{"data": [[7.3, 0.65, 0, 1.2, 0.065, 15, 21, 0.9946, 3.39, 0.47, 10]]}"#;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Run against this running server instead of a throw-away one (its token: --token,
    /// CAIRN_TOKEN, `cairn login`, or the local server's).
    #[arg(long)]
    url: Option<String>,
    /// Token for --url.
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Python that runs the walkthrough (it needs only the standard library). Default: python3.
    #[arg(long, env = "CAIRN_DEMO_PYTHON")]
    python: Option<PathBuf>,
    /// Folder for the server's data and the walkthrough's files, kept afterwards. Default: a
    /// temporary folder, removed at the end unless the walkthrough fails.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Cache of built environments shared by demo runs. Default: $XDG_CACHE_HOME/cairn/envs
    /// (~/.cache/cairn/envs).
    #[arg(long)]
    env_cache: Option<PathBuf>,
    /// Stop the throw-away server when the walkthrough ends, even in a terminal (where it
    /// otherwise keeps serving the studio until Ctrl-C).
    #[arg(long)]
    exit: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (work, temporary) = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            (std::fs::canonicalize(dir)?, false)
        }
        None => (tempfile::Builder::new().prefix("cairn-demo.").tempdir()?.keep(), true),
    };
    let result = demo(&args, &work, started).await;
    match (&result, temporary) {
        (Ok(()), true) => {
            let _ = std::fs::remove_dir_all(&work);
        }
        (Err(_), _) | (_, false) => eprintln!("demo files and server log kept in {}", work.display()),
    }
    result
}

async fn demo(args: &DemoArgs, work: &Path, started: Instant) -> anyhow::Result<()> {
    let python = args.python.clone().unwrap_or_else(|| PathBuf::from("python3"));
    check_python(&python)?;

    let example = work.join("example");
    for (name, bytes) in EXAMPLE {
        let path = example.join(name);
        std::fs::create_dir_all(path.parent().expect("example files live in folders"))?;
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let sdk = work.join("sdk");
    cairn_server::runtime::unpack(&sdk)?;

    let mut server = None;
    let (url, token) = match &args.url {
        Some(url) => {
            let client =
                ClientArgs { url: Some(url.clone()), token: args.token.clone(), output: OutputFormat::Table };
            let token =
                client.resolved_token()?.context("no token for --url: pass --token or set CAIRN_TOKEN")?;
            (url.trim_end_matches('/').to_string(), token)
        }
        None => {
            let cache = match &args.env_cache {
                Some(dir) => dir.clone(),
                None => default_env_cache()?,
            };
            let started = Server::start(&work.join("server"), &cache)?;
            println!(
                "== A throw-away Cairn server at {} (data in {})",
                started.url,
                started.data_dir.display()
            );
            println!("   environments are cached in {} (a second demo reuses them)", cache.display());
            let pair = (started.url.clone(), started.token.clone());
            server = Some(started);
            pair
        }
    };

    println!("== The walkthrough (examples/wine/walkthrough.py) through the azureml compatibility layer\n");
    let run_dir = work.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let status = Command::new(&python)
        .arg(example.join("walkthrough.py"))
        .current_dir(&run_dir)
        .env("PYTHONPATH", &sdk)
        .env("PYTHONUNBUFFERED", "1")
        .env("CAIRN_URL", &url)
        .env("CAIRN_TOKEN", &token)
        .env_remove("CAIRN_WORKSPACE")
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        if let Some(s) = &server {
            eprintln!("the server's log: {}", s.log.display());
        }
        bail!("the walkthrough failed ({status}); its output is above");
    }

    summary(&url, &token, started).await?;
    if let Some(mut s) = server {
        if !args.exit && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            println!("\nThe server keeps running for the studio; press Ctrl-C to stop it.");
            tokio::signal::ctrl_c().await?;
        }
        s.stop();
    }
    Ok(())
}

/// Prints the prediction, the run's metrics and where to look at everything.
async fn summary(url: &str, token: &str, started: Instant) -> anyhow::Result<()> {
    let client = ClientArgs {
        url: Some(url.to_string()),
        token: Some(token.to_string()),
        output: OutputFormat::Table,
    };
    let api = client.workspace_api(&WorkspaceArg { workspace: Some(WORKSPACE.to_string()) })?;

    let endpoint: Value = api.get(&format!("endpoints/{SERVICE}")).await?;
    let keys: Value = api.get(&format!("endpoints/{SERVICE}/keys")).await?;
    let scoring_uri = endpoint["scoring_uri"].as_str().context("the endpoint has no scoring_uri")?;
    let key = keys["primary_key"].as_str().context("the endpoint has no primary key")?;
    // The scoring URI takes the endpoint's key, not the API token.
    let answer = reqwest::Client::new()
        .post(scoring_uri)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(SAMPLE)
        .send()
        .await
        .with_context(|| format!("cannot reach {scoring_uri}"))?;
    let status = answer.status();
    let prediction = answer.text().await?;
    if !status.is_success() {
        bail!("scoring the sample failed (HTTP {status}): {prediction}");
    }

    let runs: Vec<Value> =
        api.get_query("runs", &[("experiment", EXPERIMENT.into()), ("limit", "1".into())]).await?;
    let run = runs.first().context("the experiment has no run")?;
    let run_id = run["id"].as_str().context("a run without id")?;
    let metrics: Value = api.get(&format!("runs/{run_id}/metrics")).await?;
    let latest: Vec<String> = metrics["metrics"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, points)| points.as_array()?.last().map(|p| format!("{k} = {}", p["value"])))
                .collect()
        })
        .unwrap_or_default();

    println!("\n== Done in {:.1} s", started.elapsed().as_secs_f64());
    println!("prediction for the walkthrough's sample: {}", prediction.trim());
    println!("run {run_id} of experiment {EXPERIMENT}: {}", latest.join(", "));
    println!("scoring URI: {scoring_uri} (Authorization: Bearer <key>; `cairn endpoint get-keys {SERVICE}`)");
    println!("studio: {url}/w/{WORKSPACE}/runs/{run_id} (sign in with the admin token)");
    Ok(())
}

fn check_python(python: &Path) -> anyhow::Result<()> {
    let out = Command::new(python)
        .args(["-c", "import sys; assert sys.version_info >= (3, 8), sys.version"])
        .output()
        .with_context(|| format!("cannot run {} (set --python or CAIRN_DEMO_PYTHON)", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} is not a usable Python 3.8+: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn default_env_cache() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set: pass --env-cache")?)
            .join(".cache"),
    };
    Ok(base.join("cairn").join("envs"))
}

/// The throw-away server: this binary's `cairn server` in a child process.
struct Server {
    child: Child,
    url: String,
    token: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, env_cache: &Path) -> anyhow::Result<Server> {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(dir)?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let exe = std::env::current_exe().context("cannot find the cairn binary itself")?;
        let mut child = Command::new(exe)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--env-cache")
            .arg(env_cache)
            // Its own folder, so that no ./cairn.toml and no CAIRN_* setting of the caller's
            // server (a PostgreSQL URL, an S3 store) leak into the throw-away one.
            .current_dir(dir)
            .env_remove("CAIRN_DATABASE_URL")
            .env_remove("CAIRN_ARTIFACT_STORE")
            .env_remove("CAIRN_CONFIG")
            .env_remove("CAIRN_ADMIN_TOKEN")
            .env("CAIRN_LOG", std::env::var("CAIRN_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("cannot start `cairn server`")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            if let Some(url) = listening_url(&log) {
                break url;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server stopped at start ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the server did not start within 60 s; its log: {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let token_file = data_dir.join(cairn_server::auth::ADMIN_TOKEN_FILE);
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read {}", token_file.display()))?
            .trim()
            .to_string();
        Ok(Server { child, url, token, data_dir, log })
    }

    /// Stops the server the way Ctrl-C does (SIGTERM: a graceful stop).
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The URL from the server's first log line (`listening on http://HOST:PORT`).
fn listening_url(log: &Path) -> Option<String> {
    let file = std::fs::File::open(log).ok()?;
    BufReader::new(file).lines().map_while(Result::ok).find_map(|line| {
        let at = line.find("listening on http://")?;
        let url = line[at + "listening on ".len()..].split_whitespace().next()?;
        Some(url.to_string())
    })
}
