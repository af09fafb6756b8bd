//! [`HostWatcher`]: keeps an up-to-date host list of one service, and keeps the last good
//! one whenever the registry cannot give a better one.
//!
//! The background task is one `select!` loop: a long poll
//! (`GET /v1/registration/{service}?index=N&wait=5s`, with `If-None-Match` so that a poll
//! that ends with no change is a bodiless 304) that the registry answers as soon as the
//! service changes; conditional polls (`If-None-Match`) every `poll_interval` when the
//! registry sends no `X-Discovery-Index`; a growing backoff after failures. Failures (no
//! node answers, 503 while nodes are not ready) never touch the list. Each answer passes
//! the [`ShrinkGuard`] before it replaces the list, and each replacement is written to the
//! optional cache file. With no list yet and no registry answering, the cache file is
//! loaded.
//!
//! **How long a watcher can be blind.** A node that is frozen (SIGSTOP, a stuck VM)
//! still accepts connections and just never answers, so a long poll parked on it learns
//! nothing. Every poll therefore has a deadline of `wait` + the registry's request
//! timeout `T`; past it the next node is asked at once (in the same call, no backoff),
//! the failover is logged as a warning and counted in [`WatcherStatus`], and the list is
//! kept meanwhile. So a watcher learns of a change within `wait + T` (5 s + 2 s with the
//! defaults, [`WatcherConfig::blind_bound`]), plus the milliseconds the next node takes
//! to answer, of it reaching a node that answers, even when the node it polls freezes;
//! each further frozen node in its way adds `T`. (Measured on two real nodes: 7.01 s.) The
//! price is one request per `wait` per watcher on a quiet service, a bodiless 304 each.
//!
//! Readers get the list from an [`ArcSwap`]: a snapshot `Arc`, no lock held by anyone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use discovery_api::{Host, HostsResponse, ServiceName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::{jitter, Backoff};
use crate::error::describe_skipped;
use crate::registry_client::{Answered, HostsPoll, Polled};
use crate::shrink_guard::{ShrinkGuard, Verdict};
use crate::{cache, Error, Failure, RegistryClient, ShrinkPolicy};

/// How long one long poll waits for a change, by default ([`WatcherConfig::wait`]).
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(5);

/// Settings of a [`HostWatcher`].
#[derive(Debug, Clone, PartialEq)]
pub struct WatcherConfig {
    /// How long one long poll may wait for a change. Default [`DEFAULT_POLL_WAIT`] (5 s);
    /// at most [`discovery_api::MAX_WAIT_SECS`] (5 minutes), the registry's limit. A change is delivered as soon as it happens
    /// whatever the wait; the wait bounds how long a watcher parked on a frozen node stays
    /// blind ([`WatcherConfig::blind_bound`]). Longer means fewer requests (a bodiless 304
    /// per wait on a quiet service) and a longer blind spot.
    pub wait: Duration,
    /// Time between two polls when the registry sends no change index (so no long poll is
    /// possible). Default 5 s.
    pub poll_interval: Duration,
    /// Where to keep the last good list, if anywhere. Default none.
    pub cache_file: Option<PathBuf>,
    /// When a smaller answer is held back. Default [`ShrinkPolicy::default`].
    pub shrink: ShrinkPolicy,
    /// The first wait after a poll no node answered; it doubles with each further failure
    /// up to `max_backoff`. Default 500 ms.
    pub min_backoff: Duration,
    /// The longest wait between failed polls. Default [`DEFAULT_POLL_WAIT`]: once a node
    /// answers again after every node was down, the watcher hears of it within about one
    /// poll wait, at the cost of one attempt per wait per watcher during the outage, the
    /// same rate as a quiet healthy cluster.
    pub max_backoff: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            wait: DEFAULT_POLL_WAIT,
            poll_interval: Duration::from_secs(5),
            cache_file: None,
            shrink: ShrinkPolicy::default(),
            min_backoff: Duration::from_millis(500),
            max_backoff: DEFAULT_POLL_WAIT,
        }
    }
}

