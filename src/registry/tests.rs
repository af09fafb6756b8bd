//! Unit tests of the core: no IO, no sleeping; time is an argument.

use std::net::IpAddr;

use discovery_api::{
    HostStatus, HostsResponse, Port, Registration, RepoName, ServiceName, Tags, Weight,
};

use super::*;

const T0: Micros = 1_800_000_000 * SECOND;

fn svc(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn reg(port: u16, revision: &str) -> Registration {
    Registration {
        ip: None,
        port: Port::new(port.into()).unwrap(),
        revision: discovery_api::Revision::parse(revision).unwrap(),
        service_repo_name: RepoName::empty(),
        tags: Tags::default(),
        ttl: Some(60),
        status: HostStatus::Up,
        auto_ip: false,
    }
}

fn registry(node: &str) -> Registry {
    Registry::new(RegistryConfig::new("test", node))
}

fn hosts(r: &Registry, service: &str, now: Micros) -> HostsResponse {
    serde_json::from_slice(&r.view(&svc(service), now).body).unwrap()
}

/// Heartbeats of the hosts `10.0.0.{i}:80` of web, for every `i` in `hosts`, at `at`.
fn beat_web(r: &Registry, hosts: std::ops::Range<u32>, at: Micros) {
    for i in hosts {
        r.heartbeat(&svc("web"), ip(&format!("10.0.0.{i}")), &reg(80, "r"), at)
            .unwrap();
    }
}

#[test]
fn heartbeat_registers_a_host_served_sorted_by_address_and_port() {
    let r = registry("a");
    let s = svc("payments");
    for (addr, port) in [
        ("10.0.0.9", 80),
        ("10.0.0.10", 81),
        ("10.0.0.10", 80),
        ("::1", 1),
    ] {
        let hb = r.heartbeat(&s, ip(addr), &reg(port, "r1"), T0).unwrap();
        assert!(hb.created);
    }
    let body = hosts(&r, "payments", T0);
    let order: Vec<String> = body
        .hosts
        .iter()
        .map(|h| format!("{}:{}", h.ip_address, h.port))
        .collect();
    assert_eq!(
        order,
        ["10.0.0.9:80", "10.0.0.10:80", "10.0.0.10:81", "::1:1"]
    );
    assert_eq!(body.env, "test");
    assert_eq!(body.hosts[0].last_check_in, rfc3339(T0));
    assert_eq!(r.index("payments"), 4);
    assert_eq!(r.host_count(), 4);
}

#[test]
fn unknown_service_is_an_empty_list_and_not_stored() {
    let r = registry("a");
    let body = hosts(&r, "nobody", T0);
    assert!(body.hosts.is_empty());
    assert_eq!(r.index("nobody"), 0);
    assert!(r.services().is_empty());
}

#[test]
fn refresh_only_heartbeat_moves_neither_index_nor_etag_and_body_lags_at_most_a_second() {
    let r = registry("a");
    let s = svc("web");
    r.heartbeat(&s, ip("10.0.0.1"), &reg(80, "r1"), T0).unwrap();
    let v1 = r.view(&s, T0);
    let hb = r
        .heartbeat(&s, ip("10.0.0.1"), &reg(80, "r1"), T0 + SECOND / 2)
        .unwrap();
    assert_eq!(hb.change, None);
    let v2 = r.view(&s, T0 + SECOND / 2);
    assert_eq!((v2.index, &v2.etag), (v1.index, &v1.etag));
    assert!(Arc::ptr_eq(&v1, &v2), "no rebuild within the second");
    let v3 = r.view(&s, T0 + SECOND);
    assert_eq!((v3.index, &v3.etag), (v1.index, &v1.etag));
    let body: HostsResponse = serde_json::from_slice(&v3.body).unwrap();
    assert_eq!(body.hosts[0].last_check_in, rfc3339(T0 + SECOND / 2));
}

#[test]
fn routing_changes_move_the_index_and_etag() {
    let r = registry("a");
    let s = svc("web");
    let a = ip("10.0.0.1");
    r.heartbeat(&s, a, &reg(80, "r1"), T0).unwrap();
    let mut last = r.view(&s, T0);
    let mut changes: Vec<Registration> = Vec::new();
    changes.push(reg(80, "r2"));
    let mut tagged = reg(80, "r2");
    tagged.tags = Tags::from_pairs([("az", "z1")]).unwrap();
    changes.push(tagged.clone());
    tagged.status = HostStatus::Draining;
    changes.push(tagged);
    for (i, change) in changes.iter().enumerate() {
        let now = T0 + (i as u64 + 1) * SECOND;
        let hb = r.heartbeat(&s, a, change, now).unwrap();
        assert!(hb.change.is_some(), "change {i} must move the index");
        let v = r.view(&s, now);
        assert!(v.index > last.index);
        assert_ne!(v.etag, last.etag);
        last = v;
    }
    assert_eq!(
        hosts(&r, "web", T0 + 9 * SECOND).hosts[0].status,
        HostStatus::Draining
    );
}

#[test]
fn ttl_is_clamped_and_defaults_to_host_ttl() {
    let r = registry("a");
    let s = svc("web");
    let mut short = reg(1, "r");
    short.ttl = Some(1);
    let mut long = reg(2, "r");
    long.ttl = Some(1_000_000);
    let mut default = reg(3, "r");
    default.ttl = None;
    for x in [&short, &long, &default] {
        r.heartbeat(&s, ip("10.0.0.1"), x, T0).unwrap();
    }
    let ttls: Vec<Option<u64>> = hosts(&r, "web", T0).hosts.iter().map(|h| h.ttl).collect();
    assert_eq!(ttls, [Some(5), Some(3600), Some(600)]);
}

#[test]
fn delete_removes_every_port_or_one_and_reports_nothing_matched() {
    let r = registry("a");
    let s = svc("web");
    for port in [80, 81, 82] {
        r.heartbeat(&s, ip("10.0.0.1"), &reg(port, "r"), T0)
            .unwrap();
    }
    r.heartbeat(&s, ip("10.0.0.2"), &reg(80, "r"), T0).unwrap();
    r.delete(&s, ip("10.0.0.1"), Some(Port::new(81).unwrap()), T0)
        .unwrap();
    assert_eq!(hosts(&r, "web", T0).hosts.len(), 3);
    r.delete(&s, ip("10.0.0.1"), None, T0).unwrap();
    assert_eq!(hosts(&r, "web", T0).hosts.len(), 1);
    assert_eq!(r.delete(&s, ip("10.0.0.1"), None, T0), Err(NoSuchHost));
    assert_eq!(
        r.delete(&svc("other"), ip("10.0.0.1"), None, T0),
        Err(NoSuchHost)
    );
    assert_eq!(r.host_count(), 1);
    // A new heartbeat registers it again.
    assert!(
        r.heartbeat(&s, ip("10.0.0.1"), &reg(80, "r"), T0 + 1)
            .unwrap()
            .created
    );
}

#[test]
fn weight_override_survives_heartbeats_until_delete() {
    let r = registry("a");
    let s = svc("web");
    let mut tagged = reg(80, "r");
    tagged.tags = Tags::from_pairs([("load_balancing_weight", "7")]).unwrap();
    r.heartbeat(&s, ip("10.0.0.1"), &tagged, T0).unwrap();
    r.heartbeat(&s, ip("10.0.0.2"), &reg(80, "r"), T0).unwrap();
    assert_eq!(hosts(&r, "web", T0).hosts[0].load_balancing_weight, Some(7));
    let w = Weight::new(40).unwrap();
    assert!(r
        .set_weight(&s, Some(ip("10.0.0.1")), w, T0)
        .unwrap()
        .is_some());
    assert_eq!(
        r.set_weight(&s, Some(ip("10.0.0.1")), w, T0).unwrap(),
        None,
        "same weight: no change"
    );
    r.heartbeat(&s, ip("10.0.0.1"), &tagged, T0 + SECOND)
        .unwrap();
    let body = hosts(&r, "web", T0 + SECOND);
    assert_eq!(body.hosts[0].load_balancing_weight, Some(40));
    assert_eq!(
        body.hosts[0].tags.weight().map(|w| w.get()),
        Some(40),
        "the override shows as tags.load_balancing_weight too, as in the seed"
    );
    assert_eq!(body.hosts[1].load_balancing_weight, None);
    assert!(body.hosts[1].tags.weight().is_none());
    r.set_weight(&s, None, Weight::new(3).unwrap(), T0 + SECOND)
        .unwrap();
    assert!(
        hosts(&r, "web", T0 + SECOND)
            .hosts
            .iter()
            .all(|h| h.load_balancing_weight == Some(3)
                && h.tags.weight().map(|w| w.get()) == Some(3))
    );
    r.delete(&s, ip("10.0.0.1"), None, T0 + 2 * SECOND).unwrap();
    r.heartbeat(&s, ip("10.0.0.1"), &tagged, T0 + 3 * SECOND)
        .unwrap();
    assert_eq!(
        hosts(&r, "web", T0 + 3 * SECOND).hosts[0].load_balancing_weight,
        Some(7)
    );
    assert_eq!(
        r.set_weight(&s, Some(ip("10.9.9.9")), w, T0),
        Err(NoSuchHost)
    );
}

#[test]
fn hosts_expire_after_their_ttl_and_refreshed_ones_stay() {
    let r = registry("a");
    let s = svc("web");
    r.heartbeat(&s, ip("10.0.0.1"), &reg(80, "r"), T0).unwrap();
    r.heartbeat(&s, ip("10.0.0.2"), &reg(80, "r"), T0).unwrap();
    r.heartbeat(&s, ip("10.0.0.2"), &reg(80, "r"), T0 + 30 * SECOND)
        .unwrap();
    assert_eq!(r.sweep(T0 + 59 * SECOND).expired, 0);
    // Past its TTL a host is still served through its grace (half its TTL, at most 30 s).
    let report = r.sweep(T0 + 60 * SECOND);
    assert_eq!((report.expired, report.newly_overdue), (0, 1));
    assert_eq!(r.grace_count(), 1);
    assert_eq!(hosts(&r, "web", T0 + 60 * SECOND).hosts.len(), 2);
    let report = r.sweep(T0 + 90 * SECOND);
    assert_eq!(report.expired, 1);
    assert_eq!(report.changes.len(), 1);
    assert_eq!(hosts(&r, "web", T0 + 90 * SECOND).hosts.len(), 1);
    assert_eq!(r.sweep(T0 + 120 * SECOND).expired, 1);
    assert_eq!(r.host_count(), 0);
    assert!(r.services().is_empty());
}

#[test]
fn expiry_guard_holds_a_mass_expiry_and_drops_after_max_stale() {
    let r = registry("a");
    let s = svc("web");
    beat_web(&r, 0..20, T0);
    // 12 of 20 fall silent together: more than half, so this node assumes it is the one cut off.
    beat_web(&r, 12..20, T0 + 50 * SECOND);
    let report = r.sweep(T0 + 61 * SECOND);
    assert!(report.guard_engaged && report.guard_toggled);
    assert_eq!((report.expired, report.newly_stale), (0, 12));
    assert_eq!(r.stale_count(), 12);
    assert_eq!(r.services()[0].stale, 12);
    assert_eq!(hosts(&r, "web", T0 + 61 * SECOND).hosts.len(), 20);
    // A held host that heartbeats again is no longer stale.
    r.heartbeat(&s, ip("10.0.0.0"), &reg(80, "r"), T0 + 62 * SECOND)
        .unwrap();
    assert_eq!(r.stale_count(), 11);
    // The 8 others keep heartbeating; the held ones go after three TTLs of silence.
    for t in [100, 140, 170] {
        beat_web(&r, 12..20, T0 + t * SECOND);
        r.heartbeat(&s, ip("10.0.0.0"), &reg(80, "r"), T0 + t * SECOND)
            .unwrap();
        assert!(r.sweep(T0 + t * SECOND).guard_engaged);
    }
    assert_eq!(r.stale_count(), 11);
    // (The clock gave the 20 heartbeats taken "at T0" distinct microseconds.)
    let report = r.sweep(T0 + 180 * SECOND + 100);
    assert_eq!(report.expired, 11);
    assert_eq!(r.stale_count(), 0);
    assert_eq!(r.host_count(), 9);
}

#[test]
fn hosts_dying_a_few_at_a_time_expire_normally() {
    let r = registry("a");
    let s = svc("web");
    for i in 0..20 {
        r.heartbeat(&s, ip(&format!("10.0.0.{i}")), &reg(80, "r"), T0)
            .unwrap();
    }
    for i in 3..20 {
        r.heartbeat(
            &s,
            ip(&format!("10.0.0.{i}")),
            &reg(80, "r"),
            T0 + 30 * SECOND,
        )
        .unwrap();
    }
    let report = r.sweep(T0 + 61 * SECOND);
    assert_eq!((report.newly_overdue, report.newly_stale), (3, 0));
    assert!(!report.guard_engaged);
    for i in 3..20 {
        r.heartbeat(
            &s,
            ip(&format!("10.0.0.{i}")),
            &reg(80, "r"),
            T0 + 60 * SECOND,
        )
        .unwrap();
    }
    // Dropped once their grace (30 s) has run out: a bounded extra delay.
    let report = r.sweep(T0 + 91 * SECOND);
    assert_eq!((report.expired, report.newly_stale), (3, 0));
    assert!(!report.guard_engaged);
    r.recount();
}

#[test]
fn guard_set_to_zero_is_off_and_small_registries_are_never_held() {
    let mut config = RegistryConfig::new("test", "a");
    config.expiry_guard = 0.0;
    let r = Registry::new(config);
    let small = registry("b");
    for i in 0..20 {
        r.heartbeat(&svc("web"), ip(&format!("10.0.0.{i}")), &reg(80, "r"), T0)
            .unwrap();
    }
    for i in 0..9 {
        small
            .heartbeat(&svc("web"), ip(&format!("10.0.0.{i}")), &reg(80, "r"), T0)
            .unwrap();
    }
    r.sweep(T0 + 61 * SECOND);
    small.sweep(T0 + 61 * SECOND);
    assert_eq!(r.sweep(T0 + 91 * SECOND).expired, 20);
    assert_eq!(small.sweep(T0 + 91 * SECOND).expired, 9);
}

#[test]
fn max_hosts_refuses_new_hosts_but_refreshes_existing_ones() {
    let mut config = RegistryConfig::new("test", "a");
    config.max_hosts = 2;
    let r = Registry::new(config);
    let s = svc("web");
    r.heartbeat(&s, ip("10.0.0.1"), &reg(80, "r"), T0).unwrap();
    r.heartbeat(&s, ip("10.0.0.2"), &reg(80, "r"), T0).unwrap();
    assert_eq!(
        r.heartbeat(&s, ip("10.0.0.3"), &reg(80, "r"), T0),
        Err(RegistryFull(2))
    );
    assert!(r.heartbeat(&s, ip("10.0.0.1"), &reg(80, "r2"), T0).is_ok());
    assert_eq!(r.host_count(), 2);
}

#[test]
fn repo_query_collects_hosts_across_services() {
    let r = registry("a");
    let mut x = reg(80, "r");
    x.service_repo_name = RepoName::parse("shop").unwrap();
    r.heartbeat(&svc("b-api"), ip("10.0.0.1"), &x, T0).unwrap();
    r.heartbeat(&svc("a-web"), ip("10.0.0.2"), &x, T0).unwrap();
    r.heartbeat(&svc("c"), ip("10.0.0.3"), &reg(80, "r"), T0)
        .unwrap();
    let body: discovery_api::RepoHostsResponse =
        serde_json::from_slice(&r.repo_hosts(&RepoName::parse("shop").unwrap())).unwrap();
    let names: Vec<&str> = body.hosts.iter().map(|h| h.service.as_str()).collect();
    assert_eq!(names, ["a-web", "b-api"]);
}

/// Brings `to` up to date with `from`, the way one gossip pull does.
fn pull(to: &Registry, from: &Registry, now: Micros) -> usize {
    let mut rounds = 0;
    loop {
        rounds += 1;
        let delta = from.delta(&to.digest(), 3);
        let truncated = delta.truncated;
        to.apply(delta, now);
        if !truncated {
            return rounds;
        }
    }
}

fn state(r: &Registry, now: Micros) -> Vec<(String, String, String)> {
    r.services()
        .iter()
        .flat_map(|s| hosts(r, &s.service, now).hosts)
        .map(|h| {
            (
                h.service.to_string(),
                format!("{}:{}", h.ip_address, h.port),
                h.revision.to_string(),
            )
        })
        .collect()
}

#[test]
fn replicas_converge_through_deltas_even_when_cut_short() {
    let a = registry("a");
    let b = registry("b");
    for i in 0..10 {
        a.heartbeat(&svc("web"), ip(&format!("10.0.0.{i}")), &reg(80, "r"), T0)
            .unwrap();
    }
    b.heartbeat(&svc("api"), ip("10.0.1.1"), &reg(80, "r"), T0)
        .unwrap();
    assert!(pull(&b, &a, T0) > 1, "the limit of 3 cuts the delta");
    pull(&a, &b, T0);
    assert_eq!(state(&a, T0), state(&b, T0));
    assert_eq!(a.host_count(), 11);
    // Nothing new: the next delta is empty.
    assert!(a.delta(&b.digest(), 100).records.is_empty());
    assert_eq!(a.behind(&b.digest()), 0);
}

#[test]
fn a_delete_travels_and_older_copies_do_not_resurrect_the_host() {
    let a = registry("a");
    let b = registry("b");
    let c = registry("c");
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    let old = a.delta(&Digest::new(), 100);
    pull(&b, &a, T0);
    b.delete(&svc("web"), ip("10.0.0.1"), None, T0 + SECOND)
        .unwrap();
    pull(&a, &b, T0 + SECOND);
    assert!(state(&a, T0 + SECOND).is_empty());
    // A third node that only ever saw the old heartbeat passes it on late.
    c.apply(old.clone(), T0 + SECOND);
    a.apply(old, T0 + 2 * SECOND);
    pull(&a, &c, T0 + 2 * SECOND);
    assert!(state(&a, T0 + 2 * SECOND).is_empty());
    pull(&c, &a, T0 + 2 * SECOND);
    assert!(state(&c, T0 + 2 * SECOND).is_empty());
}

#[test]
fn expired_hosts_are_refused_from_peers() {
    let a = registry("a");
    let b = registry("b");
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    // Past its TTL but within its grace, a copy is still taken (and held in grace)...
    let late = registry("c");
    let applied = late.apply(a.delta(&Digest::new(), 100), T0 + 61 * SECOND);
    assert_eq!((applied.changed, applied.refusals.total()), (1, 0));
    assert_eq!(late.grace_count(), 1);
    late.recount();
    // ...past both, it is gone and must not come back.
    let applied = b.apply(a.delta(&Digest::new(), 100), T0 + 91 * SECOND);
    assert_eq!(applied.refusals.total(), 1);
    assert_eq!(b.host_count(), 0);
}

#[test]
fn a_weight_merged_into_a_newer_heartbeat_still_reaches_third_nodes() {
    let a = registry("a");
    let b = registry("b");
    let c = registry("c");
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    pull(&b, &a, T0);
    pull(&c, &a, T0);
    b.set_weight(&svc("web"), None, Weight::new(9).unwrap(), T0 + 1)
        .unwrap();
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r2"), T0 + 2)
        .unwrap();
    pull(&a, &b, T0 + 3); // a now holds its own heartbeat plus b's weight
    pull(&c, &a, T0 + 3);
    let h = &hosts(&c, "web", T0 + 3).hosts[0];
    assert_eq!(
        (h.revision.as_str(), h.load_balancing_weight),
        ("r2", Some(9))
    );
}

#[test]
fn refreshes_are_coalesced_in_the_replication_stream() {
    let a = registry("a");
    let b = registry("b");
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    pull(&b, &a, T0);
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0 + 5 * SECOND)
        .unwrap();
    assert!(
        a.delta(&b.digest(), 100).records.is_empty(),
        "a 5 s refresh of a 60 s TTL waits"
    );
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0 + 20 * SECOND)
        .unwrap();
    assert_eq!(
        a.delta(&b.digest(), 100).records.len(),
        1,
        "after a third of the TTL it ships"
    );
}

