//! `GET /v1/services`: every service this node holds, with host and stale counts.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use discovery_api::ServicesResponse;

use super::{require, ApiError, AppState};
use crate::auth::Access;

/// `GET /v1/services`.
pub async fn list(
    State(shared): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ServicesResponse>, ApiError> {
    require(&shared, Access::Read, &headers)?;
    Ok(Json(ServicesResponse {
        env: shared.config.registry.env.clone(),
        services: shared.registry.services(),
    }))
}
