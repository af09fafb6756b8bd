//! The wire contract of the `discovery` registry: every request and response body, and the
//! validated values they are made of.
//!
//! This crate does no IO. The server parses requests with it and the client builds requests
//! and reads responses with it, so both sides share one definition of the format and one set
//! of validation rules (SPEC section 2). Every validated newtype rejects bad input with a
//! [`ValidationError`] whose message tells the user what to fix.
#![deny(missing_docs)]

mod envoy;
mod error;
mod host;
mod names;
mod registration;
mod strict_json;
mod tags;
mod xds;

pub use envoy::{
    Address, ClusterLoadAssignment, DiscoveryRequest, DiscoveryResponse, Endpoint, LbEndpoint,
    Locality, LocalityLbEndpoints, Metadata, SocketAddress, EDS_TYPE_URL,
};
pub use error::{ErrorBody, ValidationError};
pub use host::{
    ExpiryStatus, Host, HostStatus, HostsResponse, PeerInfo, PeerState, PeersResponse,
    RepoHostsResponse, ServiceSummary, ServicesResponse,
};
pub use names::{Port, RepoName, Revision, ServiceName, Weight};
pub use registration::{parse_bool, Registration, WeightUpdate};
pub use tags::{TagKey, TagValue, Tags};
pub use xds::{TargetGroup, XdsClient, XdsClientsResponse, XdsTypeStatus};

/// The largest number of seconds a long poll may wait (SPEC section 8).
pub const MAX_WAIT_SECS: u64 = 300;

/// Response header carrying the per-service change index (SPEC 3.1).
pub const INDEX_HEADER: &str = "x-discovery-index";
