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
//! - removal: a service without live hosts is absent from SotW responses and reported in
//!   `removed_resources` on delta streams (SPEC 3.2 leaves it out of REST answers too:
//!   Envoy keeps its endpoints when an assignment is absent).
//!
//! Sending nothing while the node is not ready is the caller's decision (`responses` is
//! only asked when it is), so a node that lost its state never pushes it as empty lists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use xxhash_rust::xxh3::Xxh3;

use super::resources::{Kind, Resource, Source};

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
    /// Sets the subscription from a SotW request's names.
    fn replace(&mut self, kind: Kind, first: bool, names: &[String]) -> Result<(), Refused> {
        if names.len() > MAX_NAMES {
            return Err(Refused::TooManyNames);
        }
        // Legacy wildcard: no names on the first request; Envoy keeps sending no names for
        // its wildcard listeners and clusters.
        let legacy = names.is_empty() && (first || (self.wildcard && kind != Kind::Endpoints));
        self.wildcard = legacy || names.iter().any(|n| n == "*");
        self.names = names.iter().filter(|n| *n != "*").cloned().collect();
        Ok(())
    }

    /// Applies a delta request's changes.
    fn change(
        &mut self,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
    ) -> Result<(), Refused> {
        if subscribe.len() > MAX_NAMES || unsubscribe.len() > MAX_NAMES {
            return Err(Refused::TooManyNames);
        }
        if first && subscribe.is_empty() {
            self.wildcard = true;
        }
        for name in subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(name);
            }
        }
        if self.names.len() > MAX_NAMES {
            return Err(Refused::TooManyNames);
        }
        Ok(())
    }

    /// The resources it covers now, by name.
    fn resources(&self, kind: Kind, source: &dyn Source) -> BTreeMap<String, Arc<Resource>> {
        let mut out = BTreeMap::new();
        let wildcard = if self.wildcard {
            source.names()
        } else {
            Vec::new()
        };
        for name in wildcard.iter().chain(&self.names) {
            if out.contains_key(name) {
                continue;
            }
            if let Some(r) = source.resource(kind, name) {
                out.insert(name.clone(), r);
            }
        }
        out
    }

    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    pub(crate) fn size(&self) -> usize {
        self.names.len()
    }
}

/// A version for a set of resources: equal sets give equal versions on every node.
fn set_version(resources: &BTreeMap<String, Arc<Resource>>) -> String {
    let mut h = Xxh3::new();
    for (name, r) in resources {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(r.version.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
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
    /// Delta: what the client holds, name to version.
    known: BTreeMap<String, String>,
}

/// The types of one stream and its nonce counter (nonces are unique per stream).
#[derive(Debug, Default)]
struct Types {
    types: BTreeMap<Kind, TypeState>,
    nonce: u64,
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
        state.sub.replace(kind, first, &request.resource_names)?;
        Ok(reply)
    }

    /// The responses to send now: one per type whose resources changed since its last
    /// response (and not to a version the client rejected).
    pub(crate) fn responses(&mut self, source: &dyn Source) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        let Types { types, nonce } = &mut self.0;
        for (kind, state) in types {
            let resources = state.sub.resources(*kind, source);
            let version = set_version(&resources);
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
            state.sent.version = Some(version.clone());
            out.push(DiscoveryResponse {
                version_info: version,
                resources: resources.values().map(|r| r.any.clone()).collect(),
                type_url: kind.url().to_owned(),
                nonce: state.sent.nonce.clone(),
                ..Default::default()
            });
        }
        out
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
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        // Subscription changes count even with a stale nonce: a delta request carries only
        // changes, which the client does not send twice.
        state.sub.change(
            first,
            &request.resource_names_subscribe,
            &request.resource_names_unsubscribe,
        )?;
        let sub = &state.sub;
        state.known.retain(|name, _| sub.covers(name));
        Ok(reply)
    }

    /// The responses to send now: per type, the resources the client lacks or holds at
    /// another version, and those it holds that are gone.
    pub(crate) fn responses(&mut self, source: &dyn Source) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        let Types { types, nonce } = &mut self.0;
        for (kind, state) in types {
            let resources = state.sub.resources(*kind, source);
            let changed: Vec<&Arc<Resource>> = resources
                .values()
                .filter(|r| state.known.get(&r.name) != Some(&r.version))
                .collect();
            let removed: Vec<String> = state
                .known
                .keys()
                .filter(|name| !resources.contains_key(*name))
                .cloned()
                .collect();
            if changed.is_empty() && removed.is_empty() {
                continue;
            }
            let version = set_version(&resources);
            if state.sent.nacked.as_deref() == Some(&version) {
                continue;
            }
            *nonce += 1;
            state.sent.nonce = nonce.to_string();
            let response = DeltaDiscoveryResponse {
                system_version_info: version.clone(),
                resources: changed
                    .iter()
                    .map(|r| DeltaResource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        resource: Some(r.any.clone()),
                        ..Default::default()
                    })
                    .collect(),
                type_url: kind.url().to_owned(),
                removed_resources: removed.clone(),
                nonce: state.sent.nonce.clone(),
                ..Default::default()
            };
            for r in changed {
                state.known.insert(r.name.clone(), r.version.clone());
            }
            for name in &removed {
                state.known.remove(name);
            }
            state.sent.version = Some(version);
            out.push(response);
        }
        out
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

    use super::*;

    /// A fixed set of services: name to content version.
    #[derive(Default)]
    struct Fixed(BTreeMap<String, String>);

    impl Fixed {
        fn set(&mut self, name: &str, version: &str) {
            self.0.insert(name.into(), version.into());
        }
    }

    impl Source for Fixed {
        fn resource(&self, kind: Kind, name: &str) -> Option<Arc<Resource>> {
            let version = self.0.get(name)?;
            Some(Arc::new(Resource {
                name: name.into(),
                version: version.clone(),
                any: Any {
                    type_url: kind.url().into(),
                    value: format!("{name}@{version}").into_bytes(),
                },
            }))
        }
        fn names(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
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

    fn names_in(r: &DiscoveryResponse) -> Vec<String> {
        r.resources
            .iter()
            .map(|a| String::from_utf8(a.value.clone()).unwrap())
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
    fn sotw_wildcard_covers_every_service_and_drops_removed_ones() {
        let mut src = Fixed::default();
        src.set("web", "1");
        let mut s = Sotw::default();
        let mut req = sotw_req(&[], "", "");
        req.type_url = Kind::Listener.url().into();
        s.request(Kind::Listener, &req).unwrap();
        assert_eq!(names_in(&s.responses(&src)[0]), ["web@1"]);
        src.set("db", "1");
        assert_eq!(names_in(&s.responses(&src)[0]), ["db@1", "web@1"]);
        src.0.remove("web");
        assert_eq!(names_in(&s.responses(&src)[0]), ["db@1"]);
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
        src.0.remove("db");
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
}
