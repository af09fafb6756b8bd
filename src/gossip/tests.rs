//! Scenario tests: whole clusters of nodes in one process over the in-memory network, with
//! virtual clocks (one per node, to model skew). Rounds are driven explicitly: no sleeping.
//! After every scenario the guarantees of SPEC 4.5 are checked on every node.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use discovery_api::{
    HostStatus, HostsResponse, Port, Registration, RepoName, Revision, ServiceName, Tags,
};
use proptest::prelude::*;

use super::memory::{MemoryNetwork, MemoryTransport};
use super::node::{Clock, Mode, Node};
use crate::config::{Config, ServeArgs};
use crate::registry::{
    Beat, Delta, Digest, Micros, NodeId, Origin, Record, Registry, RegistryConfig, Replica,
    Routing, Stamp, Version, SECOND,
};
use crate::state::NodeState;

const T0: Micros = 1_800_000_000 * SECOND;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn config(node: &str, peers: &[String], extra: &[&str]) -> Config {
    let mut args = vec!["test".to_owned(), "--node-id".into(), node.into()];
    if !peers.is_empty() {
        args.push("--peers".into());
        args.push(peers.join(","));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::from_args(Cli::parse_from(args).serve).expect("valid test config")
}

/// Joins a node with `config` to `net`: its state, and the gossip settings the wiring
/// (`server.rs`) would hand it.
fn join(net: &MemoryNetwork, config: Config, addr: &str, clock: Clock) -> TestNode {
    let settings = config.gossip();
    net.join(Arc::new(NodeState::new(config)), settings, addr, clock)
}

type TestNode = Arc<Node<MemoryTransport>>;

/// A cluster of in-memory nodes, every one configured with all the others as peers.
struct Cluster {
    net: MemoryNetwork,
    time: Arc<AtomicU64>,
    skews: Vec<Arc<AtomicI64>>,
    nodes: Vec<TestNode>,
    generation: u64,
}

fn addr(i: usize) -> String {
    format!("http://n{i}:80")
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let mut cluster = Cluster {
            net: MemoryNetwork::new(),
            time: Arc::new(AtomicU64::new(T0)),
            skews: Vec::new(),
            nodes: Vec::new(),
            generation: 1,
        };
        for i in 0..n {
            cluster.skews.push(Arc::new(AtomicI64::new(0)));
            let node = cluster.start(i, &["--warmup", "0s"]);
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Starts node `i` afresh (a new incarnation: empty, new generation).
    fn start(&mut self, i: usize, extra: &[&str]) -> TestNode {
        let n = self.skews.len();
        let peers: Vec<String> = (0..n).filter(|j| *j != i).map(addr).collect();
        let mut config = config(&format!("n{i}"), &peers, extra);
        self.generation += 1;
        config.registry.generation = self.generation;
        let time = self.time.clone();
        let skew = self.skews[i].clone();
        let clock: Clock = Arc::new(move || {
            (time.load(Ordering::Relaxed) as i64 + skew.load(Ordering::Relaxed)) as Micros
        });
        join(&self.net, config, &addr(i), clock)
    }

    fn restart(&mut self, i: usize, extra: &[&str]) {
        self.nodes[i] = self.start(i, extra);
    }

    fn advance(&self, by: Micros) {
        self.time.fetch_add(by, Ordering::Relaxed);
    }

    /// Every node exchanges with every peer it knows, twice over: enough for any
    /// connected cluster to converge, deterministically.
    async fn settle(&self) {
        for _ in 0..2 {
            for node in &self.nodes {
                for j in 0..self.nodes.len() {
                    let peer = addr(j);
                    if node.known_digests().contains_key(&peer) {
                        node.exchange(&peer, Mode::Round).await;
                    }
                }
            }
        }
    }

    fn sweep(&self) {
        for node in &self.nodes {
            let report = node.shared().registry.sweep(node.now());
            node.shared().publish(&report.changes);
        }
    }

    /// What node `i` serves: (service, ip, port, revision) of every live host.
    fn served(&self, i: usize) -> BTreeSet<(String, String, u16, String)> {
        let node = &self.nodes[i];
        let registry = &node.shared().registry;
        let mut out = BTreeSet::new();
        for summary in registry.services() {
            let name = ServiceName::parse(&summary.service).unwrap();
            let body: HostsResponse =
                serde_json::from_slice(&registry.view(&name, node.now()).body).unwrap();
            for h in body.hosts {
                out.insert((
                    h.service.to_string(),
                    h.ip_address.to_string(),
                    h.port.get(),
                    h.revision.to_string(),
                ));
            }
        }
        out
    }

    /// SPEC 4.5: every node serves exactly `expected` (nothing lost, nothing deleted or
    /// expired back).
    fn assert_serves(&self, expected: &[(&str, &str, u16, &str)]) {
        let expected: BTreeSet<(String, String, u16, String)> = expected
            .iter()
            .map(|(s, ip, p, r)| (s.to_string(), ip.to_string(), *p, r.to_string()))
            .collect();
        for i in 0..self.nodes.len() {
            assert_eq!(self.served(i), expected, "node n{i} serves something else");
        }
    }
}

fn reg(port: u16, revision: &str, ttl: u64) -> Registration {
    Registration {
        ip: None,
        port: Port::new(port.into()).unwrap(),
        revision: Revision::parse(revision).unwrap(),
        service_repo_name: RepoName::empty(),
        tags: Tags::default(),
        ttl: Some(ttl),
        status: HostStatus::Up,
        auto_ip: false,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A heartbeat taken by node `node`, as the HTTP layer takes it.
fn beat(node: &TestNode, service: &str, host: &str, port: u16, revision: &str) {
    beat_ttl(node, service, host, port, revision, 60);
}

fn beat_ttl(node: &TestNode, service: &str, host: &str, port: u16, revision: &str, ttl: u64) {
    let svc = ServiceName::parse(service).unwrap();
    let hb = node
        .shared()
        .registry
        .heartbeat(&svc, ip(host), &reg(port, revision, ttl), node.now())
        .unwrap();
    node.shared().publish(hb.change.as_slice());
}

fn delete(node: &TestNode, service: &str, host: &str) {
    let svc = ServiceName::parse(service).unwrap();
    let change = node
        .shared()
        .registry
        .delete(&svc, ip(host), None, node.now())
        .unwrap();
    node.shared().publish(&[change]);
}

#[tokio::test]
async fn a_write_pushed_from_one_node_reaches_all_at_once() {
    let c = Cluster::new(5);
    c.settle().await; // peers know each other's digests
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    c.nodes[0].push().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "r1")]);
    // Nothing new: no second push.
    assert!(c.nodes[0].push_targets().is_empty());
}

#[tokio::test]
async fn random_rounds_alone_converge_within_a_few_rounds() {
    let c = Cluster::new(5);
    for (i, node) in c.nodes.iter().enumerate() {
        beat(node, "web", &format!("10.0.0.{i}"), 80, "r1");
    }
    let mut rounds = 0;
    while (0..5).any(|i| c.served(i).len() != 5) {
        rounds += 1;
        assert!(rounds <= 10, "not converged after 10 rounds");
        for node in &c.nodes {
            node.round().await;
        }
    }
}

#[tokio::test]
async fn a_partitioned_node_catches_up_after_the_heal_and_deletes_stick() {
    let c = Cluster::new(5);
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    beat(&c.nodes[1], "web", "10.0.0.2", 80, "r1");
    c.settle().await;
    c.net.isolate(&addr(4));
    delete(&c.nodes[1], "web", "10.0.0.1");
    beat(&c.nodes[2], "api", "10.0.1.1", 90, "r2");
    beat(&c.nodes[4], "web", "10.0.0.9", 80, "r9"); // taken inside the partition
    c.advance(SECOND);
    c.settle().await;
    assert!(c
        .served(4)
        .contains(&("web".into(), "10.0.0.1".into(), 80, "r1".into())));
    let peers = c.nodes[0].shared().peers.load();
    assert!(peers
        .peers
        .iter()
        .any(|p| p.address == addr(4) && p.state != discovery_api::PeerState::Alive));
    c.net.heal_all();
    c.settle().await;
    c.assert_serves(&[
        ("api", "10.0.1.1", 90, "r2"),
        ("web", "10.0.0.2", 80, "r1"),
        ("web", "10.0.0.9", 80, "r9"),
    ]);
}

/// Bytes (sent, received) over the whole network.
fn bytes(c: &Cluster) -> (u64, u64) {
    (0..c.nodes.len())
        .map(|i| c.net.traffic(&addr(i)))
        .fold((0, 0), |(s, r), t| (s + t.sent, r + t.received))
}

#[tokio::test]
async fn with_a_fifth_of_messages_lost_rounds_still_converge() {
    let c = Cluster::new(5);
    c.net.set_loss(0.2, 7);
    for (i, node) in c.nodes.iter().enumerate() {
        beat(node, "web", &format!("10.0.0.{i}"), 80, "r1");
    }
    let mut rounds = 0;
    while (0..5).any(|i| c.served(i).len() != 5) {
        rounds += 1;
        assert!(rounds <= 20, "not converged after 20 rounds at 20% loss");
        for node in &c.nodes {
            node.round().await;
        }
    }
    let (sent, received) = bytes(&c);
    assert!(received < sent, "lost messages are sent, never received");
}

#[tokio::test]
async fn the_same_loss_seed_drops_the_same_messages_and_zero_turns_loss_off() {
    let run = |loss: f64, seed: u64| async move {
        let c = Cluster::new(2);
        c.net.set_loss(0.5, 1);
        c.net.set_loss(loss, seed);
        // Node 1 is the one configured with a peer (node 0) in `Cluster::new`.
        beat(&c.nodes[1], "web", "10.0.0.1", 80, "r1");
        let mut outcomes = Vec::new();
        for _ in 0..32 {
            outcomes.push(c.nodes[1].exchange(&addr(0), Mode::Round).await);
        }
        outcomes
    };
    // Same draws, same outcomes (byte counts may differ: digests are hash maps, and
    // their order changes what deflate makes of them).
    let a = run(0.5, 42).await;
    assert_eq!(a, run(0.5, 42).await);
    assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok), "{a:?}");
    assert!(run(0.0, 42).await.iter().all(|ok| *ok));
}

