//! What the wiring tells gossip: [`Settings`], built from the validated flags by `config.rs`
//! and handed to [`super::spawn`] (or [`super::MemoryNetwork::join`]). Gossip reads its
//! settings here and never the node's `Config`, so the arrow points from the wiring down.

use std::time::Duration;

use crate::registry::NodeId;

/// One node's gossip settings, fixed for its life.
///
/// Not `Debug`: it holds the peer token, which is never logged.
#[derive(Clone)]
pub struct Settings {
    /// This node's id (`--node-id`): sent in every message, and a message that claims it is
    /// refused.
    pub node: NodeId,
    /// Static peers' base URLs (`--peers`), normalized and with the node's scheme.
    pub peers: Vec<String>,
    /// `NAME:PORT` re-resolved for peers (`--peers-dns`).
    pub peers_dns: Option<(String, u16)>,
    /// This node's base URL for its peers (`--advertise`), maybe without a port (then the
    /// listener's); `None`: derived from the listen address.
    pub advertise: Option<String>,
    /// Time between anti-entropy rounds (`--gossip-interval`).
    pub gossip_interval: Duration,
    /// How long an empty node with no reachable peer waits before reporting ready
    /// (`--warmup`).
    pub warmup: Duration,
    /// `https` when the node speaks TLS, else `http`: the scheme of its own and its peers'
    /// URLs, and of the URLs built from a sender's source address or from `--peers-dns`.
    pub scheme: &'static str,
    /// The token peers must present, and that this node presents to them (`--peer-token`).
    pub peer_token: Option<String>,
    /// Whether the endpoint requires a verified client certificate (`--tls-client-auth
    /// peers` or `all`): mutual TLS authenticates peers.
    pub client_cert_required: bool,
    /// Longest time to receive a message's body (`--read-timeout`, as for every request).
    pub read_timeout: Duration,
}

impl Settings {
    /// Whether a gossip message must prove where it comes from: the peer token, or a client
    /// certificate under mutual TLS (`/v1/peers` reports it; the start warns without it).
    pub fn authenticated(&self) -> bool {
        self.peer_token.is_some() || self.client_cert_required
    }
}
