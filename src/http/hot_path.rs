//! The hot path: the two requests a registry serves by the thousand each second, a plain
//! `GET /v1/registration/{service}` (no query string) and the heartbeat
//! `POST /v1/registration/{service}` (no query string), taken before the axum router.
//!
//! For these requests the router's machinery (route matching, boxed middleware, extractors)
//! cost about as much CPU as the kernel's work of sending a host list (see
//! docs/benchmarks.md). The answers are produced by the same functions as the routed
//! handlers ([`registration::list_now`], [`registration::register_now`]), counted by the same
//! accounting ([`record`]) and guarded by the same panic guard ([`guard`]), so the two paths
//! cannot answer differently; the tests below hold them byte-equal. Which routes are hot, and
//! their path and metrics label, come from the route table ([`super::routes`]).
//!
//! Anything else, a long poll, `?auto_ip=`, a percent-encoded or nested path included, is
//! handed back untouched for the router.

use std::sync::Arc;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use axum::BoxError;

use super::routes::HOT_PATH;
use super::{guard, record, registration, Guarded, NodeState};

/// The bytes of [`HOT_PATH`] before its one parameter, `{service}`.
const PREFIX_LEN: usize = HOT_PATH.len() - "{service}".len();

/// A heartbeat being answered.
pub(super) type Pending = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What the hot path makes of a request.
pub(super) enum Hot<B> {
    /// A host-list read, answered at once.
    Answered(Response),
    /// A heartbeat, answered once its body is read.
    Heartbeat(Pending),
    /// Anything else, for the router.
    Router(Request<B>),
}

/// The `{service}` of a hot-path request, or `None` when the router must see it: only the
/// name characters, so a `%` (percent-decoding), a `/` (another route) or a query string
/// goes the long way.
fn service_of<B>(request: &Request<B>) -> Option<&str> {
    if request.uri().query().is_some() {
        return None;
    }
    let service = request.uri().path().strip_prefix(&HOT_PATH[..PREFIX_LEN])?;
    let plain = !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    plain.then_some(service)
}

/// Takes `request` if it is a plain host-list read or heartbeat from `peer`.
pub(super) fn take<B>(shared: &Arc<NodeState>, request: Request<B>, peer: SocketAddr) -> Hot<B>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(response) = answer(shared, &request) {
        return Hot::Answered(response);
    }
    if request.method() != Method::POST {
        return Hot::Router(request);
    }
    let Some(service) = service_of(&request).map(str::to_owned) else {
        return Hot::Router(request);
    };
    let started = Instant::now();
    let shared = shared.clone();
    let (parts, body) = request.into_parts();
    Hot::Heartbeat(Box::pin(async move {
        let no_query = HashMap::new();
        let heartbeat = std::pin::pin!(registration::register_now(
            &shared,
            &service,
            &no_query,
            &parts.headers,
            Some(peer),
            Body::new(body),
        ));
        let response = Guarded(heartbeat).await;
        record(
            &shared,
            Cow::Borrowed(HOT_PATH),
            &Method::POST,
            started,
            &response,
        );
        response
    }))
}

