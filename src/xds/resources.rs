//! The xDS resources of a service, built from the registry's prepared views so that every
//! node holding the same hosts serves the same bytes and the same versions:
//! - a `ClusterLoadAssignment`: the REST EDS assignment (SPEC 3.2) as protobuf, versioned by
//!   the view's content hash (the hash REST EDS and the ETag are made of);
//! - for proxyless gRPC (`xds:///SERVICE`): a `Listener` named as the service whose
//!   `api_listener` HttpConnectionManager holds an inline route to a `Cluster` of the same
//!   name, of type EDS over ADS, round robin. Their content depends on the name only.
//!
//! A service's endpoints exist for xDS while it has live hosts. Its `Listener` and `Cluster`
//! exist for any service name asked for, hosts or not: state-of-the-world LDS and CDS answers
//! are the full set, so leaving one out tells gRPC and Envoy to delete it (a restarted or
//! partly synced registry, a service whose hosts all expired), and a client would fail calls
//! it could still make with the endpoints it holds.
//!
//! Streams do not read the registry: they read a [`Snapshot`], every service's resources
//! encoded once per routing generation and shared through `Arc`s. While any stream runs, the
//! pump builds one per burst of changes before it wakes the streams ([`Catalog::at_least`]);
//! while none does, nothing is built (a node nobody reads xDS from pays nothing for it). A
//! request that needs a newer one (it follows a write, or is a stream's first) waits for that
//! build instead of starting its own. A build costs a
//! lookup per service plus the encoding of the services whose content changed, however many
//! streams watch them; each stream then only picks what it subscribed to and compares versions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use bytes::Bytes;
use discovery_api::ServiceName;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, AggregatedConfigSource, ApiVersion, ConfigSource,
    HealthStatus, Locality, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{value, Any, ListValue, Struct, UInt32Value, Value};
use prost::{Message, Name};
use xxhash_rust::xxh3::xxh3_64;

use crate::registry::{Micros, Registry};
use crate::state::{now, NodeState};

/// The resource types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    /// `envoy.config.listener.v3.Listener`.
    Listener,
    /// `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoints,
}

/// The type URLs, in [`Kind`] order.
const URLS: [(Kind, &str); 3] = [
    (
        Kind::Listener,
        "type.googleapis.com/envoy.config.listener.v3.Listener",
    ),
    (
        Kind::Cluster,
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    ),
    (Kind::Endpoints, discovery_api::EDS_TYPE_URL),
];

impl Kind {
    /// The kind of a type URL, or `None` for a type this server does not serve.
    pub(crate) fn from_url(url: &str) -> Option<Kind> {
        URLS.iter().find(|(_, u)| *u == url).map(|(k, _)| *k)
    }

    /// Its type URL.
    pub(crate) fn url(self) -> &'static str {
        URLS.iter().find(|(k, _)| *k == self).map_or("", |(_, u)| u)
    }

    /// Its short name, for metrics and logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Cluster => "cluster",
            Kind::Endpoints => "endpoints",
        }
    }
}

/// One resource, ready to send.
#[derive(Debug, PartialEq)]
pub(crate) struct Resource {
    /// Its name: the service.
    pub name: String,
    /// Equal content gives an equal version on every node.
    pub version: String,
    /// The message packed as a `google.protobuf.Any` and encoded, once: every stream that
    /// sends it writes these bytes (see `wire`).
    pub any: Bytes,
}

impl Resource {
    pub(crate) fn new(name: String, version: String, any: &Any) -> Resource {
        Resource {
            name,
            version,
            any: any.encode_to_vec().into(),
        }
    }
}

/// Where streams find resources: a [`Snapshot`] of the registry, or a fixed set in tests.
pub(crate) trait Source {
    /// The resources of that kind of every service with live hosts, sorted by name: what a
    /// wildcard subscription covers.
    fn all(&self, kind: Kind) -> &[Arc<Resource>];
    /// The resource of that kind and name: endpoints if the service has live hosts, a
    /// listener or cluster for any service name.
    fn resource(&self, kind: Kind, name: &str) -> Option<Arc<Resource>>;
}

