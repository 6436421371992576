//! `cairn model register|list|show|download|delete|tag|alias`: the model registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use cairn_core::models::{Model, ModelFile, ModelVersion, RegisterModelVersion, UpdateModelVersion};
use clap::Subcommand;
use sha2::{Digest, Sha256};

use cairn_client::transfer;

use crate::config::{ClientArgs, WorkspaceArg};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Register a new version of model NAME from a run's artifact path or from local files.
    Register {
        #[arg(long)]
        name: String,
        /// The run whose artifact `--path` names (without it, `--path` is a local file or folder).
        #[arg(long)]
        run: Option<String>,
        /// An artifact path of `--run`, or a local file or folder.
        #[arg(long)]
        path: String,
        /// KEY=VALUE (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// FRAMEWORK or FRAMEWORK==VERSION (detected from an MLmodel file when absent).
        #[arg(long)]
        framework: Option<String>,
        /// KEY=VALUE (repeatable), fixed at registration.
        #[arg(long = "property")]
        properties: Vec<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List models, most recently updated first.
    List {
        /// Only names containing this.
        #[arg(long)]
        name: Option<String>,
        /// KEY=VALUE on the model or one of its versions.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        framework: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show NAME (the model and its versions), NAME:VERSION or NAME@ALIAS.
    Show {
        model: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Download NAME:VERSION (or NAME@ALIAS) into a folder, verifying every file's SHA-256.
    Download {
        model: String,
        /// Target folder (default: NAME-VERSION).
        #[arg(long, short = 'd', visible_alias = "dest")]
        dir: Option<PathBuf>,
        /// Replace local files that are already there (otherwise nothing is downloaded).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete NAME (all versions) or NAME:VERSION; refused while a deployment uses it.
    Delete {
        model: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set tags (KEY=VALUE …) on NAME:VERSION, or remove them with --remove KEY.
    Tag {
        model: String,
        tags: Vec<String>,
        #[arg(long = "remove")]
        remove: Vec<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Point ALIAS of NAME at VERSION (moving it), or remove it with --delete.
    Alias {
        name: String,
        alias: String,
        version: Option<i64>,
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `KEY=VALUE` pairs into a map.
fn pairs(what: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| match i.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{what} {i:?} must be KEY=VALUE"),
        })
        .collect()
}

/// `NAME`, `NAME:VERSION` or `NAME@ALIAS` into the name and the version reference of the API.
fn split_ref(model: &str) -> (String, Option<String>) {
    if let Some((n, v)) = model.split_once(':') {
        (n.to_string(), Some(v.to_string()))
    } else if let Some((n, a)) = model.split_once('@') {
        (n.to_string(), Some(format!("@{a}")))
    } else {
        (model.to_string(), None)
    }
}

fn needs_version(model: &str) -> anyhow::Result<(String, String)> {
    match split_ref(model) {
        (n, Some(v)) => Ok((n, v)),
        (n, None) => bail!("name a version: {n}:VERSION or {n}@ALIAS"),
    }
}

fn tags_text(tags: &BTreeMap<String, String>) -> String {
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

fn framework_text(v: &ModelVersion) -> String {
    match (&v.framework, &v.framework_version) {
        (Some(f), Some(ver)) => format!("{f}=={ver}"),
        (Some(f), None) => f.clone(),
        _ => String::new(),
    }
}

fn print_version(format: crate::config::OutputFormat, v: &ModelVersion) -> anyhow::Result<()> {
    output::print_one(
        format,
        v,
        vec![
            ("id", v.id.clone()),
            ("version", v.version.to_string()),
            ("framework", framework_text(v)),
            ("description", v.description.clone()),
            ("tags", tags_text(&v.tags)),
            ("properties", tags_text(&v.properties)),
            ("aliases", v.aliases.join(", ")),
            ("source", v.source.clone()),
            ("run", v.run_id.clone().unwrap_or_default()),
            ("size", output::bytes(v.size as u64)),
            ("created by", v.created_by.clone()),
            ("created", output::time(v.created_at)),
        ],
    )
}

/// Hashes a local file or folder and uploads the blobs the server lacks; returns the manifest a
/// version registered from them records.
pub(crate) async fn upload_local(
    client: &cairn_client::Client,
    ws: &str,
    local: &std::path::Path,
) -> anyhow::Result<Vec<ModelFile>> {
    let files = cairn_client::blobs::hash_files(cairn_client::blobs::walk(local)?)?;
    if files.is_empty() {
        bail!("{} holds no files", local.display());
    }
    cairn_client::blobs::upload_missing(client, ws, &files).await?;
    Ok(files
        .iter()
        .map(|f| ModelFile {
            path: f.file.path.clone(),
            sha256: f.file.sha256.clone(),
            size: f.file.size as i64,
        })
        .collect())
}

pub async fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Register {
            name,
            run,
            path,
            tags,
            description,
            framework,
            properties,
            ws,
            client: args,
        } => {
            let ws = ws.resolve()?;
            let client = args.client()?;
            let (framework, framework_version) = match framework {
                Some(f) => match f.split_once("==") {
                    Some((f, v)) => (Some(f.to_string()), Some(v.to_string())),
                    None => (Some(f), None),
                },
                None => (None, None),
            };
            let mut req = RegisterModelVersion {
                description,
                tags: pairs("tag", &tags)?,
                properties: pairs("property", &properties)?,
                framework,
                framework_version,
                ..Default::default()
            };
            match run {
                Some(run) => {
                    req.run_id = Some(run);
                    req.path = Some(path);
                }
                None => req.files = Some(upload_local(&client, &ws, &PathBuf::from(&path)).await?),
            }
            let v = client.register_model_version(&ws, &name, &req).await?;
            print_version(args.output, &v)
        }
        ModelCommand::List { name, tag, framework, ws, client: args } => {
            let ws = ws.resolve()?;
            let mut filter = Vec::new();
            for (k, v) in [("name", name), ("tag", tag), ("framework", framework)] {
                if let Some(v) = v {
                    filter.push((k, v));
                }
            }
            let models = args.client()?.list_models(&ws, &filter).await?;
            let rows = models
                .iter()
                .map(|m: &Model| {
                    vec![
                        m.name.clone(),
                        m.latest_version.map(|v| v.to_string()).unwrap_or_default(),
                        m.aliases.iter().map(|(a, v)| format!("{a}→{v}")).collect::<Vec<_>>().join(", "),
                        m.description.clone(),
                        output::time(m.updated_at),
                    ]
                })
                .collect();
            output::print(
                args.output,
                &models,
                &["NAME", "LATEST", "ALIASES", "DESCRIPTION", "UPDATED"],
                rows,
            )
        }
        ModelCommand::Show { model, ws, client: args } => {
            let ws = ws.resolve()?;
            let client = args.client()?;
            match split_ref(&model) {
                (name, Some(v)) => print_version(args.output, &client.model_version(&ws, &name, &v).await?),
                (name, None) => {
                    let m = client.model(&ws, &name).await?;
                    let versions = client.model_versions(&ws, &name).await?;
                    let value = serde_json::json!({ "model": m, "versions": versions });
                    if args.output == crate::config::OutputFormat::Json {
                        println!("{}", serde_json::to_string_pretty(&value)?);
                        return Ok(());
                    }
                    let rows = versions
                        .iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                framework_text(v),
                                v.aliases.join(", "),
                                tags_text(&v.tags),
                                output::bytes(v.size as u64),
                                output::time(v.created_at),
                            ]
                        })
                        .collect();
                    println!("model {}: {}", m.name, m.description);
                    output::print(
                        args.output,
                        &versions,
                        &["VERSION", "FRAMEWORK", "ALIASES", "TAGS", "SIZE", "CREATED"],
                        rows,
                    )
                }
            }
        }
        ModelCommand::Download { model, dir, overwrite, ws, client: args } => {
            let ws = ws.resolve()?;
            let client = args.client()?;
            let (name, v) = needs_version(&model)?;
            let version = client.model_version(&ws, &name, &v).await?;
            let v = version.version.to_string();
            let files = client.model_files(&ws, &name, &v).await?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(format!("{name}-{v}")));
            let targets = transfer::local_targets(&dir, files.iter().map(|f| f.path.as_str()), overwrite)?;
            let mut total = 0u64;
            for (f, target) in files.iter().zip(&targets) {
                let stream = client.get_model_file(&ws, &name, &v, &f.path).await?;
                let hasher = std::cell::RefCell::new(Sha256::new());
                total += transfer::save_stream(
                    target,
                    stream,
                    |chunk| hasher.borrow_mut().update(chunk),
                    |_| {
                        let got = hex::encode(hasher.take().finalize());
                        if got == f.sha256 {
                            Ok(())
                        } else {
                            Err(cairn_client::ClientError::Local(format!(
                                "{} arrived with SHA-256 {got}, expected {}: download again",
                                f.path, f.sha256
                            )))
                        }
                    },
                )
                .await?;
            }
            output::done(
                args.output,
                &format!(
                    "downloaded {} ({} files, {}) to {}",
                    version.id,
                    files.len(),
                    output::bytes(total),
                    dir.display()
                ),
            );
            Ok(())
        }
        ModelCommand::Delete { model, ws, client: args } => {
            let ws = ws.resolve()?;
            let client = args.client()?;
            match split_ref(&model) {
                (name, Some(v)) => client.delete_model_version(&ws, &name, &v).await?,
                (name, None) => client.delete_model(&ws, &name).await?,
            }
            output::done(args.output, &format!("model {model} deleted"));
            Ok(())
        }
        ModelCommand::Tag { model, tags, remove, ws, client: args } => {
            let ws = ws.resolve()?;
            let (name, v) = needs_version(&model)?;
            if tags.is_empty() && remove.is_empty() {
                bail!("give KEY=VALUE tags to set or --remove KEY");
            }
            let req =
                UpdateModelVersion { description: None, set_tags: pairs("tag", &tags)?, remove_tags: remove };
            let updated = args.client()?.update_model_version(&ws, &name, &v, &req).await?;
            print_version(args.output, &updated)
        }
        ModelCommand::Alias { name, alias, version, delete, ws, client: args } => {
            let ws = ws.resolve()?;
            let client = args.client()?;
            match (version, delete) {
                (Some(v), false) => {
                    let updated = client.set_model_alias(&ws, &name, &alias, v).await?;
                    output::done(args.output, &format!("{name}@{alias} → version {}", updated.version));
                }
                (None, true) => {
                    client.delete_model_alias(&ws, &name, &alias).await?;
                    output::done(args.output, &format!("alias {name}@{alias} deleted"));
                }
                _ => bail!("give a VERSION to point {name}@{alias} at, or --delete"),
            }
            Ok(())
        }
    }
}
