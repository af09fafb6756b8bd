//! Anti-entropy between registry nodes (SPEC 4.1, 4.2, 4.4): membership, push-pull rounds
//! every `--gossip-interval`, prompt pushes of new writes, bootstrap readiness, and the
//! gossip endpoint other nodes call.
//!
//! - [`run_loop`]: [`spawn`] and the loop of a running node (rounds, pushes, DNS);
//! - [`node`]: the logic of one node (exchanges, answers, readiness), transport-agnostic;
//! - [`peers`]: the peer table (alive / suspect / dead, learned peers);
//! - [`messages`]: the wire messages and their compact encoding;
//! - [`settings`]: what the wiring hands gossip (node id, peers, interval, tokens...);
//! - [`transport`]: the small trait between the logic and the network, implemented by
//!   [`http_transport`] (processes: the client half and the endpoint peers call) and
//!   [`memory`] (tests and benchmarks, cuttable links).
//!
//! This module owns no registry state: it reads digests and deltas from the registry and
//! merges what peers send, then wakes long polls through [`NodeState::publish`]. It never
//! imports the HTTP API module (`crate::http`) nor the node's `Config`: its settings are
//! handed to it.

mod http_transport;
pub mod memory;
pub mod messages;
pub mod node;
pub(crate) mod peers;
mod run_loop;
mod settings;
pub(crate) mod transport;

#[cfg(test)]
mod tests;

pub use http_transport::{CONTENT_TYPE_GOSSIP, SYNC_PATH};
pub use memory::MemoryNetwork;
pub(crate) use messages::MAX_PEER_URL_LEN;
pub use node::{Clock, Mode, Node};
pub(crate) use peers::{advertised, normalize_peer};
pub(crate) use run_loop::{own_address, spawn};
pub use settings::Settings;
