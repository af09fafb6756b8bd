//! `GET /v1/prometheus/targets`: Prometheus's HTTP service discovery (`http_sd_configs`).
//!
//! A node that is not ready answers 503, which Prometheus treats as a failed refresh: it
//! keeps the targets it has instead of dropping them all.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use discovery_api::TargetGroup;

use super::registration::require_ready;
use super::{require, ApiError, NodeState};
use crate::auth::Access;

/// `GET /v1/prometheus/targets`.
pub(crate) async fn targets(
    State(shared): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<TargetGroup>>, ApiError> {
    require(&shared, Access::Read, &headers)?;
    require_ready(&shared)?;
    Ok(Json(shared.registry.prometheus_targets()))
}