#[test]
fn a_replaced_incarnation_leaves_the_digest_once_nothing_carries_it() {
    let incarnation = |generation| {
        let mut config = RegistryConfig::new("test", "a");
        config.generation = generation;
        Registry::new(config)
    };
    let (a1, a2, b) = (incarnation(1), incarnation(2), registry("b"));
    a1.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    pull(&b, &a1, T0);
    a2.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0 + SECOND)
        .unwrap();
    pull(&b, &a2, T0 + SECOND);
    let generations = |r: &Registry| {
        let mut g: Vec<u64> = r
            .digest()
            .keys()
            .filter(|o| o.node.as_str() == "a")
            .map(|o| o.generation)
            .collect();
        g.sort();
        g
    };
    assert_eq!(generations(&b), [1, 2]);
    assert_eq!(b.forget_origins(T0 + 2 * SECOND), 1);
    assert_eq!(generations(&b), [2]);
    assert_eq!(
        b.forget_origins(T0 + 3 * SECOND),
        0,
        "at most once a minute"
    );
    assert_eq!(state(&b, T0 + 3 * SECOND).len(), 1);
}

// ---- Issue 10: peers are clients too -------------------------------------------------

/// A peer's copy of one live host, as it would arrive in a delta.
fn replica(service: &str, addr: &str, port: u16, ts: Micros, ttl: u32) -> Replica {
    let mut record = record::tests::live(ts, "peer", "r1");
    if let Beat::Live { ttl: t, .. } = &mut record.beat {
        *t = ttl;
    }
    Replica {
        service: svc(service),
        ip: ip(addr),
        port,
        version: Version {
            origin: Arc::new(Origin {
                node: NodeId::new("peer"),
                generation: 1,
            }),
            seq: ts,
        },
        record,
    }
}

