//! `cairn deployment create|update|list|show|delete|logs`: online deployments, from Azure ML v2's
//! online-deployment YAML. `create` and `update` upload the `code_configuration.code` folder as a
//! snapshot.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cairn_client::WorkspaceApi;
use cairn_core::deployments::*;
use cairn_core::endpoints::{Endpoint, UpdateEndpoint};
use clap::Subcommand;
use reqwest::Method;

use crate::config::{ClientArgs, WorkspaceArg};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// Create a deployment from a YAML file; returns at once unless --wait.
    Create {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Send all of the endpoint's traffic to this deployment once it is Healthy (waits for it;
        /// a failed deployment leaves the traffic as it was).
        #[arg(long)]
        all_traffic: bool,
        /// Wait until the deployment is Healthy or Failed (Failed exits non-zero).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Update a deployment from its YAML file: a rolling replacement when code, model, environment
    /// or settings change, replicas added or removed when only instance_count does.
    Update {
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Wait until the update is done (a failed update exits non-zero; the old generation
        /// keeps serving).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the deployments of an endpoint.
    List {
        #[arg(long)]
        endpoint: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a deployment: ENDPOINT/NAME.
    Show {
        target: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop and delete a deployment: ENDPOINT/NAME.
    Delete {
        target: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the tail of a deployment's log (replicas' stderr): ENDPOINT/NAME.
    Logs {
        target: String,
        /// Only the last N lines (1 to 100000; default: the last 256 KiB).
        #[arg(long, short = 'l')]
        lines: Option<u32>,
        /// Keep printing what the log gains (as `kubectl logs -f`), the new generation's after an
        /// update, until interrupted or the deployment is deleted.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn split(target: &str) -> anyhow::Result<(&str, &str)> {
    target
        .split_once('/')
        .filter(|(e, n)| !e.is_empty() && !n.is_empty())
        .with_context(|| format!("{target:?}: expected ENDPOINT/DEPLOYMENT"))
}

fn path(endpoint: &str, name: &str, rest: &str) -> anyhow::Result<String> {
    cairn_core::endpoints::validate_endpoint_name(endpoint)?;
    validate_deployment_name(name)?;
    Ok(format!("endpoints/{endpoint}/deployments/{name}{rest}"))
}

/// Polls deployment `d` until it reaches a final state; with `show`, prints its state changes and
/// its log lines past `seen` (the log as it was before) on stderr as they come (stdout keeps the
/// final answer for scripts).
/// Polls deployment `d` until a final state; with `show`, prints its states and, from `seen`
/// (a log cursor: none prints the log's tail first), what its log gains.
async fn follow(
    api: &WorkspaceApi,
    endpoint: &str,
    mut d: Deployment,
    show: bool,
    mut seen: Option<LogCursor>,
) -> anyhow::Result<Deployment> {
    let p = path(endpoint, &d.name, "")?;
    let mut state = None;
    loop {
        if show {
            if state != Some(d.state) {
                eprintln!("deployment {endpoint}/{}: {:?}", d.name, d.state);
                state = Some(d.state);
            }
            if let Ok((text, next)) = log_since(api, endpoint, &d.name, seen).await {
                eprint!("{text}");
                seen = Some(next);
            }
        }
        if d.state.is_final() {
            return Ok(d);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        d = api.get(&p).await?;
    }
}

/// Where a reader of a deployment's log is: the generation whose log it read, and how far.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogCursor {
    generation: i64,
    offset: u64,
}

/// What deployment `endpoint/name`'s log holds past `cursor` (its tail without one), and the
/// cursor after it.
pub(crate) async fn log_since(
    api: &WorkspaceApi,
    endpoint: &str,
    name: &str,
    cursor: Option<LogCursor>,
) -> anyhow::Result<(String, LogCursor)> {
    let query = cursor.map(|c| [("since", c.offset.to_string()), ("generation", c.generation.to_string())]);
    log_request(api, endpoint, name, query.as_ref().map_or(&[][..], |q| &q[..])).await
}

/// The log's tail (its last `lines` lines, else its last 256 KiB) and the cursor after it.
async fn log_tail(
    api: &WorkspaceApi,
    endpoint: &str,
    name: &str,
    lines: Option<u32>,
) -> anyhow::Result<(String, LogCursor)> {
    let query = lines.map(|n| [("lines", n.to_string())]);
    log_request(api, endpoint, name, query.as_ref().map_or(&[][..], |q| &q[..])).await
}

async fn log_request(
    api: &WorkspaceApi,
    endpoint: &str,
    name: &str,
    query: &[(&str, String)],
) -> anyhow::Result<(String, LogCursor)> {
    let request = api.request(Method::GET, &path(endpoint, name, "/logs")?).query(query);
    let response = api.send(request).await?;
    let header = |name: &str| -> anyhow::Result<String> {
        Ok(response
            .headers()
            .get(name)
            .with_context(|| format!("the server sent no {name} header"))?
            .to_str()?
            .to_string())
    };
    let next = LogCursor {
        generation: header("x-cairn-log-generation")?.parse()?,
        offset: header("x-cairn-log-offset")?.parse()?,
    };
    Ok((response.text().await?, next))
}

/// The tail of deployment `endpoint/name`'s log, or its last `lines` lines.
pub(crate) async fn log_text(
    api: &WorkspaceApi,
    endpoint: &str,
    name: &str,
    lines: Option<u32>,
) -> anyhow::Result<String> {
    Ok(log_tail(api, endpoint, name, lines).await?.0)
}

/// What an update in progress asked for, as far as it differs from what serves in a table's eye:
/// the instance count and the model and environment references.
fn pending(p: &CreateDeployment) -> String {
    let models: Vec<String> = p.model.iter().chain(p.models.iter().flatten()).cloned().collect();
    format!(
        "instance_count {}, models {}, environment {}",
        p.instance_count,
        models.join(", "),
        p.environment.as_deref().unwrap_or("(derived from the model)")
    )
}

fn fields(d: &Deployment) -> Vec<(&'static str, String)> {
    vec![
        ("deployment", d.name.clone()),
        ("endpoint", d.endpoint_name.clone()),
        ("state", d.state.as_str().to_string()),
        ("models", d.models.join(", ")),
        ("environment", d.spec.environment.clone().unwrap_or_else(|| "(derived from the model)".into())),
        ("instance_count", d.spec.instance_count.to_string()),
        (
            "scoring_script",
            d.spec
                .code_configuration
                .as_ref()
                .map(|c| c.scoring_script.clone())
                .unwrap_or_else(|| "(none: MLflow scoring)".into()),
        ),
        ("request_timeout_ms", d.spec.request_settings.timeout_ms().to_string()),
        ("max_concurrent", d.spec.request_settings.max_concurrent().to_string()),
        (
            "max_queue_wait_ms",
            d.spec
                .request_settings
                .max_queue_wait_ms
                .map_or_else(|| "(request_timeout_ms)".into(), |w| w.to_string()),
        ),
        ("tags", d.spec.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
        ("reason", d.reason.clone()),
        ("generation", d.generation.to_string()),
        ("update_error", d.update_error.clone()),
        ("pending_update", d.pending_update.as_ref().map(pending).unwrap_or_default()),
        ("created", output::time(d.created_at)),
        ("updated", output::time(d.updated_at)),
    ]
}

/// Reads the YAML (`$schema` dropped, unknown keys refused) and uploads the code folder, which is
/// relative to the file.
async fn read_file(api: &WorkspaceApi, client: &ClientArgs, file: &Path) -> anyhow::Result<CreateDeployment> {
    let mut yaml = crate::cmd::yaml::read(file)?;
    if let Some(map) = yaml.as_mapping_mut() {
        // Azure-only settings that Azure's samples carry: said once, then left out.
        for (key, why) in AZURE_ONLY {
            if map.remove(*key).is_some() {
                eprintln!("note: {}: {key} is not used: {why}", file.display());
            }
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let text_of = |key: &str| map.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let asset = format!("{}-{}", text_of("endpoint_name"), text_of("name"));
        if let Some(env) = map.get("environment").filter(|v| v.is_mapping()).cloned() {
            let reference = inline_environment(api, base, env, &asset)
                .await
                .with_context(|| format!("{}: environment", file.display()))?;
            map.insert("environment".into(), reference.into());
        }
        if let Some(model) = map.get("model").filter(|v| v.is_mapping()).cloned() {
            let reference = inline_model(api, base, model, &asset)
                .await
                .with_context(|| format!("{}: model", file.display()))?;
            map.insert("model".into(), reference.into());
        }
    }
    let mut req: CreateDeployment = crate::cmd::yaml::parse(file, yaml)?;
    if let Some(size) = &req.instance_type {
        // Accepted (Azure has sizes Cairn does not ship), but a typo would silently lift the limits.
        let sizes: Vec<cairn_core::runs::ComputeSize> = api.get("sizes").await?;
        if !sizes.iter().any(|s| s.name.eq_ignore_ascii_case(size)) {
            eprintln!(
                "note: {}: instance_type {size} is not a size of this workspace: its replicas get no \
                 thread or memory limits (see `cairn compute size list`, or add it with `cairn compute size add`)",
                file.display()
            );
        }
    }
    // No code_configuration: a no-code deployment of an MLflow model, nothing to upload.
    if let Some(code) = &mut req.code_configuration {
        let dir = file.parent().unwrap_or(Path::new(".")).join(&code.code);
        if !dir.is_dir() {
            bail!("code_configuration.code: {} is not a folder", dir.display());
        }
        code.code = crate::cmd::jobs::upload_code(client, api.workspace(), &dir).await?;
    }
    Ok(req)
}

/// Fields of Azure ML's online-deployment YAML that have no meaning on Cairn's machines, and why.
const AZURE_ONLY: &[(&str, &str)] = &[
    ("app_insights_enabled", "logs are in `cairn deployment logs`, metrics in the server's /metrics"),
    ("scale_settings", "a deployment keeps its instance_count (no autoscaling)"),
    ("egress_public_network_access", "replicas use the machine's own network"),
    ("data_collector", "requests and answers are not collected"),
];

/// An environment written inline in the deployment (Azure ML v2's `environment: {conda_file: …,
/// image: …}`): resolved like an environment file, relative to the deployment's folder, and
/// registered as `NAME` (its `name`, else `ENDPOINT-DEPLOYMENT`) unless the latest version of that
/// name is the same spec. Returns `NAME:VERSION`.
async fn inline_environment(
    api: &WorkspaceApi,
    base: &Path,
    env: serde_yaml::Value,
    default_name: &str,
) -> anyhow::Result<String> {
    let parsed: cairn_jobs::env::EnvironmentFile = serde_yaml::from_value(env)?;
    let name = parsed.name.clone().unwrap_or_else(|| default_name.to_string());
    let resolved = parsed.resolve_with_notes(base).map_err(|e| anyhow::anyhow!("{e}"))?;
    for note in &resolved.notes {
        eprintln!("note: environment: {note}");
    }
    let spec = serde_json::to_value(resolved.spec.canonicalize().map_err(|e| anyhow::anyhow!("{e}"))?)?;
    let version = crate::cmd::jobs::env_version(&parsed)?;
    // The latest version, or the one the file names, is reused when it holds this spec.
    let existing = match version {
        Some(v) => format!("environments/{name}@{v}"),
        None => format!("environments/{name}"),
    };
    let found: Result<cairn_core::runs::Environment, _> = api.get(&existing).await;
    if let Ok(env) = found {
        if env.spec == spec {
            return Ok(format!("{}:{}", env.name, env.version));
        }
        if version.is_some() {
            bail!(
                "environment {}:{} already exists with another spec: give a new version",
                env.name,
                env.version
            );
        }
    }
    let req = cairn_core::runs::CreateEnvironment {
        name,
        version,
        description: parsed.description.clone().unwrap_or_default(),
        spec,
    };
    let env: cairn_core::runs::Environment = api.post("environments", &req).await?;
    eprintln!("registered environment {}:{}", env.name, env.version);
    Ok(format!("{}:{}", env.name, env.version))
}

/// A model written inline in the deployment (Azure ML v2's `model: {path: ./model}`): its local
/// files are registered as `NAME` (its `name`, else `ENDPOINT-DEPLOYMENT`) unless the latest
/// version holds exactly those files. Returns `NAME:VERSION`.
async fn inline_model(
    api: &WorkspaceApi,
    base: &Path,
    model: serde_yaml::Value,
    default_name: &str,
) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct InlineModel {
        path: String,
        name: Option<String>,
        #[serde(default)]
        description: String,
        /// Azure's asset type (`custom_model`, `mlflow_model`, …): the files say which it is here.
        #[serde(rename = "type")]
        _kind: Option<String>,
    }
    let inline: InlineModel = serde_yaml::from_value(model)?;
    let name = inline.name.unwrap_or_else(|| default_name.to_string());
    cairn_core::names::validate_model_name(&name)?;
    let (client, ws) = (api.client(), api.workspace());
    let mut files = crate::cmd::models::upload_local(client, ws, &base.join(&inline.path)).await?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if let Ok(latest) = client.model_version(ws, &name, "latest").await {
        let mut held = client.model_files(ws, &name, &latest.version.to_string()).await?;
        held.sort_by(|a, b| a.path.cmp(&b.path));
        let same = |a: &cairn_core::models::ModelFile, b: &cairn_core::models::ModelFile| {
            (&a.path, &a.sha256) == (&b.path, &b.sha256)
        };
        if held.len() == files.len() && held.iter().zip(&files).all(|(a, b)| same(a, b)) {
            return Ok(format!("{name}:{}", latest.version));
        }
    }
    let req = cairn_core::models::RegisterModelVersion {
        description: inline.description,
        files: Some(files),
        ..Default::default()
    };
    let v = client.register_model_version(ws, &name, &req).await?;
    eprintln!("registered model {name}:{}", v.version);
    Ok(format!("{name}:{}", v.version))
}

pub async fn run(command: DeploymentCommand) -> anyhow::Result<()> {
    match command {
        DeploymentCommand::Create { file, all_traffic, wait, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let mut req = read_file(&api, &client, &file).await?;
            let Some(endpoint) = req.endpoint_name.clone() else {
                bail!("{}: endpoint_name is required", file.display());
            };
            cairn_core::endpoints::validate_endpoint_name(&endpoint)?;
            req.endpoint_name = Some(endpoint.clone());
            let mut d: Deployment = api.post(&format!("endpoints/{endpoint}/deployments"), &req).await?;
            // Traffic moves only to a deployment that is ready: moved at once, it would send every
            // request to replicas still starting (503) or to one that failed (424), away from the
            // deployment that was serving.
            if wait || all_traffic {
                d = follow(&api, &endpoint, d, wait, None).await?;
                if d.state == DeploymentState::Failed {
                    let traffic =
                        if all_traffic { "; the endpoint's traffic was left as it was" } else { "" };
                    bail!("deployment {endpoint}/{} failed: {}{traffic}", d.name, d.reason);
                }
            }
            if all_traffic {
                if d.state != DeploymentState::Healthy {
                    bail!(
                        "deployment {endpoint}/{} is {:?} ({}): the endpoint's traffic was left as it was",
                        d.name,
                        d.state,
                        d.reason
                    );
                }
                let update = UpdateEndpoint {
                    traffic: Some([(d.name.clone(), 100)].into_iter().collect()),
                    ..Default::default()
                };
                let _: Endpoint = api.patch(&format!("endpoints/{endpoint}"), &update).await?;
            }
            output::print_one(client.output, &d, fields(&d))
        }
        DeploymentCommand::Update { file, wait, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let req = read_file(&api, &client, &file).await?;
            let Some(endpoint) = req.endpoint_name.clone() else {
                bail!("{}: endpoint_name is required", file.display());
            };
            let p = path(&endpoint, &req.name, "")?;
            // Where the log ends before, so that --wait shows this update's lines only.
            let seen = if wait {
                log_since(&api, &endpoint, &req.name, None).await.ok().map(|(_, c)| c)
            } else {
                None
            };
            let mut d: Deployment = api.put(&p, &req).await?;
            if wait {
                d = follow(&api, &endpoint, d, true, seen).await?;
                if d.state == DeploymentState::Failed {
                    bail!("deployment {endpoint}/{} failed: {}", d.name, d.reason);
                }
                if !d.update_error.is_empty() {
                    bail!("deployment {endpoint}/{}: {}", d.name, d.update_error);
                }
            }
            output::print_one(client.output, &d, fields(&d))
        }
        DeploymentCommand::List { endpoint, ws, client } => {
            cairn_core::endpoints::validate_endpoint_name(&endpoint)?;
            let list: Vec<Deployment> =
                client.workspace_api(&ws)?.get(&format!("endpoints/{endpoint}/deployments")).await?;
            let rows = list
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.state.as_str().to_string(),
                        d.models.join(", "),
                        d.spec.instance_count.to_string(),
                        output::time(d.updated_at),
                    ]
                })
                .collect();
            output::print(client.output, &list, &["NAME", "STATE", "MODELS", "INSTANCES", "UPDATED"], rows)
        }
        DeploymentCommand::Show { target, ws, client } => {
            let (e, n) = split(&target)?;
            let d: Deployment = client.workspace_api(&ws)?.get(&path(e, n, "")?).await?;
            output::print_one(client.output, &d, fields(&d))
        }
        DeploymentCommand::Delete { target, ws, client } => {
            let (e, n) = split(&target)?;
            let api = client.workspace_api(&ws)?;
            api.delete(&path(e, n, "")?).await?;
            output::done(client.output, &format!("deployment {target} deleted"));
            Ok(())
        }
        DeploymentCommand::Logs { target, lines, follow: false, ws, client } => {
            let (e, n) = split(&target)?;
            print!("{}", log_text(&client.workspace_api(&ws)?, e, n, lines).await?);
            Ok(())
        }
        DeploymentCommand::Logs { target, lines, follow: true, ws, client } => {
            let (e, n) = split(&target)?;
            let api = client.workspace_api(&ws)?;
            let (text, mut cursor) = log_tail(&api, e, n, lines).await?;
            print!("{text}");
            loop {
                std::io::Write::flush(&mut std::io::stdout())?;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                match log_since(&api, e, n, Some(cursor)).await {
                    Ok((text, next)) => {
                        print!("{text}");
                        cursor = next;
                    }
                    Err(err)
                        if err.downcast_ref::<cairn_client::ClientError>().and_then(|c| c.status())
                            == Some(404) =>
                    {
                        eprintln!("deployment {target} is gone: {err}");
                        return Ok(());
                    }
                    Err(err) => return Err(err),
                }
            }
        }
    }
}
