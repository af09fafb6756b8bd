//! Reading a request body under a size bound and a deadline: the one implementation behind
//! the HTTP API's bodies (`http/body.rs`) and gossip messages (`gossip/http_transport.rs`).
//! A leaf: it knows bodies, not what either caller answers.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the bound: declared so (refused before a byte is read), or found so while reading.
    TooLarge {
        /// Whether `Content-Length` said so, before any byte was read.
        declared: bool,
    },
    /// Not all of it arrived within the deadline.
    Timeout,
    /// The connection failed while reading.
    Unreadable(axum::BoxError),
}

/// Reads a body of at most `limit` bytes within `timeout`.
///
/// A body whose declared `Content-Length` is over `limit` is refused before a byte of it is
/// read: waiting for bytes we would refuse anyway lets a sender hold the connection until the
/// read timeout (and hyper closes the connection after the answer, so the unread body is
/// never drained).
pub(crate) async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge { declared: true });
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                Err(BodyError::TooLarge { declared: false })
            } else {
                Err(BodyError::Unreadable(e))
            }
        }
    }
}
