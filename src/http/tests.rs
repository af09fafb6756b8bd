//! Tests of `router(state)` with `oneshot`: status codes, bodies and headers of every route,
//! and that bad input changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use clap::Parser;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::config::{Config, ServeArgs};
use crate::state::NodeState;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A node's shared state from `serve` flags (env `test`, node `n1`), as the binary builds it.
pub(super) fn shared_with(flags: &[&str]) -> Arc<NodeState> {
    let mut argv = vec!["serve", "--env", "test", "--node-id", "n1"];
    argv.extend_from_slice(flags);
    let config = Config::from_args(Flags::parse_from(argv).serve).unwrap();
    Arc::new(NodeState::new(config))
}

fn app(shared: &Arc<NodeState>) -> Router {
    super::router(shared.clone())
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn json_post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).unwrap()
}

const WEB1: &str = "ip=10.0.0.1&port=80&revision=r1&tags=%7B%22az%22%3A%22z1%22%7D";

#[tokio::test]
async fn form_heartbeat_is_served_with_etag_index_and_304() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    let r = send(&app, form("/v1/registration/web", WEB1)).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({})));
    let r = send(&app, get("/v1/registration/web")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-discovery-index"), "1");
    let etag = r.header("etag").to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let body = r.json();
    assert_eq!(body["service"], "web");
    assert_eq!(body["env"], "test");
    assert_eq!(body["hosts"][0]["ip_address"], "10.0.0.1");
    assert_eq!(body["hosts"][0]["tags"], json!({"az": "z1"}));
    let cached = Request::get("/v1/registration/web")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let r = send(&app, cached).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    // A refresh does not change the validator.
    send(&app, form("/v1/registration/web", WEB1)).await;
    let r = send(&app, get("/v1/registration/web")).await;
    assert_eq!(r.header("etag"), etag);
    assert_eq!(r.header("x-discovery-index"), "1");
}

