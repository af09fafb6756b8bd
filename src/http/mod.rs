//! The HTTP API (SPEC 3): `router(shared)` builds the axum router; one file per resource.
//!
//! Handlers parse and check input (through `discovery-api`), call the registry and shape the
//! answer. They hold no lock across an `.await` and never talk to the gossip layer: what they
//! need of it (readiness, the peer table) is in [`Shared`]. [`hot_path`] answers the two
//! most frequent requests (a plain host-list read, a heartbeat) before the router, with the
//! same handler functions and accounting.

mod body;
mod dashboard;
mod envoy;
mod error;
mod health;
pub mod hot_path;
pub mod limits;
mod loadbalancing;
mod metrics;
mod peers;
mod prometheus;
mod registration;
mod services;
mod xds;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

pub use error::ApiError;

use crate::auth::{self, Access};
use crate::shared::Shared;

/// The state handlers share.
pub type AppState = Arc<Shared>;

/// Every public endpoint as `(method, path pattern)`. This one list builds the router and is
/// what `tests/openapi.rs` holds `api/openapi.yaml` equal to, so the two cannot drift. The
/// gossip endpoints are not here: `server.rs` merges them in from the gossip layer.
pub const ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/v1/registration/{service}"),
    (Method::POST, "/v1/registration/{service}"),
    (Method::GET, "/v1/registration/repo/{repo}"),
    (Method::DELETE, "/v1/registration/repo/{repo}"),
    (Method::DELETE, "/v1/registration/{service}/{ip}"),
    (Method::POST, "/v1/loadbalancing/{service}"),
    (Method::POST, "/v1/loadbalancing/{service}/{ip}"),
    (Method::POST, "/v3/discovery:endpoints"),
    (Method::GET, "/v1/services"),
    (Method::GET, "/v1/peers"),
    (Method::GET, "/v1/xds/clients"),
    (Method::GET, "/v1/prometheus/targets"),
    (Method::GET, "/healthz"),
    (Method::GET, "/healthcheck"),
    (Method::GET, "/readyz"),
    (Method::GET, "/metrics"),
    (Method::GET, "/"),
];

/// The handler of one entry of [`ROUTES`].
///
/// # Panics
/// On an entry with no handler: the first test that builds a router finds it.
fn handler(method: &Method, path: &str) -> MethodRouter<AppState> {
    match (method.as_str(), path) {
        ("GET", "/v1/registration/{service}") => get(registration::list),
        ("POST", "/v1/registration/{service}") => post(registration::register),
        ("GET", "/v1/registration/repo/{repo}") => get(registration::list_repo),
        ("DELETE", "/v1/registration/repo/{repo}") => delete(registration::delete_repo_service),
        ("DELETE", "/v1/registration/{service}/{ip}") => delete(registration::delete),
        ("POST", "/v1/loadbalancing/{service}") => post(loadbalancing::set_service),
        ("POST", "/v1/loadbalancing/{service}/{ip}") => post(loadbalancing::set_host),
        ("POST", "/v3/discovery:endpoints") => post(envoy::endpoints),
        ("GET", "/v1/services") => get(services::list),
        ("GET", "/v1/peers") => get(peers::list),
        ("GET", "/v1/xds/clients") => get(xds::clients),
        ("GET", "/v1/prometheus/targets") => get(prometheus::targets),
        ("GET", "/healthz") => get(health::healthz),
        ("GET", "/healthcheck") => get(health::healthcheck),
        ("GET", "/readyz") => get(health::readyz),
        ("GET", "/metrics") => get(metrics::render),
        ("GET", "/") => get(dashboard::page),
        _ => panic!("{method} {path} is in ROUTES but has no handler"),
    }
}

/// The router of every public endpoint. The gossip endpoints are merged in by `server.rs`.
pub fn router(shared: AppState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, (method, path)| {
            // Two methods on one path merge into one route.
            router.route(path, handler(method, path))
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// Wraps a router (the public one merged with gossip) with request accounting, and turns a
/// panic (a bug: no input should cause one) into a logged JSON 500 instead of a dropped
/// connection.
pub fn instrument(router: Router, shared: AppState) -> Router {
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn_with_state(shared, observe))
}

fn on_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(detail, "handler panicked");
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(discovery_api::ErrorBody {
            error: "internal error".into(),
        }),
    )
        .into_response()
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
    let route = match request.extensions().get::<MatchedPath>() {
        None => Cow::Borrowed("unmatched"),
        // The public routes' labels are the static patterns of `ROUTES`; others (gossip) are
        // rare enough to allocate.
        Some(path) => ROUTES
            .iter()
            .find(|(_, pattern)| *pattern == path.as_str())
            .map_or_else(
                || Cow::Owned(path.as_str().to_owned()),
                |(_, p)| Cow::Borrowed(*p),
            ),
    };
    let method = request.method().clone();
    let response = next.run(request).await.into_response();
    record(&shared, route, &method, started, &response);
    response
}

/// The accounting of one answered request, shared by [`observe`] and the hot path.
fn record(
    shared: &Shared,
    route: Cow<'static, str>,
    method: &Method,
    started: Instant,
    response: &Response,
) {
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::debug!(%method, %route, status, latency_us = elapsed.as_micros() as u64, "request");
    shared
        .metrics
        .request(route, method, status, elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests;
