//! The HTTP API (SPEC 3): `router(shared)` builds the axum router; one file per resource.
//!
//! Handlers parse and check input (through `discovery-api`), call the registry and shape the
//! answer. They hold no lock across an `.await` and never talk to the gossip layer: what they
//! need of it (readiness, the peer table) is in [`Shared`].

mod body;
mod dashboard;
mod envoy;
mod error;
mod health;
mod loadbalancing;
mod metrics;
mod peers;
mod registration;
mod services;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;

use crate::auth::{self, Access};
use crate::shared::Shared;

/// The state handlers share.
pub type AppState = Arc<Shared>;

/// The router of every public endpoint. The gossip endpoints are merged in by `server.rs`.
pub fn router(shared: AppState) -> Router {
    Router::new()
        .route(
            "/v1/registration/{service}",
            get(registration::list).post(registration::register),
        )
        .route(
            "/v1/registration/repo/{repo}",
            get(registration::list_repo).delete(registration::delete_repo_service),
        )
        .route(
            "/v1/registration/{service}/{ip}",
            axum::routing::delete(registration::delete),
        )
        .route(
            "/v1/loadbalancing/{service}",
            post(loadbalancing::set_service),
        )
        .route(
            "/v1/loadbalancing/{service}/{ip}",
            post(loadbalancing::set_host),
        )
        .route("/v3/discovery:endpoints", post(envoy::endpoints))
        .route("/v1/services", get(services::list))
        .route("/v1/peers", get(peers::list))
        .route("/healthz", get(health::healthz))
        .route("/healthcheck", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/", get(dashboard::page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// Wraps a router (the public one merged with gossip) with request accounting.
pub fn instrument(router: Router, shared: AppState) -> Router {
    router.layer(middleware::from_fn_with_state(shared, observe))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see api/openapi.yaml".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Checks a bearer token for a class of request.
pub(crate) fn require(
    shared: &Shared,
    access: Access,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    if auth::allowed(&shared.config.tokens, access, headers) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Counts every request by route and status, and logs it at debug.
async fn observe(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await.into_response();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    shared
        .metrics
        .request(&route, method.as_str(), status, elapsed.as_secs_f64());
    tracing::debug!(%method, route, status, latency_us = elapsed.as_micros() as u64, "request");
    response
}

#[cfg(test)]
mod tests;
