//! Gossip between processes over HTTP, both halves:
//! - the client, [`HttpTransport`]: one `POST` per message to the peer's [`SYNC_PATH`], with
//!   the `--peer-token` as a bearer token, a timeout, and a bound on the answer's size (read
//!   in chunks and cut off past it), decoded on a blocking thread;
//! - the server, [`Endpoint`]: the route other nodes call. It treats every byte as hostile
//!   (SPEC 4.2, 8): the body is read under a size bound and a deadline (the same
//!   [`bounded_body`] read as the HTTP API's), then decoded, merged and answered on a
//!   blocking thread, at most [`DECODE_SLOTS`] at once, so that no message, however crafted,
//!   stalls request handling. Refusals have the API's JSON error shape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use discovery_api::ErrorBody;
use discovery_client::ClientTls;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::Semaphore;

use super::messages::{DecodeError, SyncRequest, SyncResponse, MAX_MESSAGE_BYTES};
use super::node::{MessageRefusal, Node};
use super::transport::{Exchanged, Transport, TransportError};
use crate::auth;
use crate::bounded_body::{self, BodyError};
use crate::metrics::{Direction, RefusedMessage};
use crate::state::now;
use crate::throttle::Throttle;

/// The gossip endpoint: `POST` a [`SyncRequest`], get a [`messages::SyncResponse`].
pub const SYNC_PATH: &str = "/v1/gossip/sync";
/// The media type of gossip messages (deflated JSON, see [`messages`]).
pub const CONTENT_TYPE_GOSSIP: &str = "application/x-discovery-gossip";
/// Gossip messages decoded and merged at once, each on a blocking thread. Two keep a
/// 2-core node's async workers free for reads even when every slot holds a hostile message
/// (each costs at most a few ms to refuse), and are plenty for a cluster's legal traffic.
pub(crate) const DECODE_SLOTS: usize = 2;
/// How long a message waits for a decode slot before it is answered `503` with
/// `Retry-After` (the sender counts a failed exchange and the next round repairs it). Under
/// the 2 s the sending node waits for an answer by default.
pub(crate) const DECODE_WAIT: Duration = Duration::from_secs(1);

/// Most bytes of a refusal's body read for its reason (any address can be named a peer).
const MAX_REASON_BYTES: usize = 4096;

/// The client half: exchanges with peers over HTTP.
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
            // A TLS node's gossip (and its --peer-token) never goes out in clear text.
            .https_only(tls.is_some())
            .build()
            .map_err(|e| TransportError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(HttpTransport { client, token })
    }
}

