//! The peer table: every peer this node knows, where it came from, how exchanges with it went
//! and what it held at the last one. Pure bookkeeping: no IO, `now` is passed in.
//!
//! States follow memberlist's idea in a simpler form: a peer is `alive` after a successful
//! exchange, `suspect` after a failure (or before the first contact), `dead` after
//! [`DEAD_AFTER_FAILURES`] failures in a row. Dead peers are probed only every
//! [`DEAD_PROBE_ROUNDS`] rounds, so a cluster with a lost node does not spend its rounds on it,
//! and learned peers that stay dead are forgotten. A node whose trusted peers are all dead (cut
//! off by a partition) probes them every round: it has no round to spare them from, and it
//! catches up within a round of the heal instead of serving its old lists for up to
//! [`DEAD_PROBE_ROUNDS`] more.
//!
//! Trust (SPEC 4.2: peers are not trusted more than clients). An address named in a message,
//! or claimed by a message's sender, is **unverified** until an exchange this node starts
//! with it is answered: anyone can name anything. Unverified peers are kept apart: at most
//! [`MAX_LEARNED_PER_MESSAGE`] new ones from one message, at most [`MAX_UNVERIFIED`] in the
//! table, at most [`UNVERIFIED_PER_ROUND`] probed per round (on top of the round's fanout),
//! never pushed to, never told to other nodes, and dropped at their first failed exchange.
//! They never take the slot of a configured or verified peer, and a message cannot change
//! what the table says about a verified peer: only that peer's own answers can. So one
//! forged message cannot change who a node gossips with.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};

use discovery_api::{PeerInfo, PeerState};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;

use super::messages::MAX_PEER_URL_LEN;
use crate::registry::{rfc3339, Digest, Micros, SECOND};
use crate::throttle::Throttle;

/// Consecutive failures after which a peer is dead.
pub(crate) const DEAD_AFTER_FAILURES: u64 = 5;
/// A dead peer is probed once per this many gossip intervals.
pub(crate) const DEAD_PROBE_ROUNDS: u64 = 10;
/// A learned peer dead this long is forgotten.
const FORGET_AFTER: Micros = 600 * SECOND;
/// Most configured and verified peers the table holds: learned addresses beyond it are ignored.
const MAX_TRUSTED_PEERS: usize = 256;
/// Most unverified peers the table holds: a flood of invented addresses fills this pool and
/// nothing else.
pub(crate) const MAX_UNVERIFIED: usize = 32;
/// Most new addresses taken from one message's peer list; the rest are ignored.
pub(crate) const MAX_LEARNED_PER_MESSAGE: usize = 8;
/// Most unverified peers probed per round, on top of the round's fanout of trusted ones.
pub(crate) const UNVERIFIED_PER_ROUND: usize = 1;
/// How long an address whose certificate does not name it is not learned again (see
/// [`PeerTable::misnamed`]): a rotation to a certificate that names it is noticed after this.
pub(crate) const MISNAMED_FOR: Micros = 600 * SECOND;
/// Most such addresses remembered; past it the oldest is forgotten.
const MAX_MISNAMED: usize = 64;
/// Most second addresses of verified peers remembered (see [`PeerTable::aliases`]); past it
/// the oldest is forgotten.
const MAX_ALIASES: usize = 64;
/// Most addresses remembered as this node's own (see [`PeerTable::is_us`]); past it the
/// oldest is forgotten (and, if named again, costs one refused exchange to find again).
const MAX_OWN_ADDRS: usize = 16;

/// Normalizes a peer base URL as an operator writes it (`--peers`, DNS): `host:port` gets
/// `http://` (`--peers` gives it the node's scheme first), trailing slashes go, and a URL of
/// [`peer_url`]'s form is written as it writes it (so that an address configured, learned and
/// advertised is one string). The error says why it cannot be a peer.
pub(crate) fn normalize_peer(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!(
            "{url:?}: only http:// and https:// peers are supported"
        ));
    };
    if rest.is_empty() {
        return Err("empty peer address".into());
    }
    Ok(peer_url(&url).unwrap_or(url))
}

/// A peer URL as a message may name it: `http://host:port` or `https://host:port` with a
/// port 1-65535 and nothing else (no path, user or query), at most [`MAX_PEER_URL_LEN`]
/// bytes. `None` when it is anything else. Returned in one spelling per address, so that
/// the peer table, the hold of misnamed addresses and this node's own addresses cannot be
/// filled with spellings of one host: the host in lower case without a final dot, an IPv6
/// address as Rust writes it, the port without leading zeros, no trailing slash. A host
/// that HTTP clients read as an IPv4 address (its last label a number, or hexadecimal)
/// must be a dotted quad as written (`127.1`, `2130706433`, `0x7f000001` and `0177.0.0.1`
/// all reach 127.0.0.1 and are refused).
pub(crate) fn peer_url(url: &str) -> Option<String> {
    if url.len() > MAX_PEER_URL_LEN {
        return None;
    }
    let url = url.trim_end_matches('/');
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, port) = rest.rsplit_once(':')?;
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let port = port.parse::<u16>().ok().filter(|p| digits && *p > 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.strip_suffix(']')?.parse::<Ipv6Addr>().ok()?),
        None => {
            let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            let labels_ok = host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            if !labels_ok {
                return None;
            }
            // WHATWG URL parsing (reqwest's) reads such a host as an IPv4 address.
            let last = host.rsplit('.').next().unwrap_or_default();
            let numeric = last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x");
            if numeric && host.parse::<Ipv4Addr>().ok()?.to_string() != host {
                return None;
            }
            host
        }
    };
    Some(format!("{scheme}://{host}:{port}"))
}

