//! One node's gossip logic, independent of how messages travel: answering a peer's exchange,
//! running exchanges (anti-entropy rounds and prompt pushes), bootstrap readiness, and
//! publishing the peer table and metrics.
//!
//! An exchange is push-pull in up to three messages, like chitchat's SYN/SYN-ACK/ACK:
//! 1. the initiator sends its digest (and, for a push, its own new writes);
//! 2. the peer merges them and answers with its digest and what the initiator lacks;
//! 3. the initiator merges that and, if the peer's fresh digest shows it lacks anything,
//!    sends exactly that (repeating while either side's delta was cut at the size limit).
//!
//! Because step 3 uses the digest the peer just sent, a round ships only what the peer
//! lacks, not what this node guessed it might lack.
//!
//! Identity: a message that claims this node's own id is refused whole ([`MessageRefusal::OwnId`],
//! `409` over HTTP) before it touches anything, and an answer that claims it fails the
//! exchange. The initiator of a refused exchange learns that the address is this node (or a
//! node misconfigured with its id) and stops gossiping with it. What a message says about
//! other peers is only a hint: see [`super::peers`].
//!
//! Locks (the peer table's mutex) are held only to copy data in or out, never across an
//! `.await`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use discovery_api::PeersResponse;
use parking_lot::Mutex;

use super::messages::{
    records_that_fit, Sender, SyncRequest, SyncResponse, MAX_PEERS_PER_MESSAGE, MAX_RECORDS,
};
use super::peers::{Contact, PeerTable};
use super::settings::Settings;
use super::transport::{Transport, TransportError};
use crate::metrics::{Direction, PeerState, RecordFlow, RefusedMessage, RoundOutcome};
use crate::registry::{advance, behind, Delta, Digest, Micros, Registry, SECOND};
use crate::state::NodeState;
use crate::throttle::Throttle;

/// Where a node reads the time: the wall clock in production, a virtual one in tests and
/// benchmarks (one per node, to model clock skew).
pub type Clock = Arc<dyn Fn() -> Micros + Send + Sync>;

/// Peers per anti-entropy round.
pub const ROUND_FANOUT: usize = 3;
/// Most peers a new local write is pushed to at once; the rounds carry it further.
pub const PUSH_FANOUT: usize = 8;
/// Most messages of one exchange: bounds a catch-up to 64 pages of [`MAX_RECORDS`].
const MAX_PAGES: usize = 64;

/// What an exchange starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An anti-entropy round: digest first.
    Round,
    /// A prompt push: this node's own new writes ride on the first message.
    Push,
}

/// Why a node refused a peer's message (it changed nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageRefusal {
    /// The sender claims this node's own node id.
    #[error("the message claims this node's own node id")]
    OwnId,
}

/// The records a peer at `since` lacks, paged by count ([`MAX_RECORDS`]) and by size (what
/// the receiver's decoding bound admits), with the digest the delta's spans claim.
fn page(registry: &Registry, since: &Digest) -> (Delta, Digest) {
    let mut limit = MAX_RECORDS;
    loop {
        let (delta, held) = registry.delta_and_digest(since, limit);
        let fit = records_that_fit(&delta.records);
        // Rare (only records with very large tags): scan again for the prefix that fits.
        // Each pass shrinks the limit, so this ends.
        if fit == delta.records.len() || limit <= 1 {
            return (delta, held);
        }
        limit = fit;
    }
}

/// One node's gossip state over transport `T`: the peer table, its identity and clock, and
/// the [`NodeState`] it merges into.
pub struct Node<T> {
    shared: Arc<NodeState>,
    settings: Settings,
    transport: T,
    /// This node's base URL if it knows a routable one.
    addr: Option<String>,
    port: u16,
    table: Mutex<PeerTable>,
    clock: Clock,
    /// When the node stops waiting for a snapshot and reports ready anyway.
    warmup_ends: Micros,
    /// The own-origin seq at the last push.
    pushed_seq: AtomicU64,
    /// When refused records were last logged (on the node's clock).
    records_warned: Throttle,
    /// When a message in this node's own name was last logged.
    own_id_warned: Throttle,
    /// A node other than this one answering at this node's `--advertise` address.
    advertise_warned: Throttle,
}