#[tokio::test]
async fn a_restarted_node_pulls_a_snapshot_in_pages_before_it_is_ready() {
    let mut c = Cluster::new(3);
    for i in 0..12_000u32 {
        let host = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        beat(&c.nodes[i as usize % 2], "bulk", &host, 80, "r1");
    }
    c.settle().await;
    c.restart(2, &["--warmup", "30s"]);
    assert!(!c.nodes[2].shared().is_ready());
    c.nodes[2].round().await; // not ready: every peer, every page
    assert!(c.nodes[2].shared().is_ready());
    assert_eq!(c.nodes[2].shared().registry.host_count(), 12_000);
    // Its new incarnation takes writes that everyone sees.
    beat(&c.nodes[2], "web", "10.9.0.1", 80, "r1");
    c.settle().await;
    for i in 0..3 {
        assert_eq!(c.nodes[i].shared().registry.host_count(), 12_001);
    }
}

#[tokio::test]
async fn with_no_reachable_peer_a_node_waits_out_the_warmup() {
    let mut c = Cluster::new(2);
    c.restart(1, &["--warmup", "30s"]);
    c.net.isolate(&addr(1));
    c.nodes[1].round().await;
    assert!(!c.nodes[1].shared().is_ready());
    c.advance(29 * SECOND);
    c.nodes[1].round().await;
    assert!(!c.nodes[1].shared().is_ready());
    c.advance(SECOND);
    c.nodes[1].round().await;
    assert!(c.nodes[1].shared().is_ready());
}

