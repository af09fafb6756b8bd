//! What the gossip layer exchanges: digests, deltas and their merge into the registry.
//!
//! Every write that peers must learn gets a [`Version`] minted by the node that took it: its
//! origin (node and incarnation) and a counter. A peer's [`Digest`] says, per origin, the seq
//! up to which it holds everything (or something newer for the same key), so a [`Delta`] for it
//! carries only records minted after that: a round grows with what changed, not with the size
//! of the registry. [`Span`]s tell the receiver how far it may advance its digest, so a delta
//! cut short by the size limit, or a push that skipped a gap, never claims more than it holds.

use std::collections::{btree_map, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use discovery_api::{Port, RepoName, Revision, ServiceName, Tags};
use serde::{Deserialize, Serialize};

use super::clock::{Micros, NodeId};
use super::record::{Beat, Merged, Origin, Record, Routing, Version};
use super::service::{note_version, Entry, Slot};
use super::{Change, HostKey, Registry};

/// Per origin, the seq up to which a node holds everything.
pub type Digest = HashMap<Arc<Origin>, u64>;

/// How many records a node holding `held` has that a node at `since` lacks, by the digests
/// alone.
pub fn behind(held: &Digest, since: &Digest) -> u64 {
    held.iter()
        .map(|(o, seq)| seq.saturating_sub(since.get(o).copied().unwrap_or(0)))
        .sum()
}

/// Moves a digest forward by a delta's spans: an origin advances to `upto` only when the
/// digest already held everything up to the span's `after` (no gap is skipped).
pub fn advance(digest: &mut Digest, spans: &[Span]) {
    for span in spans {
        // No entry for a span that moves nothing: a digest names only what it holds.
        let have = digest.get(&span.origin).copied().unwrap_or(0);
        if have >= span.after && span.upto > have {
            digest.insert(span.origin.clone(), span.upto);
        }
    }
}

/// Most foreign origins a node tracks in its digest. Every gossip message carries the whole
/// digest, and a peer refuses a message naming more than its decoding bound of origins, so a
/// digest grown by forged spans would cut the node off from every peer. A real cluster needs
/// one origin per node incarnation whose writes are still held: thousands leave room for
/// hundreds of nodes and their restarts. Past the bound, spans of new origins are not
/// tracked (their records are still merged; peers only resend them until pruning makes
/// room: see [`Registry::forget_origins`]).
pub const MAX_KNOWN_ORIGINS: usize = 4096;

/// One host key's record as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub service: ServiceName,
    pub ip: IpAddr,
    pub port: u16,
    /// Where this content was minted.
    pub version: Version,
    pub record: Record,
}

/// "After applying this delta, if your digest for `origin` was at least `after`, it is now
/// `upto`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub origin: Arc<Origin>,
    /// The digest the sender assumed.
    pub after: u64,
    /// How far the receiver is complete after applying.
    pub upto: u64,
}

/// Records a peer lacks, and how far they bring it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The records, ordered by origin and seq.
    pub records: Vec<Replica>,
    /// How far each origin's stream is complete after these records.
    pub spans: Vec<Span>,
    /// The size limit cut the delta short: ask again.
    pub truncated: bool,
}

/// Why a peer's record was refused (whole: nothing of it is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// It fails the validation a heartbeat gets: service name, port, revision, repository
    /// name or tags.
    Invalid,
    /// One of its timestamps (heartbeat, delete or weight) is more than `--max-clock-skew`
    /// ahead of this node's clock.
    ClockSkew,
    /// Its TTL (as this node bounds it), or its tombstone's retention, has run out: it must
    /// not come back.
    Expired,
    /// It would add a live host past `--max-hosts`.
    Full,
}

impl Refusal {
    /// Every reason, in a fixed order.
    pub const ALL: [Refusal; 4] = [
        Refusal::Invalid,
        Refusal::ClockSkew,
        Refusal::Expired,
        Refusal::Full,
    ];

    /// The reason as a metric label value and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::ClockSkew => "clock_skew",
            Refusal::Expired => "expired",
            Refusal::Full => "full",
        }
    }
}

/// Refused records of one delta, counted by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refusals([usize; Refusal::ALL.len()]);

impl Refusals {
    /// Counts one refusal.
    pub fn add(&mut self, reason: Refusal) {
        self.0[reason as usize] += 1;
    }

    /// How many were refused for `reason`.
    pub fn get(&self, reason: Refusal) -> usize {
        self.0[reason as usize]
    }