impl<T: Transport> Node<T> {
    /// A node with the configured static peers. `addr` is this node's own base URL, when it
    /// has a routable one; `port` is what peers combine with our source address otherwise.
    pub fn new(
        shared: Arc<NodeState>,
        settings: Settings,
        transport: T,
        addr: Option<String>,
        port: u16,
        clock: Clock,
    ) -> Self {
        let now = clock();
        // `--advertise` is what the operator wants others to dial, not a proof that the
        // address is this node's: a mistake there must not hide a configured peer (the
        // peer itself says "this is us" if it is).
        let listen = addr.as_deref().filter(|_| settings.advertise.is_none());
        let mut table = PeerTable::new(settings.node.as_str(), listen, &settings.peers, now);
        table.speaking(settings.scheme);
        let warmup_ends = now + settings.warmup.as_micros() as Micros;
        let node = Node {
            shared,
            settings,
            transport,
            addr,
            port,
            table: Mutex::new(table),
            clock,
            warmup_ends,
            pushed_seq: AtomicU64::new(0),
            records_warned: Throttle::new(),
            own_id_warned: Throttle::new(),
            advertise_warned: Throttle::new(),
        };
        node.publish_table();
        node
    }

    /// The shared state this node gossips for.
    pub fn shared(&self) -> &Arc<NodeState> {
        &self.shared
    }

    /// What the wiring told this node.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The time on this node's clock.
    pub fn now(&self) -> Micros {
        (self.clock)()
    }

    fn interval(&self) -> Micros {
        self.settings.gossip_interval.as_micros() as Micros
    }

    fn sender(&self) -> Sender {
        Sender {
            node_id: self.settings.node.to_string(),
            addr: self.addr.clone(),
            port: self.port,
            ready: self.shared.is_ready(),
        }
    }

    fn live_addrs(&self) -> Vec<String> {
        let mut addrs = self.table.lock().live_addrs(MAX_PEERS_PER_MESSAGE - 1);
        addrs.extend(self.addr.clone());
        addrs
    }

    /// Merges a peer's delta, wakes long polls and records metrics. `peer` names the sender
    /// for the log line when records are refused (built only then).
    fn merge(&self, delta: Delta, now: Micros, peer: impl FnOnce() -> String) {
        let metrics = &self.shared.metrics;
        let received = delta.records.len() as u64;
        if received == 0 && delta.spans.is_empty() {
            return;
        }
        let applied = self.shared.registry.apply(delta, now);
        self.shared.publish(&applied.changes);
        metrics.gossip_records(RecordFlow::received, received);
        let refused = applied.refusals.total();
        if refused > 0 {
            metrics.gossip_records(RecordFlow::refused, refused as u64);
            for (reason, n) in applied.refusals.iter() {
                metrics.refused(reason, n as u64);
            }
            warn_refused(&self.records_warned, &peer(), received, &applied, now);
        }
        // Only records taken count: a refused one (say, stamped in year 10000) says nothing of
        // how far behind this node is.
        if let Some(newest) = applied.newest {
            let lag = now.saturating_sub(newest) as f64 / SECOND as f64;
            metrics.convergence_lag_seconds.set(lag);
        }
    }

