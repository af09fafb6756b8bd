//! Hostile peers against real `discovery serve` processes (issue 10): crafted gossip messages
//! POSTed to `/v1/gossip/sync` must be refused whole (or bounded) while the real nodes keep
//! gossiping and serving. The in-process versions of these scenarios are in
//! `src/gossip/tests.rs`; these confirm them over HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get_json, http, wait_until, Node};
use discovery::gossip::messages::{Sender, SyncMessage, MAX_DECODED_BYTES, MAX_MESSAGE_BYTES};
use discovery::registry::{Delta, Digest};

const WAIT: Duration = Duration::from_secs(20);
const FORM: &str = "application/x-www-form-urlencoded";

/// POSTs raw bytes to a node's gossip endpoint: (status, body, how long the answer took).
fn post_gossip(node: &Node, body: &[u8]) -> (u16, String, Duration) {
    post_gossip_to(node.addr(), body)
}

fn post_gossip_to(addr: &str, body: &[u8]) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /v1/gossip/sync HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-discovery-gossip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read answer");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, took)
}

fn message(node_id: &str, addr: Option<&str>, port: u16, peers: Vec<String>) -> Vec<u8> {
    SyncMessage {
        from: Sender {
            node_id: node_id.into(),
            addr: addr.map(str::to_owned),
            port,
            ready: true,
        },
        digest: Digest::new(),
        delta: Delta::default(),
        peers,
    }
    .encode()
}

fn port(node: &Node) -> u16 {
    node.addr().rsplit(':').next().unwrap().parse().unwrap()
}

fn start(id: &str, peers: Option<&Node>) -> Node {
    let mut args = vec!["--node-id", id, "--gossip-interval", "200ms"];
    let url;
    if let Some(peer) = peers {
        url = peer.url.clone();
        args.extend(["--peers", &url]);
    }
    Node::start(&args)
}

