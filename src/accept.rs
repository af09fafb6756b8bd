//! Accepting TCP connections within a budget, for every listener of a node (HTTP and xDS):
//! at most `max` open at once (the rest wait in the kernel's accept queue), and a failed
//! `accept` (out of file descriptors) backs off instead of spinning.
//!
//! It hands out a connection with its permit; what is served on it, and for how long, is the
//! caller's business, but for the write timeout both listeners put on it
//! ([`with_write_timeout`]). It must not read from the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::state::now;
use crate::throttle::Throttle;

/// A connection's byte stream once accepted, plain or TLS (boxed by the listeners, which serve
/// both alike).
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> Io for T {}

/// Which listener a connection came to. Both take the same certificate, CA and client
/// certificate policy; they differ in ALPN and in what a client that does not speak TLS is
/// told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// `--listen`: HTTP/1.1.
    Http,
    /// `--xds-listen`: gRPC, HTTP/2 only (ALPN `h2`, which gRPC clients require).
    Xds,
}

/// How long accepting pauses after `accept` failed (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A listener with its connection budget.
pub(crate) struct Acceptor {
    listener: TcpListener,
    limit: Arc<Semaphore>,
    max: usize,
    /// Which listener, for the log.
    what: &'static str,
    /// The two lines below, which clients cause at will (idle connections at the limit,
    /// connections past the file descriptor limit).
    full_log: Throttle,
    failed_log: Throttle,
}

impl Acceptor {
    /// At most `max` connections of `listener` open at once.
    pub(crate) fn new(listener: TcpListener, max: usize, what: &'static str) -> Acceptor {
        Acceptor {
            listener,
            limit: Arc::new(Semaphore::new(max)),
            max,
            what,
            full_log: Throttle::new(),
            failed_log: Throttle::new(),
        }
    }

    /// The next connection, with the permit that holds its place (drop it when the connection
    /// closes); `None` on shutdown.
    pub(crate) async fn next(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            let permit = match self.limit.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // At the limit: new clients wait in the kernel's accept queue until a
                    // connection closes.
                    if self.full_log.allow(now_secs()) {
                        tracing::warn!(
                            listener = self.what,
                            max_connections = self.max,
                            "connection limit reached; new connections wait to be accepted"
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        permit = self.limit.clone().acquire_owned() => permit.ok()?,
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        return Some((stream, peer, permit));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        if self.failed_log.allow(now_secs()) {
                            tracing::warn!(listener = self.what, error = %e, "accept failed");
                        }
                        drop(permit);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
    }
}

fn now_secs() -> u64 {
    now() / 1_000_000
}

/// A connection whose writes are cut after `timeout` without progress (a client that never
/// reads), as both listeners serve them. The timeout counts only while a write is pending
/// (the socket's send buffer is full) and costs a flag test per write otherwise. Boxed once
/// per connection because it holds a timer and hyper and tonic want an `Unpin` socket.
pub(crate) fn with_write_timeout(
    stream: TcpStream,
    timeout: Duration,
) -> std::pin::Pin<Box<tokio_io_timeout::TimeoutWriter<TcpStream>>> {
    let mut stream = tokio_io_timeout::TimeoutWriter::new(stream);
    stream.set_timeout(Some(timeout));
    Box::pin(stream)
}
