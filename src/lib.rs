//! `discovery`: an eventually consistent service discovery registry.
//!
//! The crate is the server and its CLI. The folders are the architecture (see
//! docs/architecture.md): `registry` is the pure core; `http` and `gossip` sit on it and never
//! import each other; `server` wires them; `cli` holds one file per subcommand.
//!
//! Modules are private. What is public is what the binary (`main.rs`), the integration tests
//! (`tests/`) and the gossip benchmark (`bench/`) need: the subcommands, the configuration, the
//! registry core and the gossip node with its in-memory network.

mod accept;
mod auth;
mod bounded_body;
pub mod cli;
mod config;
pub mod gossip;
mod http;
mod long_poll;
mod metrics;
mod plaintext;
pub mod registry;
mod server;
mod stall;
mod state;
mod throttle;
mod tls;
mod xds;

pub use config::{Config, LogFormat, ServeArgs};
pub use http::{Route, ROUTES};
pub use state::NodeState;