#[tokio::test]
async fn a_peer_that_is_not_ready_does_not_make_a_node_ready() {
    let mut c = Cluster::new(2);
    c.restart(0, &["--warmup", "30s"]);
    c.restart(1, &["--warmup", "30s"]);
    c.nodes[0].round().await;
    c.nodes[1].round().await;
    assert!(!c.nodes[0].shared().is_ready() && !c.nodes[1].shared().is_ready());
}

#[tokio::test]
async fn the_same_host_heartbeating_on_two_nodes_converges_to_the_newest() {
    let c = Cluster::new(3);
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "old");
    c.advance(1000);
    beat(&c.nodes[1], "web", "10.0.0.1", 80, "new");
    c.settle().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "new")]);
    c.advance(1000);
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "newest");
    c.settle().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "newest")]);
}

#[tokio::test]
async fn a_delete_beats_an_older_heartbeat_racing_it_and_a_newer_one_revives() {
    let c = Cluster::new(3);
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    c.settle().await;
    // Node 1's heartbeat is older than node 0's delete, but arrives after it.
    beat(&c.nodes[1], "web", "10.0.0.1", 80, "r2");
    c.advance(10);
    delete(&c.nodes[0], "web", "10.0.0.1");
    c.nodes[0].push().await;
    c.nodes[1].push().await;
    c.settle().await;
    c.assert_serves(&[]);
    c.advance(SECOND);
    beat(&c.nodes[2], "web", "10.0.0.1", 80, "r3");
    c.settle().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "r3")]);
}

#[tokio::test]
async fn clock_skew_does_not_let_a_fast_node_win_over_later_writes() {
    let c = Cluster::new(3);
    c.skews[1].store(30 * SECOND as i64, Ordering::Relaxed); // n1 runs 30 s ahead
    c.skews[2].store(-(30 * SECOND as i64), Ordering::Relaxed); // n2 30 s behind
    beat(&c.nodes[1], "web", "10.0.0.1", 80, "from-fast");
    c.settle().await;
    // The host moves to the slow node: its heartbeat must still win (the HLC saw n1's time).
    c.advance(SECOND);
    beat(&c.nodes[2], "web", "10.0.0.1", 80, "from-slow");
    c.settle().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "from-slow")]);
    c.advance(SECOND);
    delete(&c.nodes[2], "web", "10.0.0.1");
    c.settle().await;
    c.assert_serves(&[]);
}

