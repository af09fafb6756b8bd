//! Records a hostile or broken peer sends, POSTed as real gossip messages to real
//! `discovery serve` processes (issue 10, SPEC 4.2): stamps far in the future, weights
//! stamped 2^64-1 and floods past `--max-hosts` are refused whole, counted by reason and
//! logged with the peer, and every read keeps answering 200. Plus the memory side: a churn
//! of distinct service names leaves nothing held once it has expired.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{get_json, http, pair, request, wait_until, Node};
use discovery::gossip::messages::{Sender, SyncMessage};
use discovery::gossip::{CONTENT_TYPE_GOSSIP, SYNC_PATH};
use discovery::registry::{
    Beat, Delta, Digest, Micros, NodeId, Origin, Record, Replica, Routing, Stamp, Version,
};
use discovery_api::{HostStatus, RepoName, Revision, ServiceName, Weight};

const FORM: &str = "application/x-www-form-urlencoded";
const PATIENCE: Duration = Duration::from_secs(15);
/// The first microsecond of year 10000.
const YEAR_10000: Micros = 253_402_300_800_000_000;
const SECOND: Micros = 1_000_000;

fn wall_now() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as Micros
}

/// A peer's copy of a live host, stamped `ts`.
fn live(service: &str, ip: &str, ts: Micros) -> Replica {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    Replica {
        service: ServiceName::parse(service).unwrap(),
        ip: ip.parse().unwrap(),
        port: 80,
        version: Version {
            origin: Arc::new(Origin {
                node: NodeId::new("mallory"),
                generation: 1,
            }),
            seq: SEQ.fetch_add(1, Ordering::Relaxed) as u64 + 1,
        },
        record: Record {
            hb: Stamp {
                ts,
                node: NodeId::new("mallory"),
            },
            beat: Beat::Live {
                routing: Arc::new(Routing {
                    revision: Revision::parse("evil").unwrap(),
                    service_repo_name: RepoName::empty(),
                    tags: "{}".into(),
                    status: HostStatus::Up,
                }),
                ttl: 600,
            },
            weight: None,
            cleared: None,
            expired: None,
        },
    }
}

/// POSTs one gossip message carrying `records` from "mallory"; returns the status.
fn gossip(node: &Node, records: Vec<Replica>) -> u16 {
    let delta = Delta {
        records,
        ..Delta::default()
    };
    gossip_delta(node, delta).0
}

/// POSTs one gossip message carrying `delta` from "mallory": (status, answer bytes).
fn gossip_delta(node: &Node, delta: Delta) -> (u16, Vec<u8>) {
    let message = SyncMessage {
        from: Sender {
            node_id: "mallory".into(),
            addr: None,
            port: 1,
            ready: false,
        },
        digest: Digest::new(),
        delta,
        peers: Vec::new(),
    };
    post_raw(node, &message.encode())
}

/// One sample of `/metrics`, e.g. `metric(n, "discovery_hosts", "")`.
fn metric(node: &Node, name: &str, labels: &str) -> f64 {
    let (status, text) = http("GET", &format!("{}/metrics", node.url), None, "");
    assert_eq!(status, 200);
    let series = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series}"))
}

fn refused(node: &Node, reason: &str) -> f64 {
    metric(
        node,
        "discovery_gossip_records_refused_total",
        &format!("reason=\"{reason}\""),
    )
}

fn heartbeat(node: &Node, service: &str, body: &str) {
    let url = format!("{}/v1/registration/{service}", node.url);
    assert_eq!(http("POST", &url, Some(FORM), body).0, 200);
}

fn hosts(node: &Node, service: &str) -> Vec<serde_json::Value> {
    let list = get_json(&format!("{}/v1/registration/{service}", node.url))
        .expect("the host list answers 200 with JSON");
    list["hosts"].as_array().unwrap().clone()
}

/// The `X-Discovery-Index` of a host-list GET (with `query` appended).
fn index(node: &Node, service: &str, query: &str) -> u64 {
    let url = format!("{}/v1/registration/{service}{query}", node.url);
    request("GET", &url, &[], "")
        .headers
        .get("x-discovery-index")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("an X-Discovery-Index header")
}

fn eds_status(node: &Node, service: &str) -> u16 {
    let body = format!(
        r#"{{"version_info":"","node":{{"id":"t","cluster":"t"}},"resource_names":["{service}"],"type_url":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}}"#
    );
    let url = format!("{}/v3/discovery:endpoints", node.url);
    http("POST", &url, Some("application/json"), &body).0
}

