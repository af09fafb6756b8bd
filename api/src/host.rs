//! Response bodies: host lists, the service summary and the peer table.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{Port, RepoName, Revision, ServiceName, Tags, ValidationError};

/// Whether a host takes new traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Serving (the default).
    #[default]
    Up,
    /// Finishing its work; proxies send it no new requests.
    Draining,
}

impl HostStatus {
    /// Parses `up` or `draining`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "up" => Ok(HostStatus::Up),
            "draining" => Ok(HostStatus::Draining),
            _ => Err(ValidationError::invalid(
                "status",
                format!("must be \"up\" or \"draining\", got {s:?}"),
            )),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Up => "up",
            HostStatus::Draining => "draining",
        }
    }
}

/// One live host as the registry serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The service it belongs to.
    pub service: ServiceName,
    /// The address it serves on, as it registered it (or as the registry saw it, with
    /// `auto_ip`).
    pub ip_address: IpAddr,
    /// The port it serves on; with the address and the service, the host's identity.
    pub port: Port,
    /// The revision (build, commit) it runs, as its heartbeat said.
    pub revision: Revision,
    /// Its repository, `""` when absent.
    #[serde(default = "RepoName::empty")]
    pub service_repo_name: RepoName,
    /// When a node last took its heartbeat: RFC 3339 UTC with microseconds.
    pub last_check_in: String,
    /// Its tags; `{}` when it has none.
    #[serde(default)]
    pub tags: Tags,
    /// `up` or `draining`.
    #[serde(default)]
    pub status: HostStatus,
    /// The effective weight: the operator override, else the tag, else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_weight: Option<u8>,
    /// Its time to live in seconds, after clamping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl Host {
    /// The weight a proxy gives the host: `load_balancing_weight` (the override, else the
    /// tag), else 1, as Envoy does.
    pub fn weight(&self) -> u8 {
        self.load_balancing_weight.unwrap_or(1)
    }
}

/// `GET /v1/registration/{service}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsResponse {
    /// The service asked for.
    pub service: String,
    /// The registry's environment (`--env`).
    pub env: String,
    /// The live hosts, sorted by address and port.
    pub hosts: Vec<Host>,
}

/// `GET /v1/registration/repo/{service_repo_name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoHostsResponse {
    /// The repository asked for.
    pub service_repo_name: String,
    /// The registry's environment (`--env`).
    pub env: String,
    /// The live hosts of every service built from it.
    pub hosts: Vec<Host>,
}

/// One row of `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// The service's name.
    pub service: String,
    /// Every host served, stale ones included.
    pub hosts: u64,
    /// Hosts kept past their TTL by the expiry guard.
    pub stale: u64,
    /// The service's change index on this node.
    pub index: u64,
}

/// `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesResponse {
    /// The registry's environment (`--env`).
    pub env: String,
    /// Every service this node holds, sorted by name.
    pub services: Vec<ServiceSummary>,
    /// The expiry guard's state on this node (absent from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ExpiryStatus>,
}

/// The expiry guard's measure at the node's last sweep (`GET /v1/services`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryStatus {
    /// The guard holds overdue hosts as stale: this node probably lost contact.
    pub guard_engaged: bool,
    /// Hosts lost within the guard's window: held, in their expiry grace, or dropped.
    pub lost: u64,
    /// The hosts `lost` is a fraction of: those held now plus those dropped in the window.
    /// The guard engages when `lost` is more than `--expiry-guard` of this (and it is at
    /// least 10).
    pub of: u64,
    /// Hosts past their TTL in their expiry grace (still served).
    pub grace: u64,
}

/// A peer's health as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Exchanges succeed.
    Alive,
    /// Recent exchanges failed.
    Suspect,
    /// No exchange has succeeded for a long time.
    Dead,
}

impl PeerState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Dead => "dead",
        }
    }
}

/// One row of `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's base URL.
    pub address: String,
    /// The peer's node id, once known.
    pub node_id: Option<String>,
    /// Alive, suspect or dead.
    pub state: PeerState,
    /// The last successful exchange, RFC 3339, if any.
    pub last_success: Option<String>,
    /// Seconds since the last successful exchange, if any.
    pub last_success_age_secs: Option<f64>,
    /// How many changes this node holds that the peer had not acknowledged at the last exchange.
    pub behind: u64,
    /// Consecutive failed exchanges.
    pub failures: u64,
}

/// `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersResponse {
    /// This node's id.
    pub node_id: String,
    /// Whether this node holds a usable state.
    pub ready: bool,
    /// Whether gossip requires a token (`--peer-token`). When `false`, anyone who can reach
    /// the node can send it gossip.
    #[serde(default)]
    pub gossip_authenticated: bool,
    /// The base URL this node gives its peers in every gossip message (`--advertise`, or its
    /// `--listen` address when that is not a wildcard); absent when peers use the address its
    /// messages come from, with its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When this node's TLS certificate stops being valid (RFC 3339): the earliest not-after
    /// of the chain it presents, as last loaded; absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate_not_after: Option<String>,
    /// The peers this node knows.
    pub peers: Vec<PeerInfo>,
}