#[tokio::test]
async fn an_expired_host_sent_late_by_a_peer_does_not_come_back() {
    let c = Cluster::new(3);
    beat_ttl(&c.nodes[0], "web", "10.0.0.1", 80, "r1", 10);
    beat_ttl(&c.nodes[0], "web", "10.0.0.2", 80, "r1", 600);
    c.settle().await;
    c.net.isolate(&addr(2));
    c.advance(11 * SECOND);
    // Nodes 0 and 1 expire the host; node 2 has not swept yet and still holds it.
    for i in 0..2 {
        let n = &c.nodes[i];
        n.shared().registry.sweep(n.now());
    }
    // The still-alive host refreshes after a third of its TTL and more: it travels.
    c.advance(200 * SECOND);
    beat_ttl(&c.nodes[0], "web", "10.0.0.2", 80, "r1", 600);
    c.net.heal_all();
    c.settle().await;
    // Node 2 finds the host overdue at its first sweep (it enters its grace, already over)
    // and drops it at the next.
    c.sweep();
    c.sweep();
    c.assert_serves(&[("web", "10.0.0.2", 80, "r1")]);
}

#[tokio::test]
async fn a_message_with_bad_records_changes_only_what_is_valid() {
    let c = Cluster::new(2);
    let good = c.nodes[0].shared().registry.delta(&Digest::new(), 10);
    assert!(good.records.is_empty());
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    let mut delta = c.nodes[0].shared().registry.delta(&Digest::new(), 10);
    let mut bad = delta.records[0].clone();
    bad.ip = ip("10.0.0.2");
    if let Beat::Live { routing, .. } = &mut bad.record.beat {
        let mut r = Routing::clone(routing);
        // `az` must be a string (a key like "bad key!" is valid since issue 15).
        r.tags = "{\"az\": 1}".into();
        *routing = Arc::new(r);
    }
    delta.records.push(bad);
    let applied = c.nodes[1].shared().registry.apply(delta, c.nodes[1].now());
    assert_eq!((applied.changed, applied.refusals.total()), (1, 1));
}

// ---- Property tests: the merge is a join (commutative, associative, idempotent). ----

/// A copy of one of three host keys. A node never issues two writes with one stamp, so the
/// content is a function of the stamp (as it is in the registry).
fn arb_replica() -> impl Strategy<Value = Replica> {
    (
        0u8..3,                                          // key
        0u8..3,                                          // node
        0u64..50,                                        // ts offset
        prop::option::weighted(0.3, (0u8..3, 0u64..50)), // weight: node, ts offset
        1u64..1000,                                      // seq
    )
        .prop_map(|(key, node, ts, weight, seq)| {
            let deleted = (ts + u64::from(node)) % 4 == 0;
            let rev = (ts * 7 + u64::from(node)) % 3;
            let weight = weight.map(|(wn, wts)| (wn, wts, (wts * 13 + u64::from(wn)) % 100 + 1));
            let node_id = NodeId::new(&format!("n{node}"));
            let hb = Stamp {
                ts: T0 + ts,
                node: node_id.clone(),
            };
            let record = Record {
                hb: hb.clone(),
                beat: if deleted {
                    Beat::Deleted
                } else {
                    Beat::Live {
                        routing: Arc::new(Routing {
                            revision: Revision::parse(&format!("r{rev}")).unwrap(),
                            service_repo_name: RepoName::empty(),
                            tags: "{}".into(),
                            status: HostStatus::Up,
                        }),
                        ttl: 60,
                    }
                },
                weight: weight.map(|(wn, at, w)| {
                    (
                        discovery_api::Weight::new(w as i64).unwrap(),
                        Stamp {
                            ts: T0 + at,
                            node: NodeId::new(&format!("n{wn}")),
                        },
                    )
                }),
                // Some tombstones are expiries, which the merge orders like any tombstone.
                expired: (deleted && ts % 3 == 0).then(|| Stamp {
                    ts: T0 + ts / 2,
                    node: NodeId::new("n0"),
                }),
                cleared: deleted.then_some(hb),
            };
            Replica {
                service: ServiceName::parse("web").unwrap(),
                ip: format!("10.0.0.{key}").parse().unwrap(),
                port: 80,
                version: Version {
                    origin: Arc::new(Origin {
                        node: node_id,
                        generation: 1,
                    }),
                    seq,
                },
                record,
            }
        })
}

fn one(r: &Replica) -> Delta {
    Delta {
        records: vec![r.clone()],
        spans: Vec::new(),
        truncated: false,
    }
}