    /// How many were refused, all reasons together.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// The reasons that refused at least one record, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (Refusal, usize)> + '_ {
        Refusal::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// What merging one accepted record did.
enum Outcome {
    /// This node already held it (or something newer).
    Unchanged,
    /// It changed the local record; with the change to publish when consumers must look.
    Changed(Option<Change>),
}

/// What applying a delta did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// Records that changed something here.
    pub changed: usize,
    /// Records refused, by reason ([`Refusals::total`] for all together).
    pub refusals: Refusals,
    /// Services whose host list changed.
    pub changes: Vec<Change>,
    /// The newest heartbeat stamp among the records that changed something here (for the
    /// convergence lag: refused records say nothing about it).
    pub newest: Option<Micros>,
}

impl Registry {
    /// This node's digest: how far it holds each origin's stream, its own included.
    pub fn digest(&self) -> Digest {
        let mut digest = self.known.lock().clone();
        digest.insert(self.origin.clone(), self.seq.load(Ordering::Relaxed));
        digest
    }

    /// This node's replication origin.
    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    /// The records a peer with digest `since` lacks, at most `limit` of them.
    pub fn delta(&self, since: &Digest, limit: usize) -> Delta {
        self.delta_and_digest(since, limit).0
    }

    /// [`Registry::delta`], with this node's digest as the delta's spans claim it (the
    /// digest to send along, without reading it again).
    pub fn delta_and_digest(&self, since: &Digest, limit: usize) -> (Delta, Digest) {
        // The digest is read before the scan: a record minted after this point may or may not
        // be sent, but no span claims it.
        let held = self.digest();
        let behind = |origin: &Arc<Origin>, seq: u64| since.get(origin).copied().unwrap_or(0) < seq;
        let mut records = Vec::new();
        for svc in self.services.iter() {
            if !svc.max_seq.iter().any(|(o, s)| behind(o, *s)) {
                continue;
            }
            for ((ip, port), entry) in &svc.hosts {
                if behind(&entry.version.origin, entry.version.seq) {
                    records.push(Replica {
                        service: svc.name.clone(),
                        ip: *ip,
                        port: *port,
                        version: entry.version.clone(),
                        record: entry.record.clone(),
                    });
                }
            }
        }
        records.sort_by(|a, b| a.version.cmp(&b.version));
        let cut = (records.len() > limit).then(|| {
            records.truncate(limit.max(1));
            records.last().map(|r| r.version.clone())
        });
        let truncated = cut.is_some();
        let cut = cut.flatten();
        let mut spans = Vec::new();
        for (origin, &upto) in &held {
            let after = since.get(origin).copied().unwrap_or(0);
            let upto = match &cut {
                Some(cut) if *origin > cut.origin => continue,
                Some(cut) if *origin == cut.origin => upto.min(cut.seq),
                _ => upto,
            };
            if upto > after {
                spans.push(Span {
                    origin: origin.clone(),
                    after,
                    upto,
                });
            }
        }
        spans.sort_by(|a, b| a.origin.cmp(&b.origin));
        let delta = Delta {
            records,
            spans,
            truncated,
        };
        (delta, held)
    }

    /// How many records this node holds that a peer with digest `since` lacks, by the spans
    /// alone (cheap: no scan).
    pub fn behind(&self, since: &Digest) -> u64 {
        behind(&self.digest(), since)
    }