fn failure(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if discovery_client::tls::wrong_name(&e) {
        TransportError::WrongName(discovery_client::tls::why_unreachable(&e))
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
            // The peer's reason (which certificate, which token) is worth the few bytes.
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                if body.len() + chunk.len() > MAX_REASON_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let why = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| format!("{status}: {}", b.error))
                .unwrap_or_else(|_| status.to_string());
            return Err(TransportError::Refused(why));
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
        // untrusted as a request (see [`sync`]).
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

// The server half.

/// The state of the gossip endpoint.
#[derive(Clone)]
pub(crate) struct Endpoint {
    node: Arc<Node<HttpTransport>>,
    /// See [`DECODE_SLOTS`].
    slots: Arc<Semaphore>,
    /// When a refused message was last logged.
    warned: Arc<Throttle>,
}

impl Endpoint {
    /// The endpoint of `node`, decoding at most `slots` messages at once ([`DECODE_SLOTS`]).
    pub(crate) fn new(node: Arc<Node<HttpTransport>>, slots: usize) -> Self {
        Endpoint {
            node,
            slots: Arc::new(Semaphore::new(slots)),
            warned: Arc::new(Throttle::new()),
        }
    }

    /// The gossip route, merged into the node's router.
    pub(crate) fn routes(&self) -> axum::Router {
        axum::Router::new()
            .route(SYNC_PATH, post(sync))
            .with_state(self.clone())
    }
}

/// A refusal, in the API's JSON error shape.
fn refuse(status: StatusCode, error: &str) -> Response {
    let body = ErrorBody {
        error: error.to_owned(),
    };
    (status, Json(body)).into_response()
}

/// What the blocking part of [`sync`] came to.
enum Handled {
    Answer(Vec<u8>),
    Undecodable(DecodeError),
    Refused(MessageRefusal),
}

/// `POST /v1/gossip/sync`: a peer's exchange. Refused without the peer token (when set);
/// a malformed message, one over a bound, one with a bad sender or one claiming this node's
/// id is counted, logged with its source address, answered `4xx` and changes nothing.
async fn sync(State(endpoint): State<Endpoint>, request: Request) -> Response {
    let node = endpoint.node.clone();
    let shared = node.shared().clone();
    let settings = node.settings();
    if let Some(why) =
        crate::tls::gossip_refused(settings.client_cert_required, request.extensions())
    {
        return refuse(StatusCode::UNAUTHORIZED, why);
    }
    if !auth::peer_allowed(settings.peer_token.as_deref(), request.headers()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "gossip requires the peer token: Authorization: Bearer <--peer-token>",
        );
    }
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let metrics = &shared.metrics;
    // Counted every time; logged at most once every `throttle::EVERY_SECS` (a sender can
    // refuse messages at will), with the source address and what was wrong.
    let count = |kind: RefusedMessage, why: &dyn std::fmt::Display| {
        metrics.gossip_message_refused(kind);
        if endpoint.warned.allow(now() / crate::registry::SECOND) {
            tracing::warn!(peer = ?remote, ?kind, %why, "refused a gossip message (at most one line every 10 s)");
        }
    };
    let read = bounded_body::read(
        request.into_body(),
        MAX_MESSAGE_BYTES,
        settings.read_timeout,
    );
    let body = match read.await {
        Ok(body) => body,
        Err(BodyError::TooLarge { declared }) => {
            let why = if declared {
                "declared over the size bound"
            } else {
                "over the size bound"
            };
            count(RefusedMessage::too_large, &why);
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "gossip message too large");
        }
        Err(BodyError::Timeout) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the gossip message came too slowly",
            )
        }
        Err(BodyError::Unreadable(_)) => {
            return refuse(StatusCode::BAD_REQUEST, "could not read the gossip message")
        }
    };
    let permit = match tokio::time::timeout(DECODE_WAIT, endpoint.slots.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            count(
                RefusedMessage::busy,
                &"every decode slot is taken; answered 503",
            );
            let busy = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many gossip messages at once; retry",
            );
            return ([(header::RETRY_AFTER, "1")], busy).into_response();
        }
    };
    let received = body.len() as u64;
    let work = tokio::task::spawn_blocking(move || {
        // Held until the work is done, even if the client is gone: the slot bounds CPU.
        let _permit = permit;
        match SyncRequest::decode(&body) {
            Err(e) => Handled::Undecodable(e),
            Ok(req) => match node.handle(req, remote) {
                Ok(answer) => Handled::Answer(answer.encode()),
                Err(refusal) => Handled::Refused(refusal),
            },
        }
    });
    let response = match work.await {
        Ok(Handled::Answer(response)) => response,
        Ok(Handled::Refused(refusal)) => {
            // Counted and logged by the node.
            return refuse(StatusCode::CONFLICT, &refusal.to_string());
        }
        Ok(Handled::Undecodable(e)) => {
            let kind = match e {
                DecodeError::TooLarge => RefusedMessage::too_large,
                DecodeError::Malformed(_) => RefusedMessage::malformed,
                DecodeError::BadSender(_) => RefusedMessage::bad_sender,
            };
            count(kind, &e);
            return refuse(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e) => {
            tracing::error!(error = %e, "gossip message handling failed");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    metrics.gossip_bytes(Direction::received, received);
    metrics.gossip_bytes(Direction::sent, response.len() as u64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE_GOSSIP)],
        response,
    )
        .into_response()
}
