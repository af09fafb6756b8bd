//! The subcommands of the `discovery` binary, one file each. Thin: parse, call the library,
//! print.

pub mod connect;
pub mod haproxy_sync;
pub mod health;
pub mod heartbeat;
pub mod hosts;
pub mod output;
pub mod peers;
pub mod serve;
pub mod services;
