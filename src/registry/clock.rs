//! Timestamps: microseconds since the Unix epoch, issued by a hybrid logical clock.
//!
//! The clock never issues a timestamp older than one it has issued or seen from a peer, so a
//! heartbeat taken here always beats every copy of the same host this node already knows,
//! even when a peer's wall clock runs ahead. The core never reads the wall clock itself: the
//! caller passes `now`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch.
pub type Micros = u64;

/// One second in [`Micros`].
pub const SECOND: Micros = 1_000_000;

/// A node's name, used to break timestamp ties and to name replication origins.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Wraps a node name.
    pub fn new(name: &str) -> Self {
        NodeId(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// When and where a write was taken. Ordered by time, ties broken by node id, so every node
/// picks the same winner for the same pair of writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Hybrid logical time in microseconds.
    pub ts: Micros,
    /// The node that took the write.
    pub node: NodeId,
}

/// A hybrid logical clock: wall time, pushed forward past every timestamp seen.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// A timestamp for a new write: `now`, or one past the newest timestamp seen if that is
    /// later. Unique on this node.
    pub fn tick(&self, now: Micros) -> Micros {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // Saturating: the skew bound keeps `last` near the wall clock, but a clock that
            // cannot move must still not panic.
            let next = now.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a timestamp seen from a peer. Only stamps the registry accepted may come
    /// here: the bound on how far ahead of `now` they may be (`--max-clock-skew`) is what
    /// keeps this clock near the wall clock.
    pub fn observe(&self, ts: Micros) {
        self.last.fetch_max(ts, Ordering::Relaxed);
    }

    /// The newest timestamp issued or seen.
    #[cfg(test)]
    pub fn last(&self) -> Micros {
        self.last.load(Ordering::Relaxed)
    }
}

/// The last microsecond RFC 3339 can write with a four-digit year: 9999-12-31T23:59:59.999999Z.
pub const LATEST_RFC3339: Micros = 253_402_300_799_999_999;

/// Formats a timestamp as RFC 3339 UTC with microseconds, e.g. `2026-11-28T12:00:00.123456Z`.
/// Never panics: a timestamp past year 9999 (which the skew bound keeps out, but a renderer
/// must not trust that) is written as the last representable instant.
pub fn rfc3339(ts: Micros) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(ts.min(LATEST_RFC3339));
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_never_goes_back_and_follows_peers() {
        let c = Hlc::default();
        assert_eq!(c.tick(100), 100);
        assert_eq!(c.tick(100), 101);
        assert_eq!(c.tick(50), 102);
        c.observe(1_000);
        assert_eq!(c.tick(500), 1_001);
        assert_eq!(c.tick(2_000), 2_000);
    }

    #[test]
    fn stamps_order_by_time_then_node() {
        let a = Stamp {
            ts: 5,
            node: NodeId::new("b"),
        };
        let b = Stamp {
            ts: 5,
            node: NodeId::new("a"),
        };
        let c = Stamp {
            ts: 6,
            node: NodeId::new("a"),
        };
        assert!(a > b && c > a);
    }

    #[test]
    fn any_timestamp_renders_and_past_year_9999_is_capped() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(LATEST_RFC3339), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(LATEST_RFC3339 + 1), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn a_clock_at_its_end_does_not_overflow() {
        let c = Hlc::default();
        c.observe(u64::MAX);
        assert_eq!(c.tick(5), u64::MAX);
    }

    #[test]
    fn timestamps_print_with_microseconds() {
        assert_eq!(
            rfc3339(1_764_331_200_123_456),
            "2025-11-28T12:00:00.123456Z"
        );
    }
}