/// A registry of its own node id: registries that shared one would each refuse the others'
/// records minted in that id as forged versions of their own.
fn fresh() -> Registry {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Registry::new(RegistryConfig::new("test", &format!("observer-{n}")))
}

/// The merged state: every key's record (versions are local bookkeeping and may differ).
fn contents(r: &Registry) -> Vec<(IpAddr, Record)> {
    let mut out: Vec<(IpAddr, Record)> = r
        .delta(&Digest::new(), usize::MAX)
        .records
        .into_iter()
        .map(|x| (x.ip, x.record))
        .collect();
    out.sort_by_key(|a| a.0);
    out
}

proptest! {
    #[test]
    fn merging_in_any_order_with_duplicates_gives_one_state(
        replicas in prop::collection::vec(arb_replica(), 1..12),
        order in any::<prop::sample::Index>(),
        dup in any::<prop::sample::Index>(),
    ) {
        let a = fresh();
        for r in &replicas {
            a.apply(one(r), T0);
        }
        let b = fresh();
        let mut shuffled = replicas.clone();
        let k = order.index(shuffled.len());
        shuffled.rotate_left(k);
        shuffled.reverse();
        shuffled.push(replicas[dup.index(replicas.len())].clone());
        for r in &shuffled {
            b.apply(one(r), T0);
            b.apply(one(r), T0); // idempotent
        }
        prop_assert_eq!(contents(&a), contents(&b));
    }

    #[test]
    fn merging_groups_is_associative(
        x in prop::collection::vec(arb_replica(), 0..6),
        y in prop::collection::vec(arb_replica(), 0..6),
        z in prop::collection::vec(arb_replica(), 0..6),
    ) {
        let load = |rs: &[&Vec<Replica>]| {
            let r = fresh();
            for group in rs {
                for x in group.iter() {
                    r.apply(one(x), T0);
                }
            }
            r
        };
        // (x ∪ y) ∪ z, merged as whole registries through deltas.
        let xy = load(&[&x, &y]);
        let left = load(&[&z]);
        left.apply(xy.delta(&Digest::new(), usize::MAX), T0);
        // x ∪ (y ∪ z)
        let yz = load(&[&y, &z]);
        let right = load(&[&x]);
        right.apply(yz.delta(&Digest::new(), usize::MAX), T0);
        prop_assert_eq!(contents(&left), contents(&right));
    }
}

// ---- Hostile peers (issue 10): identity and invented peers. ----

use super::memory::Handler;
use super::messages::{Sender, SyncRequest, SyncResponse};
use super::node::MessageRefusal;
use super::peers::MAX_UNVERIFIED;
use crate::metrics::{PeerState, RefusedMessage};

fn refused(node: &TestNode, kind: RefusedMessage) -> u64 {
    node.shared().metrics.gossip_messages_refused(kind)
}

/// What `/v1/peers` says, without the ages (they move with the clock).
fn table(node: &TestNode) -> Vec<(String, Option<String>, discovery_api::PeerState)> {
    node.shared()
        .peers
        .load()
        .peers
        .iter()
        .map(|p| (p.address.clone(), p.node_id.clone(), p.state))
        .collect()
}

fn forged(node_id: &str, addr: &str, records: Delta, peers: Vec<String>) -> SyncRequest {
    SyncRequest {
        from: Sender {
            node_id: node_id.into(),
            addr: Some(addr.into()),
            port: 80,
            ready: true,
        },
        digest: Digest::new(),
        delta: records,
        peers,
    }
}

#[tokio::test]
async fn a_message_claiming_the_receivers_own_id_is_refused_and_changes_nothing() {
    let c = Cluster::new(2);
    c.settle().await;
    let before = (table(&c.nodes[0]), table(&c.nodes[1]));
    // A valid record rides along: it must not be applied either.
    let other = Cluster::new(1);
    beat(&other.nodes[0], "evil", "10.6.6.6", 80, "r1");
    let records = other.nodes[0].shared().registry.delta(&Digest::new(), 10);
    for (i, (me, them)) in [(0, 1), (1, 0)].into_iter().enumerate() {
        let req = forged(
            &format!("n{me}"),
            &addr(them),
            records.clone(),
            vec![addr(them)],
        );
        let answer = c.nodes[me].handle(req, None);
        assert_eq!(answer.err(), Some(MessageRefusal::OwnId), "message {i}");
        assert_eq!(refused(&c.nodes[me], RefusedMessage::own_id), 1);
    }
    assert_eq!((table(&c.nodes[0]), table(&c.nodes[1])), before);
    c.assert_serves(&[]);
    // And the two keep gossiping.
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    c.nodes[0].push().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "r1")]);
    beat(&c.nodes[1], "web", "10.0.0.2", 80, "r1");
    c.nodes[1].round().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "r1"), ("web", "10.0.0.2", 80, "r1")]);
}

