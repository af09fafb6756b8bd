//! `/v1/loadbalancing/...`: the operator's weight override of one host or of a whole service
//! (SPEC 3.1). It survives heartbeats until the host expires or is deleted.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use discovery_api::WeightUpdate;

use super::body::{self, Payload, Segments};
use super::registration::{ip_literal, service_name};
use super::{require, ApiError, NodeState};
use crate::auth::Access;
use crate::state::now;

/// `POST /v1/loadbalancing/{service}/{ip_address}`.
pub(crate) async fn set_host(
    State(shared): State<Arc<NodeState>>,
    Segments((service, ip)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    set(&shared, &service, Some(&ip), &headers, body).await
}

/// `POST /v1/loadbalancing/{service}`.
pub(crate) async fn set_service(
    State(shared): State<Arc<NodeState>>,
    Segments(service): Segments<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    set(&shared, &service, None, &headers, body).await
}

async fn set(
    shared: &Arc<NodeState>,
    service: &str,
    ip: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    require(shared, Access::Admin, headers)?;
    let service = service_name(service)?;
    let ip = ip.map(ip_literal).transpose()?;
    let limits = &shared.config.limits;
    let update =
        match body::read_payload(headers, body, limits.max_body, limits.read_timeout).await? {
            Payload::Form(bytes) => WeightUpdate::from_form(&bytes)?,
            Payload::Json(bytes) => WeightUpdate::from_json(&bytes)?,
            Payload::Fields(fields) => WeightUpdate::from_text_fields(fields)?,
        };
    match shared
        .registry
        .set_weight(&service, ip, update.load_balancing_weight, now())
    {
        Ok(change) => {
            if let Some(change) = change {
                shared.publish(std::slice::from_ref(&change));
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Err(_) => match ip {
            Some(ip) => Err(ApiError::NotFound(format!(
                "no live host of service {service:?} at {ip}"
            ))),
            // The seed answered 204 for a service with no hosts: nothing to weigh is not an
            // error for a service-wide setting.
            None => Ok(StatusCode::NO_CONTENT),
        },
    }
}