fn peers(node: &Node) -> Vec<(String, String)> {
    get_json(&format!("{}/v1/peers", node.url))
        .and_then(|p| {
            p["peers"].as_array().map(|rows| {
                rows.iter()
                    .map(|r| {
                        let id = r["node_id"].as_str().unwrap_or("").to_owned();
                        (id, r["state"].as_str().unwrap_or("").to_owned())
                    })
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn alive(node: &Node, id: &str) -> bool {
    peers(node).iter().any(|(i, s)| i == id && s == "alive")
}

fn register(node: &Node, service: &str, ip: &str) {
    let body = format!("ip={ip}&port=8080&revision=r1");
    let url = format!("{}/v1/registration/{service}", node.url);
    let (status, text) = http("POST", &url, Some(FORM), &body);
    assert_eq!(status, 200, "{text}");
}

fn serves(node: &Node, service: &str, ip: &str) -> bool {
    get_json(&format!("{}/v1/registration/{service}", node.url)).is_some_and(|b| {
        b["hosts"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["ip_address"] == ip))
    })
}

/// The value of one series of `/metrics`, e.g. `discovery_peers{state="unverified"}`.
fn metric(node: &Node, series: &str) -> f64 {
    let (_, text) = http("GET", &format!("{}/metrics", node.url), None, "");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits until every node in `to` serves the host, and returns how long that took.
fn spread(to: &[&Node], service: &str, ip: &str) -> Duration {
    let started = Instant::now();
    for node in to {
        wait_until("the host to spread", WAIT, || serves(node, service, ip));
    }
    started.elapsed()
}

#[test]
fn a_message_in_a_nodes_own_name_is_refused_and_both_keep_gossiping() {
    let (a, logs) = Node::start_logged(&["--node-id", "a", "--gossip-interval", "200ms"]);
    let b = start("b", Some(&a));
    wait_until("a and b alive to each other", WAIT, || {
        alive(&a, "b") && alive(&b, "a")
    });
    // The attack of issue 10: "I am a, at b's address" to a, and the mirror to b.
    let to_a = message("a", Some(&b.url), port(&b), vec![b.url.clone()]);
    let (status, body, _) = post_gossip(&a, &to_a);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("own node id"),
        "{body}"
    );
    let to_b = message("b", Some(&a.url), port(&a), vec![a.url.clone()]);
    assert_eq!(post_gossip(&b, &to_b).0, 409);
    wait_until("a warning naming the source", WAIT, || {
        logs.contains("claims this node's own node id") && logs.contains("127.0.0.1")
    });
    assert_eq!(
        metric(
            &a,
            "discovery_gossip_messages_refused_total{kind=\"own_id\"}"
        ),
        1.0
    );
    assert!(alive(&a, "b") && alive(&b, "a"));
    register(&a, "web", "10.0.0.1");
    spread(&[&b], "web", "10.0.0.1");
    register(&b, "web", "10.0.0.2");
    spread(&[&a], "web", "10.0.0.2");
    assert!(alive(&a, "b") && alive(&b, "a"));
}

#[test]
fn a_flood_of_invented_peers_leaves_convergence_fast_and_a_new_node_joins() {
    let a = start("a", None);
    let b = start("b", Some(&a));
    let c = start("c", Some(&a));
    wait_until("a full mesh", WAIT, || {
        alive(&a, "b") && alive(&a, "c") && alive(&b, "c") && alive(&c, "b")
    });
    for round in 0..20 {
        for (i, node) in [&a, &b, &c].into_iter().enumerate() {
            let invented = (0..64)
                .map(|j| format!("http://10.66.{round}.{j}:7"))
                .collect();
            let from = format!("http://10.77.{round}.{i}:7");
            let (status, body, _) =
                post_gossip(node, &message("mallory", Some(&from), 7, invented));
            assert_eq!(status, 200, "{body}");
        }
    }
    for node in [&a, &b, &c] {
        assert!(metric(node, "discovery_peers{state=\"unverified\"}") <= 32.0);
    }
    // Writes still reach every node at push speed (11 ms before the flood on this machine,
    // 6-30 s with the flood before the fix).
    for (i, from) in [&a, &b, &c].into_iter().enumerate() {
        let ip = format!("10.0.0.{i}");
        register(from, "web", &ip);
        let took = spread(&[&a, &b, &c], "web", &ip);
        eprintln!("a write on node {i} reached every node in {took:?} under the flood");
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    // A new node naming only a joins: ready, and writes flow both ways.
    let d = start("d", Some(&a));
    wait_until("d ready", WAIT, || {
        http("GET", &format!("{}/readyz", d.url), None, "").0 == 200
    });
    register(&d, "web", "10.0.0.9");
    assert!(spread(&[&a, &b, &c], "web", "10.0.0.9") < Duration::from_secs(5));
    register(&c, "web", "10.0.0.10");
    assert!(spread(&[&d], "web", "10.0.0.10") < Duration::from_secs(5));
}

/// CPU time (user + system, clock ticks of 10 ms) and peak RSS (KiB) of a process.
fn cpu_ticks_and_peak_kib(node: &Node) -> (u64, u64) {
    let pid = node.child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (ticks, peak)
}

#[test]
fn deflate_bombs_are_refused_quickly_while_reads_keep_answering() {
    let node = Node::start(&["--node-id", "a"]);
    register(&node, "web", "10.0.0.1");
    // The bomb of issue 10: 64 MiB of JSON whitespace in about 65 KB.
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&chunk).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 100_000 && 64 << 20 > MAX_DECODED_BYTES);
    let (status, body, _) = post_gossip(&node, &bomb);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("too large"), "{body}");

    // Refusing costs little: 20 bombs one after another.
    let (ticks_before, _) = cpu_ticks_and_peak_kib(&node);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (status, _, took) = post_gossip(&node, &bomb);
        assert_eq!(status, 400);
        slowest = slowest.max(took);
    }
    let (ticks_after, peak_kib) = cpu_ticks_and_peak_kib(&node);
    let cpu_ms_per_bomb = (ticks_after - ticks_before) as f64 * 10.0 / 20.0;
    eprintln!(
        "bomb of {} bytes: {cpu_ms_per_bomb:.1} ms CPU each, slowest answer {slowest:?}, peak RSS {peak_kib} KiB",
        bomb.len()
    );
    // Debug builds are many times slower than release, and the machine is shared: the
    // bounds are loose there (release figures in docs/gossip.md).
    let (answer_bound, read_bound) = if cfg!(debug_assertions) {
        (Duration::from_secs(5), Duration::from_secs(1))
    } else {
        (Duration::from_millis(200), Duration::from_millis(300))
    };
    assert!(slowest < answer_bound, "{slowest:?}");
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");

    // Four bombers at once, repeatedly, while a reader measures its slowest read.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bombers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, bomb, stop) = (node.addr().to_owned(), bomb.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, _, _) = post_gossip_to(&addr, &bomb);
                    assert!(status == 400 || status == 503, "{status}");
                }
            })
        })
        .collect();
    let mut slowest_read = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        assert!(serves(&node, "web", "10.0.0.1"));
        slowest_read = slowest_read.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for bomber in bombers {
        bomber.join().unwrap();
    }
    eprintln!("slowest read under four bombers: {slowest_read:?}");
    assert!(slowest_read < read_bound, "{slowest_read:?}");
}

#[test]
fn a_sender_port_0_or_a_bad_address_is_refused_and_learned_from_nothing() {
    let node = Node::start(&["--node-id", "a"]);
    for (addr, port) in [
        (None, 0),
        (Some("http://127.0.0.1:0"), 8080),
        (Some("http://x"), 8080),
    ] {
        let (status, body, _) = post_gossip(&node, &message("evil", addr, port, Vec::new()));
        assert_eq!(status, 400, "{addr:?} {port}: {body}");
        assert!(
            body.contains("\"error\"") && body.contains("sender"),
            "{body}"
        );
    }
    assert!(peers(&node).is_empty());
    assert_eq!(
        metric(
            &node,
            "discovery_gossip_messages_refused_total{kind=\"bad_sender\"}"
        ),
        3.0
    );
}

