//! `cairn endpoint create|update|list|show|delete|get-keys|regen-key|get-token|invoke`: online
//! endpoints, from Azure ML v2's online-endpoint YAML.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cairn_core::endpoints::*;
use clap::{Subcommand, ValueEnum};
use reqwest::Method;

use crate::config::{ClientArgs, WorkspaceArg};
use crate::output;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyTypeArg {
    Primary,
    Secondary,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Create an endpoint from a YAML file (name, auth_mode, description, tags, traffic).
    Create {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change an endpoint: the keys of a YAML file (-f), or the flags given.
    Update {
        /// Endpoint name (or `name` in the file).
        name: Option<String>,
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        #[arg(long)]
        description: Option<String>,
        /// Traffic split, e.g. "blue=90 green=10" (an empty string removes all traffic).
        #[arg(long)]
        traffic: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the endpoints of a workspace.
    List {
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an endpoint: state, scoring URI, traffic.
    Show {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an endpoint and everything of it.
    Delete {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the primary and secondary keys (writer or admin).
    GetKeys {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace one key; the other keeps working.
    RegenKey {
        name: String,
        #[arg(long, value_enum)]
        key_type: KeyTypeArg,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Get a short-lived token for an aml_token endpoint (writer or admin).
    GetToken {
        name: String,
        /// Lifetime in seconds (default 3600, at most 86400).
        #[arg(long)]
        expires_in: Option<i64>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the tail of the logs of the endpoint's deployments (or of one: --deployment).
    Logs {
        name: String,
        /// Only this deployment's log.
        #[arg(long, short = 'd')]
        deployment: Option<String>,
        /// Only the last N lines of each log (1 to 100000; default: the last 256 KiB).
        #[arg(long, short = 'l')]
        lines: Option<u32>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a request file to the endpoint's scoring URI and print the answer.
    Invoke {
        name: String,
        #[arg(long)]
        request_file: PathBuf,
        /// Send to this deployment, bypassing the traffic split.
        #[arg(long)]
        deployment_name: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Reads an online-endpoint YAML file: `$schema` is dropped, unknown keys are refused by name.
/// Returns the request and the keys the file sets.
fn read_endpoint_file(file: &Path) -> anyhow::Result<(CreateEndpoint, Vec<String>)> {
    let yaml = crate::cmd::yaml::read(file)?;
    let Some(map) = yaml.as_mapping() else {
        bail!("{}: expected a mapping with at least `name`", file.display());
    };
    let keys = map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
    let req = crate::cmd::yaml::parse(file, yaml)?;
    Ok((req, keys))
}

/// "blue=90 green=10" (spaces or commas between pairs).
fn parse_traffic(text: &str) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    let mut traffic = std::collections::BTreeMap::new();
    for pair in text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()) {
        let (d, p) =
            pair.split_once('=').with_context(|| format!("traffic {pair:?}: expected DEPLOYMENT=PERCENT"))?;
        let p = p
            .parse::<i64>()
            .with_context(|| format!("traffic {pair:?}: the percentage must be an integer"))?;
        if traffic.insert(d.to_string(), p).is_some() {
            bail!("traffic names deployment {d:?} twice");
        }
    }
    Ok(traffic)
}

fn fields(e: &Endpoint) -> Vec<(&'static str, String)> {
    let map = |m: &std::collections::BTreeMap<String, i64>| {
        m.iter().map(|(d, p)| format!("{d}={p}%")).collect::<Vec<_>>().join(", ")
    };
    vec![
        ("endpoint", e.name.clone()),
        ("workspace", e.workspace.clone()),
        ("state", e.provisioning_state.as_str().to_string()),
        ("auth_mode", e.auth_mode.as_str().to_string()),
        ("scoring_uri", e.scoring_uri.clone()),
        ("swagger_uri", e.swagger_uri.clone()),
        ("traffic", map(&e.traffic)),
        ("mirror_traffic", map(&e.mirror_traffic)),
        ("description", e.description.clone()),
        ("tags", e.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
        ("created", output::time(e.created_at)),
        ("updated", output::time(e.updated_at)),
    ]
}

fn path(name: &str, rest: &str) -> anyhow::Result<String> {
    validate_endpoint_name(name)?;
    Ok(format!("endpoints/{name}{rest}"))
}

pub async fn run(command: EndpointCommand) -> anyhow::Result<()> {
    match command {
        EndpointCommand::Create { file, ws, client } => {
            let (req, _) = read_endpoint_file(&file)?;
            let e: Endpoint = client.workspace_api(&ws)?.post("endpoints", &req).await?;
            output::print_one(client.output, &e, fields(&e))
        }
        EndpointCommand::Update { name, file, description, traffic, ws, client } => {
            let mut update = UpdateEndpoint::default();
            let mut from_file = None;
            if let Some(file) = &file {
                let (req, keys) = read_endpoint_file(file)?;
                let has = |k: &str| keys.iter().any(|x| x == k);
                update = UpdateEndpoint {
                    description: has("description").then(|| req.description.clone()),
                    tags: has("tags").then(|| req.tags.clone()),
                    auth_mode: has("auth_mode").then(|| req.auth_mode.clone()),
                    traffic: has("traffic").then(|| req.traffic.clone()),
                    mirror_traffic: has("mirror_traffic").then(|| req.mirror_traffic.clone()),
                };
                from_file = Some(req.name);
            }
            let name = match (name, from_file) {
                (Some(n), Some(f)) if n != f => bail!("the file names endpoint {f:?}, not {n:?}"),
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => bail!("give the endpoint's name, or a file with -f"),
            };
            if let Some(d) = description {
                update.description = Some(d);
            }
            if let Some(t) = traffic {
                update.traffic = Some(parse_traffic(&t)?);
            }
            let api = client.workspace_api(&ws)?;
            let e: Endpoint = api.patch(&path(&name, "")?, &update).await?;
            output::print_one(client.output, &e, fields(&e))
        }
        EndpointCommand::List { ws, client } => {
            let list: Vec<Endpoint> = client.workspace_api(&ws)?.get("endpoints").await?;
            let rows = list
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.provisioning_state.as_str().to_string(),
                        e.auth_mode.as_str().to_string(),
                        e.scoring_uri.clone(),
                        output::time(e.updated_at),
                    ]
                })
                .collect();
            output::print(client.output, &list, &["NAME", "STATE", "AUTH", "SCORING URI", "UPDATED"], rows)
        }
        EndpointCommand::Show { name, ws, client } => {
            let e: Endpoint = client.workspace_api(&ws)?.get(&path(&name, "")?).await?;
            output::print_one(client.output, &e, fields(&e))
        }
        EndpointCommand::Delete { name, ws, client } => {
            let api = client.workspace_api(&ws)?;
            api.delete(&path(&name, "")?).await?;
            output::done(client.output, &format!("endpoint {name} deleted"));
            Ok(())
        }
        EndpointCommand::GetKeys { name, ws, client } => {
            let k: EndpointKeys = client.workspace_api(&ws)?.get(&path(&name, "/keys")?).await?;
            output::print_one(
                client.output,
                &k,
                vec![("primary_key", k.primary_key.clone()), ("secondary_key", k.secondary_key.clone())],
            )
        }
        EndpointCommand::RegenKey { name, key_type, ws, client } => {
            let key_type = match key_type {
                KeyTypeArg::Primary => KeyType::Primary,
                KeyTypeArg::Secondary => KeyType::Secondary,
            };
            let api = client.workspace_api(&ws)?;
            let rb = api.request(Method::POST, &path(&name, "/regenerate-keys")?);
            api.send(rb.json(&RegenerateKey { key_type })).await?;
            let which = if key_type == KeyType::Primary { "primary" } else { "secondary" };
            output::done(client.output, &format!("regenerated the {which} key of endpoint {name}"));
            Ok(())
        }
        EndpointCommand::GetToken { name, expires_in, ws, client } => {
            let req = TokenRequest { expires_in_seconds: expires_in };
            let t: EndpointToken = client.workspace_api(&ws)?.post(&path(&name, "/token")?, &req).await?;
            output::print_one(
                client.output,
                &t,
                vec![
                    ("access_token", t.access_token.clone()),
                    ("expires", output::time(t.expiry_time_utc * 1000)),
                    ("refresh_after", output::time(t.refresh_after_time_utc * 1000)),
                ],
            )
        }
        EndpointCommand::Logs { name, deployment, lines, ws, client } => {
            let api = client.workspace_api(&ws)?;
            let names = match deployment {
                Some(d) => vec![d],
                None => {
                    let list: Vec<cairn_core::deployments::Deployment> =
                        api.get(&path(&name, "/deployments")?).await?;
                    if list.is_empty() {
                        bail!("endpoint {name:?} has no deployment: no logs yet");
                    }
                    list.into_iter().map(|d| d.name).collect()
                }
            };
            // Several deployments: each log under a heading, as `tail` prints several files.
            let headed = names.len() > 1;
            for (i, d) in names.iter().enumerate() {
                let text = super::deployments::log_text(&api, &name, d, lines).await?;
                if headed {
                    println!("{}==> deployment {d} <==", if i > 0 { "\n" } else { "" });
                }
                print!("{text}");
            }
            Ok(())
        }
        EndpointCommand::Invoke { name, request_file, deployment_name, ws, client } => {
            let body = std::fs::read(&request_file)
                .with_context(|| format!("cannot read {}", request_file.display()))?;
            let api = client.workspace_api(&ws)?;
            let e: Endpoint = api.get(&path(&name, "")?).await?;
            let credential = match e.auth_mode {
                AuthMode::Key => api.get::<EndpointKeys>(&path(&name, "/keys")?).await?.primary_key,
                AuthMode::AmlToken => {
                    api.post::<EndpointToken>(&path(&name, "/token")?, &TokenRequest::default())
                        .await?
                        .access_token
                }
            };
            // The client's own server URL, not the scoring URI's host: that is the address the
            // server listens on, which may not be how this client reaches it.
            let base = api.client().base_url().as_str().trim_end_matches('/');
            let url = format!("{base}/endpoints/{name}/score");
            let mut rb = reqwest::Client::new()
                .post(&url)
                .bearer_auth(credential)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            if let Some(d) = deployment_name {
                rb = rb.header("azureml-model-deployment", d);
            }
            let resp = rb.send().await.with_context(|| format!("cannot reach {url}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or(text);
                bail!("{message} (HTTP {})", status.as_u16());
            }
            println!("{text}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_flags_are_parsed_and_checked() {
        let t = parse_traffic("blue=90 green=10").unwrap();
        assert_eq!(t["blue"], 90);
        assert_eq!(t["green"], 10);
        assert_eq!(parse_traffic("blue=90,green=10").unwrap(), t);
        assert!(parse_traffic("").unwrap().is_empty());
        assert!(parse_traffic("blue").is_err());
        assert!(parse_traffic("blue=ninety").is_err());
        let twice = parse_traffic("blue=90 blue=10").unwrap_err().to_string();
        assert!(twice.contains("\"blue\" twice"), "{twice}");
    }
}
