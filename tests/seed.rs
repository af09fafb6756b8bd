//! Compatibility with the seed, Lyft's `discovery` (issue 15): real `discovery` processes
//! driven with curl the way the seed's users and its own tests drove it. Each test is named
//! after the seed behaviour it pins. Where we differ on purpose, the test calls
//! [`deliberate`] with the difference's id, and docs/migrating.md must explain every id
//! (checked by `every_deliberate_difference_is_in_the_migration_guide`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{get_json, wait_until, Node};
use serde_json::{json, Value};

/// The deliberate differences from the seed these tests pin: each is an anchor
/// (`<a id="...">`) in docs/migrating.md.
const DIFFERENCES: &[&str] = &[
    "errors-as-json",
    "host-key-includes-port",
    "heartbeat-replaces-tags",
    "operator-weight-survives-heartbeats",
    "last-check-in-rfc3339",
    "expiry-guard",
    "location-tags-optional",
    "service-repo-name-empty-string",
    "trusted-proxy-hops-default-0",
    "auto-ip-any-address",
    "auto-ip-false-means-false",
    "duplicate-fields-refused",
    "multipart-file-parts-refused",
    "fields-validated",
];

/// Marks a test as pinning the deliberate difference `id`.
fn deliberate(id: &str) {
    assert!(DIFFERENCES.contains(&id), "{id} is not in DIFFERENCES");
}

