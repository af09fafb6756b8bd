//! Delays between attempts: exponential backoff after failures and jitter on every period,
//! so that a fleet of hosts restarted together does not hit the registry in lockstep.
//!
//! Pure arithmetic plus one random draw; no sleeping here (the tasks sleep).

use std::time::Duration;

use rand::RngExt;

/// Exponential backoff: `min`, `2*min`, `4*min`, ... capped at `max`, back to `min` on
/// [`Backoff::reset`].
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the shortest delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `period` moved at random by up to `fraction` of itself in either direction
/// (`fraction` 0.1 gives 90%..110%).
pub(crate) fn jitter(period: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 || period.is_zero() {
        return period;
    }
    let fraction = fraction.min(1.0);
    let factor = rand::rng().random_range(1.0 - fraction..=1.0 + fraction);
    period.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let period = Duration::from_secs(10);
        for _ in 0..1000 {
            let d = jitter(period, 0.1);
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
        assert_eq!(jitter(period, 0.0), period);
    }
}
