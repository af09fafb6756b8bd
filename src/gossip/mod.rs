//! Anti-entropy between registry nodes (SPEC 4). Placeholder until the gossip issue lands:
//! a single node with no peers.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::shared::Shared;

/// The running gossip layer.
pub struct Gossip;

/// Starts gossip for this node.
pub fn spawn(
    shared: Arc<Shared>,
    _addr: SocketAddr,
    _shutdown: CancellationToken,
    _tasks: &TaskTracker,
) -> Gossip {
    if shared.config.cluster.warmup.is_zero() {
        shared.set_ready();
    }
    Gossip
}

impl Gossip {
    /// The gossip endpoints, merged into the node's router.
    pub fn routes(&self) -> axum::Router {
        axum::Router::new()
    }
}
