//! The one table of public endpoints. The router is built from it, `tests/openapi.rs` holds
//! `api/openapi.yaml` equal to it, request metrics take their `route` label from it, and
//! [`super::hot_path`] takes its path and label from the entries marked `hot`. The gossip
//! endpoint is not here: the gossip layer owns it, and `server.rs` merges it in.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{delete, get, post, MethodRouter};

use super::{
    dashboard, envoy, health, loadbalancing, metrics, peers, prometheus, registration, services,
    xds,
};
use crate::state::NodeState;

/// One public endpoint.
pub struct Route {
    /// The method this entry serves (two entries may share a path).
    pub method: Method,
    /// The path pattern in axum's syntax, as it is written in `api/openapi.yaml` and in the
    /// `route` label of `discovery_http_requests_total`.
    pub path: &'static str,
    /// Plain requests of this route (a plain `{service}`, no query string) are answered by
    /// the hot path before the router, by the same handler functions.
    pub(crate) hot: bool,
    /// Builds the route's axum handler.
    pub(crate) handler: Handler,
}

/// Builds a route's axum handler.
type Handler = fn() -> MethodRouter<Arc<NodeState>>;

const fn route(method: Method, path: &'static str, handler: Handler) -> Route {
    Route {
        method,
        path,
        hot: false,
        handler,
    }
}

const fn hot(method: Method, path: &'static str, handler: Handler) -> Route {
    let mut route = route(method, path, handler);
    route.hot = true;
    route
}

/// Every public endpoint.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    hot(Method::GET, "/v1/registration/{service}", || get(registration::list)),
    hot(Method::POST, "/v1/registration/{service}", || post(registration::register)),
    route(Method::GET, "/v1/registration/repo/{repo}", || get(registration::list_repo)),
    route(Method::DELETE, "/v1/registration/repo/{repo}", || delete(registration::delete_repo_service)),
    route(Method::DELETE, "/v1/registration/{service}/{ip}", || delete(registration::delete)),
    route(Method::POST, "/v1/loadbalancing/{service}", || post(loadbalancing::set_service)),
    route(Method::POST, "/v1/loadbalancing/{service}/{ip}", || post(loadbalancing::set_host)),
    route(Method::POST, "/v3/discovery:endpoints", || post(envoy::endpoints)),
    route(Method::GET, "/v1/services", || get(services::list)),
    route(Method::GET, "/v1/peers", || get(peers::list)),
    route(Method::GET, "/v1/xds/clients", || get(xds::clients)),
    route(Method::GET, "/v1/prometheus/targets", || get(prometheus::targets)),
    route(Method::GET, "/healthz", || get(health::healthz)),
    route(Method::GET, "/healthcheck", || get(health::healthcheck)),
    route(Method::GET, "/readyz", || get(health::readyz)),
    route(Method::GET, "/metrics", || get(metrics::render)),
    route(Method::GET, "/", || get(dashboard::page)),
];

/// The path pattern of the hot routes: the first entry marked `hot` (the table's tests hold
/// every hot entry to this one path, with one `{service}` parameter at its end).
pub(crate) const HOT_PATH: &str = first_hot(ROUTES);

const fn first_hot(routes: &[Route]) -> &'static str {
    let mut i = 0;
    while i < routes.len() {
        if routes[i].hot {
            return routes[i].path;
        }
        i += 1;
    }
    // Evaluated at compile time: a table without a hot entry does not build.
    panic!("no route is marked hot")
}

/// The table's label for a matched path pattern: a `&'static str` for public routes, so
/// that counting a request allocates nothing.
pub(crate) fn label(pattern: &str) -> Option<&'static str> {
    ROUTES.iter().find(|r| r.path == pattern).map(|r| r.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_routes_are_the_host_list_read_and_the_heartbeat_of_one_service_pattern() {
        let hot: Vec<(&Method, &str)> = ROUTES
            .iter()
            .filter(|r| r.hot)
            .map(|r| (&r.method, r.path))
            .collect();
        assert_eq!(hot, [(&Method::GET, HOT_PATH), (&Method::POST, HOT_PATH)]);
        assert!(HOT_PATH.ends_with("/{service}"));
        assert_eq!(HOT_PATH.matches('{').count(), 1);
    }

    #[test]
    fn no_two_entries_share_a_method_and_a_path() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    a.method != b.method || a.path != b.path,
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