impl WatcherConfig {
    /// The longest a watcher with these settings over `registry` goes without hearing
    /// from some node while one answers: `wait` + [`RegistryClient::request_timeout`] (7 s with
    /// the defaults). A watcher parked on a node that freezes gives up on it then and asks
    /// the next, so it learns of a change within this bound of the change reaching a node
    /// that answers; each further frozen node in its way adds one request timeout.
    pub fn blind_bound(&self, registry: &RegistryClient) -> Duration {
        self.wait + registry.request_timeout()
    }
}

/// Where the current list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSource {
    /// No list yet: no registry has answered and no cache file was loaded.
    None,
    /// The cache file, because no registry answered.
    CacheFile,
    /// A registry node.
    Registry,
}

/// A smaller answer the shrink guard keeps from replacing the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBack {
    /// The number of hosts in the held-back answer.
    pub hosts: usize,
    /// Since when drastically smaller answers have been coming.
    pub since: Instant,
    /// When such an answer will be taken, if they keep coming.
    pub until: Instant,
}

/// A poll another node answered because the node asked first gave no usable answer (it
/// timed out, was down, or could not serve).
#[derive(Debug, Clone)]
pub struct Failover {
    /// The nodes given up on, each with why ([`Failure::is_timeout`] for a frozen one).
    pub skipped: Arc<Vec<Failure>>,
    /// The node that answered, asked first from now on.
    pub to: String,
    /// When it answered.
    pub at: SystemTime,
}

/// How a [`HostWatcher`] is doing.
#[derive(Debug, Clone)]
pub struct WatcherStatus {
    /// Where the current list came from.
    pub source: ListSource,
    /// The node that answered last.
    pub registry: Option<String>,
    /// When a node last answered.
    pub last_success: Option<SystemTime>,
    /// How many polls in a row no node answered.
    pub consecutive_failures: u32,
    /// Why the latest failed poll failed (kept after a success, for inspection).
    pub last_error: Option<Arc<Error>>,
    /// A smaller answer being held back, if any.
    pub held_back: Option<HeldBack>,
    /// How many polls another node answered after the node asked first did not.
    pub failovers: u64,
    /// The latest of those.
    pub last_failover: Option<Failover>,
}

