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
    /// The listener could not be bound (or its TLS files did not load). Not a `source`: the
    /// message already says it, and a one-line error chain would say it twice.
    #[error("cannot listen: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ServeError {
    fn from(e: std::io::Error) -> Self {
        ServeError::Io(e)
    }
}

/// Runs the node. Prints `listening on http://ADDR` (`https://` with TLS) on stdout once
/// bound, for scripts and tests that start it on port 0.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let config = Config::from_args(args)?;
    open_files_for(config.limits.max_connections);
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

/// Descriptors beyond the two ports' connections: peers, files, the listeners themselves.
const SPARE_FILES: u64 = 512;

/// Raises the soft limit on open files up to the hard one when the two ports'
/// `--max-connections` (HTTP and xDS each) would not fit under it: with the common soft limit
/// of 1,024, idle connections to one port could otherwise leave none for the other. Warns
/// when even the hard limit is too low.
fn open_files_for(max_connections: usize) {
    let needed = 2 * max_connections as u64 + SPARE_FILES;
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else {
        return;
    };
    let soft = if soft < needed {
        match rlimit::increase_nofile_limit(needed) {
            Ok(raised) => {
                tracing::info!(from = soft, to = raised, "raised the open files limit");
                raised
            }
            Err(error) => {
                tracing::warn!(%error, "could not raise the open files limit");
                soft
            }
        }
    } else {
        soft
    };
    if soft < needed {
        tracing::warn!(
            limit = soft,
            hard,
            needed,
            "the open files limit is below twice --max-connections plus {SPARE_FILES}: idle connections to one port can leave none for the other; raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections"
        );
    }
}