fn delta_of(records: Vec<Replica>) -> Delta {
    Delta {
        records,
        ..Delta::default()
    }
}

fn with_config(change: impl FnOnce(&mut RegistryConfig)) -> Registry {
    let mut config = RegistryConfig::new("test", "a");
    change(&mut config);
    Registry::new(config)
}

/// The first microsecond of year 10000.
const YEAR_10000: Micros = clock::LATEST_RFC3339 + 1;

#[test]
fn a_record_stamped_past_the_skew_is_refused_and_the_clock_stays_put() {
    let r = registry("a");
    let hours_ahead = T0 + 3 * 3600 * SECOND;
    for ts in [YEAR_10000, hours_ahead, T0 + 61 * SECOND, u64::MAX] {
        let applied = r.apply(delta_of(vec![replica("web", "10.0.0.1", 80, ts, 60)]), T0);
        assert_eq!(applied.refusals.get(Refusal::ClockSkew), 1, "stamp {ts}");
        assert_eq!(applied.changed, 0);
    }
    assert_eq!(r.host_count(), 0);
    assert_eq!(r.services_held(), 0, "a refused record allocates nothing");
    assert!(r.clock_last() <= T0);
    r.heartbeat(&svc("web"), ip("10.0.0.2"), &reg(80, "r"), T0)
        .unwrap();
    assert_eq!(hosts(&r, "web", T0).hosts[0].last_check_in, rfc3339(T0));
    // Within the bound, a fast peer's stamp is taken (and the clock follows it).
    let applied = r.apply(
        delta_of(vec![replica("web", "10.0.0.1", 80, T0 + 59 * SECOND, 60)]),
        T0,
    );
    assert_eq!((applied.changed, applied.refusals.total()), (1, 0));
    assert_eq!(r.clock_last(), T0 + 59 * SECOND);
    r.recount();
}

