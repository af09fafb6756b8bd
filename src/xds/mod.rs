//! gRPC xDS (`--xds-listen`, SPEC 3.2, issue 12): the Aggregated Discovery Service, state
//! of the world and delta, and the per-type Endpoint Discovery Service, serving Envoy and
//! proxyless gRPC clients (`xds:///SERVICE`) by push instead of poll.
//!
//! - [`resources`]: a service as `ClusterLoadAssignment`, `Listener` and `Cluster`, from the
//!   same prepared views and the same mapping as REST EDS;
//! - [`protocol`]: versions, nonces, ACK/NACK, subscriptions, as pure state machines;
//! - [`stream`]: one task per stream;
//! - [`grpc`] and [`wire`]: the ADS and EDS services, whose responses are written around the
//!   resources' bytes encoded once;
//! - [`clients`]: the open streams, for `GET /v1/xds/clients`.
//!
//! Changes reach streams through one signal: the change hub's counter, which [`pump`]
//! coalesces (a burst of writes within [`COALESCE`] wakes each stream once) after building the
//! burst's resources once for every stream (a [`resources::Snapshot`]; nothing is built while
//! no stream runs, and a failed build wakes no stream and is retried). This layer reads
//! `NodeState` like the HTTP layer does and never talks to gossip or HTTP.

pub(crate) mod clients;
mod grpc;
mod listener;
mod protocol;
mod resources;
mod stream;
mod wire;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use clients::Clients;

use grpc::{Ads, Eds};
use resources::Catalog;
use stream::Streams;

use crate::accept::Acceptor;
use crate::state::NodeState;
use crate::tls::Tls;

/// How long a burst of changes is gathered before streams wake: one update per stream for
/// a burst, at the cost of this much latency.
pub(crate) const COALESCE: Duration = Duration::from_millis(2);

/// How often an idle connection is pinged, and how long a ping may go unanswered before the
/// connection (and its streams) is dropped.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// Most streams one HTTP/2 connection may have open at once (advertised to the client as
/// `SETTINGS_MAX_CONCURRENT_STREAMS`): one client cannot take every stream slot of the node.
/// Envoy and gRPC use one or a few streams per connection.
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// Largest request header block (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`): xDS clients send a
/// path, a few gRPC headers and at most a token.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Serves xDS on `listener` until shutdown: over TLS only when the node has `tls`.
pub(crate) fn spawn(
    shared: Arc<NodeState>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let catalog = Arc::new(Catalog::default());
    let (changes_tx, changes_rx) = watch::channel(0u64);
    tasks.spawn(pump(shared.clone(), catalog.clone(), changes_tx));
    let streams = Arc::new(Streams {
        slots: Arc::new(Semaphore::new(shared.config.limits.max_connections)),
        shared: shared.clone(),
        catalog,
        changes: changes_rx,
        tasks: tasks.clone(),
    });
    let limits = &shared.config.limits;
    let max_message = limits.xds_max_message;
    let ads = Ads {
        streams: streams.clone(),
        max_message,
        service: PhantomData,
    };
    let eds = Eds {
        streams,
        max_message,
        service: PhantomData,
    };
    let acceptor = Acceptor::new(listener, limits.max_connections, "xDS");
    let incoming = listener::incoming(acceptor, tls, shared.clone(), shutdown.clone(), tasks);
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(KEEPALIVE.0))
        .http2_keepalive_timeout(Some(KEEPALIVE.1))
        .add_service(ads)
        .add_service(eds)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await });
    tasks.spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the xDS server stopped");
        }
    });
}

