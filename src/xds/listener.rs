//! The xDS listener's connections, before tonic sees them: accepted within the node's
//! connection budget ([`Acceptor`], as for HTTP), and handed over only once the client sent
//! the HTTP/2 connection preface within `--read-timeout`. A connection that sends nothing,
//! or something that is not HTTP/2, is closed and frees its slot; tonic's own keepalive
//! only starts after the handshake, so without this an idle socket holds a file descriptor
//! for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::accept::Acceptor;

/// What every HTTP/2 client sends first (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection that sent the preface: the preface is read again by tonic, and the
/// connection's slot is held until tonic drops it.
pub(crate) struct Conn {
    stream: TcpStream,
    /// How much of [`PREFACE`] tonic has read back.
    replayed: usize,
    _permit: OwnedSemaphorePermit,
}

/// Accepts connections and yields those that sent the preface in time, until shutdown.
pub(crate) fn incoming(
    acceptor: Acceptor,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> impl Stream<Item = Result<Conn, std::io::Error>> {
    let (conns_tx, conns_rx) = mpsc::channel(64);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        while let Some((stream, peer, permit)) = acceptor.next(&shutdown).await {
            let conns_tx = conns_tx.clone();
            handshakes.spawn(async move {
                match tokio::time::timeout(handshake_timeout, preface(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn = Conn {
                            stream,
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
async fn preface(mut stream: TcpStream) -> std::io::Result<TcpStream> {
    let mut got = [0u8; PREFACE.len()];
    stream.read_exact(&mut got).await?;
    if &got != PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/2 connection preface (xDS is gRPC: HTTP/2 without TLS)",
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
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}
