//! The xDS protocol of one stream, state of the world and incremental (delta), as plain
//! state machines: a request goes in and says what it acknowledged; `responses(source)`
//! says what to send now. No IO, no clock: `stream.rs` drives them, tests call them directly.
//!
//! The rules, from Envoy's `xds_protocol.rst` and gRPC's xDS client:
//! - every response carries a new nonce; a request quoting the latest nonce of its type
//!   acknowledges (ACK) or, with `error_detail`, rejects (NACK) that response; a request
//!   quoting an older nonce is stale and ignored (the client answers the newer response);
//! - a rejected version is logged by the caller and not sent again: only a new version is;
//! - subscriptions: the first request of a type with no names, or the name `*`, is a
//!   wildcard (every service with hosts); otherwise the names given;
//! - versions come from content: a SotW response's `version_info` hashes the names and
//!   versions it carries, so every node gives the same version for the same state, and a
//!   client that reconnects quoting the current version gets nothing new;
//! - removal: a service without live hosts has no `ClusterLoadAssignment`: absent from SotW
//!   responses and reported in `removed_resources` on delta streams (SPEC 3.2 leaves it out of
//!   REST answers too: Envoy keeps its endpoints when an assignment is absent). A `Listener`
//!   or `Cluster` once sent on a stream stays in its answers for the stream's life, wildcard
//!   or not: their absence is a deletion, which a registry that restarted empty, is partly
//!   synced, or saw a service's hosts expire must not order (see `resources`).
//!
//! Sending nothing while the node is not ready is the caller's decision (`responses` is
//! only asked when it is), so a node that lost its state never pushes it as empty lists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use discovery_api::ServiceName;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xxhash_rust::xxh3::Xxh3;

use super::resources::{Kind, Resource, Source};
use super::wire::{DeltaResponse, SotwResponse};

/// The most resource names one stream may subscribe to per type, and one request may name.
pub(crate) const MAX_NAMES: usize = 10_000;

/// What a request did about the last response of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// No nonce: a first request, or a subscription change before any response.
    Initial,
    /// Accepted the response with this version.
    Ack(String),
    /// Rejected the response with this version, for this reason.
    Nack { version: String, error: String },
    /// Quoted an older nonce: ignored.
    Stale,
    /// Quoted the latest nonce again, after an ACK or NACK of it: a subscription change, or
    /// a NACK repeated; nothing new about the response.
    Repeat,
}

/// A request the stream refuses: the stream ends with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("too many resource names: at most {MAX_NAMES} per type and stream")]
    TooManyNames,
}

/// What one stream subscribed to, for one type.
#[derive(Debug, Default, Clone)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
}

impl Subscription {
    /// Sets the subscription from a SotW request's names; returns whether it changed.
    fn replace(&mut self, kind: Kind, first: bool, names: &[String]) -> Result<bool, Refused> {
        if names.len() > MAX_NAMES {
            return Err(Refused::TooManyNames);
        }
        // Legacy wildcard: no names on the first request; Envoy keeps sending no names for
        // its wildcard listeners and clusters.
        let legacy = names.is_empty() && (first || (self.wildcard && kind != Kind::Endpoints));
        let wildcard = legacy || names.iter().any(|n| n == "*");
        if !first && wildcard == self.wildcard && names.iter().eq(self.names.iter()) {
            // The same names in the same (sorted) order, as an ACK repeats them: no parsing.
            return Ok(false);
        }
        let names: BTreeSet<String> = names.iter().filter(|n| servable(n)).cloned().collect();
        let changed = first || wildcard != self.wildcard || names != self.names;
        self.wildcard = wildcard;
        self.names = names;
        Ok(changed)
    }

    /// Applies a delta request's changes.
    fn change(
        &mut self,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
    ) -> Result<bool, Refused> {
        if subscribe.len() > MAX_NAMES || unsubscribe.len() > MAX_NAMES {
            return Err(Refused::TooManyNames);
        }
        let fresh = subscribe
            .iter()
            .filter(|n| servable(n) && !self.names.contains(*n))
            .count();
        if self.names.len() + fresh > MAX_NAMES {
            return Err(Refused::TooManyNames);
        }
        let mut changed = first;
        if first && subscribe.is_empty() {
            self.wildcard = true;
        }
        for name in subscribe {
            if name == "*" {
                changed |= !self.wildcard;
                self.wildcard = true;
            } else if servable(name) {
                changed |= self.names.insert(name.clone());
            }
        }
        for name in unsubscribe {
            if name == "*" {
                changed |= self.wildcard;
                self.wildcard = false;
            } else {
                changed |= self.names.remove(name);
            }
        }
        Ok(changed)
    }

