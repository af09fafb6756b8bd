//! The state every part of a running node shares: the registry, the long-poll wakers, metrics,
//! readiness and the latest peer table. One `Arc<NodeState>` is built by `server.rs` and handed
//! to the HTTP layer and the gossip layer, which never talk to each other directly.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use discovery_api::PeersResponse;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::long_poll::LongPollWakers;
use crate::metrics::Metrics;
use crate::registry::{Change, Micros, Registry, SECOND};
use crate::stall::{Stall, StallWatch};

/// One node's state, shared as an `Arc` by the HTTP layer, the gossip layer and the sweeper.
pub struct NodeState {
    pub registry: Registry,
    /// Wakes long polls when a service's host list changes.
    pub(crate) wakers: LongPollWakers,
    /// Counters and gauges for `/metrics`.
    pub(crate) metrics: Metrics,
    /// Validated configuration.
    pub(crate) config: Config,
    /// Set once the node holds a usable state (SPEC 4.4).
    ready: AtomicBool,
    /// Notices that this node itself was stalled, and holds reads and expiry while it
    /// re-syncs (see [`crate::stall`]).
    pub(crate) stall: StallWatch,
    /// The gossip layer's view of the cluster, republished after every round.
    pub(crate) peers: ArcSwap<PeersResponse>,
    /// Long polls waiting now.
    long_polls: AtomicUsize,
    /// Cancelled when the node shuts down: background tasks and long polls end.
    pub(crate) shutdown: CancellationToken,
    /// Poked by every [`NodeState::publish`] with changes: the gossip layer pushes new local
    /// writes to peers at once instead of waiting for its next round.
    pub local_writes: Notify,
    /// Wakes the sweeper at once: a re-sync after a stall completed, and the sweeper ends it
    /// once it has swept (see [`crate::stall::StallWatch::sync_done`]).
    pub(crate) sweep_now: Notify,
    /// Counts every routing change of any service, and readiness turning on: what xDS
    /// streams, which watch many services each, wake on (`xds::pump` coalesces it).
    routing_changes: watch::Sender<u64>,
    /// The open xDS streams (`GET /v1/xds/clients`).
    pub(crate) xds_clients: crate::xds::Clients,
    /// The last `GET /v1/prometheus/targets` answer and the count of routing changes it was
    /// built at; the lock lets one request at a time build a new one.
    pub(crate) prometheus_answer: tokio::sync::Mutex<Option<(u64, bytes::Bytes)>>,
}

/// A long poll's place under the limit; dropping it frees the place.
pub(crate) struct LongPollSlot<'a>(&'a NodeState);

impl Drop for LongPollSlot<'_> {
    fn drop(&mut self) {
        self.0.long_polls.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.long_polls.dec();
    }
}

impl NodeState {
    /// Builds the shared state; the node starts ready only when it needs no warmup.
    pub fn new(config: Config) -> Self {
        let clustered = !config.cluster.peers.is_empty() || config.cluster.peers_dns.is_some();
        let ready = !clustered && config.cluster.warmup.is_zero();
        let peers = PeersResponse {
            node_id: config.registry.node.to_string(),
            ready,
            gossip_authenticated: config.gossip_authenticated(),
            address: None,
            tls_certificate_not_after: None,
            peers: Vec::new(),
        };
        let stall = StallWatch::new(
            config.cluster.gossip_interval.as_micros() as Micros,
            u64::from(config.registry.expiry_grace) * SECOND,
        );
        NodeState {
            stall,
            registry: Registry::new(config.registry.clone()),
            wakers: LongPollWakers::default(),
            metrics: Metrics::new(),
            config,
            ready: AtomicBool::new(ready),
            peers: ArcSwap::from_pointee(peers),
            long_polls: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            local_writes: Notify::new(),
            sweep_now: Notify::new(),
            routing_changes: watch::Sender::new(0),
            xds_clients: crate::xds::Clients::default(),
            prometheus_answer: tokio::sync::Mutex::new(None),
        }
    }

