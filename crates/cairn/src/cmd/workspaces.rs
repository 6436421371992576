//! `cairn workspace create|list|show|delete`.

use cairn_core::api::CreateWorkspace;
use clap::Subcommand;

use crate::config::{ClientArgs, WorkspaceArg};
use crate::output;

#[derive(Subcommand, Debug)]
pub enum WorkspaceCommand {
    /// Create a workspace (with its `default` datastore).
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List workspaces.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a workspace and its datastores.
    Show {
        /// Workspace name (default: -w / CAIRN_WORKSPACE / the saved one).
        name: Option<String>,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a workspace (and revoke its workspace-scoped tokens); refuses a non-empty one unless --force.
    Delete {
        name: String,
        /// Also delete everything in it (files of registered local/s3 datastores are kept).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: WorkspaceCommand) -> anyhow::Result<()> {
    match command {
        WorkspaceCommand::Create { name, description, client: args } => {
            let ws = args.client()?.create_workspace(&CreateWorkspace { name, description }).await?;
            output::print_one(
                args.output,
                &ws,
                vec![("created workspace", ws.name.clone()), ("id", ws.id.clone())],
            )
        }
        WorkspaceCommand::List { client: args } => {
            let list = args.client()?.list_workspaces().await?;
            let rows = list
                .iter()
                .map(|w| vec![w.name.clone(), w.description.clone(), output::time(w.created_at)])
                .collect();
            output::print(args.output, &list, &["NAME", "DESCRIPTION", "CREATED"], rows)
        }
        WorkspaceCommand::Show { name, ws, client: args } => {
            let name = match name {
                Some(n) => n,
                None => ws.resolve()?,
            };
            let client = args.client()?;
            let detail = client.workspace_detail(&name).await?;
            let workspace = &detail.workspace;
            let datastores = client.list_datastores(&name).await?;
            let value = serde_json::json!({
                "workspace": workspace,
                "datastores": datastores,
                "mlflow_tracking_uri": detail.mlflow_tracking_uri,
                "otlp_traces_endpoint": detail.otlp_traces_endpoint,
            });
            let names: Vec<String> =
                datastores.iter().map(|d| format!("{} ({})", d.name, d.kind.as_str())).collect();
            output::print_one(
                args.output,
                &value,
                vec![
                    ("name", workspace.name.clone()),
                    ("id", workspace.id.clone()),
                    ("description", workspace.description.clone()),
                    ("created", output::time(workspace.created_at)),
                    ("datastores", names.join(", ")),
                    ("mlflow tracking uri", detail.mlflow_tracking_uri.clone()),
                    ("otlp traces endpoint", detail.otlp_traces_endpoint.clone()),
                ],
            )
        }
        WorkspaceCommand::Delete { name, force, client: args } => {
            args.client()?.delete_workspace(&name, force).await?;
            output::done(args.output, &format!("workspace \"{name}\" deleted"));
            Ok(())
        }
    }
}
