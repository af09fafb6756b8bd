//! `GET /v1/peers`: this node's view of the cluster, as the gossip layer last published it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use discovery_api::PeersResponse;

use super::{require, ApiError, NodeState};
use crate::auth::Access;
use crate::metrics::TlsCertificate;

/// `GET /v1/peers`.
pub(crate) async fn list(
    State(shared): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<PeersResponse>, ApiError> {
    require(&shared, Access::Read, &headers)?;
    let mut peers = PeersResponse::clone(&shared.peers.load());
    peers.ready = shared.is_ready();
    // TLS is not gossip's: the expiry comes from the gauge the reloader keeps current.
    let not_after = shared.metrics.tls.not_after(TlsCertificate::node);
    peers.tls_certificate_not_after = not_after.map(crate::tls::rfc3339_secs);
    Ok(Json(peers))
}