    /// Answers a peer's exchange (the receiving side of step 1). `remote` is the
    /// connection's source address, used when the sender has no routable address of its own
    /// and to name the sender in logs. A message claiming this node's id changes nothing.
    pub fn handle(
        &self,
        req: SyncRequest,
        remote: Option<SocketAddr>,
    ) -> Result<SyncResponse, MessageRefusal> {
        if req.from.node_id == self.settings.node.as_str() {
            self.shared
                .metrics
                .gossip_message_refused(RefusedMessage::own_id);
            if self.own_id_warned.allow(self.now() / SECOND) {
                tracing::warn!(
                    source = ?remote,
                    claimed_addr = req.from.addr.as_deref().unwrap_or(""),
                    "refused a gossip message that claims this node's own node id (forged, or this node's own address among its peers; at most one line every 10 s)"
                );
            }
            return Err(MessageRefusal::OwnId);
        }
        let now = self.now();
        let from = &req.from;
        self.merge(req.delta, now, || match remote {
            Some(addr) => format!("{} at {addr}", from.node_id),
            None => from.node_id.clone(),
        });
        let (delta, digest) = page(&self.shared.registry, &req.digest);
        self.shared
            .metrics
            .gossip_records(RecordFlow::sent, delta.records.len() as u64);
        if let Some(addr) = sender_addr(&req.from, remote.map(|r| r.ip()), self.settings.scheme) {
            // The requester will hold what this answer carries: remember it that way, so a
            // push does not send it again. A lost answer is repaired by the next round,
            // which never relies on this guess.
            let mut theirs = req.digest;
            advance(&mut theirs, &delta.spans);
            let behind = behind(&digest, &theirs);
            let mut table = self.table.lock();
            table.learn(&req.peers, now);
            // A claim, not a proof: see `PeerTable::claimed`.
            table.claimed(
                &addr,
                Contact {
                    node_id: &req.from.node_id,
                    digest: theirs,
                    behind,
                    ready: req.from.ready,
                },
                now,
            );
        }
        let response = SyncResponse {
            from: self.sender(),
            digest,
            delta,
            peers: self.live_addrs(),
        };
        self.publish_table();
        Ok(response)
    }

    /// The first delta of an exchange.
    fn opening(&self, addr: &str, mode: Mode) -> Delta {
        if mode == Mode::Round {
            return Delta::default();
        }
        let Some(known) = self.table.lock().get(addr).and_then(|p| p.digest.clone()) else {
            return Delta::default();
        };
        // Only this node's own writes: the peer gets everything else from their origins
        // or from the next round, and guessing at it would ship duplicates.
        let registry = &self.shared.registry;
        let own = registry.origin();
        let mut since: Digest = registry
            .digest()
            .into_keys()
            .map(|o| (o, u64::MAX))
            .collect();
        since.insert(own.clone(), known.get(own).copied().unwrap_or(0));
        page(registry, &since).0
    }

    /// Whether `addr` is the address `--advertise` gives for this node.
    fn is_advertised(&self, addr: &str) -> bool {
        self.settings.advertise.is_some() && self.addr.as_deref() == Some(addr)
    }