    /// The resources it covers now, sorted by name, plus the listeners and clusters of `held`
    /// (what the client holds, sorted by name) that it still covers: those are never deleted
    /// (see the module docs), and are taken as held when the registry no longer has them.
    fn resources(&self, kind: Kind, source: &dyn Source, held: &[Arc<Resource>]) -> Resources {
        let all = if self.wildcard { source.all(kind) } else { &[] };
        let mut out = all.to_vec();
        let keep = kind != Kind::Endpoints;
        // Names come in order (a set, a sorted list), so each list is walked once.
        let (mut in_all, mut in_held) = (Cursor::new(all), Cursor::new(held));
        for name in &self.names {
            if in_all.find(name).is_some() {
                continue;
            }
            let held = if keep { in_held.find(name) } else { None };
            if let Some(r) = held.cloned().or_else(|| source.resource(kind, name)) {
                out.push(r);
            }
        }
        // Without a wildcard, the names cover what is held and came out in order, once each.
        if keep && self.wildcard {
            let mut in_all = Cursor::new(all);
            for r in held {
                if in_all.find(&r.name).is_none() {
                    out.push(r.clone());
                }
            }
        }
        if self.wildcard && out.len() > all.len() {
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out.dedup_by(|a, b| a.name == b.name);
        }
        Resources(out)
    }

    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    pub(crate) fn size(&self) -> usize {
        self.names.len()
    }
}

/// Whether a subscribed name can ever name a resource: a service name. Others (too long, bad
/// characters) are not kept: they would get nothing anyway, as a name we do not hold does,
/// and keeping them would let a stream hold up to a message's size per name.
fn servable(name: &str) -> bool {
    ServiceName::parse(name).is_ok()
}

/// The longest client-sent resource version a delta stream keeps (ours are 16 hex digits); a
/// longer one is forgotten, so the resource is simply sent.
const MAX_VERSION_LEN: usize = 64;

/// Resources sorted by name, each name once.
struct Resources(Vec<Arc<Resource>>);

impl Resources {
    /// A version for the set: equal sets give equal versions on every node.
    fn version(&self) -> String {
        let mut h = Xxh3::new();
        for r in &self.0 {
            h.update(r.name.as_bytes());
            h.update(&[0]);
            h.update(r.version.as_bytes());
            h.update(&[0]);
        }
        format!("{:016x}", h.digest())
    }
}

/// Finds names given in ascending order in a list sorted by name, walking it once.
struct Cursor<'a> {
    rest: &'a [Arc<Resource>],
}

impl<'a> Cursor<'a> {
    fn new(sorted: &'a [Arc<Resource>]) -> Self {
        Cursor { rest: sorted }
    }

    /// The resource named `name`, which sorts after every name asked before.
    fn find(&mut self, name: &str) -> Option<&'a Arc<Resource>> {
        let skip = self
            .rest
            .iter()
            .take_while(|r| r.name.as_str() < name)
            .count();
        self.rest = &self.rest[skip..];
        self.rest.first().filter(|r| r.name == name)
    }
}

/// Per-type bookkeeping common to both variants.
#[derive(Debug, Default)]
struct Sent {
    /// The nonce of the latest response of the type.
    nonce: String,
    /// The version in it.
    version: Option<String>,
    /// A version the client rejected: never sent again.
    nacked: Option<String>,
    /// Whether the latest response was ACKed or NACKed already.
    answered: bool,
}

impl Sent {
    /// What a request's nonce and error say about the latest response.
    fn reply(&mut self, nonce: &str, error: Option<String>) -> Reply {
        if nonce.is_empty() {
            return Reply::Initial;
        }
        if nonce != self.nonce {
            return Reply::Stale;
        }
        if self.answered {
            return Reply::Repeat;
        }
        self.answered = true;
        let version = self.version.clone().unwrap_or_default();
        match error {
            Some(error) => {
                self.nacked = Some(version.clone());
                Reply::Nack { version, error }
            }
            None => Reply::Ack(version),
        }
    }
}

/// A summary of one type on a stream, for `/v1/xds/clients`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeSummary {
    pub kind: Kind,
    pub wildcard: bool,
    pub names: usize,
}

