//! [`HaproxySync`]: the background tasks that keep HAProxy backends equal to services'
//! host lists, and the translation of planned actions into runtime API commands.
//!
//! One task per backend, each one `select!` loop over its [`HostWatcher`]'s changes, a
//! resync tick and the shutdown signal. A round reads what HAProxy has (`show info`,
//! `show servers state`, `show stat`), asks the pure planner ([`super::plan`]) what to
//! change, and runs it, one command per connection. Every round compares the whole
//! backend with the whole list, so a failed command, a restarted sync or a reloaded
//! HAProxy (which forgets every runtime change) is repaired by the next round without
//! any bookkeeping of what was done before. A changed HAProxy pid is logged as a reload
//! and resets the planner's memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use discovery_api::ServiceName;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::naming::is_valid_proxy_name;
use super::parse::{self, Admin, ParseError, ProcessInfo};
use super::plan::{plan, wanted_servers, Action, Memory, Observed, Rules, Wanted};
use super::runtime::{Expect, HaproxyError, RuntimeApi, DEFAULT_COMMAND_TIMEOUT};
use crate::{Error, HostWatcher, ListSource, RegistryClient, WatcherConfig};

/// One service kept in one HAProxy backend: `--backend SERVICE=BACKEND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendBinding {
    /// The registry's service.
    pub service: ServiceName,
    /// The HAProxy backend (a `backend` section of the configuration).
    pub backend: String,
}

impl BackendBinding {
    /// Binds `service` to `backend`; fails on a name HAProxy would not accept.
    pub fn new(service: ServiceName, backend: impl Into<String>) -> Result<Self, Error> {
        let backend = backend.into();
        if !is_valid_proxy_name(&backend) {
            return Err(Error::Config(format!(
                "{backend:?} is not a HAProxy backend name (letters, digits, '.', '_', '-', ':')"
            )));
        }
        Ok(BackendBinding { service, backend })
    }
}

impl FromStr for BackendBinding {
    type Err = Error;

    /// Parses `SERVICE=BACKEND`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let (service, backend) = s
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("expected SERVICE=BACKEND, got {s:?}")))?;
        let service =
            ServiceName::parse(service).map_err(|e| Error::Config(format!("in {s:?}: {e}")))?;
        BackendBinding::new(service, backend)
    }
}

/// The health check every added server gets. Passed on each `add server`, because
/// HAProxy does not apply `default-server` to servers added at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between two checks. Default 2 s (HAProxy's default). Shorter finds dead hosts
    /// sooner, at the cost of more check traffic.
    pub inter: Duration,
    /// Failed checks in a row before a server is down. Default 3.
    pub fall: u32,
    /// Passed checks in a row before a server is up. Default 2.
    pub rise: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            inter: Duration::from_secs(2),
            fall: 3,
            rise: 2,
        }
    }
}

/// Settings of a [`HaproxySync`].
#[derive(Debug, Clone)]
pub struct HaproxySyncConfig {
    /// HAProxy's admin socket (`stats socket PATH level admin`).
    pub socket: PathBuf,
    /// The services to keep, each in its own backend.
    pub backends: Vec<BackendBinding>,
    /// How long a server whose host vanished from the registry keeps serving while its
    /// check finds it up. Default 10 minutes: long enough to ride out a registry that
    /// lost hosts, short enough that a host that is gone but still answers (a reused
    /// address, say) leaves the same day.
    pub max_stale: Duration,
    /// How long a stale server is drained before it is removed with sessions still open.
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// Time between full resyncs (changes from the registry are applied at once; the tick
    /// repairs HAProxy reloads and failed commands). Default 5 s.
    pub interval: Duration,
    /// The health check of added servers.
    pub check: HealthCheck,
    /// How long one runtime API command may take. Default 5 s.
    pub command_timeout: Duration,
    /// A folder for the watchers' cache files (`<backend>.<service>.json`), so that a
    /// restarted sync can fill a reloaded HAProxy while no registry answers. Default none.
    pub cache_dir: Option<PathBuf>,
    /// Settings of the host watchers (`cache_file` is set from `cache_dir`).
    pub watcher: WatcherConfig,
}

