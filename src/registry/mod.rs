//! The core: every host the node knows, the merge rules, expiry and the prepared views.
//!
//! Pure and synchronous: no tokio, no sockets, no clock reads. Every method that depends on
//! time takes `now` (microseconds since the epoch) and returns what changed, so the HTTP
//! layer can wake long polls and the gossip layer can ship deltas. Tests drive it directly.
//!
//! State is sharded by service in a `DashMap`: a heartbeat locks one shard for the length of
//! a map update, and reads clone an `Arc` of a prepared view, so readers never wait on a
//! global lock and heartbeats to different services proceed in parallel. A service is held
//! only while it has a host or a tombstone: memory follows what is live, not every name ever
//! written. (Lock order: see the field doc of `Registry::services`.)
//!
//! Every write, from a client or a peer, passes the same checks before it touches state:
//! a peer's record is validated like a heartbeat, its TTL bounded by this node's, its stamps
//! by `--max-clock-skew`, and `--max-hosts` holds whatever the source (`replication.rs`).

mod clock;
mod envoy;
mod prometheus;
mod record;
mod replication;
mod service;
mod sweep;
mod view;

use std::cmp::Reverse;
use std::collections::{btree_map, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use discovery_api::{Port, Registration, RepoName, ServiceName, ServiceSummary, Weight};
use parking_lot::Mutex;

pub use clock::{rfc3339, Micros, NodeId, Stamp, SECOND};
pub use record::{Beat, Merged, Origin, Record, Routing, Version};
pub use replication::{
    advance, behind, Applied, Delta, Digest, Refusal, Refusals, Replica, Span, MAX_KNOWN_ORIGINS,
};
pub use sweep::{GuardMeasure, SweepReport};
pub use view::ServiceView;

use service::{Entry, ServiceState, Slot, Tally};

/// The registry's rules, validated by `config.rs`.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `--env`, echoed in host lists.
    pub env: String,
    /// This node's id.
    pub node: NodeId,
    /// This incarnation of the node (its start time), for replication identities.
    pub generation: u64,
    /// TTL in seconds of a heartbeat that names none.
    pub host_ttl: u32,
    /// Smallest TTL in seconds a heartbeat may ask for.
    pub min_ttl: u32,
    /// Largest TTL in seconds a heartbeat may ask for.
    pub max_ttl: u32,
    /// Fraction of the hosts held lost within the guard's window above which the expiry guard
    /// holds overdue hosts (0 = off). See `sweep.rs`.
    pub expiry_guard: f64,
    /// How long the guard may hold a silent host, in seconds; `None` = three times its TTL.
    pub max_stale: Option<u32>,
    /// `--expiry-grace` in seconds: the longest a host past its TTL is still served while the
    /// guard measures the loss (a host gets half its TTL, at most this), and the window over
    /// which the guard counts hosts lost. Longer catches a loss spread over longer heartbeat
    /// intervals; shorter drops dead hosts sooner. Default 30 s.
    pub expiry_grace: u32,
    /// How much longer than the node that took a host's newest heartbeat a node holding an
    /// older copy waits before it drops the host on its own, in microseconds (beyond a third
    /// of the TTL): the time for that node's final copy to arrive. Set from the gossip
    /// interval (two intervals); default 2 s.
    pub expiry_margin: Micros,
    /// Most hosts in all, whatever their source (heartbeat or peer); past it, new hosts are
    /// refused and refreshes of held ones still pass.
    pub max_hosts: usize,
    /// `--max-clock-skew` in microseconds: how far ahead of `now` a peer's timestamp may be.
    /// A record stamped further ahead is refused whole and never moves the local clock, so
    /// one fast (or forged) peer cannot drag every node's timestamps into the future. Larger
    /// tolerates worse-synchronized clocks; smaller bounds how long a fast peer's host can
    /// outlive its TTL. Default 60 s.
    pub max_clock_skew: Micros,
}

impl RegistryConfig {
    /// A single-node configuration with the defaults of SPEC section 7.
    pub fn new(env: &str, node: &str) -> Self {
        RegistryConfig {
            env: env.to_owned(),
            node: NodeId::new(node),
            generation: 0,
            host_ttl: 600,
            min_ttl: 5,
            max_ttl: 3600,
            expiry_guard: 0.5,
            max_stale: None,
            expiry_grace: 30,
            expiry_margin: 2 * SECOND,
            max_hosts: 1_000_000,
            max_clock_skew: 60 * SECOND,
        }
    }

