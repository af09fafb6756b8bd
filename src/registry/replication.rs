//! What the gossip layer exchanges: digests, deltas and their merge into the registry.
//!
//! Every write that peers must learn gets a [`Version`] minted by the node that took it: its
//! origin (node and incarnation) and a counter. A peer's [`Digest`] says, per origin, the seq
//! up to which it holds everything (or something newer for the same key), so a [`Delta`] for it
//! carries only records minted after that: a round grows with what changed, not with the size
//! of the registry. [`Span`]s tell the receiver how far it may advance its digest, so a delta
//! cut short by the size limit, or a push that skipped a gap, never claims more than it holds.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use discovery_api::{ServiceName, Tags};
use serde::{Deserialize, Serialize};

use super::clock::{Micros, NodeId};
use super::record::{Beat, Merged, Origin, Record, Routing, Version};
use super::service::{note_version, Entry, ServiceState};
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
        let have = digest.entry(span.origin.clone()).or_insert(0);
        if *have >= span.after && span.upto > *have {
            *have = span.upto;
        }
    }
}

/// One host key's record as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The host's service.
    pub service: ServiceName,
    /// Its address.
    pub ip: IpAddr,
    /// Its port.
    pub port: u16,
    /// Where this content was minted.
    pub version: Version,
    /// The content.
    pub record: Record,
}

/// "After applying this delta, if your digest for `origin` was at least `after`, it is now
/// `upto`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The origin.
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

/// What applying a delta did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// Records that changed something here.
    pub changed: usize,
    /// Records refused: invalid, or already expired (they must not come back).
    pub refused: usize,
    /// Services whose host list changed.
    pub changes: Vec<Change>,
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

    /// Merges a delta from a peer (SPEC 4.2). Invalid or expired records are refused and
    /// counted, never trusted.
    pub fn apply(&self, delta: Delta, now: Micros) -> Applied {
        let mut applied = Applied::default();
        for replica in delta.records {
            match self.apply_one(replica, now) {
                Some(Some(change)) => {
                    applied.changed += 1;
                    applied.changes.push(change);
                }
                Some(None) => applied.changed += 1,
                None => applied.refused += 1,
            }
        }
        super::coalesce(&mut applied.changes);
        let foreign: Vec<Span> = delta
            .spans
            .into_iter()
            .filter(|span| span.origin != self.origin)
            .collect();
        advance(&mut self.known.lock(), &foreign);
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
        known.retain(|origin, _| {
            referenced.contains(origin) || newest.get(&origin.node) == Some(&origin.generation)
        });
        before - known.len()
    }

    /// Checks a peer's record; `None` when it must be refused.
    fn sanitize(&self, mut replica: Replica, now: Micros) -> Option<Replica> {
        match &mut replica.record.beat {
            Beat::Live { routing, ttl } => {
                let tags = Tags::from_json_str(&routing.tags).ok()?;
                let canonical = serde_json::to_string(&tags).ok()?;
                if *ttl == 0 || *ttl > 7 * 24 * 3600 {
                    return None;
                }
                if *canonical != *routing.tags {
                    let mut fixed = Routing::clone(routing);
                    fixed.tags = canonical.into();
                    *routing = Arc::new(fixed);
                }
                if replica.record.deadline() <= now {
                    return None;
                }
            }
            Beat::Deleted => {
                if replica.record.hb.ts + self.config.tombstone_ttl() <= now {
                    return None;
                }
                if replica.record.cleared.as_ref() < Some(&replica.record.hb) {
                    replica.record.cleared = Some(replica.record.hb.clone());
                }
            }
        }
        Some(replica)
    }

    /// Merges one record. `None`: refused; `Some(change)`: applied.
    fn apply_one(&self, replica: Replica, now: Micros) -> Option<Option<Change>> {
        let replica = self.sanitize(replica, now)?;
        self.clock.observe(replica.record.hb.ts);
        if let Some((_, at)) = &replica.record.weight {
            self.clock.observe(at.ts);
        }
        let Replica {
            service,
            ip,
            port,
            version,
            mut record,
        } = replica;
        let key = HostKey {
            service: service.clone(),
            ip,
            port,
        };
        let mut guard = self
            .services
            .entry(service.clone())
            .or_insert_with(|| ServiceState::new(service.clone(), &self.config.env));
        let svc = &mut *guard;
        if let Beat::Live { routing, .. } = &mut record.beat {
            svc.share_strings(routing);
        }
        let Some(entry) = svc.hosts.get_mut(&(ip, port)) else {
            let live = !record.is_deleted();
            let at = if live {
                record.deadline()
            } else {
                record.hb.ts + self.config.tombstone_ttl()
            };
            note_version(&mut svc.max_seq, &version);
            svc.hosts.insert(
                (ip, port),
                Entry {
                    shipped_ts: record.hb.ts,
                    record,
                    version,
                    stale: false,
                },
            );
            drop(guard);
            self.schedule(at, key);
            if !live {
                return Some(None);
            }
            let mut svc = self.services.get_mut(&service)?;
            svc.live += 1;
            self.live.fetch_add(1, Ordering::Relaxed);
            let index = svc.routing_changed();
            return Some(Some(Change { service, index }));
        };
        let was_live = !entry.record.is_deleted();
        let old_ttl = entry.record.ttl();
        let old_hb = entry.record.hb.ts;
        match entry.record.merge(&record) {
            Merged::Unchanged => Some(None),
            merged => {
                entry.version = if entry.record == record {
                    version
                } else {
                    // Content that no single peer minted: give it an identity of our own so
                    // that it travels on.
                    self.mint()
                };
                entry.shipped_ts = entry.record.hb.ts;
                note_version(&mut svc.max_seq, &entry.version);
                let is_live = !entry.record.is_deleted();
                let mut reschedule = None;
                if was_live && (entry.record.hb.ts != old_hb) {
                    self.unstale(&key, entry, &mut svc.stale);
                }
                if is_live && (!was_live || entry.record.ttl() < old_ttl) {
                    reschedule = Some(entry.record.deadline());
                } else if was_live && !is_live {
                    reschedule = Some(entry.record.hb.ts + self.config.tombstone_ttl());
                }
                let index = match (was_live, is_live) {
                    (false, true) => {
                        svc.live += 1;
                        self.live.fetch_add(1, Ordering::Relaxed);
                        Some(svc.routing_changed())
                    }
                    (true, false) => {
                        svc.live -= 1;
                        self.live.fetch_sub(1, Ordering::Relaxed);
                        Some(svc.routing_changed())
                    }
                    (true, true) if merged == Merged::Routing => Some(svc.routing_changed()),
                    (true, true) => {
                        svc.refresh_dirty = true;
                        None
                    }
                    (false, false) => None,
                };
                drop(guard);
                if let Some(at) = reschedule {
                    self.schedule(at, key);
                }
                Some(index.map(|index| Change { service, index }))
            }
        }
    }
}
