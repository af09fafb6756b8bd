//! Gossip between processes: one HTTP `POST` per message to the peer's
//! [`SYNC_PATH`](super::SYNC_PATH), with the `--peer-token` as a bearer token, a timeout, and a
//! bound on the answer's size (a peer's answer is read in chunks and cut off past it). The
//! answer is decoded on a blocking thread, like a request.

use std::time::Duration;

use discovery_client::ClientTls;
use reqwest::header::CONTENT_TYPE;

use super::messages::{SyncRequest, SyncResponse, MAX_MESSAGE_BYTES};
use super::transport::{Exchanged, Transport, TransportError};
use super::{CONTENT_TYPE_GOSSIP, SYNC_PATH};

/// See the module docs.
pub(crate) struct HttpTransport {
    client: reqwest::Client,
    token: Option<String>,
}

impl HttpTransport {
    /// A transport whose exchanges give up after `timeout`, speaking TLS to `https://` peers
    /// as `tls` says.
    pub(crate) fn new(
        token: Option<String>,
        timeout: Duration,
        tls: Option<ClientTls>,
    ) -> Result<Self, TransportError> {
        // Peers are our own nodes on the private network: never through a proxy.
        let client = discovery_client::tls::http_client(tls.as_ref())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TransportError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(HttpTransport { client, token })
    }
}

fn failure(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Unreachable(discovery_client::tls::why_unreachable(&e))
    }
}

impl Transport for HttpTransport {
    async fn exchange(&self, peer: &str, msg: SyncRequest) -> Result<Exchanged, TransportError> {
        let body = msg.encode();
        let sent = body.len();
        let mut request = self
            .client
            .post(format!("{peer}{SYNC_PATH}"))
            .header(CONTENT_TYPE, CONTENT_TYPE_GOSSIP)
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.map_err(failure)?;
        let status = response.status();
        if status == reqwest::StatusCode::CONFLICT {
            return Err(TransportError::SameId);
        }
        if !status.is_success() {
            return Err(TransportError::Refused(status.to_string()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failure)? {
            if answer.len() + chunk.len() > MAX_MESSAGE_BYTES {
                return Err(TransportError::BadResponse("answer too large".into()));
            }
            answer.extend_from_slice(&chunk);
        }
        let received = answer.len();
        // Off the async workers: any address can be named as a peer, so an answer is as
        // untrusted as a request (see `super::sync`).
        let response = tokio::task::spawn_blocking(move || SyncResponse::decode(&answer))
            .await
            .map_err(|e| TransportError::BadResponse(e.to_string()))?
            .map_err(|e| TransportError::BadResponse(e.to_string()))?;
        Ok(Exchanged {
            response,
            sent,
            received,
        })
    }
}
