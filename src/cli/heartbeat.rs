//! `discovery heartbeat`: the agent for hosts that do not link the Rust client. It keeps
//! one host registered until SIGTERM or SIGINT, then marks it `draining`, waits
//! `--drain-period`, deregisters it and exits 0.
//!
//! The heartbeats, failover, backoff and the drain-then-delete sequence are the
//! [`Heartbeater`]'s; this file turns flags into its settings, picks the host's address
//! when `--ip` is not given, and logs what happens.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use clap::Args;
use discovery_api::{HostStatus, Port, RepoName, Revision, ServiceName, Tags};
use discovery_client::{
    Error, HeartbeatConfig, HeartbeatOutcome, Heartbeater, Registration, RegistryClient,
    MAX_HEARTBEAT_TIMEOUT, MIN_HEARTBEAT_TIMEOUT,
};

use crate::cli::connect::{non_empty, CommandError, RegistryUrls};
use crate::cli::shutdown_signal;
use crate::config::LogFormat;

/// The flags of `discovery heartbeat`, as given.
#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryUrls,
    /// The service this host belongs to.
    #[arg(long, env = "DISCOVERY_SERVICE")]
    pub(crate) service: ServiceName,
    /// The port the host serves on.
    #[arg(long, env = "DISCOVERY_PORT", value_parser = Port::parse)]
    pub(crate) port: Port,
    /// The host's address. Default: this machine's address on the route to the first
    /// registry, which is what the registry sees when there is no NAT in between.
    #[arg(long, env = "DISCOVERY_IP")]
    pub(crate) ip: Option<IpAddr>,
    /// The running code's revision, usually its commit SHA.
    #[arg(long, env = "DISCOVERY_REVISION", default_value = "unknown")]
    pub(crate) revision: Revision,
    /// The repository the service is built from (`service_repo_name`).
    #[arg(long, env = "DISCOVERY_REPO", value_name = "NAME")]
    pub(crate) repo: Option<RepoName>,
    /// A tag, `KEY=VALUE`; repeat for more. `true`/`false` become booleans and whole
    /// numbers integers (`--tag canary=true --tag load_balancing_weight=20`).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub(crate) tags: Vec<(String, String)>,
    /// Time between heartbeats (each moved at random by up to 10%).
    #[arg(long, env = "DISCOVERY_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,
    #[arg(long, env = "DISCOVERY_TIMEOUT", value_name = "DURATION", help = timeout_help())]
    pub(crate) timeout: Option<humantime::Duration>,
    /// The host's time to live, in whole seconds (`90s`, `5m`); the registry clamps it to
    /// its `--min-ttl`/`--max-ttl`. Default: the registry's `--host-ttl`. Must be longer
    /// than `--interval`.
    #[arg(long, env = "DISCOVERY_TTL", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Option<Duration>,
    /// The status to register with: `up`, or `draining` to announce a host that should
    /// get no new work yet.
    #[arg(long, default_value = "up", value_parser = HostStatus::parse)]
    pub(crate) status: HostStatus,
    /// On shutdown, how long the host stays registered as `draining` before it is
    /// deleted, so that proxies polling every few seconds stop sending it new work first.
    #[arg(long, env = "DISCOVERY_DRAIN_PERIOD", default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) drain_period: Duration,
    /// The registry's write token, when it has one (`serve --write-token`).
    #[arg(long, env = "DISCOVERY_WRITE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Log line format (logs go to stderr).
    #[arg(long, env = "DISCOVERY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The help of `--timeout`, whose default is a rule over `--interval` rather than a value;
