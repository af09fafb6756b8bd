//! One task per xDS stream: reads the client's requests, wakes on registry changes, and
//! sends what [`protocol`](super::protocol) says, for SotW and delta alike (the
//! [`Protocol`] trait is what differs).
//!
//! The task is one `select!` over the client's next request, the coalesced change signal
//! and shutdown. It sends nothing while the node is not ready (SPEC 4.4): a node that has not
//! yet pulled its state must not push empty lists. A response the client does not take
//! within `--write-timeout` ends the stream's task, so a stalled client holds no task for
//! ever; its stream slot is held until tonic drops the response (the connection closes or
//! the client cancels), since the stream and what is queued on it live until then.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures_util::Stream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use super::listener::ConnInfo;
use super::protocol::{Delta, Refused, Reply, Sotw, TypeSummary};
use super::resources::{Catalog, Kind, Source};
use super::wire::{DeltaResponse, Encode, SotwResponse};
use crate::auth::{self, Access};
use crate::metrics::XdsEvent;
use crate::registry::rfc3339;
use crate::state::{now, NodeState};
use crate::throttle::Throttle;
use crate::tls::Identity;

/// A response stream as tonic wants it.
pub(crate) type Outbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What differs between SotW and delta streams.
pub(crate) trait Protocol: Default + Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: Encode + Send + 'static;
    fn type_url(request: &Self::Request) -> &str;
    fn node(request: &Self::Request) -> Option<&Node>;
    fn take(&mut self, kind: Kind, request: &Self::Request) -> Result<Reply, Refused>;
    fn responses(&mut self, source: &dyn Source) -> Vec<Self::Response>;
    /// Whether a request since the last `responses` may have changed what to send.
    fn pending(&self) -> bool;
    /// The type URL and version of a response.
    fn sent(response: &Self::Response) -> (&str, &str);
    fn summary(&self) -> Vec<TypeSummary>;
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;
    fn type_url(request: &DiscoveryRequest) -> &str {
        &request.type_url
    }
    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }
    fn take(&mut self, kind: Kind, request: &DiscoveryRequest) -> Result<Reply, Refused> {
        self.request(kind, request)
    }
    fn responses(&mut self, source: &dyn Source) -> Vec<SotwResponse> {
        Sotw::responses(self, source)
    }
    fn pending(&self) -> bool {
        Sotw::pending(self)
    }
    fn sent(response: &SotwResponse) -> (&str, &str) {
        (response.type_url, &response.version_info)
    }
    fn summary(&self) -> Vec<TypeSummary> {
        Sotw::summary(self)
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;
    fn type_url(request: &DeltaDiscoveryRequest) -> &str {
        &request.type_url
    }
    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }
    fn take(&mut self, kind: Kind, request: &DeltaDiscoveryRequest) -> Result<Reply, Refused> {
        self.request(kind, request)
    }
    fn responses(&mut self, source: &dyn Source) -> Vec<DeltaResponse> {
        Delta::responses(self, source)
    }
    fn pending(&self) -> bool {
        Delta::pending(self)
    }
    fn sent(response: &DeltaResponse) -> (&str, &str) {
        (response.type_url, &response.system_version_info)
    }
    fn summary(&self) -> Vec<TypeSummary> {
        Delta::summary(self)
    }
}

/// What every stream of a node shares.
pub(crate) struct Streams {
    pub shared: Arc<NodeState>,
    pub catalog: Arc<Catalog>,
    /// Bumped once per coalesced burst of registry changes (see `xds::pump`).
    pub changes: watch::Receiver<u64>,
    pub tasks: TaskTracker,
    /// One permit per open stream (`--max-connections` of them).
    pub slots: Arc<Semaphore>,
}