    fn clamp_ttl(&self, requested: Option<u64>) -> u32 {
        let ttl = requested.unwrap_or(u64::from(self.host_ttl));
        ttl.clamp(u64::from(self.min_ttl), u64::from(self.max_ttl)) as u32
    }

    /// How long the guard may hold a host with this TTL, in microseconds.
    fn max_stale_for(&self, ttl: u32) -> Micros {
        u64::from(self.max_stale.unwrap_or(ttl.saturating_mul(3))) * SECOND
    }

    /// How long a host with this TTL is still served past its TTL while the guard measures
    /// the loss: half the TTL, at most `--expiry-grace`.
    fn grace_for(&self, ttl: u32) -> Micros {
        (u64::from(ttl) * SECOND / 2).min(u64::from(self.expiry_grace) * SECOND)
    }

    /// The window over which the guard counts hosts lost (`--expiry-grace`).
    fn loss_window(&self) -> Micros {
        u64::from(self.expiry_grace) * SECOND
    }

    /// How long a delete's tombstone is kept: longer than any copy of the host can live
    /// anywhere.
    fn tombstone_ttl(&self) -> Micros {
        u64::from(self.max_ttl) * SECOND + self.max_stale_for(self.max_ttl) + 60 * SECOND
    }

    /// When a tombstone is collected. A delete's is kept for `tombstone_ttl`. An expiry's
    /// (stamped at its host's deadline) only as long as a copy of a heartbeat older than that
    /// deadline can still be taken or held anywhere: taken, for a TTL and grace past the
    /// deadline (`Registry::sanitize` refuses it after that); held, by an expiry guard, until
    /// `--max-stale` after its heartbeat (a node cut off from the others holds its hosts
    /// stale, and the expiry must still reach it when the cut heals). So an expiry, one per
    /// host that dies, is kept for about three TTLs, not the hours of a delete.
    fn tombstone_until(&self, record: &Record) -> Micros {
        let keep = match self.expired_ttl(record) {
            None => self.tombstone_ttl(),
            Some(ttl) => {
                let ttl_us = u64::from(ttl) * SECOND;
                let held = self.max_stale_for(ttl).saturating_sub(ttl_us);
                ttl_us.max(held) + self.grace_for(ttl)
            }
        };
        record.hb.ts.saturating_add(keep)
    }

    /// For an expiry's tombstone: the TTL of the heartbeat it expired (from its deadline, the
    /// tombstone's stamp), as this node bounds TTLs.
    fn expired_ttl(&self, record: &Record) -> Option<u32> {
        let expired = record.expired.as_ref()?;
        Some(self.clamp_ttl(Some(record.hb.ts.saturating_sub(expired.ts) / SECOND)))
    }

    /// A refresh of an unchanged host is shipped to peers again after a third of its TTL, so
    /// copies elsewhere never expire while the host heartbeats at least that often.
    fn reship_after(ttl: u32) -> Micros {
        u64::from(ttl) * SECOND / 3
    }
}

/// A host's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostKey {
    pub service: ServiceName,
    pub ip: IpAddr,
    pub port: u16,
}

/// A routing change: a service's host list moved to a new index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub service: ServiceName,
    /// The index its host list has now (`X-Discovery-Index`).
    pub index: u64,
}

/// Keeps one change per service, with its newest index, ordered by service.
fn coalesce(changes: &mut Vec<Change>) {
    changes.sort_by(|a, b| a.service.cmp(&b.service));
    changes.dedup_by(|later, kept| {
        let same = later.service == kept.service;
        if same {
            kept.index = kept.index.max(later.index);
        }
        same
    });
}

/// What a heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The host was not live before.
    pub created: bool,
    /// Set when consumers must look again.
    pub change: Option<Change>,
}

/// Why a heartbeat was refused: `--max-hosts` (the number inside) is reached and the host
/// is new.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the registry holds its maximum of {0} hosts; new hosts are refused")]
pub struct RegistryFull(pub usize);

/// Why a delete or an override was refused: no live host matches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no such host")]
pub struct NoSuchHost;