#[tokio::test]
async fn json_heartbeat_and_auto_ip_use_the_connecting_address() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    let r = send(
        &app,
        json_post(
            "/v1/registration/api",
            json!({"ip_address": "::1", "port": 9000, "revision": "abc", "tags": {"canary": true}, "status": "draining", "ttl": 30}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let peer: SocketAddr = "[::ffff:192.168.1.20]:5555".parse().unwrap();
    let mut req = form(
        "/v1/registration/api?auto_ip=true",
        "port=9001&revision=abc",
    );
    req.extensions_mut().insert(ConnectInfo(peer));
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
    let hosts = send(&app, get("/v1/registration/api")).await.json()["hosts"].clone();
    assert_eq!(hosts[0]["ip_address"], "192.168.1.20");
    assert_eq!(hosts[1]["ip_address"], "::1");
    assert_eq!(
        (hosts[1]["status"].clone(), hosts[1]["ttl"].clone()),
        (json!("draining"), json!(30))
    );
}

#[tokio::test]
async fn every_invalid_input_gets_400_and_changes_nothing() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    send(&app, form("/v1/registration/web", WEB1)).await;
    let before = send(&app, get("/v1/registration/web")).await.body;
    let long = "a".repeat(129);
    let tags33: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!(1))).collect();
    let cases: Vec<(String, Request<Body>)> = vec![
        (
            "service charset".into(),
            form("/v1/registration/we%20b", WEB1),
        ),
        (
            "service length".into(),
            form(&format!("/v1/registration/{long}"), WEB1),
        ),
        (
            "host name as ip".into(),
            form("/v1/registration/web", "ip=db.local&port=80&revision=r"),
        ),
        (
            "missing ip".into(),
            form("/v1/registration/web", "port=80&revision=r"),
        ),
        (
            "port 0".into(),
            form("/v1/registration/web", "ip=10.0.0.1&port=0&revision=r"),
        ),
        (
            "port 65536".into(),
            form("/v1/registration/web", "ip=10.0.0.1&port=65536&revision=r"),
        ),
        (
            "port text".into(),
            form("/v1/registration/web", "ip=10.0.0.1&port=http&revision=r"),
        ),
        (
            "missing port".into(),
            form("/v1/registration/web", "ip=10.0.0.1&revision=r"),
        ),
        (
            "missing revision".into(),
            form("/v1/registration/web", "ip=10.0.0.1&port=80"),
        ),
        (
            "empty revision".into(),
            form("/v1/registration/web", "ip=10.0.0.1&port=80&revision="),
        ),
        (
            "revision too long".into(),
            form(
                "/v1/registration/web",
                &format!("ip=10.0.0.1&port=80&revision={long}"),
            ),
        ),
        (
            "revision control char".into(),
            form("/v1/registration/web", "ip=10.0.0.1&port=80&revision=a%0Ab"),
        ),
        (
            "repo charset".into(),
            form(
                "/v1/registration/web",
                "ip=10.0.0.1&port=80&revision=r&service_repo_name=a/b",
            ),
        ),
        (
            "repo length".into(),
            form(
                "/v1/registration/web",
                &format!("ip=10.0.0.1&port=80&revision=r&service_repo_name={long}"),
            ),
        ),
        (
            "tags not JSON".into(),
            form(
                "/v1/registration/web",
                "ip=10.0.0.1&port=80&revision=r&tags=az",
            ),
        ),
        (
            "tags array".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":[1]}),
            ),
        ),
        (
            "33 tags".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":tags33}),
            ),
        ),
        (
            "tag key control character".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"a\tb":1}}),
            ),
        ),
        (
            "tag key length".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"k".repeat(65):1}}),
            ),
        ),
        (
            "tag value length".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"k":"v".repeat(257)}}),
            ),
        ),
        (
            "tag value JSON over 256 bytes".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"k":["v".repeat(254)]}}),
            ),
        ),
        (
            "az not string".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"az":1}}),
            ),
        ),
        (
            "canary not bool".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"canary":"yes"}}),
            ),
        ),
        (
            "weight tag 0".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"load_balancing_weight":0}}),
            ),
        ),
        (
            "weight tag 101".into(),
            json_post(
                "/v1/registration/web",
                json!({"ip":"10.0.0.1","port":80,"revision":"r","tags":{"load_balancing_weight":101}}),
            ),
        ),
        (
            "status".into(),
            form(
                "/v1/registration/web",
                "ip=10.0.0.1&port=80&revision=r&status=down",
            ),
        ),
        (
            "ttl negative".into(),
            form(
                "/v1/registration/web",
                "ip=10.0.0.1&port=80&revision=r&ttl=-1",
            ),
        ),
        (
            "ttl text".into(),
            form(
                "/v1/registration/web",
                "ip=10.0.0.1&port=80&revision=r&ttl=soon",
            ),
        ),
        (
            "JSON not an object".into(),
            json_post("/v1/registration/web", json!([1, 2])),
        ),
        (
            "JSON broken".into(),
            Request::post("/v1/registration/web")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"ip\":"))
                .unwrap(),
        ),
        (
            "duplicate field".into(),
            form(
                "/v1/registration/web",
                "ip=10.0.0.1&ip=10.0.0.2&port=80&revision=r",
            ),
        ),
        (
            "delete bad ip".into(),
            delete("/v1/registration/web/not-an-ip"),
        ),
        (
            "delete bad port".into(),
            delete("/v1/registration/web/10.0.0.1?port=x"),
        ),
        (
            "delete nothing matched".into(),
            delete("/v1/registration/web/10.9.9.9"),
        ),
        (
            "weight missing".into(),
            form("/v1/loadbalancing/web/10.0.0.1", ""),
        ),
        (
            "weight 0".into(),
            form("/v1/loadbalancing/web/10.0.0.1", "load_balancing_weight=0"),
        ),
        (
            "weight 101".into(),
            form("/v1/loadbalancing/web", "load_balancing_weight=101"),
        ),
        (
            "weight text".into(),
            json_post(
                "/v1/loadbalancing/web",
                json!({"load_balancing_weight": "heavy"}),
            ),
        ),
        (
            "long poll index".into(),
            get("/v1/registration/web?index=x"),
        ),
        (
            "long poll wait".into(),
            get("/v1/registration/web?index=1&wait=forever"),
        ),
        (
            "long poll wait over 5m".into(),
            get("/v1/registration/web?index=1&wait=6m"),
        ),
        ("get bad service".into(), get("/v1/registration/a%2Fb")),
    ];
    for (name, req) in cases {
        let r = send(&app, req).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{name}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(!error.is_empty(), "{name}: error message");
    }
    assert_eq!(send(&app, get("/v1/registration/web")).await.body, before);
    assert_eq!(shared.registry.host_count(), 1);
    assert_eq!(shared.registry.index("web"), 1);
}