#[test]
fn unauthenticated_gossip_is_a_warning_at_start_and_in_peers() {
    let (open, logs) = Node::start_logged(&["--peers", "http://127.0.0.1:9"]);
    wait_until("the warning", WAIT, || {
        logs.contains("gossip is unauthenticated")
    });
    let body = get_json(&format!("{}/v1/peers", open.url)).unwrap();
    assert_eq!(body["gossip_authenticated"], false);
    let (guarded, logs) = Node::start_logged(&[
        "--peers",
        "http://127.0.0.1:9",
        "--peer-token",
        "s3cret",
        "--gossip-interval",
        "50ms",
    ]);
    let body = get_json(&format!("{}/v1/peers", guarded.url)).unwrap();
    assert_eq!(body["gossip_authenticated"], true);
    // The start-up warning would come before any later line.
    wait_until("a later warning", WAIT, || {
        logs.contains("gossip peer is now dead")
    });
    assert!(!logs.contains("gossip is unauthenticated"));
}

/// `n` hosts of service `bulk` as a peer would send them: each with `tags`.
fn legal_page(n: u32, tags: serde_json::Value, revision: &str) -> Vec<u8> {
    use discovery::registry::{Registry, RegistryConfig};
    use discovery_api::{HostStatus, Port, Registration, RepoName, Revision, ServiceName, Tags};
    let registry = Registry::new(RegistryConfig::new("test", "src"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let reg = Registration {
        port: Port::new(8080).unwrap(),
        revision: Revision::parse(revision).unwrap(),
        service_repo_name: RepoName::empty(),
        tags: Tags::from_json(tags).unwrap(),
        ttl: None,
        status: HostStatus::Up,
        ip: None,
        auto_ip: false,
    };
    let svc = ServiceName::parse("bulk").unwrap();
    for i in 0..n {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        registry.heartbeat(&svc, ip.into(), &reg, now).unwrap();
    }
    let all = registry.delta(&Digest::new(), discovery::gossip::messages::MAX_RECORDS);
    let fit = discovery::gossip::messages::records_that_fit(&all.records);
    SyncMessage {
        from: Sender {
            node_id: "src".into(),
            addr: None,
            port: 9,
            ready: true,
        },
        digest: registry.digest(),
        delta: registry.delta(&Digest::new(), fit),
        peers: Vec::new(),
    }
    .encode()
}

fn hosts_of_bulk(node: &Node) -> usize {
    get_json(&format!("{}/v1/registration/bulk", node.url))
        .and_then(|b| b["hosts"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn legal_maximal_messages_are_taken_whole() {
    // 5,000 typical hosts (the count bound), then hosts with the largest legal tags (the
    // size bound: the sender pages them by size, and the page decodes).
    let typical = serde_json::json!({"az": "eu-west-1a", "region": "eu-west-1", "instance_id": "i-0123456789abcdef0"});
    // As large as SPEC 2 allows: 4 KiB of tags in all (13 keys of 64 characters holding 240
    // bytes each come to 4,032 bytes of JSON).
    let huge: serde_json::Map<String, serde_json::Value> = (0..13)
        .map(|k| {
            (
                format!("{k:0>64}"),
                serde_json::Value::from("v".repeat(240)),
            )
        })
        .collect();
    let revision = "4f2a9c1e0b7d4f2a9c1e0b7d4f2a9c1e0b7d4f2a";
    for (what, tags, expected) in [
        ("5,000 typical records", typical, Some(5000)),
        ("largest legal tags", serde_json::Value::Object(huge), None),
    ] {
        let node = Node::start(&["--node-id", "a"]);
        let page = legal_page(5000, tags, revision);
        let (ticks_before, _) = cpu_ticks_and_peak_kib(&node);
        let (status, body, took) = post_gossip(&node, &page);
        let (ticks_after, peak_kib) = cpu_ticks_and_peak_kib(&node);
        assert_eq!(status, 200, "{what}: {body}");
        let hosts = hosts_of_bulk(&node);
        eprintln!(
            "{what}: {} bytes on the wire, {hosts} hosts taken in {took:?}, {} ms CPU, peak RSS {peak_kib} KiB",
            page.len(),
            (ticks_after - ticks_before) * 10
        );
        match expected {
            Some(n) => assert_eq!(hosts, n, "{what}"),
            None => assert!(hosts > 100, "{what}: {hosts}"),
        }
    }
}

#[test]
fn a_message_declared_over_the_size_bound_is_refused_before_its_body() {
    let node = Node::start(&["--node-id", "a", "--read-timeout", "10s"]);
    let started = Instant::now();
    let mut stream = TcpStream::connect(node.addr()).expect("connect");
    let head = format!(
        "POST /v1/gossip/sync HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-discovery-gossip\r\nContent-Length: {}\r\n\r\n",
        node.addr(),
        MAX_MESSAGE_BYTES + 1
    );
    stream.write_all(head.as_bytes()).expect("write head");
    // No body follows: the answer must not wait for it (the read timeout is 10 s).
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains(r#"{"error":"gossip message too large"}"#),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &node,
            r#"discovery_gossip_messages_refused_total{kind="too_large"}"#
        ),
        1.0
    );
}
