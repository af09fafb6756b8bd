//! Noticing that this node itself was stalled: a SIGSTOP, a VM pause, a clock jump. While a
//! node is stopped, its peers go on taking heartbeats and deletes; when it resumes, its own
//! copies are old, and its sweeper would find hosts overdue only because the node stopped.
//!
//! The sweeper ticks every 500 ms. A gap between ticks of more than `threshold` (two seconds
//! or three gossip intervals, whichever is longer) is a stall; it is noticed by the first to
//! look, the sweeper's next tick or a read, so that no read is served from the old state
//! between the resume and the sweeper's tick. Then:
//! - with peers: the node **re-syncs**, as after a restart: not ready (host lists and
//!   `/readyz` answer 503 with `Retry-After`) until an exchange with a ready peer *started
//!   after the stall* completes (the sweeper then sweeps once and ends the re-sync, so no
//!   read sees a copy whose grace ran out while the node was stopped), or `resync_bound`
//!   passes; it expires nothing meanwhile;
//! - alone: reads keep serving, and expiry is suspended for `hold` so that hosts have time
//!   to heartbeat again.
//!
//! Pure: time is an argument (the caller reads the clock), so tests drive it directly. Owns
//! no registry state and does no IO; `NodeState` logs and counts what it reports.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::registry::{Micros, SECOND};

/// The last tick and the state of a re-sync or hold, in atomics: read by every request,
/// written by the sweeper.
#[derive(Debug)]
pub(crate) struct StallWatch {
    threshold: Micros,
    resync_bound: Micros,
    hold: Micros,
    /// The last tick, 0 before the first.
    last_tick: AtomicU64,
    /// When the stall being re-synced from was noticed; 0 when not re-syncing.
    resync_since: AtomicU64,
    /// When the last stall with peers was noticed (kept after the re-sync ends): writes are
    /// refused until `resync_bound` after it, see [`StallWatch::writes_held`].
    noticed_at: AtomicU64,
    /// Expiry is suspended until this time (alone, after a stall).
    hold_until: AtomicU64,
    /// When the newest exchange with a ready peer that can end the re-sync started; 0 when
    /// none is waiting. The sweeper ends the re-sync, after sweeping (see
    /// [`StallWatch::synced_pending`]).
    sync_pending: AtomicU64,
}

/// A stall, as noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stall {
    /// How long the node's ticks stopped.
    pub(crate) gap: Micros,
    /// The node re-syncs with a peer (it has peers) rather than only holding expiry.
    pub(crate) resync: bool,
}

impl StallWatch {
    /// A watch for a node gossiping every `gossip_interval` (micros); `hold` is how long a
    /// node alone suspends expiry after a stall.
    pub(crate) fn new(gossip_interval: Micros, hold: Micros) -> Self {
        StallWatch {
            threshold: (3 * gossip_interval).max(2 * SECOND),
            resync_bound: (5 * gossip_interval).max(3 * SECOND),
            hold,
            last_tick: AtomicU64::new(0),
            resync_since: AtomicU64::new(0),
            noticed_at: AtomicU64::new(0),
            hold_until: AtomicU64::new(0),
            sync_pending: AtomicU64::new(0),
        }
    }

    /// The longest a re-sync keeps reads waiting when no ready peer answers.
    pub(crate) fn resync_bound(&self) -> Micros {
        self.resync_bound
    }

    /// Looks for a stall at `now` without ticking; returns it if this call noticed it.
    /// `clustered` says whether the node knows peers to re-sync with (asked only on a stall).
    pub(crate) fn look(&self, now: Micros, clustered: impl FnOnce() -> bool) -> Option<Stall> {
        let last = self.last_tick.load(Ordering::Relaxed);
        let gap = now.saturating_sub(last);
        if last == 0 || gap <= self.threshold {
            return None;
        }
        // The re-sync (or hold) is set before the tick moves forward, so no reader sees a
        // fresh tick without it; whoever then moves the tick reports the stall, once.
        let clustered = clustered();
        if clustered {
            self.noticed_at.fetch_max(now, Ordering::AcqRel);
            self.resync_since.fetch_max(now, Ordering::AcqRel);
        } else {
            self.hold_until
                .fetch_max(now.saturating_add(self.hold), Ordering::Relaxed);
        }
        if self
            .last_tick
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        Some(Stall {
            gap,
            resync: clustered,
        })
    }

    /// The sweeper's tick: notices a stall, then records the tick.
    pub(crate) fn tick(&self, now: Micros, clustered: impl FnOnce() -> bool) -> Option<Stall> {
        let stall = self.look(now, clustered);
        self.last_tick.fetch_max(now, Ordering::Relaxed);
        stall
    }

    /// Whether reads must wait for a re-sync at `now` (within its bound).
    pub(crate) fn resyncing(&self, now: Micros) -> bool {
        let since = self.resync_since.load(Ordering::Acquire);
        since != 0 && now < since.saturating_add(self.resync_bound)
    }

    /// Whether writes must be refused at `now`: for `resync_bound` after a stall with peers,
    /// however early the re-sync ends. Requests that waited in the node's sockets while it was
    /// stopped are read the moment it resumes, before or after the re-sync; a heartbeat among
    /// them may come from an agent that died meanwhile, and taken now it would bring that
    /// host back on every node for a TTL. Refused (503), the clients take their writes to
    /// another node.
    pub(crate) fn writes_held(&self, now: Micros) -> bool {
        let noticed = self.noticed_at.load(Ordering::Acquire);
        noticed != 0 && now < noticed.saturating_add(self.resync_bound)
    }

