//! Envoy's REST-JSON EDS messages (`envoy.service.discovery.v3.DiscoveryRequest`,
//! `DiscoveryResponse` and `envoy.config.endpoint.v3.ClusterLoadAssignment`), with only the
//! fields the registry reads or writes. Names are proto3 JSON's original snake_case.

use serde::{Deserialize, Serialize};

/// The `type_url` of an EDS resource.
pub const EDS_TYPE_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// What Envoy posts to `/v3/discovery:endpoints`. Unknown fields (such as `node`'s details)
/// are ignored; both snake_case and lowerCamelCase names are accepted, as proto3 JSON allows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryRequest {
    /// The version Envoy last accepted, empty at first.
    #[serde(default, alias = "versionInfo")]
    pub version_info: String,
    /// The requesting Envoy (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<serde_json::Value>,
    /// The EDS service names wanted.
    #[serde(default, alias = "resourceNames")]
    pub resource_names: Vec<String>,
    /// Must be [`EDS_TYPE_URL`] when given.
    #[serde(default, alias = "typeUrl")]
    pub type_url: String,
    /// Never set by Envoy's REST client.
    #[serde(default, alias = "responseNonce")]
    pub response_nonce: String,
}

/// The answer to a [`DiscoveryRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryResponse {
    /// Derived from the content: equal host lists give equal versions on every node.
    pub version_info: String,
    /// One assignment per requested service that has live hosts.
    pub resources: Vec<ClusterLoadAssignment>,
    /// Always [`EDS_TYPE_URL`].
    pub type_url: String,
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment`, packed in an `Any`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterLoadAssignment {
    /// The `Any` type marker, always [`EDS_TYPE_URL`].
    #[serde(rename = "@type")]
    pub type_marker: String,
    /// The service name (Envoy's cluster is one service).
    pub cluster_name: String,
    /// The hosts, grouped by locality.
    pub endpoints: Vec<LocalityLbEndpoints>,
}

/// Hosts of one locality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalityLbEndpoints {
    /// From the `region` and `az` tags.
    pub locality: Locality,
    /// The locality's hosts, in the order of the host list.
    pub lb_endpoints: Vec<LbEndpoint>,
    /// The sum of its hosts' weights. Envoy reads it only with locality-weighted load
    /// balancing; gRPC's xDS client drops a locality without one.
    pub load_balancing_weight: u32,
}

/// A region and zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Locality {
    /// The `region` tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// The `az` tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbEndpoint {
    /// Where Envoy connects: the host's address and port.
    pub endpoint: Endpoint,
    /// `HEALTHY` or `DRAINING`.
    pub health_status: String,
    /// Override, else tag, else 1.
    pub load_balancing_weight: u32,
    /// `filter_metadata["envoy.lb"].canary` for canaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// `Endpoint { address { socket_address } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `{"socket_address": ...}`.
    pub address: Address,
}

/// `core.v3.Address`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    /// Always a socket address (no pipe).
    pub socket_address: SocketAddress,
}

/// `core.v3.SocketAddress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketAddress {
    /// An IP literal.
    pub address: String,
    /// The host's port, 1-65535.
    pub port_value: u16,
}

/// `core.v3.Metadata`: `filter_metadata` by filter name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Filter name to a JSON `Struct`.
    pub filter_metadata: serde_json::Map<String, serde_json::Value>,
}