/// The registry's services as xDS resources at one routing generation, built once for every
/// stream (see the module docs). A service's resources are carried over from the snapshot
/// before when its content hash is unchanged (its listener and cluster whatever the hash:
/// they depend on its name only), so a change re-encodes only the services it changed.
pub(crate) struct Snapshot {
    /// The routing generation (`NodeState::routing_generation`) it holds every change up to;
    /// `None` before the first build.
    generation: Option<u64>,
    /// Each service with live hosts: its content hash and its place in `all`.
    services: HashMap<ServiceName, (u64, usize)>,
    /// Per kind (in [`Kind`] order), every service's resource, sorted by name.
    all: [Vec<Arc<Resource>>; 3],
}

impl Snapshot {
    /// A snapshot of nothing, older than any build.
    fn empty() -> Snapshot {
        Snapshot {
            generation: None,
            services: HashMap::new(),
            all: Default::default(),
        }
    }

    /// The registry at `now`, labelled `generation` (read before building, so that a change
    /// during the build makes the next caller build again), reusing what `before` holds.
    pub(crate) fn build(
        before: &Snapshot,
        registry: &Registry,
        now: Micros,
        generation: u64,
    ) -> Snapshot {
        let names = registry.live_service_names();
        let mut services = HashMap::with_capacity(names.len());
        let mut all: [Vec<Arc<Resource>>; 3] =
            std::array::from_fn(|_| Vec::with_capacity(names.len()));
        for service in names {
            let view = registry.view(&service, now);
            if view.hosts == 0 {
                // Its hosts went since the listing.
                continue;
            }
            let held = before.services.get(service.as_str()).map(|&(hash, at)| {
                let [l, c, e] = &before.all;
                (hash, [&l[at], &c[at], &e[at]])
            });
            let [listener, cluster, endpoints] = match held {
                Some((hash, [l, c, e])) if hash == view.content_hash => {
                    [l.clone(), c.clone(), e.clone()]
                }
                _ => {
                    let Some(assignment) = registry.envoy_assignment(&service) else {
                        continue;
                    };
                    let endpoints = Arc::new(endpoints(&assignment, view.content_hash));
                    match held {
                        Some((_, [l, c, _])) => [l.clone(), c.clone(), endpoints],
                        None => [
                            Arc::new(listener(&service)),
                            Arc::new(cluster(&service)),
                            endpoints,
                        ],
                    }
                }
            };
            services.insert(service.clone(), (view.content_hash, all[0].len()));
            for (list, resource) in all.iter_mut().zip([listener, cluster, endpoints]) {
                list.push(resource);
            }
        }
        Snapshot {
            generation: Some(generation),
            services,
            all,
        }
    }
}

impl Source for Snapshot {
    fn all(&self, kind: Kind) -> &[Arc<Resource>] {
        &self.all[kind as usize]
    }

    fn resource(&self, kind: Kind, name: &str) -> Option<Arc<Resource>> {
        if let Some(&(_, at)) = self.services.get(name) {
            return Some(self.all[kind as usize][at].clone());
        }
        // No live hosts: no endpoints, and a listener or cluster built for the name (cheap,
        // and kept by the stream that sends it).
        let service = ServiceName::parse(name).ok()?;
        match kind {
            Kind::Listener => Some(Arc::new(listener(&service))),
            Kind::Cluster => Some(Arc::new(cluster(&service))),
            Kind::Endpoints => None,
        }
    }
}

/// The latest [`Snapshot`], and the one build at a time that replaces it.
pub(crate) struct Catalog {
    latest: ArcSwap<Snapshot>,
    /// Held while building: callers that need a newer snapshot wait for the build under way
    /// rather than starting their own.
    building: tokio::sync::Mutex<()>,
    /// Streams running: while there are none, the pump builds nothing (a node nobody reads
    /// xDS from pays nothing for it); a stream's first request builds what it needs.
    readers: AtomicUsize,
    /// The routing generation whose build failed last, if the builds since have failed too:
    /// requests do not build it again (each would fail alike); the pump retries it.
    failed: Mutex<Option<u64>>,
    /// Told when a request's build failed: the pump builds again, and wakes the streams.
    pub(crate) retry: tokio::sync::Notify,
    /// Builds that fail from now on, in tests.
    #[cfg(test)]
    pub(crate) fail: AtomicUsize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            latest: ArcSwap::from_pointee(Snapshot::empty()),
            building: tokio::sync::Mutex::new(()),
            readers: AtomicUsize::new(0),
            failed: Mutex::new(None),
            retry: tokio::sync::Notify::new(),
            #[cfg(test)]
            fail: AtomicUsize::new(0),
        }
    }
}

