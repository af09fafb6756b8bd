//! Anti-entropy between registry nodes (SPEC 4.1, 4.2, 4.4): membership, push-pull rounds
//! every `--gossip-interval`, prompt pushes of new writes, bootstrap readiness, and the
//! gossip endpoint other nodes call.
//!
//! - [`node`]: the logic of one node (exchanges, answers, readiness), transport-agnostic;
//! - [`peers`]: the peer table (alive / suspect / dead, learned peers);
//! - [`messages`]: the wire messages and their compact encoding;
//! - [`transport`]: the small trait between the logic and the network, implemented by
//!   [`http_transport`] (processes) and [`memory`] (tests and benchmarks, cuttable links).
//!
//! This module owns no registry state: it reads digests and deltas from the registry and
//! merges what peers send, then wakes long polls through [`NodeState::publish`]. It never
//! imports the HTTP API module (`crate::http`).
//!
//! The endpoint treats every byte as hostile (SPEC 4.2, 8): the body is read under a size
//! bound and a deadline, then decoded, merged and answered on a blocking thread, at most
//! [`DECODE_SLOTS`] at once, so that no message, however crafted, stalls request handling.

mod http_transport;
pub mod memory;
pub mod messages;
pub mod node;
pub(crate) mod peers;
pub(crate) mod transport;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use http_transport::HttpTransport;
pub use memory::MemoryNetwork;
pub use node::{Clock, Mode, Node};

use discovery_client::ClientTls;

use crate::auth::{self, Access};
use crate::state::{now, NodeState};
use crate::throttle::Throttle;
use messages::{DecodeError, SyncRequest, MAX_MESSAGE_BYTES};
use node::MessageRefusal;

/// The gossip endpoint: `POST` a [`SyncRequest`], get a [`messages::SyncResponse`].
pub const SYNC_PATH: &str = "/v1/gossip/sync";
/// The media type of gossip messages (deflated JSON, see [`messages`]).
pub const CONTENT_TYPE_GOSSIP: &str = "application/x-discovery-gossip";
/// How long a burst of local writes is gathered before it is pushed: one push carries many.
const PUSH_DEBOUNCE: Duration = Duration::from_millis(5);
/// Gossip messages decoded and merged at once, each on a blocking thread. Two keep a
/// 2-core node's async workers free for reads even when every slot holds a hostile message
/// (each costs at most a few ms to refuse), and are plenty for a cluster's legal traffic.
pub(crate) const DECODE_SLOTS: usize = 2;
/// How long a message waits for a decode slot before it is answered `503` with
/// `Retry-After` (the sender counts a failed exchange and the next round repairs it). Under
/// the 2 s the sending node waits for an answer by default.
pub(crate) const DECODE_WAIT: Duration = Duration::from_secs(1);

type HttpNode = Node<HttpTransport>;

/// The running gossip layer (its loop is owned by the server's task tracker).
pub(crate) struct Gossip {
    endpoint: Endpoint,
}

/// The state of the gossip endpoint.
#[derive(Clone)]
struct Endpoint {
    node: Arc<HttpNode>,
    /// See [`DECODE_SLOTS`].
    slots: Arc<Semaphore>,
    /// When a refused message was last logged.
    warned: Arc<Throttle>,
}

/// Starts gossip for the node listening on `addr`.
pub(crate) fn spawn(
    shared: Arc<NodeState>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
    tls: Option<ClientTls>,
) -> Gossip {
    let cluster = &shared.config.cluster;
    let clustered = !cluster.peers.is_empty() || cluster.peers_dns.is_some();
    let mtls = shared
        .config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth != crate::tls::ClientAuth::Off);
    if clustered && shared.config.tokens.peer.is_none() && !mtls {
        tracing::warn!(
            "gossip is unauthenticated: peers are configured but neither --peer-token nor mutual TLS (--tls-ca) is set, so anyone who can reach this node can send it gossip"
        );
    }
    // Long enough for a page of a snapshot, short enough that a frozen peer does not hold
    // an exchange slot for long.
    let timeout =
        (cluster.gossip_interval * 2).clamp(Duration::from_secs(2), Duration::from_secs(10));
    let transport = HttpTransport::new(shared.config.tokens.peer.clone(), timeout, tls)
        .expect("the HTTP client builds with a plain configuration");
    // A wildcard listen address is no address to give to peers: they use our source
    // address and this port instead.
    let scheme = shared.config.scheme();
    let own = (!addr.ip().is_unspecified()).then(|| format!("{scheme}://{addr}"));
    let clock: Clock = Arc::new(now);
    let node = Arc::new(Node::new(shared, transport, own, addr.port(), clock));
    tasks.spawn(run(node.clone(), shutdown, tasks.clone()));
    Gossip {
        endpoint: Endpoint {
            node,
            slots: Arc::new(Semaphore::new(DECODE_SLOTS)),
            warned: Arc::new(Throttle::new()),
        },
    }
}