/// A peer that answers every exchange in the name of `victim`.
struct Impersonator {
    victim: String,
}

impl Handler for Impersonator {
    fn handle(
        &self,
        _req: SyncRequest,
        _remote: Option<std::net::SocketAddr>,
    ) -> Result<SyncResponse, MessageRefusal> {
        Ok(forged(
            &self.victim,
            "http://n0:80",
            Delta::default(),
            vec![addr(1)],
        ))
    }
}

#[tokio::test]
async fn an_answer_in_our_own_name_fails_the_exchange_and_a_twin_id_is_dropped() {
    let mut c = Cluster::new(2);
    c.settle().await;
    let liar: Arc<dyn Handler> = Arc::new(Impersonator {
        victim: "n0".into(),
    });
    c.net.attach("http://liar:1", &liar);
    c.nodes[0].learn(&["http://liar:1".to_owned()]);
    assert!(!c.nodes[0].exchange("http://liar:1", Mode::Round).await);
    assert!(c.nodes[0]
        .known_digests()
        .keys()
        .all(|a| a != "http://liar:1"));
    assert_eq!(c.nodes[0].known_digests().len(), 1, "n1 is still there");
    // A node started with n0's id by mistake refuses n0's messages as its own; n0 stops
    // talking to it (as it does with its own address among its peers).
    c.skews.push(Arc::new(AtomicI64::new(0)));
    let twin = join(
        &c.net,
        config("n0", &[], &["--warmup", "0s"]),
        "http://twin:1",
        Arc::new(|| T0),
    );
    c.nodes[0].learn(&["http://twin:1".to_owned()]);
    assert!(!c.nodes[0].exchange("http://twin:1", Mode::Round).await);
    assert_eq!(refused(&twin, RefusedMessage::own_id), 1);
    assert!(c.nodes[0]
        .known_digests()
        .keys()
        .all(|a| a != "http://twin:1"));
    c.nodes[0].learn(&["http://twin:1".to_owned()]);
    assert!(c.nodes[0]
        .known_digests()
        .keys()
        .all(|a| a != "http://twin:1"));
    c.restart(1, &["--warmup", "0s"]);
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    c.settle().await;
    c.nodes.truncate(2);
    c.assert_serves(&[("web", "10.0.0.1", 80, "r1")]);
}

fn invented(round: usize) -> Vec<String> {
    (0..64)
        .map(|i| format!("http://10.66.{round}.{i}:7"))
        .collect()
}

fn unverified(node: &TestNode) -> i64 {
    node.shared().metrics.peers(PeerState::unverified)
}

#[tokio::test]
async fn a_flood_of_invented_peers_leaves_replication_fast_and_a_new_node_joins() {
    let c = Cluster::new(3);
    c.settle().await;
    let trusted: Vec<_> = (0..3).map(|i| c.nodes[i].known_digests().len()).collect();
    for round in 0..50 {
        for (i, node) in c.nodes.iter().enumerate() {
            // Forged senders too: each message also claims a new sender address.
            let from = format!("http://10.77.{round}.{i}:7");
            let answer = node.handle(
                forged("mallory", &from, Delta::default(), invented(round)),
                None,
            );
            assert!(answer.is_ok());
        }
    }
    for node in &c.nodes {
        assert_eq!(unverified(node), MAX_UNVERIFIED as i64);
    }
    // Writes still spread by push at once, and by random rounds within a few.
    beat(&c.nodes[0], "web", "10.0.0.1", 80, "r1");
    c.nodes[0].push().await;
    c.assert_serves(&[("web", "10.0.0.1", 80, "r1")]);
    for (i, node) in c.nodes.iter().enumerate() {
        beat(node, "api", &format!("10.0.1.{i}"), 80, "r1");
    }
    let mut rounds = 0;
    while (0..3).any(|i| c.served(i).len() != 4) {
        rounds += 1;
        assert!(
            rounds <= 3,
            "not converged after 3 rounds despite the flood"
        );
        for node in &c.nodes {
            node.round().await;
        }
    }
    // Every trusted peer kept its place.
    for (node, trusted) in c.nodes.iter().zip(trusted) {
        let alive = table(node)
            .into_iter()
            .filter(|(_, id, s)| id.is_some() && *s == discovery_api::PeerState::Alive)
            .count();
        assert_eq!(alive, trusted);
    }
    // A new node naming only n0 joins: it pulls a snapshot, and its writes reach everyone.
    let joiner = join(
        &c.net,
        config("n3", &[addr(0)], &["--warmup", "30s"]),
        "http://n3:80",
        Arc::new(|| T0),
    );
    joiner.round().await;
    assert!(joiner.shared().is_ready());
    beat(&joiner, "web", "10.0.0.3", 80, "r1");
    joiner.push().await;
    for _ in 0..3 {
        for node in &c.nodes {
            node.round().await;
        }
    }
    for i in 0..3 {
        assert!(c
            .served(i)
            .contains(&("web".into(), "10.0.0.3".into(), 80, "r1".into())));
    }
}

