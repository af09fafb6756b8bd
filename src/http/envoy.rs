//! `POST /v3/discovery:endpoints`: Envoy's REST-JSON EDS (SPEC 3.2).
//!
//! `version_info` is a hash of the requested services' routing content, so every node that
//! holds the same hosts gives the same version and Envoy can poll any of them. A request
//! whose version is current gets 304; services without live hosts are left out, so Envoy
//! keeps what it has; a node that is not ready answers 503, which Envoy also survives.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use discovery_api::{DiscoveryRequest, DiscoveryResponse, ServiceName, EDS_TYPE_URL};
use xxhash_rust::xxh3::Xxh3;

use super::body;
use super::registration::require_ready;
use super::{require, ApiError, AppState};
use crate::auth::Access;

/// The most services one request may name.
const MAX_RESOURCES: usize = 1000;

/// `POST /v3/discovery:endpoints`.
pub async fn endpoints(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&shared, Access::Read, &headers)?;
    let limits = &shared.config.limits;
    let bytes = body::read(body, limits.max_body, limits.read_timeout).await?;
    let request: DiscoveryRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed DiscoveryRequest: {e}")))?;
    if !request.type_url.is_empty() && request.type_url != EDS_TYPE_URL {
        return Err(ApiError::BadRequest(format!(
            "unsupported type_url {:?}: this endpoint serves {EDS_TYPE_URL}",
            request.type_url
        )));
    }
    if request.resource_names.is_empty() {
        return Err(ApiError::BadRequest(
            "resource_names must name at least one service".into(),
        ));
    }
    if request.resource_names.len() > MAX_RESOURCES {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_RESOURCES} resource_names per request"
        )));
    }
    let names = request
        .resource_names
        .iter()
        .map(|n| ServiceName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    require_ready(&shared)?;
    let mut hasher = Xxh3::new();
    let mut resources = Vec::new();
    for name in &names {
        hasher.update(name.as_str().as_bytes());
        hasher.update(&[0]);
        if let Some((assignment, hash)) = shared.registry.envoy_assignment(name) {
            hasher.update(&hash.to_le_bytes());
            resources.push(assignment);
        }
    }
    let version_info = format!("{:016x}", hasher.digest());
    if request.version_info == version_info {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(Json(DiscoveryResponse {
        version_info,
        resources,
        type_url: EDS_TYPE_URL.to_owned(),
    })
    .into_response())
}
