//! Metric names and recording functions (Prometheus text at `GET /metrics`). A leaf: it knows
//! no transport (HTTP methods and routes arrive as strings) and label values are enums, so a
//! label is spelled once, here.
//!
//! Counters are recorded where things happen; gauges that mirror registry state (hosts,
//! services, stale hosts) are read from the registry at scrape time, so they cannot drift.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::registry::Refusal;

/// Labels of a served request. Borrowed `'static` strings for the known routes and methods,
/// so counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route pattern, e.g. `/v1/registration/{service}`.
    pub(crate) route: Cow<'static, str>,
    /// The method, or `OTHER` for a non-standard one.
    pub(crate) method: Cow<'static, str>,
    pub(crate) status: u16,
}

/// Labels with a route only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: Cow<'static, str>,
}

/// What a heartbeat did.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum HeartbeatResult {
    /// A new host.
    created,
    /// A host whose routing fields changed.
    changed,
    /// A refresh of an unchanged host.
    refreshed,
    /// Refused: invalid, unauthorized or over the host limit.
    refused,
}

/// Labels of a heartbeat.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HeartbeatLabels {
    /// What it did.
    pub(crate) result: HeartbeatResult,
}

/// How a gossip exchange ended: the `kind` of `discovery_gossip_rounds_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum RoundOutcome {
    ok,
    failed,
}

/// Which way gossip bytes went: the `kind` of `discovery_gossip_bytes_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Direction {
    sent,
    received,
}

/// What became of gossip records: the `kind` of `discovery_gossip_records_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum RecordFlow {
    sent,
    received,
    /// Received and refused (by reason in `discovery_gossip_records_refused_total`).
    refused,
}

/// Why a gossip message was refused whole: the `kind` of
/// `discovery_gossip_messages_refused_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum RefusedMessage {
    /// It claims this node's own node id.
    own_id,
    /// Its sender's address is not a peer URL.
    bad_sender,
    /// It does not decode.
    malformed,
    /// Over the size bound.
    too_large,
    /// Every decode slot was taken (answered 503).
    busy,
}

/// Why a TLS handshake did not give a connection: the `reason` of
/// `discovery_tls_handshakes_failed_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum HandshakeFailure {
    /// Not done within the handshake timeout (a client that sent nothing, or half of it).
    timeout,
    /// Refused by TLS: a bad record, no common version or cipher, no `h2` on the xDS port...
    failed,
    /// The client does not speak TLS (plain HTTP or HTTP/2): told so, then closed.
    not_tls,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 3] = [
        HandshakeFailure::timeout,
        HandshakeFailure::failed,
        HandshakeFailure::not_tls,
    ];
}

/// Labels of a failed TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    reason: HandshakeFailure,
}

/// A peer's state: the `state` of the `discovery_peers` gauge.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum PeerState {
    /// Trusted and answering.
    alive,
    /// Trusted, failing lately.
    suspect,
    /// Trusted, failing for several rounds in a row.
    dead,
    /// Learned from a message and not yet heard from.
    unverified,
}

/// Which certificate a TLS expiry gauge is about: the `certificate` of
/// `discovery_tls_certificate_not_after_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum TlsCertificate {
    /// The chain this node presents (`--tls-cert`): its earliest not-after.
    node,
    /// The `--tls-ca` bundle: its earliest not-after.
    ca,
}

/// Labels of a TLS expiry gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsCertificateLabels {
    certificate: TlsCertificate,
}

/// The TLS metrics, handed to the reloader of `tls.rs` (a cheap clone: each is an `Arc`).
#[derive(Clone, Default)]
pub(crate) struct TlsMetrics {
    /// TLS reloads (SIGHUP or a changed file) refused, the previous material kept.
    pub(crate) reload_failures: Counter,
    not_after: Family<TlsCertificateLabels, Gauge>,
}