/// One answer: status, `Content-Type` and body.
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` of a JSON error body.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {:?}", self.body))
            .to_owned()
    }
}

/// Runs curl with `args` (the URL among them) and returns its answer.
fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}\t%{content_type}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0\t"));
    let (status, content_type) = tail.split_once('\t').unwrap_or((tail, ""));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        content_type: content_type.to_owned(),
        body: body.to_owned(),
    }
}

/// The hosts of `service` on `node`, as JSON.
/// A `curl -d` heartbeat of host 10.0.0.1:80 with `tags` (JSON text) url-encoded, as a seed
/// user's script sends it.
fn beat_with_tags(register: &str, tags: &str) -> Reply {
    curl(&[
        "-d",
        "ip=10.0.0.1&port=80&revision=r",
        "--data-urlencode",
        &format!("tags={tags}"),
        register,
    ])
}

fn hosts(node: &Node, service: &str) -> Vec<Value> {
    get_json(&format!("{}/v1/registration/{service}", node.url))
        .and_then(|v| v["hosts"].as_array().cloned())
        .expect("a host list")
}

/// The full host-list body, to check that a refusal changed nothing.
fn list_body(node: &Node, service: &str) -> String {
    let reply = curl(&[&format!("{}/v1/registration/{service}", node.url)]);
    assert_eq!(reply.status, 200);
    reply.body
}

fn url(node: &Node, path: &str) -> String {
    format!("{}{path}", node.url)
}

/// What every refusal must leave: a 4xx JSON error whose message contains `word`, and the
/// service's host list as it was.
fn refused(node: &Node, service: &str, status: u16, word: &str, args: &[&str]) {
    let before = list_body(node, service);
    let reply = curl(args);
    assert_eq!(reply.status, status, "{args:?}: {}", reply.body);
    let error = reply.error();
    assert!(
        error.contains(word),
        "{args:?}: {error:?} should name {word:?}"
    );
    assert_eq!(
        list_body(node, service),
        before,
        "{args:?} changed the list"
    );
}

#[test]
fn auto_ip_behind_one_proxy_takes_the_last_forwarded_address() {
    deliberate("auto-ip-any-address");
    let node = Node::start(&["--trusted-proxy-hops", "1"]);
    let register = url(&node, "/v1/registration/myservice");
    let form = |port: &str| format!("auto_ip=true&port={port}&revision=r");
    // The seed's one-hop case, then its two-hop case: the last address wins.
    for (port, forwarded) in [
        ("1000", "192.168.216.186"),
        ("1001", "192.168.0.0,192.168.216.186"),
        ("1002", "10.9.9.9, 10.1.2.3"),
    ] {
        let reply = curl(&[
            "-H",
            &format!("X-Forwarded-For: {forwarded}"),
            "-d",
            &form(port),
            &register,
        ]);
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Two headers are one list, in order.
    let reply = curl(&[
        "-H",
        "X-Forwarded-For: 10.7.7.7",
        "-H",
        "X-Forwarded-For: 2001:db8::1",
        "-d",
        &form("1003"),
        &register,
    ]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let got: Vec<(String, u64)> = hosts(&node, "myservice")
        .iter()
        .map(|h| {
            (
                h["ip_address"].as_str().unwrap().to_owned(),
                h["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("10.1.2.3", 1002),
        ("192.168.216.186", 1000),
        ("192.168.216.186", 1001),
        ("2001:db8::1", 1003),
    ];
    assert_eq!(
        got,
        want.map(|(ip, port)| (ip.to_owned(), port)).to_vec(),
        "the proxy's own address (127.0.0.1) is never registered"
    );
    // An invalid or missing entry is a 400 naming the header; an explicit ip needs neither.
    for bad in ["not-an-ip", "10.0.0.1:8080", "10.0.0.1, "] {
        refused(
            &node,
            "myservice",
            400,
            "X-Forwarded-For",
            &[
                "-H",
                &format!("X-Forwarded-For: {bad}"),
                "-d",
                &form("1004"),
                &register,
            ],
        );
    }
    refused(
        &node,
        "myservice",
        400,
        "X-Forwarded-For",
        &["-d", &form("1004"), &register],
    );
    let explicit = curl(&["-d", "ip=10.0.0.5&port=1004&revision=r", &register]);
    assert_eq!(explicit.status, 200);
}

#[test]
fn auto_ip_without_trusted_proxy_hops_takes_the_connecting_address() {
    deliberate("trusted-proxy-hops-default-0");
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    // A client's own X-Forwarded-For is not trusted by default: it could name any host.
    let reply = curl(&[
        "-H",
        "X-Forwarded-For: 192.168.216.186",
        "-d",
        "auto_ip=true&port=80&revision=r",
        &register,
    ]);
    assert_eq!(reply.status, 200);
    assert_eq!(hosts(&node, "web")[0]["ip_address"], "127.0.0.1");
}

#[test]
fn auto_ip_true_as_python_clients_send_it_is_accepted() {
    deliberate("auto-ip-false-means-false");
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    // `requests` and Flask's test client send a Python bool as `True`.
    for (port, value) in [(1, "True"), (2, "TRUE"), (3, "yes"), (4, "On"), (5, "1")] {
        let body = format!("auto_ip={value}&port={port}&revision=r");
        let reply = curl(&["-d", &body, &register]);
        assert_eq!(reply.status, 200, "auto_ip={value}: {}", reply.body);
    }
    let reply = curl(&[
        "-d",
        "port=6&revision=r",
        &format!("{register}?auto_ip=True"),
    ]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(hosts(&node, "web").len(), 6);
    // The seed took any non-empty text as true; `False` is false here, so no address is known.
    refused(
        &node,
        "web",
        400,
        "ip",
        &["-d", "auto_ip=False&port=7&revision=r", &register],
    );
    refused(
        &node,
        "web",
        400,
        "auto_ip",
        &["-d", "auto_ip=maybe&port=7&revision=r", &register],
    );
    refused(
        &node,
        "web",
        400,
        "auto_ip",
        &[
            "-d",
            "port=7&revision=r",
            &format!("{register}?auto_ip=maybe"),
        ],
    );
}

#[test]
fn tags_of_any_json_type_are_stored_as_the_seed_stored_them() {
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    let tags = r#"{"region":"us-east-1","az":"us-east-1a","weight ratio":0.5,"retired":null,"ports":[80,443],"owner":{"team":"pay","oncall":true},"canary":true}"#;
    let reply = beat_with_tags(&register, tags);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Stored whole, keys sorted at every depth, so equal states give equal bytes.
    let body = list_body(&node, "web");
    assert!(
        body.contains(r#""tags":{"az":"us-east-1a","canary":true,"owner":{"oncall":true,"team":"pay"},"ports":[80,443],"region":"us-east-1","retired":null,"weight ratio":0.5}"#),
        "{body}"
    );
    // Envoy still gets its locality and canary metadata from the typed keys.
    let eds = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"resource_names":["web"],"type_url":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}"#,
        &url(&node, "/v3/discovery:endpoints"),
    ]);
    assert_eq!(eds.status, 200, "{}", eds.body);
    let endpoints = &eds.json()["resources"][0]["endpoints"][0];
    assert_eq!(
        endpoints["locality"],
        json!({"region": "us-east-1", "zone": "us-east-1a"})
    );
    // The CLI prints other values as JSON.
    let out = Command::new(common::binary())
        .args(["hosts", "web", "--registry", &node.url])
        .output()
        .expect("discovery hosts");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("ports=[80,443]") && printed.contains("weight ratio=0.5"),
        "{printed}"
    );
    // Sizes stay bounded (SPEC 2), known keys typed; one past each bound is refused.
    let too_big_value = format!(r#"tags={{"k":["{}"]}}"#, "v".repeat(253));
    let too_many: Vec<String> = (0..33).map(|i| format!(r#""k{i}":1"#)).collect();
    let too_many = format!("tags={{{}}}", too_many.join(","));
    let too_long: Vec<String> = (10..27)
        .map(|i| format!(r#""k{i}":"{}""#, "v".repeat(240)))
        .collect();
    let too_long = format!("tags={{{}}}", too_long.join(","));
    for (tags, word) in [
        (too_big_value.as_str(), "256"),
        (&too_many, "32"),
        (&too_long, "4096"),
        (r#"tags={"az":1}"#, "az"),
        (r#"tags={"canary":"yes"}"#, "canary"),
        ("tags={\"a\tb\":1}", "control"),
    ] {
        refused(
            &node,
            "web",
            400,
            word,
            &[
                "-d",
                "ip=10.0.0.1&port=80&revision=r",
                "--data-urlencode",
                tags,
                &register,
            ],
        );
    }
}

#[test]
fn multipart_heartbeats_from_curl_f_register_like_forms() {
    deliberate("multipart-file-parts-refused");
    let node = Node::start(&["--max-body", "1KiB"]);
    let register = url(&node, "/v1/registration/web");
    let reply = curl(&[
        "-F",
        "ip=10.0.0.7",
        "-F",
        "port=8080",
        "-F",
        "revision=4f2a9c1",
        "-F",
        r#"tags={"az":"us-east-1a","owner":{"team":"pay"}}"#,
        &register,
    ]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let host = &hosts(&node, "web")[0];
    assert_eq!(
        (host["ip_address"].as_str(), host["port"].as_u64()),
        (Some("10.0.0.7"), Some(8080))
    );
    assert_eq!(
        host["tags"],
        json!({"az": "us-east-1a", "owner": {"team": "pay"}})
    );
    // The load-balancing endpoints take multipart too.
    let weight = curl(&[
        "-F",
        "load_balancing_weight=20",
        &url(&node, "/v1/loadbalancing/web/10.0.0.7"),
    ]);
    assert_eq!(weight.status, 204, "{}", weight.body);
    assert_eq!(hosts(&node, "web")[0]["load_balancing_weight"], 20);
    // Where lyft's clients and Envoy's v1 SDS read it, as the seed showed it.
    assert_eq!(hosts(&node, "web")[0]["tags"]["load_balancing_weight"], 20);
    // Bounded like the rest: the body limit, a part count, and no file parts.
    let big = format!("revision={}", "r".repeat(1100));
    refused(
        &node,
        "web",
        413,
        "1024",
        &["-F", "ip=10.0.0.8", "-F", "port=1", "-F", &big, &register],
    );
    // 33 parts: one over the part bound (on a node whose body limit lets them all arrive).
    let roomy = Node::start(&[]);
    let roomy_register = url(&roomy, "/v1/registration/web");
    let mut many = vec!["-F".to_owned(), "ip=10.0.0.8".to_owned()];
    for i in 0..32 {
        many.extend(["-F".to_owned(), format!("x{i}=")]);
    }
    many.push(roomy_register);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    refused(&roomy, "web", 400, "at most 32 parts", &many);
    let dir = std::env::temp_dir().join(format!("discovery-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tags.json");
    std::fs::write(&file, r#"{"az":"a"}"#).unwrap();
    let upload = format!("tags=@{}", file.display());
    refused(
        &node,
        "web",
        400,
        "file upload",
        &[
            "-F",
            "ip=10.0.0.8",
            "-F",
            "port=1",
            "-F",
            "revision=r",
            "-F",
            &upload,
            &register,
        ],
    );
    // `<file` sends the file's text as a plain field: that is the way to send a tags file.
    let inline = format!("tags=<{}", file.display());
    let reply = curl(&[
        "-F",
        "ip=10.0.0.8",
        "-F",
        "port=1",
        "-F",
        "revision=r",
        "-F",
        &inline,
        &register,
    ]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    std::fs::remove_dir_all(&dir).ok();
    refused(
        &node,
        "web",
        400,
        "multipart",
        &[
            "-H",
            "Content-Type: multipart/form-data; boundary=xyz",
            "--data-binary",
            "--xyz\r\nnot a part",
            &register,
        ],
    );
}

#[test]
fn loadbalancing_a_service_with_no_hosts_answers_204() {
    let node = Node::start(&[]);
    let reply = curl(&[
        "-d",
        "load_balancing_weight=10",
        &url(&node, "/v1/loadbalancing/nosuch"),
    ]);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(reply.body.is_empty());
    assert_eq!(hosts(&node, "nosuch"), Vec::<Value>::new());
    // One host still gets 404 when unknown, as in the seed.
    let reply = curl(&[
        "-d",
        "load_balancing_weight=10",
        &url(&node, "/v1/loadbalancing/nosuch/10.10.10.10"),
    ]);
    assert_eq!(reply.status, 404);
}

#[test]
fn loadbalancing_without_a_body_answers_400() {
    let node = Node::start(&[]);
    curl(&[
        "-d",
        "ip=10.0.0.1&port=80&revision=r",
        &url(&node, "/v1/registration/web"),
    ]);
    // `curl -X POST` and `requests.post(url)` send no body and no Content-Type; an empty
    // body of any type has no weight either (SPEC 3.1: "an empty body included").
    for extra in [
        &[][..],
        &["-H", "Content-Length: 0"][..],
        &["-H", "Content-Type: text/plain"][..],
        &[
            "-H",
            "Content-Type: application/json",
            "-H",
            "Content-Length: 0",
        ][..],
    ] {
        let mut args = vec!["-X", "POST"];
        args.extend_from_slice(extra);
        let target = url(&node, "/v1/loadbalancing/web");
        args.push(&target);
        refused(&node, "web", 400, "load_balancing_weight", &args);
    }
    // A registration with no body is missing its fields too.
    refused(
        &node,
        "web",
        400,
        "port",
        &["-X", "POST", &url(&node, "/v1/registration/web")],
    );
    // A body of another type is still a 415.
    refused(
        &node,
        "web",
        415,
        "Content-Type",
        &[
            "-H",
            "Content-Type: text/plain",
            "-d",
            "load_balancing_weight=10",
            &url(&node, "/v1/loadbalancing/web"),
        ],
    );
}

#[test]
fn healthcheck_answers_ok_as_text_like_the_seed() {
    let node = Node::start(&[]);
    let reply = curl(&[&url(&node, "/healthcheck")]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "OK"));
    assert!(
        reply.content_type.starts_with("text/plain"),
        "{}",
        reply.content_type
    );
    let healthz = curl(&[&url(&node, "/healthz")]);
    assert_eq!(healthz.status, 200);
    assert_eq!(healthz.json(), json!({"status": "ok"}));
}

#[test]
fn a_field_given_twice_is_refused_in_form_multipart_and_json() {
    deliberate("duplicate-fields-refused");
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    curl(&["-d", "ip=10.0.0.1&port=80&revision=r", &register]);
    // Werkzeug's `request.form[name]` took the first copy; the seed had no JSON bodies.
    refused(
        &node,
        "web",
        400,
        "`port` is given twice",
        &["-d", "ip=10.0.0.1&port=80&port=81&revision=r", &register],
    );
    refused(
        &node,
        "web",
        400,
        "`port` is given twice",
        &[
            "-F",
            "ip=10.0.0.1",
            "-F",
            "port=80",
            "-F",
            "port=81",
            "-F",
            "revision=r",
            &register,
        ],
    );
    refused(
        &node,
        "web",
        400,
        "`port` is given twice",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"ip":"10.0.0.1","port":80,"port":81,"revision":"r"}"#,
            &register,
        ],
    );
    refused(
        &node,
        "web",
        400,
        "\"az\" is given twice",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"ip":"10.0.0.1","port":80,"revision":"r","tags":{"az":"a","az":"b"}}"#,
            &register,
        ],
    );
    let lb = url(&node, "/v1/loadbalancing/web");
    refused(
        &node,
        "web",
        400,
        "`load_balancing_weight` is given twice",
        &["-d", "load_balancing_weight=5&load_balancing_weight=6", &lb],
    );
    refused(
        &node,
        "web",
        400,
        "`load_balancing_weight` is given twice",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"load_balancing_weight":5,"load_balancing_weight":6}"#,
            &lb,
        ],
    );
}

#[test]
fn errors_are_json_objects_where_the_seed_answered_an_empty_object() {
    deliberate("errors-as-json");
    let node = Node::start(&[]);
    let reply = curl(&[
        "-d",
        "ip=10.0.0.1&port=0&revision=r",
        &url(&node, "/v1/registration/web"),
    ]);
    assert_eq!(reply.status, 400);
    assert!(reply.content_type.starts_with("application/json"));
    assert!(reply.error().contains("port"), "{}", reply.body);
    let reply = curl(&["-X", "DELETE", &url(&node, "/v1/registration/web/10.0.0.1")]);
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("10.0.0.1"), "{}", reply.body);
}

#[test]
fn one_address_holds_a_host_per_port_and_a_moved_port_lingers_until_deleted() {
    deliberate("host-key-includes-port");
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    for port in ["80", "81"] {
        curl(&[
            "-d",
            &format!("ip=10.0.0.1&port={port}&revision=r"),
            &register,
        ]);
    }
    // The seed kept one entry per address: the second port replaced the first.
    assert_eq!(hosts(&node, "web").len(), 2);
    let reply = curl(&[
        "-X",
        "DELETE",
        &url(&node, "/v1/registration/web/10.0.0.1?port=80"),
    ]);
    assert_eq!(reply.status, 200);
    assert_eq!(hosts(&node, "web")[0]["port"], 81);
    let reply = curl(&["-X", "DELETE", &url(&node, "/v1/registration/web/10.0.0.1")]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "{}"));
    assert!(hosts(&node, "web").is_empty());
}

#[test]
fn a_heartbeat_replaces_tags_and_an_operator_weight_survives_it() {
    deliberate("heartbeat-replaces-tags");
    deliberate("operator-weight-survives-heartbeats");
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    let beat = |tags: &str| {
        let reply = beat_with_tags(&register, tags);
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    beat(r#"{"az":"a","old":1}"#);
    beat(r#"{"az":"b"}"#);
    assert_eq!(hosts(&node, "web")[0]["tags"], json!({"az": "b"}));
    let reply = curl(&[
        "-d",
        "load_balancing_weight=30",
        &url(&node, "/v1/loadbalancing/web/10.0.0.1"),
    ]);
    assert_eq!(reply.status, 204);
    beat(r#"{"az":"b","load_balancing_weight":10}"#);
    assert_eq!(hosts(&node, "web")[0]["load_balancing_weight"], 30);
}

#[test]
fn a_minimal_heartbeat_registers_with_rfc3339_times_and_an_empty_repo_name() {
    deliberate("location-tags-optional");
    deliberate("service-repo-name-empty-string");
    deliberate("last-check-in-rfc3339");
    let node = Node::start(&[]);
    // The seed refused a heartbeat without the az, region and instance_id tags.
    let reply = curl(&[
        "-d",
        "ip=10.0.0.1&port=80&revision=r",
        &url(&node, "/v1/registration/web"),
    ]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "{}"));
    let host = &hosts(&node, "web")[0];
    assert_eq!(host["service_repo_name"], "");
    assert_eq!(host["tags"], json!({}));
    // `2026-11-28T12:00:00.123456Z`, where the seed printed Python's `2026-11-28 12:00:00.123456`.
    let at = host["last_check_in"].as_str().unwrap();
    let bytes = at.as_bytes();
    assert_eq!(
        (at.len(), bytes[10], bytes[19], bytes[26]),
        (27, b'T', b'.', b'Z'),
        "{at}"
    );
}

#[test]
fn fields_the_seed_took_as_any_text_are_validated() {
    deliberate("fields-validated");
    let node = Node::start(&[]);
    let register = url(&node, "/v1/registration/web");
    curl(&["-d", "ip=10.0.0.1&port=80&revision=r", &register]);
    let long = "r".repeat(129);
    let cases = [
        ("ip=db.internal&port=80&revision=r".to_owned(), "ip"),
        ("ip=10.0.0.1&port=70000&revision=r".to_owned(), "port"),
        (format!("ip=10.0.0.1&port=80&revision={long}"), "revision"),
        (
            "ip=10.0.0.1&port=80&revision=r&service_repo_name=a/b".to_owned(),
            "service_repo_name",
        ),
    ];
    for (body, field) in &cases {
        refused(&node, "web", 400, field, &["-d", body, &register]);
    }
    refused(
        &node,
        "web",
        400,
        "service",
        &[
            "-d",
            "ip=10.0.0.1&port=80&revision=r",
            &url(&node, "/v1/registration/my%3Aservice"),
        ],
    );
}

#[test]
fn the_expiry_guard_holds_hosts_that_expire_all_at_once() {
    deliberate("expiry-guard");
    let node = Node::start(&["--min-ttl", "1s"]);
    let register = url(&node, "/v1/registration/web");
    // 30 hosts: however the sweeps split their deadlines, at least 15 expire in a sweep where
    // they are more than half of what the node holds (the guard needs at least 10 hosts).
    for i in 0..30 {
        let body = format!("ip=10.0.0.{i}&port=80&revision=r&ttl=2");
        assert_eq!(curl(&["-d", &body, &register]).status, 200);
    }
    // The seed dropped them all; here the node assumes it, not the fleet, lost contact, and
    // serves them as stale until --max-stale (3 x TTL).
    let mut summary = Value::Null;
    wait_until(
        "the overdue hosts to be held as stale",
        Duration::from_secs(15),
        || {
            summary =
                get_json(&url(&node, "/v1/services")).unwrap_or_default()["services"][0].clone();
            summary["stale"].as_u64().unwrap_or(0) >= 15
        },
    );
    assert_eq!(summary["service"], "web");
    assert!(
        summary["hosts"].as_u64().unwrap() >= summary["stale"].as_u64().unwrap(),
        "{summary}"
    );
    assert!(hosts(&node, "web").len() >= 15);
}

#[test]
fn every_deliberate_difference_is_in_the_migration_guide() {
    let root = env!("CARGO_MANIFEST_DIR");
    let guide =
        std::fs::read_to_string(format!("{root}/docs/migrating.md")).expect("docs/migrating.md");
    let tests = std::fs::read_to_string(format!("{root}/tests/seed.rs")).expect("tests/seed.rs");
    for id in DIFFERENCES {
        assert!(
            guide.contains(&format!("<a id=\"{id}\"></a>")),
            "docs/migrating.md does not explain {id}"
        );
        assert!(
            tests.contains(&format!("deliberate(\"{id}\")")),
            "no test pins {id}"
        );
    }
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    assert!(
        readme.contains("(docs/migrating.md)"),
        "README links the migration guide"
    );
}