#[test]
fn a_delete_or_a_weight_stamped_past_the_skew_refuses_the_whole_record() {
    let r = registry("a");
    r.apply(delta_of(vec![replica("web", "10.0.0.1", 80, T0, 60)]), T0);
    let mut locked = replica("web", "10.0.0.1", 80, T0 + SECOND, 60);
    locked.record.weight = Some((
        Weight::new(1).unwrap(),
        Stamp {
            ts: u64::MAX,
            node: NodeId::new("peer"),
        },
    ));
    let mut deleted = record::tests::deleted(T0 + SECOND, "peer");
    deleted.cleared.as_mut().unwrap().ts = YEAR_10000;
    let mut delete = replica("web", "10.0.0.1", 80, T0 + SECOND, 60);
    delete.record = deleted;
    let applied = r.apply(delta_of(vec![locked, delete]), T0 + SECOND);
    assert_eq!(applied.refusals.get(Refusal::ClockSkew), 2);
    // Nothing of either record was applied: not the newer heartbeat, not the weight.
    let h = &hosts(&r, "web", T0 + SECOND).hosts[0];
    assert_eq!(
        (h.last_check_in.as_str(), h.load_balancing_weight),
        (&*rfc3339(T0), None)
    );
    // The operator still steers the host: no override is locked in forever.
    r.set_weight(&svc("web"), None, Weight::new(7).unwrap(), T0 + 2 * SECOND)
        .unwrap();
    let h = &hosts(&r, "web", T0 + 2 * SECOND).hosts[0];
    assert_eq!(h.load_balancing_weight, Some(7));
    assert!(r.clock_last() <= T0 + 2 * SECOND);
}

#[test]
fn a_stamp_rendered_past_year_9999_does_not_break_reads() {
    // The skew bound keeps such stamps out; a renderer still must not trust that.
    let r = registry("a");
    r.clock.observe(YEAR_10000);
    r.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    let body = hosts(&r, "web", T0);
    assert_eq!(body.hosts[0].last_check_in, "9999-12-31T23:59:59.999999Z");
    assert!(r.envoy_assignment(&svc("web")).is_some());
}

