//! `GET /v1/xds/clients`: the xDS streams this node serves (Envoy proxies and proxyless
//! gRPC clients): node id, protocol, and per resource type what was sent, ACKed, NACKed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use discovery_api::XdsClientsResponse;

use super::{require, ApiError, NodeState};
use crate::auth::Access;

/// `GET /v1/xds/clients`.
pub(crate) async fn clients(
    State(shared): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<XdsClientsResponse>, ApiError> {
    require(&shared, Access::Read, &headers)?;
    Ok(Json(XdsClientsResponse {
        node_id: shared.config.registry.node.to_string(),
        clients: shared.xds_clients.snapshot(),
    }))
}
