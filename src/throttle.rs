//! At most one log line per interval for an event that a client or a peer can cause at will (a
//! request refused by a limit, a gossip message or records refused): one line per refusal
//! would let anyone flood the log, and the metrics count every one anyway. One policy for
//! every such line: [`EVERY_SECS`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds between two lines of one throttled kind.
pub(crate) const EVERY_SECS: u64 = 10;

/// When a throttled line was last logged, in seconds since the epoch.
#[derive(Debug)]
pub(crate) struct Throttle(AtomicU64);

impl Throttle {
    /// Never logged yet: the first event logs.
    pub(crate) const fn new() -> Self {
        Throttle(AtomicU64::new(0))
    }

    /// Whether a line may be logged at `now_secs`: none was in the [`EVERY_SECS`] before.
    /// Threads that race for one slot agree on one winner.
    pub(crate) fn allow(&self, now_secs: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now_secs >= last.saturating_add(EVERY_SECS)
            && self
                .0
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn one_line_per_interval_and_the_first_one_at_once() {
        let throttle = Throttle::new();
        assert!(throttle.allow(1_000));
        assert!(!throttle.allow(1_000));
        assert!(!throttle.allow(1_009));
        assert!(throttle.allow(1_010));
        assert!(!throttle.allow(1_011));
    }
}