/// A build of the resources that did not complete (it panicked): a bug, logged where it
/// happened; the previous snapshot stays the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("building the xDS resources failed")]
pub(crate) struct BuildFailed;

/// A running stream, counted in [`Catalog::readers`] until dropped.
pub(crate) struct Reader(Arc<Catalog>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Catalog {
    /// The newest snapshot built.
    pub(crate) fn latest(&self) -> Arc<Snapshot> {
        self.latest.load_full()
    }

    /// Counts a stream as running until the returned guard drops.
    pub(crate) fn reader(self: &Arc<Self>) -> Reader {
        self.readers.fetch_add(1, Ordering::Relaxed);
        Reader(self.clone())
    }

    /// Whether any stream is running.
    pub(crate) fn read(&self) -> bool {
        self.readers.load(Ordering::Relaxed) > 0
    }

    /// A snapshot that holds every change up to routing generation `generation`: the latest if
    /// it does, else one built now (on a blocking thread: the first build of a large registry
    /// encodes every host) at the node's current generation. A stream's request asks with
    /// `retry` false: when the last build failed at `generation` or later, it is not tried
    /// again for every request; the pump retries it (told by [`Catalog::retry`] when a
    /// request's build failed) and wakes the streams once it succeeds. Failures are counted
    /// in `discovery_xds_build_failures_total`.
    pub(crate) async fn at_least(
        &self,
        shared: &Arc<NodeState>,
        generation: u64,
        retry: bool,
    ) -> Result<Arc<Snapshot>, BuildFailed> {
        let fresh = |s: &Snapshot| s.generation.is_some_and(|g| g >= generation);
        let latest = self.latest();
        if fresh(&latest) {
            return Ok(latest);
        }
        let _building = self.building.lock().await;
        let latest = self.latest();
        if fresh(&latest) {
            return Ok(latest);
        }
        let failed = *self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if !retry && failed.is_some_and(|g| g >= generation) {
            return Err(BuildFailed);
        }
        let state = shared.clone();
        let before = latest.clone();
        let generation = state.routing_generation();
        #[cfg(test)]
        let fail = self
            .fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let built = tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            assert!(!fail, "a build made to fail");
            Snapshot::build(&before, &state.registry, now(), generation)
        })
        .await;
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match built {
            Ok(snapshot) => {
                *failed = None;
                let snapshot = Arc::new(snapshot);
                self.latest.store(snapshot.clone());
                Ok(snapshot)
            }
            Err(e) => {
                *failed = Some(generation);
                shared.metrics.xds_build_failures.inc();
                tracing::error!(error = %e, generation, "building the xDS resources failed");
                if !retry {
                    self.retry.notify_one();
                }
                Err(BuildFailed)
            }
        }
    }
}

fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A resource whose content is a function of its name only: versioned by its bytes.
fn by_bytes(name: &ServiceName, any: Any) -> Resource {
    let version = format!("{:016x}", xxh3_64(&any.value));
    Resource::new(name.to_string(), version, &any)
}

/// The `Listener` gRPC resolves `xds:///SERVICE` with.
fn listener(service: &ServiceName) -> Resource {
    let name = service.to_string();
    let route_config = RouteConfiguration {
        name: name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: name.clone(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.clone())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let manager = HttpConnectionManager {
        stat_prefix: name.clone(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        // gRPC refuses a listener without the router filter.
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name,
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&manager)),
        }),
        ..Default::default()
    };
    by_bytes(service, pack(&listener))
}

