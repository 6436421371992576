//! `cairn login` and `cairn whoami`.

use clap::Args;

use crate::config::{self, ClientArgs, SavedConfig};
use crate::output;

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Workspace to use by default in later commands.
    #[arg(long, short = 'w')]
    workspace: Option<String>,
}

pub async fn run(args: LoginArgs) -> anyhow::Result<()> {
    let client = args.client.client()?;
    let me = client.whoami().await?;
    if let Some(ws) = &args.workspace {
        client.workspace(ws).await?;
    }
    let token = args.client.token.clone().or_else(|| config::load_saved().ok().and_then(|c| c.token));
    let path = config::save(&SavedConfig {
        url: Some(client.base_url().as_str().trim_end_matches('/').to_string()),
        token,
        workspace: args.workspace,
    })?;
    output::done(
        args.client.output,
        &format!(
            "logged in to {} as token \"{}\" ({}); saved to {}",
            client.base_url(),
            me.token_name,
            me.role.as_str(),
            path.display()
        ),
    );
    Ok(())
}

pub async fn whoami(args: ClientArgs) -> anyhow::Result<()> {
    let me = args.client()?.whoami().await?;
    output::print_one(
        args.output,
        &me,
        vec![
            ("token", me.token_name.clone()),
            ("role", me.role.as_str().to_string()),
            ("workspace", me.workspace.clone().unwrap_or_else(|| "(all)".into())),
        ],
    )
}