#[tokio::test]
async fn wrong_content_type_oversized_body_unknown_route_and_method_are_json_errors() {
    let shared = shared_with(&["--max-body", "1KiB"]);
    let app = app(&shared);
    let plain = Request::post("/v1/registration/web")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(WEB1))
        .unwrap();
    assert_eq!(
        send(&app, plain).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let none = Request::post("/v1/registration/web")
        .body(Body::from(WEB1))
        .unwrap();
    assert_eq!(
        send(&app, none).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let big = format!("{WEB1}&x={}", "y".repeat(2000));
    let r = send(&app, form("/v1/registration/web", &big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["error"].as_str().unwrap().contains("1024"));
    let r = send(&app, get("/v2/nothing")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());
    let r = send(
        &app,
        Request::builder()
            .method(Method::PUT)
            .uri("/v1/registration/web")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json()["error"].is_string());
    assert_eq!(shared.registry.host_count(), 0);
}

#[tokio::test]
async fn registry_full_refuses_new_hosts_with_503_but_refreshes_existing() {
    let shared = shared_with(&["--max-hosts", "1"]);
    let app = app(&shared);
    assert_eq!(
        send(&app, form("/v1/registration/web", WEB1)).await.status,
        StatusCode::OK
    );
    let r = send(
        &app,
        form("/v1/registration/web", "ip=10.0.0.2&port=80&revision=r"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json()["error"].as_str().unwrap().contains("max-hosts"));
    assert_eq!(
        send(&app, form("/v1/registration/web", WEB1)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_guard_each_class_of_request() {
    let shared = shared_with(&[
        "--write-token",
        "w",
        "--admin-token",
        "a",
        "--read-token",
        "r",
    ]);
    let app = app(&shared);
    let with = |mut req: Request<Body>, token: &str| {
        req.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        req
    };
    let r = send(&app, form("/v1/registration/web", WEB1)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    assert!(r.json()["error"].is_string());
    assert_eq!(
        send(&app, with(form("/v1/registration/web", WEB1), "r"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        shared.registry.host_count(),
        0,
        "refused writes change nothing"
    );
    assert_eq!(
        send(&app, with(form("/v1/registration/web", WEB1), "w"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with(form("/v1/registration/web", WEB1), "a"))
            .await
            .status,
        StatusCode::OK
    );
    let weight = "load_balancing_weight=5";
    assert_eq!(
        send(&app, with(form("/v1/loadbalancing/web", weight), "w"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, with(form("/v1/loadbalancing/web", weight), "a"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    for path in [
        "/v1/registration/web",
        "/v1/services",
        "/v1/peers",
        "/metrics",
    ] {
        assert_eq!(
            send(&app, get(path)).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            send(&app, with(get(path), "r")).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // The dashboard is a static shell without data: its data requests carry the token.
    for path in ["/healthz", "/healthcheck", "/readyz", "/"] {
        assert_eq!(
            send(&app, get(path)).await.status,
            StatusCode::OK,
            "{path} stays open"
        );
    }
    assert_eq!(
        send(&app, delete("/v1/registration/web/10.0.0.1"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(shared.registry.host_count(), 1);
}

#[tokio::test]
async fn deletes_answer_like_the_seed() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    for port in [80, 81] {
        send(
            &app,
            form(
                "/v1/registration/web",
                &format!("ip=10.0.0.1&port={port}&revision=r"),
            ),
        )
        .await;
    }
    let r = send(&app, delete("/v1/registration/web/10.0.0.1?port=81")).await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, json!({})));
    assert_eq!(
        send(&app, delete("/v1/registration/web/10.0.0.1?port=81"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&app, delete("/v1/registration/web/10.0.0.1"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/v1/registration/web")).await.json()["hosts"],
        json!([])
    );
    // The service literally named "repo" stays deletable despite the repo query's path.
    send(
        &app,
        form("/v1/registration/repo", "ip=10.0.0.5&port=1&revision=r"),
    )
    .await;
    assert_eq!(
        send(&app, delete("/v1/registration/repo/10.0.0.5"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn weight_overrides_answer_204_404_and_show_in_the_list() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    send(&app, form("/v1/registration/web", WEB1)).await;
    let r = send(
        &app,
        form("/v1/loadbalancing/web/10.0.0.1", "load_balancing_weight=30"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send(
            &app,
            form("/v1/loadbalancing/web/10.0.0.9", "load_balancing_weight=30")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(
            &app,
            json_post(
                "/v1/loadbalancing/nosuch",
                json!({"load_balancing_weight": 3})
            )
        )
        .await
        .status,
        // The seed's answer for a service with no hosts (SPEC 3.1): nothing to weigh.
        StatusCode::NO_CONTENT
    );
    assert_eq!(shared.registry.index("nosuch"), 0);
    send(&app, form("/v1/registration/web", WEB1)).await;
    let hosts = send(&app, get("/v1/registration/web")).await.json()["hosts"].clone();
    assert_eq!(hosts[0]["load_balancing_weight"], 30);
    assert_eq!(shared.registry.index("web"), 2);
}

#[tokio::test]
async fn services_and_repo_queries_list_what_the_node_holds() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    send(
        &app,
        form(
            "/v1/registration/b",
            "ip=10.0.0.1&port=1&revision=r&service_repo_name=shop",
        ),
    )
    .await;
    send(
        &app,
        form(
            "/v1/registration/a",
            "ip=10.0.0.2&port=1&revision=r&service_repo_name=shop",
        ),
    )
    .await;
    send(
        &app,
        form("/v1/registration/a", "ip=10.0.0.3&port=1&revision=r"),
    )
    .await;
    let r = send(&app, get("/v1/services")).await.json();
    assert_eq!(
        r,
        json!({"env": "test", "services": [
            {"service": "a", "hosts": 2, "stale": 0, "index": 2},
            {"service": "b", "hosts": 1, "stale": 0, "index": 1}],
            "expiry": {"guard_engaged": false, "lost": 0, "of": 0, "grace": 0}})
    );
    let r = send(&app, get("/v1/registration/repo/shop")).await.json();
    assert_eq!(r["service_repo_name"], "shop");
    let addrs: Vec<&str> = r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ip_address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["10.0.0.2", "10.0.0.1"]);
    assert_eq!(
        send(&app, get("/v1/registration/unknown")).await.json()["hosts"],
        json!([])
    );
}

#[tokio::test(start_paused = true)]
async fn long_polls_wake_on_routing_changes_but_not_on_refreshes() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    send(&app, form("/v1/registration/web", WEB1)).await;
    let poll = {
        let app = app.clone();
        tokio::spawn(async move { send(&app, get("/v1/registration/web?index=1&wait=30s")).await })
    };
    // The poll is waiting once it has subscribed to the service's changes.
    while shared.wakers.watched() == 0 {
        tokio::task::yield_now().await;
    }
    send(&app, form("/v1/registration/web", WEB1)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!poll.is_finished(), "a refresh must not wake the poll");
    send(
        &app,
        form("/v1/registration/web", "ip=10.0.0.1&port=80&revision=r2"),
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(1), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.header("x-discovery-index"), "2");
    assert_eq!(r.json()["hosts"][0]["revision"], "r2");
    // With nothing changing, the poll answers the unchanged list after `wait`.
    let started = tokio::time::Instant::now();
    let r = send(&app, get("/v1/registration/web?index=2&wait=5s")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-discovery-index"), "2");
    assert!(started.elapsed() >= Duration::from_secs(5));
    // An index already behind answers at once (paused time would skip a 5-minute wait:
    // the clock must not have moved).
    let started = tokio::time::Instant::now();
    let r = send(&app, get("/v1/registration/web?index=0&wait=5m")).await;
    assert_eq!(r.header("x-discovery-index"), "2");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(
        shared.wakers.watched(),
        0,
        "finished polls leave no channel behind"
    );
}

#[tokio::test]
async fn a_node_that_is_not_ready_refuses_reads_with_retry_after_but_takes_heartbeats() {
    let shared = shared_with(&["--peers", "http://127.0.0.1:1"]);
    let app = app(&shared);
    assert_eq!(
        send(&app, form("/v1/registration/web", WEB1)).await.status,
        StatusCode::OK
    );
    for req in [
        get("/v1/registration/web"),
        get("/readyz"),
        json_post(
            "/v3/discovery:endpoints",
            json!({"resource_names": ["web"]}),
        ),
    ] {
        let r = send(&app, req).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(
        send(&app, get("/v1/registration/web"))
            .await
            .header("retry-after"),
        "5"
    );
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
    shared.set_ready();
    assert_eq!(send(&app, get("/readyz")).await.status, StatusCode::OK);
    assert_eq!(
        send(&app, get("/v1/registration/web")).await.json()["hosts"][0]["port"],
        80
    );
}

#[tokio::test]
async fn envoy_eds_answers_assignments_with_content_versions() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    let tags =
        r#"{"az":"us-east-1a","region":"us-east-1","canary":true,"load_balancing_weight":20}"#;
    send(&app, json_post("/v1/registration/web", json!({"ip":"10.0.0.1","port":80,"revision":"r","tags": serde_json::from_str::<Value>(tags).unwrap()}))).await;
    send(
        &app,
        form(
            "/v1/registration/web",
            "ip=10.0.0.2&port=80&revision=r&status=draining",
        ),
    )
    .await;
    send(
        &app,
        form("/v1/loadbalancing/web/10.0.0.2", "load_balancing_weight=7"),
    )
    .await;
    let request = json!({
        "version_info": "",
        "node": {"id": "envoy-1", "cluster": "front"},
        "resource_names": ["web", "empty"],
        "type_url": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    });
    let r = send(&app, json_post("/v3/discovery:endpoints", request.clone())).await;
    assert_eq!(r.status, StatusCode::OK);
    let body = r.json();
    let resources = body["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1, "a service with no hosts is left out");
    let cla = &resources[0];
    assert_eq!(cla["cluster_name"], "web");
    let endpoints = cla["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["locality"], json!({}));
    let drained = &endpoints[0]["lb_endpoints"][0];
    assert_eq!(drained["health_status"], "DRAINING");
    assert_eq!(drained["load_balancing_weight"], 7);
    assert_eq!(
        drained["endpoint"]["address"]["socket_address"],
        json!({"address": "10.0.0.2", "port_value": 80})
    );
    assert_eq!(
        endpoints[1]["locality"],
        json!({"region": "us-east-1", "zone": "us-east-1a"})
    );
    let canary = &endpoints[1]["lb_endpoints"][0];
    assert_eq!(
        (
            canary["health_status"].clone(),
            canary["load_balancing_weight"].clone()
        ),
        (json!("HEALTHY"), json!(20))
    );
    assert_eq!(
        canary["metadata"]["filter_metadata"]["envoy.lb"]["canary"],
        true
    );
    // The same version gets 304; a change gives a new version.
    let mut again = request.clone();
    again["version_info"] = body["version_info"].clone();
    assert_eq!(
        send(&app, json_post("/v3/discovery:endpoints", again.clone()))
            .await
            .status,
        StatusCode::NOT_MODIFIED
    );
    send(
        &app,
        form("/v1/registration/web", "ip=10.0.0.3&port=80&revision=r"),
    )
    .await;
    let r = send(&app, json_post("/v3/discovery:endpoints", again)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.json()["version_info"], body["version_info"]);
    // Bad requests.
    let wrong_type = json!({"resource_names": ["web"], "type_url": "type.googleapis.com/envoy.config.cluster.v3.Cluster"});
    assert_eq!(
        send(&app, json_post("/v3/discovery:endpoints", wrong_type))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            &app,
            json_post("/v3/discovery:endpoints", json!({"resource_names": "web"}))
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&app, json_post("/v3/discovery:endpoints", json!({})))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn equal_states_on_two_nodes_give_equal_etags_and_envoy_versions() {
    let a = app(&shared_with(&[]));
    let b = app(&shared_with(&[]));
    for app in [&a, &b] {
        send(app, form("/v1/registration/web", WEB1)).await;
        send(
            app,
            form("/v1/registration/web", "ip=10.0.0.2&port=80&revision=r"),
        )
        .await;
    }
    let ea = send(&a, get("/v1/registration/web"))
        .await
        .header("etag")
        .to_owned();
    let eb = send(&b, get("/v1/registration/web"))
        .await
        .header("etag")
        .to_owned();
    assert_eq!(ea, eb);
    let req = json!({"resource_names": ["web"]});
    let va = send(&a, json_post("/v3/discovery:endpoints", req.clone()))
        .await
        .json()["version_info"]
        .clone();
    let vb = send(&b, json_post("/v3/discovery:endpoints", req))
        .await
        .json()["version_info"]
        .clone();
    assert_eq!(va, vb);
}

#[tokio::test]
async fn dot_and_dot_dot_are_refused_as_names_on_every_route_hot_path_included() {
    let shared = shared_with(&[]);
    shared.set_ready();
    let app = app(&shared);
    let peer: SocketAddr = "10.9.8.7:5555".parse().unwrap();
    for name in [".", ".."] {
        let cases = vec![
            form(&format!("/v1/registration/{name}"), WEB1),
            get(&format!("/v1/registration/{name}")),
            get(&format!("/v1/registration/{name}?index=0&wait=1s")),
            get(&format!("/v1/registration/repo/{name}")),
            delete(&format!("/v1/registration/{name}/10.0.0.1")),
            form(
                &format!("/v1/loadbalancing/{name}"),
                "load_balancing_weight=5",
            ),
            form(
                &format!("/v1/loadbalancing/{name}/10.0.0.1"),
                "load_balancing_weight=5",
            ),
            json_post(
                "/v3/discovery:endpoints",
                json!({"resource_names": ["web", name]}),
            ),
        ];
        for req in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let r = send(&app, req).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
            let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
            assert!(error.contains("directory step"), "{what}: {error}");
        }
        // The hot path refuses them too, with the same words.
        let read = super::hot_path::answer(&shared, &get(&format!("/v1/registration/{name}")))
            .expect("a plain read takes the hot path");
        assert_eq!(read.status(), StatusCode::BAD_REQUEST);
        let super::hot_path::Hot::Heartbeat(pending) = super::hot_path::take(
            &shared,
            form(&format!("/v1/registration/{name}"), WEB1),
            peer,
        ) else {
            panic!("a plain heartbeat takes the hot path");
        };
        let heartbeat = pending.await;
        assert_eq!(heartbeat.status(), StatusCode::BAD_REQUEST);
        let body = heartbeat.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("directory step"),
            "{body:?}"
        );
    }
    assert_eq!(shared.registry.host_count(), 0);
    assert!(send(&app, get("/v1/services")).await.json()["services"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// A body that declares `len` bytes and never sends one.
struct Declared(u64);

impl axum::body::HttpBody for Declared {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0)
    }
}

/// Time is paused: a handler that waited for the body would reach its read timeout at once
/// and answer 408, so a 413 shows the length was refused before any read.
#[tokio::test(start_paused = true)]
async fn a_declared_length_over_the_limit_is_413_before_any_byte_is_read() {
    let shared = shared_with(&["--max-body", "1KiB"]);
    shared.set_ready();
    let app = app(&shared);
    let peer: SocketAddr = "10.9.8.7:5555".parse().unwrap();
    let declared = |uri: &str, content_type: &str, len: u64| {
        Request::post(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::new(Declared(len)))
            .unwrap()
    };
    let form_type = "application/x-www-form-urlencoded";
    for (uri, content_type) in [
        ("/v1/registration/web", form_type),
        ("/v1/loadbalancing/web", form_type),
        ("/v3/discovery:endpoints", "application/json"),
    ] {
        let r = send(&app, declared(uri, content_type, 1025)).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        assert!(r.json()["error"].as_str().unwrap().contains("1024"));
        // At the limit, the body is waited for (and never comes).
        let r = send(&app, declared(uri, content_type, 1024)).await;
        assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{uri}");
    }
    let super::hot_path::Hot::Heartbeat(pending) = super::hot_path::take(
        &shared,
        declared("/v1/registration/web", form_type, 10 << 20),
        peer,
    ) else {
        panic!("a plain heartbeat takes the hot path");
    };
    assert_eq!(pending.await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(shared.registry.host_count(), 0);
}

#[tokio::test]
async fn envoy_answers_a_repeated_name_once_and_caps_names_per_request() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    send(&app, form("/v1/registration/web", WEB1)).await;
    send(&app, form("/v1/registration/api", WEB1)).await;
    let once = send(
        &app,
        json_post(
            "/v3/discovery:endpoints",
            json!({"resource_names": ["web", "api"]}),
        ),
    )
    .await
    .json();
    let mut names = vec!["web"; super::envoy::MAX_RESOURCES - 1];
    names.push("api");
    let repeated = send(
        &app,
        json_post(
            "/v3/discovery:endpoints",
            json!({ "resource_names": names }),
        ),
    )
    .await;
    assert_eq!(repeated.status, StatusCode::OK);
    let repeated = repeated.json();
    assert_eq!(repeated["resources"].as_array().unwrap().len(), 2);
    assert_eq!(
        repeated, once,
        "a repeated name changes neither answer nor version"
    );
    names.push("web");
    let r = send(
        &app,
        json_post(
            "/v3/discovery:endpoints",
            json!({ "resource_names": names }),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("at most 1000"), "{error}");
}

#[tokio::test]
async fn a_panicking_handler_answers_a_json_500_and_is_counted() {
    let shared = shared_with(&[]);
    let panicking = Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if true {
                panic!("a bug");
            }
        }),
    );
    let app = super::instrument(panicking, shared.clone());
    let r = send(&app, get("/boom")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json(), json!({"error": "internal error"}));
    assert!(shared
        .metrics
        .render()
        .contains(r#"discovery_http_requests_total{route="/boom",method="GET",status="500"} 1"#));
}

#[tokio::test]
async fn prometheus_targets_follow_every_routing_change_and_are_built_once_between() {
    let shared = shared_with(&[]);
    let app = app(&shared);
    let targets = |r: &Reply| {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["targets"][0].as_str().unwrap().to_owned(),
                    g["labels"]["__meta_discovery_weight"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    send(&app, form("/v1/registration/web", WEB1)).await;
    let first = send(&app, get("/v1/prometheus/targets")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(targets(&first), [("10.0.0.1:80".into(), "1".into())]);
    let built_at = shared.prometheus_answer.lock().await.as_ref().unwrap().0;

    // A refresh changes no route: the same answer, not built again.
    send(&app, form("/v1/registration/web", WEB1)).await;
    let again = send(&app, get("/v1/prometheus/targets")).await;
    assert_eq!(again.body, first.body);
    assert_eq!(
        shared.prometheus_answer.lock().await.as_ref().unwrap().0,
        built_at
    );

    // A new host, an operator's weight, a delete: each shows in the next answer.
    send(
        &app,
        form("/v1/registration/web", "ip=10.0.0.2&port=80&revision=r1"),
    )
    .await;
    let r = send(&app, get("/v1/prometheus/targets")).await;
    assert_eq!(targets(&r).len(), 2);
    let weighed = form("/v1/loadbalancing/web/10.0.0.1", "load_balancing_weight=30");
    assert_eq!(send(&app, weighed).await.status, StatusCode::NO_CONTENT);
    let r = send(&app, get("/v1/prometheus/targets")).await;
    assert!(targets(&r).contains(&("10.0.0.1:80".into(), "30".into())));
    send(&app, delete("/v1/registration/web/10.0.0.1")).await;
    let r = send(&app, get("/v1/prometheus/targets")).await;
    assert!(targets(&r).iter().all(|(t, _)| !t.starts_with("10.0.0.1:")));
}