#[test]
fn records_from_peers_pass_the_checks_of_a_heartbeat() {
    let r = registry("a");
    let port_zero = replica("web", "10.0.0.1", 0, T0, 60);
    let mut bad_tags = replica("web", "10.0.0.2", 80, T0, 60);
    let mut bad_weight_tag = replica("web", "10.0.0.3", 80, T0, 60);
    for (rep, tags) in [
        (&mut bad_tags, "not json"),
        (&mut bad_weight_tag, r#"{"load_balancing_weight":500}"#),
    ] {
        if let Beat::Live { routing, .. } = &mut rep.record.beat {
            Arc::make_mut(routing).tags = tags.into();
        }
    }
    let applied = r.apply(delta_of(vec![port_zero, bad_tags, bad_weight_tag]), T0);
    assert_eq!(applied.refusals.get(Refusal::Invalid), 3);
    assert_eq!((r.host_count(), r.services_held()), (0, 0));
}

#[test]
fn peer_ttls_are_clamped_to_this_nodes_bounds_and_do_not_travel_back() {
    let a = with_config(|c| c.max_ttl = 600);
    let b = with_config(|c| {
        c.node = NodeId::new("b");
        c.min_ttl = 10;
        c.max_ttl = 60;
    });
    a.apply(
        delta_of(vec![
            replica("web", "10.0.0.1", 80, T0, 0),
            replica("web", "10.0.0.2", 80, T0, u32::MAX),
            replica("web", "10.0.0.3", 80, T0, 30),
        ]),
        T0,
    );
    let ttls = |r: &Registry| -> Vec<Option<u64>> {
        hosts(r, "web", T0).hosts.iter().map(|h| h.ttl).collect()
    };
    assert_eq!(ttls(&a), [Some(5), Some(600), Some(30)]);
    pull(&b, &a, T0);
    assert_eq!(ttls(&b), [Some(10), Some(60), Some(30)]);
    // The clamped copies keep their versions and stamps: nothing is new for either side,
    // however often they exchange everything.
    for _ in 0..3 {
        let back = a.apply(b.delta(&Digest::new(), 100), T0);
        assert_eq!((back.changed, back.refusals.total()), (0, 0));
        let forth = b.apply(a.delta(&Digest::new(), 100), T0);
        assert_eq!((forth.changed, forth.refusals.total()), (0, 0));
    }
    // b holds each host for as long as its own bounds say, not a's.
    // (Copies this node did not take wait out their grace, a third of the TTL and the
    // margin past their TTL: see sweep.rs.)
    b.sweep(T0 + 31 * SECOND);
    b.sweep(T0 + 61 * SECOND);
    assert_eq!(ttls(&b), [Some(60)]);
    b.recount();
}

#[test]
fn a_deleted_host_stays_deleted_between_nodes_with_different_max_ttl() {
    let long = with_config(|c| {
        c.node = NodeId::new("long");
        c.max_ttl = 3600;
        c.max_stale = Some(0);
    });
    let short = with_config(|c| {
        c.node = NodeId::new("short");
        c.max_ttl = 60;
        c.max_stale = Some(0);
    });
    let mut beat = reg(80, "r");
    beat.ttl = Some(3600);
    long.heartbeat(&svc("web"), ip("10.0.0.1"), &beat, T0)
        .unwrap();
    pull(&short, &long, T0);
    assert_eq!(short.host_count(), 1);
    // Deleted on the short node; the long node never hears of it (partitioned).
    short
        .delete(&svc("web"), ip("10.0.0.1"), None, T0 + SECOND)
        .unwrap();
    let mut now = T0 + SECOND;
    while short.services_held() > 0 {
        now += 10 * SECOND;
        assert!(now < T0 + 3600 * SECOND, "the tombstone is collected");
        short.sweep(now);
    }
    // The long node's copy (3600 s) is still live there, and arrives in full.
    let applied = short.apply(long.delta(&Digest::new(), 100), now);
    assert_eq!(applied.refusals.get(Refusal::Expired), 1);
    assert_eq!(short.host_count(), 0);
    assert!(hosts(&short, "web", now).hosts.is_empty());
}

#[test]
fn max_hosts_holds_for_replicated_records_and_refreshes_pass() {
    let a = registry("peer");
    let b = with_config(|c| c.max_hosts = 10);
    for i in 0..50 {
        a.heartbeat(&svc(&format!("s{i}")), ip("10.0.0.1"), &reg(80, "r"), T0)
            .unwrap();
    }
    let applied = b.apply(a.delta(&Digest::new(), 1000), T0);
    assert_eq!(
        (applied.changed, applied.refusals.get(Refusal::Full)),
        (10, 40)
    );
    assert_eq!(b.host_count(), 10);
    assert_eq!(
        b.services_held(),
        10,
        "refused records leave no service behind"
    );
    // A held host's routing change still arrives.
    let held = &b.services()[0].service;
    a.heartbeat(&svc(held), ip("10.0.0.1"), &reg(80, "r2"), T0 + SECOND)
        .unwrap();
    let applied = b.apply(a.delta(&b.digest(), 1000), T0 + SECOND);
    assert_eq!((applied.changed, applied.refusals.total()), (1, 0));
    assert_eq!(
        hosts(&b, held, T0 + SECOND).hosts[0].revision.as_str(),
        "r2"
    );
    b.recount();
}

#[test]
fn a_heartbeat_refused_for_max_hosts_leaves_nothing_behind() {
    let r = with_config(|c| c.max_hosts = 1);
    r.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    for i in 0..100 {
        let name = svc(&format!("new-{i}"));
        assert!(r
            .heartbeat(&name, ip("10.0.0.1"), &reg(80, "r"), T0)
            .is_err());
    }
    assert_eq!(r.services_held(), 1);
    r.recount();
}

#[test]
fn a_service_with_no_host_or_tombstone_left_is_removed_and_its_index_never_goes_back() {
    let r = registry("a");
    let web = svc("web");
    r.heartbeat(&web, ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    for revision in ["r1", "r2", "r3"] {
        r.heartbeat(&svc("api"), ip("10.0.0.1"), &reg(80, revision), T0)
            .unwrap();
    }
    let deleted = r.delete(&web, ip("10.0.0.1"), None, T0).unwrap();
    assert_eq!(r.index("web"), deleted.index);
    // api expires and goes (with its expiry's tombstone, three TTLs and a grace after its
    // heartbeat); web's tombstone keeps it until the tombstone is collected.
    r.sweep(T0 + 61 * SECOND);
    r.sweep(T0 + 91 * SECOND);
    assert_eq!(r.services_held(), 2);
    r.sweep(T0 + 211 * SECOND);
    assert_eq!(r.services_held(), 1);
    let floor = r.index("api");
    assert_eq!(floor, 4, "a removed service reports the floor, not 0");
    r.sweep(T0 + r.config().tombstone_ttl() + SECOND);
    assert_eq!(r.services_held(), 0);
    assert_eq!(r.index("web"), floor);
    assert!(floor >= deleted.index);
    assert_eq!(r.view(&web, T0).index, floor);
    // Back again: past every index it showed before, so a long poll holding one wakes.
    let back = r
        .heartbeat(&web, ip("10.0.0.2"), &reg(80, "r"), T0 + 3 * 3600 * SECOND)
        .unwrap();
    assert_eq!(back.change.unwrap().index, floor + 1);
    assert_eq!(hosts(&r, "web", T0 + 3 * 3600 * SECOND).hosts.len(), 1);
    r.recount();
}

/// A host of `service` at `addr` that heartbeats once at `at` (TTL 60 s) and is then swept
/// past its TTL and grace: expired by `r`.
fn beat_once_and_expire(r: &Registry, service: &str, addr: &str, at: Micros) {
    r.heartbeat(&svc(service), ip(addr), &reg(80, "r"), at)
        .unwrap();
    r.sweep(at + 61 * SECOND);
    assert_eq!(r.sweep(at + 91 * SECOND).expired, 1);
}

#[test]
fn a_delete_from_a_peer_for_an_unknown_service_is_kept_at_the_floor() {
    let r = registry("a");
    beat_once_and_expire(&r, "api", "10.0.0.1", T0);
    r.sweep(T0 + 211 * SECOND);
    let floor = r.index("web");
    assert!(floor > 0);
    let now = T0 + 211 * SECOND;
    let mut tomb = replica("web", "10.0.0.1", 80, now, 60);
    tomb.record = record::tests::deleted(now, "peer");
    r.apply(delta_of(vec![tomb]), now);
    assert_eq!(r.services_held(), 1);
    assert_eq!(r.index("web"), floor);
    assert_eq!(r.view(&svc("web"), now).index, floor);
}

#[test]
fn a_record_claiming_a_write_of_ours_that_we_never_minted_is_held_under_a_real_version() {
    let a = registry("a");
    let b = registry("b");
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    let mut echo = a.delta(&Digest::new(), 100);
    // A real echo of a's own write is taken and changes nothing.
    let back = a.apply(echo.clone(), T0);
    assert_eq!((back.changed, back.refusals.total()), (0, 0));
    let mut forged = echo.records[0].clone();
    forged.ip = ip("10.0.0.2");
    forged.version.seq = u64::MAX;
    echo.records = vec![forged];
    assert_eq!(a.apply(echo, T0).changed, 1);
    assert!(a.own_seq() < u64::MAX);
    // It travels once, like any write of a's, and nothing rides every later delta.
    pull(&b, &a, T0);
    assert_eq!(b.host_count(), 2);
    assert!(a.delta(&b.digest(), 100).records.is_empty());
}

fn ghost_spans(n: usize, after: u64) -> Vec<Span> {
    (0..n)
        .map(|i| Span {
            origin: Arc::new(Origin {
                node: NodeId::new(&format!("ghost-{i}")),
                generation: 1,
            }),
            after,
            upto: after + 1,
        })
        .collect()
}

#[test]
fn forged_spans_cannot_grow_the_digest_past_its_bound() {
    let a = registry("a");
    // A span that moves nothing names nothing.
    a.apply(
        Delta {
            spans: ghost_spans(10, 5),
            ..Delta::default()
        },
        T0,
    );
    assert_eq!(a.digest().len(), 1, "only a's own origin");
    // Spans of invented origins fill the table up to its bound and no further.
    a.apply(
        Delta {
            spans: ghost_spans(MAX_KNOWN_ORIGINS + 500, 0),
            ..Delta::default()
        },
        T0,
    );
    assert_eq!(a.digest().len(), MAX_KNOWN_ORIGINS + 1);
    // Pruning under pressure drops every origin that no record carries.
    assert_eq!(a.forget_origins(T0 + 61 * SECOND), MAX_KNOWN_ORIGINS);
    assert_eq!(a.digest().len(), 1);
}

#[test]
fn a_peers_tombstones_for_keys_not_held_count_against_max_hosts() {
    let mut config = RegistryConfig::new("test", "a");
    config.max_hosts = 3;
    let a = Registry::new(config);
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    let b = registry("b");
    for i in 0..5 {
        let key = format!("10.0.1.{i}");
        b.heartbeat(&svc("web"), ip(&key), &reg(80, "r"), T0)
            .unwrap();
        b.delete(&svc("web"), ip(&key), None, T0).unwrap();
    }
    let applied = a.apply(b.delta(&Digest::new(), 100), T0);
    assert_eq!(applied.refusals.get(Refusal::Full), 3);
    a.recount();
    // A delete of a host held is never refused: it takes no new room.
    b.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0 + 1)
        .unwrap();
    b.delete(&svc("web"), ip("10.0.0.1"), None, T0 + 2).unwrap();
    pull(&a, &b, T0 + 3);
    assert_eq!(a.host_count(), 0);
    a.recount();
}

// ---- Issue 14: the guard on the rate of loss, expiry agreement --------------------------

/// Issue 14's fleet: 30 hosts with a 5 s TTL heartbeating every 2 s, started 66 ms apart,
/// swept every 500 ms. Hosts `silent(i, t)` says are silent skip their heartbeat at `t`.
/// Returns the fewest hosts served and whether the guard engaged, from `from` to `to`.
fn run_fleet(
    r: &Registry,
    from: Micros,
    to: Micros,
    silent: impl Fn(usize, Micros) -> bool,
) -> (usize, bool) {
    let step = 100_000;
    let mut fewest = usize::MAX;
    let mut engaged = false;
    let mut t = from;
    while t < to {
        for i in 0..30u64 {
            let phase = i * 66_000;
            let beats = t >= phase && (t - phase) % (2 * SECOND) < step;
            if beats && !silent(i as usize, t) {
                let mut beat = reg(80, "r");
                beat.ttl = Some(5);
                r.heartbeat(&svc("web"), ip(&format!("10.0.0.{i}")), &beat, T0 + t)
                    .unwrap();
            }
        }
        if t.is_multiple_of(500_000) {
            engaged |= r.sweep(T0 + t).guard_engaged;
            fewest = fewest.min(hosts(r, "web", T0 + t).hosts.len());
        }
        t += step;
    }
    r.recount();
    (fewest, engaged)
}

fn fleet_registry() -> Registry {
    with_config(|c| {
        c.host_ttl = 5;
        c.expiry_grace = 30;
    })
}

#[test]
fn a_mass_loss_spread_over_the_heartbeat_interval_engages_the_guard_before_any_host_goes() {
    // The old rule (overdue hosts at one sweep against all hosts) saw at most 5 of 30 at a
    // time here and drained the node from 30 to 10 hosts in 2 s.
    let r = fleet_registry();
    let stop = 10 * SECOND;
    run_fleet(&r, 0, stop, |_, _| false);
    // (Until 20 s: `--max-stale`, three TTLs after their last heartbeat, is not yet out.)
    let (fewest, engaged) = run_fleet(&r, stop, 20 * SECOND, |i, _| i < 20);
    assert!(engaged, "the guard engaged");
    assert_eq!(fewest, 30, "no host was dropped before the guard engaged");
    assert_eq!((r.host_count(), r.stale_count()), (30, 20));
    let measure = r.guard_measure();
    assert!(measure.fraction() > 0.5, "{measure:?}");
    // The 20 come back: released, nothing dropped, nothing held.
    let (fewest, _) = run_fleet(&r, 20 * SECOND, 26 * SECOND, |_, _| false);
    assert_eq!(fewest, 30);
    assert!(!r.guard_engaged());
    assert_eq!(
        (r.host_count(), r.stale_count(), r.grace_count()),
        (30, 0, 0)
    );
}

#[test]
fn a_few_hosts_dying_are_dropped_within_their_ttl_and_grace_and_the_guard_stays_off() {
    let r = fleet_registry();
    let stop = 10 * SECOND;
    let (_, engaged) = run_fleet(&r, 0, 20 * SECOND, |i, t| i < 3 && t >= stop);
    assert!(!engaged);
    assert_eq!(r.host_count(), 27);
    // Their last heartbeats were before 10 s: TTL 5 s and grace 2.5 s later, plus a sweep.
    let r = fleet_registry();
    run_fleet(&r, 0, 18 * SECOND, |i, t| i < 3 && t >= stop);
    assert_eq!(r.host_count(), 27, "dropped by 18 s");
}

#[test]
fn when_the_guard_releases_held_hosts_past_their_grace_are_dropped() {
    let r = fleet_registry();
    let stop = 10 * SECOND;
    run_fleet(&r, 0, 20 * SECOND, |i, t| i < 20 && t >= stop);
    assert!(r.guard_engaged());
    // 12 of the 20 come back; 8 stay dead: 8 of 30 lost, under half: released and dropped.
    let (_, _) = run_fleet(&r, 20 * SECOND, 24 * SECOND, |i, _| i < 8);
    assert!(!r.guard_engaged());
    assert_eq!((r.host_count(), r.stale_count()), (22, 0));
}

// ---- Issue 14: expiry decisions travel ----------------------------------------------------

fn lists(r: &Registry, addr: &str, now: Micros) -> Option<String> {
    hosts(r, "web", now)
        .hosts
        .into_iter()
        .find(|h| h.ip_address.to_string() == addr)
        .map(|h| h.last_check_in.to_string())
}

/// The fault harness's resurrect: a node cut off from its fleet holds every host stale (its
/// guard engaged); a host that really died meanwhile, expired by the node that took its
/// heartbeats, must go there as soon as that expiry arrives, not stay listed until the guard
/// lets go (a reader rotating over nodes saw it come back).
#[test]
fn a_peers_expiry_drops_a_host_that_the_guard_holds_here() {
    let a = registry("a");
    let b = registry("b");
    beat_web(&a, 0..12, T0);
    pull(&b, &a, T0);
    // b is cut off. On a, 11 hosts keep heartbeating and 10.0.0.0 dies.
    for t in [20, 40, 60, 61, 80, 91] {
        beat_web(&a, 1..12, T0 + t * SECOND);
        a.sweep(T0 + t * SECOND);
    }
    assert_eq!(lists(&a, "10.0.0.0", T0 + 91 * SECOND), None);
    // b sees all 12 go overdue at once and holds them.
    b.sweep(T0 + 61 * SECOND);
    assert!(b.sweep(T0 + 91 * SECOND).guard_engaged);
    assert_eq!(b.stale_count(), 12);
    // The cut heals: the 11 are refreshed, the dead one goes with a's expiry.
    pull(&b, &a, T0 + 92 * SECOND);
    assert_eq!(lists(&b, "10.0.0.0", T0 + 92 * SECOND), None);
    assert_eq!(hosts(&b, "web", T0 + 92 * SECOND).hosts.len(), 11);
    b.recount();
    // A third node holding an older copy, late, brings nothing back.
    let c = registry("c");
    c.apply(a.delta(&Digest::new(), 100), T0 + 80 * SECOND);
    pull(&b, &c, T0 + 93 * SECOND);
    assert_eq!(lists(&b, "10.0.0.0", T0 + 93 * SECOND), None);
}

/// A node whose clock runs ahead stamps the heartbeats it takes ahead by as much and expires
/// them on that same clock: its expiry is right, and taken at once (the others' own deadline
/// would come the offset later, and a rotating reader saw the host come back there).
#[test]
fn an_expiry_by_the_node_that_took_the_heartbeat_is_taken_whatever_its_clock() {
    let a = registry("a");
    let b = registry("b");
    let ahead = 20 * SECOND;
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0 + ahead)
        .unwrap();
    pull(&b, &a, T0);
    a.sweep(T0 + ahead + 61 * SECOND);
    assert_eq!(a.sweep(T0 + ahead + 91 * SECOND).expired, 1);
    // b's clock: a's deadline and grace end at 110 s.
    pull(&b, &a, T0 + 91 * SECOND);
    assert_eq!(lists(&b, "10.0.0.1", T0 + 91 * SECOND), None);
    b.recount();
}

