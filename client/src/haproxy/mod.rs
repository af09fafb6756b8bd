//! The HAProxy plugin: keeps HAProxy backends equal to the registry's host lists through
//! HAProxy's runtime API on its admin socket, without reloads (SPEC 6).
//!
//! - `runtime`: `RuntimeApi`, the socket client (one command per connection, timeouts,
//!   HAProxy's error sentences as `HaproxyError::Refused`).
//! - `parse`: readers of `show servers state`, `show stat` and `show info`.
//! - `naming`: managed server names (`d-10.0.0.7-8080`), so configuration servers are
//!   never touched.
//! - `plan`: the pure planner (wanted hosts + what HAProxy reports + `now` → actions),
//!   where the stale-tolerance rules live.
//! - `sync`: [`HaproxySync`], one task per backend that runs the planner's actions.
//!
//! Facts about HAProxy 2.6 this relies on are in the team's notes
//! (`notes/haproxy-runtime-api.md`); the comments cite them as "gotcha N".

mod naming;
mod parse;
mod plan;
mod runtime;
mod sync;

pub use sync::{BackendBinding, HaproxySync, HaproxySyncConfig, HealthCheck};