/// One type on a stream.
#[derive(Debug, Default)]
struct TypeState {
    sub: Subscription,
    sent: Sent,
    /// SotW: the version the client said it has when it (re)connected.
    client_version: String,
    /// The listeners and clusters the client holds, sorted by name (SotW: those of the
    /// latest response; delta: those `known` at their version). They depend on their name
    /// only, so each wake reuses them instead of building one per name, hosts or not; and
    /// they are never deleted (see the module docs). Endpoints are not kept: they are
    /// looked up in the snapshot, and a snapshot's must not outlive it here.
    held: Vec<Arc<Resource>>,
    /// Delta: what the client holds, name to version, counting what was sent as held...
    known: BTreeMap<String, String>,
    /// ...until a NACK says otherwise: the entries of `known` as they were before the
    /// responses not yet ACKed, restored on a NACK so a rejected resource is sent again with
    /// the next response of its type.
    unacked: BTreeMap<String, Option<String>>,
}

/// The types of one stream and its nonce counter (nonces are unique per stream).
#[derive(Debug, Default)]
struct Types {
    types: BTreeMap<Kind, TypeState>,
    nonce: u64,
    /// Whether a request changed what the stream should get since `responses` last ran.
    pending: bool,
}

impl Types {
    /// The state of a request's type (`true` when it is the type's first request) and what
    /// the request says about the type's latest response.
    fn take(
        &mut self,
        kind: Kind,
        nonce: &str,
        error: Option<&envoy_types::pb::google::rpc::Status>,
    ) -> (bool, &mut TypeState, Reply) {
        let first = !self.types.contains_key(&kind);
        let state = self.types.entry(kind).or_default();
        let reply = state.sent.reply(nonce, error.map(|s| s.message.clone()));
        (first, state, reply)
    }

    /// Whether a request since the last `responses` may have changed what to send: when not,
    /// only a change of the registry can, and there is nothing to compute.
    fn pending(&self) -> bool {
        self.pending
    }

    /// The stream's types, for `/v1/xds/clients`.
    fn summary(&self) -> Vec<TypeSummary> {
        self.types
            .iter()
            .map(|(kind, s)| TypeSummary {
                kind: *kind,
                wildcard: s.sub.wildcard,
                names: s.sub.size(),
            })
            .collect()
    }
}

/// A state-of-the-world stream.
#[derive(Debug, Default)]
pub(crate) struct Sotw(Types);

impl Sotw {
    /// Takes a request of a served type.
    pub(crate) fn request(
        &mut self,
        kind: Kind,
        request: &DiscoveryRequest,
    ) -> Result<Reply, Refused> {
        let (first, state, reply) =
            self.0
                .take(kind, &request.response_nonce, request.error_detail.as_ref());
        if reply == Reply::Stale {
            return Ok(reply);
        }
        if reply == Reply::Initial {
            state.client_version = request.version_info.clone();
        }
        let changed = state.sub.replace(kind, first, &request.resource_names)?;
        self.0.pending |= changed || reply == Reply::Initial;
        Ok(reply)
    }

    /// The responses to send now: one per type whose resources changed since its last
    /// response (and not to a version the client rejected).
    pub(crate) fn responses(&mut self, source: &dyn Source) -> Vec<SotwResponse> {
        let mut out = Vec::new();
        let Types {
            types,
            nonce,
            pending,
        } = &mut self.0;
        *pending = false;
        for (kind, state) in types {
            let resources = state.sub.resources(*kind, source, &state.held);
            let version = resources.version();
            let current = state
                .sent
                .version
                .as_deref()
                .unwrap_or(&state.client_version);
            if current == version || state.sent.nacked.as_deref() == Some(&version) {
                continue;
            }
            *nonce += 1;
            state.sent.nonce = nonce.to_string();
            state.sent.answered = false;
            state.sent.version = Some(version.clone());
            out.push(SotwResponse {
                version_info: version,
                resources: resources.0.clone(),
                type_url: kind.url(),
                nonce: state.sent.nonce.clone(),
            });
            if *kind != Kind::Endpoints {
                state.held = resources.0;
            }
        }
        out
    }

    /// See [`Types::pending`].
    pub(crate) fn pending(&self) -> bool {
        self.0.pending()
    }

    /// The stream's types, for `/v1/xds/clients`.
    pub(crate) fn summary(&self) -> Vec<TypeSummary> {
        self.0.summary()
    }
}

/// An incremental (delta) stream.
#[derive(Debug, Default)]
pub(crate) struct Delta(Types);

