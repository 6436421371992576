//! `cairn env …`, `cairn compute …`, `cairn job …` and `cairn run …`: training runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_client::{transfer, WorkspaceApi};
use cairn_core::runs::*;
use clap::Subcommand;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{ClientArgs, WorkspaceArg};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Register an environment version from a YAML file (Azure ML v2 shape, plus pip/requirements).
    Create {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List environments and their versions.
    List {
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show NAME or NAME@VERSION.
    Show {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Build (or find cached) the environment's venv and print the build log.
    Build {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete NAME@VERSION.
    Delete {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ComputeCommand {
    /// Create a compute target from a YAML file (Azure ML v2 compute shape).
    Create {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List compute targets with their sizes, nodes and queues.
    List {
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a compute target: nodes, queue and running jobs.
    Show {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a compute target that runs and queues no job.
    Delete {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Machine sizes: the shipped ones and the workspace's own.
    #[command(subcommand)]
    Size(SizeCommand),
}

#[derive(Subcommand, Debug)]
pub enum SizeCommand {
    /// Define a size for this workspace's compute targets.
    Add {
        name: String,
        /// Cores per node (1 up to the server machine's cores).
        #[arg(long)]
        cores: u32,
        /// Memory per node in GiB (enforced on the job's processes).
        #[arg(long = "memory-gb")]
        memory_gb: f64,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The shipped sizes and the workspace's own.
    List {
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a workspace size no compute target uses.
    Delete {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a command job from a YAML file (Azure ML v2 command-job shape).
    Submit {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Wait until the job ends; exit non-zero unless it completed.
        #[arg(long)]
        wait: bool,
        /// Print the job's log while it runs (implies --wait).
        #[arg(long)]
        stream: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List runs, newest first.
    List {
        #[arg(long, short = 'e')]
        experiment: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A job's status, compute target, environment, command, inputs, metrics, params, tags and error.
    Show {
        run: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a job's log; -f follows it until the job ends.
    Logs {
        run: String,
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job (its whole process tree is stopped).
    Cancel {
        run: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Download a run's artifacts (outputs/, logs/) into DEST/RUN, each file whole or not at all.
    Download {
        run: String,
        /// Only this file or folder of the run (e.g. `outputs`); everything by default.
        #[arg(long, default_value = "")]
        path: String,
        #[arg(long, default_value = ".")]
        dest: PathBuf,
        /// Replace local files that are already there (otherwise nothing is downloaded).
        #[arg(long)]
        overwrite: bool,
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// List runs, newest first; `--parent RUN` lists that run's child runs.
    List {
        #[arg(long, short = 'e')]
        experiment: Option<String>,
        /// Only the child runs of this run.
        #[arg(long)]
        parent: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A run's status, parent, params, tags, properties and latest metrics.
    Show {
        run: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Search runs: `--filter "metrics.rmse < 0.7 and params.max_depth = '5'" --order-by "metrics.rmse ASC"`.
    Search {
        #[arg(long, short = 'e')]
        experiment: Option<String>,
        #[arg(long, default_value = "")]
        filter: String,
        #[arg(long = "order-by")]
        order_by: Vec<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Several runs' params and latest metrics side by side.
    Compare {
        #[arg(required = true, num_args = 2..)]
        runs: Vec<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every metric series of a run.
    Metrics {
        run: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// An environment file's `version:`, as the integer the server takes (None: the next one).
pub(crate) fn env_version(file: &cairn_jobs::env::EnvironmentFile) -> anyhow::Result<Option<i64>> {
    file.version
        .as_deref()
        .map(|v| v.parse::<i64>().with_context(|| format!("version {v:?} must be an integer")))
        .transpose()
}

pub async fn env(command: EnvCommand) -> anyhow::Result<()> {
    match command {
        EnvCommand::Create { file, ws, client } => {
            let parsed = cairn_jobs::env::EnvironmentFile::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
            let base = file.parent().unwrap_or(Path::new("."));
            let resolved =
                parsed.resolve_with_notes(base).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for note in &resolved.notes {
                eprintln!("note: {note}");
            }
            let name = parsed.name.clone().context("the environment file needs a name")?;
            let version = env_version(&parsed)?;
            let req = CreateEnvironment {
                name,
                version,
                description: parsed.description.clone().unwrap_or_default(),
                spec: serde_json::to_value(&resolved.spec)?,
            };
            let api = client.workspace_api(&ws)?;
            let env: Environment = api.post("environments", &req).await?;
            output::print_one(
                client.output,
                &env,
                vec![("environment", format!("{}@{}", env.name, env.version)), ("hash", env.hash.clone())],
            )
        }
        EnvCommand::List { ws, client } => {
            let envs: Vec<Environment> = client.workspace_api(&ws)?.get("environments").await?;
            let rows = envs
                .iter()
                .map(|e| {
                    let packages = e.spec["packages"].as_array().map(|p| p.len()).unwrap_or(0);
                    vec![
                        e.name.clone(),
                        e.version.to_string(),
                        format!("{packages} packages"),
                        e.hash[..12].to_string(),
                    ]
                })
                .collect();
            output::print(client.output, &envs, &["NAME", "VERSION", "SPEC", "HASH"], rows)
        }
        EnvCommand::Show { name, ws, client } => {
            let env: Environment = client.workspace_api(&ws)?.get(&format!("environments/{name}")).await?;
            output::print_one(
                client.output,
                &env,
                vec![
                    ("environment", format!("{}@{}", env.name, env.version)),
                    ("description", env.description.clone()),
                    ("hash", env.hash.clone()),
                    ("spec", serde_json::to_string(&env.spec)?),
                ],
            )
        }
        EnvCommand::Build { name, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let built: EnvironmentBuild =
                api.post(&format!("environments/{name}/build"), &serde_json::json!({})).await?;
            if client.output == crate::config::OutputFormat::Table {
                print!("{}", built.log);
            }
            output::print_one(
                client.output,
                &built,
                vec![
                    ("ready", built.ready.to_string()),
                    ("cached", built.reused.to_string()),
                    ("hash", built.hash.clone()),
                ],
            )
        }
        EnvCommand::Delete { name, ws, client } => {
            let api = client.workspace_api(&ws)?;
            api.delete(&format!("environments/{name}")).await?;
            output::done(client.output, &format!("environment {name} deleted"));
            Ok(())
        }
    }
}

pub async fn compute(command: ComputeCommand) -> anyhow::Result<()> {
    let show = |c: &Compute| {
        let s = c.state.clone();
        vec![
            ("compute", c.name.clone()),
            ("type", c.kind.clone()),
            ("size", format!("{} ({} cores, {} GB)", c.size, c.cores, c.memory_gb)),
            (
                "nodes",
                format!(
                    "min {}, max {}, idle scale-down after {} s",
                    c.min_nodes, c.max_nodes, c.idle_seconds
                ),
            ),
            (
                "state",
                s.as_ref()
                    .map(|s| {
                        format!(
                            "{} nodes: {} busy, {} starting, {} idle",
                            s.current_nodes, s.busy_nodes, s.starting_nodes, s.idle_nodes
                        )
                    })
                    .unwrap_or_default(),
            ),
            (
                "node list",
                s.as_ref()
                    .map(|s| {
                        let now = chrono::Utc::now().timestamp_millis();
                        s.nodes
                            .iter()
                            .map(|n| {
                                format!("node {} {} for {} s", n.id, n.state, (now - n.since).max(0) / 1000)
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default(),
            ),
            ("running", s.as_ref().map(|s| s.running_runs.join(", ")).unwrap_or_default()),
            ("queued", s.as_ref().map(|s| s.queued_runs.join(", ")).unwrap_or_default()),
            ("limits", s.as_ref().map(|s| s.limits.clone()).unwrap_or_default()),
        ]
    };
    match command {
        ComputeCommand::Create { file, ws, client } => {
            let req: CreateCompute = crate::cmd::yaml::parse(&file, crate::cmd::yaml::read(&file)?)?;
            let c: Compute = client.workspace_api(&ws)?.post("computes", &req).await?;
            output::print_one(client.output, &c, show(&c))
        }
        ComputeCommand::List { ws, client } => {
            let list: Vec<Compute> = client.workspace_api(&ws)?.get("computes").await?;
            let rows = list
                .iter()
                .map(|c| {
                    let s = c.state.clone();
                    vec![
                        c.name.clone(),
                        c.size.clone(),
                        format!("{}..{}", c.min_nodes, c.max_nodes),
                        s.as_ref().map(|s| s.busy_nodes.to_string()).unwrap_or_default(),
                        s.as_ref().map(|s| s.queued_runs.len().to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            output::print(client.output, &list, &["NAME", "SIZE", "NODES", "BUSY", "QUEUED"], rows)
        }
        ComputeCommand::Show { name, ws, client } => {
            let c: Compute = client.workspace_api(&ws)?.get(&format!("computes/{name}")).await?;
            output::print_one(client.output, &c, show(&c))
        }
        ComputeCommand::Delete { name, ws, client } => {
            let api = client.workspace_api(&ws)?;
            api.delete(&format!("computes/{name}")).await?;
            output::done(client.output, &format!("compute {name} deleted"));
            Ok(())
        }
        ComputeCommand::Size(command) => size(command).await,
    }
}

async fn size(command: SizeCommand) -> anyhow::Result<()> {
    let row = |s: &ComputeSize| {
        vec![
            s.name.clone(),
            s.cores.to_string(),
            s.memory_gb.to_string(),
            if s.shipped { "shipped".into() } else { s.created_by.clone().unwrap_or_default() },
        ]
    };
    const HEADERS: [&str; 4] = ["SIZE", "CORES", "MEMORY GB", "BY"];
    match command {
        SizeCommand::Add { name, cores, memory_gb, ws, client } => {
            let req = CreateComputeSize { name, cores, memory_gb };
            let s: ComputeSize = client.workspace_api(&ws)?.post("sizes", &req).await?;
            output::print(client.output, &s, &HEADERS, vec![row(&s)])
        }
        SizeCommand::List { ws, client } => {
            let list: Vec<ComputeSize> = client.workspace_api(&ws)?.get("sizes").await?;
            let rows = list.iter().map(row).collect();
            output::print(client.output, &list, &HEADERS, rows)
        }
        SizeCommand::Delete { name, ws, client } => {
            let api = client.workspace_api(&ws)?;
            api.delete(&format!("sizes/{name}")).await?;
            output::done(client.output, &format!("size {name} deleted"));
            Ok(())
        }
    }
}

/// A command job file, in Azure ML v2's shape (`azureml:` prefixes are accepted and dropped).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    #[serde(rename = "type", default)]
    _kind: Option<String>,
    #[serde(alias = "experiment_name")]
    experiment: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    code: Option<PathBuf>,
    command: String,
    environment: String,
    compute: String,
    #[serde(default)]
    inputs: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// A data input as the job file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataInputFile {
    path: String,
    #[serde(default)]
    mode: Option<String>,
    /// Azure's `uri_folder` or `uri_file`: whichever the path names is used.
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// One entry of the job file's `inputs`: a literal (a number, string or boolean, as Azure ML v2
/// writes hyper-parameters), a data input `{path, mode, type}`, or, as a shorthand, a data path
/// alone (`datastore://…` or `azureml://datastores/…`).
fn input_of(name: &str, value: serde_yaml::Value) -> anyhow::Result<JobInput> {
    use serde_yaml::Value;
    let data = |path: String, mode: Option<String>| -> anyhow::Result<JobInput> {
        let mode = match mode.as_deref() {
            None | Some("ro_mount") | Some("mount") => InputMode::Mount,
            Some("download") => InputMode::Download,
            Some(other) => bail!("inputs.{name}.mode: {other:?} is not supported (use ro_mount or download)"),
        };
        Ok(JobInput::Data(DataInput { path, mode }))
    };
    match value {
        Value::String(s) if s.starts_with("datastore://") || s.starts_with("azureml://") => data(s, None),
        // A literal: the API type's own reading (integer, float, text or boolean).
        literal @ (Value::String(_) | Value::Bool(_) | Value::Number(_)) => {
            serde_yaml::from_value(literal).map_err(|e| anyhow::anyhow!("inputs.{name}: {e}"))
        }
        Value::Mapping(ref m) => {
            let literal_type = m
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| ["integer", "number", "string", "boolean"].contains(t));
            if let Some(t) = literal_type {
                let a = if t == "integer" { "an" } else { "a" };
                bail!("inputs.{name}: {a} {t} input is written as its value (e.g. `{name}: 0.5`), not as {{type, …}}");
            }
            let f: DataInputFile =
                serde_yaml::from_value(value).map_err(|e| anyhow::anyhow!("inputs.{name}: {e}"))?;
            match f.kind.as_deref() {
                None | Some("uri_folder") | Some("uri_file") => data(f.path, f.mode),
                Some(other) => bail!(
                    "inputs.{name}.type: {other:?} is not supported (uri_folder or uri_file; a literal input \
                     is written as its value, e.g. `{name}: 0.5`)"
                ),
            }
        }
        Value::Null => bail!("inputs.{name} has no value"),
        _ => bail!("inputs.{name}: expected a literal (number, string, boolean) or a data input with a path"),
    }
}

fn strip_azureml(s: &str) -> String {
    let s = s.strip_prefix("azureml:").unwrap_or(s);
    // azureml:NAME:VERSION → NAME@VERSION
    match s.rsplit_once(':') {
        Some((n, v)) if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() => format!("{n}@{v}"),
        _ => s.to_string(),
    }
}

fn to_submit(file: JobFile, snapshot: Option<String>) -> anyhow::Result<SubmitJob> {
    let mut inputs = BTreeMap::new();
    for (name, value) in file.inputs {
        let input = input_of(&name, value)?;
        inputs.insert(name, input);
    }
    let mut tags = file.tags;
    if let Some(d) = file.description {
        tags.entry("description".into()).or_insert(d);
    }
    Ok(SubmitJob {
        experiment: file.experiment,
        display_name: file.display_name,
        snapshot,
        command: file.command,
        environment: strip_azureml(&file.environment),
        compute: strip_azureml(&file.compute),
        inputs,
        environment_variables: file.environment_variables,
        timeout: file.timeout,
        tags,
    })
}

/// Snapshots the code folder (honouring .gitignore and .amlignore) and uploads what is missing.
pub(crate) async fn upload_code(client: &ClientArgs, ws: &str, dir: &Path) -> anyhow::Result<String> {
    let mut listed = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .add_custom_ignore_filename(".amlignore")
        .require_git(false)
        .hidden(true)
        .build();
    for entry in walker {
        let entry = entry?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let rel = entry.path().strip_prefix(dir)?.to_str().context("code paths must be UTF-8")?.to_string();
        listed.push((entry.path().to_path_buf(), rel));
    }
    let mut files = cairn_client::blobs::hash_files(listed)?;
    let total: u64 = files.iter().map(|f| f.file.size).sum();
    let limit = 300 * 1024 * 1024;
    if total > limit {
        files.sort_by_key(|f| std::cmp::Reverse(f.file.size));
        let biggest: Vec<String> = files
            .iter()
            .take(5)
            .map(|f| format!("{} ({})", f.file.path, output::bytes(f.file.size)))
            .collect();
        bail!(
            "the code folder {} holds {} (limit {}); the biggest files: {}. Move data to a datastore or list it in .amlignore",
            dir.display(),
            output::bytes(total),
            output::bytes(limit),
            biggest.join(", ")
        );
    }
    let created = cairn_client::blobs::upload_snapshot(&client.client()?, ws, &files).await?;
    Ok(created.id)
}

pub async fn job(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit { file, wait, stream, ws, client } => {
            let parsed: JobFile = crate::cmd::yaml::parse(&file, crate::cmd::yaml::read(&file)?)?;
            let api = client.workspace_api(&ws)?;
            let snapshot = match &parsed.code {
                Some(code) => {
                    let dir = file.parent().unwrap_or(Path::new(".")).join(code);
                    if !dir.is_dir() {
                        bail!("code: {} is not a folder", dir.display());
                    }
                    Some(upload_code(&client, api.workspace(), &dir).await?)
                }
                None => None,
            };
            let submit = to_submit(parsed, snapshot)?;
            let run: Run = api.post("jobs", &submit).await?;
            if !(wait || stream) {
                return print_run(client.output, &run);
            }
            if client.output == crate::config::OutputFormat::Table {
                eprintln!("run {} queued; waiting", run.id);
            }
            let done = follow(&api, &run.id, stream).await?;
            print_run(client.output, &done)?;
            if done.status != RunStatus::Completed {
                bail!("run {} ended {}: {}", done.id, done.status.as_str(), done.error.unwrap_or_default());
            }
            Ok(())
        }
        JobCommand::List { experiment, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let q: Vec<(&str, String)> = experiment.map(|e| ("experiment", e)).into_iter().collect();
            let runs: Vec<Run> = api.get_query("runs", &q).await?;
            let rows = runs
                .iter()
                .map(|r| {
                    let metrics: Vec<String> =
                        r.metrics.iter().map(|(k, m)| format!("{k}={}", output::number(m.value))).collect();
                    vec![
                        r.id.clone(),
                        r.experiment.clone(),
                        r.status.as_str().into(),
                        output::time(r.created_at),
                        metrics.join(" "),
                    ]
                })
                .collect();
            output::print(client.output, &runs, &["RUN", "EXPERIMENT", "STATUS", "CREATED", "METRICS"], rows)
        }
        JobCommand::Show { run, ws, client } => {
            let r: Run = client.workspace_api(&ws)?.get(&format!("runs/{run}")).await?;
            print_run(client.output, &r)
        }
        JobCommand::Logs { run, follow: f, ws, client } => {
            let api = client.workspace_api(&ws)?;
            if f {
                follow(&api, &run, true).await?;
            } else {
                let chunk: Value = api.get(&format!("runs/{run}/logs")).await?;
                print!("{}", chunk["text"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        JobCommand::Cancel { run, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let r: Run = api.post(&format!("runs/{run}/cancel"), &serde_json::json!({})).await?;
            output::done(client.output, &format!("run {} is {}", r.id, r.status.as_str()));
            Ok(())
        }
        JobCommand::Download { run, path, dest, overwrite, quiet, ws, client: args } => {
            let ws = ws.resolve()?;
            let client = args.client()?;
            // The run's id names the folder, so that several runs' outputs sit side by side.
            let root = dest
                .join(cairn_core::RelPath::parse(&run).map_err(|e| anyhow::anyhow!("run id: {e}"))?.as_str());
            let from = transfer::Remote::Run { workspace: &ws, run: &run };
            let opts = transfer::TransferOpts { overwrite, concurrency: 8 };
            let bar = std::sync::Arc::new(crate::progress::Bar::new(quiet));
            let report = transfer::download(&client, from, &path, &root, opts, bar).await?;
            output::done(
                args.output,
                &format!(
                    "downloaded {} file(s), {} into {}",
                    report.files,
                    output::bytes(report.bytes),
                    root.display()
                ),
            );
            Ok(())
        }
    }
}

/// Waits until a run ends. With `stream`, its log is printed from the server's follow stream
/// (`logs?follow=true`, which closes when the run has ended); without, the run is polled.
async fn follow(api: &WorkspaceApi, run: &str, stream: bool) -> anyhow::Result<Run> {
    use std::io::Write;
    let mut offset = 0u64;
    if stream {
        let mut resp = api
            .send(api.request(Method::GET, &format!("runs/{run}/logs")).query(&[("follow", "true")]))
            .await?;
        let mut out = std::io::stdout();
        // A broken stream (server restart) falls back to polling from what was printed.
        while let Ok(Some(chunk)) = resp.chunk().await {
            out.write_all(&chunk)?;
            out.flush()?;
            offset += chunk.len() as u64;
        }
        let r: Run = api.get(&format!("runs/{run}")).await?;
        if r.status.is_terminal() {
            return Ok(r);
        }
    }
    loop {
        if stream {
            let chunk: Value =
                api.get_query(&format!("runs/{run}/logs"), &[("offset", offset.to_string())]).await?;
            if let Some(t) = chunk["text"].as_str() {
                print!("{t}");
            }
            offset = chunk["next_offset"].as_u64().unwrap_or(offset);
        }
        let r: Run = api.get(&format!("runs/{run}")).await?;
        if r.status.is_terminal() {
            if stream {
                let chunk: Value =
                    api.get_query(&format!("runs/{run}/logs"), &[("offset", offset.to_string())]).await?;
                print!("{}", chunk["text"].as_str().unwrap_or_default());
            }
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A text field of the run's submitted job (empty for runs that are not jobs).
fn job_field(r: &Run, key: &str) -> String {
    r.job.as_ref().and_then(|j| j[key].as_str()).unwrap_or_default().to_string()
}

/// The job's inputs: `name=value` for literals, `name=PATH (mode)` for data.
fn job_inputs(r: &Run) -> String {
    let Some(inputs) = r
        .job
        .as_ref()
        .and_then(|j| serde_json::from_value::<BTreeMap<String, JobInput>>(j["inputs"].clone()).ok())
    else {
        return String::new();
    };
    let shown: Vec<String> = inputs
        .iter()
        .map(|(name, input)| match input {
            JobInput::Data(d) => format!(
                "{name}={} ({})",
                d.path,
                if d.mode == InputMode::Download { "download" } else { "ro_mount" }
            ),
            JobInput::Literal(v) => format!("{name}={}", v.text()),
        })
        .collect();
    shown.join(" ")
}

fn print_run(format: crate::config::OutputFormat, r: &Run) -> anyhow::Result<()> {
    let metrics: Vec<String> =
        r.metrics.iter().map(|(k, m)| format!("{k}={}", output::number(m.value))).collect();
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let properties: Vec<String> = r.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
    output::print_one(
        format,
        r,
        vec![
            ("id", r.id.clone()),
            ("experiment", r.experiment.clone()),
            ("status", r.status.as_str().into()),
            ("parent", r.parent_id.clone().unwrap_or_default()),
            ("created_by", r.created_by.clone().unwrap_or_default()),
            ("compute", r.compute.clone().unwrap_or_default()),
            ("environment", r.environment.clone().unwrap_or_default()),
            (
                "server",
                r.server
                    .as_ref()
                    .map(|s| {
                        format!(
                            "{} ({}, {}){}",
                            s.id,
                            s.host,
                            s.url,
                            if s.alive { "" } else { " UNREACHABLE" }
                        )
                    })
                    .unwrap_or_default(),
            ),
            ("created", output::time(r.created_at)),
            ("command", job_field(r, "command")),
            ("inputs", job_inputs(r)),
            ("metrics", metrics.join(" ")),
            ("params", params.join(" ")),
            ("tags", tags.join(" ")),
            ("properties", properties.join(" ")),
            ("error", r.error.clone().unwrap_or_default()),
        ],
    )
}

pub async fn run(command: RunCommand) -> anyhow::Result<()> {
    match command {
        RunCommand::List { experiment, parent, limit, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let mut q = vec![("limit", limit.to_string())];
            q.extend(experiment.map(|e| ("experiment", e)));
            q.extend(parent.map(|p| ("parent", p)));
            let runs: Vec<Run> = api.get_query("runs", &q).await?;
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.experiment.clone(),
                        r.status.as_str().into(),
                        r.parent_id.clone().unwrap_or_default(),
                        output::time(r.created_at),
                    ]
                })
                .collect();
            output::print(client.output, &runs, &["RUN", "EXPERIMENT", "STATUS", "PARENT", "CREATED"], rows)
        }
        RunCommand::Show { run, ws, client } => {
            let r: Run = client.workspace_api(&ws)?.get(&format!("runs/{run}")).await?;
            print_run(client.output, &r)
        }
        RunCommand::Search { experiment, filter, order_by, limit, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let req = SearchRuns { experiment, filter, order_by, page_size: Some(limit), page_token: None };
            let page: RunsPage = api.post("runs/search", &req).await?;
            let metric_keys: std::collections::BTreeSet<&String> =
                page.runs.iter().flat_map(|r| r.metrics.keys()).collect();
            let param_keys: std::collections::BTreeSet<&String> =
                page.runs.iter().flat_map(|r| r.params.keys()).collect();
            let mut headers = vec!["RUN".to_string(), "STATUS".to_string()];
            headers.extend(param_keys.iter().map(|k| format!("params.{k}")));
            headers.extend(metric_keys.iter().map(|k| format!("metrics.{k}")));
            let rows = page
                .runs
                .iter()
                .map(|r| {
                    let mut row = vec![r.id.clone(), r.status.as_str().to_string()];
                    row.extend(param_keys.iter().map(|k| r.params.get(*k).cloned().unwrap_or_default()));
                    row.extend(
                        metric_keys
                            .iter()
                            .map(|k| r.metrics.get(*k).map(|m| output::number(m.value)).unwrap_or_default()),
                    );
                    row
                })
                .collect();
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            output::print(client.output, &page, &headers, rows)
        }
        RunCommand::Compare { runs, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let mut got = Vec::new();
            for id in &runs {
                got.push(api.get::<Run>(&format!("runs/{id}")).await?);
            }
            let mut rows = Vec::new();
            let params: std::collections::BTreeSet<&String> =
                got.iter().flat_map(|r| r.params.keys()).collect();
            let metrics: std::collections::BTreeSet<&String> =
                got.iter().flat_map(|r| r.metrics.keys()).collect();
            rows.push(
                std::iter::once("status".to_string())
                    .chain(got.iter().map(|r| r.status.as_str().to_string()))
                    .collect(),
            );
            for k in params {
                let vals: Vec<String> =
                    got.iter().map(|r| r.params.get(k).cloned().unwrap_or_else(|| "-".into())).collect();
                let differs = vals.windows(2).any(|w| w[0] != w[1]);
                rows.push(
                    std::iter::once(format!("{}params.{k}", if differs { "* " } else { "" }))
                        .chain(vals)
                        .collect(),
                );
            }
            for k in metrics {
                let vals: Vec<String> = got
                    .iter()
                    .map(|r| r.metrics.get(k).map(|m| output::number(m.value)).unwrap_or_else(|| "-".into()))
                    .collect();
                let differs = vals.windows(2).any(|w| w[0] != w[1]);
                rows.push(
                    std::iter::once(format!("{}metrics.{k}", if differs { "* " } else { "" }))
                        .chain(vals)
                        .collect(),
                );
            }
            let mut headers = vec!["(* differs)".to_string()];
            headers.extend(got.iter().map(|r| r.id.clone()));
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            output::print(client.output, &got, &headers, rows)
        }
        RunCommand::Metrics { run, ws, client } => {
            let m: RunMetrics = client.workspace_api(&ws)?.get(&format!("runs/{run}/metrics")).await?;
            let rows = m
                .metrics
                .iter()
                .flat_map(|(k, pts)| {
                    pts.iter().map(move |p| {
                        vec![
                            k.clone(),
                            p.step.to_string(),
                            output::number(p.value),
                            output::time(p.timestamp),
                        ]
                    })
                })
                .collect();
            output::print(client.output, &m, &["METRIC", "STEP", "VALUE", "TIME"], rows)
        }
    }
}
