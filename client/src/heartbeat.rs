//! [`Heartbeater`]: keeps one host registered by re-sending its registration, and takes it
//! out of rotation cleanly on shutdown.
//!
//! The background task is one `select!` loop over its timer and a cancellation token: send
//! a heartbeat (to whichever node answers, see [`RegistryClient`]), publish the outcome, sleep
//! `interval` with jitter, or a growing backoff when no node took it. Dropping the handle
//! stops the heartbeats (the host then expires by its TTL); [`Heartbeater::shutdown`]
//! marks the host `draining` and then deregisters it.
//!
//! Each heartbeat request to one node has a deadline that follows the interval
//! ([`HeartbeatConfig::timeout`]; half the interval, within 1 s..10 s, by default): a node
//! that accepts the connection but does not answer (a frozen process) is given up on then,
//! and the next node takes the same beat at once. So a beat lands within `interval` +
//! timeout (1.5 × interval in the default range) through one frozen node, well inside
//! a TTL of twice the interval or more.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use discovery_api::{HostStatus, Registration, ServiceName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::{jitter, Backoff};
use crate::error::describe_skipped;
use crate::registry_client::Answered;
use crate::{Error, RegistryClient};

/// The shortest heartbeat request timeout derived from the interval: below it, a busy but
/// healthy node would be taken for a dead one.
pub const MIN_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest heartbeat request timeout derived from the interval: past it, a frozen node
/// stalls the agent longer than any failover is worth waiting for.
pub const MAX_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`Heartbeater`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// Time between two heartbeats. Default 10 s. Keep it well under the host's TTL
    /// (default 600 s on the registry) so that a few lost heartbeats do not expire it.
    pub interval: Duration,
    /// Each wait is moved at random by up to this fraction of itself (default 0.1, so
    /// ±10%), so that hosts started together spread their heartbeats.
    pub jitter: f64,
    /// The first wait after a heartbeat no node took; it doubles with each further
    /// failure, up to `interval`. Default 500 ms.
    pub min_backoff: Duration,
    /// On shutdown, the time between the `draining` heartbeat and the deregistration, for
    /// proxies to see the host draining and stop sending it new work. Default zero.
    pub drain_period: Duration,
    /// How long one heartbeat request to one node may take before the next node is tried
    /// for the same beat (also used for the `draining` heartbeat and the deregistration).
    /// Default `None`: [`HeartbeatConfig::default_timeout`] of the interval, half of it
    /// within [`MIN_HEARTBEAT_TIMEOUT`]..[`MAX_HEARTBEAT_TIMEOUT`] (5 s for the default
    /// 10 s interval). Shorter fails over from a frozen node sooner; too short takes a busy
    /// node for a dead one.
    pub timeout: Option<Duration>,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(10),
            jitter: 0.1,
            min_backoff: Duration::from_millis(500),
            drain_period: Duration::ZERO,
            timeout: None,
        }
    }
}

impl HeartbeatConfig {
    /// The request timeout for heartbeats every `interval` when none is set: half the
    /// interval, so that a beat failed over from a frozen node still lands well before
    /// the next one is due, clamped to [`MIN_HEARTBEAT_TIMEOUT`]..[`MAX_HEARTBEAT_TIMEOUT`].
    pub fn default_timeout(interval: Duration) -> Duration {
        (interval / 2).clamp(MIN_HEARTBEAT_TIMEOUT, MAX_HEARTBEAT_TIMEOUT)
    }

    /// The request timeout these settings give: `timeout`, or the default for `interval`.
    pub fn request_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| HeartbeatConfig::default_timeout(self.interval))
    }
}

/// What happened to the latest heartbeat.
#[derive(Debug, Clone)]
pub enum HeartbeatOutcome {
    /// None has been sent yet.
    Pending,
    /// A registry node took it.
    Sent {
        /// The base URL of the node that took it.
        registry: String,
        /// When it was acknowledged.
        at: SystemTime,
    },
    /// No node took it; the heartbeater backs off and retries.
    Failed {
        /// Why, for every node tried.
        error: Arc<Error>,
        /// How many heartbeats in a row have failed.
        consecutive_failures: u32,
        /// When the last attempt ended.
        at: SystemTime,
    },
}

