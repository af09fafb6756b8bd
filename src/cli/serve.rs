//! `discovery serve`: runs a registry node until SIGTERM or SIGINT.

use std::io::Write;

use crate::config::{Config, ConfigError, ServeArgs};
use crate::server::Server;

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the node. Prints `listening on http://ADDR` (`https://` with TLS) on stdout once
/// bound, for scripts and tests that start it on port 0.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let config = Config::from_args(args)?;
    let scheme = config.scheme();
    let server = Server::start(config).await?;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {scheme}://{}", server.local_addr());
    if let Some(xds) = server.xds_addr() {
        let _ = writeln!(stdout, "xds listening on {xds}");
    }
    let _ = stdout.flush();
    super::shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
