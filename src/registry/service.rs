//! One service's hosts: the records, the change index and the prepared view.
//!
//! A `ServiceState` lives inside the registry's sharded map and is only touched under its
//! shard lock. It knows nothing about other services, the clock or replication peers; its
//! counters ([`Tally`]) are moved only by `Registry::transition`, which keeps them equal to
//! the registry-wide ones.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use discovery_api::{Registration, ServiceName};

use super::clock::Micros;
use super::record::{Origin, Record, Routing, Version};
use super::view::{self, ContentHasher, ServiceView};

/// A record with the local bookkeeping around it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub record: Record,
    /// Where its current content was minted.
    pub version: Version,
    /// `hb.ts` when `version` was minted: refreshes are shipped again only after a while.
    pub shipped_ts: Micros,
    /// Held past its TTL by the expiry guard. Set only by `Registry::transition`.
    pub stale: bool,
    /// Past its TTL and in its expiry grace (see `sweep.rs`). Set only by
    /// `Registry::transition`.
    pub grace: bool,
    /// While in grace: when the host is dropped unless the guard engages or it heartbeats.
    pub grace_until: Micros,
    /// This copy is the final state of a host that went overdue on the node that took its
    /// newest heartbeat (it arrived already overdue, minted by that node): this node drops it
    /// on the same deadline as that node, without the longer wait of a copy that may be old.
    pub final_copy: bool,
}

/// A host entry's state as the counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// No entry.
    Absent,
    /// A delete, kept so that older copies cannot bring the host back.
    Tombstone,
    /// A live host.
    Live,
    /// A live host past its TTL, held by the expiry guard.
    Stale,
    /// A live host past its TTL, still served while its expiry grace runs (the guard measures
    /// the loss before anything is dropped).
    Grace,
}

impl Slot {
    /// Whether a host in this state is served (and counts against `--max-hosts`).
    pub fn is_live(self) -> bool {
        matches!(self, Slot::Live | Slot::Stale | Slot::Grace)
    }
}

impl Entry {
    /// Where this entry stands.
    pub fn slot(&self) -> Slot {
        match (self.record.is_deleted(), self.stale, self.grace) {
            (true, _, _) => Slot::Tombstone,
            (false, true, _) => Slot::Stale,
            (false, false, true) => Slot::Grace,
            (false, false, false) => Slot::Live,
        }
    }
}

/// A service's host counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Live hosts (stale ones included, tombstones excluded).
    pub live: usize,
    /// Live hosts held by the expiry guard.
    pub stale: usize,
    /// Live hosts past their TTL, in their expiry grace.
    pub grace: usize,
}

/// Raises a service's highest seq for the version's origin.
pub(crate) fn note_version(max_seq: &mut HashMap<Arc<Origin>, u64>, version: &Version) {
    let max = max_seq.entry(version.origin.clone()).or_insert(0);
    *max = (*max).max(version.seq);
}

/// The routing fields of a heartbeat. The revision and repository name are shared with an
/// equal one among `held` (the host's previous fields, the service's most recent ones): the
/// hosts of a service run the same few revisions, and one allocation per host for each of
/// them was a sixth of a host's memory.
pub(crate) fn routing(
    reg: &Registration,
    tags: Box<str>,
    held: [Option<&Routing>; 2],
) -> Arc<Routing> {
    let held = held.into_iter().flatten();
    let revision = held
        .clone()
        .find(|r| r.revision == reg.revision)
        .map_or(&reg.revision, |r| &r.revision);
    let service_repo_name = held
        .clone()
        .find(|r| r.service_repo_name == reg.service_repo_name)
        .map_or(&reg.service_repo_name, |r| &r.service_repo_name);
    Arc::new(Routing {
        revision: revision.clone(),
        service_repo_name: service_repo_name.clone(),
        tags,
        status: reg.status,
    })
}

/// The hosts of one service, live ones and tombstones, by `(ip, port)`.
#[derive(Debug)]
pub(crate) struct ServiceState {
    pub name: ServiceName,
    pub hosts: BTreeMap<(IpAddr, u16), Entry>,
    /// Live and stale hosts.
    pub tally: Tally,
    /// Grows with every routing change. Starts at the registry's floor (see
    /// `Registry::index_floor`), so it stays monotonic when the service is removed and
    /// comes back.
    pub index: u64,
    /// The routing content changed since `view` was built.
    pub routing_dirty: bool,
    /// Only `last_check_in` values changed since `view` was built.
    pub refresh_dirty: bool,
    pub view: Arc<ServiceView>,
    /// The highest seq held per origin, to skip this service quickly when a peer has it all.
    pub max_seq: HashMap<Arc<Origin>, u64>,
    /// The routing fields a heartbeat wrote last, whose strings new hosts share ([`routing`]).
    pub recent: Option<Arc<Routing>>,
}