/// The handle of a background task that keeps a host registered; dropping it stops the
/// task without deregistering, [`Heartbeater::shutdown`] drains and deregisters.
///
/// ```no_run
/// # async fn example() -> Result<(), discovery_client::Error> {
/// use discovery_client::{HeartbeatConfig, Heartbeater, Registration, RegistryClient, ServiceName};
///
/// let registry = RegistryClient::new(["http://10.0.0.1:8080,http://10.0.0.2:8080"])?;
/// let registration = Registration::from_json(
///     br#"{"ip": "10.0.0.7", "port": 8080, "revision": "4f2a9c1"}"#,
/// ).expect("a valid registration");
/// let service = ServiceName::parse("payments").expect("a valid name");
/// let heartbeater =
///     Heartbeater::spawn(registry, service, registration, HeartbeatConfig::default())?;
/// // ... serve ...
/// heartbeater.shutdown().await?; // draining, then deregistered
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Heartbeater {
    registry: RegistryClient,
    service: ServiceName,
    registration: Registration,
    drain_period: Duration,
    /// Per request to one node; see [`HeartbeatConfig::timeout`].
    timeout: Duration,
    outcome_rx: watch::Receiver<HeartbeatOutcome>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Heartbeater {
    /// Starts heartbeating at once, in a task on the current tokio runtime (so this must be
    /// called inside one). Fails only on bad settings: a zero interval or timeout, a jitter
    /// outside 0..1, a registration with no `ip` and no `auto_ip`, or one whose `ttl` is not
    /// longer than the interval (the host would expire between heartbeats).
    pub fn spawn(
        registry: RegistryClient,
        service: ServiceName,
        registration: Registration,
        config: HeartbeatConfig,
    ) -> Result<Self, Error> {
        if config.interval.is_zero() {
            return Err(Error::Config(
                "the heartbeat interval must not be zero".into(),
            ));
        }
        if config.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Config(
                "the heartbeat timeout must not be zero".into(),
            ));
        }
        if !(0.0..1.0).contains(&config.jitter) {
            return Err(Error::Config(format!(
                "the heartbeat jitter must be a fraction from 0 to 1, got {}",
                config.jitter
            )));
        }
        if registration.ip.is_none() && !registration.auto_ip {
            return Err(Error::Config(
                "the registration needs an ip, or auto_ip to let the registry see it".into(),
            ));
        }
        if let Some(ttl) = registration.ttl.map(Duration::from_secs) {
            if ttl <= config.interval {
                return Err(Error::Config(format!(
                    "the ttl ({}) must be longer than the heartbeat interval ({}), or the host expires between heartbeats",
                    humantime::format_duration(ttl),
                    humantime::format_duration(config.interval)
                )));
            }
        }
        let (outcome_tx, outcome_rx) = watch::channel(HeartbeatOutcome::Pending);
        let cancel = CancellationToken::new();
        let beat = Beat {
            registry: registry.clone(),
            service: service.clone(),
            registration: registration.clone(),
            config: config.clone(),
            outcome_tx,
        };
        let task = tokio::spawn(beat.run(cancel.clone()));
        Ok(Heartbeater {
            registry,
            service,
            registration,
            drain_period: config.drain_period,
            timeout: config.request_timeout(),
            outcome_rx,
            cancel,
            task: Some(task),
        })
    }

    /// The outcome of the latest heartbeat.
    pub fn last_outcome(&self) -> HeartbeatOutcome {
        self.outcome_rx.borrow().clone()
    }

    /// A receiver that sees every new outcome (`changed().await`).
    pub fn outcomes(&self) -> watch::Receiver<HeartbeatOutcome> {
        self.outcome_rx.clone()
    }

    /// Stops heartbeating, sends one heartbeat with status `draining`, waits
    /// `drain_period`, then deletes the host (`DELETE /v1/registration/{service}/{ip}?port=`).
    ///
    /// Returns the deregistration's error, if it failed. A host registered with `auto_ip`
    /// and no `ip` cannot be deleted (its address is only known to the registry): it is
    /// left draining and expires by its TTL.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            // The task only ends by cancellation; a panic in it is not ours to re-raise.
            let _ = task.await;
        }
        let mut draining = self.registration.clone();
        draining.status = HostStatus::Draining;
        let drained = self
            .registry
            .register_within(&self.service, &draining, self.timeout)
            .await
            .map(drop);
        if let Err(error) = &drained {
            tracing::warn!(service = %self.service, %error, "could not mark the host draining");
        }
        let Some(ip) = self.registration.ip else {
            tracing::info!(service = %self.service, "no ip to deregister (auto_ip): the host expires by its TTL");
            return drained;
        };
        if drained.is_ok() && !self.drain_period.is_zero() {
            tokio::time::sleep(self.drain_period).await;
        }
        let removed = self
            .registry
            .deregister_within(
                &self.service,
                ip,
                Some(self.registration.port),
                self.timeout,
            )
            .await?;
        tracing::info!(service = %self.service, %ip, port = %self.registration.port, removed, "deregistered");
        Ok(())
    }
}

