//! One host's replicated state and the merge rules of SPEC 4.2.
//!
//! A record is a small state-based CRDT made of last-writer-wins registers:
//! - the heartbeat (`hb` stamp with the routing fields, or a tombstone),
//! - the operator's weight override, with its own stamp,
//! - `cleared`, the newest delete seen, which voids every override set before it.
//!
//! A tombstone is a delete or an **expiry**: a host whose TTL and grace ran out becomes a
//! tombstone stamped at its deadline (`last_check_in + TTL`) that names the heartbeat it
//! expired (`expired`), so that every node drops the host when one does and no older copy
//! brings it back. Which expiries a node accepts is the registry's rule (`replication.rs`);
//! the merge itself treats an expiry like any tombstone.
//!
//! [`Record::merge`] takes the newer value of each register, so merging is commutative,
//! associative and idempotent and every node converges to the same record whatever order
//! copies arrive in. This module knows nothing about services, expiry or replication order.

use std::sync::Arc;

use discovery_api::{HostStatus, RepoName, Revision, Weight};
use serde::{Deserialize, Serialize};

use super::clock::{Micros, NodeId, Stamp, SECOND};

/// What consumers route on: a change here moves the service's index and ETag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Routing {
    /// The running code's revision.
    pub revision: Revision,
    /// The repository, empty when absent.
    pub service_repo_name: RepoName,
    /// The tags as canonical JSON text (keys sorted), kept as text to stay small.
    pub tags: Box<str>,
    /// Up or draining.
    pub status: HostStatus,
}

/// The heartbeat register's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Beat {
    /// A live host: what it announced and for how long it counts.
    Live {
        /// The routing fields, shared between copies.
        routing: Arc<Routing>,
        /// Time to live in seconds, already clamped.
        ttl: u32,
    },
    /// A delete. A tombstone record always carries `cleared` equal to its `hb`.
    Deleted,
}

/// A replication identity: the `seq`-th write minted by one incarnation of a node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    /// Its incarnation (start time), so a restarted node's counter never collides.
    pub generation: u64,
}

/// Where a record's current content was minted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The minting node incarnation.
    pub origin: Arc<Origin>,
    /// The origin's write counter: 1 for its first write, one more for each.
    pub seq: u64,
}

/// One host key's replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The newest heartbeat or delete: `hb.ts` is the host's `last_check_in`.
    pub hb: Stamp,
    /// What that heartbeat said.
    pub beat: Beat,
    /// The operator's weight override and when it was set.
    pub weight: Option<(Weight, Stamp)>,
    /// The newest delete of this key; overrides older than it do not apply.
    pub cleared: Option<Stamp>,
    /// For a tombstone left by expiry: the heartbeat that expired (`hb` is then its deadline,
    /// stamped by the node that expired it). Part of the heartbeat register: it travels and
    /// is replaced with `hb`. Absent on the wire otherwise, and ignored by nodes that predate
    /// it (they take the expiry for a delete stamped at the deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<Stamp>,
}

/// How a merge changed the local record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Nothing new.
    Unchanged,
    /// Only `last_check_in` or the TTL moved.
    Refreshed,
    /// Something consumers route on changed (or the host appeared or went).
    Routing,
}

impl Record {
    /// The live routing fields, or `None` for a tombstone.
    pub fn routing(&self) -> Option<&Arc<Routing>> {
        match &self.beat {
            Beat::Live { routing, .. } => Some(routing),
            Beat::Deleted => None,
        }
    }

    /// Whether this is a tombstone.
    pub fn is_deleted(&self) -> bool {
        matches!(self.beat, Beat::Deleted)
    }

    /// The TTL in seconds (0 for a tombstone).
    pub fn ttl(&self) -> u32 {
        match self.beat {
            Beat::Live { ttl, .. } => ttl,
            Beat::Deleted => 0,
        }
    }

    /// The heartbeat register's order: newest stamp first; at an equal stamp a tombstone
    /// beats a live copy (an expiry is stamped at a deadline, which a heartbeat could share)
    /// and an expiry beats a delete, so that merging stays order-independent.
    fn beat_rank(&self) -> (&Stamp, bool, Option<&Stamp>) {
        (&self.hb, self.is_deleted(), self.expired.as_ref())
    }

    /// When the host's TTL runs out.
    pub fn deadline(&self) -> Micros {
        self.hb.ts.saturating_add(u64::from(self.ttl()) * SECOND)
    }

