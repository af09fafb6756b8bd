//! `/v1/loadbalancing/...`: the operator's weight override of one host or of a whole service
//! (SPEC 3.1). It survives heartbeats until the host expires or is deleted.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use discovery_api::WeightUpdate;

use super::body::{self, Encoding, Segments};
use super::registration::{ip_literal, service_name};
use super::{require, ApiError, AppState};
use crate::auth::Access;
use crate::shared::now;

/// `POST /v1/loadbalancing/{service}/{ip_address}`.
pub async fn set_host(
    State(shared): State<AppState>,
    Segments((service, ip)): Segments<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    set(&shared, &service, Some(&ip), &headers, body).await
}

/// `POST /v1/loadbalancing/{service}`.
pub async fn set_service(
    State(shared): State<AppState>,
    Segments(service): Segments<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    set(&shared, &service, None, &headers, body).await
}

async fn set(
    shared: &AppState,
    service: &str,
    ip: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    require(shared, Access::Admin, headers)?;
    let service = service_name(service)?;
    let ip = ip.map(ip_literal).transpose()?;
    let encoding = body::encoding(headers)?;
    let limits = &shared.config.limits;
    let bytes = body::read(body, limits.max_body, limits.read_timeout).await?;
    let update = match encoding {
        Encoding::Form => WeightUpdate::from_form(&bytes)?,
        Encoding::Json => WeightUpdate::from_json(&bytes)?,
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
        Err(_) => Err(ApiError::NotFound(match ip {
            Some(ip) => format!("no live host of service {service:?} at {ip}"),
            None => format!("service {service:?} has no live hosts"),
        })),
    }
}
