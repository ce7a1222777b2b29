//! `graunt agent`: flags over the `--config` file, then the agent
//! ([`graunt_relay::agent`]) on listeners bound here until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use graunt_relay::agent::{self, collect, AgentConfig, AgentFile, Protocol};

/// `graunt agent` flags; each overrides the same setting of `--config`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML config file (see deploy/agent.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// statsd address, UDP [127.0.0.1:8125].
    #[arg(long)]
    statsd_addr: Option<String>,
    /// Where aggregated metrics go: host:port of a node or relay.
    #[arg(long)]
    destination: Option<String>,
    /// `plaintext` (port 2003) or `pickle` (port 2004) [plaintext].
    #[arg(long)]
    protocol: Option<String>,
    /// Prepended to every metric name, as written (e.g. `cust.acme`).
    #[arg(long)]
    name_prefix: Option<String>,
    /// More prefix parts, after `--name-prefix`; dots inside a part become `_`.
    #[arg(long = "name-prefix-part")]
    name_prefix_parts: Vec<String>,
    /// Seconds between statsd flushes [10].
    #[arg(long, value_parser = graunt_relay::duration::parse_seconds)]
    flush_interval: Option<f64>,
    /// Collect host metrics as diamond does, with diamond's defaults where
    /// the file has no [collectors] table.
    #[arg(long)]
    collect: bool,
    /// Print the lines one round of the collectors would send (two reads
    /// an interval apart, for rates) and exit.
    #[arg(long)]
    collect_once: bool,
    /// Every collector's interval (diamond's default: 300 s).
    #[arg(long, value_parser = graunt_relay::duration::parse_seconds)]
    collect_interval: Option<f64>,
    /// The host's /proc [/proc] (a container sees the host's elsewhere).
    #[arg(long)]
    proc_root: Option<PathBuf>,
    /// The host's /sys [/sys].
    #[arg(long)]
    sys_root: Option<PathBuf>,
    /// The host's / [/]: mount points and /dev/disk/by-label under it.
    #[arg(long)]
    host_root: Option<PathBuf>,
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: AgentArgs) -> ExitCode {
    if args.collect_once {
        return match collect_once(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("graunt agent: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    super::service::run("agent", Some(2), |shutdown| async move {
        let config = config(args)?;
        let listeners = agent::Listeners::bind(&config).await?;
        agent::run(config, listeners, shutdown).await;
        Ok(())
    })
}

/// The config file with the flags laid over it, validated.
pub(super) fn config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig::from_file(file(args)?)?)
}

/// The config file with the flags laid over it.
fn file(args: AgentArgs) -> Result<AgentFile, graunt_relay::Error> {
    let mut file = AgentFile::read(args.config.as_deref())?;
    if args.statsd_addr.is_some() {
        file.statsd_addr = args.statsd_addr;
    }
    if args.destination.is_some() {
        file.destination = args.destination;
    }
    if let Some(p) = args.protocol.as_deref() {
        file.protocol = Some(Protocol::parse(p)?);
    }
    if args.name_prefix.is_some() {
        file.name_prefix = args.name_prefix;
    }
    if !args.name_prefix_parts.is_empty() {
        file.name_prefix_parts = Some(args.name_prefix_parts);
    }
    if args.flush_interval.is_some() {
        file.flush_interval = args.flush_interval;
    }
    if args.collect || args.collect_once || args.collect_interval.is_some() {
        let table = file.collectors.get_or_insert_with(Default::default);
        if let Some(seconds) = args.collect_interval {
            table.insert("interval".into(), toml::Value::Float(seconds));
            // The flag wins over every collector's own interval too.
            for (_, value) in table.iter_mut() {
                if let toml::Value::Table(own) = value {
                    own.remove("interval");
                }
            }
        }
    }
    if args.proc_root.is_some() {
        file.proc_root = args.proc_root;
    }
    if args.sys_root.is_some() {
        file.sys_root = args.sys_root;
    }
    if args.host_root.is_some() {
        file.host_root = args.host_root;
    }
    Ok(file)
}

/// `--collect-once`: every enabled collector reads the host, waits its
/// interval and reads again (each on its own thread, so the longest
/// interval is the whole wait); the second round's lines go to stdout,
/// collector by collector, as they would be sent.
fn collect_once(args: AgentArgs) -> anyhow::Result<()> {
    let file = file(args)?;
    let host = file.host();
    // --collect-once makes the table if the file had none.
    let table = file.collectors.clone().unwrap_or_default();
    let collectors = collect::build(&table, file.prefix().as_deref())?;
    let longest = collectors
        .iter()
        .map(|c| c.interval())
        .max()
        .unwrap_or_default();
    let count = collectors.len();
    let (first_taken, firsts) = std::sync::mpsc::channel();
    let rounds: Vec<_> = collectors
        .into_iter()
        .map(|mut c| {
            let host = host.clone();
            let first_taken = first_taken.clone();
            std::thread::spawn(move || {
                let first = c.round(&host, collect::now());
                let _ = first_taken.send(());
                std::thread::sleep(c.interval());
                let second = c.round(&host, collect::now());
                (c.name(), first.and(second))
            })
        })
        .collect();
    // Every collector's first round, or the threads that died first.
    drop(first_taken);
    for _ in 0..count {
        if firsts.recv().is_err() {
            break;
        }
    }
    // A test (or an operator) can make its change to the host now.
    eprintln!(
        "graunt agent: first reading of {count} collectors taken; second in {longest:?} (--collect-interval sets it)"
    );
    let mut out = String::new();
    let mut failed = Vec::new();
    for handle in rounds {
        let (name, lines) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a collector panicked"))?;
        match lines {
            Ok(lines) => {
                for l in lines {
                    out.push_str(&l.to_plaintext());
                    out.push('\n');
                }
            }
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    print!("{out}");
    for f in &failed {
        eprintln!("graunt agent: {f}");
    }
    Ok(())
}