// ---- The gossip endpoint: decode slots. ----

/// Calls the gossip endpoint of a node whose decode slots are `slots`, with a legal message.
async fn post_to_endpoint(slots: usize) -> axum::response::Response {
    let config = config("n0", &[], &[]);
    let settings = config.gossip();
    let shared = Arc::new(NodeState::new(config));
    let transport =
        super::http_transport::HttpTransport::new(None, std::time::Duration::from_secs(1), None)
            .unwrap();
    let node = Arc::new(Node::new(
        shared,
        settings,
        transport,
        None,
        1,
        Arc::new(|| T0),
    ));
    let endpoint = super::http_transport::Endpoint::new(node, slots);
    let body = forged("n1", "http://n1:80", Delta::default(), Vec::new()).encode();
    let request = axum::http::Request::post(super::SYNC_PATH)
        .header("content-type", super::CONTENT_TYPE_GOSSIP)
        .body(axum::body::Body::from(body))
        .unwrap();
    tower::ServiceExt::oneshot(endpoint.routes(), request)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn with_every_decode_slot_taken_a_message_waits_then_gets_503_with_retry_after() {
    let answered = post_to_endpoint(1).await;
    assert_eq!(answered.status(), axum::http::StatusCode::OK);
    let refused = post_to_endpoint(0).await;
    assert_eq!(
        refused.status(),
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(refused.headers()["retry-after"], "1");
}

/// Issue 14: a host heartbeating to node 0 dies; its newest heartbeat never reached the
/// others (refreshes travel every TTL/3), yet all three drop it within two gossip intervals
/// of each other, and none lists it again.
#[tokio::test]
async fn every_node_drops_a_dead_host_on_the_deciders_deadline_and_never_lists_it_again() {
    let c = Cluster::new(3);
    c.settle().await;
    let step = 100_000;
    let lists = |i: usize| c.served(i).iter().any(|h| h.1 == "10.0.0.1");
    let mut dropped: [Option<Micros>; 3] = [None; 3];
    let mut t: Micros = 0;
    while t < 40 * SECOND {
        // Every 1.5 s until 10.8 s: every other refresh travels (TTL 6 s, a third is 2 s).
        if t <= 10_800_000 && t % 1_500_000 == 300_000 {
            beat_ttl(&c.nodes[0], "web", "10.0.0.1", 80, "r1", 6);
            c.nodes[0].push().await;
        }
        if t.is_multiple_of(500_000) {
            for node in &c.nodes {
                let report = node.shared().registry.sweep(node.now());
                node.shared().publish(&report.changes);
                if report.reshipped > 0 {
                    node.push().await;
                }
            }
        }
        if t.is_multiple_of(SECOND) {
            for node in &c.nodes {
                node.round().await;
            }
        }
        for (i, when) in dropped.iter_mut().enumerate() {
            match (*when, lists(i)) {
                (None, false) if t > SECOND => *when = Some(t),
                (Some(at), true) => panic!("node n{i} lists the host again at {t} (dropped {at})"),
                _ => {}
            }
        }
        c.advance(step);
        t += step;
    }
    let dropped: Vec<Micros> = dropped.iter().map(|d| d.expect("dropped")).collect();
    let spread = dropped.iter().max().unwrap() - dropped.iter().min().unwrap();
    assert!(spread <= 2 * SECOND, "dropped at {dropped:?}");
    // Not before the decider's deadline: last heartbeat 10.8 s + TTL 6 s + grace 3 s.
    assert!(dropped.iter().all(|d| *d >= 19_800_000), "{dropped:?}");
    c.assert_serves(&[]);
}

/// The fallback: with the decider cut off, the others wait a third of the TTL and two
/// intervals longer than it would, then drop the host together.
#[tokio::test]
async fn with_the_decider_cut_off_the_others_drop_the_host_together_after_the_fallback() {
    let c = Cluster::new(3);
    c.settle().await;
    beat_ttl(&c.nodes[0], "web", "10.0.0.1", 80, "r1", 6);
    c.nodes[0].push().await;
    c.net.isolate(&addr(0));
    let mut t: Micros = 0;
    let mut gone = [None; 2];
    while t < 30 * SECOND {
        for (i, node) in c.nodes.iter().enumerate().skip(1) {
            node.shared().registry.sweep(node.now());
            if gone[i - 1].is_none() && !c.served(i).iter().any(|h| h.1 == "10.0.0.1") {
                gone[i - 1] = Some(t);
            }
        }
        c.advance(500_000);
        t += 500_000;
    }
    // TTL 6 + grace 3 + TTL/3 2 + two intervals 2 = 13 s after the heartbeat, at a sweep.
    assert_eq!(gone, [Some(13 * SECOND), Some(13 * SECOND)]);
}

/// Issue 14, what the fault harness saw after a partition: the node cut off holds every host
/// stale (its guard engaged: all of them went silent there at once); a host that died
/// meanwhile, expired by the node that took its heartbeats, must go there within a round of
/// the heal, not stay listed until the guard lets go, while the live hosts stay listed.
#[tokio::test]
async fn a_host_expired_during_a_partition_goes_from_the_cut_off_node_at_the_heal() {
    let mut c = Cluster::new(3);
    for i in 0..3 {
        // As the fault harness runs them: the guard holds a silent host for 30 s.
        c.restart(i, &["--warmup", "0s", "--max-stale", "30s"]);
    }
    c.settle().await;
    let step = 100_000;
    let dead = "10.0.0.0";
    let lists_dead = |i: usize| c.served(i).iter().any(|h| h.1 == dead);
    let mut t: Micros = 0;
    let mut guard_held_it = false;
    let mut caught_up = None;
    while t < 40 * SECOND {
        if t == 2 * SECOND {
            c.net.isolate(&addr(2));
        }
        if t == 20 * SECOND {
            c.net.heal_all();
        }
        // 12 hosts heartbeat to n0 every 1.5 s; the first dies after 5 s.
        if t.is_multiple_of(1_500_000) {
            for i in 0..12 {
                if i > 0 || t <= 5 * SECOND {
                    beat_ttl(&c.nodes[0], "web", &format!("10.0.0.{i}"), 80, "r1", 6);
                }
            }
            c.nodes[0].push().await;
        }
        if t.is_multiple_of(500_000) {
            for node in &c.nodes {
                let report = node.shared().registry.sweep(node.now());
                node.shared().publish(&report.changes);
                if report.reshipped > 0 || report.expired > 0 {
                    node.push().await;
                }
            }
        }
        if t.is_multiple_of(SECOND) {
            for node in &c.nodes {
                node.round().await;
            }
        }
        let n2 = &c.nodes[2].shared().registry;
        if t == 19 * SECOND {
            // n0 dropped it long ago (4.5 s + TTL 6 s + grace 3 s); n2 holds it, stale.
            assert!(!lists_dead(0) && !lists_dead(1));
            guard_held_it = lists_dead(2) && n2.guard_engaged();
        }
        // Once n2 has heard from the others again (the live hosts are no longer stale
        // there), the dead one is gone too, and never listed again.
        if t > 20 * SECOND && caught_up.is_none() && n2.stale_count() == 0 {
            caught_up = Some(t);
        }
        if caught_up.is_some() {
            assert!(!lists_dead(2), "n2 lists the dead host at {t} µs");
        }
        c.advance(step);
        t += step;
    }
    assert!(
        guard_held_it,
        "n2's guard held the dead host during the partition"
    );
    assert!(caught_up.is_some(), "n2 caught up after the heal");
    for i in 0..3 {
        assert_eq!(c.served(i).len(), 11, "n{i}");
    }
}

/// Review finding 1: an `--advertise` that is (by mistake) a configured peer's address went
/// into the node's own addresses, and the table then skipped that peer without a word: a
/// node with one peer served empty lists. An advertised address is no proof of being ours;
/// the peer stays (and says "this is us" itself if it is).
#[tokio::test]
async fn an_advertised_address_does_not_hide_a_configured_peer() {
    let peer = "http://b:1".to_owned();
    let config = config("n0", std::slice::from_ref(&peer), &[]);
    let mut settings = config.gossip();
    // A mistaken --advertise that names the peer (accepted by the config: it may also be
    // this node's own entry of a shared --peers list).
    settings.advertise = Some(peer.clone());
    let shared = Arc::new(NodeState::new(config));
    let transport =
        super::http_transport::HttpTransport::new(None, std::time::Duration::from_secs(1), None)
            .unwrap();
    let node = Node::new(
        shared.clone(),
        settings,
        transport,
        Some(peer.clone()),
        1,
        Arc::new(|| T0),
    );
    assert_eq!(node.round_targets(), std::slice::from_ref(&peer));
    let listed: Vec<String> = shared
        .peers
        .load()
        .peers
        .iter()
        .map(|p| p.address.clone())
        .collect();
    assert_eq!(listed, [peer]);
}
