//! The peer table: every peer this node knows, where it came from, how exchanges with it went
//! and what it held at the last one. Pure bookkeeping: no IO, `now` is passed in.
//!
//! States follow memberlist's idea in a simpler form: a peer is `alive` after a successful
//! exchange, `suspect` after a failure (or before the first contact), `dead` after
//! [`DEAD_AFTER_FAILURES`] failures in a row. Dead peers are probed only every
//! [`DEAD_PROBE_ROUNDS`] rounds, so a cluster with a lost node does not spend its rounds on it,
//! and learned peers that stay dead are forgotten.

use std::collections::{HashMap, HashSet};

use discovery_api::{PeerInfo, PeerState};
use rand::seq::SliceRandom;

use crate::config::normalize_peer;
use crate::registry::{rfc3339, Digest, Micros, SECOND};

/// Consecutive failures after which a peer is dead.
pub const DEAD_AFTER_FAILURES: u64 = 5;
/// A dead peer is probed once per this many gossip intervals.
pub const DEAD_PROBE_ROUNDS: u64 = 10;
/// A learned peer dead this long is forgotten.
const FORGET_AFTER: Micros = 600 * SECOND;
/// Most peers the table holds: learned addresses beyond it are ignored.
const MAX_PEERS: usize = 256;

/// Where the node learned of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--peers`.
    Static,
    /// `--peers-dns`, at the last resolution.
    Dns,
    /// Another node named it, or it contacted us.
    Learned,
}

/// One peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its base URL.
    pub addr: String,
    /// How it got here.
    pub source: Source,
    /// Its node id, once it answered.
    pub node_id: Option<String>,
    /// Alive, suspect or dead.
    pub state: PeerState,
    /// Consecutive failed exchanges.
    pub failures: u64,
    /// The last successful exchange (either direction).
    pub last_success: Option<Micros>,
    /// When this node last tried to reach it, for dead-peer probing.
    pub last_attempt: Option<Micros>,
    /// Its digest at the last exchange (what a push may skip).
    pub digest: Option<Digest>,
    /// How many changes this node held that the peer lacked, at the last exchange.
    pub behind: u64,
    /// Whether it said it was ready.
    pub ready: bool,
    /// An exchange with it is in flight.
    busy: bool,
    /// A push was wanted while it was busy: push again when the exchange ends.
    push_pending: bool,
    /// When it was added or last heard of, for forgetting learned peers.
    last_heard: Micros,
}

impl Peer {
    fn new(addr: String, source: Source, now: Micros) -> Self {
        Peer {
            addr,
            source,
            node_id: None,
            state: PeerState::Suspect,
            failures: 0,
            last_success: None,
            last_attempt: None,
            digest: None,
            behind: 0,
            ready: false,
            busy: false,
            push_pending: false,
            last_heard: now,
        }
    }
}

/// What an exchange learned about the peer.
pub struct Contact<'a> {
    /// Its node id.
    pub node_id: &'a str,
    /// Its digest.
    pub digest: Digest,
    /// How far behind this node it is.
    pub behind: u64,
    /// Whether it is ready.
    pub ready: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct PeerTable {
    own_id: String,
    peers: HashMap<String, Peer>,
    /// Addresses that turned out to be this node.
    own_addrs: HashSet<String>,
}

impl PeerTable {
    /// A table with the static peers; `own_addr` (when known) is never added.
    pub fn new(own_id: &str, own_addr: Option<&str>, statics: &[String], now: Micros) -> Self {
        let mut table = PeerTable {
            own_id: own_id.to_owned(),
            peers: HashMap::new(),
            own_addrs: own_addr.map(|a| a.to_owned()).into_iter().collect(),
        };
        for addr in statics {
            table.add(addr, Source::Static, now);
        }
        table
    }

    fn add(&mut self, addr: &str, source: Source, now: Micros) {
        let Ok(addr) = normalize_peer(addr) else {
            return;
        };
        if self.own_addrs.contains(&addr) {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&addr) {
            // A configured source outranks "learned".
            if source != Source::Learned {
                peer.source = source;
            }
            peer.last_heard = now;
            return;
        }
        if self.peers.len() >= MAX_PEERS {
            return;
        }
        self.peers
            .insert(addr.clone(), Peer::new(addr, source, now));
    }