impl TlsMetrics {
    /// Sets when `certificate` stops being valid, in Unix seconds.
    pub(crate) fn set_not_after(&self, certificate: TlsCertificate, unix_secs: i64) {
        self.not_after
            .get_or_create(&TlsCertificateLabels { certificate })
            .set(unix_secs);
    }

    /// When `certificate` stops being valid, in Unix seconds, if TLS is on (and, for `ca`,
    /// with `--tls-ca`).
    pub(crate) fn not_after(&self, certificate: TlsCertificate) -> Option<i64> {
        let labels = TlsCertificateLabels { certificate };
        self.not_after.get(&labels).map(|gauge| gauge.get())
    }
}

/// The label set of a gossip counter, one `kind` of its own enum (the derive takes no
/// generics, hence one struct per enum).
macro_rules! kind_labels {
    ($($labels:ident($kind:ty)),*) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $labels {
            kind: $kind,
        }
    )*};
}

kind_labels!(
    RoundLabels(RoundOutcome),
    DirectionLabels(Direction),
    RecordLabels(RecordFlow),
    RefusedMessageLabels(RefusedMessage)
);

/// Labels of a refused gossip record.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusedLabels {
    /// [`Refusal::as_str`]: `invalid`, `clock_skew`, `expired` or `full`.
    pub(crate) reason: &'static str,
}

/// Labels of a peer-state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerStateLabels {
    state: PeerState,
}

/// What happened on an xDS stream.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum XdsEvent {
    /// A response sent.
    sent,
    /// A response accepted by the client.
    ack,
    /// A response rejected by the client.
    nack,
}

impl XdsEvent {
    /// Every value, for zero series at start.
    const ALL: [XdsEvent; 3] = [XdsEvent::sent, XdsEvent::ack, XdsEvent::nack];
}

/// Labels of an xDS message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdsLabels {
    /// `listener`, `cluster` or `endpoints`.
    pub resource: &'static str,
    /// What happened.
    pub event: XdsEvent,
}

type Hist = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// All of the node's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub(crate) requests: Family<RequestLabels, Counter>,
    /// Request latency by route.
    pub(crate) request_seconds: Hist,
    /// Heartbeats by result.
    pub(crate) heartbeats: Family<HeartbeatLabels, Counter>,
    /// Hosts dropped by expiry.
    pub(crate) expirations: Counter,
    /// Tombstones collected.
    pub(crate) tombstones_collected: Counter,
    /// Live hosts (stale included), set at scrape.
    pub(crate) hosts: Gauge,
    /// Hosts held by the expiry guard, set at scrape.
    pub(crate) stale_hosts: Gauge,
    /// Services with hosts, set at scrape.
    pub(crate) services: Gauge,
    /// Services held in memory (with hosts or only tombstones), set at scrape.
    pub(crate) services_held: Gauge,
    /// 1 while the expiry guard holds hosts.
    pub(crate) expiry_guard_engaged: Gauge,
    /// Hosts past their TTL in their expiry grace, set at scrape.
    pub(crate) grace_hosts: Gauge,
    /// The guard's measure: hosts lost in its window over the hosts held, set at scrape.
    pub(crate) expiry_guard_lost_fraction: Gauge<f64, AtomicU64>,
    /// Stalls this node noticed in its own ticks (a freeze, a VM pause).
    pub(crate) stalls: Counter,
    /// 1 once the node is ready.
    pub(crate) ready: Gauge,
    /// Long polls waiting now.
    pub(crate) long_polls: Gauge,
    /// Long polls answered at once because `--max-long-polls` were already waiting.
    pub(crate) long_polls_refused: Counter,
    /// Connections cut because a response made no write progress for `--write-timeout`.
    pub(crate) write_timeouts: Counter,
    /// TLS reload failures and certificate expiry.
    pub(crate) tls: TlsMetrics,
    tls_handshakes_failed: Family<HandshakeLabels, Counter>,
    gossip_rounds: Family<RoundLabels, Counter>,
    gossip_bytes: Family<DirectionLabels, Counter>,
    gossip_records: Family<RecordLabels, Counter>,
    /// Gossip records refused, by reason.
    pub(crate) gossip_records_refused: Family<RefusedLabels, Counter>,
    peers: Family<PeerStateLabels, Gauge>,
    /// Seconds between a write being taken on its node and being applied here, for the
    /// newest records received.
    pub(crate) convergence_lag_seconds: Gauge<f64, AtomicU64>,
    /// The largest number of records any peer lacked from this node at the last exchange.
    pub(crate) replication_backlog: Gauge,
    gossip_messages_refused: Family<RefusedMessageLabels, Counter>,
    /// Open xDS streams.
    pub(crate) xds_streams: Gauge,
    /// xDS responses sent, accepted and rejected, by resource type.
    xds_messages: Family<XdsLabels, Counter>,
    /// Builds of the xDS resources that failed (each is retried).
    pub(crate) xds_build_failures: Counter,
}

