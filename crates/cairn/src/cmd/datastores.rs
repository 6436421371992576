//! `cairn datastore create|list|show|delete|upload|download|ls|rm`.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_client::transfer;
use cairn_core::api::{CreateDatastore, DatastoreKind};
use clap::{Args, Subcommand, ValueEnum};

use crate::config::{ClientArgs, WorkspaceArg};
use crate::output;
use crate::progress::Bar;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    Local,
    S3,
}

/// Which datastore a file command works on.
#[derive(Args, Debug)]
pub struct Target {
    #[command(flatten)]
    ws: WorkspaceArg,
    /// Datastore name.
    #[arg(long, short = 'd', default_value = "default")]
    datastore: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand, Debug)]
pub enum DatastoreCommand {
    /// Register a local directory or an S3 location as a datastore (admin).
    Create {
        name: String,
        #[arg(long)]
        kind: KindArg,
        /// Absolute directory on the server's machine (local) or s3://bucket/prefix (s3).
        #[arg(long)]
        location: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a workspace's datastores.
    List {
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one datastore.
    Show {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Unregister a datastore (its files are never deleted).
    Delete {
        name: String,
        #[command(flatten)]
        ws: WorkspaceArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Upload a file or a folder.
    Upload {
        /// Local file or folder.
        src: PathBuf,
        /// Folder in the datastore to upload into.
        #[arg(long, default_value = "")]
        target_path: String,
        /// Replace existing files whose content differs.
        #[arg(long)]
        overwrite: bool,
        /// No progress bar.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Requests at once (a file, or a batch of up to 100 files of at most 256 KiB).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Download a file or a folder (paths are kept under --dest).
    Download {
        /// File or folder in the datastore ("" for everything).
        path: String,
        /// Local folder to download into.
        #[arg(long, default_value = ".")]
        dest: PathBuf,
        /// Replace existing local files.
        #[arg(long)]
        overwrite: bool,
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[command(flatten)]
        target: Target,
    },
    /// List files recursively, with sizes.
    Ls {
        #[arg(default_value = "")]
        path: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a file, or a folder and everything under it.
    Rm {
        path: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(command: DatastoreCommand) -> anyhow::Result<()> {
    match command {
        DatastoreCommand::Create { name, kind, location, description, ws, client: args } => {
            let kind = match kind {
                KindArg::Local => DatastoreKind::Local,
                KindArg::S3 => DatastoreKind::S3,
            };
            let ds = args
                .client()?
                .create_datastore(&ws.resolve()?, &CreateDatastore { name, kind, location, description })
                .await?;
            output::print_one(
                args.output,
                &ds,
                vec![
                    ("registered datastore", ds.name.clone()),
                    ("kind", ds.kind.as_str().into()),
                    ("location", ds.location.clone()),
                ],
            )
        }
        DatastoreCommand::List { ws, client: args } => {
            let list = args.client()?.list_datastores(&ws.resolve()?).await?;
            let rows = list
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.kind.as_str().into(),
                        d.location.clone(),
                        output::time(d.created_at),
                    ]
                })
                .collect();
            output::print(args.output, &list, &["NAME", "KIND", "LOCATION", "CREATED"], rows)
        }
        DatastoreCommand::Show { name, ws, client: args } => {
            let d = args.client()?.datastore(&ws.resolve()?, &name).await?;
            output::print_one(
                args.output,
                &d,
                vec![
                    ("name", d.name.clone()),
                    ("workspace", d.workspace.clone()),
                    ("kind", d.kind.as_str().into()),
                    ("location", d.location.clone()),
                    ("description", d.description.clone()),
                    ("created", output::time(d.created_at)),
                ],
            )
        }
        DatastoreCommand::Delete { name, ws, client: args } => {
            args.client()?.delete_datastore(&ws.resolve()?, &name).await?;
            output::done(args.output, &format!("datastore \"{name}\" removed; its files were not touched"));
            Ok(())
        }
        DatastoreCommand::Upload { src, target_path, overwrite, quiet, concurrency, target } => {
            let client = target.client.client()?;
            let ws = target.ws.resolve()?;
            let bar = Arc::new(Bar::new(quiet));
            let at = transfer::Datastore { workspace: &ws, datastore: &target.datastore };
            let opts = transfer::TransferOpts { overwrite, concurrency };
            let report = transfer::upload(&client, at, &src, &target_path, opts, bar).await?;
            if report.files == 0 {
                eprintln!("warning: {} holds no files to upload; nothing was uploaded", src.display());
            }
            for entry in report.ignored.iter().take(20) {
                eprintln!("warning: left out {entry}");
            }
            if report.ignored.len() > 20 {
                eprintln!("warning: and {} more left out", report.ignored.len() - 20);
            }
            output::print_one(
                target.client.output,
                &report,
                vec![
                    (
                        "uploaded",
                        format!("{} file(s), {}", report.uploaded.len(), output::bytes(report.bytes_sent)),
                    ),
                    ("unchanged", format!("{} file(s) already there", report.skipped.len())),
                    (
                        "left out",
                        format!("{} local entries that are not regular files", report.ignored.len()),
                    ),
                    ("datastore", format!("{}/{}", ws, target.datastore)),
                ],
            )
        }
        DatastoreCommand::Download { path, dest, overwrite, quiet, concurrency, target } => {
            let client = target.client.client()?;
            let ws = target.ws.resolve()?;
            let bar = Arc::new(Bar::new(quiet));
            let at = transfer::Datastore { workspace: &ws, datastore: &target.datastore };
            let opts = transfer::TransferOpts { overwrite, concurrency };
            let report =
                transfer::download(&client, transfer::Remote::Datastore(at), &path, &dest, opts, bar).await?;
            output::print_one(
                target.client.output,
                &report,
                vec![
                    ("downloaded", format!("{} file(s), {}", report.files, output::bytes(report.bytes))),
                    ("into", dest.display().to_string()),
                ],
            )
        }
        DatastoreCommand::Ls { path, target } => {
            let files =
                target.client.client()?.list_files(&target.ws.resolve()?, &target.datastore, &path).await?;
            let rows = files
                .iter()
                .map(|f| vec![f.path.clone(), output::bytes(f.size), output::time(f.last_modified)])
                .collect();
            output::print(target.client.output, &files, &["PATH", "SIZE", "MODIFIED"], rows)
        }
        DatastoreCommand::Rm { path, target } => {
            target.client.client()?.delete_file(&target.ws.resolve()?, &target.datastore, &path).await?;
            output::done(target.client.output, &format!("deleted {path}"));
            Ok(())
        }
    }
}