impl ServiceState {
    /// An empty service starting at `index` (the registry's floor: no lower than any index
    /// this name showed before).
    pub fn new(name: ServiceName, env: &str, index: u64) -> Self {
        ServiceState {
            view: Arc::new(ServiceView {
                index,
                ..ServiceView::empty(&name, env)
            }),
            name,
            hosts: BTreeMap::new(),
            tally: Tally::default(),
            index,
            routing_dirty: false,
            refresh_dirty: false,
            max_seq: HashMap::new(),
            recent: None,
        }
    }

    /// Makes routing fields from a peer share their revision and repository strings with
    /// this service's most recent ones when equal, as local heartbeats do ([`routing`]).
    pub fn share_strings(&mut self, routing: &mut Arc<Routing>) {
        if let Some(recent) = &self.recent {
            let revision = routing.revision == recent.revision;
            let repo = routing.service_repo_name == recent.service_repo_name;
            if revision || repo {
                let mut shared = Routing::clone(routing);
                if revision {
                    shared.revision = recent.revision.clone();
                }
                if repo {
                    shared.service_repo_name = recent.service_repo_name.clone();
                }
                *routing = Arc::new(shared);
            }
        }
        self.recent = Some(routing.clone());
    }

    /// Records that something consumers route on changed.
    pub fn routing_changed(&mut self) -> u64 {
        self.index += 1;
        self.routing_dirty = true;
        self.index
    }

    /// Whether the view must be rebuilt before it is served at `now`.
    pub fn needs_rebuild(&self, now: Micros) -> bool {
        self.routing_dirty
            || (self.refresh_dirty
                && now.saturating_sub(self.view.built_at) >= super::clock::SECOND)
    }

    /// Renders the host list body.
    pub fn rebuild(&mut self, env: &str, now: Micros) {
        let mut body = Vec::with_capacity(64 + self.tally.live * 260);
        view::open_list(&mut body, "service", self.name.as_str(), env);
        let mut hasher = ContentHasher::default();
        let mut first = true;
        for ((ip, port), entry) in &self.hosts {
            if entry.record.is_deleted() {
                continue;
            }
            if !first {
                body.push(b',');
            }
            first = false;
            view::write_host(&mut body, self.name.as_str(), *ip, *port, &entry.record);
            hasher.host(*ip, *port, &entry.record);
        }
        view::close_list(&mut body);
        let content_hash = hasher.finish();
        self.view = Arc::new(ServiceView {
            index: self.index,
            etag: view::etag(content_hash),
            content_hash,
            body: body.into(),
            built_at: now,
            hosts: self.tally.live,
        });
        self.routing_dirty = false;
        self.refresh_dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use discovery_api::{HostStatus, Port, RepoName, Revision, Tags};

    use super::*;

    fn reg(revision: &str, repo: &str) -> Registration {
        Registration {
            ip: None,
            port: Port::new(80).unwrap(),
            revision: Revision::parse(revision).unwrap(),
            service_repo_name: RepoName::parse(repo).unwrap(),
            tags: Tags::default(),
            ttl: None,
            status: HostStatus::Up,
            auto_ip: false,
        }
    }

    #[test]
    fn equal_revision_and_repo_strings_are_shared_and_different_ones_kept() {
        let first = routing(&reg("4f2a9c1", "payments"), "{}".into(), [None, None]);
        let same = routing(
            &reg("4f2a9c1", "payments"),
            "{}".into(),
            [None, Some(&*first)],
        );
        assert_eq!(
            same.revision.as_str().as_ptr(),
            first.revision.as_str().as_ptr()
        );
        let repo_ptr = |r: &Routing| r.service_repo_name.as_str().as_ptr();
        assert_eq!(repo_ptr(&same), repo_ptr(&first));
        let deploy = routing(
            &reg("77e01b3", "payments"),
            "{}".into(),
            [Some(&*first), None],
        );
        assert_eq!(deploy.revision.as_str(), "77e01b3");
        assert_eq!(repo_ptr(&deploy), repo_ptr(&first));
    }
}
