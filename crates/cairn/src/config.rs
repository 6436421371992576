//! Where a client command finds its server, token and workspace.
//!
//! URL: `--url`, `CAIRN_URL`, the saved config, the local server's `server.json`, then
//! `http://127.0.0.1:8080`. Token: `--token`, `CAIRN_TOKEN`, the saved config (for that URL),
//! then the local server's `admin-token` when the URL is that server's. Workspace: `-w`,
//! `CAIRN_WORKSPACE`, then the saved config.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cairn_client::{Client, WorkspaceApi};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::server::default_data_dir;

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

/// Options every client command takes.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Server URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "CAIRN_URL", global = true)]
    pub url: Option<String>,
    /// API token (prefer CAIRN_TOKEN or `cairn login`: flags show up in process lists).
    #[arg(long, env = "CAIRN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, default_value = "table")]
    pub output: OutputFormat,
}

/// The workspace option of commands that work inside one.
#[derive(Args, Clone, Debug)]
pub struct WorkspaceArg {
    /// Workspace (or CAIRN_WORKSPACE, or the one saved by `cairn login`).
    #[arg(long = "workspace", short = 'w', env = "CAIRN_WORKSPACE")]
    pub workspace: Option<String>,
}

/// `~/.config/cairn/config.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedConfig {
    pub url: Option<String>,
    pub token: Option<String>,
    pub workspace: Option<String>,
}

pub fn config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".config")
        });
    base.join("cairn").join("config.toml")
}

pub fn load_saved() -> anyhow::Result<SavedConfig> {
    let path = config_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).with_context(|| format!("invalid client configuration {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn save(config: &SavedConfig) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = config_path();
    let dir = path.parent().expect("config path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(toml::to_string(config)?.as_bytes())?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The local default server, as its data directory describes it.
struct LocalServer {
    url: Option<String>,
    token: Option<String>,
}

fn local_server() -> LocalServer {
    let dir = default_data_dir();
    let url = std::fs::read_to_string(dir.join(cairn_server::startup::SERVER_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("url").and_then(|u| u.as_str()).map(str::to_string));
    let token = std::fs::read_to_string(dir.join(cairn_server::auth::ADMIN_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    LocalServer { url, token }
}

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl ClientArgs {
    /// The token a client built from these arguments uses.
    pub fn resolved_token(&self) -> anyhow::Result<Option<String>> {
        Ok(self.resolve()?.1)
    }

    /// Resolves URL and token and builds a client.
    pub fn client(&self) -> anyhow::Result<Client> {
        let (url, token) = self.resolve()?;
        Ok(Client::new(&url, token)?)
    }

    /// The calls under the workspace `ws` names, by path (`cairn_client::WorkspaceApi`).
    pub fn workspace_api(&self, ws: &WorkspaceArg) -> anyhow::Result<WorkspaceApi> {
        Ok(self.client()?.workspace_api(&ws.resolve()?))
    }

    fn resolve(&self) -> anyhow::Result<(String, Option<String>)> {
        let saved = load_saved()?;
        let local = local_server();
        let url = self
            .url
            .clone()
            .or_else(|| saved.url.clone())
            .or_else(|| local.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let token = self.token.clone().or_else(|| {
            let saved_matches = saved.url.as_deref().is_none_or(|u| same_server(u, &url));
            saved.token.clone().filter(|_| saved_matches).or_else(|| {
                let local_url = local.url.as_deref().unwrap_or(DEFAULT_URL);
                local.token.clone().filter(|_| same_server(local_url, &url))
            })
        });
        Ok((url, token))
    }
}

impl WorkspaceArg {
    pub fn resolve(&self) -> anyhow::Result<String> {
        if let Some(w) = &self.workspace {
            return Ok(w.clone());
        }
        match load_saved()?.workspace {
            Some(w) => Ok(w),
            None => bail!("no workspace given: pass --workspace/-w NAME, set CAIRN_WORKSPACE, or `cairn login --workspace NAME`"),
        }
    }
}