/// The handle of a background task that follows one service's host list. See the module
/// docs. Other tasks read the list through [`HostList`] handles from
/// [`HostWatcher::list`].
///
/// ```no_run
/// # async fn example() -> Result<(), discovery_client::Error> {
/// use discovery_client::{HostWatcher, RegistryClient, ServiceName, WatcherConfig};
///
/// let registry = RegistryClient::new(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])?;
/// let config = WatcherConfig {
///     cache_file: Some("/var/cache/payments.json".into()),
///     ..WatcherConfig::default()
/// };
/// let service = ServiceName::parse("payments").expect("a valid name");
/// let mut watcher = HostWatcher::spawn(registry, service, config)?;
/// loop {
///     let hosts = watcher.changed().await;
///     println!("payments now has {} hosts", hosts.len());
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct HostWatcher {
    list: HostList,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The read side of a [`HostWatcher`]: a cheap `Clone` handle that gives the current list
/// and waits for changes. It keeps the last list readable after the watcher stopped.
#[derive(Debug, Clone)]
pub struct HostList {
    shared: Arc<Shared>,
    version_rx: watch::Receiver<u64>,
}

/// What the task publishes and every handle reads.
#[derive(Debug)]
struct Shared {
    hosts: ArcSwap<Vec<Host>>,
    status: ArcSwap<WatcherStatus>,
    /// Counts list replacements. The sender lives here, not in the task, so receivers stay
    /// open as long as a handle does.
    version_tx: watch::Sender<u64>,
}

impl HostWatcher {
    /// Starts following `service` at once, in a task on the current tokio runtime (so this
    /// must be called inside one). Fails only on bad settings.
    pub fn spawn(
        registry: RegistryClient,
        service: ServiceName,
        config: WatcherConfig,
    ) -> Result<Self, Error> {
        if config.wait.is_zero() || config.poll_interval.is_zero() {
            return Err(Error::Config(
                "the watcher's wait and poll_interval must not be zero".into(),
            ));
        }
        // The registry refuses a longer wait with a 400, which would leave the watcher
        // retrying a refused poll forever: say so now instead.
        let max_wait = Duration::from_secs(discovery_api::MAX_WAIT_SECS);
        if config.wait > max_wait {
            return Err(Error::Config(format!(
                "the watcher's wait must be at most {}s, the registry's limit",
                max_wait.as_secs()
            )));
        }
        if !(0.0..=1.0).contains(&config.shrink.min_ratio) {
            return Err(Error::Config(format!(
                "the shrink guard's min_ratio must be a fraction from 0 to 1, got {}",
                config.shrink.min_ratio
            )));
        }
        let (version_tx, version_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            hosts: ArcSwap::from_pointee(Vec::new()),
            status: ArcSwap::from_pointee(WatcherStatus {
                source: ListSource::None,
                registry: None,
                last_success: None,
                consecutive_failures: 0,
                last_error: None,
                held_back: None,
                failovers: 0,
                last_failover: None,
            }),
            version_tx,
        });
        let cancel = CancellationToken::new();
        let follow = Follow {
            guard: ShrinkGuard::new(config.shrink),
            backoff: Backoff::new(config.min_backoff, config.max_backoff),
            registry,
            service,
            config,
            shared: shared.clone(),
            poll: HostsPoll::default(),
            held: None,
            cache_tried: false,
        };
        let task = tokio::spawn(follow.run(cancel.clone()));
        Ok(HostWatcher {
            list: HostList { shared, version_rx },
            cancel,
            task: Some(task),
        })
    }

    /// A read handle for another task.
    pub fn list(&self) -> HostList {
        self.list.clone()
    }

    /// See [`HostList::current`].
    pub fn current(&self) -> Arc<Vec<Host>> {
        self.list.current()
    }

    /// See [`HostList::status`].
    pub fn status(&self) -> Arc<WatcherStatus> {
        self.list.status()
    }

    /// See [`HostList::changed`].
    pub async fn changed(&mut self) -> Arc<Vec<Host>> {
        self.list.changed().await
    }

    /// Stops following the service and waits for the task to end. [`HostList`] handles
    /// keep the last list.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HostWatcher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl HostList {
    /// The current host list: a snapshot, cheap to take, that nothing changes under the
    /// caller. Empty until a registry answered or the cache file was loaded (see
    /// [`HostList::status`]).
    pub fn current(&self) -> Arc<Vec<Host>> {
        self.shared.hosts.load_full()
    }

    /// How the watcher is doing: where the list came from, failures, a held-back answer.
    pub fn status(&self) -> Arc<WatcherStatus> {
        self.shared.status.load_full()
    }

    /// Waits until the list is replaced, then returns the new one. Returns at once if it
    /// was replaced since this handle last looked; a handle from [`HostWatcher::list`]
    /// starts where the watcher's own handle is.
    pub async fn changed(&mut self) -> Arc<Vec<Host>> {
        // The sender lives in `shared`, which `self` holds: the channel cannot close.
        let _ = self.version_rx.changed().await;
        self.version_rx.borrow_and_update();
        self.current()
    }
}

/// The extra time given to a held-back answer's confirming poll, so that it arrives after
/// the grace period ends rather than just before.
const CONFIRM_MARGIN: Duration = Duration::from_millis(50);

