//! `POST /v3/discovery:endpoints`: Envoy's REST-JSON EDS (SPEC 3.2).
//!
//! `version_info` is a hash of the requested services' routing content, so every node that
//! holds the same hosts gives the same version and Envoy can poll any of them. A request
//! whose version is current gets 304; services without live hosts are left out, so Envoy
//! keeps what it has; a node that is not ready answers 503, which Envoy also survives.

use std::sync::Arc;

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use discovery_api::{DiscoveryRequest, DiscoveryResponse, ServiceName, EDS_TYPE_URL};
use xxhash_rust::xxh3::Xxh3;

use super::body;
use super::registration::require_ready;
use super::{require, ApiError, NodeState};
use crate::auth::Access;
use crate::state::now;

/// The most entries `resource_names` may have, duplicates included. Envoy sends one name
/// per request; the cap bounds the validation work and, with duplicates answered once, the
/// answer: at most this many distinct services, each assignment built once.
pub(crate) const MAX_RESOURCES: usize = 1000;

/// `POST /v3/discovery:endpoints`.
pub(crate) async fn endpoints(
    State(shared): State<Arc<NodeState>>,
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
            "at most {MAX_RESOURCES} resource_names per request, got {}",
            request.resource_names.len()
        )));
    }
    // A name given twice is answered once: otherwise a 7 KB request naming one large service
    // a thousand times builds its assignment a thousand times (139 MB seen). First
    // occurrences keep their order, so the version of a request without repeats is unchanged.
    let mut seen = HashSet::with_capacity(request.resource_names.len());
    let names = request
        .resource_names
        .iter()
        .filter(|n| seen.insert(n.as_str()))
        .map(|n| ServiceName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    require_ready(&shared)?;
    // The version comes from the prepared views' content hashes: a poll whose version is
    // current gets its 304 without an assignment being built.
    let now = now();
    let views: Vec<_> = names.iter().map(|n| shared.registry.view(n, now)).collect();
    let mut hasher = Xxh3::new();
    for (name, view) in names.iter().zip(&views) {
        hasher.update(name.as_str().as_bytes());
        hasher.update(&[0]);
        if view.hosts > 0 {
            hasher.update(&view.content_hash.to_le_bytes());
        }
    }
    let version_info = format!("{:016x}", hasher.digest());
    if request.version_info == version_info {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let resources = names
        .iter()
        .zip(&views)
        .filter(|(_, view)| view.hosts > 0)
        .filter_map(|(name, _)| shared.registry.envoy_assignment(name))
        .collect();
    Ok(Json(DiscoveryResponse {
        version_info,
        resources,
        type_url: EDS_TYPE_URL.to_owned(),
    })
    .into_response())
}
