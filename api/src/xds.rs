//! `GET /v1/xds/clients`: the xDS streams a node serves (Envoy proxies and proxyless gRPC
//! clients), and `GET /v1/prometheus/targets`: Prometheus's `http_sd_configs` answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The answer of `GET /v1/xds/clients`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdsClientsResponse {
    /// This node's id.
    pub node_id: String,
    /// Open streams, oldest first.
    pub clients: Vec<XdsClient>,
}

/// One open xDS stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdsClient {
    /// The stream's number on this node.
    pub stream: u64,
    /// `node.id` of its first request (empty when not sent).
    pub node_id: String,
    /// `node.cluster` of its first request.
    pub node_cluster: String,
    /// The client's address.
    pub peer: String,
    /// `ads`, `ads-delta`, `eds` or `eds-delta`.
    pub protocol: String,
    /// When the stream opened (RFC 3339).
    pub connected_at: String,
    /// Per resource type, what it subscribed to and answered.
    pub types: Vec<XdsTypeStatus>,
}

/// One resource type on a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdsTypeStatus {
    /// The type URL.
    pub type_url: String,
    /// Whether it subscribed to every service.
    pub wildcard: bool,
    /// Names it subscribed to (besides a wildcard).
    pub names: usize,
    /// The version of the latest response sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_version: Option<String>,
    /// Responses sent.
    pub responses: u64,
    /// The version it last accepted (ACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_version: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<String>,
    /// The version it last rejected (NACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nacked_version: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nacked_at: Option<String>,
    /// The client's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nack_error: Option<String>,
}

/// One target group of Prometheus's HTTP service discovery: the labels hold for every
/// target in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// `host:port`, IPv6 hosts in brackets.
    pub targets: Vec<String>,
    /// `__meta_discovery_*` labels.
    pub labels: BTreeMap<String, String>,
}