    /// A place for one more long poll, or `None` at the limit (`--max-long-polls`).
    pub(crate) fn long_poll_slot(&self) -> Option<LongPollSlot<'_>> {
        let max = self.config.limits.max_long_polls;
        self.long_polls
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.long_polls.inc();
        Some(LongPollSlot(self))
    }

    /// Whether the node serves host lists: it holds a usable state and is not re-syncing
    /// after a stall. Looks for a stall first, so that a read arriving the moment the node
    /// resumes is not served from the state it held when it stopped.
    pub(crate) fn is_ready(&self) -> bool {
        if !self.bootstrapped() {
            return false;
        }
        let now = self.look_for_stall();
        !self.stall.resyncing(now)
    }

    /// Whether writes are refused after a stall (see [`StallWatch::writes_held`]), looking
    /// for a stall first: the requests read the moment the node resumes are the ones that
    /// waited while it was stopped.
    pub(crate) fn writes_held(&self) -> bool {
        let now = self.look_for_stall();
        self.stall.writes_held(now)
    }

    /// Notices (and reports) a stall at the current time, which it returns.
    fn look_for_stall(&self) -> Micros {
        let now = now();
        if let Some(stall) = self.stall.look(now, || self.clustered()) {
            self.stalled(stall);
        }
        now
    }

    /// Whether this node has peers to re-sync with: configured, or learned since it started.
    pub(crate) fn clustered(&self) -> bool {
        let cluster = &self.config.cluster;
        !cluster.peers.is_empty()
            || cluster.peers_dns.is_some()
            || !self.peers.load().peers.is_empty()
    }

    /// Whether the node has held a usable state since it started (SPEC 4.4), re-sync or not.
    pub(crate) fn bootstrapped(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Logs and counts a stall this node noticed in its own ticks.
    pub(crate) fn stalled(&self, stall: Stall) {
        self.metrics.stalls.inc();
        let gap_secs = stall.gap as f64 / SECOND as f64;
        if stall.resync {
            tracing::warn!(
                gap_secs,
                "this node was stalled (its ticks stopped): re-syncing with a peer before serving reads again; expiring nothing meanwhile"
            );
        } else {
            tracing::warn!(
                gap_secs,
                hold_secs = self.config.registry.expiry_grace,
                "this node was stalled (its ticks stopped): expiring nothing for a while so hosts can heartbeat again"
            );
        }
    }

    /// An exchange with a ready peer, started at `started`, completed: if it can end a
    /// re-sync after a stall, wakes the sweeper, which sweeps and then ends it
    /// ([`NodeState::end_resync`]).
    pub(crate) fn synced(&self, started: Micros, peer: &str) {
        if self.stall.sync_done(started) {
            tracing::debug!(peer, "re-synced with a ready peer after a stall");
            self.sweep_now.notify_one();
        }
    }

    /// Ends a re-sync after a stall (the sweeper, once it swept): reads are served again.
    pub(crate) fn end_resync(&self, started: Micros) {
        if self.stall.synced(started) {
            self.poke();
            tracing::info!("re-synced with a ready peer after a stall; serving reads again");
        }
    }

    /// Marks the node ready (once it holds a usable state).
    pub(crate) fn set_ready(&self) {
        if !self.ready.swap(true, Ordering::Relaxed) {
            self.poke();
            tracing::info!(hosts = self.registry.host_count(), "node is ready");
        }
    }

    /// A receiver of the count of routing changes (see the field `routing_changes`).
    pub(crate) fn routing_changes(&self) -> watch::Receiver<u64> {
        self.routing_changes.subscribe()
    }

    /// The count of routing changes so far: what an answer built from the registry was
    /// current at.
    pub(crate) fn routing_generation(&self) -> u64 {
        *self.routing_changes.borrow()
    }

    /// Wakes the watchers of all routing changes: after changes, or when what may be sent
    /// changed without one (the node became ready).
    pub(crate) fn poke(&self) {
        self.routing_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes whoever waits on these services.
    pub fn publish(&self, changes: &[Change]) {
        for change in changes {
            self.wakers.notify(change);
        }
        if !changes.is_empty() {
            self.poke();
            self.local_writes.notify_one();
        }
    }
}

/// The wall clock in microseconds since the epoch: the only place the server reads it.
pub(crate) fn now() -> Micros {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}