impl Delta {
    /// Takes a request of a served type.
    pub(crate) fn request(
        &mut self,
        kind: Kind,
        request: &DeltaDiscoveryRequest,
    ) -> Result<Reply, Refused> {
        let (first, state, reply) =
            self.0
                .take(kind, &request.response_nonce, request.error_detail.as_ref());
        if first {
            if request.initial_resource_versions.len() > MAX_NAMES {
                return Err(Refused::TooManyNames);
            }
            state.known = request
                .initial_resource_versions
                .iter()
                .filter(|(name, version)| servable(name) && version.len() <= MAX_VERSION_LEN)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        match reply {
            Reply::Ack(_) => state.unacked.clear(),
            Reply::Nack { .. } => {
                for (name, before) in std::mem::take(&mut state.unacked) {
                    match before {
                        Some(version) => state.known.insert(name, version),
                        None => state.known.remove(&name),
                    };
                }
            }
            Reply::Initial | Reply::Stale | Reply::Repeat => {}
        }
        // Subscription changes count even with a stale nonce: a delta request carries only
        // changes, which the client does not send twice.
        let changed = state.sub.change(
            first,
            &request.resource_names_subscribe,
            &request.resource_names_unsubscribe,
        )?;
        let sub = &state.sub;
        state.known.retain(|name, _| sub.covers(name));
        state.unacked.retain(|name, _| sub.covers(name));
        self.0.pending |= changed;
        Ok(reply)
    }

    /// The responses to send now: per type, the resources the client lacks or holds at
    /// another version, and those it holds that are gone.
    pub(crate) fn responses(&mut self, source: &dyn Source) -> Vec<DeltaResponse> {
        let mut out = Vec::new();
        let Types {
            types,
            nonce,
            pending,
        } = &mut self.0;
        *pending = false;
        for (kind, state) in types {
            // What the client holds is in `known` by version; the listeners and clusters it
            // holds, in `held`, are never removed (see the module docs) and, depending on
            // their name only, never change: they are taken as they are, not built again.
            let resources = state.sub.resources(*kind, source, &state.held);
            out.extend(Self::response(*kind, state, nonce, resources));
        }
        out
    }

    /// The response of one type, if there is anything to send; counts what it sends as held.
    fn response(
        kind: Kind,
        state: &mut TypeState,
        nonce: &mut u64,
        resources: Resources,
    ) -> Option<DeltaResponse> {
        let keep = kind != Kind::Endpoints;
        let changed: Vec<&Arc<Resource>> = resources
            .0
            .iter()
            .filter(|r| state.known.get(&r.name) != Some(&r.version))
            .collect();
        let removed: Vec<String> = match kind {
            Kind::Endpoints => {
                let mut now = Cursor::new(&resources.0);
                let known = state.known.keys();
                known
                    .filter(|name| now.find(name).is_none())
                    .cloned()
                    .collect()
            }
            Kind::Listener | Kind::Cluster => Vec::new(),
        };
        if changed.is_empty() && removed.is_empty() {
            if keep {
                // All held at their version.
                state.held = resources.0;
            }
            return None;
        }
        let version = resources.version();
        if state.sent.nacked.as_deref() == Some(&version) {
            if keep {
                let known = &state.known;
                let held = resources.0.into_iter();
                state.held = held
                    .filter(|r| known.get(&r.name) == Some(&r.version))
                    .collect();
            }
            return None;
        }
        *nonce += 1;
        state.sent.nonce = nonce.to_string();
        state.sent.answered = false;
        let response = DeltaResponse {
            system_version_info: version.clone(),
            resources: changed.iter().map(|r| Arc::clone(r)).collect(),
            type_url: kind.url(),
            removed_resources: removed.clone(),
            nonce: state.sent.nonce.clone(),
        };
        for r in changed {
            let before = state.known.insert(r.name.clone(), r.version.clone());
            state.unacked.entry(r.name.clone()).or_insert(before);
        }
        for name in &removed {
            let before = state.known.remove(name);
            state.unacked.entry(name.clone()).or_insert(before);
        }
        state.sent.version = Some(version);
        if keep {
            // Sent or held already: all held at their version now.
            state.held = resources.0;
        }
        Some(response)
    }

    /// See [`Types::pending`].
    pub(crate) fn pending(&self) -> bool {
        self.0.pending()
    }

    /// The stream's types, for `/v1/xds/clients`.
    pub(crate) fn summary(&self) -> Vec<TypeSummary> {
        self.0.summary()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status;
    use prost::Message;

    use super::*;

    /// A fixed set of services: name to content version, and their resources as a snapshot
    /// holds them.
    #[derive(Default)]
    struct Fixed {
        versions: BTreeMap<String, String>,
        all: [Vec<Arc<Resource>>; 3],
        /// Resources built by `resource`: what a snapshot builds for a name without hosts.
        built: std::cell::Cell<usize>,
    }

    impl Fixed {
        fn set(&mut self, name: &str, version: &str) {
            self.versions.insert(name.into(), version.into());
            self.rebuild();
        }

        fn remove(&mut self, name: &str) {
            self.versions.remove(name);
            self.rebuild();
        }

        fn clear(&mut self) {
            self.versions.clear();
            self.rebuild();
        }

        fn rebuild(&mut self) {
            for kind in [Kind::Listener, Kind::Cluster, Kind::Endpoints] {
                self.all[kind as usize] = self
                    .versions
                    .keys()
                    .filter_map(|name| self.resource(kind, name))
                    .collect();
            }
        }
    }

    impl Source for Fixed {
        fn all(&self, kind: Kind) -> &[Arc<Resource>] {
            &self.all[kind as usize]
        }

        fn resource(&self, kind: Kind, name: &str) -> Option<Arc<Resource>> {
            // As a snapshot: a listener or cluster for any name, endpoints for services.
            let fixed = "static".to_string();
            let version = match (self.versions.get(name), kind) {
                (Some(version), Kind::Endpoints) => version,
                (_, Kind::Listener | Kind::Cluster) => &fixed,
                (None, Kind::Endpoints) => return None,
            };
            let any = Any {
                type_url: kind.url().into(),
                value: format!("{name}@{version}").into_bytes(),
            };
            self.built.set(self.built.get() + 1);
            Some(Arc::new(Resource::new(name.into(), version.clone(), &any)))
        }
    }

    fn sotw_req(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            type_url: Kind::Endpoints.url().into(),
            ..Default::default()
        }
    }

    fn nack(mut req: DiscoveryRequest) -> DiscoveryRequest {
        req.error_detail = Some(Status {
            code: 3,
            message: "bad".into(),
            details: vec![],
        });
        req
    }

    fn names_in(r: &SotwResponse) -> Vec<String> {
        r.resources
            .iter()
            .map(|r| String::from_utf8(Any::decode(r.any.clone()).unwrap().value).unwrap())
            .collect()
    }

    #[test]
    fn sotw_named_subscription_gets_its_resources_then_only_changes() {
        let mut src = Fixed::default();
        src.set("web", "1");
        src.set("db", "1");
        let mut s = Sotw::default();
        let ep = Kind::Endpoints;
        assert_eq!(
            s.request(ep, &sotw_req(&["web"], "", "")),
            Ok(Reply::Initial)
        );
        let first = s.responses(&src);
        assert_eq!(first.len(), 1);
        assert_eq!(names_in(&first[0]), ["web@1"]);
        assert!(s.responses(&src).is_empty(), "nothing changed");
        let ack = sotw_req(&["web"], &first[0].version_info, &first[0].nonce);
        assert_eq!(
            s.request(ep, &ack),
            Ok(Reply::Ack(first[0].version_info.clone()))
        );
        assert!(s.responses(&src).is_empty());
        src.set("db", "2");
        assert!(s.responses(&src).is_empty(), "db is not subscribed");
        src.set("web", "2");
        let second = s.responses(&src);
        assert_eq!(names_in(&second[0]), ["web@2"]);
        assert_ne!(second[0].nonce, first[0].nonce);
        assert_ne!(second[0].version_info, first[0].version_info);
    }

    #[test]
    fn sotw_nacked_version_is_not_resent_and_a_newer_one_is() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let mut s = Sotw::default();
        let ep = Kind::Endpoints;
        s.request(ep, &sotw_req(&["web"], "", "")).unwrap();
        let r = s.responses(&src).remove(0);
        let reply = s.request(ep, &nack(sotw_req(&["web"], "", &r.nonce)));
        assert_eq!(
            reply,
            Ok(Reply::Nack {
                version: r.version_info.clone(),
                error: "bad".into()
            })
        );
        assert!(
            s.responses(&src).is_empty(),
            "the rejected version stays unsent"
        );
        src.set("web", "2");
        assert_eq!(names_in(&s.responses(&src)[0]), ["web@2"]);
    }

