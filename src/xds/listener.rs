//! The xDS listener's connections, before tonic sees them: accepted within the node's
//! connection budget ([`Acceptor`], as for HTTP), with TLS when the node has a certificate
//! (the HTTP listener's handshake, [`Tls::accept`], with ALPN `h2`), and handed over only once
//! the client sent the HTTP/2 connection preface within `--read-timeout` of the accept. A
//! connection that sends nothing, or something that is not HTTP/2, is closed and frees its
//! slot; tonic's own keepalive only starts after the handshake, so without this an idle socket
//! holds a file descriptor for ever.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::accept::{Acceptor, Io, Port};
use crate::plaintext::PREFACE;
use crate::state::NodeState;
use crate::tls::{self, Identity, Tls};

/// A connection that sent the preface: the preface is read again by tonic, and the
/// connection's slot is held until tonic drops it.
pub(crate) struct Conn {
    stream: Pin<Box<dyn Io>>,
    info: ConnInfo,
    /// How much of [`PREFACE`] tonic has read back.
    replayed: usize,
    _permit: OwnedSemaphorePermit,
}

/// What each request of a connection carries (tonic puts it in the request's extensions).
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// The client's address.
    pub tcp: TcpConnectInfo,
    /// Its client certificate, with TLS.
    pub identity: Option<Arc<Identity>>,
}

/// Accepts connections and yields those that sent the preface in time, until shutdown.
pub(crate) fn incoming(
    acceptor: Acceptor,
    tls: Option<Arc<Tls>>,
    shared: Arc<NodeState>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> impl Stream<Item = Result<Conn, std::io::Error>> {
    let (conns_tx, conns_rx) = mpsc::channel(64);
    let handshakes = tasks.clone();
    let preface_timeout = shared.config.limits.read_timeout;
    tasks.spawn(async move {
        while let Some((stream, peer, permit)) = acceptor.next(&shutdown).await {
            let conns_tx = conns_tx.clone();
            let tls = tls.clone();
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            handshakes.spawn(async move {
                // Both bounds count from the accept.
                let deadline = tokio::time::Instant::now() + preface_timeout;
                let tcp = stream.connect_info();
                let secured = tls::secure(
                    tls.as_ref(),
                    stream,
                    Port::Xds,
                    peer,
                    &shared.metrics,
                    &shutdown,
                );
                let Some((stream, identity)) = secured.await else {
                    return;
                };
                match tokio::time::timeout_at(deadline, preface(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn = Conn {
                            stream,
                            info: ConnInfo { tcp, identity },
                            replayed: 0,
                            _permit: permit,
                        };
                        let _ = conns_tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "xDS connection refused"),
                    Err(_) => {
                        tracing::debug!(%peer, "xDS connection sent no HTTP/2 preface in time")
                    }
                }
            });
        }
    });
    futures_util::stream::unfold(conns_rx, |mut conns_rx| async move {
        conns_rx.recv().await.map(|conn| (conn, conns_rx))
    })
}

/// Reads the preface, or says why not.
async fn preface(mut stream: Pin<Box<dyn Io>>) -> std::io::Result<Pin<Box<dyn Io>>> {
    let mut got = [0u8; PREFACE.len()];
    stream.read_exact(&mut got).await?;
    if &got != PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/2 connection preface (xDS is gRPC: HTTP/2)",
        ));
    }
    Ok(stream)
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = PREFACE.get(this.replayed..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        this.stream.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.stream.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}
