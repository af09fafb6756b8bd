//! `discovery`: an eventually consistent service discovery registry.
//!
//! The crate is the server and its CLI. The folders are the architecture (see STYLE.md):
//! `registry` is the pure core; `http` and `gossip` sit on it and never import each other;
//! `server` wires them; `cli` holds one file per subcommand.

pub mod auth;
pub mod changes;
pub mod cli;
pub mod config;
pub mod gossip;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod shared;
pub mod stall;
mod throttle;
pub mod tls;
