//! Wiring: builds the shared state, spawns the sweeper and the gossip layer, serves HTTP, and
//! shuts everything down in order.
//!
//! The accept loop is our own (on hyper) rather than `axum::serve` so that it can bound open
//! connections, check every request head against `http::limits`, and hand plain host-list
//! reads and heartbeats to the hot path before the router (both behind `http::service`).
//!
//! Slow or stalled clients cannot hold a connection slot (and its memory and task) for ever,
//! whatever side stalls:
//! - sending the head, or idling between requests: hyper's header read timeout
//!   (`--read-timeout`) cuts the connection;
//! - sending the body: the handlers read it within `--read-timeout` and answer 408;
//! - reading the answer: every connection's socket is wrapped in a writer that fails a write
//!   pending longer than `--write-timeout` (hyper has no write timeout of its own), and hyper
//!   then drops the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use discovery_client::ClientTls;
use futures_util::future::Either;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{with_write_timeout, Acceptor, Port};
use crate::config::Config;
use crate::gossip;
use crate::http;
use crate::state::{now, NodeState};
use crate::tls::{self, Tls};

use crate::xds;

/// How often expired hosts are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// A running node. Dropping it does not stop it: call [`Server::shutdown`].
pub(crate) struct Server {
    addr: SocketAddr,
    xds_addr: Option<SocketAddr>,
    shared: Arc<NodeState>,
    tasks: TaskTracker,
}

impl Server {
    /// Binds the listener and starts serving, sweeping and gossiping.
    pub(crate) async fn start(config: Config) -> std::io::Result<Server> {
        // Loaded before binding: a node whose certificate does not load never listens.
        let tls = match config.tls.clone() {
            Some(files) => {
                Some(Tls::load(files, config.limits.read_timeout).map_err(std::io::Error::other)?)
            }
            None => None,
        };
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let xds_listener =
            match config.xds_listen {
                Some(xds) => Some(TcpListener::bind(xds).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--xds-listen {xds}: {e}"))
                })?),
                None => None,
            };
        let xds_addr = xds_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let gossip_settings = config.gossip();
        let own = gossip::own_address(&gossip_settings, addr).map_err(std::io::Error::other)?;
        let shared = Arc::new(NodeState::new(config));
        let shutdown = shared.shutdown.clone();
        let tasks = TaskTracker::new();
        let tls_metrics = shared.metrics.tls.clone();
        crate::tls::hangup(tls.as_ref(), tls_metrics, shutdown.clone(), &tasks);
        let peer_tls = tls
            .as_ref()
            .map(|tls| ClientTls::from_config(tls.client_config()));
        let gossip = gossip::spawn(
            shared.clone(),
            gossip_settings,
            addr,
            own,
            shutdown.clone(),
            &tasks,
            peer_tls,
        );
        let service = http::service(shared.clone(), gossip.routes());
        tasks.spawn(sweeper(shared.clone(), shutdown.clone()));
        if let Some(xds_listener) = xds_listener {
            xds::spawn(
                shared.clone(),
                xds_listener,
                tls.clone(),
                shutdown.clone(),
                &tasks,
            );
        }
        let https = tls.is_some();
        tasks.spawn(accept_loop(
            listener,
            service,
            shared.clone(),
            shutdown.clone(),
            tasks.clone(),
            tls,
        ));
        tracing::info!(
            %addr,
            https,
            node = %shared.config.registry.node,
            env = %shared.config.registry.env,
            peers = shared.config.cluster.peers.len(),
            "discovery serving"
        );
        Ok(Server {
            addr,
            xds_addr,
            shared,
            tasks,
        })
    }

    /// The bound address (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound xDS address, unless xDS is off.
    pub(crate) fn xds_addr(&self) -> Option<SocketAddr> {
        self.xds_addr
    }

    /// Stops accepting, lets in-flight requests finish (long polls are answered at once),
    /// and waits for every task.
    pub(crate) async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 10s");
        }
    }
}

