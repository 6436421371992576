//! `cairn token create|list|revoke`.

use cairn_core::api::{CreateToken, Role};
use clap::{Subcommand, ValueEnum};

use crate::config::ClientArgs;
use crate::output;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Reader,
    Writer,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Reader => Role::Reader,
            RoleArg::Writer => Role::Writer,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a named token; its secret is printed once.
    Create {
        name: String,
        #[arg(long, default_value = "writer")]
        role: RoleArg,
        /// Limit the token to one workspace.
        #[arg(long, short = 'w')]
        workspace: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, role, workspace, client: args } => {
            let created =
                args.client()?.create_token(&CreateToken { name, role: role.into(), workspace }).await?;
            output::print_one(
                args.output,
                &created,
                vec![
                    ("name", created.info.name.clone()),
                    ("role", created.info.role.as_str().to_string()),
                    ("workspace", created.info.workspace.clone().unwrap_or_else(|| "(all)".into())),
                    ("token", created.token.clone()),
                    ("note", "the token is shown only now: store it safely".into()),
                ],
            )
        }
        TokenCommand::List { client: args } => {
            let tokens = args.client()?.list_tokens().await?;
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.as_str().to_string(),
                        t.workspace.clone().unwrap_or_else(|| "(all)".into()),
                        output::time(t.created_at),
                        t.last_used_at.map(output::time).unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            output::print(args.output, &tokens, &["NAME", "ROLE", "WORKSPACE", "CREATED", "LAST USED"], rows)
        }
        TokenCommand::Revoke { name, client: args } => {
            args.client()?.revoke_token(&name).await?;
            output::done(args.output, &format!("token \"{name}\" revoked"));
            Ok(())
        }
    }
}
