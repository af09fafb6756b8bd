//! The client library against real `discovery serve` processes: failover, outages,
//! the cache file, the shrink guard and a clean shutdown of a heartbeating host.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{dead_url, host, metric, service, wait_until, Node};
use discovery_client::{
    HeartbeatConfig, HeartbeatOutcome, Heartbeater, HostStatus, HostWatcher, ListSource,
    RegistryClient, ShrinkPolicy, WatcherConfig,
};

/// Generous: these tests share two cores with other builds.
const SOON: Duration = Duration::from_secs(15);

fn fast_heartbeats() -> HeartbeatConfig {
    HeartbeatConfig {
        interval: Duration::from_millis(200),
        min_backoff: Duration::from_millis(50),
        ..HeartbeatConfig::default()
    }
}

fn watcher_config(grace: Duration) -> WatcherConfig {
    WatcherConfig {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        shrink: ShrinkPolicy {
            min_ratio: 0.5,
            grace,
        },
        ..WatcherConfig::default()
    }
}

/// Starts heartbeating `payments` at 10.0.0.1:`port`.
fn heartbeat(registry: &RegistryClient, port: u16, config: HeartbeatConfig) -> Heartbeater {
    Heartbeater::spawn(registry.clone(), service("payments"), host(port), config).unwrap()
}

