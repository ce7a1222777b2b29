//! `graunt relay`: the relay service ([`graunt_relay::service`]) on
//! listeners bound here until SIGTERM or SIGINT, or `graunt relay lookup`,
//! which prints where names go as carbonate's carbon-lookup does.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use graunt_relay::service::{self, RelayConfig, RelayFile};

/// `graunt relay` flags.
#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    /// TOML config file (see deploy/relay.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// Print where names go: the name, then each destination as host:port:instance.
    Lookup(LookupArgs),
}

#[derive(Debug, Args)]
struct LookupArgs {
    /// Hashing method, instead of the config's: carbon_ch, fnv1a_ch, jump_fnv1a_ch.
    #[arg(long)]
    method: Option<String>,
    /// Copies per metric, instead of the config's.
    #[arg(long)]
    replication: Option<usize>,
    /// Destinations host:port[:instance],… instead of the config's.
    #[arg(long, value_delimiter = ',')]
    destinations: Vec<String>,
    /// Names; read from stdin when none are given.
    names: Vec<String>,
}

/// Runs `graunt relay`.
pub fn run(args: RelayArgs) -> ExitCode {
    if let Some(RelayCommand::Lookup(l)) = args.command {
        return match lookup(args.config.as_deref(), l) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("graunt relay lookup: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    super::service::run("relay", None, |shutdown| async move {
        let mut config = RelayConfig::from_file(RelayFile::read(args.config.as_deref())?)?;
        config.source = args.config.clone();
        let listeners = service::Listeners::bind(&config).await?;
        service::run(config, listeners, shutdown).await?;
        Ok(())
    })
}

fn lookup(config: Option<&std::path::Path>, args: LookupArgs) -> anyhow::Result<()> {
    let mut file = RelayFile::read(config)?;
    if let Some(m) = args.method {
        file.method = Some(m);
    }
    if let Some(r) = args.replication {
        file.replication = Some(r);
    }
    if !args.destinations.is_empty() {
        file.destinations = Some(args.destinations);
    }
    let router = file.router()?;
    let names: Vec<String> = if args.names.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect()
    } else {
        args.names
    };
    let mut out = String::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        out.push_str(name);
        // A tagged name goes where its normalised form goes, as the relay
        // sends it (a name that does not parse, where it would be hashed).
        let placed = graunt_storage::metric::normalize_name(name)
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| name.to_string());
        for i in router.route(&placed) {
            out.push(' ');
            out.push_str(&router.destinations()[i].display());
        }
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