/// Every host this node knows, by service, with the replication log and the cached views.
pub struct Registry {
    config: RegistryConfig,
    origin: Arc<Origin>,
    clock: clock::Hlc,
    /// The last seq minted by this incarnation.
    seq: AtomicU64,
    /// The services, sharded. **Lock order**: a shard lock first, then (briefly, nested
    /// inside it) `expiry`, `stale_keys`, `grace_keys`, `losses` or `known`; never a shard lock while one of those
    /// mutexes is held, and never two shard locks at once (a `DashMap` guard held while
    /// touching another key of the map can deadlock on the same shard). A service is removed
    /// only by `forget_if_empty`, with no guard held.
    services: DashMap<ServiceName, ServiceState>,
    /// One entry per host (and tombstone) at the time it must next be looked at; heartbeats
    /// do not touch it, the sweeper reschedules entries whose host was refreshed.
    expiry: Mutex<BinaryHeap<Reverse<(Micros, HostKey)>>>,
    /// Hosts held by the expiry guard. Changed only by [`Registry::transition`].
    stale_keys: Mutex<HashSet<HostKey>>,
    /// Live hosts in all (the sum of every service's `tally.live`). Changed only by
    /// [`Registry::transition`].
    live: AtomicUsize,
    /// Stale hosts in all. Changed only by [`Registry::transition`].
    stale: AtomicUsize,
    /// Tombstones in all: with `live`, what bounds the entries a node keeps (a peer's
    /// tombstone for a key not held counts against `--max-hosts` too). Changed only by
    /// [`Registry::transition`].
    tombstones: AtomicUsize,
    /// Hosts in their expiry grace. Changed only by [`Registry::transition`].
    grace_keys: Mutex<HashSet<HostKey>>,
    /// Hosts in their expiry grace, in all. Changed only by [`Registry::transition`].
    grace: AtomicUsize,
    /// When hosts were dropped for their TTL (or `--max-stale`), within the guard's window,
    /// oldest first. Written only by the sweep.
    losses: Mutex<VecDeque<Micros>>,
    /// The guard's last measure: hosts lost in the window (held, in grace or dropped) and
    /// the hosts they are a fraction of. Written only by the sweep.
    guard_measure: Mutex<GuardMeasure>,
    guard_engaged: AtomicBool,
    /// The highest index a removed service had reached: what a service not held reports,
    /// and where a new one starts, so an index (`X-Discovery-Index`) never goes back across
    /// removal and re-creation and a long poll holding an old one still wakes.
    index_floor: AtomicU64,
    /// Per foreign origin, the seq up to which this node holds everything (or newer).
    known: Mutex<HashMap<Arc<Origin>, u64>>,
    /// When origins were last pruned from `known` (see `forget_origins`).
    origins_pruned_at: AtomicU64,
}

impl Registry {
    /// An empty registry.
    pub fn new(config: RegistryConfig) -> Self {
        let origin = Arc::new(Origin {
            node: config.node.clone(),
            generation: config.generation,
        });
        Registry {
            config,
            origin,
            clock: clock::Hlc::default(),
            seq: AtomicU64::new(0),
            services: DashMap::new(),
            expiry: Mutex::new(BinaryHeap::new()),
            stale_keys: Mutex::new(HashSet::new()),
            live: AtomicUsize::new(0),
            stale: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            grace_keys: Mutex::new(HashSet::new()),
            grace: AtomicUsize::new(0),
            losses: Mutex::new(VecDeque::new()),
            guard_measure: Mutex::new(GuardMeasure::default()),
            guard_engaged: AtomicBool::new(false),
            index_floor: AtomicU64::new(0),
            known: Mutex::new(HashMap::new()),
            origins_pruned_at: AtomicU64::new(0),
        }
    }

