//! `discovery hosts SERVICE`: a service's live hosts, as a table or as the
//! `GET /v1/registration/{service}` body; with `--watch`, again on every change until
//! SIGINT or SIGTERM.
//!
//! Following the service is the [`HostWatcher`]'s job (long polls, failover, keeping the
//! last list while no registry answers); this file only prints what it hands out.

use std::net::SocketAddr;
use std::time::SystemTime;

use clap::Args;
use discovery_api::{Host, HostsResponse, ServiceName};
use discovery_client::{HostWatcher, ShrinkPolicy, WatcherConfig};

use crate::cli::connect::{CommandError, ReadArgs, WatchArgs};
use crate::cli::output::{self, Table};
use crate::cli::shutdown_signal;

/// The flags of `discovery hosts`.
#[derive(Debug, Clone, Args)]
pub struct HostsArgs {
    /// The service whose hosts to show.
    pub(crate) service: ServiceName,
    #[command(flatten)]
    pub(crate) read: ReadArgs,
    /// Keep running and print the list again each time it changes (until Ctrl-C).
    #[arg(long)]
    pub(crate) watch: bool,
    /// `--poll-wait`, used with `--watch`.
    #[command(flatten)]
    pub(crate) polling: WatchArgs,
    /// Print the registry's JSON body instead of a table (with `--watch`, one body per
    /// line).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prints the service's hosts once, or follows them with `--watch`.
pub async fn run(args: HostsArgs) -> Result<(), CommandError> {
    let registry = args.read.client()?;
    // A plain read first, even with `--watch`: when no registry answers, the command
    // should say so and stop rather than wait silently for one to come back.
    let first = registry.hosts(&args.service).await?;
    if !args.watch {
        output::print(&render(&first, args.json, false))?;
        return Ok(());
    }
    if !output::print(&render(&first, args.json, true))? {
        return Ok(());
    }
    let config = args.polling.apply(WatcherConfig {
        // Show what the registry says as it says it: holding back a shrink protects a
        // caller that routes traffic, while a person watching wants to see the drop.
        shrink: ShrinkPolicy {
            grace: std::time::Duration::ZERO,
            ..ShrinkPolicy::default()
        },
        ..WatcherConfig::default()
    });
    let mut watcher = HostWatcher::spawn(registry, args.service.clone(), config)?;
    let mut shown = first.hosts;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let hosts = tokio::select! {
            _ = &mut shutdown => break,
            hosts = watcher.changed() => hosts,
        };
        // The watcher's first answer is usually the list already printed.
        if *hosts == shown {
            continue;
        }
        shown = hosts.to_vec();
        let update = HostsResponse {
            service: first.service.clone(),
            env: first.env.clone(),
            hosts: shown.clone(),
        };
        if !output::print(&render(&update, args.json, true))? {
            break;
        }
    }
    watcher.shutdown().await;
    Ok(())
}

/// One printout of a host list. In watch mode a table gets a title line with the time and
/// a blank line after it, so that successive lists stay apart; JSON is one line per list.
fn render(response: &HostsResponse, json: bool, watch: bool) -> String {
    match (json, watch) {
        (true, false) => output::json_pretty(response),
        (true, true) => output::json_line(response),
        (false, false) => table(&response.hosts).render(),
        (false, true) => format!(
            "{}: {} hosts at {}\n{}\n",
            response.service,
            response.hosts.len(),
            humantime::format_rfc3339_seconds(SystemTime::now()),
            table(&response.hosts).render()
        ),
    }
}

fn table(hosts: &[Host]) -> Table {
    let now = SystemTime::now();
    let mut table = Table::new(&["ADDRESS", "STATUS", "WEIGHT", "REVISION", "AGE", "TAGS"]);
    for host in hosts {
        table.row(vec![
            SocketAddr::new(host.ip_address, host.port.get()).to_string(),
            host.status.as_str().to_owned(),
            host.weight().to_string(),
            host.revision.to_string(),
            output::age_of_timestamp(&host.last_check_in, now),
            tags(host),
        ]);
    }
    table
}

/// `key=value` pairs separated by spaces, in key order; `-` for none.
fn tags(host: &Host) -> String {
    if host.tags.is_empty() {
        return "-".to_owned();
    }
    let pairs: Vec<String> = host
        .tags
        .iter()
        // Strings as their text, any other value as compact JSON (`TagValue`'s Display).
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use discovery_client::{RegistryClient, DEFAULT_REQUEST_TIMEOUT};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: HostsArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        use clap::Parser;
        let args = Cli::parse_from(["hosts", "payments", "--registry", "http://r:1"]).args;
        let library = WatcherConfig::default();
        assert_eq!(Duration::from(args.polling.poll_wait), library.wait);
        assert_eq!(Duration::from(args.read.timeout), DEFAULT_REQUEST_TIMEOUT);
        let registry = args.read.client().unwrap();
        assert_eq!(registry.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn the_flags_set_the_watchers_blind_bound() {
        use clap::Parser;
        let args = Cli::parse_from([
            "hosts",
            "payments",
            "--registry",
            "http://r:1",
            "--watch",
            "--poll-wait",
            "3s",
            "--timeout",
            "500ms",
        ])
        .args;
        let registry: RegistryClient = args.read.client().unwrap();
        let config = args.polling.apply(WatcherConfig::default());
        assert_eq!(config.wait, Duration::from_secs(3));
        assert_eq!(
            config.blind_bound(&registry),
            Duration::from_millis(3500),
            "--poll-wait + --timeout"
        );
    }
}
