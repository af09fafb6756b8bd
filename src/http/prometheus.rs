//! `GET /v1/prometheus/targets`: Prometheus's HTTP service discovery (`http_sd_configs`).
//!
//! A node that is not ready answers 503, which Prometheus treats as a failed refresh: it
//! keeps the targets it has instead of dropping them all.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::registration::require_ready;
use super::{require, ApiError, NodeState};
use crate::auth::Access;

/// `GET /v1/prometheus/targets`.
pub(crate) async fn targets(
    State(shared): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require(&shared, Access::Read, &headers)?;
    require_ready(&shared)?;
    let body = answer(&shared).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The answer, built again only after a routing change (every live host of the node is in
/// it: at a million hosts, seconds of work). One request at a time builds it, on a blocking
/// thread; the others wait for it and share it.
async fn answer(shared: &Arc<NodeState>) -> Result<Bytes, ApiError> {
    let mut cached = shared.prometheus_answer.lock().await;
    // Read before building: a change during the build makes the next request build again.
    let generation = shared.routing_generation();
    if let Some((at, body)) = cached.as_ref() {
        if *at == generation {
            return Ok(body.clone());
        }
    }
    let state = shared.clone();
    let built = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&state.registry.prometheus_targets())
    })
    .await;
    let body = match built {
        Ok(Ok(body)) => Bytes::from(body),
        _ => {
            return Err(ApiError::Unavailable(
                "the target list could not be built".into(),
            ))
        }
    };
    *cached = Some((generation, body.clone()));
    Ok(body)
}