/// `--advertise` as peers will dial it: `url` when it is a peer URL, or `url` with `port` (the
/// bound listen port) when it names none. `None` when it is neither.
pub(crate) fn advertised(url: &str, port: u16) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    peer_url(url).or_else(|| peer_url(&format!("{url}:{port}")))
}

/// Inserts `key` into `map`, first forgetting the oldest entry (by `at`, its value's time)
/// when `map` holds `max`: the bounded memories of the table.
fn remember<V>(
    map: &mut HashMap<String, V>,
    key: String,
    value: V,
    max: usize,
    at: impl Fn(&V) -> Micros,
) {
    if map.len() >= max && !map.contains_key(&key) {
        let oldest = map
            .iter()
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}

/// Where the node learned of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `--peers`.
    Static,
    /// `--peers-dns`, at the last resolution.
    Dns,
    /// Another node named it, or it contacted us.
    Learned,
}

/// One peer.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Its base URL.
    pub(crate) addr: String,
    /// How it got here.
    pub(crate) source: Source,
    /// It answered an exchange this node started (with a node id other than ours).
    pub(crate) verified: bool,
    /// Its node id, once it answered.
    pub(crate) node_id: Option<String>,
    /// Alive, suspect or dead.
    pub(crate) state: PeerState,
    /// Consecutive failed exchanges.
    pub(crate) failures: u64,
    /// The last successful exchange (either direction).
    pub(crate) last_success: Option<Micros>,
    /// When this node last tried to reach it, for dead-peer probing.
    pub(crate) last_attempt: Option<Micros>,
    /// Its digest at the last exchange (what a push may skip).
    pub(crate) digest: Option<Digest>,
    /// How many changes this node held that the peer lacked, at the last exchange.
    pub(crate) behind: u64,
    /// Whether it said it was ready.
    pub(crate) ready: bool,
    /// An exchange with it is in flight.
    busy: bool,
    /// A push was wanted while it was busy: push again when the exchange ends.
    push_pending: bool,
    /// When it was added or last heard of, for forgetting learned peers.
    last_heard: Micros,
    /// The node id of the sender whose messages claimed this address as its own, while it is
    /// unverified: its failure is that node's misconfiguration (`--advertise`) to warn of.
    claimed_by: Option<String>,
}

impl Peer {
    fn new(addr: String, source: Source, now: Micros) -> Self {
        Peer {
            addr,
            source,
            verified: false,
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
            claimed_by: None,
        }
    }

    /// A successful exchange with it.
    fn heard_from(&mut self, contact: Contact<'_>, now: Micros) {
        self.state = PeerState::Alive;
        self.failures = 0;
        self.last_success = Some(now);
        self.last_heard = now;
        self.digest = Some(contact.digest);
        self.behind = contact.behind;
        self.ready = contact.ready;
    }

    /// Configured by the operator, or verified by its own answer: a peer the node trusts to
    /// gossip with.
    pub(crate) fn trusted(&self) -> bool {
        self.verified || self.source != Source::Learned
    }
}

/// What an exchange learned about the peer.
pub(crate) struct Contact<'a> {
    pub(crate) node_id: &'a str,
    pub(crate) digest: Digest,
    /// How far behind this node it is.
    pub(crate) behind: u64,
    /// Whether it is ready.
    pub(crate) ready: bool,
}

/// Every peer by base URL, with this node's own addresses (never gossiped with).
#[derive(Debug)]
pub(crate) struct PeerTable {
    own_id: String,
    peers: HashMap<String, Peer>,
    /// Addresses that turned out to be this node (at most [`MAX_OWN_ADDRS`], oldest first).
    own_addrs: VecDeque<String>,
    /// Second addresses of verified peers, with that node id and when: an address that
    /// answered with the node id of a verified peer known under another address (its name
    /// and its IP, say), which [`PeerTable::succeeded`] dropped as a twin, or an address a
    /// node claims as its own that failed while this node reaches it elsewhere (a wrong
    /// `--advertise`). Not learned again while a live verified peer carries that id:
    /// otherwise every message naming it would add it back, to be probed and dropped again,
    /// round after round, and listed as a suspect peer half the time.
    aliases: HashMap<String, (String, Micros)>,
    /// When a claimed address that failed was last logged.
    claim_warned: Throttle,
    /// Addresses whose TLS certificate does not name them, and when that was found: not
    /// learned again for [`MISNAMED_FOR`] (see [`PeerTable::misnamed`]).
    misnamed: HashMap<String, Micros>,
    /// When a dropped misnamed address was last logged.
    misnamed_warned: Throttle,
    /// `http` or `https`, as this node speaks (set by [`PeerTable::speaking`]): an
    /// address of the other scheme is never learned, so a TLS node never dials a peer in
    /// clear text (with its --peer-token) because a message named one.
    scheme: Option<&'static str>,
    /// Picks round and push targets: seeded from the OS, or by [`PeerTable::seed`] so that a
    /// simulation's choices repeat.
    rng: StdRng,
}

impl PeerTable {
    /// A table with the static peers; `own_addr` (when known) is never added: it must be an
    /// address known to be this node's (its listen address), not one an operator typed for
    /// others to dial (`--advertise`), which a mistake can make a peer's.
    pub(crate) fn new(
        own_id: &str,
        own_addr: Option<&str>,
        statics: &[String],
        now: Micros,
    ) -> Self {
        let mut table = PeerTable {
            own_id: own_id.to_owned(),
            peers: HashMap::new(),
            own_addrs: own_addr.map(|a| a.to_owned()).into_iter().collect(),
            aliases: HashMap::new(),
            claim_warned: Throttle::new(),
            misnamed: HashMap::new(),
            misnamed_warned: Throttle::new(),
            scheme: None,
            rng: rand::make_rng(),
        };
        for addr in statics {
            table.configure(addr, Source::Static, now);
        }
        table
    }