/// Turns the change hub's counter into the streams' wake-up signal, one per burst, with the
/// burst's resources built before the streams wake (they take [`Catalog::latest`]). While no
/// stream runs nothing is built: the first request of a stream builds what it needs. A build
/// that fails (a bug: it panicked) wakes nobody, so that no stream takes the old snapshot for
/// the new one; it is tried again after [`RETRY`], doubling up to [`RETRY_MAX`], as long as
/// no new change comes (which starts a build of its own). A stream whose request's build
/// failed tells the pump ([`Catalog::retry`]), which builds and wakes it.
async fn pump(shared: Arc<NodeState>, catalog: Arc<Catalog>, changes_tx: watch::Sender<u64>) {
    let mut changes = shared.routing_changes();
    let mut retry: Option<Duration> = None;
    loop {
        let wait = async {
            match retry {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = wait => {}
            // A stream's request failed to build: it waits for this pump's build.
            () = catalog.retry.notified() => {}
        }
        // Gathers the rest of a burst: the writes of one heartbeat storm or gossip round.
        tokio::time::sleep(COALESCE).await;
        let generation = *changes.borrow_and_update();
        if catalog.read() && catalog.at_least(&shared, generation, true).await.is_err() {
            retry = Some(retry.map_or(RETRY, |r| (r * 2).min(RETRY_MAX)));
            continue;
        }
        retry = None;
        changes_tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// How long the pump waits before building again after a build failed; doubled per failure.
const RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two builds after failures.
const RETRY_MAX: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use discovery_api::{HostStatus, Port, Registration, RepoName, Revision, ServiceName, Tags};

    use super::resources::{Kind, Source};
    use super::*;

    /// A heartbeat of `web` from `ip`, not yet published to the pump.
    fn record(shared: &NodeState, ip: &str) {
        let registration = Registration {
            ip: None,
            port: Port::new(80).unwrap(),
            revision: Revision::parse("r1").unwrap(),
            service_repo_name: RepoName::empty(),
            tags: Tags::default(),
            ttl: Some(600),
            status: HostStatus::Up,
            auto_ip: false,
        };
        let web = ServiceName::parse("web").unwrap();
        let now = crate::state::now();
        shared
            .registry
            .heartbeat(&web, ip.parse().unwrap(), &registration, now)
            .unwrap();
    }

    /// A heartbeat of `web` from `ip`, published as a write's is.
    fn beat(shared: &NodeState, ip: &str) {
        record(shared, ip);
        shared.poke();
    }

    fn node() -> Arc<NodeState> {
        let config = crate::config::config(&["--node-id", "n1"]).unwrap();
        Arc::new(NodeState::new(config))
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_built_while_no_stream_runs() {
        let shared = node();
        let catalog = Arc::new(Catalog::default());
        let (changes_tx, mut changes_rx) = watch::channel(0u64);
        tokio::spawn(pump(shared.clone(), catalog.clone(), changes_tx));
        tokio::task::yield_now().await;
        beat(&shared, "10.0.0.1");
        changes_rx.changed().await.unwrap();
        let latest = catalog.latest();
        assert!(latest.all(Kind::Endpoints).is_empty(), "no service encoded");

        let reader = catalog.reader();
        beat(&shared, "10.0.0.2");
        changes_rx.changed().await.unwrap();
        let built = catalog.latest();
        assert_eq!(built.all(Kind::Endpoints).len(), 1, "a stream runs: built");
        drop(reader);
        beat(&shared, "10.0.0.3");
        changes_rx.changed().await.unwrap();
        assert!(Arc::ptr_eq(&catalog.latest(), &built), "none runs any more");
        shared.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_build_failed_is_woken_by_the_pumps_build() {
        let shared = node();
        let catalog = Arc::new(Catalog::default());
        let _reader = catalog.reader();
        let (changes_tx, mut changes_rx) = watch::channel(0u64);
        tokio::spawn(pump(shared.clone(), catalog.clone(), changes_tx));
        tokio::task::yield_now().await;
        catalog.fail.store(1, Ordering::Relaxed);
        record(&shared, "10.0.0.1");
        // Not published: only the request knows of it, as a request that follows a write
        // may, before the pump's burst ends.
        let generation = shared.routing_generation();
        assert!(catalog.at_least(&shared, generation, false).await.is_err());
        changes_rx.changed().await.unwrap();
        assert_eq!(catalog.latest().all(Kind::Endpoints).len(), 1);
        assert_eq!(shared.metrics.xds_build_failures.get(), 1);
        shared.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_build_wakes_no_stream_and_is_counted_and_retried() {
        let shared = node();
        let catalog = Arc::new(Catalog::default());
        let _reader = catalog.reader();
        let (changes_tx, mut changes_rx) = watch::channel(0u64);
        tokio::spawn(pump(shared.clone(), catalog.clone(), changes_tx));
        tokio::task::yield_now().await;
        catalog.fail.store(3, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        beat(&shared, "10.0.0.1");
        changes_rx.changed().await.unwrap();
        // Woken only once the change is built: after 3 failures, 100 + 200 + 400 ms apart.
        assert_eq!(catalog.latest().all(Kind::Endpoints).len(), 1);
        assert_eq!(shared.metrics.xds_build_failures.get(), 3);
        assert!(start.elapsed() >= RETRY * 7, "{:?}", start.elapsed());
        assert_eq!(*changes_rx.borrow_and_update(), 1, "one wake-up");
        shared.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_wakes_streams_once() {
        let shared = node();
        let (changes_tx, mut changes_rx) = watch::channel(0u64);
        tokio::spawn(pump(shared.clone(), Arc::default(), changes_tx));
        tokio::task::yield_now().await;
        for _ in 0..100 {
            shared.poke();
        }
        changes_rx.changed().await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(1), changes_rx.changed()).await;
        assert!(again.is_err(), "one wake-up for the whole burst");
        shared.poke();
        changes_rx.changed().await.unwrap();
        assert_eq!(*changes_rx.borrow(), 2, "a later change wakes them again");
        shared.shutdown.cancel();
    }
}
