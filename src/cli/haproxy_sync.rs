//! `discovery haproxy-sync`: keeps HAProxy backends equal to the registry's host lists
//! through HAProxy's runtime API. Thin: flags in, [`discovery_client::HaproxySync`] runs
//! until SIGTERM or SIGINT. The behaviour and the HAProxy configuration it needs are in
//! docs/haproxy.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use discovery_client::{BackendBinding, HaproxySync, HaproxySyncConfig, HealthCheck};

use super::connect::{CommandError, ReadArgs, WatchArgs};
use crate::config::LogFormat;

/// The flags of `discovery haproxy-sync`.
#[derive(Debug, Clone, Args)]
pub struct HaproxySyncArgs {
    /// `--registry`, the read `--token` and `--timeout`, as for `hosts`.
    #[command(flatten)]
    pub(crate) read: ReadArgs,
    /// `--poll-wait`, as for `hosts --watch`.
    #[command(flatten)]
    pub(crate) polling: WatchArgs,
    /// HAProxy's admin socket (`stats socket PATH level admin`).
    #[arg(long)]
    pub(crate) socket: PathBuf,
    /// A service and the HAProxy backend that holds its hosts; repeatable.
    #[arg(long = "backend", value_name = "SERVICE=BACKEND", required = true)]
    pub(crate) backends: Vec<BackendBinding>,
    /// How long a server whose host vanished from the registry keeps serving while
    /// HAProxy's check finds it up.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) max_stale: Duration,
    /// Time between full resyncs (registry changes are applied at once).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    /// Health check interval of added servers (`inter`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) check_inter: Duration,
    /// Failed checks before an added server is down (`fall`).
    #[arg(long, default_value_t = 3)]
    pub(crate) fall: u32,
    /// Passed checks before an added server is up (`rise`).
    #[arg(long, default_value_t = 2)]
    pub(crate) rise: u32,
    /// How long a stale server is drained before it is removed with sessions open.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) drain_timeout: Duration,
    /// A folder for the last good host lists, used when the sync starts while no
    /// registry answers.
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs the sync until SIGTERM or SIGINT. HAProxy keeps its servers when it stops.
pub async fn run(args: HaproxySyncArgs) -> Result<(), CommandError> {
    let registry = args.read.client()?;
    let mut config = HaproxySyncConfig::new(args.socket, args.backends);
    config.max_stale = args.max_stale;
    config.interval = args.interval;
    config.drain_timeout = args.drain_timeout;
    config.cache_dir = args.cache_dir;
    config.watcher = args.polling.apply(config.watcher);
    config.check = HealthCheck {
        inter: args.check_inter,
        fall: args.fall,
        rise: args.rise,
    };
    if let Some(dir) = &config.cache_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            CommandError::Usage(format!("cannot create --cache-dir {}: {e}", dir.display()))
        })?;
    }
    let backends: Vec<String> = config
        .backends
        .iter()
        .map(|b| format!("{}={}", b.service.as_str(), b.backend))
        .collect();
    let sync = HaproxySync::spawn(registry, config)?;
    tracing::info!(?backends, "haproxy-sync started");
    super::shutdown_signal().await;
    tracing::info!("shutting down; HAProxy keeps its servers");
    sync.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: HaproxySyncArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        use clap::Parser;
        let args = Cli::parse_from([
            "haproxy-sync",
            "--registry",
            "http://r:1",
            "--socket",
            "/s",
            "--backend",
            "web=be",
        ])
        .args;
        let library = HaproxySyncConfig::new("/s", Vec::new());
        assert_eq!(
            (args.max_stale, args.interval, args.drain_timeout),
            (library.max_stale, library.interval, library.drain_timeout)
        );
        assert_eq!(Duration::from(args.polling.poll_wait), library.watcher.wait);
        assert_eq!(
            Duration::from(args.read.timeout),
            discovery_client::DEFAULT_REQUEST_TIMEOUT
        );
        let check = HealthCheck::default();
        assert_eq!(
            (args.check_inter, args.fall, args.rise),
            (check.inter, check.fall, check.rise)
        );
    }
}
