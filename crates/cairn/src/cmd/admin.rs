//! `cairn admin gc`: server maintenance for admins.

use cairn_core::api::GcRequest;
use clap::Subcommand;

use crate::config::ClientArgs;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Delete content-addressed blobs (code snapshot and model files) that no snapshot or model
    /// version references and that are older than the grace period.
    Gc {
        /// Only this workspace (all workspaces otherwise, which needs an admin token valid in all).
        #[arg(long, short = 'w')]
        workspace: Option<String>,
        /// Report what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep unreferenced blobs younger than this many seconds: uploads whose manifest is not
        /// posted yet.
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Gc { workspace, dry_run, grace_secs, client: args } => {
            let req = GcRequest { workspace, dry_run, grace_seconds: Some(grace_secs) };
            let report = args.client()?.gc(&req).await?;
            let verb = if report.dry_run { "would delete" } else { "deleted" };
            let rows = report
                .workspaces
                .iter()
                .map(|w| {
                    vec![
                        w.workspace.clone(),
                        format!("{} ({})", w.referenced, output::bytes(w.referenced_bytes)),
                        format!("{} ({})", w.young, output::bytes(w.young_bytes)),
                        format!("{} ({})", w.deleted, output::bytes(w.deleted_bytes)),
                    ]
                })
                .collect();
            let deleted_header = if report.dry_run { "WOULD DELETE" } else { "DELETED" };
            output::print(
                args.output,
                &report,
                &["WORKSPACE", "REFERENCED", "YOUNGER THAN GRACE", deleted_header],
                rows,
            )?;
            if matches!(args.output, crate::config::OutputFormat::Table) {
                println!("{verb} {} blobs, {}", report.deleted, output::bytes(report.deleted_bytes));
                println!(
                    "{verb} {} expired multipart uploads, {}",
                    report.expired_uploads,
                    output::bytes(report.expired_upload_bytes)
                );
            }
            Ok(())
        }
    }
}
