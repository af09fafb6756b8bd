//! The client library against a registry node that freezes (SIGSTOP: it accepts
//! connections and answers nothing), in a real two-node cluster: a `HostWatcher` parked
//! on it and a `Heartbeater` sending to it both fail over to the other node within their
//! documented bounds, and nothing breaks once it thaws (SIGCONT).

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{block_on, host, metric, pair, service, wait_until};
use discovery_client::{
    HeartbeatConfig, HeartbeatOutcome, Heartbeater, HostWatcher, Port, Registration,
    RegistryClient, ServiceName, ShrinkPolicy, WatcherConfig, DEFAULT_POLL_WAIT,
    DEFAULT_REQUEST_TIMEOUT, MIN_HEARTBEAT_TIMEOUT,
};

/// Generous: these tests share two cores with other builds.
const SOON: Duration = Duration::from_secs(20);

/// Slack on top of a documented bound before a measured delay counts as a breach: a
/// loaded debug build answers late, but not by seconds.
const MARGIN: Duration = Duration::from_secs(3);

/// The ports of a service's hosts on the one node `registry` talks to, sorted; empty when
/// it does not answer.
async fn ports_on(registry: &RegistryClient, service: &ServiceName) -> Vec<u16> {
    let mut ports: Vec<u16> = match registry.hosts(service).await {
        Ok(response) => response.hosts.iter().map(|h| h.port.get()).collect(),
        Err(_) => Vec::new(),
    };
    ports.sort_unstable();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_parked_on_a_frozen_node_learns_of_changes_within_its_blind_bound() {
    let (a, _logs, b) = pair(&[]);
    let via_a = RegistryClient::new([&a.url]).unwrap();
    let via_b = RegistryClient::new([&b.url]).unwrap();
    let payments = service("payments");
    via_b.register(&payments, &host(1)).await.unwrap();
    via_b.register(&payments, &host(2)).await.unwrap();
    wait_until("node a holds both hosts", SOON, || {
        block_on(async { ports_on(&via_a, &payments).await == [1, 2] })
    });

    // Defaults but for the shrink guard, which would hold back the delete below.
    let registry = RegistryClient::new([&a.url, &b.url]).unwrap();
    let config = WatcherConfig {
        shrink: ShrinkPolicy {
            grace: Duration::ZERO,
            ..ShrinkPolicy::default()
        },
        ..WatcherConfig::default()
    };
    let bound = config.blind_bound(&registry);
    assert_eq!(bound, DEFAULT_POLL_WAIT + DEFAULT_REQUEST_TIMEOUT);
    let mut watcher = HostWatcher::spawn(registry, payments.clone(), config).unwrap();
    assert_eq!(watcher.changed().await.len(), 2);
    assert_eq!(watcher.status().registry.as_deref(), Some(a.url.as_str()));

    // Frozen once the watcher's long poll waits on it, so that the poll is what hangs.
    wait_until("the watcher's long poll waits on node a", SOON, || {
        metric(&a, "discovery_long_polls") == Some(1.0)
    });
    a.signal("STOP");
    let frozen_at = Instant::now();
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    assert!(via_b
        .deregister(&payments, ip, Some(Port::new(1).unwrap()))
        .await
        .unwrap());
    via_b.register(&payments, &host(3)).await.unwrap();
    let holds_the_change = || {
        let mut ports: Vec<u16> = watcher.current().iter().map(|h| h.port.get()).collect();
        ports.sort_unstable();
        ports == [2, 3]
    };
    wait_until(
        "the watcher holds the delete and the new host made on node b",
        bound + MARGIN,
        holds_the_change,
    );
    let elapsed = frozen_at.elapsed();
    eprintln!("watcher: change seen {elapsed:?} after the freeze (bound {bound:?})");
    assert!(elapsed <= bound + MARGIN, "took {elapsed:?}");

    let status = watcher.status();
    assert_eq!(status.registry.as_deref(), Some(b.url.as_str()));
    assert_eq!(
        status.consecutive_failures, 0,
        "a failover is not a failed poll"
    );
    assert_eq!(status.failovers, 1);
    let failover = status
        .last_failover
        .clone()
        .expect("the failover is recorded");
    assert_eq!(failover.to, b.url);
    assert!(
        failover
            .skipped
            .iter()
            .any(|f| f.url() == a.url && f.is_timeout()),
        "node a is named as timed out: {:?}",
        failover.skipped
    );

    // Thawed: a write through node a reaches the watcher (now parked on b) by gossip, and
    // the watcher has no reason to fail over again.
    a.signal("CONT");
    // A thawed node answers writes 503 for a moment after a stall (docs/gossip.md, "After a
    // stall"): writes that waited in its sockets must not be taken late.
    wait_until("node a takes writes again", SOON, || {
        block_on(async { via_a.register(&payments, &host(4)).await.is_ok() })
    });
    wait_until(
        "the watcher holds the host written to the thawed node",
        SOON,
        || watcher.current().len() == 3,
    );
    let status = watcher.status();
    assert_eq!((status.failovers, status.consecutive_failures), (1, 0));
    watcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeater_fails_over_from_a_frozen_node_before_its_host_expires() {
    let (a, _logs, b) = pair(&[]);
    let registry = RegistryClient::new([&a.url, &b.url]).unwrap();
    let via_b = RegistryClient::new([&b.url]).unwrap();
    let payments = service("payments");
    let ttl = Duration::from_secs(5);
    let me = Registration::from_json(
        format!(
            r#"{{"ip": "10.0.0.1", "port": 8080, "revision": "r1", "ttl": {}}}"#,
            ttl.as_secs()
        )
        .as_bytes(),
    )
    .unwrap();
    let config = HeartbeatConfig {
        interval: Duration::from_secs(1),
        ..HeartbeatConfig::default()
    };
    let timeout = config.request_timeout();
    assert_eq!(timeout, MIN_HEARTBEAT_TIMEOUT, "half of 1 s, clamped up");
    let heartbeater = Heartbeater::spawn(registry, payments.clone(), me, config).unwrap();
    let sent_to = |outcome: &HeartbeatOutcome| match outcome {
        HeartbeatOutcome::Sent { registry, .. } => Some(registry.clone()),
        _ => None,
    };
    let mut outcomes = heartbeater.outcomes();
    loop {
        outcomes.changed().await.unwrap();
        if let Some(url) = sent_to(&outcomes.borrow_and_update()) {
            assert_eq!(url, a.url, "the first URL is asked first");
            break;
        }
    }
    wait_until("node b holds the host", SOON, || {
        block_on(async { ports_on(&via_b, &payments).await == [8080] })
    });

    a.signal("STOP");
    let frozen_at = Instant::now();
    // Sample node b every 100 ms for the TTL and a bit: with a fixed 10 s timeout the
    // agent stalled on node a and the host expired here meanwhile.
    let mut samples = 0;
    let mut landed_on_b = None;
    while frozen_at.elapsed() < ttl + MARGIN {
        let ports = ports_on(&via_b, &payments).await;
        assert_eq!(
            ports,
            [8080],
            "the host is missing from node b {:?} after node a froze",
            frozen_at.elapsed()
        );
        samples += 1;
        if landed_on_b.is_none() && sent_to(&heartbeater.last_outcome()) == Some(b.url.clone()) {
            landed_on_b = Some(frozen_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let landed_on_b = landed_on_b.expect("a heartbeat went to node b");
    // One beat is due within the interval (+10% jitter); node a gets `timeout` to answer.
    let bound = Duration::from_millis(1100) + timeout;
    eprintln!(
        "heartbeater: first beat on node b {landed_on_b:?} after the freeze (bound {bound:?}); \
         host present in all {samples} samples of node b"
    );
    assert!(landed_on_b <= bound + MARGIN, "took {landed_on_b:?}");

    a.signal("CONT");
    heartbeater.shutdown().await.unwrap();
    wait_until("the host is deregistered", SOON, || {
        block_on(async { ports_on(&via_b, &payments).await.is_empty() })
    });
}