/// The task's state.
struct Follow {
    registry: RegistryClient,
    service: ServiceName,
    config: WatcherConfig,
    shared: Arc<Shared>,
    guard: ShrinkGuard,
    backoff: Backoff,
    /// What the next request asks for.
    poll: HostsPoll,
    /// The answer the shrink guard holds back: a `304` to the next poll confirms it.
    held: Option<HostsResponse>,
    /// Whether the cache file was already tried (it is read once, at cold start).
    cache_tried: bool,
}

impl Follow {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            let polled = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                polled = self.registry.poll_hosts(&self.service, &self.poll) => polled,
            };
            let delay = match polled {
                Ok(Answered { value, skipped }) => {
                    if !skipped.is_empty() {
                        self.on_failover(&value, skipped);
                    }
                    self.on_answer(value).await
                }
                Err(error) => Some(self.on_failure(error).await),
            };
            if let Some(delay) = delay {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    /// Records that `polled` came from another node than the one asked first. Warned about
    /// once per failover: the next poll starts at the node that answered, so a node that
    /// stays frozen is neither asked nor warned about again.
    fn on_failover(&self, polled: &Polled, skipped: Vec<Failure>) {
        let to = polled.url().to_owned();
        tracing::warn!(
            service = %self.service,
            registry = %to,
            skipped = %describe_skipped(&skipped),
            "failed over to another registry node; the host list was kept meanwhile"
        );
        let failover = Failover {
            skipped: Arc::new(skipped),
            to,
            at: SystemTime::now(),
        };
        self.update_status(|s| {
            s.failovers += 1;
            s.last_failover = Some(failover);
        });
    }

    /// Takes an answer; returns how long to wait before the next poll (none: long-poll
    /// again at once).
    async fn on_answer(&mut self, polled: Polled) -> Option<Duration> {
        self.backoff.reset();
        let url = polled.url().to_owned();
        let was_failing = self.shared.status.load().consecutive_failures > 0;
        if was_failing {
            tracing::info!(service = %self.service, registry = %url, "host list polls go through again");
        }
        // Recorded before the list is published, so whoever wakes on the change sees
        // where it came from.
        self.update_status(|s| {
            s.registry = Some(url);
            s.last_success = Some(SystemTime::now());
            s.consecutive_failures = 0;
        });
        let long_poll = match polled {
            Polled::Hosts {
                url,
                response,
                index,
                etag,
            } => {
                self.poll = HostsPoll {
                    origin: Some(url.clone()),
                    index,
                    wait: self.config.wait,
                    etag,
                };
                self.offer(response).await;
                index.is_some()
            }
            Polled::NotModified { index, .. } => {
                // Still the answer held back, if any: that confirms it.
                if let Some(held) = self.held.take() {
                    self.offer(held).await;
                }
                // A long poll that ended with no change. The index may still have moved
                // (a change and its undoing): follow it, or the next poll would return
                // at once, again and again.
                if index.is_some() {
                    self.poll.index = index;
                    self.poll.wait = self.config.wait;
                }
                index.is_some()
            }
        };
        let held_until = self.shared.status.load().held_back.map(|h| h.until);
        // While an answer is held back, ask again right when the grace period ends, so
        // that a confirmed shrink is taken on time rather than at the next change.
        let until_confirm = held_until
            .map(|until| until.saturating_duration_since(Instant::now()) + CONFIRM_MARGIN);
        if long_poll {
            if let Some(d) = until_confirm {
                self.poll.wait = self.poll.wait.min(d);
            }
            None
        } else {
            let interval = jitter(self.config.poll_interval, 0.1);
            Some(until_confirm.map_or(interval, |d| interval.min(d)))
        }
    }

    /// Counts a failed poll, loads the cache file at a cold start, and returns the backoff.
    async fn on_failure(&mut self, error: Error) -> Duration {
        // An index or ETag is only worth something to the node that gave it, and that
        // node may have restarted: start over with a plain read.
        self.poll = HostsPoll::default();
        self.held = None;
        let failures = self.shared.status.load().consecutive_failures + 1;
        if failures == 1 {
            tracing::warn!(service = %self.service, %error, "no registry answered; keeping the last host list");
        } else {
            tracing::debug!(service = %self.service, %error, failures, "no registry answered");
        }
        let delay = self
            .backoff
            .next_delay()
            .max(error.retry_after().unwrap_or_default());
        let error = Arc::new(error);
        self.update_status(|s| {
            s.consecutive_failures = failures;
            s.last_error = Some(error);
        });
        if !self.cache_tried && self.shared.status.load().source == ListSource::None {
            self.cache_tried = true;
            self.load_cache().await;
        }
        jitter(delay, 0.1)
    }

    /// Passes an answer through the shrink guard and, if taken, publishes it.
    async fn offer(&mut self, response: HostsResponse) {
        let current = self.shared.hosts.load_full();
        let verdict = self
            .guard
            .judge(current.len(), response.hosts.len(), Instant::now());
        match verdict {
            Verdict::HoldBack { since, until } => {
                if self.shared.status.load().held_back.is_none() {
                    tracing::warn!(
                        service = %self.service,
                        current = current.len(),
                        answer = response.hosts.len(),
                        "holding back a drastically smaller host list until it is confirmed"
                    );
                }
                let held_back = HeldBack {
                    hosts: response.hosts.len(),
                    since,
                    until,
                };
                self.update_status(|s| s.held_back = Some(held_back));
                self.held = Some(response);
            }
            Verdict::Accept => {
                self.held = None;
                let changed = *current != response.hosts;
                self.update_status(|s| {
                    s.held_back = None;
                    s.source = ListSource::Registry;
                });
                if changed {
                    self.publish(Arc::new(response.hosts.clone()));
                    self.store_cache(&response).await;
                }
            }
        }
    }

    fn publish(&self, hosts: Arc<Vec<Host>>) {
        self.shared.hosts.store(hosts);
        self.shared.version_tx.send_modify(|v| *v += 1);
    }

    async fn load_cache(&mut self) {
        let Some(path) = &self.config.cache_file else {
            return;
        };
        match cache::load(path, &self.service).await {
            Ok(response) => {
                tracing::info!(service = %self.service, path = %path.display(), hosts = response.hosts.len(), "starting from the cache file");
                self.guard.reset();
                self.update_status(|s| s.source = ListSource::CacheFile);
                self.publish(Arc::new(response.hosts));
            }
            Err(error) => {
                tracing::warn!(service = %self.service, %error, "cannot start from the cache file")
            }
        }
    }

    async fn store_cache(&self, response: &HostsResponse) {
        if let Some(path) = &self.config.cache_file {
            if let Err(error) = cache::store(path, response).await {
                tracing::warn!(service = %self.service, %error, "cannot write the cache file");
            }
        }
    }

    /// Publishes a changed copy of the status. Only this task writes it, so a
    /// load-modify-store cannot lose a concurrent update.
    fn update_status(&self, change: impl FnOnce(&mut WatcherStatus)) {
        let mut status = WatcherStatus::clone(&self.shared.status.load());
        change(&mut status);
        self.shared.status.store(Arc::new(status));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::stub::{self, hosts_body, wait_until};

    fn fast_config(grace: Duration) -> WatcherConfig {
        WatcherConfig {
            poll_interval: Duration::from_millis(20),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            shrink: ShrinkPolicy {
                min_ratio: 0.5,
                grace,
            },
            ..WatcherConfig::default()
        }
    }

    fn payments() -> ServiceName {
        ServiceName::parse("payments").unwrap()
    }

    #[tokio::test]
    async fn without_an_index_header_the_watcher_polls_with_its_etag() {
        let stub = stub::serve(|r| match r.header("if-none-match") {
            Some("\"v1\"") => (304, vec![], String::new()),
            _ => (
                200,
                vec![("etag", "\"v1\"".to_owned())],
                hosts_body("payments", &[1, 2]),
            ),
        })
        .await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let watcher =
            HostWatcher::spawn(registry, payments(), fast_config(Duration::ZERO)).unwrap();
        let seen = stub.seen.clone();
        wait_until("two conditional polls", Duration::from_secs(5), || {
            let seen = seen.lock().unwrap();
            seen.iter()
                .filter(|r| r.header("if-none-match").is_some())
                .count()
                >= 2
        })
        .await;
        assert_eq!(watcher.current().len(), 2);
        assert_eq!(watcher.status().source, ListSource::Registry);
        assert!(stub.requests().iter().all(|r| !r.target.contains("index=")));
        assert_eq!(*watcher.list().version_rx.borrow(), 1, "a 304 is no change");
        watcher.shutdown().await;
    }

    #[tokio::test]
    async fn a_wait_past_the_registrys_limit_is_refused_up_front() {
        let registry = RegistryClient::new(["http://127.0.0.1:9"]).unwrap();
        let config = WatcherConfig {
            wait: Duration::from_secs(discovery_api::MAX_WAIT_SECS + 1),
            ..WatcherConfig::default()
        };
        let refused = HostWatcher::spawn(registry, payments(), config);
        assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn a_long_poll_that_ends_with_no_change_is_a_304_and_the_watcher_polls_on() {
        let stub = stub::serve(|r| {
            let index = vec![("x-discovery-index", "4".to_owned())];
            match r.header("if-none-match") {
                Some("\"v1\"") => (304, index, String::new()),
                _ => {
                    let mut headers = index;
                    headers.push(("etag", "\"v1\"".to_owned()));
                    (200, headers, hosts_body("payments", &[1, 2]))
                }
            }
        })
        .await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let config = WatcherConfig {
            wait: Duration::from_millis(10),
            ..fast_config(Duration::ZERO)
        };
        let watcher = HostWatcher::spawn(registry, payments(), config).unwrap();
        let seen = stub.seen.clone();
        wait_until("three long polls", Duration::from_secs(5), || {
            seen.lock().unwrap().len() >= 4
        })
        .await;
        let requests = stub.requests();
        for poll in &requests[1..4] {
            assert_eq!(poll.target, "/v1/registration/payments?index=4&wait=10ms");
            assert_eq!(poll.header("if-none-match"), Some("\"v1\""));
        }
        assert_eq!(watcher.current().len(), 2);
        assert_eq!(*watcher.list().version_rx.borrow(), 1, "a 304 is no change");
        watcher.shutdown().await;
    }

    #[tokio::test]
    async fn a_held_back_shrink_is_taken_once_304s_confirm_it_past_the_grace_period() {
        let answers = Arc::new(AtomicUsize::new(0));
        let counter = answers.clone();
        let stub = stub::serve(move |r| {
            if r.header("if-none-match") == Some("\"small\"") {
                return (304, vec![], String::new());
            }
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                let etag = vec![("etag", "\"big\"".to_owned())];
                (200, etag, hosts_body("payments", &[1, 2, 3, 4]))
            } else {
                let etag = vec![("etag", "\"small\"".to_owned())];
                (200, etag, hosts_body("payments", &[1]))
            }
        })
        .await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let grace = Duration::from_millis(300);
        let mut watcher = HostWatcher::spawn(registry, payments(), fast_config(grace)).unwrap();
        assert_eq!(watcher.changed().await.len(), 4);
        let list = watcher.list();
        wait_until(
            "the smaller list is held back",
            Duration::from_secs(5),
            || list.status().held_back.is_some(),
        )
        .await;
        let held = watcher.status().held_back.unwrap();
        assert_eq!(held.hosts, 1);
        assert_eq!(watcher.current().len(), 4, "held back, not taken");
        assert_eq!(watcher.changed().await.len(), 1);
        assert!(Instant::now() >= held.since + grace);
        assert!(watcher.status().held_back.is_none());
        watcher.shutdown().await;
    }
}
