//! Command-line surface of `graunt`: the subcommands and their arguments.

mod agent;
mod cluster;
mod relay;
mod resize;
mod serve;
pub mod service;
mod whisper;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// graunt: a Graphite-compatible metrics store (carbon, whisper, graphite-web
/// and statsd in one binary).
#[derive(Debug, Parser)]
#[command(name = "graunt", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: carbon receivers, statsd, cache and whisper storage, carbonlink, HTTP.
    // A flag given twice takes its last value (scripts append overrides).
    #[command(args_override_self = true)]
    Serve(serve::ServeArgs),
    /// Run a local statsd aggregator that forwards to a node or relay (as bucky).
    #[command(args_override_self = true)]
    Agent(agent::AgentArgs),
    /// Run a relay: tenant listeners, fences, consistent-hash routing to nodes; or `relay lookup`.
    #[command(args_override_self = true)]
    Relay(relay::RelayArgs),
    /// Cluster administration: init, join, leave, status, schemas, tenants.
    Cluster(cluster::ClusterArgs),
    /// Exit 0 if a node or relay answers on its HTTP port (a container healthcheck).
    Health {
        /// The URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:8080/version")]
        url: String,
        /// CA bundle (PEM) an `https://` URL's certificate chains to.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Print an argon2 hash of a password (read from standard input) for a `[[user]]`'s password_hash.
    Passwd,
    /// Whisper file tools, argument- and output-compatible with the whisper-*.py scripts.
    #[command(subcommand)]
    Whisper(whisper::WhisperCommand),
}

/// The validated config `graunt serve ARGS…` would run with: the same
/// flags and `--config` file, for starting a node in-process (tests).
pub fn serve_config<I, T>(args: I) -> anyhow::Result<crate::serve::ServeConfig>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = ["graunt".into(), "serve".into()]
        .into_iter()
        .chain(args.into_iter().map(Into::into));
    match Cli::try_parse_from(argv)?.command {
        Command::Serve(a) => serve::config(a),
        _ => anyhow::bail!("not a serve command"),
    }
}

/// The validated config `graunt agent ARGS…` would run with.
pub fn agent_config<I, T>(args: I) -> anyhow::Result<graunt_relay::agent::AgentConfig>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = ["graunt".into(), "agent".into()]
        .into_iter()
        .chain(args.into_iter().map(Into::into));
    match Cli::try_parse_from(argv)?.command {
        Command::Agent(a) => agent::config(a),
        _ => anyhow::bail!("not an agent command"),
    }
}

/// Runs the chosen command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Cluster(command) => cluster::run(command),
        Command::Health { url, ca_file } => cluster::health(&url, ca_file.as_deref()),
        Command::Passwd => passwd(),
        Command::Relay(args) => relay::run(args),
        Command::Whisper(cmd) => whisper::run(cmd),
    }
}

/// `graunt passwd`: the password on standard input (its first line), its
/// argon2 PHC string on standard output.
fn passwd() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err()
        || line.trim_end_matches(['\r', '\n']).is_empty()
    {
        eprintln!("graunt passwd: give the password on standard input (echo 'it' | graunt passwd)");
        return ExitCode::FAILURE;
    }
    match crate::web::auth::hash_password(line.trim_end_matches(['\r', '\n'])) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("graunt passwd: {e}");
            ExitCode::FAILURE
        }
    }
}
