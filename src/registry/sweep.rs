//! Expiry (SPEC 4.3): dropping hosts whose TTL ran out, and the expiry guard that holds them
//! when so many are overdue at once that this node, not the fleet, has probably lost contact.
//!
//! The sweep looks only at the entries of the expiry queue that are due, never at every host:
//! a host refreshed since it was queued is put back at its new deadline. When the last host
//! or tombstone of a service goes, the service goes with it (`Registry::forget_if_empty`).

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use super::clock::Micros;
use super::service::Slot;
use super::{Change, HostKey, Registry};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SweepReport {
    /// Hosts dropped because their TTL (or the guard's `max_stale`) ran out.
    pub expired: usize,
    /// Hosts newly held by the guard.
    pub newly_stale: usize,
    /// Tombstones collected.
    pub tombstones_collected: usize,
    /// Whether the guard holds hosts after this sweep.
    pub guard_engaged: bool,
    /// Whether this sweep engaged or released the guard.
    pub guard_toggled: bool,
    /// Overdue hosts and all hosts at this sweep, for the log line when the guard engages.
    pub overdue: usize,
    /// All live hosts at this sweep.
    pub total: usize,
    /// Services whose host list changed.
    pub changes: Vec<Change>,
}

/// What the sweep found for one due queue entry.
enum Due {
    /// Refreshed, still live, or a young tombstone: look again at this time.
    Later(Micros),
    /// TTL ran out and the host is not yet held.
    Overdue,
    /// Gone already, or dropped now.
    Done,
}

impl Registry {
    /// Expires what is due at `now`. Run it about once a second.
    pub fn sweep(&self, now: Micros) -> SweepReport {
        let mut report = SweepReport::default();
        let due = self.pop_due(now);
        let mut overdue = Vec::new();
        let mut later = Vec::new();
        for key in due {
            match self.inspect(&key, now, &mut report) {
                Due::Later(at) => later.push((at, key)),
                Due::Overdue => overdue.push(key),
                Due::Done => {}
            }
        }
        let total = self.live.load(Ordering::Relaxed);
        let held = self.stale.load(Ordering::Relaxed);
        let guard = self.config.expiry_guard;
        let engaged =
            guard > 0.0 && total >= 10 && (held + overdue.len()) as f64 > guard * total as f64;
        report.overdue = held + overdue.len();
        report.total = total;
        if engaged {
            for key in overdue {
                if let Some(at) = self.hold(&key) {
                    report.newly_stale += 1;
                    later.push((at, key));
                }
            }
        } else {
            // Copied, not drained: `transition` removes each key as its host goes, so the
            // set stays equal to the entries marked stale even if one is skipped.
            let held: Vec<HostKey> = self.stale_keys.lock().iter().cloned().collect();
            for key in overdue.into_iter().chain(held) {
                self.drop_host(&key, now, true, &mut report);
            }
        }
        report.guard_engaged = engaged;
        report.guard_toggled = self.guard_engaged.swap(engaged, Ordering::Relaxed) != engaged;
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
            let until = entry
                .record
                .hb
                .ts
                .saturating_add(self.config.tombstone_ttl());
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
        let deadline = entry.record.deadline();
        if deadline > now {
            return Due::Later(deadline);
        }
        if !entry.stale {
            return Due::Overdue;
        }
        let until = entry.record.hb.ts + self.config.max_stale_for(entry.record.ttl());
        if until > now {
            return Due::Later(until);
        }
        drop(guard);
        self.drop_host(key, now, false, report);
        Due::Done
    }

    /// Marks an overdue host as held by the guard; returns when to look at it again.
    fn hold(&self, key: &HostKey) -> Option<Micros> {
        let mut svc = self.services.get_mut(&key.service)?;
        let svc = &mut *svc;
        let entry = svc.hosts.get_mut(&(key.ip, key.port))?;
        if entry.slot() != Slot::Live {
            return None;
        }
        self.transition(&mut svc.tally, key, Some(entry), Slot::Live, Slot::Stale);
        let entry = svc.hosts.get(&(key.ip, key.port))?;
        Some(entry.record.hb.ts + self.config.max_stale_for(entry.record.ttl()))
    }

    /// Removes a live host whose TTL has run out (checked again under the lock, since a
    /// heartbeat may have arrived in between). `only_overdue` keeps refreshed hosts.
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
        if only_overdue && entry.record.deadline() > now {
            // Refreshed since it was found overdue: it needs its place in the queue back.
            let deadline = entry.record.deadline();
            drop(guard);
            self.schedule(deadline, key.clone());
            return;
        }
        let entry = svc
            .hosts
            .remove(&(key.ip, key.port))
            .expect("looked up above");
        self.transition(&mut svc.tally, key, None, entry.slot(), Slot::Absent);
        report.expired += 1;
        report.changes.push(Change {
            service: key.service.clone(),
            index: svc.routing_changed(),
        });
        drop(guard);
        self.forget_if_empty(&key.service);
    }
}
