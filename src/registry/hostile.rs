//! The hostile-peer suite: arbitrary well-formed records from peers (any timestamps, TTLs,
//! weights, node ids, ports and service names), interleaved with heartbeats, deletes,
//! overrides and sweeps at an advancing `now`. After every step the registry must hold its
//! invariants: no panic, the clock within the skew bound, every counter equal to a recount,
//! no version of this node's own that it never minted, every index monotonic, and every read
//! (host list, repo query, services, EDS) rendering.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use discovery_api::{
    HostStatus, HostsResponse, Port, Registration, RepoHostsResponse, RepoName, Revision,
    ServiceName, Tags, Weight,
};
use proptest::prelude::*;

use super::*;

const T0: Micros = 1_800_000_000 * SECOND;

/// Names that collide often, and arbitrary valid ones.
fn arb_service() -> impl Strategy<Value = ServiceName> {
    prop_oneof![
        3 => prop::sample::select(vec!["web", "api", "x.y-z_1"]).prop_map(String::from),
        1 => "[A-Za-z0-9._-]{1,12}",
    ]
    .prop_map(|s| ServiceName::parse(&s).unwrap_or_else(|_| ServiceName::parse("web").unwrap()))
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop::sample::select(vec!["10.0.0.1", "10.0.0.2", "::1"]).prop_map(|s| s.parse().unwrap())
}

/// A timestamp anywhere: the extremes, and around the test's time span.
fn arb_ts() -> impl Strategy<Value = Micros> {
    prop_oneof![
        1 => Just(0),
        1 => Just(u64::MAX),
        1 => Just(clock::LATEST_RFC3339 + 1),
        6 => (0..4 * 3600 * SECOND).prop_map(|d| T0 - 3600 * SECOND + d),
    ]
}

fn arb_stamp() -> impl Strategy<Value = Stamp> {
    (arb_ts(), prop::sample::select(vec!["a", "b", "peer", ""])).prop_map(|(ts, node)| Stamp {
        ts,
        node: NodeId::new(node),
    })
}

fn arb_record() -> impl Strategy<Value = Record> {
    let tags = prop::sample::select(vec![
        "{}",
        r#"{"az":"us-east-1a","region":"us-east-1"}"#,
        r#"{"canary":true,"load_balancing_weight":5}"#,
        r#"{"load_balancing_weight":500}"#,
        "not json",
        r#"{"b":1,"a":2}"#,
    ]);
    let ttl = prop_oneof![Just(0u32), Just(u32::MAX), 1u32..7200];
    let beat = prop_oneof![
        4 => (prop::sample::select(vec!["r1", "r2"]), tags, ttl, any::<bool>()).prop_map(
            |(revision, tags, ttl, draining)| Beat::Live {
                routing: Arc::new(Routing {
                    revision: Revision::parse(revision).unwrap(),
                    service_repo_name: RepoName::empty(),
                    tags: tags.into(),
                    status: if draining { HostStatus::Draining } else { HostStatus::Up },
                }),
                ttl,
            }
        ),
        1 => Just(Beat::Deleted),
    ];
    (
        arb_stamp(),
        beat,
        prop::option::of((1i64..=100, arb_stamp())),
        prop::option::of(arb_stamp()),
        // An expiry names the heartbeat it expired: any stamp, on any beat (a live record
        // naming one is refused), often a TTL before `hb` as a real expiry is.
        prop_oneof![
            2 => Just(None),
            1 => arb_stamp().prop_map(|s| Some(Err(s))),
            1 => (1u64..7200, prop::sample::select(vec!["a", "b", "peer"]))
                .prop_map(|before| Some(Ok(before))),
        ],
    )
        .prop_map(|(hb, beat, weight, cleared, expired)| {
            let expired = expired.map(|e| match e {
                Ok((ttl, node)) => Stamp {
                    ts: hb.ts.saturating_sub(ttl * SECOND),
                    node: NodeId::new(node),
                },
                Err(any) => any,
            });
            Record {
                hb,
                beat,
                weight: weight.map(|(w, at)| (Weight::new(w).unwrap(), at)),
                cleared,
                expired,
            }
        })
}

fn arb_replica() -> impl Strategy<Value = Replica> {
    (
        arb_service(),
        arb_ip(),
        prop_oneof![Just(0u16), Just(80), Just(81), any::<u16>()],
        prop::sample::select(vec!["a", "b", "peer"]),
        0u64..3,
        prop_oneof![Just(u64::MAX), 0u64..1000],
        arb_record(),
    )
        .prop_map(
            |(service, ip, port, node, generation, seq, record)| Replica {
                service,
                ip,
                port,
                version: Version {
                    origin: Arc::new(Origin {
                        node: NodeId::new(node),
                        generation,
                    }),
                    seq,
                },
                record,
            },
        )
}