impl HaproxySyncConfig {
    /// The default settings for `backends` on the admin socket `socket`.
    pub fn new(socket: impl Into<PathBuf>, backends: Vec<BackendBinding>) -> Self {
        HaproxySyncConfig {
            socket: socket.into(),
            backends,
            max_stale: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(30),
            interval: Duration::from_secs(5),
            check: HealthCheck::default(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            cache_dir: None,
            watcher: WatcherConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.backends.is_empty() {
            return Err(Error::Config(
                "no backend to keep (--backend SERVICE=BACKEND)".into(),
            ));
        }
        let mut seen = HashSet::new();
        for binding in &self.backends {
            if !seen.insert(&binding.backend) {
                return Err(Error::Config(format!(
                    "backend {:?} is given twice: one backend holds one service",
                    binding.backend
                )));
            }
        }
        if self.interval.is_zero() || self.command_timeout.is_zero() {
            return Err(Error::Config(
                "the interval and command timeout must not be zero".into(),
            ));
        }
        if self.check.inter.as_millis() == 0 || self.check.fall == 0 || self.check.rise == 0 {
            return Err(Error::Config(
                "the health check's inter must be at least 1ms, fall and rise at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The handle of the tasks that keep HAProxy backends equal to the registry's host lists
/// (see the module docs and SPEC 6). Dropping it stops them; [`HaproxySync::shutdown`]
/// also waits for them. Stopping leaves HAProxy's servers as they are.
///
/// ```no_run
/// # async fn example() -> Result<(), discovery_client::Error> {
/// use discovery_client::{HaproxySync, HaproxySyncConfig, RegistryClient};
///
/// let registry = RegistryClient::new(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])?;
/// let config = HaproxySyncConfig::new(
///     "/run/haproxy/admin.sock",
///     vec!["payments=be_payments".parse()?],
/// );
/// let sync = HaproxySync::spawn(registry, config)?;
/// // ... until the process should stop:
/// sync.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HaproxySync {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl HaproxySync {
    /// Starts one watcher and one sync task per backend on the current tokio runtime.
    /// Fails only on bad settings; an unreachable HAProxy or registry is retried.
    pub fn spawn(registry: RegistryClient, config: HaproxySyncConfig) -> Result<Self, Error> {
        config.validate()?;
        let api = RuntimeApi::new(&config.socket).with_timeout(config.command_timeout);
        let rules = Rules {
            max_stale: config.max_stale,
            drain_timeout: config.drain_timeout,
        };
        // A watcher hears from some node at least every blind bound (one long poll plus its
        // request timeout) while one answers: an answer older than that, plus some slack,
        // means no node answers.
        let fresh_window = config.watcher.blind_bound(&registry) + Duration::from_secs(5);
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        for binding in &config.backends {
            let watcher_config = WatcherConfig {
                cache_file: config.cache_dir.as_ref().map(|dir| {
                    dir.join(format!(
                        "{}.{}.json",
                        binding.backend,
                        binding.service.as_str()
                    ))
                }),
                ..config.watcher.clone()
            };
            let watcher =
                HostWatcher::spawn(registry.clone(), binding.service.clone(), watcher_config)?;
            let backend = BackendSync {
                binding: binding.clone(),
                api: api.clone(),
                watcher,
                rules,
                check: config.check,
                interval: config.interval,
                fresh_window,
                memory: Memory::default(),
                haproxy: None,
                last_error: None,
                failed_commands: HashMap::new(),
            };
            tasks.push(tokio::spawn(backend.run(cancel.clone())));
        }
        Ok(HaproxySync { cancel, tasks })
    }

    /// Stops every task and waits for them to end. HAProxy keeps its servers.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for HaproxySync {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The state of one backend's task.
struct BackendSync {
    binding: BackendBinding,
    api: RuntimeApi,
    watcher: HostWatcher,
    rules: Rules,
    check: HealthCheck,
    interval: Duration,
    fresh_window: Duration,
    memory: Memory,
    /// The HAProxy process seen last: another pid means a reload.
    haproxy: Option<ProcessInfo>,
    /// The last round's error, so that a lasting failure is warned about once.
    last_error: Option<String>,
    /// The last round's failed commands by server, for the same reason.
    failed_commands: HashMap<String, String>,
}

impl BackendSync {
    async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = self.watcher.changed() => {}
                _ = tick.tick() => {}
            }
            self.round().await;
        }
        self.watcher.shutdown().await;
    }

    async fn round(&mut self) {
        let result = self.sync_once().await;
        let backend = self.binding.backend.as_str();
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    tracing::info!(backend = %backend, "HAProxy answers again");
                }
            }
            Err(error) => {
                let text = error.to_string();
                if self.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(backend = %backend, %error, "cannot sync the backend; retrying every interval");
                } else {
                    tracing::debug!(backend = %backend, %error, "cannot sync the backend");
                }
                self.last_error = Some(text);
            }
        }
    }

