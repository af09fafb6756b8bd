//! At most one log line per interval for an event that a client can cause at will (a request
//! refused by a limit): one line per refusal would let any client flood the log, and the
//! metrics count every one anyway.

use std::sync::atomic::{AtomicU64, Ordering};

/// When a throttled line was last logged, in seconds since the epoch.
pub(crate) struct Throttle(AtomicU64);

impl Throttle {
    /// Never logged yet: the first event logs.
    pub(crate) const fn new() -> Self {
        Throttle(AtomicU64::new(0))
    }

    /// Whether a line may be logged at `now_secs`: none was in the `every_secs` before.
    /// Threads that race for one slot agree on one winner.
    pub(crate) fn allow(&self, now_secs: u64, every_secs: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now_secs >= last.saturating_add(every_secs)
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
        assert!(throttle.allow(1_000, 10));
        assert!(!throttle.allow(1_000, 10));
        assert!(!throttle.allow(1_009, 10));
        assert!(throttle.allow(1_010, 10));
        assert!(!throttle.allow(1_011, 10));
    }
}