impl Streams {
    /// Opens a stream: checks the read token and the stream limit, then spawns its task.
    /// `only` restricts it to one type (the per-type EDS service), which is also the type of
    /// a request that names none.
    pub(crate) fn open<P: Protocol>(
        &self,
        request: Request<Streaming<P::Request>>,
        protocol: &'static str,
        only: Option<Kind>,
    ) -> Result<Response<Outbound<P::Response>>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        // Subscribed before the check: a reload after it wakes the stream's task.
        let identity = conn
            .as_ref()
            .and_then(|c| c.identity.clone())
            .map(|i| (i.reloads(), i));
        // A connection whose client certificate is refused (now: a reload may have withdrawn
        // it since the handshake) opens no stream, as it reaches no HTTP handler.
        if let Some(why) = identity.as_ref().and_then(|(_, i)| i.cert().refused) {
            return Err(Status::unauthenticated(why));
        }
        let headers = request.metadata().clone().into_headers();
        if !auth::allowed(&self.shared.config.tokens, Access::Read, &headers) {
            return Err(Status::unauthenticated(
                "missing or wrong read token (authorization: Bearer ...)",
            ));
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "this node serves at most {} xDS streams; try another node",
                self.shared.config.limits.max_connections
            )));
        };
        let peer = conn.and_then(|c| c.tcp.remote_addr());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let task = Task {
            shared: self.shared.clone(),
            catalog: self.catalog.clone(),
            changes: self.changes.clone(),
            tx,
            only,
            protocol,
        };
        self.tasks.spawn(task.run::<P>(inbound, peer, identity));
        // The slot goes with the response stream, not the task: a task that gave up on a
        // client that does not read ends, but its HTTP/2 stream stays open (and holds memory)
        // until tonic drops it, and must count until then.
        let outbound = futures_util::stream::unfold((rx, permit), |(mut rx, permit)| async move {
            rx.recv().await.map(|item| (item, (rx, permit)))
        });
        Ok(Response::new(Box::pin(outbound)))
    }
}

struct Task<R> {
    shared: Arc<NodeState>,
    catalog: Arc<Catalog>,
    changes: watch::Receiver<u64>,
    tx: mpsc::Sender<Result<R, Status>>,
    only: Option<Kind>,
    protocol: &'static str,
}

/// Why a stream ends.
enum End {
    /// The client closed it, went away or did not read.
    Gone,
    /// We refuse it; the client is told why.
    Refused(Status),
}

