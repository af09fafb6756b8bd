//! The subcommands of the `discovery` binary, one file each (thin: parse, call the library,
//! print), plus what several of them share: `connect` (registry flags, client, errors),
//! `output` (tables and JSON on stdout) and [`shutdown_signal`].

pub(crate) mod connect;
pub mod haproxy_sync;
pub mod health;
pub mod heartbeat;
pub mod hosts;
pub(crate) mod output;
pub mod peers;
pub mod serve;
pub mod services;

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