impl RefusedMessage {
    const ALL: [RefusedMessage; 5] = [
        RefusedMessage::own_id,
        RefusedMessage::bad_sender,
        RefusedMessage::malformed,
        RefusedMessage::too_large,
        RefusedMessage::busy,
    ];
}

impl PeerState {
    const ALL: [PeerState; 4] = [
        PeerState::alive,
        PeerState::suspect,
        PeerState::dead,
        PeerState::unverified,
    ];
}

impl Metrics {
    /// Registers every metric.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("discovery");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        let request_seconds: Hist =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 4.0, 10)));
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            request_seconds.clone(),
        );
        let heartbeats = Family::<HeartbeatLabels, Counter>::default();
        registry.register(
            "heartbeats",
            "Heartbeats taken, by result",
            heartbeats.clone(),
        );
        let expirations = Counter::default();
        registry.register(
            "expirations",
            "Hosts dropped by expiry",
            expirations.clone(),
        );
        let tombstones_collected = Counter::default();
        registry.register(
            "tombstones_collected",
            "Delete tombstones collected after their retention",
            tombstones_collected.clone(),
        );
        let hosts = Gauge::default();
        registry.register("hosts", "Live hosts, stale ones included", hosts.clone());
        let stale_hosts = Gauge::default();
        registry.register(
            "stale_hosts",
            "Hosts held past their TTL by the expiry guard",
            stale_hosts.clone(),
        );
        let services = Gauge::default();
        registry.register("services", "Services with live hosts", services.clone());
        let services_held = Gauge::default();
        registry.register(
            "services_held",
            "Services held in memory, with live hosts or only tombstones",
            services_held.clone(),
        );
        let expiry_guard_engaged = Gauge::default();
        registry.register(
            "expiry_guard_engaged",
            "1 while the expiry guard holds overdue hosts",
            expiry_guard_engaged.clone(),
        );
        let grace_hosts = Gauge::default();
        registry.register(
            "grace_hosts",
            "Hosts past their TTL in their expiry grace, still served",
            grace_hosts.clone(),
        );
        let expiry_guard_lost_fraction = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "expiry_guard_lost_fraction",
            "Hosts lost within the guard's window (held, in grace or dropped) over the hosts held",
            expiry_guard_lost_fraction.clone(),
        );
        let stalls = Counter::default();
        registry.register(
            "stalls",
            "Stalls this node noticed in its own ticks (a freeze or a VM pause)",
            stalls.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 once the node holds a usable state",
            ready.clone(),
        );
        let long_polls = Gauge::default();
        registry.register("long_polls", "Long polls waiting", long_polls.clone());
        let long_polls_refused = Counter::default();
        registry.register(
            "long_polls_refused",
            "Long polls answered at once because --max-long-polls were waiting",
            long_polls_refused.clone(),
        );
        let write_timeouts = Counter::default();
        registry.register(
            "write_timeouts",
            "Connections cut because a response made no write progress for --write-timeout",
            write_timeouts.clone(),
        );
        let tls = TlsMetrics::default();
        registry.register(
            "tls_reload_failures",
            "TLS reloads refused (the files did not load or verify); the previous certificates stay",
            tls.reload_failures.clone(),
        );
        // No series without TLS: a 0 would read as "expired in 1970".
        registry.register(
            "tls_certificate_not_after_seconds",
            "When this node's TLS certificates stop being valid (Unix time): the earliest not-after of the leaf and intermediates of its verified path (node) and of the --tls-ca certificate that path ends at (ca), as last loaded",
            tls.not_after.clone(),
        );
        let tls_handshakes_failed = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes_failed",
            "TLS connections closed before their handshake was done, by reason",
            tls_handshakes_failed.clone(),
        );
        let gossip_rounds = Family::<RoundLabels, Counter>::default();
        registry.register(
            "gossip_rounds",
            "Gossip exchanges, by outcome",
            gossip_rounds.clone(),
        );
        let gossip_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register("gossip_bytes", "Gossip payload bytes", gossip_bytes.clone());
        let gossip_records = Family::<RecordLabels, Counter>::default();
        registry.register("gossip_records", "Gossip records", gossip_records.clone());
        let gossip_records_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "gossip_records_refused",
            "Gossip records refused, by reason",
            gossip_records_refused.clone(),
        );
        for reason in Refusal::ALL {
            gossip_records_refused
                .get_or_create(&RefusedLabels {
                    reason: reason.as_str(),
                })
                .inc_by(0);
        }
        let peers = Family::<PeerStateLabels, Gauge>::default();
        registry.register("peers", "Known peers, by state", peers.clone());
        let convergence_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "convergence_lag_seconds",
            "Delay between a write on its node and its arrival here, newest records",
            convergence_lag_seconds.clone(),
        );
        let replication_backlog = Gauge::default();
        registry.register(
            "replication_backlog",
            "Most records a peer lacked from this node at the last exchange",
            replication_backlog.clone(),
        );
        let gossip_messages_refused = Family::<RefusedMessageLabels, Counter>::default();
        registry.register(
            "gossip_messages_refused",
            "Gossip messages refused whole, by reason",
            gossip_messages_refused.clone(),
        );
        let xds_streams = Gauge::default();
        registry.register("xds_streams", "Open xDS streams", xds_streams.clone());
        let xds_build_failures = Counter::default();
        registry.register(
            "xds_build_failures",
            "Builds of the xDS resources that failed (a bug; each is retried)",
            xds_build_failures.clone(),
        );
        let xds_messages = Family::<XdsLabels, Counter>::default();
        registry.register(
            "xds_messages",
            "xDS responses sent, ACKed and NACKed, by resource type",
            xds_messages.clone(),
        );
        for resource in ["listener", "cluster", "endpoints"] {
            for event in XdsEvent::ALL {
                xds_messages
                    .get_or_create(&XdsLabels { resource, event })
                    .inc_by(0);
            }
        }
        // Every known label value exists from the start, at 0, so that rates and alerts work
        // before the first event (Prometheus cannot tell a missing series from a zero one).
        for result in [
            HeartbeatResult::created,
            HeartbeatResult::changed,
            HeartbeatResult::refreshed,
            HeartbeatResult::refused,
        ] {
            heartbeats
                .get_or_create(&HeartbeatLabels { result })
                .inc_by(0);
        }
        for kind in [RoundOutcome::ok, RoundOutcome::failed] {
            gossip_rounds.get_or_create(&RoundLabels { kind }).inc_by(0);
        }
        for kind in [Direction::sent, Direction::received] {
            gossip_bytes
                .get_or_create(&DirectionLabels { kind })
                .inc_by(0);
        }
        for kind in [RecordFlow::sent, RecordFlow::received, RecordFlow::refused] {
            gossip_records
                .get_or_create(&RecordLabels { kind })
                .inc_by(0);
        }
        for kind in RefusedMessage::ALL {
            gossip_messages_refused
                .get_or_create(&RefusedMessageLabels { kind })
                .inc_by(0);
        }
        for state in PeerState::ALL {
            peers.get_or_create(&PeerStateLabels { state }).set(0);
        }
        for reason in HandshakeFailure::ALL {
            tls_handshakes_failed
                .get_or_create(&HandshakeLabels { reason })
                .inc_by(0);
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            heartbeats,
            expirations,
            tombstones_collected,
            hosts,
            stale_hosts,
            services,
            services_held,
            expiry_guard_engaged,
            grace_hosts,
            expiry_guard_lost_fraction,
            stalls,
            ready,
            long_polls,
            long_polls_refused,
            write_timeouts,
            tls,
            tls_handshakes_failed,
            gossip_rounds,
            gossip_bytes,
            gossip_records,
            gossip_records_refused,
            peers,
            convergence_lag_seconds,
            replication_backlog,
            gossip_messages_refused,
            xds_streams,
            xds_messages,
            xds_build_failures,
        }
    }

    /// Counts an xDS event.
    pub(crate) fn xds(&self, resource: &'static str, event: XdsEvent) {
        self.xds_messages
            .get_or_create(&XdsLabels { resource, event })
            .inc();
    }

    /// Counts a TLS handshake that gave no connection.
    pub(crate) fn tls_handshake_failed(&self, reason: HandshakeFailure) {
        self.tls_handshakes_failed
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// Counts a heartbeat.
    pub(crate) fn heartbeat(&self, result: HeartbeatResult) {
        self.heartbeats
            .get_or_create(&HeartbeatLabels { result })
            .inc();
    }

    /// Counts an exchange with a peer.
    pub(crate) fn gossip_round(&self, kind: RoundOutcome) {
        self.gossip_rounds
            .get_or_create(&RoundLabels { kind })
            .inc();
    }

    /// Counts `n` gossip payload bytes.
    pub(crate) fn gossip_bytes(&self, kind: Direction, n: u64) {
        self.gossip_bytes
            .get_or_create(&DirectionLabels { kind })
            .inc_by(n);
    }

    /// Counts `n` gossip records.
    pub(crate) fn gossip_records(&self, kind: RecordFlow, n: u64) {
        self.gossip_records
            .get_or_create(&RecordLabels { kind })
            .inc_by(n);
    }

    /// Counts a gossip message refused whole.
    pub(crate) fn gossip_message_refused(&self, kind: RefusedMessage) {
        self.gossip_messages_refused
            .get_or_create(&RefusedMessageLabels { kind })
            .inc();
    }

    /// Gossip messages refused whole for `kind` so far.
    #[cfg(test)]
    pub(crate) fn gossip_messages_refused(&self, kind: RefusedMessage) -> u64 {
        self.gossip_messages_refused
            .get_or_create(&RefusedMessageLabels { kind })
            .get()
    }

    /// Sets the number of peers in `state`.
    pub(crate) fn set_peers(&self, state: PeerState, n: i64) {
        self.peers.get_or_create(&PeerStateLabels { state }).set(n);
    }

    /// The number of peers in `state`, as last set.
    #[cfg(test)]
    pub(crate) fn peers(&self, state: PeerState) -> i64 {
        self.peers.get_or_create(&PeerStateLabels { state }).get()
    }

    /// Counts `n` gossip records refused for `reason`.
    pub(crate) fn refused(&self, reason: Refusal, n: u64) {
        self.gossip_records_refused
            .get_or_create(&RefusedLabels {
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Counts a served request.
    pub(crate) fn request(
        &self,
        route: Cow<'static, str>,
        method: &str,
        status: u16,
        seconds: f64,
    ) {
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
    }

    /// Renders the text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A method as a label value. HTTP lets a client invent any method (`FOO1`, `FOO2`, ...), and
/// each label value is a series kept for the life of the process, so every method outside
/// the standard ones counts as `OTHER`: the series stay a fixed set, and nothing allocates.
fn method_label(method: &str) -> Cow<'static, str> {
    Cow::Borrowed(match method {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "PUT" => "PUT",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    })
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