#[test]
fn a_record_stamped_in_year_10000_is_refused_and_every_read_stays_200() {
    let (node, logs) = Node::start_logged(&[]);
    heartbeat(&node, "web", "ip=10.0.0.1&port=80&revision=good");
    assert_eq!(
        gossip(&node, vec![live("web", "10.0.0.9", YEAR_10000)]),
        200
    );
    assert_eq!(refused(&node, "clock_skew"), 1.0);
    let listed = hosts(&node, "web");
    assert_eq!(listed.len(), 1, "only the real host: {listed:?}");
    assert_eq!(eds_status(&node, "web"), 200);
    // The node's clock did not follow: its next heartbeat is stamped now, not past 9999.
    let before = wall_now();
    heartbeat(&node, "web", "ip=10.0.0.2&port=80&revision=good");
    let stamp = hosts(&node, "web")
        .iter()
        .find(|h| h["ip_address"] == "10.0.0.2")
        .map(|h| h["last_check_in"].as_str().unwrap().to_owned())
        .unwrap();
    let stamp = humantime::parse_rfc3339(&stamp)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as Micros;
    assert!(
        stamp >= before && stamp < before + 60 * SECOND,
        "stamped {stamp}, now {before}"
    );
    assert_eq!(
        http("GET", &format!("{}/v1/services", node.url), None, "").0,
        200
    );
    assert!(logs.contains("refused records from a peer") && logs.contains("mallory"));
}

#[test]
fn a_record_hours_ahead_is_refused() {
    let node = Node::start(&[]);
    let ahead = wall_now() + 3 * 3600 * SECOND;
    assert_eq!(gossip(&node, vec![live("web", "10.0.0.9", ahead)]), 200);
    assert_eq!(refused(&node, "clock_skew"), 1.0);
    assert!(hosts(&node, "web").is_empty());
    // Within --max-clock-skew, a peer's stamp is taken.
    let node = Node::start(&["--max-clock-skew", "4h"]);
    assert_eq!(gossip(&node, vec![live("web", "10.0.0.9", ahead)]), 200);
    assert_eq!(refused(&node, "clock_skew"), 0.0);
    assert_eq!(hosts(&node, "web").len(), 1);
}

#[test]
fn a_weight_stamped_2_pow_64_minus_1_is_refused_and_operators_still_steer() {
    let node = Node::start(&[]);
    heartbeat(&node, "web", "ip=10.0.0.1&port=80&revision=good");
    let mut locked = live("web", "10.0.0.1", wall_now());
    locked.record.weight = Some((
        Weight::new(1).unwrap(),
        Stamp {
            ts: u64::MAX,
            node: NodeId::new("mallory"),
        },
    ));
    assert_eq!(gossip(&node, vec![locked]), 200);
    assert_eq!(refused(&node, "clock_skew"), 1.0);
    let url = format!("{}/v1/loadbalancing/web/10.0.0.1", node.url);
    assert_eq!(
        http("POST", &url, Some(FORM), "load_balancing_weight=50").0,
        204
    );
    let listed = hosts(&node, "web");
    assert_eq!(listed[0]["load_balancing_weight"], 50);
    assert_eq!(
        listed[0]["revision"], "good",
        "nothing of the record applied"
    );
}

#[test]
fn max_hosts_holds_for_hosts_from_gossip() {
    let node = Node::start(&["--max-hosts", "10"]);
    let now = wall_now();
    let flood = (0..50)
        .map(|i| live(&format!("s{i}"), "10.0.0.1", now))
        .collect();
    assert_eq!(gossip(&node, flood), 200);
    assert_eq!(metric(&node, "discovery_hosts", ""), 10.0);
    assert_eq!(refused(&node, "full"), 40.0);
    assert_eq!(
        metric(&node, "discovery_services_held", ""),
        10.0,
        "refused records leave no service behind"
    );
    // The node still refuses new hosts from heartbeats, and refreshes held ones.
    let url = format!("{}/v1/registration/new", node.url);
    assert_eq!(
        http("POST", &url, Some(FORM), "ip=10.0.0.1&port=80&revision=r").0,
        503
    );
    assert_eq!(metric(&node, "discovery_services_held", ""), 10.0);
}