/// A node whose clock runs ahead sees other nodes' hosts overdue early; its expiry of a
/// heartbeat it did not take waits until this node's clock has passed the deadline and the
/// grace too, so it cannot drop hosts early everywhere.
#[test]
fn an_expiry_by_a_node_whose_clock_runs_ahead_waits_for_this_nodes_clock() {
    let a = registry("a");
    let c = registry("c");
    let ahead = 40 * SECOND;
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    pull(&c, &a, T0 + ahead);
    // c did not take it: TTL 60 + grace 30 + a third of the TTL 20 + margin 2 on its clock.
    c.sweep(T0 + ahead + 61 * SECOND);
    assert_eq!(c.sweep(T0 + ahead + 112 * SECOND).expired, 1);
    // 72 s on a's clock: past the host's TTL, not past its grace.
    let now = T0 + 72 * SECOND;
    pull(&a, &c, now);
    assert!(lists(&a, "10.0.0.1", now).is_some());
    let d = registry("d");
    pull(&d, &c, now);
    assert_eq!(
        d.services_held(),
        0,
        "not kept where nothing was held either"
    );
    // The same expiry, once this node's clock agrees, is taken.
    let late = registry("e");
    late.apply(a.delta(&Digest::new(), 100), T0 + 91 * SECOND);
    pull(&late, &c, T0 + 91 * SECOND);
    assert_eq!(lists(&late, "10.0.0.1", T0 + 91 * SECOND), None);
    assert_eq!(late.recount(), (0, 0));
}

