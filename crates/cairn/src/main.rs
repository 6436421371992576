//! The `cairn` binary: `cairn server` runs the platform; every other subcommand is a client of
//! its REST API. This crate only parses arguments, resolves configuration and prints results;
//! the work happens in `cairn-server` and `cairn-client`.

mod cmd;
mod config;
mod output;
mod progress;
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ClientArgs;

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: a self-hosted machine-learning platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Cairn server (control plane, API) on this machine.
    Server(server::ServerArgs),
    /// The Azure ML walkthrough end to end (Python, through the azureml compatibility layer) on a
    /// throw-away server: upload, compute, environment, training run, model, endpoint, prediction.
    Demo(cmd::demo::DemoArgs),
    /// Save the server URL and token for later commands (~/.config/cairn/config.toml, mode 0600).
    Login(cmd::login::LoginArgs),
    /// Show who the current token belongs to.
    Whoami {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(cmd::tokens::TokenCommand),
    /// Create, list, show and delete workspaces.
    #[command(subcommand, alias = "ws")]
    Workspace(cmd::workspaces::WorkspaceCommand),
    /// Register datastores; upload, download and list their files.
    #[command(subcommand, alias = "ds")]
    Datastore(cmd::datastores::DatastoreCommand),
    /// Register, show and build environments (Python dependency sets).
    #[command(subcommand)]
    Env(cmd::jobs::EnvCommand),
    /// Create and inspect compute targets (local node slots).
    #[command(subcommand)]
    Compute(cmd::jobs::ComputeCommand),
    /// Submit, follow, cancel and download training jobs.
    #[command(subcommand)]
    Job(cmd::jobs::JobCommand),
    /// Show runs and their metrics.
    #[command(subcommand)]
    Run(cmd::jobs::RunCommand),
    /// Online endpoints: create, keys and tokens, invoke.
    #[command(subcommand)]
    Endpoint(cmd::endpoints::EndpointCommand),
    /// Online deployments: create (--all-traffic, --wait), update (--wait), list, show, delete, logs.
    #[command(subcommand)]
    Deployment(cmd::deployments::DeploymentCommand),
    /// Register, list, show, download, tag, alias and delete models.
    #[command(subcommand)]
    Model(cmd::models::ModelCommand),
    /// Server maintenance: garbage-collect unreferenced blobs (admin).
    #[command(subcommand)]
    Admin(cmd::admin::AdminCommand),
    /// Internal: the supervisor the server starts for each job (`cairn_jobs::shim`).
    #[command(name = "__job-shim", hide = true)]
    JobShim {
        #[arg(long)]
        run_dir: std::path::PathBuf,
        /// The job's command, run by `/bin/sh -c`.
        #[arg(last = true, required = true)]
        command: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The shim runs for a job's whole life: it gets its own small runtime (one thread), not the
    // server's.
    if let Command::JobShim { run_dir, command } = &cli.command {
        return ExitCode::from(cairn_jobs::shim::main(run_dir, command).clamp(0, 255) as u8);
    }
    if matches!(cli.command, Command::Server(_)) {
        server::tune_allocator();
    }
    if !matches!(cli.command, Command::Server(_) | Command::Demo(_)) {
        // A client command piped into `head` stops quietly when the reader goes, as Unix tools
        // do, instead of panicking on the failed write (Rust ignores SIGPIPE by default). The
        // server keeps ignoring it: a client that goes away is an error to handle there.
        // SAFETY: restoring a signal's default action, before any other thread exists.
        #[cfg(unix)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // Client commands log nothing unless asked (`CAIRN_LOG=cairn_client=debug`: transfer timings);
    // the server sets up its own logging.
    if !matches!(cli.command, Command::Server(_) | Command::Demo(_)) {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .init();
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The server's configuration file is read once, here: it sizes the runtime too.
    let mut server_file = None;
    if let Command::Server(args) = &cli.command {
        let threads =
            server::read_file_config(args).and_then(|file| Ok((server::runtime_threads(args, &file)?, file)));
        match threads {
            Ok((threads, file)) => {
                if let Some(n) = threads {
                    builder.worker_threads(n);
                }
                server_file = Some(file);
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args, server_file.take().unwrap_or_default()).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Login(args) => cmd::login::run(args).await,
            Command::Whoami { client } => cmd::login::whoami(client).await,
            Command::Token(c) => cmd::tokens::run(c).await,
            Command::Workspace(c) => cmd::workspaces::run(c).await,
            Command::Datastore(c) => cmd::datastores::run(c).await,
            Command::Env(c) => cmd::jobs::env(c).await,
            Command::Compute(c) => cmd::jobs::compute(c).await,
            Command::Job(c) => cmd::jobs::job(c).await,
            Command::Run(c) => cmd::jobs::run(c).await,
            Command::Endpoint(c) => cmd::endpoints::run(c).await,
            Command::Deployment(c) => cmd::deployments::run(c).await,
            Command::Model(c) => cmd::models::run(c).await,
            Command::Admin(c) => cmd::admin::run(c).await,
            Command::JobShim { .. } => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// A subcommand without a doc comment of its own shows the doc of the first flattened struct
    /// instead (`cairn job show --help` said "Options every client command takes").
    #[test]
    fn every_command_says_what_it_does() {
        fn walk(cmd: &clap::Command, path: &str, bad: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let path = format!("{path} {}", sub.get_name());
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                if about.is_empty() || about.starts_with("Options every client command") {
                    bad.push(format!("{path}: {about:?}"));
                }
                walk(sub, &path, bad);
            }
        }
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut bad = Vec::new();
        walk(&cli, "cairn", &mut bad);
        assert!(bad.is_empty(), "commands without a description of their own:\n{}", bad.join("\n"));
    }
}