    /// One comparison of the whole backend with the whole host list, and the commands it
    /// calls for. Errors reading HAProxy end the round; a failed command is logged and the
    /// round goes on (the next round retries it).
    async fn sync_once(&mut self) -> Result<(), HaproxyError> {
        let status = self.watcher.status();
        if status.source == ListSource::None {
            tracing::debug!(backend = %self.binding.backend, "no host list yet: no registry answered and no cache file");
            return Ok(());
        }
        let hosts = self.watcher.current();
        // A list from the registry with no failure since, and not too old. (The watcher
        // publishes a list a moment before it stamps `last_success`: none yet is fresh.)
        let registry_reachable = status.source == ListSource::Registry
            && status.consecutive_failures == 0
            && status.last_success.is_none_or(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age <= self.fresh_window)
            });

        let process = self.show("show info", parse::info).await?;
        if let Some(previous) = self.haproxy {
            if previous.pid != process.pid || process.uptime_sec < previous.uptime_sec {
                tracing::info!(
                    backend = %self.binding.backend,
                    old_pid = previous.pid,
                    new_pid = process.pid,
                    "HAProxy was reloaded or restarted; restoring the backend's servers"
                );
                self.memory.clear();
            }
        }
        self.haproxy = Some(process);

        let backend = self.binding.backend.clone();
        let states = self
            .show(
                &format!("show servers state {backend}"),
                parse::servers_state,
            )
            .await?;
        let stats = self
            .show(&format!("show stat {backend} 4 -1"), parse::stat)
            .await?;
        let stats: HashMap<String, parse::StatRow> =
            stats.into_iter().map(|s| (s.name.clone(), s)).collect();
        let observed: Vec<Observed> = states
            .into_iter()
            .map(|s| {
                let stat = stats.get(&s.name);
                Observed {
                    weight: s.weight,
                    admin: s.admin,
                    health: s.health,
                    checks_enabled: s.checks_enabled,
                    sessions: stat.map_or(0, |t| t.sessions),
                    check_status: stat.map(|t| t.check_status.clone()).unwrap_or_default(),
                    name: s.name,
                }
            })
            .collect();

        let wanted: BTreeMap<String, Wanted> = wanted_servers(&hosts);
        let actions = plan(
            &wanted,
            &observed,
            registry_reachable,
            &self.rules,
            &mut self.memory,
            Instant::now(),
        );
        let planned = actions.len();
        let mut failed = HashMap::new();
        for action in actions {
            if let Some((server, error)) = self.apply(action).await {
                failed.insert(server, error);
            }
        }
        // Failures that did not happen again this round are forgotten.
        self.failed_commands = failed;
        tracing::debug!(backend = %self.binding.backend, registry_reachable, planned, "sync round done");
        Ok(())
    }

    /// Runs a `show` command and parses its answer; an answer that does not parse is
    /// usually HAProxy's error sentence, which the error then quotes.
    async fn show<T>(
        &self,
        command: &str,
        parse: fn(&str) -> Result<T, ParseError>,
    ) -> Result<T, HaproxyError> {
        let answer = self.api.run(command, Expect::Output).await?;
        parse(&answer).map_err(|e| HaproxyError::Unexpected {
            command: command.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Runs one action's commands in order, stopping at the first failure, and logs it.
    /// Returns the server and the error when a command failed. The same failure again in
    /// the next rounds (a backend HAProxy refuses dynamic servers for, say) is logged at
    /// `debug`, so that a lasting problem is one warning, not one every interval.
    async fn apply(&self, action: Action) -> Option<(String, String)> {
        let backend = self.binding.backend.as_str();
        let service = self.binding.service.as_str();
        let (server, commands) = match &action {
            Action::Keep { name, reason } => {
                tracing::info!(backend = %backend, service = %service, server = %name, ?reason, "host vanished from the registry; keeping its server");
                return None;
            }
            Action::Add(wanted) => (&wanted.name, self.add_commands(wanted)),
            Action::EnableHealth { name } => (
                name,
                vec![silent(format!("enable health {backend}/{name}"))],
            ),
            Action::SetWeight { name, to, .. } => (
                name,
                vec![silent(format!("set server {backend}/{name} weight {to}"))],
            ),
            Action::Ready { name, from } => {
                let mut commands = vec![silent(format!("set server {backend}/{name} state ready"))];
                if *from == Admin::Maint {
                    // Out of maintenance the last check result is old: down until the
                    // checks pass again.
                    commands.push(silent(format!("set server {backend}/{name} health down")));
                }
                (name, commands)
            }
            Action::Drain { name, .. } => (
                name,
                vec![silent(format!("set server {backend}/{name} state drain"))],
            ),
            Action::Remove { name, .. } => (
                name,
                vec![
                    silent(format!("set server {backend}/{name} state maint")),
                    silent(format!("shutdown sessions server {backend}/{name}")),
                    (
                        format!("del server {backend}/{name}"),
                        Expect::Sentence("Server deleted"),
                    ),
                ],
            ),
        };
        for (command, expect) in &commands {
            if let Err(error) = self.api.run(command, *expect).await {
                let text = error.to_string();
                if self.failed_commands.get(server) != Some(&text) {
                    tracing::warn!(backend = %backend, service = %service, server = %server, %error, ?action, "a runtime API command failed; the next rounds retry");
                } else {
                    tracing::debug!(backend = %backend, server = %server, %error, "a runtime API command failed again");
                }
                return Some((server.clone(), text));
            }
        }
        match &action {
            Action::Add(w) => {
                tracing::info!(backend = %backend, service = %service, server = %w.name, address = %SocketAddr::new(w.ip, w.port), weight = w.weight, draining = w.draining, "added server (down until its first checks pass)")
            }
            Action::EnableHealth { name } => {
                tracing::info!(backend = %backend, service = %service, server = %name, "enabled health checks")
            }
            Action::SetWeight { name, from, to } => {
                tracing::info!(backend = %backend, service = %service, server = %name, from, to, "changed weight")
            }
            Action::Ready { name, from } => {
                tracing::info!(backend = %backend, service = %service, server = %name, ?from, "put server back in service")
            }
            Action::Drain { name, reason } => {
                tracing::info!(backend = %backend, service = %service, server = %name, ?reason, "draining server")
            }
            Action::Remove { name, reason } => {
                tracing::info!(backend = %backend, service = %service, server = %name, ?reason, "removed server")
            }
            Action::Keep { .. } => {}
        }
        None
    }

    /// Add, start checks, ready, then force down: a readied server is UP before its first
    /// check and would take traffic it may not serve, and forcing it down only works after
    /// `state ready` (notes: gotcha 3). The `enabled` keyword is never used: HAProxy 2.6.12
    /// then never puts the server in the load balancing tree (gotcha 4).
    fn add_commands(&self, wanted: &Wanted) -> Vec<(String, Expect)> {
        let backend = &self.binding.backend;
        let name = &wanted.name;
        let check = &self.check;
        let mut commands = vec![
            (
                format!(
                    "add server {backend}/{name} {} weight {} check inter {}ms fall {} rise {}",
                    SocketAddr::new(wanted.ip, wanted.port),
                    wanted.weight,
                    check.inter.as_millis(),
                    check.fall,
                    check.rise
                ),
                Expect::Sentence("New server registered"),
            ),
            silent(format!("enable health {backend}/{name}")),
            silent(format!("set server {backend}/{name} state ready")),
            silent(format!("set server {backend}/{name} health down")),
        ];
        if wanted.draining {
            commands.push(silent(format!("set server {backend}/{name} state drain")));
        }
        commands
    }
}

fn silent(command: String) -> (String, Expect) {
    (command, Expect::Silence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_is_service_equals_backend() {
        let binding: BackendBinding = "payments=be_payments".parse().unwrap();
        assert_eq!(binding.service.as_str(), "payments");
        assert_eq!(binding.backend, "be_payments");
        for bad in [
            "payments",
            "pay ments=be",
            "payments=be x",
            "payments=be;del server x/y",
            "=be",
        ] {
            assert!(bad.parse::<BackendBinding>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_backend_given_twice_is_refused() {
        let config = HaproxySyncConfig::new(
            "/tmp/x.sock",
            vec!["a=be".parse().unwrap(), "b=be".parse().unwrap()],
        );
        assert!(matches!(config.validate(), Err(Error::Config(_))));
        assert!(HaproxySyncConfig::new("/tmp/x.sock", vec![])
            .validate()
            .is_err());
    }

    #[test]
    fn addresses_are_written_as_haproxy_expects_ipv6_in_brackets() {
        let addr = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 80).to_string();
        assert_eq!(addr("fd00::1"), "[fd00::1]:80");
        assert_eq!(addr("10.0.0.1"), "10.0.0.1:80");
    }
}
