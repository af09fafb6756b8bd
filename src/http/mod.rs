//! The HTTP API (SPEC 3). [`service`] is what the listener runs for every request: the head's
//! bounds, then the hot path or the router. [`ROUTES`] is the one table of endpoints; one file
//! per resource holds its handlers.
//!
//! Handlers parse and check input (through `discovery-api`), call the registry and shape the
//! answer. They hold no lock across an `.await` and never talk to the gossip layer: what they
//! need of it (readiness, the peer table) is in [`NodeState`]. The hot path answers the two
//! most frequent requests (a plain host-list read, a heartbeat) before the router, with the
//! same handler functions, accounting and panic guard.

mod body;
mod dashboard;
mod envoy;
mod error;
mod health;
mod hot_path;
mod limits;
mod loadbalancing;
mod metrics;
mod peers;
mod prometheus;
mod registration;
mod routes;
mod services;
mod xds;

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use futures_util::future::{Either, FutureExt};
use tower::ServiceExt;

pub(crate) use error::ApiError;
pub(crate) use limits::HYPER_MAX_BUF;
pub use routes::{Route, ROUTES};

use hot_path::Hot;

use crate::auth::{self, Access};
use crate::state::NodeState;

/// The router of every public endpoint, built from [`ROUTES`]. The gossip endpoint is merged
/// in by `server.rs`.
pub(crate) fn router(shared: Arc<NodeState>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            // Two methods on one path merge into one route.
            router.route(route.path, (route.handler)())
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// Wraps a router (the public one merged with gossip) with request accounting and the panic
/// guard. These layers do not reach the hot path: it calls the same [`record`] and
/// [`guard`] itself, so both paths count and guard alike.
pub(crate) fn instrument(router: Router, shared: Arc<NodeState>) -> Router {
    router.layer(middleware::from_fn_with_state(shared, observe))
}

/// Every request a node serves, connection by connection: the head's bounds
/// ([`limits`]), then the hot path for plain host-list reads and heartbeats, and the router
/// (public routes and `extra`, the gossip endpoint) for the rest.
#[derive(Clone)]
pub(crate) struct Service {
    shared: Arc<NodeState>,
    router: Router,
}

/// The node's HTTP service, with `extra` routes (the gossip endpoint) merged into the router.
pub(crate) fn service(shared: Arc<NodeState>, extra: Router) -> Service {
    let router = instrument(router(shared.clone()).merge(extra), shared.clone());
    Service { shared, router }
}

impl Service {
    /// Answers one request from `peer`. Never fails: every error is an answer.
    pub(crate) fn call<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + 'static
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(refused) = limits::refuse(&self.shared, &request) {
            return Either::Left(std::future::ready(Ok(refused)));
        }
        match hot_path::take(&self.shared, request, peer) {
            Hot::Answered(response) => Either::Left(std::future::ready(Ok(response))),
            Hot::Heartbeat(pending) => Either::Right(Either::Left(pending.map(Ok))),
            Hot::Router(request) => {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                Either::Right(Either::Right(self.router.clone().oneshot(request)))
            }
        }
    }
}

/// Runs `f`; a panic (a bug: no input should cause one) is logged and becomes [`Panicked`],
/// a JSON 500, instead of a dropped connection. The one panic guard, of the router and the
/// hot path.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        tracing::error!(detail, "handler panicked");
        Panicked
    })
}

/// A handler panicked (and [`guard`] logged it).
struct Panicked;

impl IntoResponse for Panicked {
    fn into_response(self) -> Response {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(discovery_api::ErrorBody {
                error: "internal error".into(),
            }),
        )
            .into_response()
    }
}

/// A handler's future under [`guard`], at every poll.
struct Guarded<F>(F);

impl<F, R> Future for Guarded<F>
where
    F: Future<Output = R> + Unpin,
    R: IntoResponse,
{
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match guard(|| Pin::new(&mut self.0).poll(cx)) {
            Ok(Poll::Ready(r)) => Poll::Ready(r.into_response()),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panicked) => Poll::Ready(panicked.into_response()),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see api/openapi.yaml".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Checks a bearer token for a class of request.
pub(crate) fn require(
    shared: &NodeState,
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
async fn observe(State(shared): State<Arc<NodeState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = match request.extensions().get::<MatchedPath>() {
        None => Cow::Borrowed("unmatched"),
        // Gossip's endpoint is not in the table, and rare enough to allocate.
        Some(path) => routes::label(path.as_str())
            .map_or_else(|| Cow::Owned(path.as_str().to_owned()), Cow::Borrowed),
    };
    let method = request.method().clone();
    let response = Guarded(std::pin::pin!(next.run(request))).await;
    record(&shared, route, &method, started, &response);
    response
}

/// The accounting of one answered request, shared by [`observe`], the hot path and the head
/// limits.
fn record(
    shared: &NodeState,
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
        .request(route, method.as_str(), status, elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests;
