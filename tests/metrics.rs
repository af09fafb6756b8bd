//! `GET /metrics` read back from real `discovery serve` processes (SPEC 3.3): every family is
//! there from the start, and requests, heartbeats, expirations, hosts and services, the
//! expiry guard, long polls, limits and gossip move the values they should. Limits and the
//! expiry guard also leave a warning in the log.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{agent, http, wait_until, Node};

const FORM: &str = "application/x-www-form-urlencoded";
const PATIENCE: Duration = Duration::from_secs(15);

/// One parsed sample line: its metric name and labels.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition. Label values here never hold `"` but may hold `{}`
/// (route patterns), so a label set ends at the last `}` of the line.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value: f64 = value.parse().expect("a number");
            let Some((name, rest)) = series.split_once('{') else {
                return Sample {
                    name: series.to_owned(),
                    labels: BTreeMap::new(),
                    value,
                };
            };
            let inner = rest.strip_suffix('}').expect("labels end with }");
            let labels = inner
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once("=\"").expect("key=\"value\"");
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// A scrape of one node.
struct Scrape(Vec<Sample>);

impl Scrape {
    fn of(node: &Node) -> Scrape {
        let (status, body) = http("GET", &format!("{}/metrics", node.url), None, "");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.trim_end().ends_with("# EOF"),
            "OpenMetrics ends with # EOF"
        );
        Scrape(parse(&body))
    }

    /// The value of the series `name` whose labels include `labels`, if exactly one matches.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        match matching.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Like [`Scrape::get`], but the series must exist.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no single series {name}{labels:?}"))
    }
}

fn metric(node: &Node, name: &str, labels: &[(&str, &str)]) -> f64 {
    Scrape::of(node).get(name, labels).unwrap_or(f64::NAN)
}

/// The status of a request with no body.
fn status(node: &Node, method: &str, path: &str) -> u16 {
    http(method, &format!("{}{path}", node.url), None, "").0
}

fn heartbeat(node: &Node, service: &str, body: &str) -> u16 {
    let url = format!("{}/v1/registration/{service}", node.url);
    http("POST", &url, Some(FORM), body).0
}

#[test]
fn every_family_exists_from_the_start_with_its_known_labels_at_zero() {
    let node = Node::start(&[]);
    let m = Scrape::of(&node);
    for result in ["created", "changed", "refreshed", "refused"] {
        assert_eq!(
            m.value("discovery_heartbeats_total", &[("result", result)]),
            0.0
        );
    }
    for kind in ["ok", "failed"] {
        assert_eq!(
            m.value("discovery_gossip_rounds_total", &[("kind", kind)]),
            0.0
        );
    }
    for kind in ["sent", "received"] {
        assert_eq!(
            m.value("discovery_gossip_bytes_total", &[("kind", kind)]),
            0.0
        );
    }
    for kind in ["sent", "received", "refused"] {
        assert_eq!(
            m.value("discovery_gossip_records_total", &[("kind", kind)]),
            0.0
        );
    }
    for reason in ["invalid", "clock_skew", "expired", "full"] {
        assert_eq!(
            m.value(
                "discovery_gossip_records_refused_total",
                &[("reason", reason)]
            ),
            0.0
        );
    }
    for reason in ["timeout", "failed", "not_tls"] {
        assert_eq!(
            m.value(
                "discovery_tls_handshakes_failed_total",
                &[("reason", reason)]
            ),
            0.0
        );
    }
    for state in ["alive", "suspect", "dead"] {
        assert_eq!(m.value("discovery_peers", &[("state", state)]), 0.0);
    }
    for name in [
        "discovery_expirations_total",
        "discovery_tombstones_collected_total",
        "discovery_hosts",
        "discovery_stale_hosts",
        "discovery_services",
        "discovery_services_held",
        "discovery_expiry_guard_engaged",
        "discovery_long_polls",
        "discovery_long_polls_refused_total",
        "discovery_write_timeouts_total",
        "discovery_tls_reload_failures_total",
        "discovery_convergence_lag_seconds",
        "discovery_replication_backlog",
    ] {
        assert_eq!(m.value(name, &[]), 0.0, "{name}");
    }
    assert_eq!(m.value("discovery_ready", &[]), 1.0);
}