    /// Runs one exchange with the peer at `addr`. The caller has marked it busy.
    async fn run_exchange(&self, addr: &str, mode: Mode) -> Result<(), TransportError> {
        let metrics = &self.shared.metrics;
        let registry = &self.shared.registry;
        let started = self.now();
        let mut delta = self.opening(addr, mode);
        let mut digest = registry.digest();
        for _ in 0..MAX_PAGES {
            metrics.gossip_records(RecordFlow::sent, delta.records.len() as u64);
            let req = SyncRequest {
                from: self.sender(),
                digest,
                delta,
                peers: self.live_addrs(),
            };
            let exchanged = match self.transport.exchange(addr, req).await {
                Ok(x) => x,
                Err(TransportError::SameId) => {
                    if self.is_advertised(addr) {
                        // One --peers list shared by every node: expected, not a warning.
                        tracing::info!(
                            peer = addr,
                            "--peers holds this node's own --advertise address; not gossiping with it"
                        );
                    } else {
                        tracing::warn!(
                            peer = addr,
                            "this peer address refused our message as carrying its own node id: it is this node (or shares its --node-id); no longer gossiping with it"
                        );
                    }
                    self.table.lock().is_us(addr);
                    return Err(TransportError::SameId);
                }
                Err(e @ TransportError::WrongName(_)) => {
                    self.table.lock().misnamed(addr, &e.to_string(), self.now());
                    return Err(e);
                }
                Err(e) => {
                    self.table.lock().failed(addr, &e.to_string());
                    return Err(e);
                }
            };
            metrics.gossip_bytes(Direction::sent, exchanged.sent as u64);
            metrics.gossip_bytes(Direction::received, exchanged.received as u64);
            let response = exchanged.response;
            if response.from.node_id == self.settings.node.as_str() {
                // Only this node may speak for its id: nothing of this answer is merged.
                let e =
                    TransportError::BadResponse("the answer claims this node's own node id".into());
                self.table.lock().failed(addr, &e.to_string());
                return Err(e);
            }
            let now = self.now();
            if self.is_advertised(addr) && self.advertise_warned.allow(now / SECOND) {
                tracing::warn!(
                    peer = addr,
                    node = response.from.node_id.as_str(),
                    "this node's --advertise address reaches another node: peers looking for this node dial that one; fix --advertise (at most one line every 10 s)"
                );
            }
            let more_for_us = response.delta.truncated;
            self.merge(response.delta, now, || addr.to_owned());
            // What the peer lacks, and this node's digest after the merge for the next page.
            let (next, held) = page(registry, &response.digest);
            let behind = behind(&held, &response.digest);
            {
                let mut table = self.table.lock();
                table.learn(&response.peers, now);
                table.succeeded(
                    addr,
                    Contact {
                        node_id: &response.from.node_id,
                        digest: response.digest.clone(),
                        behind,
                        ready: response.from.ready,
                    },
                    now,
                );
            }
            if !more_for_us && response.from.ready {
                if !self.shared.bootstrapped() {
                    tracing::info!(peer = addr, "pulled a full snapshot from a ready peer");
                    self.shared.set_ready();
                }
                self.shared.synced(started, addr);
            }
            (delta, digest) = (next, held);
            if delta.records.is_empty() && delta.spans.is_empty() && !more_for_us {
                return Ok(());
            }
        }
        Ok(())
    }

    /// An exchange with `addr`, or nothing if one is in flight (a push is then owed and
    /// follows it). Returns whether it succeeded.
    pub async fn exchange(&self, addr: &str, mode: Mode) -> bool {
        if !self
            .table
            .lock()
            .begin(addr, mode == Mode::Push, self.now())
        {
            return false;
        }
        let mut mode = mode;
        let ok = loop {
            let result = self.run_exchange(addr, mode).await;
            let outcome = if result.is_ok() {
                RoundOutcome::ok
            } else {
                RoundOutcome::failed
            };
            self.shared.metrics.gossip_round(outcome);
            if let Err(e) = &result {
                tracing::debug!(peer = addr, error = %e, "gossip exchange failed");
            }
            if self.table.lock().end(addr) && result.is_ok() {
                // Own writes arrived while this exchange was in flight.
                if self.table.lock().begin(addr, true, self.now()) {
                    mode = Mode::Push;
                    continue;
                }
            }
            break result.is_ok();
        };
        self.publish_table();
        ok
    }

    /// The peers of the next anti-entropy round (every peer while not ready).
    pub fn round_targets(&self) -> Vec<String> {
        let everyone = !self.shared.is_ready();
        self.table
            .lock()
            .round_targets(ROUND_FANOUT, everyone, self.interval(), self.now())
    }

    /// Seeds this node's random choice of peers (see [`PeerTable::seed`]): for simulations
    /// that must repeat.
    pub fn seed_peer_choice(&self, seed: u64) {
        self.table.lock().seed(seed);
    }

    /// The peers that new own writes go to, or none when there is nothing new.
    pub fn push_targets(&self) -> Vec<String> {
        let seq = self.shared.registry.own_seq();
        if self.pushed_seq.fetch_max(seq, Ordering::Relaxed) >= seq {
            return Vec::new();
        }
        self.table.lock().push_targets(PUSH_FANOUT)
    }