/// A heartbeat newer than an expiry's deadline beats it: a node that was cut off and expired
/// a host that heartbeated elsewhere meanwhile must not delete it there, and takes the newer
/// heartbeat back when the cut heals.
#[test]
fn a_heartbeat_newer_than_an_expiry_stands_and_travels_back_to_the_node_that_expired_it() {
    let a = registry("a");
    let b = registry("b");
    let web = svc("web");
    a.heartbeat(&web, ip("10.0.0.1"), &reg(80, "r"), T0)
        .unwrap();
    pull(&b, &a, T0);
    // Cut off from a, the host heartbeats to b: at 55 s (shipped: a third of the TTL after
    // the copy b held) and at 70 s (not shipped: it rides on the version of 55 s).
    b.heartbeat(&web, ip("10.0.0.1"), &reg(80, "r"), T0 + 55 * SECOND)
        .unwrap();
    b.heartbeat(&web, ip("10.0.0.1"), &reg(80, "r"), T0 + 70 * SECOND)
        .unwrap();
    // a never heard of either and expires the host: its tombstone is stamped at 60 s.
    a.sweep(T0 + 61 * SECOND);
    assert_eq!(a.sweep(T0 + 91 * SECOND).expired, 1);
    let now = T0 + 92 * SECOND;
    pull(&b, &a, now);
    assert_eq!(lists(&b, "10.0.0.1", now), Some(rfc3339(T0 + 70 * SECOND)));
    pull(&a, &b, now);
    assert_eq!(lists(&a, "10.0.0.1", now), Some(rfc3339(T0 + 70 * SECOND)));
    a.recount();
    b.recount();
}

