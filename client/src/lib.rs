//! The client library of the `discovery` registry: keep a host registered, and keep a
//! service's host list up to date, through registry outages.
//!
//! - [`RegistryClient`]: the HTTP API over several registry nodes, failing over between them.
//! - [`Heartbeater`]: re-sends a host's registration every interval (with jitter), backs
//!   off while no node answers, marks the host `draining` and deregisters it on
//!   [`Heartbeater::shutdown`].
//! - [`HostWatcher`]: follows a service with long polls and keeps the last good list on
//!   any failure, optionally in a cache file it can start from; refuses a drastically
//!   smaller list until it is confirmed for a grace period ([`ShrinkPolicy`]); hands out
//!   lock-free snapshots and change notifications ([`HostList`]).
//! - [`HaproxySync`]: the HAProxy plugin; keeps HAProxy backends equal to services' host
//!   lists through HAProxy's runtime API, keeping vanished hosts while
//!   HAProxy's own checks find them up.
//!
//! # When a registry node freezes
//!
//! A frozen node (SIGSTOP, a stuck VM, a full GC pause) still accepts connections and
//! answers nothing; only a deadline tells it from a slow one. One rule covers every
//! request: each request to one node has a timeout `T`, a long poll `wait + T`, and on
//! that deadline the next node is asked at once, in the same call. `T` follows what the
//! caller does:
//!
//! | caller | `T` | default |
//! |---|---|---|
//! | one-off calls ([`RegistryClient::hosts`], `services`, `peers`, `register`, `deregister`) | [`RegistryClientBuilder::request_timeout`] | [`DEFAULT_REQUEST_TIMEOUT`], 2 s |
//! | [`HostWatcher`] polls | the same, on top of [`WatcherConfig::wait`] | 2 s + [`DEFAULT_POLL_WAIT`], 5 s |
//! | [`Heartbeater`] beats | [`HeartbeatConfig::timeout`] | half the interval within [`MIN_HEARTBEAT_TIMEOUT`]..[`MAX_HEARTBEAT_TIMEOUT`] (1..10 s) |
//!
//! So a [`HostWatcher`] learns of a change within `wait + T` (7 s by default,
//! [`WatcherConfig::blind_bound`], plus the next node's answer time) of it reaching a node
//! that answers, even when the node it polls freezes; it logs a warning for the failover, counts it in
//! [`WatcherStatus::failovers`], and keeps its list meanwhile. A [`Heartbeater`]'s beat
//! lands within `interval + T` through a frozen node (1.5 × the interval in the default
//! range), so a TTL of twice the interval keeps the host listed. Each further frozen node
//! in the way adds one `T`.
//!
//! The wire types come from [`discovery_api`] (re-exported as [`api`]), so client and
//! server share one definition of the format and its validation rules. `https://` registries
//! are reached with [`RegistryClientBuilder::tls`] (a CA, and a client certificate for mutual TLS).
//!
//! ```no_run
//! use discovery_client::{
//!     HeartbeatConfig, Heartbeater, HostWatcher, Registration, RegistryClient, ServiceName,
//!     WatcherConfig,
//! };
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = RegistryClient::new(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])?;
//!
//! // Announce this host.
//! let me = Registration::from_json(br#"{"ip": "10.0.0.7", "port": 8080, "revision": "4f2a9c1"}"#)?;
//! let payments = ServiceName::parse("payments")?;
//! let heartbeater =
//!     Heartbeater::spawn(registry.clone(), payments, me, HeartbeatConfig::default())?;
//!
//! // Follow a dependency.
//! let billing = ServiceName::parse("billing")?;
//! let mut watcher = HostWatcher::spawn(registry, billing, WatcherConfig::default())?;
//! let hosts = watcher.changed().await; // the first list
//! if let Some(host) = hosts.first() {
//!     println!("calling billing at {}:{}", host.ip_address, host.port);
//! }
//!
//! watcher.shutdown().await;
//! heartbeater.shutdown().await?; // draining, then deregistered
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod backoff;
mod cache;
mod error;
mod haproxy;
mod heartbeat;
mod registry_client;
mod shrink_guard;
#[cfg(test)]
mod stub;
pub mod tls;
mod watcher;

pub use discovery_api as api;
pub use discovery_api::{Host, HostStatus, HostsResponse, Port, Registration, ServiceName};
pub use error::{Error, Failure};
pub use haproxy::{BackendBinding, HaproxySync, HaproxySyncConfig, HealthCheck};
pub use heartbeat::{
    HeartbeatConfig, HeartbeatOutcome, Heartbeater, MAX_HEARTBEAT_TIMEOUT, MIN_HEARTBEAT_TIMEOUT,
};
pub use registry_client::{
    normalize_url, RegistryClient, RegistryClientBuilder, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use shrink_guard::ShrinkPolicy;
pub use tls::{ClientTls, TlsError};
pub use watcher::{
    Failover, HeldBack, HostList, HostWatcher, ListSource, WatcherConfig, WatcherStatus,
    DEFAULT_POLL_WAIT,
};