/// The EDS `Cluster` of a service, its endpoints over ADS, round robin.
fn cluster(service: &ServiceName) -> Resource {
    let cluster = Cluster {
        name: service.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            service_name: service.to_string(),
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        ..Default::default()
    };
    by_bytes(service, pack(&cluster))
}

/// The REST assignment (SPEC 3.2's mapping, written once in the registry) as protobuf.
fn endpoints(assignment: &discovery_api::ClusterLoadAssignment, hash: u64) -> Resource {
    let cla = ClusterLoadAssignment {
        cluster_name: assignment.cluster_name.clone(),
        endpoints: assignment
            .endpoints
            .iter()
            .map(|group| LocalityLbEndpoints {
                locality: Some(Locality {
                    region: group.locality.region.clone(),
                    zone: group.locality.zone.clone(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: group.load_balancing_weight,
                }),
                lb_endpoints: group.lb_endpoints.iter().map(lb_endpoint).collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let version = format!("{hash:016x}");
    Resource::new(assignment.cluster_name.clone(), version, &pack(&cla))
}

fn lb_endpoint(host: &discovery_api::LbEndpoint) -> LbEndpoint {
    let socket = &host.endpoint.address.socket_address;
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: socket.address.clone(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                        socket.port_value,
                    ))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: match host.health_status.as_str() {
            "DRAINING" => HealthStatus::Draining,
            _ => HealthStatus::Healthy,
        } as i32,
        load_balancing_weight: Some(UInt32Value {
            value: host.load_balancing_weight,
        }),
        metadata: host.metadata.as_ref().map(|m| Metadata {
            filter_metadata: m
                .filter_metadata
                .iter()
                .filter_map(|(filter, value)| match to_value(value).kind {
                    Some(value::Kind::StructValue(s)) => Some((filter.clone(), s)),
                    _ => None,
                })
                .collect(),
            ..Default::default()
        }),
    }
}

/// JSON as `google.protobuf.Value`.
fn to_value(json: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match json {
        J::Null => value::Kind::NullValue(0),
        J::Bool(b) => value::Kind::BoolValue(*b),
        J::Number(n) => value::Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => value::Kind::StringValue(s.clone()),
        J::Array(items) => value::Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        J::Object(map) => value::Kind::StructValue(Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<HashMap<_, _>>(),
        }),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use discovery_api::{HostStatus, Port, Registration, RepoName, Revision, Tags};

    use super::*;
    use crate::registry::{RegistryConfig, SECOND};

    const T0: Micros = 1_800_000_000 * SECOND;

    fn beat(r: &Registry, service: &str, ip: &str, revision: &str) {
        let registration = Registration {
            ip: None,
            port: Port::new(80).unwrap(),
            revision: Revision::parse(revision).unwrap(),
            service_repo_name: RepoName::empty(),
            tags: Tags::default(),
            ttl: Some(600),
            status: HostStatus::Up,
            auto_ip: false,
        };
        let service = ServiceName::parse(service).unwrap();
        r.heartbeat(&service, ip.parse().unwrap(), &registration, T0)
            .unwrap();
    }

    #[tokio::test]
    async fn a_snapshot_is_built_once_per_generation_and_holds_every_write_before_it() {
        let config = crate::config::config(&["--node-id", "n1"]).unwrap();
        let shared = Arc::new(NodeState::new(config));
        let catalog = Catalog::default();
        let empty = catalog
            .at_least(&shared, shared.routing_generation(), false)
            .await
            .unwrap();
        assert!(empty.all(Kind::Endpoints).is_empty());
        let again = catalog
            .at_least(&shared, shared.routing_generation(), false)
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&empty, &again),
            "the same generation: not built again"
        );

        // A write, published: the next snapshot asked for at its generation holds it.
        beat(&shared.registry, "web", "10.0.0.1", "r1");
        shared.poke();
        assert!(
            Arc::ptr_eq(&catalog.latest(), &empty),
            "built only when asked"
        );
        let fresh = catalog
            .at_least(&shared, shared.routing_generation(), false)
            .await
            .unwrap();
        assert_eq!(names(&fresh, Kind::Endpoints), ["web"]);
        assert!(Arc::ptr_eq(&catalog.latest(), &fresh));
        // An older generation is served by the newest snapshot.
        let old = catalog.at_least(&shared, 0, false).await.unwrap();
        assert!(Arc::ptr_eq(&old, &fresh));
    }

    #[tokio::test]
    async fn a_failed_build_is_not_tried_again_per_request_only_by_the_pump() {
        let config = crate::config::config(&["--node-id", "n1"]).unwrap();
        let shared = Arc::new(NodeState::new(config));
        let catalog = Catalog::default();
        catalog.fail.store(1, Ordering::Relaxed);
        beat(&shared.registry, "web", "10.0.0.1", "r1");
        shared.poke();
        let generation = shared.routing_generation();
        assert_eq!(
            catalog.at_least(&shared, generation, false).await.err(),
            Some(BuildFailed)
        );
        // The next build would succeed: a request does not start it.
        assert!(catalog.at_least(&shared, generation, false).await.is_err());
        assert!(catalog.latest().all(Kind::Endpoints).is_empty());
        assert_eq!(shared.metrics.xds_build_failures.get(), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), catalog.retry.notified())
            .await
            .expect("the pump is told to build again");
        let retried = catalog.at_least(&shared, generation, true).await.unwrap();
        assert_eq!(names(&retried, Kind::Endpoints), ["web"]);

        // A newer change is built for a request again.
        catalog.fail.store(1, Ordering::Relaxed);
        beat(&shared.registry, "db", "10.0.0.2", "r1");
        shared.poke();
        let generation = shared.routing_generation();
        assert!(catalog.at_least(&shared, generation, false).await.is_err());
        beat(&shared.registry, "db", "10.0.0.3", "r1");
        shared.poke();
        let generation = shared.routing_generation();
        let built = catalog.at_least(&shared, generation, false).await.unwrap();
        assert_eq!(names(&built, Kind::Endpoints), ["db", "web"]);
    }

    fn names(s: &Snapshot, kind: Kind) -> Vec<&str> {
        s.all(kind).iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_snapshot_encodes_again_only_what_a_change_changed() {
        let r = Registry::new(RegistryConfig::new("test", "a"));
        beat(&r, "web", "10.0.0.1", "r1");
        beat(&r, "db", "10.0.1.1", "r1");
        let first = Snapshot::build(&Snapshot::empty(), &r, T0, 1);
        for kind in [Kind::Listener, Kind::Cluster, Kind::Endpoints] {
            assert_eq!(names(&first, kind), ["db", "web"]);
        }

        beat(&r, "web", "10.0.0.2", "r1");
        let second = Snapshot::build(&first, &r, T0, 2);
        for kind in [Kind::Listener, Kind::Cluster, Kind::Endpoints] {
            let (before, after) = (&first.all(kind)[0], &second.all(kind)[0]);
            assert!(
                Arc::ptr_eq(before, after),
                "db is the same: not built again"
            );
        }
        for kind in [Kind::Listener, Kind::Cluster] {
            let (before, after) = (&first.all(kind)[1], &second.all(kind)[1]);
            assert!(
                Arc::ptr_eq(before, after),
                "a name's {kind:?} never changes"
            );
        }
        let (before, after) = (
            first.resource(Kind::Endpoints, "web").unwrap(),
            second.resource(Kind::Endpoints, "web").unwrap(),
        );
        assert_ne!(before.version, after.version);
        assert_ne!(before.any, after.any);

        // Hosts gone: no endpoints, and a listener and cluster for the name all the same.
        for ip in ["10.0.0.1", "10.0.0.2"] {
            let web = ServiceName::parse("web").unwrap();
            r.delete(&web, ip.parse().unwrap(), None, T0).unwrap();
        }
        let third = Snapshot::build(&second, &r, T0, 3);
        assert_eq!(names(&third, Kind::Endpoints), ["db"]);
        assert!(third.resource(Kind::Endpoints, "web").is_none());
        let listener = third.resource(Kind::Listener, "web").unwrap();
        assert_eq!(listener.version, first.all(Kind::Listener)[1].version);
        assert!(third.resource(Kind::Cluster, "not a name").is_none());
    }
}