    /// Whether the sweeper must expire nothing at `now`: during a re-sync, or (alone) while
    /// expiry is held after a stall.
    pub(crate) fn expiry_held(&self, now: Micros) -> bool {
        self.resyncing(now) || now < self.hold_until.load(Ordering::Relaxed)
    }

    /// An exchange with a ready peer, started at `started`, completed during a re-sync that
    /// it can end (the stall was noticed before it started): keeps it for the sweeper, which
    /// sweeps what the re-sync did not refresh before it ends the re-sync, so that reads never
    /// see a copy the node kept only because it stopped (its peers may have dropped the
    /// host and forgotten the expiry while this node was frozen). Returns whether it kept it.
    pub(crate) fn sync_done(&self, started: Micros) -> bool {
        let since = self.resync_since.load(Ordering::Acquire);
        if since == 0 || started < since {
            return false;
        }
        self.sync_pending.fetch_max(started, Ordering::AcqRel);
        true
    }

    /// The start of the exchange that can end the re-sync, if one completed (taken once).
    pub(crate) fn synced_pending(&self) -> Option<Micros> {
        match self.sync_pending.swap(0, Ordering::AcqRel) {
            0 => None,
            started => Some(started),
        }
    }

    /// An exchange with a ready peer, started at `started`, completed: ends a re-sync noticed
    /// before it started. Returns whether it ended one.
    pub(crate) fn synced(&self, started: Micros) -> bool {
        let since = self.resync_since.load(Ordering::Acquire);
        since != 0
            && started >= since
            && self
                .resync_since
                .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Ends a re-sync whose bound has passed at `now`; returns whether it ended one.
    pub(crate) fn give_up(&self, now: Micros) -> bool {
        let since = self.resync_since.load(Ordering::Acquire);
        since != 0
            && now >= since.saturating_add(self.resync_bound)
            && self
                .resync_since
                .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_800_000_000 * SECOND;
    const TICK: Micros = 500_000;
    const CLUSTERED: fn() -> bool = || true;

    #[test]
    fn a_gap_in_the_ticks_is_a_stall_noticed_once_and_a_late_tick_is_not() {
        let w = StallWatch::new(SECOND, 30 * SECOND);
        assert_eq!(
            w.look(T0, CLUSTERED),
            None,
            "no tick yet: nothing to compare"
        );
        w.tick(T0, CLUSTERED);
        assert_eq!(w.tick(T0 + TICK, CLUSTERED), None);
        assert_eq!(
            w.tick(T0 + TICK + 1_900_000, CLUSTERED),
            None,
            "a late tick under 3 s"
        );
        let at = T0 + 20 * SECOND;
        // A read notices first; the sweeper's tick right after does not report it again.
        let stall = w.look(at, CLUSTERED).expect("noticed");
        assert_eq!(stall.gap, 20 * SECOND - TICK - 1_900_000);
        assert!(stall.resync);
        assert_eq!(w.tick(at + 1, CLUSTERED), None);
        assert!(w.resyncing(at + 1) && w.expiry_held(at + 1));
    }

    #[test]
    fn writes_are_held_for_the_resync_bound_after_a_stall_however_early_the_resync_ends() {
        let w = StallWatch::new(SECOND, 30 * SECOND);
        w.tick(T0, CLUSTERED);
        assert!(!w.writes_held(T0 + TICK));
        let at = T0 + 10 * SECOND;
        w.look(at, CLUSTERED).expect("stall");
        assert!(w.synced(at + 1));
        assert!(!w.resyncing(at + 2), "reads are served again");
        assert!(
            w.writes_held(at + 2),
            "writes that queued while stopped are not"
        );
        assert!(!w.writes_held(at + w.resync_bound()));
        // Alone, a node has nowhere else to send writes: it takes them.
        let alone = StallWatch::new(SECOND, 30 * SECOND);
        alone.tick(T0, || false);
        alone.look(at, || false).expect("stall");
        assert!(!alone.writes_held(at + 1));
    }

    #[test]
    fn a_resync_ends_with_an_exchange_started_after_the_stall_or_at_its_bound() {
        let w = StallWatch::new(SECOND, 30 * SECOND);
        w.tick(T0, CLUSTERED);
        let at = T0 + 10 * SECOND;
        w.tick(at, CLUSTERED).expect("stall");
        // An exchange started before the stall (its answer predates it) does not count.
        assert!(!w.synced(T0 + TICK));
        assert!(w.resyncing(at + SECOND));
        assert!(w.synced(at + 200_000));
        assert!(!w.resyncing(at + SECOND) && !w.expiry_held(at + SECOND));
        // Another stall, and no peer answers: the bound ends it.
        let at = at + 20 * SECOND;
        w.tick(at, CLUSTERED).expect("stall");
        assert!(w.resyncing(at + w.resync_bound() - 1));
        assert!(!w.give_up(at + w.resync_bound() - 1));
        assert!(!w.resyncing(at + w.resync_bound()));
        assert!(w.give_up(at + w.resync_bound()));
    }

    #[test]
    fn alone_a_stall_holds_expiry_for_a_while_and_never_stops_reads() {
        let w = StallWatch::new(SECOND, 30 * SECOND);
        w.tick(T0, || false);
        let at = T0 + 10 * SECOND;
        let stall = w.tick(at, || false).expect("stall");
        assert!(!stall.resync);
        assert!(!w.resyncing(at));
        assert!(w.expiry_held(at + 29 * SECOND));
        assert!(!w.expiry_held(at + 30 * SECOND));
    }
}