    /// One anti-entropy round, exchanges one after another (tests and benchmarks drive
    /// nodes with this; the running loop spawns the exchanges instead).
    pub async fn round(&self) {
        for addr in self.round_targets() {
            self.exchange(&addr, Mode::Round).await;
        }
        self.check_warmup();
    }

    /// Pushes new own writes to peers, one after another (see [`Node::round`]).
    pub async fn push(&self) {
        for addr in self.push_targets() {
            self.exchange(&addr, Mode::Push).await;
        }
    }

    /// Becomes ready when the warmup is over without a snapshot (SPEC 4.4).
    pub fn check_warmup(&self) {
        if !self.shared.bootstrapped() && self.now() >= self.warmup_ends {
            tracing::info!(
                hosts = self.shared.registry.host_count(),
                "no ready peer gave a snapshot within --warmup; serving what heartbeats brought"
            );
            self.shared.set_ready();
        }
    }

    /// Replaces the DNS-sourced peers.
    pub fn resolved(&self, addrs: &[String]) {
        self.table.lock().resolved(addrs, self.now());
        self.publish_table();
    }

    /// Adds peers by address, as if another node had named them.
    pub fn learn(&self, addrs: &[String]) {
        self.table.lock().learn(addrs, self.now());
    }

    /// Publishes the peer table to `/v1/peers` and the peer metrics.
    fn publish_table(&self) {
        let now = self.now();
        let (infos, (alive, suspect, dead, unverified), behind) = {
            let table = self.table.lock();
            (table.infos(now), table.counts(), table.max_behind())
        };
        let metrics = &self.shared.metrics;
        for (state, n) in [
            (PeerState::alive, alive),
            (PeerState::suspect, suspect),
            (PeerState::dead, dead),
            (PeerState::unverified, unverified),
        ] {
            metrics.set_peers(state, n);
        }
        metrics.replication_backlog.set(behind as i64);
        self.shared.peers.store(Arc::new(PeersResponse {
            node_id: self.settings.node.to_string(),
            ready: self.shared.is_ready(),
            gossip_authenticated: self.settings.authenticated(),
            address: self.addr.clone(),
            tls_certificate_not_after: None,
            peers: infos,
        }));
    }

    /// Per peer address, its digest at the last exchange (tests).
    #[cfg(test)]
    pub(crate) fn known_digests(&self) -> std::collections::HashMap<String, Option<Digest>> {
        let table = self.table.lock();
        table
            .infos(0)
            .into_iter()
            .map(|i| {
                let d = table.get(&i.address).and_then(|p| p.digest.clone());
                (i.address, d)
            })
            .collect()
    }
}

/// Logs a message's refused records with the sending peer, at most one line every
/// [`crate::throttle::EVERY_SECS`] at `warn` (a hostile peer must not flood the log) and the
/// rest at `debug`; `discovery_gossip_records_refused_total` counts every one.
fn warn_refused(
    warned: &Throttle,
    peer: &str,
    received: u64,
    applied: &crate::registry::Applied,
    now: Micros,
) {
    let reasons = applied
        .refusals
        .iter()
        .map(|(reason, n)| format!("{}={n}", reason.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    let refused = applied.refusals.total();
    if warned.allow(now / SECOND) {
        tracing::warn!(peer, received, refused, %reasons, "refused records from a peer");
    } else {
        tracing::debug!(peer, received, refused, %reasons, "refused records from a peer");
    }
}

/// The base URL a sender can be reached at: its own (in [`super::peers::peer_url`]'s
/// spelling), or its source address and port.
fn sender_addr(from: &Sender, remote: Option<IpAddr>, scheme: &str) -> Option<String> {
    if let Some(addr) = &from.addr {
        return super::peers::peer_url(addr);
    }
    // `SocketAddr`'s Display brackets an IPv6 address.
    Some(format!(
        "{scheme}://{}",
        SocketAddr::new(remote?, from.port)
    ))
}