async fn sweeper(shared: Arc<NodeState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = shared.sweep_now.notified() => {}
        }
        let now = now();
        if let Some(stall) = shared.stall.tick(now, || shared.clustered()) {
            shared.stalled(stall);
        }
        // A re-sync that a completed exchange can end: this sweep runs first (expiry is no
        // longer held for it), so that what the peers no longer hold and this node kept only
        // because it stopped is gone before reads are served again.
        if let Some(started) = shared.stall.synced_pending() {
            sweep(&shared, now);
            shared.end_resync(started);
            continue;
        }
        if shared.stall.give_up(now) {
            tracing::warn!(
                bound_secs = shared.stall.resync_bound() as f64 / 1e6,
                "no ready peer answered after a stall; serving what this node holds"
            );
            // Ready again: wake the xDS streams that held their answers meanwhile.
            shared.poke();
        }
        if shared.stall.expiry_held(now) {
            // Hosts overdue only because this node stopped are not expired: the re-sync (or,
            // alone, their next heartbeats) brings them up to date first.
            continue;
        }
        sweep(&shared, now);
    }
}

/// One sweep at `now`: expires what is due, counts, logs, and publishes the changes.
fn sweep(shared: &NodeState, now: crate::registry::Micros) {
    let report = shared.registry.sweep(now);
    if report.expired > 0 {
        shared.metrics.expirations.inc_by(report.expired as u64);
        tracing::info!(expired = report.expired, "hosts expired");
    }
    shared
        .metrics
        .tombstones_collected
        .inc_by(report.tombstones_collected as u64);
    if report.guard_toggled {
        if report.guard_engaged {
            tracing::warn!(
                lost = report.overdue,
                total = report.total,
                guard = shared.config.registry.expiry_guard,
                window_secs = shared.config.registry.expiry_grace,
                "expiry guard engaged: too many hosts went overdue within the window; this node probably lost contact, holding them as stale"
            );
        } else {
            tracing::info!("expiry guard released");
        }
    } else if report.newly_stale > 0 {
        tracing::warn!(
            newly_stale = report.newly_stale,
            "expiry guard holds more hosts"
        );
    }
    shared.publish(&report.changes);
    if report.reshipped > 0 || report.expired > 0 {
        // Final copies of hosts that went overdue here (peers drop them on our deadline)
        // and expiries decided here (peers drop them now).
        shared.local_writes.notify_one();
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: http::Service,
    shared: Arc<NodeState>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    tls: Option<Arc<Tls>>,
) {
    let acceptor = Acceptor::new(listener, shared.config.limits.max_connections, "HTTP");
    let header_timeout = shared.config.limits.read_timeout;
    let write_timeout = shared.config.limits.write_timeout;
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(http::HYPER_MAX_BUF)
        .max_header_size(http::HYPER_MAX_BUF);
    while let Some((stream, peer, permit)) = acceptor.next(&shutdown).await {
        let service = service.clone();
        let http1 = http1.clone();
        let shutdown = shutdown.clone();
        let shared = shared.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let stream = with_write_timeout(stream, write_timeout);
            // With TLS, the handshake runs here, in the connection's task, so a slow client
            // never holds up the accept loop; it is bounded by its own timeout.
            let secured = tls::secure(
                tls.as_ref(),
                stream,
                Port::Http,
                peer,
                &shared.metrics,
                &shutdown,
            );
            let Some((io, identity)) = secured.await else {
                return;
            };
            let service = hyper::service::service_fn(move |mut request| {
                // A connection whose client certificate is refused (now: a reload may have
                // withdrawn it since the handshake) reaches no handler; the others carry what
                // their certificate comes to (the gossip endpoint reads it).
                if let Some(identity) = &identity {
                    let cert = identity.cert();
                    if let Some(why) = cert.refused {
                        let refused = crate::tls::certificate_refused(why);
                        return Either::Left(std::future::ready(Ok(refused)));
                    }
                    request.extensions_mut().insert(cert);
                }
                Either::Right(service.call(request, peer))
            });
            let conn = http1.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if is_write_timeout(&e) {
                    shared.metrics.write_timeouts.inc();
                    tracing::debug!(%peer, "cut a connection that made no write progress");
                } else {
                    tracing::trace!(error = %e, "connection ended");
                }
            }
            drop(permit);
        });
    }
}

/// Whether a connection ended because a write made no progress for `--write-timeout` (the
/// `TimedOut` of [`tokio_io_timeout::TimeoutWriter`], which hyper passes on as the error's source).
fn is_write_timeout(error: &hyper::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
}
