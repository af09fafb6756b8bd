//! The shrink guard: the rule that keeps a [`crate::HostWatcher`] from replacing a good
//! host list by an empty or drastically smaller one on a single answer.
//!
//! An empty list is an outage, while a list a few seconds too long costs little (SPEC 1),
//! so a sudden drop is believed only once the registry has kept saying it for a grace
//! period. Pure logic: `now` is an argument, nothing here sleeps or reads a clock.

use std::time::{Duration, Instant};

/// When a new host list counts as a drastic shrink, and how long it must be confirmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShrinkPolicy {
    /// A list shorter than this fraction of the current non-empty list is a drastic
    /// shrink; an empty list always is. Default 0.5: losing more than half the hosts at
    /// once is held back, losing a few is not.
    pub min_ratio: f64,
    /// How long drastically smaller answers must keep coming before one replaces the
    /// current list. Default 60 s: long enough to ride out a registry node that restarted
    /// empty, short enough that a real scale-down is followed within a minute. Zero turns
    /// the guard off.
    pub grace: Duration,
}

impl Default for ShrinkPolicy {
    fn default() -> Self {
        ShrinkPolicy {
            min_ratio: 0.5,
            grace: Duration::from_secs(60),
        }
    }
}

impl ShrinkPolicy {
    /// Whether going from `current` hosts to `candidate` hosts is a drastic shrink.
    pub(crate) fn is_drastic(&self, current: usize, candidate: usize) -> bool {
        current > 0 && (candidate == 0 || (candidate as f64) < current as f64 * self.min_ratio)
    }
}

/// What to do with a new answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Replace the current list.
    Accept,
    /// Keep the current list; the smaller answer has been seen since `since` and will be
    /// taken if it still holds at `until`.
    HoldBack { since: Instant, until: Instant },
}

/// The guard's memory: since when drastically smaller answers have been coming.
#[derive(Debug, Clone)]
pub(crate) struct ShrinkGuard {
    policy: ShrinkPolicy,
    shrinking_since: Option<Instant>,
}

impl ShrinkGuard {
    pub(crate) fn new(policy: ShrinkPolicy) -> Self {
        ShrinkGuard {
            policy,
            shrinking_since: None,
        }
    }

    /// Judges an answer of `candidate` hosts against the current list of `current` hosts,
    /// seen at `now`. Any answer that is not a drastic shrink ends a pending one.
    pub(crate) fn judge(&mut self, current: usize, candidate: usize, now: Instant) -> Verdict {
        if !self.policy.is_drastic(current, candidate) {
            self.shrinking_since = None;
            return Verdict::Accept;
        }
        let since = *self.shrinking_since.get_or_insert(now);
        let until = since + self.policy.grace;
        if now >= until {
            self.shrinking_since = None;
            Verdict::Accept
        } else {
            Verdict::HoldBack { since, until }
        }
    }

    /// Forgets a pending shrink, when the list was replaced by other means (a cache load).
    pub(crate) fn reset(&mut self) {
        self.shrinking_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(grace_secs: u64) -> ShrinkGuard {
        ShrinkGuard::new(ShrinkPolicy {
            min_ratio: 0.5,
            grace: Duration::from_secs(grace_secs),
        })
    }

    #[test]
    fn growth_and_small_losses_are_taken_at_once() {
        let mut g = guard(60);
        let t0 = Instant::now();
        assert_eq!(g.judge(10, 12, t0), Verdict::Accept);
        assert_eq!(g.judge(10, 10, t0), Verdict::Accept);
        assert_eq!(
            g.judge(10, 5, t0),
            Verdict::Accept,
            "exactly half is not drastic"
        );
        assert_eq!(g.judge(2, 1, t0), Verdict::Accept);
    }

    #[test]
    fn an_empty_list_starts_from_anything() {
        let mut g = guard(60);
        assert_eq!(g.judge(0, 0, Instant::now()), Verdict::Accept);
        assert_eq!(g.judge(0, 3, Instant::now()), Verdict::Accept);
    }

    #[test]
    fn drop_to_zero_is_held_back_until_confirmed_for_the_grace_period() {
        let mut g = guard(60);
        let t0 = Instant::now();
        let held = Verdict::HoldBack {
            since: t0,
            until: t0 + Duration::from_secs(60),
        };
        assert_eq!(g.judge(10, 0, t0), held);
        assert_eq!(g.judge(10, 0, t0 + Duration::from_secs(59)), held);
        assert_eq!(
            g.judge(10, 1, t0 + Duration::from_secs(60)),
            Verdict::Accept
        );
        // Taken: a later drop is judged afresh.
        let t1 = t0 + Duration::from_secs(61);
        assert!(matches!(g.judge(1, 0, t1), Verdict::HoldBack { since, .. } if since == t1));
    }

    #[test]
    fn a_normal_answer_in_between_restarts_the_grace_period() {
        let mut g = guard(60);
        let t0 = Instant::now();
        assert!(matches!(g.judge(10, 2, t0), Verdict::HoldBack { .. }));
        assert_eq!(
            g.judge(10, 10, t0 + Duration::from_secs(30)),
            Verdict::Accept
        );
        let t2 = t0 + Duration::from_secs(70);
        assert_eq!(
            g.judge(10, 2, t2),
            Verdict::HoldBack {
                since: t2,
                until: t2 + Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn zero_grace_turns_the_guard_off() {
        let mut g = guard(0);
        assert_eq!(g.judge(10, 0, Instant::now()), Verdict::Accept);
    }

    #[test]
    fn reset_forgets_a_pending_shrink() {
        let mut g = guard(60);
        let t0 = Instant::now();
        assert!(matches!(g.judge(10, 0, t0), Verdict::HoldBack { .. }));
        g.reset();
        let t1 = t0 + Duration::from_secs(61);
        assert!(matches!(g.judge(10, 0, t1), Verdict::HoldBack { since, .. } if since == t1));
    }
}
