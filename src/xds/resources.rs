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
//! it could still make with the endpoints it holds. Built resources are cached per service and
//! content hash, so a change costs one build however many streams watch the service.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
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
    /// The packed message.
    pub any: Any,
}

/// Where streams find resources: the registry through a cache, or a fixed set in tests.
pub(crate) trait Source {
    /// The resource of that kind and name, if the service has live hosts.
    fn resource(&self, kind: Kind, name: &str) -> Option<Arc<Resource>>;
    /// Every service that has live hosts (what a wildcard subscription covers).
    fn names(&self) -> Vec<String>;
}

/// The three resources of one service at one content hash.
struct Built {
    hash: u64,
    listener: Arc<Resource>,
    cluster: Arc<Resource>,
    endpoints: Arc<Resource>,
}

/// The registry's services as xDS resources. See the module docs.
pub(crate) struct Catalog<'a> {
    registry: &'a Registry,
    cache: &'a Cache,
    now: Micros,
}

/// Built resources per service. Entries go when their service has no live hosts
/// ([`Cache::forget_gone`]).
#[derive(Default)]
pub(crate) struct Cache(DashMap<ServiceName, Arc<Built>>);

impl Cache {
    /// The registry as seen at `now`, through this cache.
    pub(crate) fn catalog<'a>(&'a self, registry: &'a Registry, now: Micros) -> Catalog<'a> {
        Catalog {
            registry,
            cache: self,
            now,
        }
    }

    /// Drops the entries of services that no longer have live hosts.
    pub(crate) fn forget_gone(&self, registry: &Registry, now: Micros) {
        self.0.retain(|name, _| registry.view(name, now).hosts > 0);
    }
}

impl Source for Catalog<'_> {
    fn resource(&self, kind: Kind, name: &str) -> Option<Arc<Resource>> {
        let service = ServiceName::parse(name).ok()?;
        let view = self.registry.view(&service, self.now);
        if view.hosts == 0 {
            return match kind {
                Kind::Listener => Some(Arc::new(listener(&service))),
                Kind::Cluster => Some(Arc::new(cluster(&service))),
                Kind::Endpoints => None,
            };
        }
        // The guard of `get` must be gone before `insert` (same shard: a deadlock).
        let cached = self.cache.0.get(&service).map(|b| b.clone());
        let built = match cached {
            Some(b) if b.hash == view.content_hash => b,
            _ => {
                let assignment = self.registry.envoy_assignment(&service)?;
                let built = Arc::new(Built {
                    hash: view.content_hash,
                    listener: Arc::new(listener(&service)),
                    cluster: Arc::new(cluster(&service)),
                    endpoints: Arc::new(endpoints(&assignment, view.content_hash)),
                });
                self.cache.0.insert(service, built.clone());
                built
            }
        };
        Some(match kind {
            Kind::Listener => built.listener.clone(),
            Kind::Cluster => built.cluster.clone(),
            Kind::Endpoints => built.endpoints.clone(),
        })
    }

    fn names(&self) -> Vec<String> {
        self.registry
            .services()
            .into_iter()
            .map(|s| s.service)
            .collect()
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
    Resource {
        name: name.to_string(),
        version: format!("{:016x}", xxh3_64(&any.value)),
        any,
    }
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
    Resource {
        name: assignment.cluster_name.clone(),
        version: format!("{hash:016x}"),
        any: pack(&cla),
    }
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