/// its bounds come from the library, so the help cannot drift from what it does.
fn timeout_help() -> String {
    format!(
        "How long one heartbeat request to one registry may take before the next registry is \
         asked for the same beat (also for the draining heartbeat and the deregistration). A \
         frozen registry costs the agent at most this. [default: half of --interval, within \
         {}..{}]",
        humantime::format_duration(MIN_HEARTBEAT_TIMEOUT),
        humantime::format_duration(MAX_HEARTBEAT_TIMEOUT)
    )
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Registers the host, keeps it registered until a signal, then drains and deregisters it.
pub async fn run(args: HeartbeatArgs) -> Result<(), CommandError> {
    let mut builder = args.registry.builder()?;
    if let Some(token) = non_empty(&args.token) {
        builder = builder.write_token(token);
    }
    let registry = builder.build()?;
    let registration = registration(&args, &registry).await?;
    let config = HeartbeatConfig {
        interval: args.interval,
        drain_period: args.drain_period,
        timeout: args.timeout.map(Into::into),
        ..HeartbeatConfig::default()
    };
    let address = match registration.ip {
        Some(ip) => SocketAddr::new(ip, args.port.get()).to_string(),
        None => format!("auto_ip:{}", args.port),
    };
    let heartbeater = Heartbeater::spawn(registry, args.service.clone(), registration, config)
        .map_err(|e| match e {
            // Bad flags (say a --ttl not longer than --interval): a usage error.
            Error::Config(why) => CommandError::Usage(why),
            other => CommandError::Registry(other),
        })?;
    let mut outcomes = heartbeater.outcomes();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut registered = false;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = outcomes.changed() => {
                if changed.is_err() {
                    break; // the task is gone; cannot happen before shutdown
                }
                let outcome = outcomes.borrow_and_update().clone();
                match outcome {
                    HeartbeatOutcome::Sent { registry, .. } if !registered => {
                        registered = true;
                        tracing::info!(service = %args.service, %address, %registry, "registered; heartbeating until SIGTERM");
                    }
                    // A refused first heartbeat means wrong flags or a wrong token: say so
                    // and stop, rather than retry forever in the background. (Later
                    // refusals, say after a token rotation, are retried and logged.)
                    HeartbeatOutcome::Failed { error, .. }
                        if !registered && matches!(*error, Error::Rejected { .. }) =>
                    {
                        drop(heartbeater);
                        return Err(CommandError::Refused(error));
                    }
                    _ => {}
                }
            }
        }
    }
    tracing::info!(service = %args.service, %address, drain_period = ?args.drain_period, "stopping: draining, then deregistering");
    // A second signal while draining gives up on the drain: whoever sends it wants out.
    let second_signal = shutdown_signal();
    tokio::select! {
        result = heartbeater.shutdown() => result.map_err(CommandError::Deregister)?,
        _ = second_signal => return Err(CommandError::Interrupted),
    }
    tracing::info!(service = %args.service, %address, "stopped");
    Ok(())
}

/// The validated registration the flags describe.
async fn registration(
    args: &HeartbeatArgs,
    registry: &RegistryClient,
) -> Result<Registration, CommandError> {
    let tags = Tags::from_pairs(args.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| CommandError::Usage(format!("--tag: {e}")))?;
    // Whole seconds, as the API takes it; the heartbeater refuses one not longer than the
    // interval.
    let ttl = args.ttl.map(|ttl| ttl.as_secs());
    let ip = match args.ip {
        Some(ip) => Some(ip),
        None => {
            let found = local_address_towards(registry).await;
            match found {
                Some((ip, url)) => {
                    tracing::info!(%ip, registry = %url, "no --ip given: using this machine's address on the route to the registry");
                    Some(ip)
                }
                None => {
                    tracing::warn!("no --ip given and no route to any registry found: the registry will use the address it sees (auto_ip); such a host cannot be deleted on shutdown and expires by its TTL");
                    None
                }
            }
        }
    };
    Ok(Registration {
        ip,
        port: args.port,
        revision: args.revision.clone(),
        service_repo_name: args.repo.clone().unwrap_or_else(RepoName::empty),
        tags,
        ttl,
        status: args.status,
        auto_ip: ip.is_none(),
    })
}

/// This machine's source address for traffic to the first registry it can route to, with
/// that registry's URL. Connecting a UDP socket only chooses the route: no packet is sent,
/// so this works while the registry is down. Behind NAT the registry sees another address;
/// pass `--ip` there.
async fn local_address_towards(registry: &RegistryClient) -> Option<(IpAddr, String)> {
    for url in registry.urls() {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            continue;
        };
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(addrs) = tokio::net::lookup_host((host, port)).await else {
            continue;
        };
        for addr in addrs {
            if let Some(ip) = source_address(addr) {
                return Some((ip, url.clone()));
            }
        }
    }
    None
}

fn source_address(target: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        SocketAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: HeartbeatArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        use clap::Parser;
        let args = Cli::parse_from([
            "heartbeat",
            "--registry",
            "http://r:1",
            "--service",
            "s",
            "--port",
            "1",
        ])
        .args;
        let library = HeartbeatConfig::default();
        assert_eq!(
            (
                args.interval,
                args.drain_period,
                args.timeout.map(Into::into)
            ),
            (library.interval, library.drain_period, library.timeout)
        );
    }

    #[test]
    fn the_timeout_help_states_the_library_rule() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        let default = format!(
            "[default: half of --interval, within {}..{}]",
            humantime::format_duration(MIN_HEARTBEAT_TIMEOUT),
            humantime::format_duration(MAX_HEARTBEAT_TIMEOUT)
        );
        assert!(help.contains(&default), "{help}");
        assert_eq!(
            HeartbeatConfig::default_timeout(std::time::Duration::from_secs(10)),
            std::time::Duration::from_secs(5),
            "the rule the help describes"
        );
    }

    #[test]
    fn the_route_to_a_loopback_registry_starts_at_loopback() {
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(source_address(target), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_tag_needs_an_equals_sign() {
        assert_eq!(
            parse_tag("az=us-east-1a=x").unwrap(),
            ("az".into(), "us-east-1a=x".into())
        );
        assert!(parse_tag("canary").is_err());
    }
}