/// Answers `request` if it is a plain host-list read, else `None`.
pub(super) fn answer<B>(shared: &Arc<NodeState>, request: &Request<B>) -> Option<Response> {
    if request.method() != Method::GET {
        return None;
    }
    let service = service_of(request)?;
    let started = Instant::now();
    let headers = request.headers();
    let response = guard(|| registration::list_now(shared, service, headers).into_response())
        .unwrap_or_else(IntoResponse::into_response);
    record(
        shared,
        Cow::Borrowed(HOT_PATH),
        &Method::GET,
        started,
        &response,
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{header, Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::state::NodeState;

    use crate::http::tests::shared_with;

    /// Status, headers and body of an answer. `Content-Length` is left out once checked: the
    /// router sets it, and hyper sets it on the wire from the body's exact size on both paths.
    async fn parts(
        response: axum::response::Response,
    ) -> (StatusCode, Vec<(String, String)>, Vec<u8>) {
        let status = response.status();
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        headers.sort();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        headers.retain(|(k, v)| {
            if k == "content-length" {
                assert_eq!(v, &body.len().to_string());
            }
            k != "content-length"
        });
        (status, headers, body.to_vec())
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Body::empty()).unwrap()
    }

    async fn register(shared: &Arc<NodeState>, body: &str) {
        let req = Request::post("/v1/registration/web")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, "Bearer w")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = super::super::router(shared.clone())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Every request the hot path takes gets the router's answer byte for byte, and is
    /// counted the same way.
    async fn same_answer_as_the_router(
        shared: &Arc<NodeState>,
        uri: &str,
        headers: &[(&str, &str)],
    ) {
        let router = super::super::instrument(super::super::router(shared.clone()), shared.clone());
        let routed = parts(router.oneshot(get(uri, headers)).await.unwrap()).await;
        let hot = super::answer(shared, &get(uri, headers))
            .unwrap_or_else(|| panic!("{uri} should take the hot path"));
        assert_eq!(parts(hot).await, routed, "{uri} {headers:?}");
    }

    #[tokio::test]
    async fn hot_path_answers_exactly_like_the_router() {
        let shared = shared_with(&["--read-token", "r", "--write-token", "w"]);
        shared.set_ready();
        register(
            &shared,
            "ip=10.0.0.2&port=80&revision=r1&tags=%7B%22az%22%3A%22z1%22%7D",
        )
        .await;
        register(
            &shared,
            "ip=10.0.0.1&port=81&revision=r1&service_repo_name=web",
        )
        .await;
        let auth = ("authorization", "Bearer r");
        let etag = shared
            .registry
            .view(&"web".parse().unwrap(), crate::state::now())
            .etag
            .clone();
        let cases: &[(&str, Vec<(&str, &str)>)] = &[
            ("/v1/registration/web", vec![auth]),
            ("/v1/registration/web", vec![auth, ("if-none-match", &etag)]),
            (
                "/v1/registration/web",
                vec![auth, ("if-none-match", "W/\"other\", *")],
            ),
            ("/v1/registration/web", vec![]),
            ("/v1/registration/web", vec![("authorization", "Bearer w")]),
            ("/v1/registration/unknown.svc_1", vec![auth]),
            ("/v1/registration/repo", vec![auth]),
            (
                &*format!("/v1/registration/{}", "a".repeat(129)),
                vec![auth],
            ),
        ];
        for (uri, headers) in cases {
            same_answer_as_the_router(&shared, uri, headers).await;
        }
        let metrics = shared.metrics.render();
        assert!(
            metrics.contains(r#"discovery_http_requests_total{route="/v1/registration/{service}",method="GET",status="200"} 6"#),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn hot_path_refuses_reads_until_ready_like_the_router() {
        let shared = shared_with(&["--peers", "http://127.0.0.1:1"]);
        same_answer_as_the_router(&shared, "/v1/registration/web", &[]).await;
        let r = super::answer(&shared, &get("/v1/registration/web", &[])).unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    fn post(content_type: &str, token: &str, body: &str) -> Request<Body> {
        Request::post("/v1/registration/web")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    /// The counters of a node's `/metrics`, sorted (latency sums differ between any two runs).
    fn counters(shared: &NodeState) -> Vec<String> {
        let mut lines: Vec<String> = shared
            .metrics
            .render()
            .lines()
            .filter(|l| {
                l.starts_with("discovery_heartbeats_total")
                    || l.starts_with("discovery_http_requests_total")
            })
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[tokio::test]
    async fn hot_heartbeats_answer_count_and_register_like_the_router() {
        let flags = ["--write-token", "w", "--max-body", "1KiB"];
        let (routed, hot) = (shared_with(&flags), shared_with(&flags));
        routed.set_ready();
        hot.set_ready();
        let router = super::super::instrument(super::super::router(routed.clone()), routed.clone());
        let peer: SocketAddr = "10.9.8.7:5555".parse().unwrap();
        let form = "application/x-www-form-urlencoded";
        let az = "tags=%7B%22az%22%3A%22z1%22%7D";
        let cases = [
            (form, "w", format!("ip=10.0.0.1&port=80&revision=r1&{az}")),
            (form, "w", format!("ip=10.0.0.1&port=80&revision=r1&{az}")),
            (form, "w", "ip=10.0.0.1&port=80&revision=r2".to_owned()),
            (
                "application/json",
                "w",
                r#"{"ip":"10.0.0.2","port":81,"revision":"r1","tags":{"canary":true}}"#.to_owned(),
            ),
            (form, "w", "port=82&revision=r1&auto_ip=true".to_owned()),
            (form, "w", "ip=10.0.0.3&port=0&revision=r1".to_owned()),
            (
                "text/plain",
                "w",
                "ip=10.0.0.3&port=80&revision=r1".to_owned(),
            ),
            (form, "nope", "ip=10.0.0.4&port=80&revision=r1".to_owned()),
            (
                form,
                "w",
                format!("ip=10.0.0.5&port=80&revision={}", "r".repeat(2000)),
            ),
        ];
        for (content_type, token, body) in &cases {
            let mut req = post(content_type, token, body);
            req.extensions_mut().insert(ConnectInfo(peer));
            let via_router = parts(router.clone().oneshot(req).await.unwrap()).await;
            let super::Hot::Heartbeat(pending) =
                super::take(&hot, post(content_type, token, body), peer)
            else {
                panic!("a plain heartbeat should take the hot path");
            };
            assert_eq!(parts(pending.await).await, via_router, "{body}");
        }
        let web = "web".parse().unwrap();
        let now = crate::state::now();
        assert_eq!(
            hot.registry.view(&web, now).etag,
            routed.registry.view(&web, now).etag
        );
        assert_eq!(hot.registry.host_count(), 3);
        assert_eq!(counters(&hot), counters(&routed));
    }

    #[test]
    fn everything_but_a_plain_host_list_read_or_heartbeat_takes_the_router() {
        let shared = shared_with(&[]);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for uri in [
            "/v1/registration/web?auto_ip=true",
            "/v1/registration/w%65b",
            "/v1/registration/web/10.0.0.1",
            "/v1/loadbalancing/web",
        ] {
            let req = Request::post(uri).body(Body::empty()).unwrap();
            assert!(
                matches!(super::take(&shared, req, peer), super::Hot::Router(_)),
                "POST {uri}"
            );
        }
    }

    #[test]
    fn everything_but_a_plain_host_list_read_takes_the_router() {
        let shared = shared_with(&[]);
        for (method, uri) in [
            ("POST", "/v1/registration/web"),
            ("DELETE", "/v1/registration/web"),
            ("GET", "/v1/registration/web?index=3&wait=1s"),
            ("GET", "/v1/registration/web?"),
            ("GET", "/v1/registration/w%65b"),
            ("GET", "/v1/registration/web/"),
            ("GET", "/v1/registration/repo/web"),
            ("GET", "/v1/registration/"),
            ("GET", "/v1/services"),
            ("GET", "/metrics"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            assert!(super::answer(&shared, &req).is_none(), "{method} {uri}");
        }
    }
}
