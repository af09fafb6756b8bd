//! Expiry: dropping hosts whose TTL ran out, and the expiry guard that holds them when this
//! node loses so many hosts so fast that it, not the fleet, has probably lost contact.
//!
//! **Grace.** A host past its TTL is not dropped at once: it enters its *grace* (half its
//! TTL, at most `--expiry-grace`), still served, while the guard measures the loss. A copy
//! of a host whose newest heartbeat this node did not take waits longer (a third of the TTL
//! and `expiry_margin` more), since the node that took it may hold a newer heartbeat; that
//! node ships its final copy the moment the host goes overdue, and every node then drops the
//! host on the same deadline (`last_check_in + TTL + grace`). See docs/gossip.md.
//!
//! **The drop is a decision that travels.** A host whose grace ran out becomes an expiry
//! tombstone stamped at its deadline ([`expire`]), minted and pushed like a delete: a node
//! that missed the final copy, or that holds the host stale behind its guard, drops it as
//! soon as the expiry arrives, and no older copy brings it back; a heartbeat newer than the
//! deadline beats it. Which peers' expiries a node takes is `replication.rs`'s rule. A host
//! the guard held until `--max-stale` is removed without one: that is this node's own doubt.
//!
//! **Guard, on the rate of loss** (Eureka's self-preservation: expected against received
//! renewals). At every sweep, *lost* = hosts held by the guard + hosts in grace + hosts
//! dropped for their TTL within the last `--expiry-grace`; *base* = live hosts + those
//! dropped. When base is at least 10 and lost is more than `--expiry-guard` of base, the
//! guard engages: every host in grace, and every host that goes overdue while it is engaged,
//! is held as stale (served) until it heartbeats again or `--max-stale` runs out. Because a
//! host waits out its grace before it is dropped, a loss spread over the heartbeat interval
//! is seen whole, whatever the phases of the heartbeats. When heartbeats come back and lost
//! falls to the threshold, the guard releases: what it still holds gets a fresh grace to
//! heartbeat (the rest of the fleet comes back spread over the interval too), then goes.
//!
//! The sweep looks only at the entries of the expiry queue that are due, never at every host:
//! a host refreshed since it was queued is put back at its new deadline. When the last host
//! or tombstone of a service goes, the service goes with it (`Registry::forget_if_empty`).

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::clock::{Micros, NodeId, Stamp};
use super::record::{Beat, Record};
use super::service::{note_version, Entry, Slot};
use super::{Change, HostKey, Registry, RegistryConfig};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// Hosts dropped because their TTL and grace (or the guard's `max_stale`) ran out.
    pub expired: usize,
    /// Hosts that went past their TTL and entered their grace.
    pub newly_overdue: usize,
    /// Hosts newly held by the guard.
    pub newly_stale: usize,
    /// Final copies minted for peers: hosts whose newest heartbeat this node took went
    /// overdue (the gossip layer should push them now).
    pub reshipped: usize,
    /// Tombstones collected.
    pub tombstones_collected: usize,
    /// Whether the guard holds hosts after this sweep.
    pub guard_engaged: bool,
    /// Whether this sweep engaged or released the guard.
    pub guard_toggled: bool,
    /// Hosts lost in the guard's window (held, in grace, or dropped), for the log line.
    pub overdue: usize,
    /// The hosts `overdue` is a fraction of: live hosts and those dropped in the window.
    pub total: usize,
    /// Services whose host list changed.
    pub changes: Vec<Change>,
}

/// The guard's measure at a sweep (for metrics and the dashboard).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct GuardMeasure {
    /// Hosts lost in the window: held by the guard, in grace, or dropped for their TTL.
    pub lost: usize,
    /// Live hosts plus those dropped in the window.
    pub base: usize,
}

impl GuardMeasure {
    /// `lost / base`, 0 when the node holds nothing.
    pub fn fraction(&self) -> f64 {
        if self.base == 0 {
            0.0
        } else {
            self.lost as f64 / self.base as f64
        }
    }
}

/// What the sweep found for one due queue entry.
enum Due {
    /// Refreshed, still live or in grace, or a young tombstone: look again at this time.
    Later(Micros),
    /// TTL ran out and the host is live: it enters its grace.
    Overdue,
    /// Its grace ran out.
    GraceOver,
    /// Gone already, or dropped now.
    Done,
}

impl Registry {
    /// When a host in grace is dropped (unless the guard holds it): its deadline plus its
    /// grace, and, for a copy whose newest heartbeat another node took and that is not that
    /// node's final copy, a third of the TTL and `expiry_margin` more.
    pub(crate) fn grace_until(&self, entry: &Entry) -> Micros {
        let ttl = entry.record.ttl();
        let decided = entry.record.hb.node == self.config.node || entry.final_copy;
        let mut until = entry.record.deadline() + self.config.grace_for(ttl);
        if !decided {
            until += RegistryConfig::reship_after(ttl) + self.config.expiry_margin;
        }
        until
    }

