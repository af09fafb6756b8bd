//! `GET /v1/services`: every service this node holds, with host and stale counts.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use discovery_api::{ExpiryStatus, ServicesResponse};

use super::{require, ApiError, NodeState};
use crate::auth::Access;

/// `GET /v1/services`.
pub(crate) async fn list(
    State(shared): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<ServicesResponse>, ApiError> {
    require(&shared, Access::Read, &headers)?;
    let measure = shared.registry.guard_measure();
    Ok(Json(ServicesResponse {
        env: shared.config.registry.env.clone(),
        services: shared.registry.services(),
        expiry: Some(ExpiryStatus {
            guard_engaged: shared.registry.guard_engaged(),
            lost: measure.lost as u64,
            of: measure.base as u64,
            grace: shared.registry.grace_count() as u64,
        }),
    }))
}