    /// The last seq this incarnation minted (its own entry of the digest, without a copy).
    pub fn own_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Merges a delta from a peer (SPEC 4.2). Records are checked like heartbeats; a refused
    /// one (see [`Refusal`]) is counted by reason and changes nothing.
    pub fn apply(&self, delta: Delta, now: Micros) -> Applied {
        let mut applied = Applied::default();
        for replica in delta.records {
            let stamp = replica.record.hb.ts;
            match self.apply_one(replica, now) {
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Changed(change)) => {
                    applied.changed += 1;
                    applied.newest = applied.newest.max(Some(stamp));
                    applied.changes.extend(change);
                }
                Err(reason) => {
                    applied.refusals.add(reason);
                }
            }
        }
        super::coalesce(&mut applied.changes);
        let mut known = self.known.lock();
        let mut room = MAX_KNOWN_ORIGINS.saturating_sub(known.len());
        let admitted: Vec<Span> = delta
            .spans
            .into_iter()
            .filter(|span| span.origin != self.origin)
            .filter(|span| {
                let new = !known.contains_key(&span.origin);
                if new && room == 0 {
                    return false;
                }
                room -= usize::from(new);
                true
            })
            .collect();
        advance(&mut known, &admitted);
        applied
    }

    /// Drops from the digest the origins that no record here carries any more and that a
    /// newer incarnation of the same node has replaced: without this, every restart of a node
    /// would add an entry that every gossip message carries forever. Runs at most once a
    /// minute (it scans every record). Returns how many origins were dropped.
    pub fn forget_origins(&self, now: Micros) -> usize {
        let last = self.origins_pruned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 60 * super::SECOND
            || self
                .origins_pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return 0;
        }
        let mut referenced: HashSet<Arc<Origin>> = HashSet::new();
        for mut svc in self.services.iter_mut() {
            let svc = &mut *svc;
            let held: HashSet<&Arc<Origin>> =
                svc.hosts.values().map(|e| &e.version.origin).collect();
            svc.max_seq.retain(|origin, _| held.contains(origin));
            referenced.extend(svc.max_seq.keys().cloned());
        }
        let mut known = self.known.lock();
        let newest: HashMap<NodeId, u64> =
            known
                .keys()
                .chain([&self.origin])
                .fold(HashMap::new(), |mut m, o| {
                    let g = m.entry(o.node.clone()).or_insert(0);
                    *g = (*g).max(o.generation);
                    m
                });
        let before = known.len();
        // Under pressure (half the bound taken, which only forged spans or a very large
        // cluster reach) every origin no record carries goes: a real peer's origin comes back
        // with its next span, an invented one does not.
        let pressed = known.len() > MAX_KNOWN_ORIGINS / 2;
        known.retain(|origin, _| {
            referenced.contains(origin)
                || (!pressed && newest.get(&origin.node) == Some(&origin.generation))
        });
        before - known.len()
    }

    /// Checks a peer's record as a heartbeat is checked (SPEC 4.2: peers are not trusted more
    /// than clients), or says why it is refused. The record is refused whole, never applied
    /// in part.
    ///
    /// A TTL outside this node's `[min_ttl, max_ttl]` is clamped, not refused: the host is
    /// real, only this node holds it for as long as its own rules allow. That keeps this
    /// node's tombstones (whose lifetime comes from its own `max_ttl`) longer than any copy
    /// it accepts, so a peer with a longer `--max-ttl` cannot bring a deleted host back. The
    /// clamped copy keeps the sender's version: replication sees the same write, so it never
    /// travels back as a new one and nodes with different bounds do not ping-pong.
    fn sanitize(&self, mut replica: Replica, now: Micros) -> Result<Replica, Refusal> {
        // The decoder already parsed the names; checked again with the same api rules so
        // that whatever path a record comes by, it is held only if a heartbeat could be.
        ServiceName::parse(replica.service.as_str()).map_err(|_| Refusal::Invalid)?;
        Port::new(i64::from(replica.port)).map_err(|_| Refusal::Invalid)?;
        let record = &mut replica.record;
        let horizon = now.saturating_add(self.config.max_clock_skew);
        let stamps = [
            Some(&record.hb),
            record.cleared.as_ref(),
            record.weight.as_ref().map(|(_, at)| at),
        ];
        if stamps.into_iter().flatten().any(|s| s.ts > horizon) {
            return Err(Refusal::ClockSkew);
        }
        match &mut record.beat {
            Beat::Live { .. } if record.expired.is_some() => return Err(Refusal::Invalid),
            Beat::Live { routing, ttl } => {
                Revision::parse(routing.revision.as_str()).map_err(|_| Refusal::Invalid)?;
                RepoName::parse(routing.service_repo_name.as_str())
                    .map_err(|_| Refusal::Invalid)?;
                let tags = Tags::from_json_str(&routing.tags).map_err(|_| Refusal::Invalid)?;
                let canonical = serde_json::to_string(&tags).map_err(|_| Refusal::Invalid)?;
                if *canonical != *routing.tags {
                    let mut fixed = Routing::clone(routing);
                    fixed.tags = canonical.into();
                    *routing = Arc::new(fixed);
                }
                *ttl = self.config.clamp_ttl(Some(u64::from(*ttl)));
                // Past its TTL but within its grace, a copy is still held everywhere (and
                // the final copy of an overdue host travels then): only past both is it gone.
                // Up to `--max-clock-skew` past that, it may still refresh a host held here
                // (`apply_one`): this node's clock may be the one running ahead.
                if self
                    .past_grace(record)
                    .saturating_add(self.config.max_clock_skew)
                    <= now
                {
                    return Err(Refusal::Expired);
                }
            }
            Beat::Deleted => {
                if record
                    .expired
                    .as_ref()
                    .is_some_and(|e| e.ts >= record.hb.ts)
                {
                    // An expiry is stamped at a deadline after the heartbeat it expired.
                    return Err(Refusal::Invalid);
                }
                if self.config.tombstone_until(record) <= now {
                    return Err(Refusal::Expired);
                }
                if record.cleared.as_ref() < Some(&record.hb) {
                    record.cleared = Some(record.hb.clone());
                }
            }
        }
        Ok(replica)
    }

    /// Merges one record, or says why it was refused. One shard lock is held from the check
    /// of `--max-hosts` to the last counter, so what a reader of the service sees is always
    /// whole.
    fn apply_one(&self, replica: Replica, now: Micros) -> Result<Outcome, Refusal> {
        let Replica {
            service,
            ip,
            port,
            version,
            mut record,
        } = self.sanitize(replica, now)?;
        // Our own writes come back from peers; a seq of ours this incarnation never minted
        // (forged, or another node sharing our id and start time) would make every later
        // delta to every peer carry the record again: it is held under a version of our own.
        let foreign_seq =
            version.origin == self.origin && version.seq > self.seq.load(Ordering::Relaxed);
        let live = !record.is_deleted();
        let mut guard = match self.services.get_mut(&service) {
            Some(guard) => guard,
            None => {
                // Checked before the service is created: a refused record leaves nothing.
                if live {
                    self.check_room().map_err(|_| Refusal::Full)?;
                } else {
                    self.check_room_for_tombstone().map_err(|_| Refusal::Full)?;
                }
                self.services
                    .entry(service.clone())
                    .or_insert_with(|| self.new_service(&service))
            }
        };
        let svc = &mut *guard;
        if !self.takes_expiry(&record, now) {
            if svc.hosts.is_empty() {
                drop(guard);
                self.forget_if_empty(&service);
            }
            return Ok(Outcome::Unchanged);
        }
        let held = svc.hosts.get(&(ip, port));
        let from = held.map_or(Slot::Absent, Entry::slot);
        // A copy past its TTL and grace by this node's clock brings nothing back; it only
        // refreshes a host held here. (A node whose clock runs ahead sees every copy that
        // old: refusing them all, it drained itself to an empty list within `--max-stale`
        // once its own agents had moved to other nodes.)
        if live && self.past_grace(&record) <= now && !from.is_live() {
            if svc.hosts.is_empty() {
                drop(guard);
                self.forget_if_empty(&service);
            }
            return Err(Refusal::Expired);
        }
        let revives = live && !from.is_live() && held.is_none_or(|e| record.hb > e.record.hb);
        // A live copy that arrives already past its TTL, minted by the node that took its
        // heartbeat, is that node's final copy of a host that went overdue there: this node
        // then drops it on the same deadline (see `sweep.rs`).
        let arrives_final = live
            && record.deadline() <= now
            && version.origin.node == record.hb.node
            && record.hb.node != self.config.node;
        let new_tombstone = !live && held.is_none();
        if (revives && self.check_room().is_err())
            || (new_tombstone && self.check_room_for_tombstone().is_err())
        {
            if svc.hosts.is_empty() {
                drop(guard);
                self.forget_if_empty(&service);
            }
            return Err(Refusal::Full);
        }
        // Only accepted stamps move the clock (see `Hlc::observe`).
        self.clock.observe(record.hb.ts);
        for at in record
            .cleared
            .iter()
            .chain(record.weight.as_ref().map(|(_, at)| at))
        {
            self.clock.observe(at.ts);
        }
        if let Beat::Live { routing, .. } = &mut record.beat {
            svc.share_strings(routing);
        }
        let key = HostKey {
            service: service.clone(),
            ip,
            port,
        };
        let (entry, merged, old_ttl, old_hb) = match svc.hosts.entry((ip, port)) {
            btree_map::Entry::Vacant(slot) => {
                let version = if foreign_seq { self.mint() } else { version };
                let entry = slot.insert(Entry {
                    shipped_ts: record.hb.ts,
                    record,
                    version,
                    stale: false,
                    grace: false,
                    grace_until: 0,
                    final_copy: arrives_final,
                });
                (entry, Merged::Routing, 0, None)
            }
            btree_map::Entry::Occupied(held) => {
                let entry = held.into_mut();
                let old_ttl = entry.record.ttl();
                let old_hb = entry.record.hb.ts;
                let merged = entry.record.merge(&record);
                if merged == Merged::Unchanged {
                    if arrives_final && !entry.final_copy && entry.record.hb == record.hb {
                        // The copy held here is that final copy: drop it on its deadline.
                        entry.final_copy = true;
                        if entry.slot() == Slot::Grace {
                            entry.grace_until = self.grace_until(entry);
                            let at = entry.grace_until;
                            drop(guard);
                            self.schedule(at, HostKey { service, ip, port });
                        }
                    }
                    return Ok(Outcome::Unchanged);
                }
                if entry.record.hb.ts != old_hb {
                    entry.final_copy = arrives_final && entry.record.hb == record.hb;
                }
                entry.version = if entry.record == record && !foreign_seq {
                    version
                } else {
                    // Content that no single peer minted: give it an identity of our own so
                    // that it travels on.
                    self.mint()
                };
                entry.shipped_ts = entry.record.hb.ts;
                (entry, merged, old_ttl, Some(old_hb))
            }
        };
        let unrefreshed = Some(entry.record.hb.ts) == old_hb;
        let to = match entry.slot() {
            Slot::Tombstone => Slot::Tombstone,
            // A newer heartbeat releases a host held by the guard or in grace; an override
            // does not.
            _ if from == Slot::Stale && unrefreshed => Slot::Stale,
            _ if from == Slot::Grace && unrefreshed => Slot::Grace,
            // A copy already past its TTL (within its grace, or `sanitize` refused it).
            _ if entry.record.deadline() <= now => Slot::Grace,
            _ => Slot::Live,
        };
        if to == Slot::Grace {
            entry.grace_until = self.grace_until(entry);
        }
        let reschedule = if to == Slot::Grace {
            Some(entry.grace_until)
        } else if to.is_live()
            && (!from.is_live()
                || matches!(from, Slot::Stale | Slot::Grace)
                || entry.record.ttl() < old_ttl)
        {
            Some(entry.record.deadline())
        } else if to == Slot::Tombstone && from != Slot::Tombstone {
            Some(self.config.tombstone_until(&entry.record))
        } else {
            None
        };
        let expired_here = from.is_live() && entry.record.expired.is_some();
        note_version(&mut svc.max_seq, &entry.version);
        self.transition(&mut svc.tally, &key, Some(entry), from, to);
        if expired_here {
            // A peer's expiry dropped a host this node held: a loss for the guard's measure,
            // as if this node's own sweep had dropped it.
            self.losses.lock().push_back(now);
        }
        if let Some(at) = reschedule {
            self.schedule(at, key);
        }
        let index = match (from.is_live(), to.is_live()) {
            (false, true) | (true, false) => Some(svc.routing_changed()),
            (true, true) if merged == Merged::Routing => Some(svc.routing_changed()),
            (true, true) => {
                svc.refresh_dirty = true;
                None
            }
            (false, false) => None,
        };
        Ok(Outcome::Changed(
            index.map(|index| Change { service, index }),
        ))
    }

    /// When a live copy's TTL and grace have run out, as this node bounds them.
    fn past_grace(&self, record: &Record) -> Micros {
        record.deadline() + self.config.grace_for(record.ttl())
    }

    /// Whether this node takes a peer's expiry (a tombstone naming the heartbeat it expired)
    /// at all. The node that expired a heartbeat it took itself measured the silence on one
    /// clock and is trusted as a delete is, whatever its offset (its stamps and its deadline
    /// are on the same clock). Any other node compared a stamp of another node's clock with
    /// its own, so a node whose clock runs ahead would expire every host early: its expiry is
    /// taken only once this node's clock has passed the deadline and the grace too (when this
    /// node, deciding, would have dropped the host itself). Deletes and live copies pass.
    fn takes_expiry(&self, record: &Record, now: Micros) -> bool {
        match (&record.expired, self.config.expired_ttl(record)) {
            (Some(expired), Some(ttl)) if expired.node != record.hb.node => {
                record.hb.ts.saturating_add(self.config.grace_for(ttl)) <= now
            }
            _ => true,
        }
    }
}