    /// Expires what is due at `now`. Run it about once a second.
    pub fn sweep(&self, now: Micros) -> SweepReport {
        let mut report = SweepReport::default();
        let due = self.pop_due(now);
        let mut grace_over = Vec::new();
        let mut later = Vec::new();
        for key in due {
            match self.inspect(&key, now, &mut report) {
                Due::Later(at) => later.push((at, key)),
                Due::Overdue => match self.begin_grace(&key, &mut report) {
                    // Its grace ran out before this sweep looked (the node was stopped or the
                    // sweeper held): expired now, not a sweep later.
                    Some(at) if at <= now => grace_over.push(key),
                    Some(at) => later.push((at, key)),
                    None => {}
                },
                Due::GraceOver => grace_over.push(key),
                Due::Done => {}
            }
        }
        let measure = self.measure(now);
        let guard = self.config.expiry_guard;
        let engaged =
            guard > 0.0 && measure.base >= 10 && measure.lost as f64 > guard * measure.base as f64;
        report.overdue = measure.lost;
        report.total = measure.base;
        if engaged {
            // Copied, not drained: `transition` removes each key as it is held. Hosts whose
            // grace ran out have no queue entry left: they get one at their `max_stale`.
            let unqueued: HashSet<HostKey> = grace_over.into_iter().collect();
            let in_grace: Vec<HostKey> = self.grace_keys.lock().iter().cloned().collect();
            for key in in_grace {
                if let Some(at) = self.hold(&key) {
                    report.newly_stale += 1;
                    if unqueued.contains(&key) {
                        later.push((at, key));
                    }
                }
            }
        } else {
            for key in grace_over {
                self.drop_host(&key, now, true, &mut report);
            }
            // Released: what the guard held goes back to a grace, and is dropped if it does
            // not heartbeat within it. Copied, not drained, as above.
            let held: Vec<HostKey> = self.stale_keys.lock().iter().cloned().collect();
            for key in held {
                if let Some(at) = self.release(&key, now) {
                    later.push((at, key));
                }
            }
        }
        report.guard_engaged = engaged;
        report.guard_toggled = self.guard_engaged.swap(engaged, Ordering::Relaxed) != engaged;
        *self.guard_measure.lock() = measure;
        if !later.is_empty() {
            let mut queue = self.expiry.lock();
            for (at, key) in later {
                queue.push(Reverse((at, key)));
            }
        }
        super::coalesce(&mut report.changes);
        self.forget_origins(now);
        report
    }

    /// Hosts lost in the guard's window and the hosts they are a fraction of (see the module
    /// docs). Forgets losses older than the window.
    fn measure(&self, now: Micros) -> GuardMeasure {
        let dropped = {
            let mut losses = self.losses.lock();
            let since = now.saturating_sub(self.config.loss_window());
            while losses.front().is_some_and(|at| *at < since) {
                losses.pop_front();
            }
            losses.len()
        };
        let held = self.stale.load(Ordering::Relaxed) + self.grace.load(Ordering::Relaxed);
        GuardMeasure {
            lost: held + dropped,
            base: self.live.load(Ordering::Relaxed) + dropped,
        }
    }