/// Expiries take memory only as long as a copy of the host can still be taken (a TTL and
/// grace past the deadline) or held by a node's expiry guard (`--max-stale`, three TTLs by
/// default, after the heartbeat), not the hours a delete's tombstone is kept: one per host
/// that dies would otherwise pile up under churn.
#[test]
fn an_expirys_tombstone_is_collected_once_no_node_can_hold_a_copy_of_the_host() {
    let a = registry("a");
    beat_once_and_expire(&a, "web", "10.0.0.1", T0);
    assert_eq!(a.services_held(), 1, "the expiry's tombstone");
    // --max-stale (180 s) and the grace (30 s).
    a.sweep(T0 + 209 * SECOND);
    assert_eq!(a.services_held(), 1);
    assert_eq!(a.sweep(T0 + 210 * SECOND).tombstones_collected, 1);
    assert_eq!(a.services_held(), 0);
    a.recount();
}

/// A forged expiry can do no more than a forged delete: its stamp is bounded by
/// `--max-clock-skew`, it must name a heartbeat before its deadline, a live record cannot
/// carry one, and for keys not held it counts against `--max-hosts`.
#[test]
fn a_forged_expiry_is_bounded_like_a_forged_delete() {
    let a = with_config(|c| c.max_hosts = 2);
    let now = T0;
    let expiry = |addr: &str, at: Micros, expired: Micros| {
        let mut r = replica("web", addr, 80, at, 60);
        r.record = record::tests::deleted(at, "peer");
        r.record.expired = Some(Stamp {
            ts: expired,
            node: NodeId::new("peer"),
        });
        r
    };
    let mut live = replica("web", "10.0.0.9", 80, now, 60);
    live.record.expired = Some(live.record.hb.clone());
    let applied = a.apply(
        delta_of(vec![
            expiry("10.0.0.1", now + 61 * SECOND, now),
            expiry("10.0.0.2", now - 10 * SECOND, now - 10 * SECOND),
            live,
            expiry("10.0.0.3", now - 10 * SECOND, now - 70 * SECOND),
            expiry("10.0.0.4", now - 10 * SECOND, now - 70 * SECOND),
            expiry("10.0.0.5", now - 10 * SECOND, now - 70 * SECOND),
        ]),
        now,
    );
    assert_eq!(applied.refusals.get(Refusal::ClockSkew), 1);
    assert_eq!(applied.refusals.get(Refusal::Invalid), 2);
    assert_eq!(applied.refusals.get(Refusal::Full), 1, "two of three fit");
    assert!(
        a.clock_last() < now,
        "the stamp past the skew never reached the clock"
    );
    a.recount();
}

/// A node whose clock runs ahead by more than a TTL and grace sees every copy from its peers
/// already past both. Refusing them all, it drained to an empty list within `--max-stale`
/// once its own agents had moved to other nodes (the full fault run, clock +20 s, TTL 6 s).
/// It takes them as refreshes of the hosts it holds (within `--max-clock-skew`), and still
/// brings back nothing it does not hold.
#[test]
fn a_node_whose_clock_runs_ahead_keeps_taking_refreshes_of_the_hosts_it_holds() {
    let a = registry("a");
    let fast = registry("f");
    let short = |port| Registration {
        ttl: Some(6),
        ..reg(port, "r")
    };
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &short(80), T0)
        .unwrap();
    pull(&fast, &a, T0);
    // a's next refresh is shipped (a third of the TTL later); a new host appears on a too.
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &short(80), T0 + 2 * SECOND)
        .unwrap();
    a.heartbeat(&svc("web"), ip("10.0.0.2"), &short(80), T0 + 2 * SECOND)
        .unwrap();
    // fast's clock is now 20 s ahead: past TTL 6 s and grace 3 s of both copies.
    let now = T0 + 22 * SECOND;
    let applied = fast.apply(a.delta(&fast.digest(), 100), now);
    assert_eq!(
        applied.refusals.get(Refusal::Expired),
        1,
        "the host not held"
    );
    assert_eq!(
        lists(&fast, "10.0.0.1", now),
        Some(rfc3339(T0 + 2 * SECOND)),
        "the held host is refreshed"
    );
    assert_eq!(lists(&fast, "10.0.0.2", now), None);
    // Beyond --max-clock-skew (60 s) past its grace, a copy is refused however it is held.
    a.heartbeat(&svc("web"), ip("10.0.0.1"), &short(80), T0 + 4 * SECOND)
        .unwrap();
    let applied = fast.apply(a.delta(&fast.digest(), 100), T0 + 74 * SECOND);
    assert_eq!(applied.refusals.get(Refusal::Expired), 1);
    fast.recount();
}