    /// The rules this registry runs with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Live hosts in all, stale ones included.
    pub fn host_count(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Hosts held by the expiry guard.
    pub fn stale_count(&self) -> usize {
        self.stale.load(Ordering::Relaxed)
    }

    /// Services with at least one live host.
    pub fn service_count(&self) -> usize {
        self.services.iter().filter(|s| s.tally.live > 0).count()
    }

    /// Services held in memory: those with live hosts and those holding only tombstones.
    /// A service with neither is removed, so this returns to 0 once everything expired.
    pub fn services_held(&self) -> usize {
        self.services.len()
    }

    /// Whether the expiry guard held hosts at the last sweep.
    pub fn guard_engaged(&self) -> bool {
        self.guard_engaged.load(Ordering::Relaxed)
    }

    /// Hosts past their TTL in their expiry grace (still served).
    pub fn grace_count(&self) -> usize {
        self.grace.load(Ordering::Relaxed)
    }

    /// The guard's measure at the last sweep.
    pub fn guard_measure(&self) -> GuardMeasure {
        *self.guard_measure.lock()
    }

    fn mint(&self) -> Version {
        Version {
            origin: self.origin.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    fn schedule(&self, at: Micros, key: HostKey) {
        self.expiry.lock().push(Reverse((at, key)));
    }

    /// A new, empty service, starting at the floor so its index is never below one that an
    /// earlier life of the same name showed.
    fn new_service(&self, name: &ServiceName) -> ServiceState {
        let floor = self.index_floor.load(Ordering::Relaxed);
        ServiceState::new(name.clone(), &self.config.env, floor)
    }

    /// Refuses a new live host when `--max-hosts` are held.
    fn check_room(&self) -> Result<(), RegistryFull> {
        if self.live.load(Ordering::Relaxed) >= self.config.max_hosts {
            return Err(RegistryFull(self.config.max_hosts));
        }
        Ok(())
    }

    /// Refuses a peer's tombstone for a key not held when live hosts and tombstones together
    /// fill `--max-hosts`: a tombstone lives for hours (`tombstone_ttl`), so without this one
    /// message of deletes for invented keys would hold memory that no limit bounds.
    fn check_room_for_tombstone(&self) -> Result<(), RegistryFull> {
        let held = self.live.load(Ordering::Relaxed) + self.tombstones.load(Ordering::Relaxed);
        if held >= self.config.max_hosts {
            return Err(RegistryFull(self.config.max_hosts));
        }
        Ok(())
    }

    /// The one place where a host entry changes state as the counters see it: moves the
    /// service's tally, the registry-wide counts, `stale_keys` and the entry's `stale` flag
    /// together. Called with the service's shard lock held (the `svc` borrow), so a reader
    /// of the service never sees its counts disagree with its entries.
    fn transition(
        &self,
        tally: &mut Tally,
        key: &HostKey,
        entry: Option<&mut Entry>,
        from: Slot,
        to: Slot,
    ) {
        if let Some(entry) = entry {
            entry.stale = to == Slot::Stale;
            entry.grace = to == Slot::Grace;
        }
        if from == to {
            return;
        }
        match (from.is_live(), to.is_live()) {
            (false, true) => {
                tally.live += 1;
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                tally.live -= 1;
                self.live.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        match (from == Slot::Tombstone, to == Slot::Tombstone) {
            (false, true) => {
                self.tombstones.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.tombstones.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        match (from == Slot::Stale, to == Slot::Stale) {
            (false, true) => {
                tally.stale += 1;
                self.stale.fetch_add(1, Ordering::Relaxed);
                self.stale_keys.lock().insert(key.clone());
            }
            (true, false) => {
                tally.stale -= 1;
                self.stale.fetch_sub(1, Ordering::Relaxed);
                self.stale_keys.lock().remove(key);
            }
            _ => {}
        }
        match (from == Slot::Grace, to == Slot::Grace) {
            (false, true) => {
                tally.grace += 1;
                self.grace.fetch_add(1, Ordering::Relaxed);
                self.grace_keys.lock().insert(key.clone());
            }
            (true, false) => {
                tally.grace -= 1;
                self.grace.fetch_sub(1, Ordering::Relaxed);
                self.grace_keys.lock().remove(key);
            }
            _ => {}
        }
    }

    /// Removes a service that holds no host and no tombstone, with everything kept for it.
    /// Checked under the shard's write lock, so a host written in between keeps it; the
    /// floor is raised before the removal is visible, so `index` never goes back.
    fn forget_if_empty(&self, service: &ServiceName) {
        self.services.remove_if(service, |_, svc| {
            let empty = svc.hosts.is_empty();
            if empty {
                self.index_floor.fetch_max(svc.index, Ordering::Relaxed);
            }
            empty
        });
    }

    /// Takes a heartbeat (SPEC 3.1) for `ip` (the registration's, or the peer's with
    /// `auto_ip`).
    pub fn heartbeat(
        &self,
        service: &ServiceName,
        ip: IpAddr,
        reg: &Registration,
        now: Micros,
    ) -> Result<Heartbeat, RegistryFull> {
        let ttl = self.config.clamp_ttl(reg.ttl);
        let tags: Box<str> = serde_json::to_string(&reg.tags)
            .unwrap_or_else(|_| "{}".into())
            .into();
        let port = reg.port.get();
        let mut guard = match self.services.get_mut(service) {
            Some(guard) => guard,
            None => {
                // Checked before the service is created: a refused heartbeat leaves nothing.
                self.check_room()?;
                self.services
                    .entry(service.clone())
                    .or_insert_with(|| self.new_service(service))
            }
        };
        let svc = &mut *guard;
        let key = HostKey {
            service: service.clone(),
            ip,
            port,
        };
        let from = svc.hosts.get(&(ip, port)).map_or(Slot::Absent, Entry::slot);
        if !from.is_live() {
            if let Err(full) = self.check_room() {
                if svc.hosts.is_empty() {
                    // Created by a racing writer that was refused too: nothing to keep.
                    drop(guard);
                    self.forget_if_empty(service);
                }
                return Err(full);
            }
        }
        let ts = self.clock.tick(now);
        let hb = Stamp {
            ts,
            node: self.config.node.clone(),
        };
        let same_routing = |r: &Routing| {
            r.revision == reg.revision
                && r.service_repo_name == reg.service_repo_name
                && r.tags == tags
                && r.status == reg.status
        };
        if from.is_live() {
            let entry = svc.hosts.get_mut(&(ip, port)).expect("checked live above");
            let old_ttl = entry.record.ttl();
            let unchanged = entry.record.routing().is_some_and(|r| same_routing(r));
            entry.record.hb = hb;
            if !unchanged {
                let routing = service::routing(
                    reg,
                    tags,
                    [entry.record.routing().map(|r| &**r), svc.recent.as_deref()],
                );
                svc.recent = Some(routing.clone());
                entry.record.beat = Beat::Live { routing, ttl };
            } else if let Beat::Live { ttl: t, .. } = &mut entry.record.beat {
                *t = ttl;
            }
            let reship = !unchanged
                || ttl != old_ttl
                || ts.saturating_sub(entry.shipped_ts) >= RegistryConfig::reship_after(ttl);
            if reship {
                entry.version = self.mint();
                entry.shipped_ts = ts;
            }
            self.transition(&mut svc.tally, &key, Some(entry), from, Slot::Live);
            let version = entry.version.clone();
            entry.final_copy = false;
            if ttl < old_ttl || matches!(from, Slot::Stale | Slot::Grace) {
                self.schedule(ts + u64::from(ttl) * SECOND, key);
            }
            service::note_version(&mut svc.max_seq, &version);
            let change = if unchanged {
                svc.refresh_dirty = true;
                None
            } else {
                Some(Change {
                    service: service.clone(),
                    index: svc.routing_changed(),
                })
            };
            return Ok(Heartbeat {
                created: false,
                change,
            });
        }
        let version = self.mint();
        let routing = service::routing(reg, tags, [svc.recent.as_deref(), None]);
        svc.recent = Some(routing.clone());
        let beat = Beat::Live { routing, ttl };
        let entry = match svc.hosts.entry((ip, port)) {
            btree_map::Entry::Occupied(tomb) => {
                let tomb = tomb.into_mut();
                tomb.record.hb = hb;
                tomb.record.beat = beat;
                tomb.record.expired = None;
                tomb.version = version.clone();
                tomb.shipped_ts = ts;
                tomb
            }
            btree_map::Entry::Vacant(slot) => slot.insert(Entry {
                record: Record {
                    hb,
                    beat,
                    weight: None,
                    cleared: None,
                    expired: None,
                },
                version: version.clone(),
                shipped_ts: ts,
                stale: false,
                grace: false,
                grace_until: 0,
                final_copy: false,
            }),
        };
        self.transition(&mut svc.tally, &key, Some(entry), from, Slot::Live);
        service::note_version(&mut svc.max_seq, &version);
        let index = svc.routing_changed();
        self.schedule(ts + u64::from(ttl) * SECOND, key);
        Ok(Heartbeat {
            created: true,
            change: Some(Change {
                service: service.clone(),
                index,
            }),
        })
    }

    /// Deletes the live hosts of `service` at `ip` (every port, or only `port`), leaving
    /// tombstones so that no older copy brings them back.
    pub fn delete(
        &self,
        service: &ServiceName,
        ip: IpAddr,
        port: Option<Port>,
        now: Micros,
    ) -> Result<Change, NoSuchHost> {
        let mut svc = self.services.get_mut(service).ok_or(NoSuchHost)?;
        let svc = &mut *svc;
        let ports: Vec<u16> = svc
            .hosts
            .range((ip, 0)..=(ip, u16::MAX))
            .filter(|(k, e)| !e.record.is_deleted() && port.is_none_or(|p| p.get() == k.1))
            .map(|(k, _)| k.1)
            .collect();
        if ports.is_empty() {
            return Err(NoSuchHost);
        }
        for p in ports {
            let key = HostKey {
                service: service.clone(),
                ip,
                port: p,
            };
            let ts = self.clock.tick(now);
            let stamp = Stamp {
                ts,
                node: self.config.node.clone(),
            };
            let version = self.mint();
            let entry = svc.hosts.get_mut(&(ip, p)).expect("collected above");
            let from = entry.slot();
            entry.record.hb = stamp.clone();
            entry.record.beat = Beat::Deleted;
            entry.record.cleared = Some(stamp);
            entry.record.expired = None;
            entry.version = version.clone();
            entry.shipped_ts = ts;
            let until = self.config.tombstone_until(&entry.record);
            self.transition(&mut svc.tally, &key, Some(entry), from, Slot::Tombstone);
            service::note_version(&mut svc.max_seq, &version);
            self.schedule(until, key);
        }
        Ok(Change {
            service: service.clone(),
            index: svc.routing_changed(),
        })
    }

    /// Sets the operator's weight override on the live hosts of `service` at `ip` (or on all
    /// of them). It survives heartbeats until the host expires or is deleted.
    pub fn set_weight(
        &self,
        service: &ServiceName,
        ip: Option<IpAddr>,
        weight: Weight,
        now: Micros,
    ) -> Result<Option<Change>, NoSuchHost> {
        let mut svc = self.services.get_mut(service).ok_or(NoSuchHost)?;
        let svc = &mut *svc;
        let mut matched = false;
        let mut moved = false;
        for ((host_ip, _), entry) in svc.hosts.iter_mut() {
            if entry.record.is_deleted() || ip.is_some_and(|ip| ip != *host_ip) {
                continue;
            }
            matched = true;
            let before = entry.record.weight_override();
            let stamp = Stamp {
                ts: self.clock.tick(now),
                node: self.config.node.clone(),
            };
            entry.record.weight = Some((weight, stamp));
            entry.version = self.mint();
            service::note_version(&mut svc.max_seq, &entry.version);
            moved |= before != Some(weight);
        }
        if !matched {
            return Err(NoSuchHost);
        }
        Ok(moved.then(|| Change {
            service: service.clone(),
            index: svc.routing_changed(),
        }))
    }

    /// The service's current change index. A service not held (never seen, or removed once
    /// its hosts and tombstones were gone) reports the floor: the highest index any removed
    /// service reached, so the value a client saw never goes back.
    pub fn index(&self, service: &str) -> u64 {
        self.services
            .get(service)
            .map_or_else(|| self.index_floor.load(Ordering::Relaxed), |s| s.index)
    }

    /// The list of a service not held, at the floor index.
    fn empty_view(&self, service: &ServiceName) -> Arc<ServiceView> {
        Arc::new(ServiceView {
            index: self.index_floor.load(Ordering::Relaxed),
            ..ServiceView::empty(service, &self.config.env)
        })
    }
    /// The prepared host list of a service, rebuilt first if it changed. An unknown service
    /// gets an empty list (rendered, not stored, so lookups of arbitrary names cost no memory).
    pub fn view(&self, service: &ServiceName, now: Micros) -> Arc<ServiceView> {
        match self.services.get(service) {
            Some(svc) if !svc.needs_rebuild(now) => return svc.view.clone(),
            Some(_) => {}
            None => return self.empty_view(service),
        }
        match self.services.get_mut(service) {
            Some(mut svc) => {
                if svc.needs_rebuild(now) {
                    svc.rebuild(&self.config.env, now);
                }
                svc.view.clone()
            }
            None => self.empty_view(service),
        }
    }

    /// The live hosts of every service built from `repo`, ordered by service, address and
    /// port. Rendered per call: this is an operator's query, not a proxy's hot path.
    pub fn repo_hosts(&self, repo: &RepoName) -> Bytes {
        let mut services: Vec<(ServiceName, Vec<u8>)> = Vec::new();
        for svc in self.services.iter() {
            let mut hosts = Vec::new();
            for ((ip, port), entry) in &svc.hosts {
                if entry
                    .record
                    .routing()
                    .is_some_and(|r| r.service_repo_name == *repo)
                {
                    if !hosts.is_empty() {
                        hosts.push(b',');
                    }
                    view::write_host(&mut hosts, svc.name.as_str(), *ip, *port, &entry.record);
                }
            }
            if !hosts.is_empty() {
                services.push((svc.name.clone(), hosts));
            }
        }
        services.sort_by(|a, b| a.0.cmp(&b.0));
        let mut body = Vec::new();
        view::open_list(
            &mut body,
            "service_repo_name",
            repo.as_str(),
            &self.config.env,
        );
        for (i, (_, hosts)) in services.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(hosts);
        }
        view::close_list(&mut body);
        body.into()
    }

    /// The names of every service with live hosts, sorted.
    pub fn live_service_names(&self) -> Vec<ServiceName> {
        let mut out: Vec<ServiceName> = self
            .services
            .iter()
            .filter(|s| s.tally.live > 0)
            .map(|s| s.name.clone())
            .collect();
        out.sort();
        out
    }

    /// Every service with live hosts, sorted by name.
    pub fn services(&self) -> Vec<ServiceSummary> {
        let mut out: Vec<ServiceSummary> = self
            .services
            .iter()
            .filter(|s| s.tally.live > 0)
            .map(|s| ServiceSummary {
                service: s.name.to_string(),
                hosts: s.tally.live as u64,
                stale: s.tally.stale as u64,
                index: s.index,
            })
            .collect();
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }
}

#[cfg(test)]
impl Registry {
    /// The newest timestamp this node's clock issued or saw.
    pub(crate) fn clock_last(&self) -> Micros {
        self.clock.last()
    }

    /// Recounts every host over the map and checks each counter against it (per service, the
    /// registry-wide ones and `stale_keys`), and that no empty service is kept. Panics with
    /// what differs; returns the live and stale totals.
    pub(crate) fn recount(&self) -> (usize, usize) {
        let mut live = 0;
        let mut stale = 0;
        let mut tombstones = 0;
        let mut stale_keys = HashSet::new();
        let mut grace_keys = HashSet::new();
        for svc in self.services.iter() {
            assert!(!svc.hosts.is_empty(), "{} is kept with no entry", svc.name);
            let mut tally = Tally::default();
            for ((ip, port), entry) in &svc.hosts {
                let slot = entry.slot();
                tally.live += usize::from(slot.is_live());
                tombstones += usize::from(slot == Slot::Tombstone);
                let key = HostKey {
                    service: svc.name.clone(),
                    ip: *ip,
                    port: *port,
                };
                if slot == Slot::Stale {
                    tally.stale += 1;
                    stale_keys.insert(key.clone());
                }
                if slot == Slot::Grace {
                    tally.grace += 1;
                    grace_keys.insert(key);
                }
            }
            assert_eq!(svc.tally, tally, "the tally of {}", svc.name);
            live += tally.live;
            stale += tally.stale;
        }
        assert_eq!(self.live.load(Ordering::Relaxed), live, "live hosts");
        assert_eq!(self.stale.load(Ordering::Relaxed), stale, "stale hosts");
        assert_eq!(
            self.tombstones.load(Ordering::Relaxed),
            tombstones,
            "tombstones"
        );
        assert_eq!(*self.stale_keys.lock(), stale_keys, "stale_keys");
        assert_eq!(*self.grace_keys.lock(), grace_keys, "grace_keys");
        assert_eq!(
            self.grace.load(Ordering::Relaxed),
            grace_keys.len(),
            "grace"
        );
        (live, stale)
    }
}

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;