    fn pop_due(&self, now: Micros) -> Vec<HostKey> {
        let mut queue = self.expiry.lock();
        let mut due = Vec::new();
        while queue.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            if let Some(Reverse((_, key))) = queue.pop() {
                due.push(key);
            }
        }
        due
    }

    fn inspect(&self, key: &HostKey, now: Micros, report: &mut SweepReport) -> Due {
        let Some(mut guard) = self.services.get_mut(&key.service) else {
            return Due::Done;
        };
        let svc = &mut *guard;
        let Some(entry) = svc.hosts.get(&(key.ip, key.port)) else {
            return Due::Done;
        };
        if entry.record.is_deleted() {
            let until = self.config.tombstone_until(&entry.record);
            if until > now {
                return Due::Later(until);
            }
            svc.hosts.remove(&(key.ip, key.port));
            self.transition(&mut svc.tally, key, None, Slot::Tombstone, Slot::Absent);
            report.tombstones_collected += 1;
            drop(guard);
            self.forget_if_empty(&key.service);
            return Due::Done;
        }
        match entry.slot() {
            Slot::Grace if entry.grace_until > now => Due::Later(entry.grace_until),
            Slot::Grace => Due::GraceOver,
            Slot::Live if entry.record.deadline() > now => Due::Later(entry.record.deadline()),
            Slot::Live => Due::Overdue,
            _ => {
                let until = entry.record.hb.ts + self.config.max_stale_for(entry.record.ttl());
                if until > now {
                    return Due::Later(until);
                }
                drop(guard);
                self.drop_host(key, now, false, report);
                Due::Done
            }
        }
    }

    /// Moves an overdue live host into its grace; returns when to look at it again. A host
    /// whose newest heartbeat this node took gets a new version, so that its final copy
    /// reaches every peer, which then drops it on the same deadline as this node.
    fn begin_grace(&self, key: &HostKey, report: &mut SweepReport) -> Option<Micros> {
        let mut svc = self.services.get_mut(&key.service)?;
        let svc = &mut *svc;
        let entry = svc.hosts.get_mut(&(key.ip, key.port))?;
        if entry.slot() != Slot::Live {
            return None;
        }
        if entry.record.hb.node == self.config.node {
            entry.version = self.mint();
            entry.shipped_ts = entry.record.hb.ts;
            note_version(&mut svc.max_seq, &entry.version);
            report.reshipped += 1;
        }
        entry.grace_until = self.grace_until(entry);
        let until = entry.grace_until;
        self.transition(&mut svc.tally, key, Some(entry), Slot::Live, Slot::Grace);
        report.newly_overdue += 1;
        Some(until)
    }

    /// Marks a host in grace as held by the guard; returns when to look at it again.
    fn hold(&self, key: &HostKey) -> Option<Micros> {
        let mut svc = self.services.get_mut(&key.service)?;
        let svc = &mut *svc;
        let entry = svc.hosts.get_mut(&(key.ip, key.port))?;
        if entry.slot() != Slot::Grace {
            return None;
        }
        self.transition(&mut svc.tally, key, Some(entry), Slot::Grace, Slot::Stale);
        let entry = svc.hosts.get(&(key.ip, key.port))?;
        Some(entry.record.hb.ts + self.config.max_stale_for(entry.record.ttl()))
    }

    /// Returns a host held by the guard to a grace, with when to look at it again: a fresh
    /// one (its grace again, from now), since hosts come back spread over their heartbeat
    /// interval and the guard releases before the last of them has. `None` when it is no
    /// longer held.
    fn release(&self, key: &HostKey, now: Micros) -> Option<Micros> {
        let mut svc = self.services.get_mut(&key.service)?;
        let svc = &mut *svc;
        let entry = svc.hosts.get_mut(&(key.ip, key.port))?;
        if entry.slot() != Slot::Stale {
            return None;
        }
        let fresh = now + self.config.grace_for(entry.record.ttl());
        entry.grace_until = entry.grace_until.max(fresh);
        let until = entry.grace_until;
        self.transition(&mut svc.tally, key, Some(entry), Slot::Stale, Slot::Grace);
        Some(until)
    }

    /// Drops a live host whose TTL has run out (checked again under the lock, since a
    /// heartbeat may have arrived in between). `only_overdue` (its grace ran out) keeps
    /// refreshed hosts, and makes the drop a decision that travels: the entry becomes an
    /// expiry tombstone (see [`expire`]), minted for peers. Otherwise (`--max-stale` ran out
    /// while the guard held it: this node's own doubt, not a decision) the entry is removed.
    fn drop_host(&self, key: &HostKey, now: Micros, only_overdue: bool, report: &mut SweepReport) {
        let Some(mut guard) = self.services.get_mut(&key.service) else {
            return;
        };
        let svc = &mut *guard;
        let Some(entry) = svc.hosts.get(&(key.ip, key.port)) else {
            return;
        };
        if entry.record.is_deleted() {
            return;
        }
        if only_overdue && entry.slot() == Slot::Live {
            // Refreshed since it was found overdue: it needs its place in the queue back.
            let deadline = entry.record.deadline();
            drop(guard);
            self.schedule(deadline, key.clone());
            return;
        }
        if only_overdue {
            let entry = svc
                .hosts
                .get_mut(&(key.ip, key.port))
                .expect("looked up above");
            let from = entry.slot();
            expire(&mut entry.record, &self.config.node);
            entry.version = self.mint();
            entry.shipped_ts = entry.record.hb.ts;
            entry.final_copy = false;
            note_version(&mut svc.max_seq, &entry.version);
            let until = self.config.tombstone_until(&entry.record);
            self.transition(&mut svc.tally, key, Some(entry), from, Slot::Tombstone);
            self.schedule(until, key.clone());
        } else {
            let entry = svc
                .hosts
                .remove(&(key.ip, key.port))
                .expect("looked up above");
            self.transition(&mut svc.tally, key, None, entry.slot(), Slot::Absent);
        }
        report.expired += 1;
        report.changes.push(Change {
            service: key.service.clone(),
            index: svc.routing_changed(),
        });
        drop(guard);
        self.losses.lock().push_back(now);
        self.forget_if_empty(&key.service);
    }
}

/// Turns a live record into the tombstone of its expiry, decided by `node`: stamped at the
/// host's deadline (`last_check_in + TTL`), naming the heartbeat that expired. A heartbeat
/// newer than the deadline beats it; every copy of the host stamped before it loses to it.
pub(crate) fn expire(record: &mut Record, node: &NodeId) {
    let stamp = Stamp {
        ts: record.deadline(),
        node: node.clone(),
    };
    record.expired = Some(std::mem::replace(&mut record.hb, stamp.clone()));
    record.beat = Beat::Deleted;
    if record.cleared.as_ref() < Some(&stamp) {
        record.cleared = Some(stamp);
    }
}