    /// The override in force: set after the newest delete.
    pub fn weight_override(&self) -> Option<Weight> {
        let (weight, set_at) = self.weight.as_ref()?;
        match &self.cleared {
            Some(cleared) if set_at <= cleared => None,
            _ => Some(*weight),
        }
    }

    /// What a consumer routes on, for change detection: routing fields and effective weight.
    fn routing_view(&self) -> (Option<&Routing>, Option<Weight>) {
        (self.routing().map(|r| &**r), self.weight_override())
    }

    /// Merges another copy of the same key into this one, register by register.
    pub fn merge(&mut self, other: &Record) -> Merged {
        let before_routing = (self.routing().cloned(), self.weight_override());
        let mut changed = false;
        if other.beat_rank() > self.beat_rank() {
            self.hb = other.hb.clone();
            if self.beat != other.beat {
                self.beat = other.beat.clone();
            }
            self.expired = other.expired.clone();
            changed = true;
        }
        if other.weight.as_ref().map(|w| &w.1) > self.weight.as_ref().map(|w| &w.1) {
            self.weight = other.weight.clone();
            changed = true;
        }
        if other.cleared > self.cleared {
            self.cleared = other.cleared.clone();
            changed = true;
        }
        if !changed {
            return Merged::Unchanged;
        }
        let after = self.routing_view();
        if (before_routing.0.as_deref(), before_routing.1) != after {
            Merged::Routing
        } else {
            Merged::Refreshed
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn live(ts: Micros, node: &str, revision: &str) -> Record {
        Record {
            hb: Stamp {
                ts,
                node: NodeId::new(node),
            },
            beat: Beat::Live {
                routing: Arc::new(Routing {
                    revision: Revision::parse(revision).unwrap(),
                    service_repo_name: RepoName::empty(),
                    tags: "{}".into(),
                    status: HostStatus::Up,
                }),
                ttl: 60,
            },
            weight: None,
            cleared: None,
            expired: None,
        }
    }

    pub(crate) fn deleted(ts: Micros, node: &str) -> Record {
        Record {
            hb: Stamp {
                ts,
                node: NodeId::new(node),
            },
            beat: Beat::Deleted,
            weight: None,
            cleared: Some(Stamp {
                ts,
                node: NodeId::new(node),
            }),
            expired: None,
        }
    }

    fn weighted(mut r: Record, w: i64, ts: Micros, node: &str) -> Record {
        r.weight = Some((
            Weight::new(w).unwrap(),
            Stamp {
                ts,
                node: NodeId::new(node),
            },
        ));
        r
    }

    #[test]
    fn newest_heartbeat_wins_and_ties_go_to_the_larger_node_id() {
        let mut a = live(10, "a", "r1");
        assert_eq!(a.merge(&live(20, "b", "r2")), Merged::Routing);
        assert_eq!(a.routing().unwrap().revision.as_str(), "r2");
        assert_eq!(a.merge(&live(15, "c", "r3")), Merged::Unchanged);
        assert_eq!(a.merge(&live(20, "c", "r2")), Merged::Refreshed);
        assert_eq!(a.hb.node.as_str(), "c");
    }

    #[test]
    fn deleted_host_is_not_resurrected_by_older_heartbeat() {
        let mut r = live(10, "a", "r1");
        assert_eq!(r.merge(&deleted(20, "b")), Merged::Routing);
        assert_eq!(r.merge(&live(15, "a", "r1")), Merged::Unchanged);
        assert!(r.is_deleted());
        assert_eq!(r.merge(&live(25, "a", "r1")), Merged::Routing);
        assert!(!r.is_deleted());
    }

    #[test]
    fn overrides_survive_heartbeats_but_not_deletes() {
        let mut r = weighted(live(10, "a", "r"), 40, 11, "x");
        assert_eq!(r.merge(&live(12, "a", "r")), Merged::Refreshed);
        assert_eq!(r.weight_override().unwrap().get(), 40);
        r.merge(&deleted(13, "a"));
        r.merge(&live(14, "a", "r"));
        assert_eq!(r.weight_override(), None);
    }

    #[test]
    fn merge_order_does_not_matter() {
        let copies = [
            weighted(live(10, "a", "r1"), 5, 30, "a"),
            deleted(20, "b"),
            live(25, "c", "r2"),
            weighted(live(5, "a", "r0"), 9, 40, "b"),
        ];
        let mut results = Vec::new();
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let mut r = copies[perm[0]].clone();
            for &i in &perm[1..] {
                r.merge(&copies[i]);
                r.merge(&copies[i]);
            }
            results.push(r);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:#?}");
        assert_eq!(results[0].weight_override(), Some(Weight::new(9).unwrap()));
    }
}