    /// Adds peers another node named.
    pub fn learn<'a>(&mut self, addrs: impl IntoIterator<Item = &'a String>, now: Micros) {
        for addr in addrs {
            self.add(addr, Source::Learned, now);
        }
    }

    /// Replaces the DNS-sourced peers with a fresh resolution. Peers that left it become
    /// "learned", so they are forgotten if they stay dead.
    pub fn resolved(&mut self, addrs: &[String], now: Micros) {
        let fresh: HashSet<String> = addrs
            .iter()
            .filter_map(|a| normalize_peer(a).ok())
            .collect();
        for peer in self.peers.values_mut() {
            if peer.source == Source::Dns && !fresh.contains(&peer.addr) {
                peer.source = Source::Learned;
            }
        }
        for addr in &fresh {
            self.add(addr, Source::Dns, now);
        }
    }

    /// The peer at `addr`.
    pub fn get(&self, addr: &str) -> Option<&Peer> {
        self.peers.get(addr)
    }

    /// Marks an exchange with `addr` as started; `false` (and, for a push, a note to push
    /// again) when one is already in flight.
    pub fn begin(&mut self, addr: &str, push: bool, now: Micros) -> bool {
        let Some(peer) = self.peers.get_mut(addr) else {
            return false;
        };
        if peer.busy {
            peer.push_pending |= push;
            return false;
        }
        peer.busy = true;
        peer.last_attempt = Some(now);
        true
    }

    /// Marks the exchange as over; returns whether a push is owed to the peer.
    pub fn end(&mut self, addr: &str) -> bool {
        match self.peers.get_mut(addr) {
            Some(peer) => {
                peer.busy = false;
                std::mem::take(&mut peer.push_pending)
            }
            None => false,
        }
    }

    /// Records a successful exchange with the peer at `addr` (initiated by either side).
    pub fn succeeded(&mut self, addr: &str, contact: Contact<'_>, now: Micros) {
        if contact.node_id == self.own_id {
            self.own_addrs.insert(addr.to_owned());
            self.peers.remove(addr);
            return;
        }
        self.add(addr, Source::Learned, now);
        let Some(peer) = self.peers.get_mut(addr) else {
            return;
        };
        peer.node_id = Some(contact.node_id.to_owned());
        if peer.failures > 0 {
            tracing::info!(
                peer = addr,
                node = contact.node_id,
                "gossip peer answers again"
            );
        }
        peer.state = PeerState::Alive;
        peer.failures = 0;
        peer.last_success = Some(now);
        peer.last_heard = now;
        peer.digest = Some(contact.digest);
        peer.behind = contact.behind;
        peer.ready = contact.ready;
        let source = peer.source;
        // The same node under a second address (a name and its IP, say): keep one entry,
        // preferring a configured address over a learned one.
        let twins: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.addr != addr && p.node_id.as_deref() == Some(contact.node_id))
            .map(|p| (p.addr.clone(), p.source))
            .filter(|(_, s)| *s == Source::Learned || source != Source::Learned)
            .map(|(a, _)| a)
            .collect();
        for twin in twins {
            self.peers.remove(&twin);
        }
        if source == Source::Learned
            && self.peers.values().any(|p| {
                p.addr != addr
                    && p.source != Source::Learned
                    && p.node_id.as_deref() == Some(contact.node_id)
            })
        {
            self.peers.remove(addr);
        }
    }

    /// Records a failed exchange.
    pub fn failed(&mut self, addr: &str) {
        if let Some(peer) = self.peers.get_mut(addr) {
            peer.failures += 1;
            let state = if peer.failures >= DEAD_AFTER_FAILURES {
                PeerState::Dead
            } else {
                PeerState::Suspect
            };
            // Operators hear of every change for the worse once, and of the first failure of
            // a peer that answered before (a peer still starting up is no news).
            let news = match state {
                PeerState::Dead => peer.state != PeerState::Dead,
                _ => peer.failures == 1 && peer.last_success.is_some(),
            };
            if news {
                tracing::warn!(
                    peer = addr,
                    node = peer.node_id.as_deref().unwrap_or("unknown"),
                    failures = peer.failures,
                    "gossip peer is now {}",
                    if state == PeerState::Dead {
                        "dead"
                    } else {
                        "suspect"
                    }
                );
            }
            peer.state = state;
        }
    }

    /// Peers for one anti-entropy round: `fanout` random live ones (every one while the
    /// node is not ready, to find a snapshot fast), plus dead ones due for a probe.
    pub fn round_targets(
        &mut self,
        fanout: usize,
        everyone: bool,
        interval: Micros,
        now: Micros,
    ) -> Vec<String> {
        self.peers.retain(|_, p| {
            !(p.source == Source::Learned
                && p.state == PeerState::Dead
                && now.saturating_sub(p.last_success.unwrap_or(p.last_heard)) > FORGET_AFTER)
        });
        let mut live: Vec<String> = self
            .peers
            .values()
            .filter(|p| !p.busy && p.state != PeerState::Dead)
            .map(|p| p.addr.clone())
            .collect();
        live.shuffle(&mut rand::rng());
        if !everyone {
            live.truncate(fanout);
        }
        let probe_every = interval.saturating_mul(DEAD_PROBE_ROUNDS);
        let dead = self.peers.values().filter(|p| {
            !p.busy
                && p.state == PeerState::Dead
                && p.last_attempt
                    .is_none_or(|at| now.saturating_sub(at) >= probe_every)
        });
        live.extend(dead.map(|p| p.addr.clone()));
        live
    }

    /// Peers a new local write is pushed to: up to `fanout` random live ones.
    pub fn push_targets(&self, fanout: usize) -> Vec<String> {
        let mut live: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.state != PeerState::Dead)
            .map(|p| p.addr.clone())
            .collect();
        live.shuffle(&mut rand::rng());
        live.truncate(fanout);
        live
    }

    /// Addresses of live peers, to tell other nodes about.
    pub fn live_addrs(&self, limit: usize) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.state == PeerState::Alive)
            .map(|p| p.addr.clone())
            .collect();
        addrs.sort();
        addrs.truncate(limit);
        addrs
    }

    /// Whether any peer is known at all.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Counts by state: (alive, suspect, dead).
    pub fn counts(&self) -> (i64, i64, i64) {
        let mut counts = (0, 0, 0);
        for p in self.peers.values() {
            match p.state {
                PeerState::Alive => counts.0 += 1,
                PeerState::Suspect => counts.1 += 1,
                PeerState::Dead => counts.2 += 1,
            }
        }
        counts
    }

    /// The most changes any live peer lacked at its last exchange.
    pub fn max_behind(&self) -> u64 {
        self.peers
            .values()
            .filter(|p| p.state != PeerState::Dead)
            .map(|p| p.behind)
            .max()
            .unwrap_or(0)
    }

    /// The rows of `GET /v1/peers`, sorted by address.
    pub fn infos(&self, now: Micros) -> Vec<PeerInfo> {
        let mut rows: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|p| PeerInfo {
                address: p.addr.clone(),
                node_id: p.node_id.clone(),
                state: p.state,
                last_success: p.last_success.map(rfc3339),
                last_success_age_secs: p
                    .last_success
                    .map(|t| now.saturating_sub(t) as f64 / SECOND as f64),
                behind: p.behind,
                failures: p.failures,
            })
            .collect();
        rows.sort_by(|a, b| a.address.cmp(&b.address));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str) -> Contact<'_> {
        Contact {
            node_id: id,
            digest: Digest::new(),
            behind: 0,
            ready: true,
        }
    }

    #[test]
    fn peers_go_suspect_then_dead_and_alive_again_on_success() {
        let mut t = PeerTable::new("me", None, &["http://b:1".into()], 0);
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Suspect);
        t.succeeded("http://b:1", contact("b"), 5);
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Alive);
        t.failed("http://b:1");
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Suspect);
        for _ in 1..DEAD_AFTER_FAILURES {
            t.failed("http://b:1");
        }
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Dead);
        t.succeeded("http://b:1", contact("b"), 9);
        let b = t.get("http://b:1").unwrap();
        assert_eq!(
            (b.state, b.failures, b.last_success),
            (PeerState::Alive, 0, Some(9))
        );
    }

    #[test]
    fn dead_peers_are_probed_less_often_and_learned_ones_are_forgotten() {
        let mut t = PeerTable::new("me", None, &["http://b:1".into()], 0);
        t.learn(&["http://c:1".to_owned()], 0);
        for addr in ["http://b:1", "http://c:1"] {
            for _ in 0..DEAD_AFTER_FAILURES {
                t.failed(addr);
            }
            assert!(t.begin(addr, false, 0));
            t.end(addr);
        }
        assert!(t.round_targets(3, false, SECOND, SECOND).is_empty());
        let due = t.round_targets(3, false, SECOND, 10 * SECOND);
        assert_eq!(due.len(), 2);
        t.round_targets(3, false, SECOND, FORGET_AFTER + SECOND);
        assert!(t.get("http://c:1").is_none(), "learned and dead: forgotten");
        assert!(t.get("http://b:1").is_some(), "configured: kept");
    }

    #[test]
    fn an_address_that_answers_with_our_own_id_is_dropped_for_good() {
        let mut t = PeerTable::new("me", None, &["http://self:1".into()], 0);
        t.succeeded("http://self:1", contact("me"), 1);
        assert!(t.is_empty());
        t.learn(&["http://self:1".to_owned()], 2);
        assert!(t.is_empty());
    }

    #[test]
    fn a_node_known_under_two_addresses_keeps_its_configured_one() {
        let mut t = PeerTable::new("me", None, &["http://b-name:1".into()], 0);
        t.learn(&["http://10.0.0.2:1".to_owned()], 0);
        t.succeeded("http://b-name:1", contact("b"), 1);
        t.succeeded("http://10.0.0.2:1", contact("b"), 2);
        assert!(t.get("http://10.0.0.2:1").is_none());
        assert!(t.get("http://b-name:1").is_some());
    }

    #[test]
    fn a_busy_peer_is_skipped_and_owed_a_push() {
        let mut t = PeerTable::new("me", None, &["http://b:1".into()], 0);
        assert!(t.begin("http://b:1", false, 0));
        assert!(!t.begin("http://b:1", true, 0));
        assert!(t.round_targets(3, true, SECOND, 0).is_empty());
        assert!(t.end("http://b:1"));
        assert!(!t.end("http://b:1"));
    }
}
