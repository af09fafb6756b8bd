//! The `discovery` binary: clap parsing, logging, then the chosen subcommand. The only place
//! that uses `anyhow`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use discovery::cli;
use discovery::{LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

/// An eventually consistent service discovery registry.
#[derive(Parser)]
#[command(name = "discovery", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a registry node.
    Serve(Box<ServeArgs>),
    /// Check that a node answers (exit 0) — the container health check.
    Health(cli::health::HealthArgs),
    /// Keep a host registered until SIGTERM, then drain and deregister it (an agent).
    Heartbeat(cli::heartbeat::HeartbeatArgs),
    /// Show a service's hosts; `--watch` follows them.
    Hosts(cli::hosts::HostsArgs),
    /// Show the services a registry node holds.
    Services(cli::services::ServicesArgs),
    /// Show a registry node's view of its peers.
    Peers(cli::peers::PeersArgs),
    /// Keep HAProxy backends equal to the registry's host lists (runtime API, no reloads).
    HaproxySync(cli::haproxy_sync::HaproxySyncArgs),
}

/// Logs go to stderr, filtered by `DISCOVERY_LOG` (or `RUST_LOG`), else at `default_level`.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("DISCOVERY_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            init_logging(args.log_format, "info");
            runtime.block_on(cli::serve::run(*args))?;
        }
        Command::Health(args) => runtime.block_on(cli::health::run(args))?,
        Command::Heartbeat(args) => {
            init_logging(args.log_format, "info");
            runtime.block_on(cli::heartbeat::run(args))?;
        }
        // The read commands print their answer on stdout; only trouble goes to stderr.
        Command::Hosts(args) => {
            init_logging(LogFormat::Text, "warn");
            runtime.block_on(cli::hosts::run(args))?;
        }
        Command::Services(args) => {
            init_logging(LogFormat::Text, "warn");
            runtime.block_on(cli::services::run(args))?;
        }
        Command::Peers(args) => {
            init_logging(LogFormat::Text, "warn");
            runtime.block_on(cli::peers::run(args))?;
        }
        Command::HaproxySync(args) => {
            init_logging(args.log_format, "info");
            runtime.block_on(cli::haproxy_sync::run(args))?;
        }
    }
    Ok(())
}