    #[test]
    fn sotw_stale_nonce_is_ignored_with_its_subscription() {
        let mut src = Fixed::default();
        src.set("web", "1");
        src.set("db", "1");
        let mut s = Sotw::default();
        let ep = Kind::Endpoints;
        s.request(ep, &sotw_req(&["web"], "", "")).unwrap();
        let r1 = s.responses(&src).remove(0);
        src.set("web", "2");
        let r2 = s.responses(&src).remove(0);
        assert_eq!(
            s.request(ep, &sotw_req(&["web", "db"], &r1.version_info, &r1.nonce)),
            Ok(Reply::Stale)
        );
        assert!(s.responses(&src).is_empty());
        s.request(ep, &sotw_req(&["web", "db"], &r2.version_info, &r2.nonce))
            .unwrap();
        assert_eq!(names_in(&s.responses(&src)[0]), ["db@1", "web@2"]);
    }

    #[test]
    fn sotw_wildcard_covers_every_service_and_drops_endpoints_of_removed_ones() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let mut s = Sotw::default();
        s.request(Kind::Endpoints, &sotw_req(&["*"], "", ""))
            .unwrap();
        assert_eq!(names_in(&s.responses(&src)[0]), ["web@1"]);
        src.set("db", "1");
        assert_eq!(names_in(&s.responses(&src)[0]), ["db@1", "web@1"]);
        src.remove("web");
        assert_eq!(names_in(&s.responses(&src)[0]), ["db@1"]);
    }

    #[test]
    fn listeners_and_clusters_once_sent_stay_when_their_hosts_go() {
        for kind in [Kind::Listener, Kind::Cluster] {
            let mut src = Fixed::default();
            src.set("web", "1");
            let mut s = Sotw::default();
            let mut req = sotw_req(&[], "", "");
            req.type_url = kind.url().into();
            s.request(kind, &req).unwrap();
            assert_eq!(names_in(&s.responses(&src)[0]), ["web@static"]);
            src.remove("web");
            src.set("db", "1");
            assert_eq!(
                names_in(&s.responses(&src)[0]),
                ["db@static", "web@static"],
                "web stays: its absence would delete it"
            );
            let mut d = Delta::default();
            let mut req = delta_req(&[], &[], "");
            req.type_url = kind.url().into();
            d.request(kind, &req).unwrap();
            let r = d.responses(&src).remove(0);
            assert_eq!(r.resources.len(), 1, "db");
            src.clear();
            assert!(d.responses(&src).is_empty(), "nothing removed");
        }
    }

    #[test]
    fn sotw_reconnect_quoting_the_current_version_gets_nothing_new() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let mut a = Sotw::default();
        a.request(Kind::Endpoints, &sotw_req(&["web"], "", ""))
            .unwrap();
        let version = a.responses(&src).remove(0).version_info;
        // Another node, same state: same version, so nothing to send.
        let mut b = Sotw::default();
        b.request(Kind::Endpoints, &sotw_req(&["web"], &version, ""))
            .unwrap();
        assert!(b.responses(&src).is_empty());
    }

    #[test]
    fn listeners_and_clusters_of_names_without_hosts_are_built_once_per_stream_not_per_wake() {
        let ghosts: Vec<String> = (0..100).map(|i| format!("ghost-{i:03}")).collect();
        let ghosts: Vec<&str> = ghosts.iter().map(String::as_str).collect();
        for kind in [Kind::Listener, Kind::Cluster] {
            let mut src = Fixed::default();
            let mut d = Delta::default();
            let mut req = delta_req(&ghosts, &[], "");
            req.type_url = kind.url().into();
            d.request(kind, &req).unwrap();
            let mut s = Sotw::default();
            let mut req = sotw_req(&ghosts, "", "");
            req.type_url = kind.url().into();
            s.request(kind, &req).unwrap();

            let before = src.built.get();
            assert_eq!(d.responses(&src)[0].resources.len(), 100);
            assert_eq!(s.responses(&src)[0].resources.len(), 100);
            assert_eq!(
                src.built.get() - before,
                200,
                "each stream builds each name once"
            );

            // Changes of other services wake the streams: what they hold is not built again.
            for version in ["1", "2", "3"] {
                src.set("web", version);
                let before = src.built.get();
                assert!(d.responses(&src).is_empty());
                assert!(s.responses(&src).is_empty());
                assert_eq!(src.built.get(), before, "held, not built again");
            }
        }
    }

    #[test]
    fn only_listeners_and_clusters_are_kept_per_stream() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let mut s = Sotw::default();
        for kind in [Kind::Listener, Kind::Cluster, Kind::Endpoints] {
            let mut req = sotw_req(&["web"], "", "");
            req.type_url = kind.url().into();
            s.request(kind, &req).unwrap();
        }
        assert_eq!(s.responses(&src).len(), 3);
        let held = |kind| s.0.types[&kind].held.len();
        assert_eq!(held(Kind::Listener), 1);
        assert_eq!(held(Kind::Cluster), 1);
        assert_eq!(held(Kind::Endpoints), 0, "endpoints are the snapshot's");
    }

    #[test]
    fn too_many_names_are_refused() {
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| format!("s{i}")).collect();
        let mut s = Sotw::default();
        let req = DiscoveryRequest {
            resource_names: names.clone(),
            ..Default::default()
        };
        assert_eq!(s.request(Kind::Endpoints, &req), Err(Refused::TooManyNames));
        let mut d = Delta::default();
        let req = DeltaDiscoveryRequest {
            resource_names_subscribe: names[..MAX_NAMES].to_vec(),
            ..Default::default()
        };
        assert!(d.request(Kind::Endpoints, &req).is_ok(), "at the limit");
        let one_more = DeltaDiscoveryRequest {
            resource_names_subscribe: vec!["extra".into()],
            ..Default::default()
        };
        assert_eq!(
            d.request(Kind::Endpoints, &one_more),
            Err(Refused::TooManyNames)
        );
    }

    fn delta_req(sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            resource_names_subscribe: sub.iter().map(|n| n.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            type_url: Kind::Endpoints.url().into(),
            ..Default::default()
        }
    }

    #[test]
    fn delta_sends_changes_and_removals_only() {
        let mut src = Fixed::default();
        src.set("web", "1");
        src.set("db", "1");
        let mut d = Delta::default();
        let ep = Kind::Endpoints;
        d.request(ep, &delta_req(&["web", "db"], &[], "")).unwrap();
        let r = d.responses(&src).remove(0);
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(
            d.request(ep, &delta_req(&[], &[], &r.nonce)),
            Ok(Reply::Ack(r.system_version_info.clone()))
        );
        assert!(d.responses(&src).is_empty());
        src.set("web", "2");
        let r = d.responses(&src).remove(0);
        assert_eq!(r.resources.len(), 1);
        assert_eq!(
            (
                r.resources[0].name.as_str(),
                r.resources[0].version.as_str()
            ),
            ("web", "2")
        );
        assert!(r.removed_resources.is_empty());
        src.remove("db");
        let r = d.responses(&src).remove(0);
        assert!(r.resources.is_empty());
        assert_eq!(r.removed_resources, ["db"]);
        // Unsubscribed: no removal notice, no more updates.
        d.request(ep, &delta_req(&[], &["web"], "")).unwrap();
        src.set("web", "3");
        assert!(d.responses(&src).is_empty());
    }

    #[test]
    fn delta_initial_versions_skip_what_the_client_holds_and_nack_is_not_resent() {
        let mut src = Fixed::default();
        src.set("web", "1");
        src.set("db", "1");
        let mut d = Delta::default();
        let mut req = delta_req(&["*"], &[], "");
        req.initial_resource_versions = HashMap::from([("web".to_string(), "1".to_string())]);
        d.request(Kind::Endpoints, &req).unwrap();
        let r = d.responses(&src).remove(0);
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db"]);
        src.set("web", "2");
        let r = d.responses(&src).remove(0);
        let mut nacked = delta_req(&[], &[], &r.nonce);
        nacked.error_detail = Some(Status {
            code: 3,
            message: "no".into(),
            details: vec![],
        });
        assert!(matches!(
            d.request(Kind::Endpoints, &nacked),
            Ok(Reply::Nack { .. })
        ));
        assert!(d.responses(&src).is_empty());
    }

    #[test]
    fn sotw_nacked_version_is_not_resent_after_the_subscription_changes_back() {
        let mut src = Fixed::default();
        src.set("web", "1");
        src.set("db", "1");
        let ep = Kind::Endpoints;
        let mut s = Sotw::default();
        s.request(ep, &sotw_req(&["web"], "", "")).unwrap();
        let r = s.responses(&src).remove(0);
        s.request(ep, &nack(sotw_req(&["web"], "", &r.nonce)))
            .unwrap();
        s.request(ep, &sotw_req(&["web", "db"], "", &r.nonce))
            .unwrap();
        let both = s.responses(&src).remove(0);
        assert_eq!(names_in(&both), ["db@1", "web@1"]);
        s.request(ep, &sotw_req(&["web"], &both.version_info, &both.nonce))
            .unwrap();
        assert!(
            s.responses(&src).is_empty(),
            "back to the rejected set: not sent again"
        );
    }

    #[test]
    fn a_repeated_nack_is_reported_once_and_still_changes_the_subscription() {
        let mut src = Fixed::default();
        src.set("web", "1");
        src.set("db", "1");
        let ep = Kind::Endpoints;
        let mut s = Sotw::default();
        s.request(ep, &sotw_req(&["web"], "", "")).unwrap();
        let r = s.responses(&src).remove(0);
        let rejected = nack(sotw_req(&["web"], "", &r.nonce));
        assert!(matches!(s.request(ep, &rejected), Ok(Reply::Nack { .. })));
        for _ in 0..3 {
            assert_eq!(s.request(ep, &rejected), Ok(Reply::Repeat));
        }
        assert_eq!(
            s.request(ep, &sotw_req(&["web", "db"], "", &r.nonce)),
            Ok(Reply::Repeat)
        );
        assert_eq!(names_in(&s.responses(&src)[0]), ["db@1", "web@1"]);
    }

    #[test]
    fn requests_that_change_nothing_leave_nothing_to_compute() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let ep = Kind::Endpoints;
        let mut s = Sotw::default();
        s.request(ep, &sotw_req(&["web"], "", "")).unwrap();
        assert!(s.pending(), "a first request");
        let r = s.responses(&src).remove(0);
        assert!(!s.pending());
        s.request(ep, &sotw_req(&["web"], &r.version_info, &r.nonce))
            .unwrap();
        assert!(!s.pending(), "an ACK of the same names");
        s.request(ep, &sotw_req(&["db"], "", "old")).unwrap();
        assert!(!s.pending(), "a stale nonce");
        s.request(ep, &sotw_req(&["web", "db"], "", &r.nonce))
            .unwrap();
        assert!(s.pending(), "a subscription change");
        src.set("db", "1");
        let r = s.responses(&src).remove(0);
        for names in [["web", "db"], ["db", "web"]] {
            s.request(ep, &sotw_req(&names, &r.version_info, &r.nonce))
                .unwrap();
            assert!(!s.pending(), "the same names, in any order: {names:?}");
        }
        let mut d = Delta::default();
        d.request(ep, &delta_req(&["web"], &[], "")).unwrap();
        let r = d.responses(&src).remove(0);
        d.request(ep, &delta_req(&[], &[], &r.nonce)).unwrap();
        assert!(!d.pending(), "a delta ACK");
        d.request(ep, &delta_req(&["web"], &["nothing"], ""))
            .unwrap();
        assert!(!d.pending(), "subscribing what is subscribed");
    }

    #[test]
    fn names_that_are_not_service_names_are_not_kept() {
        let long = "x".repeat(129);
        let ep = Kind::Endpoints;
        let mut s = Sotw::default();
        s.request(ep, &sotw_req(&[&long, "a b", "web"], "", ""))
            .unwrap();
        assert_eq!(s.summary()[0].names, 1);
        let mut d = Delta::default();
        let mut req = delta_req(&[&long, "web"], &[], "");
        req.initial_resource_versions =
            HashMap::from([(long.clone(), "1".into()), ("web".into(), "v".repeat(65))]);
        d.request(ep, &req).unwrap();
        assert_eq!(d.summary()[0].names, 1);
        assert!(
            d.0.types[&ep].known.is_empty(),
            "{:?}",
            d.0.types[&ep].known
        );
    }

    #[test]
    fn delta_nacked_resources_are_sent_again_with_the_next_response() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let ep = Kind::Endpoints;
        let mut d = Delta::default();
        d.request(ep, &delta_req(&["web"], &[], "")).unwrap();
        let r = d.responses(&src).remove(0);
        let mut nacked = delta_req(&[], &[], &r.nonce);
        nacked.error_detail = Some(Status {
            code: 3,
            message: "no".into(),
            details: vec![],
        });
        d.request(ep, &nacked).unwrap();
        assert!(d.responses(&src).is_empty(), "not resent as such");
        d.request(ep, &delta_req(&["db"], &[], "")).unwrap();
        src.set("db", "1");
        let r = d.responses(&src).remove(0);
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["db", "web"],
            "web was rejected, so the client lacks it"
        );
        d.request(ep, &delta_req(&[], &[], &r.nonce)).unwrap();
        src.set("db", "2");
        let r = d.responses(&src).remove(0);
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db"], "after the ACK, web is held");
    }
}