    /// Learns only addresses of `scheme` (`"https"` on a TLS node).
    pub(crate) fn speaking(&mut self, scheme: &'static str) {
        self.scheme = Some(scheme);
    }

    /// Makes every later random choice of this table a function of `seed` (and of the calls
    /// made): the scale simulation's runs repeat.
    pub(crate) fn seed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Live trusted peers (busy ones too unless `idle_only`), in address order: the order
    /// random choices start from, so that a seeded table repeats them (a hash map's order
    /// changes with every process).
    fn live_trusted(&self, idle_only: bool) -> Vec<String> {
        let mut live: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.trusted() && !(idle_only && p.busy) && p.state != PeerState::Dead)
            .map(|p| p.addr.clone())
            .collect();
        live.sort_unstable();
        live
    }

    fn unverified(&self) -> usize {
        self.peers.values().filter(|p| !p.trusted()).count()
    }

    /// Adds or upgrades a peer the operator configured (flag or DNS).
    fn configure(&mut self, addr: &str, source: Source, now: Micros) {
        let Ok(addr) = normalize_peer(addr) else {
            return;
        };
        if self.own_addrs.contains(&addr) {
            // A node's own address is in every DNS answer for the cluster: no news there.
            if source == Source::Static {
                tracing::warn!(
                    peer = %addr,
                    "a configured peer is this node's own listen address: not gossiped with"
                );
            }
            return;
        }
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.source = source;
            peer.last_heard = now;
            return;
        }
        if self.peers.len() - self.unverified() >= MAX_TRUSTED_PEERS {
            return;
        }
        self.peers
            .insert(addr.clone(), Peer::new(addr, source, now));
    }

    /// A new unverified address, if it is a peer URL and the pool has room; with `evict`, a
    /// random idle unverified peer makes room when the pool is full. `claimer`: the node id
    /// of a sender that claims the address as its own; an alias of another node does not
    /// stop that claim (else anyone could keep a node's real address out by first claiming
    /// it, in another live node's name, while it is down).
    fn add_unverified(
        &mut self,
        addr: &str,
        evict: bool,
        now: Micros,
        claimer: Option<&str>,
    ) -> bool {
        let Some(addr) = peer_url(addr) else {
            return false;
        };
        if self
            .scheme
            .is_some_and(|scheme| addr.split_once("://").map(|(s, _)| s) != Some(scheme))
        {
            return false;
        }
        if self.own_addrs.contains(&addr) || self.peers.contains_key(&addr) {
            return false;
        }
        if self.aliases.get(&addr).is_some_and(|(id, _)| {
            claimer.is_none_or(|claimer| claimer == id) && self.live_verified_id(id)
        }) {
            return false;
        }
        if self
            .misnamed
            .get(&addr)
            .is_some_and(|at| now.saturating_sub(*at) < MISNAMED_FOR)
        {
            return false;
        }
        if self.unverified() >= MAX_UNVERIFIED {
            let mut idle: Vec<String> = self
                .peers
                .values()
                .filter(|p| !p.trusted() && !p.busy)
                .map(|p| p.addr.clone())
                .collect();
            idle.sort_unstable();
            match idle.choose(&mut self.rng) {
                Some(victim) if evict => {
                    self.peers.remove(victim);
                }
                _ => return false,
            }
        }
        self.peers
            .insert(addr.clone(), Peer::new(addr, Source::Learned, now));
        true
    }

    /// Whether a verified peer that is not dead carries `node_id`.
    fn live_verified_id(&self, node_id: &str) -> bool {
        self.peers.values().any(|p| {
            p.verified && p.state != PeerState::Dead && p.node_id.as_deref() == Some(node_id)
        })
    }

    /// Takes peers another node named: at most [`MAX_LEARNED_PER_MESSAGE`] new ones, as
    /// unverified, while the unverified pool has room (they never displace anything).
    pub(crate) fn learn<'a>(&mut self, addrs: impl IntoIterator<Item = &'a String>, now: Micros) {
        let mut taken = 0;
        for addr in addrs {
            if taken == MAX_LEARNED_PER_MESSAGE {
                break;
            }
            let Some(addr) = peer_url(addr) else {
                continue;
            };
            if let Some(peer) = self.peers.get_mut(&addr) {
                peer.last_heard = now;
                continue;
            }
            taken += usize::from(self.add_unverified(&addr, false, now, None));
        }
    }

    /// Records a message from a sender that claims to be `node_id` at `addr` (a peer URL).
    /// Nothing proves the claim, so it changes a verified peer's entry only when the node id
    /// matches what that address answered itself. An unknown address joins the unverified
    /// pool (taking a random unverified slot when full: a node that contacts us keeps a chance
    /// to be probed even while the pool is flooded), unless it is a known second address of
    /// the sender ([`PeerTable::aliases`]).
    pub(crate) fn claimed(&mut self, addr: &str, contact: Contact<'_>, now: Micros) {
        if contact.node_id == self.own_id {
            return;
        }
        match self.peers.get_mut(addr) {
            Some(peer) if peer.verified && peer.node_id.as_deref() == Some(contact.node_id) => {
                peer.heard_from(contact, now);
            }
            Some(peer) => {
                peer.last_heard = now;
                // Its own messages also list it: it may be there already, learned.
                if !peer.trusted() {
                    peer.claimed_by = Some(contact.node_id.to_owned());
                }
            }
            None => {
                if self.add_unverified(addr, true, now, Some(contact.node_id)) {
                    if let Some(peer) = self.peers.get_mut(addr) {
                        peer.claimed_by = Some(contact.node_id.to_owned());
                    }
                }
            }
        }
    }

    /// Replaces the DNS-sourced peers with a fresh resolution. Peers that left it become
    /// "learned", so they are forgotten if they stay dead.
    pub(crate) fn resolved(&mut self, addrs: &[String], now: Micros) {
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
            self.configure(addr, Source::Dns, now);
        }
    }

    /// The peer at `addr`.
    pub(crate) fn get(&self, addr: &str) -> Option<&Peer> {
        self.peers.get(addr)
    }

    /// Marks an exchange with `addr` as started; `false` (and, for a push, a note to push
    /// again) when one is already in flight.
    pub(crate) fn begin(&mut self, addr: &str, push: bool, now: Micros) -> bool {
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
    pub(crate) fn end(&mut self, addr: &str) -> bool {
        match self.peers.get_mut(addr) {
            Some(peer) => {
                peer.busy = false;
                std::mem::take(&mut peer.push_pending)
            }
            None => false,
        }
    }

    /// `addr` refused our message because it carries its own node id, which is ours: it is
    /// this node (its own address in `--peers`, say), or a node misconfigured with our id.
    /// Either way it is never gossiped with again.
    pub(crate) fn is_us(&mut self, addr: &str) {
        if !self.own_addrs.iter().any(|own| own == addr) {
            if self.own_addrs.len() >= MAX_OWN_ADDRS {
                self.own_addrs.pop_front();
            }
            self.own_addrs.push_back(addr.to_owned());
        }
        self.peers.remove(addr);
    }

    /// Records an exchange this node started with `addr` and that `addr` answered as
    /// `contact` (the caller has refused an answer with our own id): the peer is verified.
    pub(crate) fn succeeded(&mut self, addr: &str, contact: Contact<'_>, now: Micros) {
        let verified = self.peers.len() - self.unverified();
        let Some(peer) = self.peers.get_mut(addr) else {
            return;
        };
        if !peer.trusted() && verified >= MAX_TRUSTED_PEERS {
            self.peers.remove(addr);
            return;
        }
        peer.verified = true;
        peer.node_id = Some(contact.node_id.to_owned());
        if peer.failures > 0 {
            tracing::info!(
                peer = addr,
                node = contact.node_id,
                "gossip peer answers again"
            );
        }
        let node_id = contact.node_id;
        peer.heard_from(contact, now);
        let source = peer.source;
        // The same node under a second address (a name and its IP, say): keep one entry.
        // A configured address wins over learned ones; between learned ones the first
        // verified stays, so a newcomer answering with a known id (a second name, or a
        // node impersonating it) cannot push the known address out.
        let twins: Vec<(String, Source)> = self
            .peers
            .values()
            .filter(|p| p.addr != addr && p.verified && p.node_id.as_deref() == Some(node_id))
            .map(|p| (p.addr.clone(), p.source))
            .collect();
        let mut dropped = Vec::new();
        if source == Source::Learned {
            if !twins.is_empty() {
                self.peers.remove(addr);
                dropped.push(addr.to_owned());
            }
        } else {
            for (twin, twin_source) in twins {
                if twin_source == Source::Learned {
                    self.peers.remove(&twin);
                    dropped.push(twin);
                }
            }
        }
        for alias in dropped {
            let entry = (node_id.to_owned(), now);
            remember(&mut self.aliases, alias, entry, MAX_ALIASES, |(_, at)| *at);
        }
    }

    /// Records that `addr` answered with a TLS certificate that does not name it (`why`). A
    /// configured or verified peer counts a failure like any other: the operator named it,
    /// and the warning says why. An unverified one, learned from a message or from where a
    /// message came from (a node whose messages give an address its certificate does not
    /// name: its listen IP, without `--advertise`), can never verify: it is dropped and not
    /// learned again for [`MISNAMED_FOR`], where it would otherwise come back with every
    /// message and show as a suspect peer for good.
    pub(crate) fn misnamed(&mut self, addr: &str, why: &str, now: Micros) {
        if self.peers.get(addr).is_none_or(|p| p.trusted()) {
            self.failed(addr, why);
            return;
        }
        self.peers.remove(addr);
        remember(
            &mut self.misnamed,
            addr.to_owned(),
            now,
            MAX_MISNAMED,
            |at| *at,
        );
        // Anyone can name addresses: at most one line every `throttle::EVERY_SECS`.
        if self.misnamed_warned.allow(now / SECOND) {
            let held = humantime::format_duration(std::time::Duration::from_micros(MISNAMED_FOR));
            tracing::warn!(
                peer = addr,
                error = why,
                "a learned peer address presents a TLS certificate that does not name it: dropped, and not learned again for {held} (a node of this cluster gives an address its certificate does not name: set its --advertise to a URL its certificate names)"
            );
        }
    }

    /// Records a failed exchange and `why` it failed (said in the warning). An unverified peer
    /// is dropped at once: it never answered, and if it is real another node will name it
    /// again.
    pub(crate) fn failed(&mut self, addr: &str, why: &str) {
        if self.peers.get(addr).is_some_and(|p| !p.trusted()) {
            let Some(peer) = self.peers.remove(addr) else {
                return;
            };
            // The sender's own address does not answer: nobody dials that node, and only
            // its peers can tell (anyone can claim: at most one line every
            // `throttle::EVERY_SECS`).
            let Some(node) = peer.claimed_by else {
                return;
            };
            let at = peer.last_attempt.unwrap_or(peer.last_heard);
            if self.claim_warned.allow(at / SECOND) {
                tracing::warn!(
                    peer = addr,
                    node = %node,
                    error = why,
                    "node {node} says it is at {addr}, which failed: other nodes cannot dial it there; check that node's --advertise (or its --listen address)"
                );
            }
            if self.live_verified_id(&node) {
                remember(
                    &mut self.aliases,
                    addr.to_owned(),
                    (node, at),
                    MAX_ALIASES,
                    |(_, at)| *at,
                );
            }
            return;
        }
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
                    error = why,
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

    /// Peers for one anti-entropy round: `fanout` random live trusted ones (every one while
    /// the node is not ready, to find a snapshot fast), dead ones due for a probe, and at most
    /// [`UNVERIFIED_PER_ROUND`] unverified ones: however many of those there are, the
    /// trusted peers keep their share of every round.
    pub(crate) fn round_targets(
        &mut self,
        fanout: usize,
        everyone: bool,
        interval: Micros,
        now: Micros,
    ) -> Vec<String> {
        self.misnamed
            .retain(|_, at| now.saturating_sub(*at) < MISNAMED_FOR);
        let live_ids: HashSet<&str> = self
            .peers
            .values()
            .filter(|p| p.verified && p.state != PeerState::Dead)
            .filter_map(|p| p.node_id.as_deref())
            .collect();
        self.aliases
            .retain(|_, (id, _)| live_ids.contains(id.as_str()));
        self.peers.retain(|_, p| {
            !(p.source == Source::Learned
                && p.state == PeerState::Dead
                && now.saturating_sub(p.last_success.unwrap_or(p.last_heard)) > FORGET_AFTER)
        });
        let mut live = self.live_trusted(true);
        live.shuffle(&mut self.rng);
        if !everyone {
            live.truncate(fanout);
        }
        let cut_off = !self
            .peers
            .values()
            .any(|p| p.trusted() && p.state != PeerState::Dead);
        let probe_every = if cut_off {
            interval
        } else {
            interval.saturating_mul(DEAD_PROBE_ROUNDS)
        };
        let dead = self.peers.values().filter(|p| {
            p.trusted()
                && !p.busy
                && p.state == PeerState::Dead
                && p.last_attempt
                    .is_none_or(|at| now.saturating_sub(at) >= probe_every)
        });
        live.extend(dead.map(|p| p.addr.clone()));
        let mut unverified: Vec<&String> = self
            .peers
            .values()
            .filter(|p| !p.trusted() && !p.busy)
            .map(|p| &p.addr)
            .collect();
        unverified.sort_unstable();
        live.extend(
            unverified
                .sample(&mut self.rng, UNVERIFIED_PER_ROUND)
                .map(|addr| (*addr).clone()),
        );
        live
    }

    /// Peers a new local write is pushed to: up to `fanout` random live trusted ones.
    pub(crate) fn push_targets(&mut self, fanout: usize) -> Vec<String> {
        let mut live = self.live_trusted(false);
        live.shuffle(&mut self.rng);
        live.truncate(fanout);
        live
    }

    /// Addresses of live peers, to tell other nodes about: only those that answered us, and
    /// only in the form other nodes accept.
    pub(crate) fn live_addrs(&self, limit: usize) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.verified && p.state == PeerState::Alive && peer_url(&p.addr).is_some())
            .map(|p| p.addr.clone())
            .collect();
        addrs.sort();
        addrs.truncate(limit);
        addrs
    }

    /// Whether any peer is known at all.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Trusted peers by state, then unverified ones: (alive, suspect, dead, unverified).
    pub(crate) fn counts(&self) -> (i64, i64, i64, i64) {
        let mut counts = (0, 0, 0, 0);
        for p in self.peers.values() {
            match p.state {
                _ if !p.trusted() => counts.3 += 1,
                PeerState::Alive => counts.0 += 1,
                PeerState::Suspect => counts.1 += 1,
                PeerState::Dead => counts.2 += 1,
            }
        }
        counts
    }

    /// The most changes any live peer lacked at its last exchange.
    pub(crate) fn max_behind(&self) -> u64 {
        self.peers
            .values()
            .filter(|p| p.state != PeerState::Dead)
            .map(|p| p.behind)
            .max()
            .unwrap_or(0)
    }

    /// The rows of `GET /v1/peers`, sorted by address.
    pub(crate) fn infos(&self, now: Micros) -> Vec<PeerInfo> {
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

    /// The scale simulation's runs repeat: a seeded table picks the same peers, whatever
    /// order its hash map holds them in; another seed picks others.
    #[test]
    fn a_seeded_table_repeats_its_choice_of_peers() {
        let statics: Vec<String> = (0..20).map(|i| format!("http://n{i}:80")).collect();
        let choices = |seed: u64, order: &[String]| {
            let mut t = PeerTable::new("me", None, order, 0);
            t.seed(seed);
            (0..10)
                .map(|i| (t.round_targets(3, false, SECOND, i), t.push_targets(8)))
                .collect::<Vec<_>>()
        };
        let reversed: Vec<String> = statics.iter().rev().cloned().collect();
        assert_eq!(choices(7, &statics), choices(7, &reversed));
        assert_ne!(choices(7, &statics), choices(8, &statics));
    }

    #[test]
    fn peers_go_suspect_then_dead_and_alive_again_on_success() {
        let mut t = PeerTable::new("me", None, &["http://b:1".into()], 0);
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Suspect);
        t.succeeded("http://b:1", contact("b"), 5);
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Alive);
        t.failed("http://b:1", "cut");
        assert_eq!(t.get("http://b:1").unwrap().state, PeerState::Suspect);
        for _ in 1..DEAD_AFTER_FAILURES {
            t.failed("http://b:1", "cut");
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
        let mut t = PeerTable::new("me", None, &["http://b:1".into(), "http://d:1".into()], 0);
        t.succeeded("http://d:1", contact("d"), 0);
        t.learn(&["http://c:1".to_owned()], 0);
        assert!(t.begin("http://c:1", false, 0));
        t.succeeded("http://c:1", contact("c"), 0);
        t.end("http://c:1");
        for addr in ["http://b:1", "http://c:1"] {
            for _ in 0..DEAD_AFTER_FAILURES {
                t.failed(addr, "cut");
            }
            assert!(t.begin(addr, false, 0));
            t.end(addr);
        }
        assert_eq!(t.round_targets(3, false, SECOND, SECOND), ["http://d:1"]);
        let due = t.round_targets(3, false, SECOND, 10 * SECOND);
        assert_eq!(due.len(), 3);
        t.round_targets(3, false, SECOND, FORGET_AFTER + SECOND);
        assert!(t.get("http://c:1").is_none(), "learned and dead: forgotten");
        assert!(t.get("http://b:1").is_some(), "configured: kept");
    }

    /// Issue 14: after a partition the cut-off node served its old lists (dead hosts held by
    /// its guard) for up to ten rounds, until its next probe found the others again.
    #[test]
    fn a_node_cut_off_from_every_peer_probes_them_every_round() {
        let mut t = PeerTable::new("me", None, &["http://b:1".into(), "http://c:1".into()], 0);
        for addr in ["http://b:1", "http://c:1"] {
            t.succeeded(addr, contact(&addr[7..8]), 0);
            for _ in 0..DEAD_AFTER_FAILURES {
                t.failed(addr, "cut");
            }
        }
        for round in 1..4 {
            let mut due = t.round_targets(3, false, SECOND, round * SECOND);
            due.sort();
            assert_eq!(due, ["http://b:1", "http://c:1"], "round {round}");
            for addr in &due {
                assert!(t.begin(addr, false, round * SECOND));
                t.failed(addr, "cut");
                t.end(addr);
            }
        }
    }

    #[test]
    fn an_address_that_refuses_our_id_as_its_own_is_dropped_for_good() {
        let mut t = PeerTable::new("me", None, &["http://self:1".into()], 0);
        t.is_us("http://self:1");
        assert!(t.is_empty());
        t.learn(&["http://self:1".to_owned()], 2);
        t.claimed("http://self:1", contact("x"), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn peer_urls_must_be_http_host_and_a_port_from_1() {
        for good in [
            "http://a:1",
            "https://a.b-c_d:65535",
            "http://10.0.0.1:80/",
            "http://[::1]:8080",
        ] {
            assert!(peer_url(good).is_some(), "{good}");
        }
        for bad in [
            "http://a:0",
            "http://a",
            "http://a:",
            "http://a:65536",
            "http://a:+80",
            "ftp://a:80",
            "a:80",
            "http://u@a:80",
            "http://a:80/path",
            "http://[zz]:80",
            "http://:80",
        ] {
            assert!(peer_url(bad).is_none(), "{bad}");
        }
        assert!(peer_url(&format!("http://{}:80", "a".repeat(MAX_PEER_URL_LEN))).is_none());
    }

    /// A table with three verified peers and one configured peer.
    fn settled() -> PeerTable {
        let mut t = PeerTable::new("me", None, &["http://s:1".into()], 0);
        for (addr, id) in [
            ("http://v1:1", "v1"),
            ("http://v2:1", "v2"),
            ("http://v3:1", "v3"),
        ] {
            t.learn(&[addr.to_owned()], 0);
            assert!(t.begin(addr, false, 0));
            t.succeeded(addr, contact(id), 0);
            t.end(addr);
        }
        t
    }

    #[test]
    fn a_tls_node_never_learns_or_takes_a_claimed_http_peer() {
        let mut t = PeerTable::new("me", None, &[], 0);
        t.speaking("https");
        t.learn(
            &["http://plain:1".to_owned(), "https://tls:1".to_owned()],
            0,
        );
        t.claimed("http://claimed:1", contact("c"), 0);
        assert!(!t.begin("http://plain:1", false, 0), "learned http:// peer");
        assert!(
            !t.begin("http://claimed:1", false, 0),
            "claimed http:// peer"
        );
        assert!(t.begin("https://tls:1", false, 0));
    }

    fn invented(round: usize) -> Vec<String> {
        (0..64)
            .map(|i| format!("http://10.66.{round}.{i}:7"))
            .collect()
    }

    #[test]
    fn a_flood_of_invented_peers_stays_in_its_bounded_pool() {
        let mut t = settled();
        t.learn(&invented(0), 1);
        assert_eq!(
            t.counts(),
            (3, 1, 0, MAX_LEARNED_PER_MESSAGE as i64),
            "8 per message"
        );
        for round in 1..20 {
            t.learn(&invented(round), 1);
            t.claimed(&format!("http://10.77.0.{round}:7"), contact("liar"), 1);
        }
        assert_eq!(t.counts(), (3, 1, 0, MAX_UNVERIFIED as i64));
        for _ in 0..50 {
            let targets = t.round_targets(3, false, SECOND, 2);
            let untrusted = targets
                .iter()
                .filter(|a| !t.get(a).unwrap().trusted())
                .count();
            assert_eq!(
                (targets.len(), untrusted),
                (3 + UNVERIFIED_PER_ROUND, UNVERIFIED_PER_ROUND)
            );
        }
        let pushed = t.push_targets(8);
        assert_eq!(pushed.len(), 4);
        assert!(pushed.iter().all(|a| t.get(a).unwrap().trusted()));
        assert_eq!(
            t.live_addrs(63),
            vec!["http://v1:1", "http://v2:1", "http://v3:1"]
        );
        // An invented peer fails its probe and leaves at once.
        let probe = t.round_targets(0, false, SECOND, 2).pop().unwrap();
        t.failed(&probe, "cut");
        assert!(t.get(&probe).is_none());
    }

    #[test]
    fn a_newcomer_answering_with_a_known_id_does_not_push_the_known_address_out() {
        let mut t = settled();
        t.learn(&["http://impostor:1".to_owned()], 1);
        assert!(t.begin("http://impostor:1", false, 1));
        t.succeeded("http://impostor:1", contact("v1"), 1);
        assert!(t.get("http://impostor:1").is_none());
        assert!(t.get("http://v1:1").is_some());
    }

    #[test]
    fn a_claim_cannot_change_a_verified_peer_or_remove_its_twin() {
        let mut t = settled();
        let before = t.get("http://v1:1").unwrap().clone();
        // Someone says "I am v1, at this other address", and "I am v2 at v1's address".
        t.claimed("http://evil:1", contact("v1"), 5);
        t.claimed("http://v1:1", contact("v2"), 5);
        let after = t.get("http://v1:1").unwrap();
        assert_eq!(
            (after.node_id.clone(), after.last_success),
            (before.node_id, before.last_success)
        );
        assert!(!t.get("http://evil:1").unwrap().trusted());
        assert!(t.begin("http://evil:1", false, 6));
        t.succeeded("http://evil:1", contact("evil"), 6);
        assert!(t.get("http://evil:1").unwrap().trusted());
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

    /// Review finding 9 of issue 11: a TLS node that names its peers by DNS name learned each
    /// peer's IP address from their messages, failed its certificate name check every round
    /// and listed it as suspect for good.
    #[test]
    fn a_learned_address_whose_certificate_does_not_name_it_is_dropped_and_not_learned_again() {
        let mut t = PeerTable::new("me", None, &["https://b.test:1".into()], 0);
        t.speaking("https");
        t.claimed("https://10.0.0.2:1", contact("b"), 0);
        t.learn(&["https://10.0.0.3:1".to_owned()], 0);
        for addr in ["https://10.0.0.2:1", "https://10.0.0.3:1"] {
            assert!(t.begin(addr, false, 0));
            t.misnamed(addr, "not valid for name", SECOND);
            t.end(addr);
            assert!(t.get(addr).is_none(), "{addr} dropped");
        }
        // Named again, by a message or as a sender: not taken back while the hold lasts.
        t.claimed("https://10.0.0.2:1", contact("b"), 2 * SECOND);
        t.learn(&["https://10.0.0.3:1".to_owned()], 2 * SECOND);
        assert_eq!(t.counts(), (0, 1, 0, 0), "only the configured peer");
        // A configured peer with a misnamed certificate stays, failing: the operator named it.
        t.misnamed("https://b.test:1", "not valid for name", 3 * SECOND);
        assert_eq!(t.get("https://b.test:1").unwrap().failures, 1);
        // Still held one tick before the hold ends...
        let held = SECOND + MISNAMED_FOR - 1;
        t.round_targets(3, false, SECOND, held);
        t.learn(&["https://10.0.0.3:1".to_owned()], held);
        assert!(t.get("https://10.0.0.3:1").is_none(), "held until the end");
        // ...and after it (a rotation may have fixed the certificate) learned again.
        let later = SECOND + MISNAMED_FOR;
        t.round_targets(3, false, SECOND, later);
        t.learn(&["https://10.0.0.3:1".to_owned()], later);
        assert!(t.get("https://10.0.0.3:1").is_some());
    }

    /// The one bounded memory behind the misnamed addresses and the aliases
    /// ([`MAX_MISNAMED`], [`MAX_ALIASES`]): one past the bound forgets the oldest; an entry
    /// already held is updated in place, forgetting nothing.
    #[test]
    fn remembered_addresses_stay_within_their_bound_oldest_forgotten_first() {
        let mut map = HashMap::new();
        for (addr, at) in [("a", 3), ("b", 1), ("c", 2)] {
            remember(&mut map, addr.to_owned(), at, 3, |at| *at);
        }
        remember(&mut map, "c".to_owned(), 4, 3, |at| *at);
        assert_eq!(map.len(), 3, "an update forgets nothing");
        remember(&mut map, "d".to_owned(), 5, 3, |at| *at);
        let mut held: Vec<_> = map.into_iter().collect();
        held.sort();
        assert_eq!(
            held,
            [("a".into(), 3), ("c".into(), 4), ("d".into(), 5)],
            "one past the bound: the oldest (b) forgotten"
        );
    }

    #[test]
    fn a_flood_of_misnamed_addresses_is_remembered_within_a_bound() {
        let mut t = PeerTable::new("me", None, &[], 0);
        for i in 0..(3 * MAX_MISNAMED) {
            let addr = format!("https://10.9.{}.{}:1", i / 256, i % 256);
            t.learn(std::slice::from_ref(&addr), i as Micros);
            t.misnamed(&addr, "not valid for name", i as Micros);
        }
        assert_eq!(t.misnamed.len(), MAX_MISNAMED);
        assert!(t.is_empty());
        // The oldest were forgotten and are learned again; the newest are still held.
        let oldest = "https://10.9.0.0:1".to_owned();
        let newest = format!("https://10.9.0.{}:1", 3 * MAX_MISNAMED - 1);
        let now = (3 * MAX_MISNAMED) as Micros;
        t.learn(&[newest.clone(), oldest.clone()], now);
        assert!(t.get(&oldest).is_some(), "the oldest is forgotten");
        assert!(t.get(&newest).is_none(), "the newest is held");
    }

    /// Review finding 8: every spelling of an address is one address, and spellings that
    /// HTTP clients read as another IPv4 address are refused.
    #[test]
    fn peer_urls_have_one_spelling_per_address() {
        for (given, canonical) in [
            ("http://LOCALHOST:80", "http://localhost:80"),
            ("http://Node-A.Test.:0080/", "http://node-a.test:80"),
            ("https://[0:0::1]:443", "https://[::1]:443"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(peer_url(given).as_deref(), Some(canonical), "{given}");
        }
        for numeric in [
            "http://2130706433:80",
            "http://0x7f000001:80",
            "http://000000177.0.0.1:80",
            "http://127.1:80",
            "http://127.0.0.01:80",
            "http://a..b:80",
        ] {
            assert_eq!(peer_url(numeric), None, "{numeric}");
        }
        // A flood of spellings of one address is one address.
        let mut t = PeerTable::new("me", None, &[], 0);
        t.learn(
            &[
                "http://LOCALHOST:80".to_owned(),
                "http://localhost.:80".to_owned(),
                "http://localhost:080".to_owned(),
            ],
            0,
        );
        assert_eq!(t.counts().3, 1);
    }

    #[test]
    fn this_nodes_own_addresses_are_remembered_within_a_bound() {
        let mut t = PeerTable::new("me", Some("http://me:1"), &[], 0);
        for i in 0..(2 * MAX_OWN_ADDRS) {
            t.is_us(&format!("http://alias{i}:1"));
        }
        assert_eq!(t.own_addrs.len(), MAX_OWN_ADDRS);
        assert!(t
            .own_addrs
            .contains(&format!("http://alias{}:1", 2 * MAX_OWN_ADDRS - 1)));
    }

    /// Review finding 2: a node configured by IP that advertises a name (or that another node
    /// knows by name) was added under its second address by every message, probed, dropped
    /// as a twin, and added again: probed twice a round, listed suspect half the time.
    #[test]
    fn a_node_known_by_one_address_is_not_added_again_under_its_other_one() {
        let mut t = PeerTable::new("me", None, &["http://10.0.0.2:1".into()], 0);
        t.succeeded("http://10.0.0.2:1", contact("b"), 1);
        // b's own messages name b's advertised name: probed once, found to be b, never again.
        t.claimed("http://b.test:1", contact("b"), 1);
        assert!(t.begin("http://b.test:1", false, 1));
        t.succeeded("http://b.test:1", contact("b"), 1);
        t.end("http://b.test:1");
        for round in 2..12 {
            t.claimed("http://b.test:1", contact("b"), round);
            t.learn(&["http://b.test:1".to_owned()], round);
            assert_eq!(t.counts(), (1, 0, 0, 0), "round {round}");
        }
        // The same when the name does not answer (a wrong --advertise): probed once.
        t.claimed("http://nowhere.test:1", contact("b"), 12);
        assert!(t.begin("http://nowhere.test:1", false, 12));
        t.failed("http://nowhere.test:1", "connection refused");
        t.claimed("http://nowhere.test:1", contact("b"), 13);
        assert_eq!(t.counts(), (1, 0, 0, 0));
        // Another node that claims that address as its own is still heard.
        t.claimed("http://nowhere.test:1", contact("c"), 14);
        assert_eq!(t.counts(), (1, 0, 0, 1));
        // Named by a third node's list (no node id there), or before b was verified under
        // its IP: probed once, found a twin, never again.
        let mut t = PeerTable::new("me", None, &["http://10.0.0.2:1".into()], 0);
        t.learn(&["http://b.test:1".to_owned()], 0);
        t.succeeded("http://10.0.0.2:1", contact("b"), 1);
        assert!(t.begin("http://b.test:1", false, 1));
        t.succeeded("http://b.test:1", contact("b"), 1);
        t.end("http://b.test:1");
        assert!(t.get("http://b.test:1").is_none());
        for round in 2..12 {
            t.learn(&["http://b.test:1".to_owned()], round);
            t.claimed("http://b.test:1", contact("b"), round);
            t.round_targets(3, false, SECOND, round);
            assert_eq!(t.counts(), (1, 0, 0, 0), "round {round}");
        }
        // Once b is dead and forgotten under its IP... its other address may be learned.
        for _ in 0..DEAD_AFTER_FAILURES {
            t.failed("http://10.0.0.2:1", "cut");
        }
        t.round_targets(3, false, SECOND, 20);
        t.learn(&["http://b.test:1".to_owned()], 20);
        assert!(t.get("http://b.test:1").is_some());
    }

    #[test]
    fn advertise_takes_the_listen_port_when_it_names_none() {
        assert_eq!(
            advertised("https://node-a.test", 7000).as_deref(),
            Some("https://node-a.test:7000")
        );
        assert_eq!(
            advertised("https://node-a.test:443/", 7000).as_deref(),
            Some("https://node-a.test:443")
        );
        assert_eq!(
            advertised("http://[::1]", 80).as_deref(),
            Some("http://[::1]:80")
        );
        for bad in [
            "https://a:0",
            "a:1",
            "https://a/b",
            "https://u@a",
            "ftp://a",
        ] {
            assert_eq!(advertised(bad, 7000), None, "{bad}");
        }
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
