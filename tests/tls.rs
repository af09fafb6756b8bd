//! TLS and mutual TLS over real processes (issue 11): a 3-node mTLS cluster, a node of another
//! CA kept out of gossip, `--tls-client-auth all`, certificate rotation checked by serial with
//! `openssl s_client`, the CLI's one-line errors, and the client library against an HTTPS
//! cluster. Certificates are made at test time (`common::certs`).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::certs::{served_serial, Ca, Leaf, TempDir, Validity, NODE};
use common::{binary, curl, wait_until, Node};

const WAIT: Duration = Duration::from_secs(20);
const FORM: &str = "application/x-www-form-urlencoded";

/// A node's command-line TLS flags: its certificate, key and the CA, then `extra`.
fn tls_args(leaf: &Leaf, ca: &Ca, extra: &[&str]) -> Vec<String> {
    let mut args = leaf.serve_args();
    args.extend(["--tls-ca".into(), ca.pem.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start(args: &[String]) -> Node {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(&args)
}

/// `size` TLS nodes of one fresh CA (node `i` gets a certificate with serial `i + 1`), each
/// with `extra` flags; the others name the first as their peer. The folder goes last.
fn cluster(tag: &str, size: usize, extra: &[&str]) -> (TempDir, Ca, Vec<Node>) {
    let dir = TempDir::new(tag);
    let ca = Ca::new(&dir.0, tag);
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..size {
        let leaf = ca.leaf(&format!("node{i}"), i as u64 + 1);
        let mut args = tls_args(&leaf, &ca, extra);
        if let Some(first) = nodes.first() {
            args.extend(["--peers".to_owned(), first.url.clone()]);
        }
        nodes.push(start(&args));
    }
    (dir, ca, nodes)
}

/// curl's options to trust `ca` and present `client` when given.
fn tls_options(ca: &Ca, client: Option<&Leaf>) -> Vec<String> {
    let mut options = vec!["--cacert".to_owned(), ca.pem.display().to_string()];
    if let Some(leaf) = client {
        options.extend(leaf.flags("--cert", "--key"));
    }
    options
}

/// curl trusting `ca`, presenting `client` when given.
fn curl_tls(
    ca: &Ca,
    client: Option<&Leaf>,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, String) {
    let options = tls_options(ca, client);
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    match body {
        Some(body) => curl(&options, method, url, Some(FORM), body),
        None => curl(&options, method, url, None, ""),
    }
}

/// The addresses a node lists for `service`, read over HTTPS.
fn ips(ca: &Ca, client: Option<&Leaf>, node: &Node, service: &str) -> Vec<String> {
    let (status, body) = curl_tls(
        ca,
        client,
        "GET",
        &format!("{}/v1/registration/{service}", node.url),
        None,
    );
    if status != 200 {
        return Vec::new();
    }
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut ips: Vec<String> = json["hosts"]
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(|h| h["ip_address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips
}

/// The value of one series of a TLS node's `/metrics` (e.g. `discovery_long_polls`), read
/// trusting `ca` and presenting `client` when given.
fn tls_metric(ca: &Ca, client: Option<&Leaf>, node: &Node, series: &str) -> Option<f64> {
    let (_, text) = curl_tls(ca, client, "GET", &format!("{}/metrics", node.url), None);
    common::series_value(&text, series)
}

/// Runs the `discovery` CLI with `args`.
fn cli(args: &[String]) -> Output {
    Command::new(binary())
        .args(args)
        .env("DISCOVERY_LOG", "warn")
        .output()
        .expect("run discovery")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn three_node_mtls_cluster_converges_and_serves_health_checks_without_a_client_certificate() {
    let (_dir, ca, nodes) = cluster("tls-cluster", 3, &["--gossip-interval", "200ms"]);
    let [a, b, c] = &nodes[..] else {
        unreachable!()
    };
    assert!(a.url.starts_with("https://"), "{}", a.url);
    // Writes and reads need no client certificate under the default `peers`.
    for (node, ip) in [(a, "10.0.0.1"), (b, "10.0.0.2"), (c, "10.0.0.3")] {
        let url = format!("{}/v1/registration/web", node.url);
        let body = format!("ip={ip}&port=8080&revision=r1");
        let (status, text) = curl_tls(&ca, None, "POST", &url, Some(&body));
        assert_eq!(status, 200, "{text}");
    }
    let all = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
    for node in [&a, &b, &c] {
        wait_until(&format!("{} lists every host", node.url), WAIT, || {
            ips(&ca, None, node, "web") == all
        });
        let (status, _) = curl_tls(&ca, None, "GET", &format!("{}/readyz", node.url), None);
        assert_eq!(
            status, 200,
            "a load balancer's check needs no client certificate"
        );
    }
    // Gossip over mTLS made every node learn the others: c knows b without being told.
    wait_until("c lists b as a peer", WAIT, || {
        let (_, body) = curl_tls(&ca, None, "GET", &format!("{}/v1/peers", c.url), None);
        body.contains(&b.url)
    });
}

#[test]
fn a_node_with_a_certificate_of_another_ca_cannot_gossip_and_nothing_it_sends_is_applied() {
    let dir = TempDir::new("tls-other-ca");
    let ca = Ca::new(&dir.0, "good");
    let other = Ca::new(&dir.0, "evil");
    let a = start(&tls_args(
        &ca.leaf("a", 1),
        &ca,
        &["--node-id", "a", "--gossip-interval", "100ms"],
    ));
    // The intruder trusts a's CA, so it can verify a; a cannot verify the intruder. (Its
    // bundle holds its own CA too: a node does not start with a certificate of another.)
    let intruder_leaf = other.leaf("intruder", 7);
    let bundle = dir.path("bundle.pem");
    let both = [&ca.pem, &other.pem].map(|p| std::fs::read_to_string(p).unwrap());
    std::fs::write(&bundle, both.concat()).unwrap();
    let mut intruder_args = intruder_leaf.serve_args();
    intruder_args.extend(["--tls-ca".to_owned(), bundle.display().to_string()]);
    intruder_args.extend(strings(&[
        "--node-id",
        "x",
        "--gossip-interval",
        "100ms",
        "--peers",
        &a.url,
    ]));
    intruder_args.extend(strings(&["--warmup", "0s"]));
    let (x, x_logs) = {
        let args: Vec<&str> = intruder_args.iter().map(String::as_str).collect();
        Node::start_logged(&args)
    };
    let (status, text) = curl_tls(
        &ca,
        None,
        "POST",
        &format!("{}/v1/registration/web", x.url),
        Some("ip=10.6.6.6&port=8080&revision=evil"),
    );
    // The intruder serves with the other CA's certificate: trust that one to write to it.
    assert_ne!(
        status, 200,
        "x's certificate is not signed by the good CA: {text}"
    );
    let (status, text) = curl_tls(
        &other,
        None,
        "POST",
        &format!("{}/v1/registration/web", x.url),
        Some("ip=10.6.6.6&port=8080&revision=evil"),
    );
    assert_eq!(status, 200, "{text}");
    // The intruder keeps trying: wait until it has counted several failed exchanges with a.
    wait_until("x counts failed exchanges with a", WAIT, || {
        let (_, body) = curl_tls(&other, None, "GET", &format!("{}/v1/peers", x.url), None);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["peers"].as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["failures"].as_u64().unwrap_or(0) >= 3)
        })
    });
    assert!(
        ips(&ca, None, &a, "web").is_empty(),
        "nothing from x was applied on a"
    );
    // x's warning says why: a's 401 reason.
    wait_until("x's dead-peer warning carries a's reason", WAIT, || {
        x_logs
            .text()
            .lines()
            .any(|l| l.contains("gossip peer is now") && l.contains("not signed by this node's CA"))
    });
    // At the endpoint itself: the other CA's client certificate and no certificate get 401
    // with the reason, a good one gets through to the message check.
    let sync = format!("{}/v1/gossip/sync", a.url);
    let (status, body) = curl_tls(&ca, Some(&intruder_leaf), "POST", &sync, Some("x"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not signed by this node's CA"), "{body}");
    let (status, body) = curl_tls(&ca, None, "POST", &sync, Some("x"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    let (status, body) = curl_tls(&ca, Some(&ca.leaf("peer", 2)), "POST", &sync, Some("x"));
    assert_eq!(
        status, 400,
        "a verified peer reaches the message check: {body}"
    );
    drop(x);
}

#[test]
fn under_peers_a_foreign_certificate_is_served_as_none_and_only_gossip_is_refused() {
    let (dir, ca, nodes) = cluster("tls-foreign", 1, &[]);
    let other = Ca::new(&dir.0, "foreign");
    let foreign = other.leaf("foreign", 9);
    let node = &nodes[0];
    let (status, body) = curl_tls(
        &ca,
        Some(&foreign),
        "GET",
        &format!("{}/healthz", node.url),
        None,
    );
    assert_eq!(
        status, 200,
        "a health check with a foreign certificate: {body}"
    );
    let (status, body) = curl_tls(
        &ca,
        Some(&foreign),
        "GET",
        &format!("{}/v1/services", node.url),
        None,
    );
    assert_eq!(status, 200, "a read with a foreign certificate: {body}");
    let sync = format!("{}/v1/gossip/sync", node.url);
    let (status, body) = curl_tls(&ca, Some(&foreign), "POST", &sync, Some("x"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not signed by this node's CA"), "{body}");
}

#[test]
fn an_agent_certificate_of_the_cluster_ca_cannot_gossip_when_peers_are_named() {
    for mode in ["peers", "all"] {
        let extra = ["--tls-client-auth", mode, "--tls-peer-name", "localhost"];
        let (_dir, ca, nodes) = cluster(&format!("tls-peer-name-{mode}"), 1, &extra);
        let node = &nodes[0];
        let agent = ca.client_leaf("agent", 5);
        let (status, body) = curl_tls(
            &ca,
            Some(&agent),
            "GET",
            &format!("{}/healthz", node.url),
            None,
        );
        assert_eq!(status, 200, "{mode}: the agent's reads work: {body}");
        let sync = format!("{}/v1/gossip/sync", node.url);
        let (status, body) = curl_tls(&ca, Some(&agent), "POST", &sync, Some("x"));
        assert_eq!(status, 401, "{mode}: {body}");
        assert!(body.contains("only nodes may gossip"), "{mode}: {body}");
        let (status, body) = curl_tls(&ca, Some(&ca.leaf("peer", 2)), "POST", &sync, Some("x"));
        assert_eq!(
            status, 400,
            "{mode}: a node's certificate reaches the message check: {body}"
        );
    }
}

#[test]
fn peers_report_gossip_authenticated_under_mutual_tls_without_a_token() {
    let (_dir, ca, nodes) = cluster("tls-authenticated", 1, &[]);
    let (status, body) = curl_tls(
        &ca,
        None,
        "GET",
        &format!("{}/v1/peers", nodes[0].url),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["gossip_authenticated"], true, "{body}");
}

#[test]
fn health_says_to_use_https_and_that_https_needs_the_ca() {
    let (_dir, _ca, nodes) = cluster("tls-health", 1, &[]);
    let plain = nodes[0].url.replacen("https://", "http://", 1);
    let out = cli(&strings(&["health", "--url", &plain]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("use an https:// URL"), "{stderr}");
    let out = cli(&strings(&["health", "--url", &nodes[0].url]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--ca FILE"), "{stderr}");
    assert!(!stderr.contains("not signed"), "{stderr}");
}

#[test]
fn a_certificate_the_ca_does_not_sign_is_refused_at_start_and_on_reload() {
    let dir = TempDir::new("tls-own-chain");
    let ca = Ca::new(&dir.0, "own");
    let other = Ca::new(&dir.0, "otherown");
    let foreign = other.leaf("node", 0x66);
    let line = refused_at_start(&tls_args(&foreign, &ca, &[]));
    // Said once.
    let said = line.matches("not a valid certificate of --tls-ca").count();
    assert_eq!(said, 1, "{line}");

    let (live, node, logs) = Live::start(&dir, &ca, &ca.leaf("node", 0x11));
    live.install(&foreign);
    node.signal("HUP");
    wait_until("the refusal is logged", WAIT, || {
        logs.contains("not a valid certificate of --tls-ca")
    });
    assert_eq!(served_serial(node.addr()).as_deref(), Some("11"));
    wait_until("the refusal is counted", WAIT, || {
        let (_, metrics) = curl_tls(&ca, None, "GET", &format!("{}/metrics", node.url), None);
        metrics.contains("discovery_tls_reload_failures_total 1")
    });
}

#[test]
fn client_auth_all_without_a_peer_name_or_token_refuses_to_start() {
    let dir = TempDir::new("tls-all-unsafe");
    let ca = Ca::new(&dir.0, "unsafe");
    let mut args = strings(&["serve", "--listen", "127.0.0.1:0"]);
    args.extend(tls_args(
        &ca.leaf("node", 1),
        &ca,
        &["--tls-client-auth", "all"],
    ));
    let out = cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--tls-peer-name"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn with_both_mtls_and_a_peer_token_gossip_needs_both() {
    let (_dir, ca, nodes) = cluster("tls-token", 1, &["--peer-token", "s3cret"]);
    let a = &nodes[0];
    let peer = ca.leaf("peer", 2);
    let sync = format!("{}/v1/gossip/sync", a.url);
    let (status, body) = curl_tls(&ca, Some(&peer), "POST", &sync, Some("x"));
    assert_eq!(status, 401, "a certificate without the token: {body}");
    let with_token = |client: Option<&Leaf>| {
        let mut options = tls_options(&ca, client);
        options.extend(["-H".to_owned(), "Authorization: Bearer s3cret".to_owned()]);
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        curl(&options, "POST", &sync, Some(FORM), "x")
    };
    let (status, body) = with_token(Some(&peer));
    assert_eq!(status, 400, "both reach the message check: {body}");
    let (status, body) = with_token(None);
    assert_eq!(status, 401, "the token without a certificate: {body}");
}

#[test]
fn under_client_auth_all_a_client_without_a_certificate_is_refused_with_a_reason() {
    let (dir, ca, nodes) = cluster(
        "tls-all",
        1,
        &["--tls-client-auth", "all", "--tls-peer-name", "localhost"],
    );
    let node = &nodes[0];
    let client = ca.leaf("client", 2);
    let (status, body) = curl_tls(&ca, None, "GET", &format!("{}/healthz", node.url), None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    let (status, _) = curl_tls(
        &ca,
        Some(&client),
        "GET",
        &format!("{}/healthz", node.url),
        None,
    );
    assert_eq!(status, 200);

    let ca_flag = ["--ca".to_owned(), ca.pem.display().to_string()];
    let hosts = |extra: &[String]| {
        let mut args = strings(&["hosts", "web", "--timeout", "2s", "--registry", &node.url]);
        args.extend_from_slice(extra);
        cli(&args)
    };
    let ok = hosts(&[&ca_flag[..], &client.client_args()].concat());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Each failure: exit 1 and one line naming the cause.
    let expired = ca.leaf_with("old", 3, true);
    let other = Ca::new(&dir.0, "other");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (ca_flag.to_vec(), "requires a client certificate"),
        (
            [&ca_flag[..], &expired.client_args()].concat(),
            "the client certificate has expired",
        ),
        (
            [&ca_flag[..], &other.leaf("stranger", 4).client_args()].concat(),
            "not signed by this node's CA",
        ),
        (
            [
                &["--ca".to_owned(), other.pem.display().to_string()][..],
                &client.client_args(),
            ]
            .concat(),
            "not signed by the given CA",
        ),
        (Vec::new(), "needs the CA"),
    ];
    for (extra, expected) in cases {
        let out = hosts(&extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    // Plain HTTP to the TLS port is answered, not left hanging.
    let plain = node.url.replace("https://", "http://");
    let out = cli(&strings(&["hosts", "web", "--registry", &plain]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("use an https:// URL"), "{stderr}");
    // And `health`, the container check, takes the same flags.
    let out = cli(&[
        &strings(&["health", "--url", &node.url])[..],
        &ca_flag[..],
        &client.client_args(),
    ]
    .concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_https_client_of_a_plain_node_is_told_it_does_not_speak_tls() {
    let dir = TempDir::new("tls-plain");
    let ca = Ca::new(&dir.0, "p");
    let node = Node::start(&[]);
    let https = node.url.replace("http://", "https://");
    let out = cli(&strings(&[
        "services",
        "--registry",
        &https,
        "--ca",
        &ca.pem.display().to_string(),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not speak TLS"), "{stderr}");
}

#[test]
fn certificates_rotate_on_sighup_and_on_file_change_without_dropping_open_connections() {
    let dir = TempDir::new("tls-rotate");
    let ca = Ca::new(&dir.0, "rot");
    let live = Leaf {
        cert: dir.path("live.pem"),
        key: dir.path("live.key"),
    };
    // Replaces the live files the way a rotation tool should: write aside, then rename.
    let install = |leaf: &Leaf| {
        for (from, to) in [(&leaf.cert, &live.cert), (&leaf.key, &live.key)] {
            let aside = to.with_extension("new");
            std::fs::copy(from, &aside).unwrap();
            std::fs::rename(&aside, to).unwrap();
        }
    };
    install(&ca.leaf("node", 0x11));
    // The files are not polled within the test: only the SIGHUP can make the node reload.
    let (node, logs) = {
        let args = tls_args(&live, &ca, &["--tls-poll", "1h"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_logged(&args)
    };
    let addr = node.addr().to_owned();
    let xds = node.xds.clone().expect("an xDS listener");
    assert_eq!(served_serial(&addr).as_deref(), Some("11"));
    assert_eq!(served_serial(&xds).as_deref(), Some("11"), "xDS: the same");

    // A long poll opened on the old certificate, answered after the rotation.
    let url = format!("{}/v1/registration/web?index=0&wait=30s", node.url);
    let ca_pem = ca.pem.display().to_string();
    let poll = std::thread::spawn(move || curl(&["--cacert", &ca_pem], "GET", &url, None, ""));
    // The poll is parked once the node counts it (its metric of waiting polls).
    wait_until("the long poll waits", WAIT, || {
        tls_metric(&ca, None, &node, "discovery_long_polls").is_some_and(|n| n > 0.0)
    });

    install(&ca.leaf("node", 0x22));
    node.signal("HUP");
    wait_until("new connections get serial 22", WAIT, || {
        served_serial(&addr).as_deref() == Some("22")
    });
    assert_eq!(
        served_serial(&xds).as_deref(),
        Some("22"),
        "new xDS ones too"
    );
    let (status, text) = curl_tls(
        &ca,
        None,
        "POST",
        &format!("{}/v1/registration/web", node.url),
        Some("ip=10.1.1.1&port=80&revision=r1"),
    );
    assert_eq!(status, 200, "{text}");
    let (status, body) = poll.join().unwrap();
    assert_eq!(
        status, 200,
        "the connection made before the rotation finished: {body}"
    );
    assert!(body.contains("10.1.1.1"), "{body}");

    // A broken certificate is refused with an error and the current one stays.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    node.signal("HUP");
    wait_until("the refusal is logged", WAIT, || {
        logs.contains("TLS certificates not reloaded")
    });
    assert_eq!(served_serial(&addr).as_deref(), Some("22"));
    assert_eq!(served_serial(&xds).as_deref(), Some("22"));

    // No signal: a change of the files is noticed by itself (a node that polls them).
    install(&ca.leaf("node", 0x22));
    let polled = start(&tls_args(&live, &ca, &["--tls-poll", "100ms"]));
    let addr = polled.addr().to_owned();
    assert_eq!(served_serial(&addr).as_deref(), Some("22"));
    install(&ca.leaf("node", 0x33));
    wait_until("the changed files are picked up", WAIT, || {
        served_serial(&addr).as_deref() == Some("33")
    });
}

#[test]
fn a_sighup_right_after_listening_never_kills_a_node_without_tls() {
    let (node, logs) = Node::start_logged(&[]);
    node.signal("HUP");
    wait_until("the SIGHUP is reported as ignored", WAIT, || {
        logs.contains("SIGHUP ignored")
    });
    let (status, _) = common::http("GET", &format!("{}/healthz", node.url), None, "");
    assert_eq!(status, 200, "the node still answers");
    assert!(node.stop(), "the node exits 0 on SIGTERM after a SIGHUP");
}

/// The client library against an HTTPS cluster that requires client certificates: a
/// `Heartbeater` registers through one node, a `HostWatcher` sees the host through the other,
/// and the host is gone from it after the heartbeater's shutdown deregisters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeater_and_host_watcher_work_against_an_https_cluster_with_client_certificates() {
    use discovery_client::{
        ClientTls, HeartbeatConfig, Heartbeater, HostWatcher, Registration, RegistryClient,
        ServiceName, WatcherConfig,
    };
    let mtls = [
        "--tls-client-auth",
        "all",
        "--tls-peer-name",
        "localhost",
        "--gossip-interval",
        "200ms",
    ];
    let (_dir, ca, nodes) = cluster("tls-client", 2, &mtls);
    let [a, b] = &nodes[..] else { unreachable!() };
    let client = ca.leaf("client", 3);
    let tls = ClientTls::from_files(&ca.pem, Some(&client.cert), Some(&client.key)).unwrap();
    let through = |url: &str| {
        RegistryClient::builder([url])
            .tls(tls.clone())
            .build()
            .unwrap()
    };
    let service = ServiceName::parse("web").unwrap();
    let me =
        Registration::from_json(br#"{"ip": "10.9.9.9", "port": 8080, "revision": "r"}"#).unwrap();
    let config = HeartbeatConfig {
        interval: Duration::from_secs(1),
        ..HeartbeatConfig::default()
    };
    let heartbeater = Heartbeater::spawn(through(&a.url), service.clone(), me, config).unwrap();
    let mut watcher =
        HostWatcher::spawn(through(&b.url), service, WatcherConfig::default()).unwrap();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            let hosts = watcher.changed().await;
            if hosts.iter().any(|h| h.ip_address.to_string() == "10.9.9.9") {
                return;
            }
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "the watcher on b saw the host heartbeating to a"
    );
    heartbeater
        .shutdown()
        .await
        .expect("drained and deregistered over TLS");
    watcher.shutdown().await;
    // (The watcher holds a list that shrinks to nothing for its grace period: ask b itself.)
    let b_registry = through(&b.url);
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            let hosts = b_registry.hosts(&ServiceName::parse("web").unwrap()).await;
            if hosts.is_ok_and(|h| h.hosts.is_empty()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the deregistration reached b");
    // The same client without its certificate is refused with the node's reason.
    let bare = ClientTls::from_files(&ca.pem, None, None).unwrap();
    let refused = RegistryClient::builder([a.url.as_str()])
        .tls(bare)
        .build()
        .unwrap()
        .hosts(&ServiceName::parse("web").unwrap())
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("requires a client certificate"),
        "{refused}"
    );
}

/// `heartbeat`, `hosts`, `services` and `peers` against an HTTPS cluster that requires client
/// certificates: the agent registers through one node and deregisters on SIGTERM, the read
/// commands answer through the other.
#[test]
fn every_client_subcommand_works_against_an_https_cluster_with_client_certificates() {
    let mtls = [
        "--tls-client-auth",
        "all",
        "--tls-peer-name",
        "localhost",
        "--gossip-interval",
        "200ms",
    ];
    let (_dir, ca, nodes) = cluster("tls-cli", 2, &mtls);
    let [a, b] = &nodes[..] else { unreachable!() };
    let client = ca.leaf("client", 3);
    let tls = [
        &["--ca".to_owned(), ca.pem.display().to_string()][..],
        &client.client_args(),
    ]
    .concat();
    let mut agent = Command::new(binary())
        .args(strings(&[
            "heartbeat",
            "--registry",
            &a.url,
            "--service",
            "web",
        ]))
        .args(strings(&[
            "--port",
            "9000",
            "--ip",
            "10.3.3.3",
            "--interval",
            "1s",
        ]))
        .args(&tls)
        .env("DISCOVERY_LOG", "warn")
        .spawn()
        .expect("start the agent");
    wait_until("the agent's host reaches b", WAIT, || {
        ips(&ca, Some(&client), b, "web") == ["10.3.3.3"]
    });
    let read = |command: &[&str]| {
        let out = cli(&[
            &strings(command)[..],
            &strings(&["--registry", &b.url]),
            &tls,
        ]
        .concat());
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(read(&["hosts", "web"]).contains("10.3.3.3"));
    assert!(read(&["services"]).contains("web"));
    assert!(read(&["peers"]).contains(&a.url));
    let status = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = agent.wait().expect("wait for the agent");
    assert!(
        exit.success(),
        "the agent drained and deregistered over TLS"
    );
    wait_until("the host is gone from b", WAIT, || {
        ips(&ca, Some(&client), b, "web").is_empty()
    });
}

/// The `/v1/peers` body of the node at `base`, read over HTTPS trusting `ca`.
fn peers_of(ca: &Ca, base: &str) -> serde_json::Value {
    let (_, body) = curl_tls(ca, None, "GET", &format!("{base}/v1/peers"), None);
    serde_json::from_str(&body).unwrap_or_default()
}

/// `(address, state)` of every peer a `/v1/peers` body lists, sorted.
fn peer_rows(peers: &serde_json::Value) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = peers["peers"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|p| {
                    let field = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
                    (field("address"), field("state"))
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    rows
}

/// The value of one series of the `/metrics` of the node at `base`, read over HTTPS trusting
/// `ca` (0 when absent).
fn metric_tls(ca: &Ca, base: &str, series: &str) -> f64 {
    let (_, text) = curl_tls(ca, None, "GET", &format!("{base}/metrics"), None);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `https://localhost:PORT` of a node listening on 127.0.0.1:PORT.
fn by_name(node: &Node) -> String {
    node.url.replace("127.0.0.1", "localhost")
}

/// Three TLS nodes whose certificates name `localhost` only (no IP address), the second and
/// third naming the first as `https://localhost:PORT`, each with `extra` flags; the first
/// node's log lines are collected.
fn dns_named_cluster(tag: &str, extra: &[&str]) -> (TempDir, Ca, Vec<Node>, common::Logs) {
    let dir = TempDir::new(tag);
    let ca = Ca::new(&dir.0, tag);
    let mut nodes: Vec<Node> = Vec::new();
    let mut logs = None;
    for i in 0..3u64 {
        let leaf = ca.issue(
            &format!("node{i}"),
            i + 1,
            &["localhost"],
            NODE,
            Validity::Now,
        );
        let id = format!("n{i}");
        let mut args = tls_args(
            &leaf,
            &ca,
            &["--node-id", &id, "--gossip-interval", "200ms"],
        );
        args.extend(strings(extra));
        if let Some(first) = nodes.first() {
            args.extend(["--peers".to_owned(), by_name(first)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if i == 0 {
            let (node, first_logs) = Node::start_logged(&args);
            logs = Some(first_logs);
            nodes.push(node);
        } else {
            nodes.push(Node::start(&args));
        }
    }
    (dir, ca, nodes, logs.expect("the first node"))
}

/// Review finding 9 of issue 11: nodes that name their peers by DNS name, with certificates
/// for that name only, learned each other's IP address from incoming gossip (where a message
/// came from, and the listen address a node gives by default), failed its certificate name
/// check every round and listed it as a suspect peer for good. With `--advertise` every node
/// lists exactly the others by name, alive.
#[test]
fn with_dns_named_certificates_and_advertise_every_node_lists_exactly_the_real_peers() {
    let (_dir, ca, nodes, _) =
        dns_named_cluster("tls-advertise", &["--advertise", "https://localhost"]);
    let names: Vec<String> = nodes.iter().map(by_name).collect();
    let expected = |me: usize| -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = (0..3)
            .filter(|i| *i != me)
            .map(|i| (names[i].clone(), "alive".to_owned()))
            .collect();
        rows.sort();
        rows
    };
    for (i, node) in nodes.iter().enumerate() {
        wait_until(
            &format!("node {i} lists exactly the others, alive"),
            WAIT,
            || peer_rows(&peers_of(&ca, &by_name(node))) == expected(i),
        );
        let peers = peers_of(&ca, &by_name(node));
        assert_eq!(peers["address"], names[i].as_str(), "{peers}");
    }
    // Still so rounds later: nothing learned from a source address comes back.
    let rounds = |node: &Node| {
        metric_tls(
            &ca,
            &by_name(node),
            "discovery_gossip_rounds_total{kind=\"ok\"}",
        )
    };
    let before: Vec<f64> = nodes.iter().map(rounds).collect();
    wait_until("ten more rounds on every node", WAIT, || {
        nodes
            .iter()
            .zip(&before)
            .all(|(n, b)| rounds(n) >= b + 10.0)
    });
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(
            peer_rows(&peers_of(&ca, &by_name(node))),
            expected(i),
            "node {i}"
        );
    }
}

/// The same cluster without `--advertise`: each node gives its listen address, 127.0.0.1,
/// which its certificate does not name. The address is dropped at its first failed check and
/// not learned again, with a warning that names the fix, instead of staying a suspect peer.
#[test]
fn without_advertise_an_address_the_certificate_does_not_name_is_dropped_not_kept_suspect() {
    let (_dir, ca, nodes, logs) = dns_named_cluster("tls-misnamed", &[]);
    wait_until(
        "the first node warns about a misnamed address",
        WAIT,
        || logs.contains("--advertise"),
    );
    let clean = |node: &Node| {
        let rows = peer_rows(&peers_of(&ca, &by_name(node)));
        rows.iter()
            .all(|(addr, state)| !addr.contains("127.0.0.1") && state == "alive")
    };
    for (i, node) in nodes.iter().enumerate() {
        wait_until(
            &format!("node {i} lists no misnamed or suspect peer"),
            WAIT,
            || clean(node),
        );
    }
    let rounds = |node: &Node| {
        metric_tls(
            &ca,
            &by_name(node),
            "discovery_gossip_rounds_total{kind=\"ok\"}",
        )
    };
    // The second and third nodes reach the first by name; their rounds carry their listen
    // addresses to it again and again.
    let before: Vec<f64> = nodes[1..].iter().map(rounds).collect();
    wait_until("ten more rounds from the others", WAIT, || {
        nodes[1..]
            .iter()
            .zip(&before)
            .all(|(n, b)| rounds(n) >= b + 10.0)
    });
    for (i, node) in nodes.iter().enumerate() {
        assert!(clean(node), "node {i}: {}", peers_of(&ca, &by_name(node)));
    }
    assert_eq!(
        peer_rows(&peers_of(&ca, &by_name(&nodes[1]))),
        [(by_name(&nodes[0]), "alive".to_owned())]
    );
}

/// The certificate files a node is started with, replaced in place by a test (a copy, then a
/// SIGHUP: the node does not poll them within a test).
struct Live(Leaf);

impl Live {
    /// Starts a node of `ca` serving `first` from `live.pem`/`live.key` in `dir`, with its log
    /// lines collected.
    fn start(dir: &TempDir, ca: &Ca, first: &Leaf) -> (Live, Node, common::Logs) {
        let live = Live(Leaf {
            cert: dir.path("live.pem"),
            key: dir.path("live.key"),
        });
        live.install(first);
        let args = tls_args(&live.0, ca, &["--tls-poll", "1h"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (node, logs) = Node::start_logged(&args);
        (live, node, logs)
    }

    /// Puts `leaf` in place of the live files.
    fn install(&self, leaf: &Leaf) {
        std::fs::copy(&leaf.cert, &self.0.cert).unwrap();
        std::fs::copy(&leaf.key, &self.0.key).unwrap();
    }
}

/// Runs `discovery serve` on a free port with `args` and expects it to refuse to start: returns
/// its one error line (other lines may warn about the host, e.g. its open files limit).
fn refused_at_start(args: &[String]) -> String {
    let out = cli(&[&strings(&["serve", "--listen", "127.0.0.1:0"])[..], args].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_owned()
}

/// Review: the node checked its own certificate only against --tls-ca (when given). A
/// certificate it cannot serve with (only clientAuth), cannot gossip with as a client under
/// --tls-ca (only serverAuth), expired, not yet valid or with another key is refused at start
/// with one line naming the cause, and on a reload the old one stays, counted and logged.
#[test]
fn an_unusable_own_certificate_is_refused_at_start_and_on_reload_with_the_cause() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let dir = TempDir::new("tls-own-usage");
    let ca = Ca::new(&dir.0, "usage");
    let names = &["localhost", "127.0.0.1"];
    let client_only = ca.issue("client-only", 0x31, names, &[ClientAuth], Validity::Now);
    let server_only = ca.issue("server-only", 0x32, names, &[ServerAuth], Validity::Now);
    let expired = ca.issue("expired", 0x33, names, NODE, Validity::Expired);
    let not_yet = ca.issue("not-yet", 0x34, names, NODE, Validity::NotYet);
    let other_key = Leaf {
        cert: ca.leaf("a", 0x35).cert,
        key: ca.leaf("b", 0x36).key,
    };
    let ca_flag = strings(&["--tls-ca", &ca.pem.display().to_string()]);
    let cases: Vec<(&Leaf, &[String], &str)> = vec![
        (&client_only, &[], "lacks serverAuth"),
        (&client_only, &ca_flag, "lacks serverAuth"),
        (&server_only, &ca_flag, "lacks clientAuth"),
        (&expired, &[], "has expired"),
        (&not_yet, &[], "not valid yet"),
        (&other_key, &[], "do not go together"),
    ];
    for (leaf, extra, cause) in cases {
        let line = refused_at_start(&[&leaf.serve_args()[..], extra].concat());
        assert!(line.contains(cause), "{cause}: {line}");
        let file = leaf.cert.display().to_string();
        assert!(line.contains(&file), "names the file: {line}");
    }
    // Without --tls-ca the certificate is never a client's: serverAuth alone serves.
    let alone = start(&server_only.serve_args());
    assert_eq!(served_serial(alone.addr()).as_deref(), Some("32"));

    let (live, node, logs) = Live::start(&dir, &ca, &ca.leaf("node", 0x11));
    for (n, (leaf, cause)) in [
        (&client_only, "lacks serverAuth"),
        (&expired, "has expired"),
    ]
    .into_iter()
    .enumerate()
    {
        live.install(leaf);
        node.signal("HUP");
        wait_until(&format!("the refusal ({cause}) is logged"), WAIT, || {
            logs.text()
                .lines()
                .any(|l| l.contains("not reloaded") && l.contains(cause))
        });
        assert_eq!(served_serial(node.addr()).as_deref(), Some("11"), "{cause}");
        wait_until(&format!("the refusal ({cause}) is counted"), WAIT, || {
            metric_tls(&ca, &node.url, "discovery_tls_reload_failures_total") == (n + 1) as f64
        });
    }
}

/// Issue 11 review: "when does my certificate expire?" answered by a gauge (Unix time, as
/// cert-manager and the blackbox exporter give it), by `/v1/peers`, and by a warning while
/// it expires within 7 days; all follow a rotation.
#[test]
fn the_certificate_expiry_gauge_and_warning_follow_a_rotation() {
    let dir = TempDir::new("tls-expiry");
    let ca = Ca::new(&dir.0, "expiry");
    let names = &["localhost", "127.0.0.1"];
    let year = ca.issue("node", 0x41, names, NODE, Validity::Days(365));
    let days = ca.issue("node", 0x42, names, NODE, Validity::Days(3));
    let (live, node, logs) = Live::start(&dir, &ca, &year);
    let gauge = |which: &str| {
        let series =
            format!("discovery_tls_certificate_not_after_seconds{{certificate=\"{which}\"}}");
        metric_tls(&ca, &node.url, &series) as i64
    };
    assert_eq!(gauge("node"), common::certs::not_after(&year.cert));
    assert_eq!(gauge("ca"), common::certs::not_after(&ca.pem));
    assert!(!logs.contains("expires within"), "{}", logs.text());

    live.install(&days);
    node.signal("HUP");
    let expected = common::certs::not_after(&days.cert);
    wait_until("the gauge follows the rotation", WAIT, || {
        gauge("node") == expected
    });
    wait_until("a warning says it expires soon", WAIT, || {
        logs.contains("expires within")
    });
    let peers = peers_of(&ca, &node.url);
    let shown = peers["tls_certificate_not_after"]
        .as_str()
        .unwrap_or_default();
    let unix = humantime::parse_rfc3339_weak(shown)
        .unwrap_or_else(|e| panic!("{shown:?}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(unix, expected, "{peers}");
}

/// Review finding 3: a certificate refused as not valid yet (issued a moment ago by a host
/// whose clock is ahead) was never tried again: the files were recorded as seen, and the node
/// kept the old certificate until they changed again. Now each poll tries them again, and the
/// node serves the new certificate once it is valid, with one error line, not one per poll.
#[test]
fn a_certificate_not_valid_yet_is_taken_once_it_is() {
    let dir = TempDir::new("tls-not-yet");
    let ca = Ca::new(&dir.0, "notyet");
    let live = Leaf {
        cert: dir.path("live.pem"),
        key: dir.path("live.key"),
    };
    let first = ca.leaf("node", 0x51);
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let args = tls_args(&live, &ca, &["--tls-poll", "200ms"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (node, logs) = Node::start_logged(&args);
    let names = &["localhost", "127.0.0.1"];
    let soon = ca.issue("node", 0x52, names, NODE, Validity::InSeconds(4));
    // The key first: a poll between the two copies sees a key that does not match, refused
    // for good until the certificate follows.
    std::fs::copy(&soon.key, &live.key).unwrap();
    std::fs::copy(&soon.cert, &live.cert).unwrap();
    wait_until("the refusal is logged", WAIT, || {
        logs.text()
            .lines()
            .any(|l| l.contains("not reloaded") && l.contains("not valid yet"))
    });
    assert_eq!(served_serial(node.addr()).as_deref(), Some("51"));
    wait_until("the new certificate is served once valid", WAIT, || {
        served_serial(node.addr()).as_deref() == Some("52")
    });
    let refusals = logs
        .text()
        .lines()
        .filter(|l| l.contains("not valid yet"))
        .count();
    assert_eq!(refusals, 1, "{}", logs.text());
}

/// One HTTPS connection kept alive across requests (raw HTTP/1.1 over rustls), presenting
/// `client`'s certificate and trusting `ca`.
struct KeptAlive(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>);

impl KeptAlive {
    fn open(addr: &str, ca: &Ca, client: &Leaf) -> KeptAlive {
        use discovery_client::tls::{parse_certs, parse_key, parse_roots, provider};
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        let roots = parse_roots(&ca.pem, &read(&ca.pem)).unwrap();
        let chain = parse_certs(&client.cert, &read(&client.cert)).unwrap();
        let key = parse_key(&client.key, &read(&client.key)).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        KeptAlive(rustls::StreamOwned::new(tls, tcp))
    }

    fn send(&mut self, path: &str) {
        use std::io::Write;
        let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
        self.0.write_all(head.as_bytes()).unwrap();
        self.0.flush().unwrap();
    }

    /// The next answer: status, body, and whether the node closes the connection after it.
    fn answer(&mut self) -> (u16, String, bool) {
        use std::io::Read;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.0.read_exact(&mut byte).expect("an answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().unwrap());
        let mut body = vec![0u8; length];
        self.0.read_exact(&mut body).unwrap();
        let close = head.lines().any(|l| l == "connection: close");
        (status, String::from_utf8_lossy(&body).into_owned(), close)
    }

    fn get(&mut self, path: &str) -> (u16, String, bool) {
        self.send(path);
        self.answer()
    }

    /// Whether the node closed the connection (a read ends instead of waiting).
    fn closed(&mut self) -> bool {
        use std::io::Read;
        let mut byte = [0u8; 1];
        !matches!(self.0.read(&mut byte), Ok(n) if n > 0)
    }
}

/// Writes the CA bundle `file` the way a rotation tool should: aside, then renamed.
fn install_bundle(file: &std::path::Path, cas: &[&Ca]) {
    let pems: Vec<String> = cas
        .iter()
        .map(|ca| std::fs::read_to_string(&ca.pem).unwrap())
        .collect();
    let aside = file.with_extension("new");
    std::fs::write(&aside, pems.concat()).unwrap();
    std::fs::rename(&aside, file).unwrap();
}

#[test]
fn a_connection_kept_alive_across_a_ca_swap_is_held_to_the_new_ca_at_its_next_request() {
    let dir = TempDir::new("tls-ca-swap");
    let kept = Ca::new(&dir.0, "kept");
    let dropped = Ca::new(&dir.0, "dropped");
    // The node trusts both CAs, then only `kept` (its own certificate's).
    let bundle = dir.path("bundle.pem");
    install_bundle(&bundle, &[&kept, &dropped]);
    let mut args = kept.leaf("node", 1).serve_args();
    args.extend(strings(&["--tls-ca", &bundle.display().to_string()]));
    args.extend(strings(&[
        "--tls-client-auth",
        "all",
        "--tls-peer-name",
        "localhost",
    ]));
    // Idle keep-alive connections are cut after --read-timeout: longer than the test.
    args.extend(strings(&["--tls-poll", "1h", "--read-timeout", "60s"]));
    let node = start(&args);
    let trusted = kept.leaf("trusted", 2);
    let untrusted = dropped.leaf("untrusted", 3);
    let mut a = KeptAlive::open(node.addr(), &kept, &trusted);
    let mut b = KeptAlive::open(node.addr(), &kept, &untrusted);
    assert_eq!(a.get("/v1/services").0, 200);
    assert_eq!(b.get("/v1/services").0, 200, "both CAs trusted at first");

    // b's long poll is in flight (parked) when the CA is swapped...
    b.send("/v1/registration/web?index=0&wait=30s");
    wait_until("b's long poll waits", WAIT, || {
        tls_metric(&kept, Some(&trusted), &node, "discovery_long_polls").is_some_and(|n| n > 0.0)
    });
    install_bundle(&bundle, &[&kept]);
    node.signal("HUP");
    wait_until(
        "a new connection of the dropped CA is refused",
        WAIT,
        || {
            let url = format!("{}/v1/services", node.url);
            curl_tls(&kept, Some(&untrusted), "GET", &url, None).0 == 401
        },
    );
    // ...and is answered in full: nothing is cut mid-request.
    let url = format!("{}/v1/registration/web", node.url);
    let body = "ip=10.4.4.4&port=80&revision=r1";
    assert_eq!(
        curl_tls(&kept, Some(&trusted), "POST", &url, Some(body)).0,
        200
    );
    let (status, body, _) = b.answer();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("10.4.4.4"), "{body}");
    // Its next request is judged under the new CA: refused with the reason, then closed.
    let (status, body, close) = b.get("/v1/services");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not signed by this node's CA"), "{body}");
    assert!(close, "the refusal says the connection closes");
    assert!(b.closed(), "and the node closes it");
    // The client the new CA still trusts goes on, on its old connection.
    let (status, body, close) = a.get("/v1/services");
    assert_eq!((status, close), (200, false), "{body}");
}

/// The start of a TLS ClientHello: a handshake record header announcing 512 bytes, and the
/// first bytes of the message. A client that sends this and stops is mid-handshake.
const HALF_A_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

/// Connections to `addr` that start no handshake (`idle`) or stop half-way through their
/// ClientHello (`half`).
fn stalled_handshakes(addr: &str, idle: usize, half: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    let mut all = Vec::new();
    for i in 0..idle + half {
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        if i >= idle {
            tcp.write_all(HALF_A_CLIENT_HELLO).expect("write");
        }
        all.push(tcp);
    }
    all
}

/// Waits until the node closed each of `conns` (a read ends, instead of timing out).
fn await_closed(conns: Vec<std::net::TcpStream>) {
    use std::io::Read;
    for mut tcp in conns {
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut byte = [0u8; 1];
        match tcp.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the node to close the connection, got {other:?}"),
        }
    }
}

/// `discovery_tls_handshakes_failed_total{reason="timeout"}` of a TLS node.
fn handshake_timeouts(ca: &Ca, node: &Node) -> Option<f64> {
    let series = r#"discovery_tls_handshakes_failed_total{reason="timeout"}"#;
    tls_metric(ca, None, node, series)
}

#[test]
fn a_connection_that_does_not_finish_its_handshake_is_cut_at_the_handshake_timeout() {
    // The handshake timeout is 10 s or a shorter --read-timeout.
    let (_dir, ca, nodes) = cluster("tls-handshake-timeout", 1, &["--read-timeout", "1s"]);
    let node = &nodes[0];
    let xds = node.xds.clone().expect("an xDS listener");
    let mut stalled = stalled_handshakes(node.addr(), 1, 1);
    stalled.extend(stalled_handshakes(&xds, 1, 1));
    await_closed(stalled);
    wait_until("the four are counted as handshake timeouts", WAIT, || {
        handshake_timeouts(&ca, node) == Some(4.0)
    });
}

#[test]
fn stalled_handshakes_keep_no_well_behaved_client_waiting() {
    let extra = ["--read-timeout", "10s", "--max-connections", "300"];
    let (_dir, ca, nodes) = cluster("tls-handshake-flood", 1, &extra);
    let node = &nodes[0];
    // Far more stalled handshakes than handshake slots (half the cores).
    let stalled = stalled_handshakes(node.addr(), 100, 100);
    // Served while every stalled one still holds its connection: none has timed out yet.
    for _ in 0..5 {
        let (status, _) = curl_tls(&ca, None, "GET", &format!("{}/healthz", node.url), None);
        assert_eq!(status, 200);
    }
    assert_eq!(handshake_timeouts(&ca, node), Some(0.0));
    await_closed(stalled);
    wait_until("the 200 are counted as handshake timeouts", WAIT, || {
        handshake_timeouts(&ca, node) == Some(200.0)
    });
}

#[test]
fn a_connection_kept_alive_past_its_client_certificates_expiry_is_refused_from_then_on() {
    let dir = TempDir::new("tls-expiry");
    let ca = Ca::new(&dir.0, "exp");
    let mut args = tls_args(&ca.leaf("node", 1), &ca, &["--tls-client-auth", "all"]);
    args.extend(strings(&[
        "--tls-peer-name",
        "localhost",
        "--read-timeout",
        "60s",
    ]));
    let node = start(&args);
    let localhost = ["localhost", "127.0.0.1"];
    let short = ca.issue("short", 2, &localhost, NODE, Validity::ForSeconds(3));
    let mut kept = KeptAlive::open(node.addr(), &ca, &short);
    assert_eq!(kept.get("/v1/services").0, 200, "valid at first");
    let url = format!("{}/v1/services", node.url);
    wait_until("a new connection with it is refused", WAIT, || {
        curl_tls(&ca, Some(&short), "GET", &url, None).0 == 401
    });
    // The kept connection was judged valid at its handshake: judged again at expiry.
    let (status, body, close) = kept.get("/v1/services");
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("the client certificate has expired"),
        "{body}"
    );
    assert!(close && kept.closed());
}

/// `client`'s certificate followed by `extra` copies of `junk`'s, as one chain file.
fn padded_chain(dir: &TempDir, client: &Leaf, junk: &Ca, extra: usize) -> Leaf {
    let cert = dir.path(&format!("padded-{extra}.pem"));
    let mut pem = std::fs::read_to_string(&client.cert).unwrap();
    pem.push_str(&std::fs::read_to_string(&junk.pem).unwrap().repeat(extra));
    std::fs::write(&cert, pem).unwrap();
    Leaf {
        cert,
        key: client.key.clone(),
    }
}

#[test]
fn a_client_chain_of_more_than_seven_certificates_is_refused_unverified() {
    let dir = TempDir::new("tls-long-chain");
    let ca = Ca::new(&dir.0, "chain");
    let junk = Ca::new(&dir.0, "junk");
    let mut args = tls_args(&ca.leaf("node", 1), &ca, &["--tls-client-auth", "all"]);
    args.extend(strings(&["--tls-peer-name", "localhost"]));
    let node = start(&args);
    let client = ca.leaf("client", 2);
    // The client's certificate and 6 intermediates (unused ones: the path is still found).
    let mut within = KeptAlive::open(node.addr(), &ca, &padded_chain(&dir, &client, &junk, 6));
    assert_eq!(within.get("/v1/services").0, 200);
    let mut past = KeptAlive::open(node.addr(), &ca, &padded_chain(&dir, &client, &junk, 7));
    let (status, body, _) = past.get("/v1/services");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("chain is too long"), "{body}");
}

#[test]
fn a_node_with_client_auth_off_still_serves_xds() {
    // The test harness once took any "off" for `--xds-listen off` (review finding 9).
    let (_dir, _ca, nodes) = cluster("tls-auth-off", 1, &["--tls-client-auth", "off"]);
    assert!(nodes[0].xds.is_some(), "its xDS listener was read");
}