#[test]
fn requests_heartbeats_hosts_and_expirations_are_counted() {
    let node = Node::start(&["--min-ttl", "1s", "--expiry-guard", "0"]);
    let host = |ip: &str, rev: &str| format!("ip={ip}&port=80&revision={rev}&ttl=1");
    assert_eq!(heartbeat(&node, "payments", &host("10.0.0.1", "a")), 200);
    assert_eq!(heartbeat(&node, "payments", &host("10.0.0.2", "a")), 200);
    assert_eq!(heartbeat(&node, "search", &host("10.0.0.3", "a")), 200);
    assert_eq!(heartbeat(&node, "payments", &host("10.0.0.1", "a")), 200);
    assert_eq!(heartbeat(&node, "payments", &host("10.0.0.2", "b")), 200);
    assert_eq!(heartbeat(&node, "payments", "port=80&revision=a"), 400);
    assert_eq!(status(&node, "GET", "/v1/registration/payments"), 200);
    assert_eq!(status(&node, "GET", "/nope"), 404);

    let m = Scrape::of(&node);
    let beats = |result| m.value("discovery_heartbeats_total", &[("result", result)]);
    assert_eq!(beats("created"), 3.0);
    assert_eq!(beats("refreshed"), 1.0);
    assert_eq!(beats("changed"), 1.0);
    assert_eq!(beats("refused"), 1.0);
    let route = "/v1/registration/{service}";
    let requests = |method, status| {
        m.value(
            "discovery_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "200"), 5.0);
    assert_eq!(requests("POST", "400"), 1.0);
    assert_eq!(requests("GET", "200"), 1.0);
    assert_eq!(
        m.value(
            "discovery_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "discovery_http_request_duration_seconds_count",
            &[("route", route)]
        ),
        7.0
    );
    // (The host and service gauges are pinned down without TTL races in the next test.)

    // With a TTL of one second and no more heartbeats, all three expire.
    wait_until("the three hosts to expire", PATIENCE, || {
        metric(&node, "discovery_expirations_total", &[]) == 3.0
    });
    let m = Scrape::of(&node);
    assert_eq!(m.value("discovery_hosts", &[]), 0.0);
    assert_eq!(m.value("discovery_services", &[]), 0.0);
    // The scrape itself is counted (by the time of the next scrape).
    assert!(
        m.value(
            "discovery_http_requests_total",
            &[("route", "/metrics"), ("status", "200")]
        ) >= 2.0
    );
}

#[test]
fn hosts_and_services_gauges_follow_the_registry() {
    let node = Node::start(&[]);
    for i in 1..=4 {
        let service = if i % 2 == 0 { "even" } else { "odd" };
        let body = format!("ip=10.0.0.{i}&port=80&revision=r");
        assert_eq!(heartbeat(&node, service, &body), 200);
    }
    let m = Scrape::of(&node);
    assert_eq!(m.value("discovery_hosts", &[]), 4.0);
    assert_eq!(m.value("discovery_services", &[]), 2.0);
    assert_eq!(
        status(&node, "DELETE", "/v1/registration/odd/10.0.0.1"),
        200
    );
    let m = Scrape::of(&node);
    assert_eq!(m.value("discovery_hosts", &[]), 3.0);
}

#[test]
fn the_expiry_guard_shows_as_stale_hosts_and_logs_a_warning() {
    let (node, logs) = Node::start_logged(&["--min-ttl", "1s", "--max-stale", "600s"]);
    for i in 1..=12 {
        let body = format!("ip=10.0.0.{i}&port=80&revision=r&ttl=3");
        assert_eq!(heartbeat(&node, "payments", &body), 200);
    }
    // The guard's case: the node loses contact with its hosts (here: they all stop). They go
    // overdue a few per sweep, but each waits out its grace (half its TTL) while the guard
    // measures the loss, so all twelve are held. (A frozen node is a stall instead: it
    // expires nothing until it has re-synced; see tests/cluster.rs.)
    wait_until("the guard to hold the twelve hosts", PATIENCE, || {
        metric(&node, "discovery_stale_hosts", &[]) == 12.0
    });
    let m = Scrape::of(&node);
    assert_eq!(m.value("discovery_expiry_guard_engaged", &[]), 1.0);
    assert_eq!(m.value("discovery_hosts", &[]), 12.0);
    assert_eq!(m.value("discovery_expirations_total", &[]), 0.0);
    let services = common::get_json(&format!("{}/v1/services", node.url)).unwrap();
    assert_eq!(services["services"][0]["stale"], 12);
    wait_until("the guard's warning", PATIENCE, || {
        logs.contains("expiry guard engaged")
    });
    assert!(logs.text().contains("WARN"), "{}", logs.text());
}

/// Issue 14's fleet: 30 agents heartbeating every 2 s (TTL 5 s) started 66 ms apart; 20 of
/// them stop. Before, the node drained itself 30 -> 10 hosts in 2 s with no warning; now the
/// guard engages before any of them is dropped.
#[test]
fn a_mass_loss_spread_over_the_heartbeat_interval_engages_the_guard() {
    let (node, logs) = Node::start_logged(&["--host-ttl", "5s", "--max-stale", "30s"]);
    let mut stops = Vec::new();
    let mut agents = Vec::new();
    for i in 0..30 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        agents.push(agent(
            node.url.clone(),
            vec![format!("10.0.0.{i}")],
            5,
            Duration::from_secs(2),
            stop.clone(),
        ));
        stops.push(stop);
        std::thread::sleep(Duration::from_millis(66)); // the agents' phases
    }
    wait_until("30 hosts", PATIENCE, || {
        metric(&node, "discovery_hosts", &[]) == 30.0
    });
    for stop in &stops[..20] {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let stopped = std::time::Instant::now();
    let mut fewest = 30.0f64;
    let mut engaged_after = None;
    while stopped.elapsed() < Duration::from_secs(10) {
        let m = Scrape::of(&node);
        fewest = fewest.min(m.value("discovery_hosts", &[]));
        if engaged_after.is_none() && m.value("discovery_expiry_guard_engaged", &[]) == 1.0 {
            engaged_after = Some(stopped.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("guard engaged after {engaged_after:?}; fewest hosts served {fewest}");
    assert!(engaged_after.is_some(), "the guard engaged");
    assert_eq!(fewest, 30.0, "no host was dropped");
    assert_eq!(metric(&node, "discovery_stale_hosts", &[]), 20.0);
    assert!(metric(&node, "discovery_expiry_guard_lost_fraction", &[]) > 0.5);
    assert!(logs.contains("expiry guard engaged"));
    for stop in &stops {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for a in agents {
        a.join().unwrap();
    }
}

#[test]
fn long_polls_are_gauged_and_polls_over_the_limit_are_counted_and_logged() {
    let (node, logs) = Node::start_logged(&["--max-long-polls", "1"]);
    assert_eq!(
        heartbeat(&node, "payments", "ip=10.0.0.1&port=80&revision=a"),
        200
    );
    let index = common::get_json(&format!("{}/v1/services", node.url)).unwrap()["services"][0]
        ["index"]
        .as_u64()
        .unwrap();
    let poll_url = format!(
        "{}/v1/registration/payments?index={index}&wait=30s",
        node.url
    );
    let waiting = {
        let url = poll_url.clone();
        std::thread::spawn(move || http("GET", &url, None, ""))
    };
    wait_until("the long poll to wait", PATIENCE, || {
        metric(&node, "discovery_long_polls", &[]) == 1.0
    });

    // The limit is one: a second poll is answered at once, counted and logged.
    let (status, _) = http("GET", &poll_url, None, "");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&node, "discovery_long_polls_refused_total", &[]),
        1.0
    );
    wait_until("the limit's warning", PATIENCE, || {
        logs.contains("long-poll limit reached")
    });

    // A change answers the waiting poll and the gauge falls back.
    assert_eq!(
        heartbeat(&node, "payments", "ip=10.0.0.1&port=80&revision=b"),
        200
    );
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"revision\":\"b\""), "{body}");
    wait_until("the gauge to fall", PATIENCE, || {
        metric(&node, "discovery_long_polls", &[]) == 0.0
    });
}

#[test]
fn an_oversized_body_is_counted_as_413_and_logged() {
    let (node, logs) = Node::start_logged(&["--max-body", "256"]);
    let body = format!("ip=10.0.0.1&port=80&revision={}", "r".repeat(1000));
    assert_eq!(heartbeat(&node, "payments", &body), 413);
    let m = Scrape::of(&node);
    assert_eq!(
        m.value(
            "discovery_http_requests_total",
            &[("route", "/v1/registration/{service}"), ("status", "413")]
        ),
        1.0
    );
    assert_eq!(
        m.value("discovery_heartbeats_total", &[("result", "refused")]),
        1.0
    );
    wait_until("the limit's warning", PATIENCE, || {
        logs.contains("refused by a limit")
    });
}

#[test]
fn metrics_need_the_read_token_when_one_is_set() {
    let node = Node::start(&["--read-token", "s3cret"]);
    let (status, body) = http("GET", &format!("{}/metrics", node.url), None, "");
    assert_eq!(status, 401);
    assert!(body.contains("\"error\""), "{body}");
}

#[test]
fn gossip_rounds_bytes_peers_and_lag_move_between_two_nodes() {
    let a = Node::start(&["--gossip-interval", "100ms"]);
    let b = Node::start(&["--gossip-interval", "100ms", "--peers", &a.url]);
    assert_eq!(
        heartbeat(&a, "payments", "ip=10.0.0.1&port=80&revision=a"),
        200
    );
    wait_until("b to hold a's host", PATIENCE, || {
        metric(&b, "discovery_hosts", &[]) == 1.0
    });
    wait_until("b to count a as alive", PATIENCE, || {
        metric(&b, "discovery_peers", &[("state", "alive")]) == 1.0
    });
    let m = Scrape::of(&b);
    assert!(m.value("discovery_gossip_rounds_total", &[("kind", "ok")]) >= 1.0);
    assert!(m.value("discovery_gossip_bytes_total", &[("kind", "sent")]) > 0.0);
    assert!(m.value("discovery_gossip_bytes_total", &[("kind", "received")]) > 0.0);
    assert!(m.value("discovery_gossip_records_total", &[("kind", "received")]) >= 1.0);
    assert!(m.value("discovery_convergence_lag_seconds", &[]) >= 0.0);
    assert_eq!(m.value("discovery_ready", &[]), 1.0);

    // A peer that stops answering: b's exchanges fail and it stops counting a as alive.
    drop(a);
    wait_until("failed rounds and a peer no longer alive", PATIENCE, || {
        let m = Scrape::of(&b);
        m.value("discovery_gossip_rounds_total", &[("kind", "failed")]) >= 1.0
            && m.value("discovery_peers", &[("state", "alive")]) == 0.0
    });
}
