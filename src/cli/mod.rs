//! The subcommands of the `discovery` binary, one file each. Thin: parse, call the library,
//! print.

pub mod health;
pub mod serve;
