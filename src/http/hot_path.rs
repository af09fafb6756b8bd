//! The hot path: a plain `GET /v1/registration/{service}` (no query string) answered before
//! the axum router, straight from the prepared view.
//!
//! Proxies poll host lists far more often than anything else reaches the node, and for that
//! one request the router's machinery (route matching, boxed middleware, extractors) cost
//! about as much CPU as the kernel's work of sending the answer (see docs/benchmarks.md). The
//! answer itself is produced by the same functions as the routed handler
//! ([`registration::list_now`]) and counted by the same accounting ([`record`]), so the two
//! paths cannot answer differently; the tests below hold them byte-equal.
//!
//! Anything else, a long poll, a percent-encoded or nested path included, returns `None` and
//! takes the router.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};

use super::{on_panic, record, registration, AppState};

/// The route this path answers, as the router names it in metrics.
const ROUTE: &str = "/v1/registration/{service}";
const PREFIX: &str = "/v1/registration/";

/// Answers `request` if it is a plain host-list read, else `None` (the router's).
pub fn answer<B>(shared: &AppState, request: &Request<B>) -> Option<Response> {
    if request.method() != Method::GET || request.uri().query().is_some() {
        return None;
    }
    let service = request.uri().path().strip_prefix(PREFIX)?;
    // Only the name characters: a `%` (percent-decoding), a `/` (another route) or anything
    // else the router would treat differently goes the long way.
    if service.is_empty()
        || !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return None;
    }
    let started = Instant::now();
    let headers = request.headers();
    // Like the router's panic layer: a bug becomes a logged JSON 500, not a dropped connection.
    let response = std::panic::catch_unwind(AssertUnwindSafe(|| {
        registration::list_now(shared, service, headers).into_response()
    }))
    .unwrap_or_else(on_panic);
    record(
        shared,
        Cow::Borrowed(ROUTE),
        &Method::GET,
        started,
        &response,
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use clap::Parser;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::config::{Config, ServeArgs};
    use crate::shared::Shared;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn shared_with(flags: &[&str]) -> Arc<Shared> {
        let mut argv = vec!["serve", "--env", "test", "--node-id", "n1"];
        argv.extend_from_slice(flags);
        Arc::new(Shared::new(
            Config::from_args(Flags::parse_from(argv).serve).unwrap(),
        ))
    }

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

    async fn register(shared: &Arc<Shared>, body: &str) {
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
    async fn same_answer_as_the_router(shared: &Arc<Shared>, uri: &str, headers: &[(&str, &str)]) {
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
            .view(&"web".parse().unwrap(), crate::shared::now())
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