impl Gossip {
    /// The gossip endpoints, merged into the node's router.
    pub(crate) fn routes(&self) -> axum::Router {
        axum::Router::new()
            .route(SYNC_PATH, post(sync))
            .with_state(self.endpoint.clone())
    }
}

/// Runs `mode` exchanges with `addrs`, each in its own task, ending with the node.
fn start_exchanges(
    node: &Arc<HttpNode>,
    addrs: Vec<String>,
    mode: Mode,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) {
    for addr in addrs {
        let node = node.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = node.exchange(&addr, mode) => {}
            }
        });
    }
}

/// The node loop: rounds on the tick, pushes on local writes, DNS re-resolution, until
/// shutdown. Exchanges run in their own tasks so that a slow peer never delays the others.
async fn run(node: Arc<HttpNode>, shutdown: CancellationToken, tasks: TaskTracker) {
    let cluster = node.shared().config.cluster.clone();
    let dns = cluster.peers_dns.clone();
    if let Some((name, port)) = &dns {
        resolve(&node, name, *port).await;
    }
    let mut tick = tokio::time::interval(cluster.gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolve_tick =
        tokio::time::interval((cluster.gossip_interval * 10).max(Duration::from_secs(5)));
    resolve_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                start_exchanges(&node, node.round_targets(), Mode::Round, &shutdown, &tasks);
                node.check_warmup();
            }
            _ = node.shared().local_writes.notified() => {
                tokio::time::sleep(PUSH_DEBOUNCE).await;
                start_exchanges(&node, node.push_targets(), Mode::Push, &shutdown, &tasks);
            }
            _ = resolve_tick.tick(), if dns.is_some() => {
                if let Some((name, port)) = &dns {
                    resolve(&node, name, *port).await;
                }
            }
        }
    }
}

/// Resolves `--peers-dns` and replaces the DNS-sourced peers; keeps them on failure.
async fn resolve(node: &HttpNode, name: &str, port: u16) {
    let lookup = tokio::net::lookup_host((name, port));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => {
            let scheme = node.shared().config.scheme();
            let urls: Vec<String> = addrs
                .map(|a| match a {
                    SocketAddr::V4(a) => format!("{scheme}://{a}"),
                    SocketAddr::V6(a) => format!("{scheme}://[{}]:{}", a.ip(), a.port()),
                })
                .collect();
            node.resolved(&urls);
        }
        Ok(Err(e)) => tracing::warn!(name, error = %e, "cannot resolve --peers-dns"),
        Err(_) => tracing::warn!(name, "resolving --peers-dns timed out"),
    }
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
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
    if !crate::tls::gossip_allowed(shared.config.tls.as_ref(), request.extensions()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "gossip requires a client certificate signed by this node's --tls-ca",
        );
    }
    if !auth::allowed(&shared.config.tokens, Access::Peer, request.headers()) {
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
    let count = |kind: &'static str, why: &dyn std::fmt::Display| {
        crate::metrics::Metrics::gossip(&metrics.gossip_messages_refused, kind, 1);
        if endpoint.warned.allow(now() / crate::registry::SECOND) {
            tracing::warn!(peer = ?remote, kind, %why, "refused a gossip message (at most one line every 10 s)");
        }
    };
    let body = request.into_body();
    if axum::body::HttpBody::size_hint(&body).lower() > MAX_MESSAGE_BYTES as u64 {
        // Declared over the bound: refused before a byte is read, so the sender cannot hold
        // the connection until the read timeout with a body we would refuse anyway.
        count("too_large", &"declared over the size bound");
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "gossip message too large");
    }
    let read = axum::body::to_bytes(body, MAX_MESSAGE_BYTES);
    let body = match tokio::time::timeout(shared.config.limits.read_timeout, read).await {
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the gossip message came too slowly",
            )
        }
        Ok(Err(e)) => {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                count("too_large", &"over the size bound");
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, "gossip message too large");
            }
            return refuse(StatusCode::BAD_REQUEST, "could not read the gossip message");
        }
        Ok(Ok(body)) => body,
    };
    let permit = match tokio::time::timeout(DECODE_WAIT, endpoint.slots.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            count("busy", &"every decode slot is taken; answered 503");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(json!({ "error": "too many gossip messages at once; retry" })),
            )
                .into_response();
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
                DecodeError::TooLarge => "too_large",
                DecodeError::Malformed(_) => "malformed",
                DecodeError::BadSender(_) => "bad_sender",
            };
            count(kind, &e);
            return refuse(StatusCode::BAD_REQUEST, &e.to_string());
        }
        Err(e) => {
            tracing::error!(error = %e, "gossip message handling failed");
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    crate::metrics::Metrics::gossip(&metrics.gossip_bytes, "received", received);
    crate::metrics::Metrics::gossip(&metrics.gossip_bytes, "sent", response.len() as u64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE_GOSSIP)],
        response,
    )
        .into_response()
}