/// A fresh, empty folder for a test's files.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("discovery-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_fails_over_when_the_first_url_is_dead() {
    let server = Node::start(&[]);
    let registry = RegistryClient::new([dead_url(), server.url.clone()]).unwrap();
    let payments = service("payments");

    let heartbeater = heartbeat(&registry, 8080, fast_heartbeats());
    let mut outcomes = heartbeater.outcomes();
    let taken_by = loop {
        outcomes.changed().await.unwrap();
        if let HeartbeatOutcome::Sent { registry, .. } = &*outcomes.borrow_and_update() {
            break registry.clone();
        }
    };
    assert_eq!(taken_by, server.url);
    assert_eq!(
        registry.preferred_url(),
        server.url,
        "the node that answered is remembered"
    );

    let hosts = registry.hosts(&payments).await.unwrap();
    assert_eq!(hosts.hosts.len(), 1);
    assert_eq!(hosts.hosts[0].port.get(), 8080);
    let services = registry.services().await.unwrap();
    assert!(services.services.iter().any(|s| s.service == "payments"));
    assert!(registry.peers().await.unwrap().ready);

    // A watcher with its own client starts at the dead URL too.
    let fresh = RegistryClient::new([dead_url(), server.url.clone()]).unwrap();
    let mut watcher = HostWatcher::spawn(fresh, payments, watcher_config(SOON)).unwrap();
    assert_eq!(watcher.changed().await.len(), 1);
    assert_eq!(
        watcher.status().registry.as_deref(),
        Some(server.url.as_str())
    );
    watcher.shutdown().await;
    drop(heartbeater);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_delivers_a_change_long_before_it_would_expire() {
    let server = Node::start(&[]);
    let registry = RegistryClient::new([&server.url]).unwrap();
    let payments = service("payments");
    registry.register(&payments, &host(1)).await.unwrap();
    let config = WatcherConfig {
        wait: Duration::from_secs(60),
        ..watcher_config(SOON)
    };
    let mut watcher = HostWatcher::spawn(registry.clone(), payments.clone(), config).unwrap();
    assert_eq!(watcher.changed().await.len(), 1);
    // The change is made once the long poll waits on the server, not before.
    wait_until("the long poll waits on the server", SOON, || {
        metric(&server, "discovery_long_polls") == Some(1.0)
    });
    let changed_at = Instant::now();
    registry.register(&payments, &host(2)).await.unwrap();
    assert_eq!(watcher.changed().await.len(), 2);
    assert!(
        changed_at.elapsed() < Duration::from_secs(10),
        "took {:?}: the change waited for the poll to expire",
        changed_at.elapsed()
    );
    watcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_keeps_its_list_while_the_registry_is_down_and_recovers_after() {
    let server = Node::start(&[]);
    let registry = RegistryClient::new([&server.url]).unwrap();
    let payments = service("payments");
    let heartbeater = heartbeat(&registry, 8080, fast_heartbeats());
    let mut watcher =
        HostWatcher::spawn(registry.clone(), payments.clone(), watcher_config(SOON)).unwrap();
    assert_eq!(watcher.changed().await.len(), 1);

    // Every list the watcher ever publishes, to prove it never handed out an empty one.
    let published = Arc::new(Mutex::new(Vec::new()));
    let mut list = watcher.list();
    let record = published.clone();
    let recorder = tokio::spawn(async move {
        loop {
            let hosts = list.changed().await;
            record.lock().unwrap().push(hosts.len());
        }
    });

    let addr = server.kill();
    wait_until("the watcher sees the registry gone", SOON, || {
        watcher.status().consecutive_failures >= 2
    });
    assert_eq!(watcher.current().len(), 1, "the last good list is kept");
    let outage_error = watcher.status().last_error.clone().unwrap();
    assert!(
        outage_error.to_string().contains(&addr.to_string()),
        "{outage_error}"
    );

    // Back, empty, and not ready for a while (its one peer is unreachable, so it waits
    // out its warmup): host-list reads answer 503 meanwhile.
    let restarted_at = std::time::SystemTime::now();
    let lonely_peer = dead_url();
    let server = Node::start_on(
        &addr.to_string(),
        &["--warmup", "1s", "--peers", &lonely_peer],
    );
    wait_until(
        "the watcher is told the registry is not ready",
        SOON,
        || {
            let status = watcher.status();
            let error = status.last_error.as_ref().map(ToString::to_string);
            error.is_some_and(|e| e.contains("503"))
        },
    );
    assert_eq!(watcher.current().len(), 1, "a 503 leaves the list alone");
    wait_until("the watcher hears from the registry again", SOON, || {
        let status = watcher.status();
        status.consecutive_failures == 0 && status.last_success.is_some_and(|t| t > restarted_at)
    });
    assert_eq!(watcher.current().len(), 1);

    // And it follows changes again.
    registry.register(&payments, &host(9090)).await.unwrap();
    wait_until("the watcher sees the new host", SOON, || {
        watcher.current().len() == 2
    });
    recorder.abort();
    let published = published.lock().unwrap().clone();
    assert!(
        !published.contains(&0),
        "an empty list was published: {published:?}"
    );
    watcher.shutdown().await;
    heartbeater.shutdown().await.unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_with_no_registry_uses_the_cache_file() {
    let dir = scratch_dir("cold-start");
    let cache_file = dir.join("payments.json");
    let payments = service("payments");
    {
        let server = Node::start(&[]);
        let registry = RegistryClient::new([&server.url]).unwrap();
        registry.register(&payments, &host(1)).await.unwrap();
        registry.register(&payments, &host(2)).await.unwrap();
        let config = WatcherConfig {
            cache_file: Some(cache_file.clone()),
            ..watcher_config(SOON)
        };
        let mut watcher = HostWatcher::spawn(registry, payments.clone(), config).unwrap();
        assert_eq!(watcher.changed().await.len(), 2);
        wait_until("the cache file is written", SOON, || cache_file.exists());
        watcher.shutdown().await;
    }

    let nowhere = RegistryClient::new([dead_url(), dead_url()]).unwrap();
    let config = WatcherConfig {
        cache_file: Some(cache_file.clone()),
        ..watcher_config(SOON)
    };
    let mut watcher = HostWatcher::spawn(nowhere, payments, config).unwrap();
    let hosts = watcher.changed().await;
    let ports: Vec<u16> = hosts.iter().map(|h| h.port.get()).collect();
    assert_eq!(ports, [1, 2]);
    let status = watcher.status();
    assert_eq!(status.source, ListSource::CacheFile);
    assert!(status.consecutive_failures >= 1);
    watcher.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_to_zero_is_held_back_until_confirmed_for_the_grace_period() {
    let server = Node::start(&[]);
    let registry = RegistryClient::new([&server.url]).unwrap();
    let payments = service("payments");
    for port in 1..=4 {
        registry.register(&payments, &host(port)).await.unwrap();
    }
    let grace = Duration::from_secs(2);
    let mut watcher =
        HostWatcher::spawn(registry.clone(), payments.clone(), watcher_config(grace)).unwrap();
    assert_eq!(watcher.changed().await.len(), 4);

    // One DELETE without a port removes all four (they share the address).
    let ip = "10.0.0.1".parse().unwrap();
    assert!(registry.deregister(&payments, ip, None).await.unwrap());
    wait_until("the empty answer is held back", SOON, || {
        watcher.status().held_back.is_some()
    });
    let held = watcher.status().held_back.unwrap();
    assert_eq!(held.hosts, 0);
    assert_eq!(
        watcher.current().len(),
        4,
        "still serving the last good list"
    );

    // The registry keeps saying zero: past the grace period, the watcher believes it.
    assert_eq!(watcher.changed().await.len(), 0);
    assert!(Instant::now() >= held.since + grace);
    assert!(watcher.status().held_back.is_none());
    watcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_marks_the_host_draining_then_deregisters_it() {
    let server = Node::start(&[]);
    let registry = RegistryClient::new([&server.url]).unwrap();
    let payments = service("payments");
    let config = HeartbeatConfig {
        drain_period: Duration::from_millis(500),
        ..fast_heartbeats()
    };
    let heartbeater = heartbeat(&registry, 8080, config);
    let mut watcher =
        HostWatcher::spawn(registry.clone(), payments, watcher_config(Duration::ZERO)).unwrap();
    let hosts = watcher.changed().await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].status, HostStatus::Up);

    let shutdown = tokio::spawn(heartbeater.shutdown());
    let hosts = watcher.changed().await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        hosts[0].status,
        HostStatus::Draining,
        "draining comes first"
    );
    assert_eq!(watcher.changed().await.len(), 0, "then the host is gone");
    shutdown.await.unwrap().unwrap();

    // Gone for good: the heartbeat task ended before shutdown returned.
    assert!(registry
        .hosts(&service("payments"))
        .await
        .unwrap()
        .hosts
        .is_empty());
    watcher.shutdown().await;
}