impl Drop for Heartbeater {
    fn drop(&mut self) {
        // Without `shutdown()` the heartbeats just stop; nothing can be awaited here.
        self.cancel.cancel();
    }
}

/// The task's state.
struct Beat {
    registry: RegistryClient,
    service: ServiceName,
    registration: Registration,
    config: HeartbeatConfig,
    outcome_tx: watch::Sender<HeartbeatOutcome>,
}

impl Beat {
    async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.interval);
        let timeout = self.config.request_timeout();
        let mut consecutive_failures = 0u32;
        loop {
            // Cancelling mid-request is fine: the draining heartbeat that follows a
            // shutdown is newer and wins on the registry.
            let sent = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                sent = self.registry.register_within(&self.service, &self.registration, timeout) => sent,
            };
            let delay = match sent {
                Ok(Answered {
                    value: registry,
                    skipped,
                }) => {
                    if !skipped.is_empty() {
                        // Once per failover: the next beat starts at the node that took
                        // this one.
                        tracing::warn!(service = %self.service, %registry, skipped = %describe_skipped(&skipped), "heartbeat failed over to another registry node");
                    }
                    if consecutive_failures > 0 {
                        tracing::info!(service = %self.service, %registry, "heartbeats go through again");
                    }
                    consecutive_failures = 0;
                    backoff.reset();
                    self.outcome_tx.send_replace(HeartbeatOutcome::Sent {
                        registry,
                        at: SystemTime::now(),
                    });
                    self.config.interval
                }
                Err(error) => {
                    consecutive_failures = consecutive_failures.saturating_add(1);
                    tracing::warn!(service = %self.service, %error, consecutive_failures, "heartbeat failed");
                    let delay = match &error {
                        // The request itself is wrong: retrying sooner cannot help.
                        Error::Rejected { .. } => self.config.interval,
                        _ => backoff
                            .next_delay()
                            .max(error.retry_after().unwrap_or_default())
                            .min(self.config.interval),
                    };
                    self.outcome_tx.send_replace(HeartbeatOutcome::Failed {
                        error: Arc::new(error),
                        consecutive_failures,
                        at: SystemTime::now(),
                    });
                    delay
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(jitter(delay, self.config.jitter)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::stub::{self, wait_until};

    fn fast_config() -> HeartbeatConfig {
        HeartbeatConfig {
            interval: Duration::from_millis(50),
            min_backoff: Duration::from_millis(10),
            ..HeartbeatConfig::default()
        }
    }

    #[test]
    fn the_default_timeout_is_half_the_interval_within_its_bounds() {
        let timeout = |secs| HeartbeatConfig::default_timeout(Duration::from_secs(secs));
        assert_eq!(timeout(1), MIN_HEARTBEAT_TIMEOUT);
        assert_eq!(timeout(10), Duration::from_secs(5));
        assert_eq!(timeout(600), MAX_HEARTBEAT_TIMEOUT);
        let set = HeartbeatConfig {
            timeout: Some(Duration::from_millis(300)),
            ..HeartbeatConfig::default()
        };
        assert_eq!(set.request_timeout(), Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_zero_timeout_is_refused() {
        let registry = RegistryClient::new(["http://127.0.0.1:9"]).unwrap();
        let me = Registration::from_form(b"ip=10.0.0.7&port=8080&revision=r1").unwrap();
        let service = ServiceName::parse("payments").unwrap();
        let config = HeartbeatConfig {
            timeout: Some(Duration::ZERO),
            ..HeartbeatConfig::default()
        };
        let refused = Heartbeater::spawn(registry, service, me, config);
        assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn a_ttl_not_longer_than_the_interval_is_refused() {
        let service = ServiceName::parse("payments").unwrap();
        let config = HeartbeatConfig {
            interval: Duration::from_secs(10),
            ..HeartbeatConfig::default()
        };
        for (ttl, refused) in [(10, true), (5, true), (11, false)] {
            let registry = RegistryClient::new(["http://127.0.0.1:9"]).unwrap();
            let form = format!("ip=10.0.0.7&port=8080&revision=r1&ttl={ttl}");
            let me = Registration::from_form(form.as_bytes()).unwrap();
            let spawned = Heartbeater::spawn(registry, service.clone(), me, config.clone());
            match spawned {
                Err(Error::Config(why)) => {
                    assert!(refused, "ttl {ttl}: {why}");
                    assert!(why.contains(&format!("ttl ({ttl}s)")), "{why}");
                }
                Err(other) => panic!("ttl {ttl}: {other}"),
                Ok(_) => assert!(!refused, "ttl {ttl} was taken"),
            }
        }
    }

    #[tokio::test]
    async fn failures_are_counted_and_cleared_by_the_next_success() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let stub = stub::serve(move |_| match counter.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => (503, vec![], r#"{"error":"full"}"#.into()),
            _ => (200, vec![], "{}".into()),
        })
        .await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let me = Registration::from_form(b"ip=10.0.0.7&port=8080&revision=r1").unwrap();
        let service = ServiceName::parse("payments").unwrap();
        let heartbeater = Heartbeater::spawn(registry, service, me, fast_config()).unwrap();
        let mut outcomes = heartbeater.outcomes();
        let mut failures_seen = Vec::new();
        loop {
            outcomes.changed().await.unwrap();
            match &*outcomes.borrow_and_update() {
                HeartbeatOutcome::Failed {
                    consecutive_failures,
                    ..
                } => failures_seen.push(*consecutive_failures),
                HeartbeatOutcome::Sent { registry, .. } => {
                    assert_eq!(registry, &stub.url);
                    break;
                }
                HeartbeatOutcome::Pending => {}
            }
        }
        assert_eq!(failures_seen, [1, 2]);
        let counter = calls.clone();
        wait_until("heartbeats repeat", Duration::from_secs(5), || {
            counter.load(Ordering::SeqCst) >= 5
        })
        .await;
        drop(heartbeater);
    }

    #[tokio::test]
    async fn shutdown_sends_draining_then_deletes_the_host() {
        let stub = stub::serve(|_| (200, vec![], "{}".into())).await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let me = Registration::from_form(b"ip=10.0.0.7&port=8080&revision=r1").unwrap();
        let service = ServiceName::parse("payments").unwrap();
        let heartbeater = Heartbeater::spawn(registry, service, me, fast_config()).unwrap();
        let mut outcomes = heartbeater.outcomes();
        outcomes.changed().await.unwrap();
        heartbeater.shutdown().await.unwrap();
        let requests = stub.requests();
        let last_two: Vec<_> = requests[requests.len() - 2..]
            .iter()
            .map(|r| (r.method.as_str(), r.target.as_str()))
            .collect();
        assert_eq!(
            last_two,
            [
                ("POST", "/v1/registration/payments"),
                ("DELETE", "/v1/registration/payments/10.0.0.7?port=8080")
            ]
        );
        let draining = Registration::from_json(requests[requests.len() - 2].body.as_bytes());
        assert_eq!(draining.unwrap().status, HostStatus::Draining);
        // The task is gone once its outcome sender is: nothing can follow the DELETE.
        tokio::time::timeout(Duration::from_secs(5), async {
            while outcomes.changed().await.is_ok() {}
        })
        .await
        .expect("the heartbeat task ended with shutdown");
        assert_eq!(
            stub.requests().len(),
            requests.len(),
            "no heartbeat after shutdown"
        );
    }
}