impl<R: Send + 'static> Task<R> {
    async fn run<P: Protocol<Response = R>>(
        mut self,
        mut inbound: Streaming<P::Request>,
        peer: Option<SocketAddr>,
        identity: Option<(watch::Receiver<u64>, Arc<Identity>)>,
    ) {
        // A reload that withdraws the client certificate, or its expiry, ends the stream.
        let withdrawn = async move {
            match identity {
                Some((mut reloads, identity)) => identity.withdrawn(&mut reloads).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(withdrawn);
        let shared = self.shared.clone();
        let peer = peer.map_or_else(String::new, |p| p.to_string());
        let entry = shared
            .xds_clients
            .open(peer.clone(), self.protocol, rfc3339(now()));
        shared.metrics.xds_streams.inc();
        let mut state = P::default();
        let _reader = self.catalog.reader();
        let mut node_id = None;
        let mut pace = Pace::new(tokio::time::Instant::now());
        // Made once: every stream waits on the same token, and a wait made anew each turn of
        // the loop would join and leave its waiter list (behind one lock) twice per push.
        let shutdown = shared.shutdown.cancelled();
        tokio::pin!(shutdown);
        let end = loop {
            // Whether a request is what there is to answer (else a change woke the stream).
            let asked = tokio::select! {
                _ = &mut shutdown => break End::Gone,
                why = &mut withdrawn => break End::Refused(Status::unauthenticated(why)),
                message = inbound.message() => match message {
                    Ok(Some(request)) => {
                        if node_id.is_none() {
                            if let Some(node) = P::node(&request) {
                                let id = clip(&node.id);
                                entry.update(|c| {
                                    c.node_id = id.clone();
                                    c.node_cluster = clip(&node.cluster);
                                });
                                node_id = Some(id);
                            }
                        }
                        let node = node_id.as_deref().unwrap_or_default();
                        match self.take(&mut state, &request, &entry, &peer, node) {
                            Ok(()) => {}
                            Err(status) => break End::Refused(status),
                        }
                        // A client that floods requests waits (and HTTP/2 flow control
                        // makes it wait in turn) instead of taking a worker.
                        if let Some(wait) = pace.take(tokio::time::Instant::now()) {
                            tokio::time::sleep(wait).await;
                        }
                        if !state.pending() {
                            // An ACK, a stale nonce, a type not served: nothing to compute.
                            continue;
                        }
                        true
                    }
                    Ok(None) => break End::Gone,
                    Err(status) => {
                        // Includes a message over the size limit: tell the client.
                        break End::Refused(status);
                    }
                },
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        break End::Gone;
                    }
                    false
                }
            };
            if !shared.is_ready() {
                continue;
            }
            // A change's wake-up comes with its snapshot built. A request is answered with
            // every change before it, such as the write its client just made: a change not yet
            // through the pump is built now (once, for every stream that asks meanwhile).
            // If that build fails, the request waits (still pending) for the pump's build,
            // which wakes the stream: an older snapshot, or the empty one before any build,
            // would answer without changes the client may have made, or with nothing.
            let snapshot = if asked {
                let generation = shared.routing_generation();
                match self.catalog.at_least(&shared, generation, false).await {
                    Ok(snapshot) => snapshot,
                    Err(_) => continue,
                }
            } else {
                self.catalog.latest()
            };
            let responses = state.responses(&*snapshot);
            // Not held while waiting on a slow client: a newer one may replace it meanwhile.
            drop(snapshot);
            if responses.is_empty() {
                continue;
            }
            let mut gone = false;
            for response in responses {
                let (url, version) = P::sent(&response);
                let kind = Kind::from_url(url);
                let version = version.to_owned();
                entry.update_type(url, |t| {
                    t.sent_version = Some(version);
                    t.responses += 1;
                });
                if let Some(kind) = kind {
                    shared.metrics.xds(kind.label(), XdsEvent::sent);
                }
                if !self.send(Ok(response)).await {
                    gone = true;
                    break;
                }
            }
            if gone {
                break End::Gone;
            }
        };
        if let End::Refused(status) = end {
            tracing::debug!(%peer, error = %status.message(), "xDS stream refused");
            let _ = self.send(Err(status)).await;
        }
        shared.metrics.xds_streams.dec();
    }

    /// Hands a message to tonic, waiting at most `--write-timeout` for room. Returns whether
    /// the stream goes on.
    async fn send(&self, item: Result<R, Status>) -> bool {
        let timeout = self.shared.config.limits.write_timeout;
        matches!(
            tokio::time::timeout(timeout, self.tx.send(item)).await,
            Ok(Ok(()))
        )
    }

    /// Takes one request: its type, its ACK or NACK, its subscription.
    fn take<P: Protocol>(
        &self,
        state: &mut P,
        request: &P::Request,
        entry: &super::clients::Entry<'_>,
        peer: &str,
        node: &str,
    ) -> Result<(), Status> {
        let url = P::type_url(request);
        let kind = match (url, self.only) {
            ("", Some(kind)) => kind,
            ("", None) => {
                return Err(Status::invalid_argument(
                    "type_url is required on an aggregated (ADS) stream",
                ))
            }
            (url, only) => match Kind::from_url(url) {
                Some(kind) if only.is_none_or(|o| o == kind) => kind,
                _ if only.is_some() => {
                    return Err(Status::invalid_argument(format!(
                        "this service serves only {}, not {url:?}",
                        only.map_or("", |k| k.url())
                    )))
                }
                _ => {
                    // Envoy may ask ADS for types we have none of (routes, secrets): it
                    // gets nothing, as for a name we do not hold.
                    tracing::debug!(%peer, type_url = url, "xDS type not served; ignored");
                    return Ok(());
                }
            },
        };
        let reply = state
            .take(kind, request)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let metrics = &self.shared.metrics;
        match reply {
            Reply::Initial | Reply::Stale | Reply::Repeat => {}
            Reply::Ack(version) => {
                metrics.xds(kind.label(), XdsEvent::ack);
                entry.update_type(kind.url(), |t| {
                    t.acked_version = Some(version);
                    t.acked_at = Some(rfc3339(now()));
                });
            }
            Reply::Nack { version, error } => {
                metrics.xds(kind.label(), XdsEvent::nack);
                let error = clip(&error);
                if NACK_LOG.allow(now() / 1_000_000) {
                    tracing::warn!(
                        %peer,
                        node,
                        type_url = kind.url(),
                        version,
                        error,
                        "xDS client rejected a response (NACK); that version is not sent again (at most one such line per 10 s; all in GET /v1/xds/clients)"
                    );
                }
                entry.update_type(kind.url(), |t| {
                    t.nacked_version = Some(version);
                    t.nacked_at = Some(rfc3339(now()));
                    t.nack_error = Some(error);
                });
            }
        }
        if state.pending() {
            // The subscription may have changed (an ACK leaves it as it was).
            summarize(entry, &state.summary());
        }
        Ok(())
    }
}