#[derive(Debug, Clone)]
enum Step {
    Apply(Vec<Replica>),
    Heartbeat(ServiceName, IpAddr, u16, &'static str, Option<u64>),
    Delete(ServiceName, IpAddr, Option<u16>),
    SetWeight(ServiceName, Option<IpAddr>, i64),
    Sweep,
    /// Moves `now` forward by this many seconds.
    Wait(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec(arb_replica(), 0..5).prop_map(Step::Apply),
        3 => (
            arb_service(),
            arb_ip(),
            prop_oneof![Just(80u16), Just(81), 1u16..=u16::MAX],
            prop::sample::select(vec!["r1", "r2"]),
            prop::option::of(prop_oneof![Just(0u64), Just(u64::MAX), 1u64..5000]),
        )
            .prop_map(|(s, ip, port, rev, ttl)| Step::Heartbeat(s, ip, port, rev, ttl)),
        1 => (arb_service(), arb_ip(), prop::option::of(prop_oneof![Just(80u16), Just(81)]))
            .prop_map(|(s, ip, port)| Step::Delete(s, ip, port)),
        1 => (arb_service(), prop::option::of(arb_ip()), 1i64..=100)
            .prop_map(|(s, ip, w)| Step::SetWeight(s, ip, w)),
        2 => Just(Step::Sweep),
        2 => prop_oneof![0u64..5, 50u64..200, 3000u64..8000].prop_map(Step::Wait),
    ]
}

fn registration(port: u16, revision: &str, ttl: Option<u64>) -> Registration {
    Registration {
        ip: None,
        port: Port::new(port.into()).unwrap(),
        revision: Revision::parse(revision).unwrap(),
        service_repo_name: RepoName::parse("shop").unwrap(),
        tags: Tags::default(),
        ttl,
        status: HostStatus::Up,
        auto_ip: false,
    }
}

/// Every invariant the suite holds the registry to after each step.
fn check(r: &Registry, now: Micros, indices: &mut HashMap<ServiceName, u64>) {
    // A heartbeat after the newest accepted stamp is stamped one microsecond later, so the
    // clock may pass the bound by the few ticks of one step.
    let bound = now + r.config().max_clock_skew + 1_000;
    assert!(
        r.clock_last() <= bound,
        "clock {} past {bound}",
        r.clock_last()
    );
    r.recount();
    for svc in r.services.iter() {
        for entry in svc.hosts.values() {
            let v = &entry.version;
            assert!(
                v.origin != *r.origin() || v.seq <= r.own_seq(),
                "a version of ours this node never minted: {v:?}"
            );
        }
    }
    let mut names: Vec<ServiceName> = r.services.iter().map(|s| s.name.clone()).collect();
    names.extend(indices.keys().cloned());
    names.push(ServiceName::parse("never-seen").unwrap());
    for name in names {
        let view = r.view(&name, now);
        let body: HostsResponse = serde_json::from_slice(&view.body).expect("a host list");
        for host in &body.hosts {
            humantime::parse_rfc3339(&host.last_check_in).expect("an RFC 3339 check-in");
        }
        assert_eq!(view.hosts, body.hosts.len());
        if let Some(assignment) = r.envoy_assignment(&name) {
            serde_json::to_vec(&assignment).expect("an assignment");
        }
        let index = r.index(name.as_str());
        let seen = indices.entry(name.clone()).or_insert(0);
        assert!(index >= *seen, "{name}'s index went from {seen} to {index}");
        *seen = index;
    }
    let repo: RepoHostsResponse =
        serde_json::from_slice(&r.repo_hosts(&RepoName::parse("shop").unwrap())).unwrap();
    assert!(repo.hosts.len() <= r.host_count());
    let listed: u64 = r.services().iter().map(|s| s.hosts).sum();
    assert_eq!(listed as usize, r.host_count());
}

fn run(r: &Registry, steps: Vec<Step>) {
    let mut now = T0;
    let mut indices = HashMap::new();
    for step in steps {
        match step {
            Step::Apply(records) => {
                r.apply(
                    Delta {
                        records,
                        ..Delta::default()
                    },
                    now,
                );
            }
            Step::Heartbeat(service, ip, port, revision, ttl) => {
                let _ = r.heartbeat(&service, ip, &registration(port, revision, ttl), now);
            }
            Step::Delete(service, ip, port) => {
                let port = port.map(|p| Port::new(p.into()).unwrap());
                let _ = r.delete(&service, ip, port, now);
            }
            Step::SetWeight(service, ip, weight) => {
                let _ = r.set_weight(&service, ip, Weight::new(weight).unwrap(), now);
            }
            Step::Sweep => {
                r.sweep(now);
            }
            Step::Wait(secs) => now += secs * SECOND,
        }
        check(r, now, &mut indices);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn hostile_peers_cannot_break_the_registry(steps in prop::collection::vec(arb_step(), 1..40)) {
        let mut config = RegistryConfig::new("test", "a");
        config.max_hosts = 12;
        config.min_ttl = 5;
        config.max_ttl = 600;
        run(&Registry::new(config), steps);
    }

    #[test]
    fn hostile_peers_cannot_break_a_registry_without_guard(steps in prop::collection::vec(arb_step(), 1..40)) {
        let mut config = RegistryConfig::new("test", "a");
        config.max_hosts = 4;
        config.expiry_guard = 0.0;
        config.max_stale = Some(0);
        run(&Registry::new(config), steps);
    }
}
