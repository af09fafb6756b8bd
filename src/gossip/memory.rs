//! An in-memory network for tests and benchmarks: nodes by address, links that can be cut
//! and healed, seeded random message loss, and byte counters. Every message is still encoded
//! to bytes and decoded on the other side, exactly as over HTTP, so what is measured here is
//! what travels. (chitchat's `transport/channel.rs`, memberlist's `mock_transport.go`.)
//!
//! Loss drops each message (a request or an answer) on its own with a fixed probability,
//! drawn from a seeded generator so that the same seed and the same sequence of messages
//! drop the same ones. A lost request changes nothing at the peer; a lost answer reaches the
//! initiator as a timeout after the peer has merged the request, as over HTTP. Either way the
//! exchange fails at once: there is no virtual clock here to wait out a timeout on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::messages::{SyncRequest, SyncResponse};
use super::node::{Clock, MessageRefusal, Node};
use super::settings::Settings;
use super::transport::{Exchanged, Transport, TransportError};
use crate::state::NodeState;

/// The receiving side of an exchange.
pub trait Handler: Send + Sync {
    /// Answers a request, or refuses it.
    fn handle(
        &self,
        req: SyncRequest,
        remote: Option<SocketAddr>,
    ) -> Result<SyncResponse, MessageRefusal>;
}

impl<T: Transport> Handler for Node<T> {
    fn handle(
        &self,
        req: SyncRequest,
        remote: Option<SocketAddr>,
    ) -> Result<SyncResponse, MessageRefusal> {
        Node::handle(self, req, remote)
    }
}

/// Bytes a node sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Encoded bytes sent (requests it made, answers it gave).
    pub sent: u64,
    /// Encoded bytes received.
    pub received: u64,
    /// Messages sent (requests and answers).
    pub messages: u64,
}

#[derive(Default)]
struct Net {
    nodes: HashMap<String, Weak<dyn Handler>>,
    /// Cut links, as sorted address pairs.
    cut: HashSet<(String, String)>,
    traffic: HashMap<String, Traffic>,
    loss: Loss,
}

/// Seeded message loss: a probability and a splitmix64 stream (no dependency, repeatable).
#[derive(Default)]
struct Loss {
    /// Probability that one message is dropped, in parts per million.
    per_million: u64,
    state: u64,
}

impl Loss {
    /// Whether the next message is dropped.
    fn drops(&mut self) -> bool {
        if self.per_million == 0 {
            return false;
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % 1_000_000 < self.per_million
    }
}

/// Nodes by address with the links between them. A cheap clone: all clones are one network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    net: Arc<Mutex<Net>>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node at `addr` (an `http://` URL) gossiping for `shared` with `settings`, on its
    /// own clock.
    pub fn join(
        &self,
        shared: Arc<NodeState>,
        settings: Settings,
        addr: &str,
        clock: Clock,
    ) -> Arc<Node<MemoryTransport>> {
        let transport = MemoryTransport {
            net: self.clone(),
            me: addr.to_owned(),
        };
        let node = Arc::new(Node::new(
            shared,
            settings,
            transport,
            Some(addr.to_owned()),
            80,
            clock,
        ));
        let handler: Arc<dyn Handler> = node.clone();
        self.net
            .lock()
            .nodes
            .insert(addr.to_owned(), Arc::downgrade(&handler));
        node
    }

    /// Serves `handler` at `addr`: a hand-written peer (a liar, say) for hostile tests.
    pub fn attach(&self, addr: &str, handler: &Arc<dyn Handler>) {
        self.net
            .lock()
            .nodes
            .insert(addr.to_owned(), Arc::downgrade(handler));
    }

    /// Cuts the link between two nodes, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.net.lock().cut.insert(pair(a, b));
    }

    /// Heals the link between two nodes.
    pub fn heal(&self, a: &str, b: &str) {
        self.net.lock().cut.remove(&pair(a, b));
    }

    /// Cuts every link of `a`.
    pub fn isolate(&self, a: &str) {
        let mut net = self.net.lock();
        let others: Vec<String> = net.nodes.keys().filter(|n| *n != a).cloned().collect();
        for other in others {
            net.cut.insert(pair(a, &other));
        }
    }

    /// Heals every link.
    pub fn heal_all(&self) {
        self.net.lock().cut.clear();
    }

    /// Drops each message from now on with probability `rate` (0 to 1), drawing from a
    /// generator seeded with `seed`; `rate` 0 turns loss off.
    pub fn set_loss(&self, rate: f64, seed: u64) {
        self.net.lock().loss = Loss {
            per_million: (rate.clamp(0.0, 1.0) * 1e6).round() as u64,
            state: seed,
        };
    }

    fn lost(&self) -> bool {
        self.net.lock().loss.drops()
    }

    /// Bytes a node sent and received so far.
    pub fn traffic(&self, addr: &str) -> Traffic {
        self.net
            .lock()
            .traffic
            .get(addr)
            .copied()
            .unwrap_or_default()
    }

    /// Counts a message; `delivered` is false for a lost one (sent, never received).
    fn count(&self, from: &str, to: &str, bytes: usize, delivered: bool) {
        let mut net = self.net.lock();
        let sender = net.traffic.entry(from.to_owned()).or_default();
        sender.sent += bytes as u64;
        sender.messages += 1;
        if delivered {
            net.traffic.entry(to.to_owned()).or_default().received += bytes as u64;
        }
    }
}

/// One node's end of a [`MemoryNetwork`].
pub struct MemoryTransport {
    net: MemoryNetwork,
    me: String,
}

impl Transport for MemoryTransport {
    async fn exchange(&self, peer: &str, msg: SyncRequest) -> Result<Exchanged, TransportError> {
        let handler = {
            let net = self.net.net.lock();
            if net.cut.contains(&pair(&self.me, peer)) {
                return Err(TransportError::Unreachable("link cut".into()));
            }
            net.nodes.get(peer).and_then(Weak::upgrade)
        };
        let Some(handler) = handler else {
            return Err(TransportError::Unreachable("no such node".into()));
        };
        let bytes = msg.encode();
        if self.net.lost() {
            self.net.count(&self.me, peer, bytes.len(), false);
            return Err(TransportError::Timeout);
        }
        self.net.count(&self.me, peer, bytes.len(), true);
        let req =
            SyncRequest::decode(&bytes).map_err(|e| TransportError::Refused(e.to_string()))?;
        let answer = match handler.handle(req, None) {
            Ok(answer) => answer.encode(),
            Err(MessageRefusal::OwnId) => return Err(TransportError::SameId),
        };
        if self.net.lost() {
            self.net.count(peer, &self.me, answer.len(), false);
            return Err(TransportError::Timeout);
        }
        self.net.count(peer, &self.me, answer.len(), true);
        let response = SyncResponse::decode(&answer)
            .map_err(|e| TransportError::BadResponse(e.to_string()))?;
        Ok(Exchanged {
            response,
            sent: bytes.len(),
            received: answer.len(),
        })
    }
}