#[test]
fn a_churn_of_distinct_services_leaves_nothing_held_once_expired() {
    let node = Node::start(&["--min-ttl", "1s", "--expiry-guard", "0"]);
    for i in 0..200 {
        heartbeat(
            &node,
            &format!("churn-{i}"),
            "ip=10.0.0.1&port=80&revision=r&ttl=1",
        );
    }
    let seen = index(&node, "churn-0", "");
    assert!(seen > 0);
    wait_until("every churned service to be removed", PATIENCE, || {
        metric(&node, "discovery_services_held", "") == 0.0
    });
    let services = get_json(&format!("{}/v1/services", node.url)).unwrap();
    assert_eq!(services["services"], serde_json::json!([]));
    assert_eq!(metric(&node, "discovery_hosts", ""), 0.0);
    // The index of a removed service never goes back...
    let floor = index(&node, "churn-0", "");
    assert!(floor >= seen, "{floor} < {seen}");
    // ...so a long poll holding it wakes when the service comes back.
    let url = format!(
        "{}/v1/registration/churn-0?index={floor}&wait=60s",
        node.url
    );
    let poll = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let answer = http("GET", &url, None, "");
        (answer, started.elapsed())
    });
    // The poll must be waiting before the service comes back, or this proves nothing.
    wait_until("the long poll to wait", PATIENCE, || {
        metric(&node, "discovery_long_polls", "") == 1.0
    });
    heartbeat(&node, "churn-0", "ip=10.0.0.1&port=80&revision=back");
    let ((status, body), took) = poll.join().unwrap();
    assert_eq!(status, 200);
    // Woken by the write, not by the end of its 60 s wait.
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    assert!(body.contains("\"back\""), "{body}");
    assert!(index(&node, "churn-0", "") > floor);
}

/// A message of deletes for invented hosts, `n` services of one tombstone each.
fn tombstones(n: usize) -> Vec<Replica> {
    let now = wall_now();
    (0..n)
        .map(|i| {
            let mut r = live(&format!("gone-{i}"), "10.0.0.1", now);
            r.record.beat = Beat::Deleted;
            r.record.cleared = Some(r.record.hb.clone());
            r
        })
        .collect()
}

#[test]
fn tombstones_for_invented_hosts_count_against_max_hosts() {
    let node = Node::start(&["--max-hosts", "10"]);
    assert_eq!(gossip(&node, tombstones(5000)), 200);
    assert_eq!(refused(&node, "full"), 4990.0);
    assert_eq!(metric(&node, "discovery_services_held", ""), 10.0);
    // Tombstones fill the room live hosts would take, but never past the limit.
    let url = format!("{}/v1/registration/new", node.url);
    assert_eq!(
        http("POST", &url, Some(FORM), "ip=10.0.0.1&port=80&revision=r").0,
        200
    );
}

#[test]
fn invented_origins_cannot_grow_the_digest_past_what_peers_decode() {
    use discovery::gossip::messages::MAX_ORIGINS;
    use discovery::registry::{Span, MAX_KNOWN_ORIGINS};

    let (a, _logs, b) = pair(&[]);
    let spans: Vec<Span> = (0..MAX_ORIGINS)
        .map(|i| Span {
            origin: Arc::new(Origin {
                node: NodeId::new(&format!("ghost-{i}")),
                generation: 1,
            }),
            after: 0,
            upto: 1,
        })
        .collect();
    let (status, answer) = gossip_delta(
        &a,
        Delta {
            spans,
            ..Delta::default()
        },
    );
    assert_eq!(status, 200);
    // What a answers (and so sends every peer) still decodes, its digest bounded.
    let answer = SyncMessage::decode(&answer).unwrap();
    assert!(
        answer.digest.len() <= MAX_KNOWN_ORIGINS + 1,
        "{}",
        answer.digest.len()
    );
    // And a keeps gossiping with b: a write on a reaches b.
    heartbeat(&a, "web", "ip=10.0.0.1&port=80&revision=r");
    wait_until("a's write on b", PATIENCE, || hosts(&b, "web").len() == 1);
    assert_eq!(
        metric(
            &b,
            "discovery_gossip_messages_refused_total",
            "kind=\"malformed\""
        ),
        0.0
    );
}

/// POSTs a gossip message over a plain socket: (status, answer body bytes).
fn post_raw(node: &Node, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(node.addr()).unwrap();
    let head = format!(
        "POST {SYNC_PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE_GOSSIP}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        node.addr(),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
    (status, answer[split + 4..].to_vec())
}
