//! TLS and mutual TLS over real processes (issue 11): a 3-node mTLS cluster, a node of another
//! CA kept out of gossip, `--tls-client-auth all`, certificate rotation checked by serial with
//! `openssl s_client`, the CLI's one-line errors, and the client library against an HTTPS
//! cluster. Certificates are made at test time (`common::certs`).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::certs::{served_serial, Ca, Leaf, TempDir};
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
    let mut args = strings(&["serve", "--listen", "127.0.0.1:0"]);
    args.extend(tls_args(&foreign, &ca, &[]));
    let out = cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // One error line, saying it once (other lines may warn about the host, e.g. its open
    // files limit).
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let said = errors[0]
        .matches("not a valid certificate of --tls-ca")
        .count();
    assert_eq!(said, 1, "{stderr}");

    let live = Leaf {
        cert: dir.path("live.pem"),
        key: dir.path("live.key"),
    };
    let install = |leaf: &Leaf| {
        std::fs::copy(&leaf.cert, &live.cert).unwrap();
        std::fs::copy(&leaf.key, &live.key).unwrap();
    };
    install(&ca.leaf("node", 0x11));
    let (node, logs) = {
        let args = tls_args(&live, &ca, &["--tls-poll", "1h"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::start_logged(&args)
    };
    install(&foreign);
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
    let short = ca.leaf_expiring("short", 2, 3);
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
