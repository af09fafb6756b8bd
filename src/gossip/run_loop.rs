//! The gossip loop of a running node: [`spawn`] starts it, and it runs rounds on the tick,
//! pushes on local writes ([`NodeState::local_writes`]) and re-resolves `--peers-dns`, until
//! shutdown. Each exchange runs in its own task, so that a slow peer never delays the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use discovery_client::ClientTls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http_transport::{Endpoint, HttpTransport, DECODE_SLOTS};
use super::messages::MAX_PEER_URL_LEN;
use super::node::{Clock, Mode, Node};
use super::peers::advertised;
use super::settings::Settings;
use crate::state::{now, NodeState};

/// How long a burst of local writes is gathered before it is pushed: one push carries many.
const PUSH_DEBOUNCE: Duration = Duration::from_millis(5);

type HttpNode = Node<HttpTransport>;

/// The running gossip layer (its loop is owned by the server's task tracker).
pub(crate) struct Gossip {
    endpoint: Endpoint,
}

/// The base URL this node gives its peers when it listens on `addr`: `--advertise` (with
/// `addr`'s port when it names none), else the listen address; `None` for a wildcard one (no
/// address to give: peers use our source address and this port). An `--advertise` that is no
/// peer URL with the bound port (past the URL length limit, say) is an error, never a silent
/// "no address": the config check allows for the longest port, so this is a last guard.
pub(crate) fn own_address(settings: &Settings, addr: SocketAddr) -> Result<Option<String>, String> {
    let scheme = settings.scheme;
    match &settings.advertise {
        Some(url) => advertised(url, addr.port()).map(Some).ok_or_else(|| {
            format!(
                "--advertise {url:?} with port {} is not a peer URL: {scheme}://HOST:PORT, at most {MAX_PEER_URL_LEN} bytes",
                addr.port()
            )
        }),
        None => Ok((!addr.ip().is_unspecified()).then(|| format!("{scheme}://{addr}"))),
    }
}

/// Starts gossip for the node listening on `addr`, giving its peers `own` (see
/// [`own_address`]), with the settings the wiring built.
pub(crate) fn spawn(
    shared: Arc<NodeState>,
    settings: Settings,
    addr: SocketAddr,
    own: Option<String>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
    tls: Option<ClientTls>,
) -> Gossip {
    let clustered = !settings.peers.is_empty() || settings.peers_dns.is_some();
    if clustered && !settings.authenticated() {
        tracing::warn!(
            "gossip is unauthenticated: peers are configured but neither --peer-token nor mutual TLS (--tls-ca) is set, so anyone who can reach this node can send it gossip"
        );
    }
    // Long enough for a page of a snapshot, short enough that a frozen peer does not hold
    // an exchange slot for long.
    let timeout =
        (settings.gossip_interval * 2).clamp(Duration::from_secs(2), Duration::from_secs(10));
    let transport = HttpTransport::new(settings.peer_token.clone(), timeout, tls)
        .expect("the HTTP client builds with a plain configuration");
    let clock: Clock = Arc::new(now);
    let node = Arc::new(Node::new(
        shared,
        settings,
        transport,
        own,
        addr.port(),
        clock,
    ));
    tasks.spawn(run(node.clone(), shutdown, tasks.clone()));
    Gossip {
        endpoint: Endpoint::new(node, DECODE_SLOTS),
    }
}

impl Gossip {
    /// The gossip endpoints, merged into the node's router.
    pub(crate) fn routes(&self) -> axum::Router {
        self.endpoint.routes()
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
    let settings = node.settings();
    let dns = settings.peers_dns.clone();
    if let Some((name, port)) = &dns {
        resolve(&node, name, *port).await;
    }
    let mut tick = tokio::time::interval(settings.gossip_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolve_tick =
        tokio::time::interval((settings.gossip_interval * 10).max(Duration::from_secs(5)));
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
            let urls: Vec<String> = addrs
                // `SocketAddr`'s Display brackets an IPv6 address.
                .map(|a| format!("{}://{a}", node.settings().scheme))
                .collect();
            node.resolved(&urls);
        }
        Ok(Err(e)) => tracing::warn!(name, error = %e, "cannot resolve --peers-dns"),
        Err(_) => tracing::warn!(name, "resolving --peers-dns timed out"),
    }
}
