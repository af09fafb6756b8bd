//! How a node reaches a peer: one request, one response. The node loop only sees this trait,
//! so the same code runs over HTTP between processes and over an in-memory network in tests
//! and benchmarks.

use std::future::Future;

use super::messages::{SyncRequest, SyncResponse};

/// Why an exchange with a peer failed. Every kind counts as a failed round; none is fatal.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made, or the link is cut.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The peer's TLS certificate does not name the address it was dialled at: that address
    /// can never be verified (see `PeerTable::misnamed`).
    #[error("peer unreachable at this address: {0}")]
    WrongName(String),
    /// The peer did not answer in time.
    #[error("peer timed out")]
    Timeout,
    /// The peer refused the request (status and a short reason).
    #[error("peer refused the exchange: {0}")]
    Refused(String),
    /// The peer refused the request because it carries the peer's own node id: the peer is
    /// this node, or shares its id (`409` over HTTP).
    #[error("the peer has this node's own node id")]
    SameId,
    /// The answer was not a gossip message (or too large).
    #[error("bad answer from peer: {0}")]
    BadResponse(String),
}

/// One push-pull exchange with a peer, by its base URL.
pub trait Transport: Send + Sync + 'static {
    /// Sends `msg` to `peer` and returns its answer. `bytes` reports the encoded sizes
    /// (sent, received) for the byte counters, even when the answer is refused later.
    fn exchange(
        &self,
        peer: &str,
        msg: SyncRequest,
    ) -> impl Future<Output = Result<Exchanged, TransportError>> + Send;
}

/// An answer and what it cost on the wire.
#[derive(Debug)]
pub struct Exchanged {
    /// The peer's answer.
    pub response: SyncResponse,
    /// Encoded request bytes.
    pub sent: usize,
    /// Encoded response bytes.
    pub received: usize,
}