/// NACK log lines: any client can NACK every response it gets.
static NACK_LOG: Throttle = Throttle::new();

/// The most bytes kept (and logged) of a client's node id, cluster or NACK error text: enough
/// to recognise them, not a message's worth per stream.
const MAX_KEPT_TEXT: usize = 256;

/// `text` cut to [`MAX_KEPT_TEXT`] bytes at a character boundary.
fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_KEPT_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Requests a stream may send per second, on average, and in a burst: far more than any xDS
/// client needs (a request per response and per subscription change), far fewer than it takes
/// to keep a worker busy.
const MESSAGES_PER_SEC: u32 = 50;

/// A token bucket over a stream's requests.
struct Pace {
    tokens: f64,
    at: tokio::time::Instant,
}

impl Pace {
    fn new(now: tokio::time::Instant) -> Pace {
        Pace {
            tokens: f64::from(MESSAGES_PER_SEC),
            at: now,
        }
    }

    /// Takes a request; how long to wait before reading the next one, if at all.
    fn take(&mut self, now: tokio::time::Instant) -> Option<std::time::Duration> {
        let rate = f64::from(MESSAGES_PER_SEC);
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate) - 1.0;
        self.at = now;
        (self.tokens < 0.0).then(|| std::time::Duration::from_secs_f64(-self.tokens / rate))
    }
}

fn summarize(entry: &super::clients::Entry<'_>, summary: &[TypeSummary]) {
    for s in summary {
        entry.update_type(s.kind.url(), |t| {
            t.wildcard = s.wildcard;
            t.names = s.names;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Pace, MESSAGES_PER_SEC};

    #[test]
    fn a_stream_reads_a_burst_of_its_rate_then_one_request_per_share_of_a_second() {
        let t0 = tokio::time::Instant::now();
        let mut pace = Pace::new(t0);
        for _ in 0..MESSAGES_PER_SEC {
            assert_eq!(pace.take(t0), None);
        }
        // One past the burst waits for its token: 1/50 s.
        let wait = pace.take(t0).expect("the request past the burst waits");
        assert!((wait.as_secs_f64() - 0.02).abs() < 1e-9, "{wait:?}");
        // Once the waited request's share is paid and a second more has passed, the bucket
        // is full again, not fuller.
        let later = t0 + Duration::from_millis(1020);
        for _ in 0..MESSAGES_PER_SEC {
            assert_eq!(pace.take(later), None);
        }
        assert!(pace.take(later).is_some());
    }
}
