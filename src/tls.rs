//! TLS and mutual TLS on `--listen` and `--xds-listen` (SPEC 7, issue 11): the `--tls-*`
//! flags, the certificate material and its rotation, the handshake of each accepted
//! connection (both listeners), what a connection's client certificate comes to,
//! and the rustls configuration the gossip client uses toward peers.
//!
//! One [`Tls`] per node holds the current material behind an [`ArcSwap`]: the server
//! configuration that new connections are accepted with, and the certificate and CA the gossip
//! client presents and verifies with. A reload (SIGHUP, or a change of a file's content, polled
//! every [`POLL`]) builds all of it from the files and swaps it in whole; a file that does not
//! load is refused with an error log and the old material stays. Connections already open keep
//! the session they made: nothing is dropped. Their client certificate, though, is judged
//! again against the new CA at their next request ([`Identity`]): a CA swap withdraws what the
//! new CA no longer trusts from kept-alive connections and open xDS streams too.
//!
//! Handshakes are bounded: each must finish within [`handshake_timeout`] of the accept, and at
//! most [`handshake_slots`] of them compute at once ([`Paced`]); a handshake that waits on its
//! client holds no slot, so slow clients cannot block the others' handshakes.
//!
//! `--tls-client-auth peers` and `all` ask every client for a certificate. The handshake
//! lets any through ([`Deferred`]); the chain is verified against `--tls-ca` right after it,
//! and each request of the connection carries the outcome as a [`ClientCert`] extension. A
//! certificate that does not verify, or none under `all`, gets every request answered 401
//! with the reason, before any handler; under `peers` the gossip endpoint requires a verified
//! one ([`gossip_allowed`]) and the rest of the API serves clients without one.
//!
//! Each load also verifies the node's own chain with webpki, as its peers and clients will
//! (a server certificate for a name it holds; a client one too under `--tls-ca`), and
//! publishes its expiry (`discovery_tls_certificate_not_after_seconds`, warned of within
//! [`EXPIRY_WARNING_DAYS`] days).
//!
//! This module does not parse HTTP or HTTP/2, and owns no route: it only hands the listeners
//! a stream and each request its [`ClientCert`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use clap::{Args, ValueEnum};
use discovery_client::tls::{self as pem, TlsError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::{CancellationToken, PollSemaphore};
use tokio_util::task::TaskTracker;

use crate::accept::{Io, Port};
use crate::metrics::{HandshakeFailure, Metrics, TlsCertificate, TlsMetrics};
use crate::registry::SECOND;
use crate::throttle::Throttle;

/// How often the files are read to notice a change by default (they are small; a rotation by
/// a tool such as cert-manager or a cron job is noticed within this). `--tls-poll` changes it.
pub(crate) const POLL: Duration = Duration::from_secs(2);

/// The longest a TLS handshake may take, counted from the accept (a shorter `--read-timeout`
/// bounds it instead): a client on the slowest link finishes in a few round trips, and a
/// connection that has not is cut and frees its slot of `--max-connections`.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a handshake may take on a node with `--read-timeout` `read_timeout`: the smaller.
pub(crate) fn handshake_timeout(read_timeout: Duration) -> Duration {
    read_timeout.min(HANDSHAKE_TIMEOUT)
}

/// How many handshakes may compute (key exchange, signatures, chain checks) at once: half the
/// cores, at least one. A burst of new connections then leaves the other workers to the
/// requests of connections already open; the rest of the burst waits its turn.
pub(crate) fn handshake_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Who must present a client certificate signed by `--tls-ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuth {
    /// Nobody: TLS encrypts and authenticates the server only.
    Off,
    /// Peers: the gossip endpoint requires a client certificate; reads, writes and health
    /// checks work without one.
    Peers,
    /// Every request: a request over a connection without a client certificate that
    /// --tls-ca verifies gets 401 with the reason (the handshake itself succeeds, so that
    /// the client can be told why).
    All,
}

/// The TLS flags of `discovery serve`, as given.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// This node's certificate chain (PEM). With --tls-key, --listen serves HTTPS only and
    /// --xds-listen gRPC over TLS only (xDS clients need TLS credentials: see README,
    /// "Upgrading"), and the node presents it to its peers as its client certificate.
    #[arg(long, env = "DISCOVERY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "DISCOVERY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that signs the peers' certificates and, when required, the clients'.
    /// Needed to gossip over HTTPS.
    #[arg(long, env = "DISCOVERY_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Who must present a client certificate signed by --tls-ca [default: peers with
    /// --tls-ca, else off].
    #[arg(long, env = "DISCOVERY_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<ClientAuth>,
    /// The DNS name a node's certificate must be valid for (SAN, wildcards as in HTTPS, with
    /// serverAuth) to gossip, e.g. server.dc1.discovery; a client certificate of --tls-ca
    /// without it cannot gossip. Unset: any certificate --tls-ca signed may gossip, so with
    /// `all` (clients hold certificates too) it or --peer-token is required.
    #[arg(long, env = "DISCOVERY_TLS_PEER_NAME", value_name = "DNS_NAME")]
    pub tls_peer_name: Option<String>,
    /// How often the files are read to notice a change without a SIGHUP (tests lengthen it
    /// to pin the SIGHUP path).
    #[arg(long, env = "DISCOVERY_TLS_POLL", value_name = "DURATION", default_value_t = POLL.into(), hide = true)]
    pub tls_poll: humantime::Duration,
}

/// The validated TLS settings: where the files are and who must present a certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA bundle of peers (and clients), if any.
    pub ca: Option<PathBuf>,
    /// Who must present a client certificate (default `peers` with a CA, else `off`).
    pub client_auth: ClientAuth,
    /// How often the files are polled for a change ([`POLL`] by default).
    pub poll: Duration,
    /// The name a gossiping node's certificate must be valid for; `None`: any of `--tls-ca`.
    pub peer_name: Option<ServerName<'static>>,
}

impl TlsArgs {
    /// The settings, or which flag is wrong (flag name, reason). `None`: TLS is off.
    pub fn validate(self) -> Result<Option<TlsFiles>, (&'static str, String)> {
        let (cert, key) = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) => {
                if self.tls_ca.is_some() || self.tls_client_auth.is_some() {
                    return Err(("tls-ca", "needs --tls-cert and --tls-key".into()));
                }
                return Ok(None);
            }
            (Some(_), None) => return Err(("tls-cert", "needs --tls-key".into())),
            (None, Some(_)) => return Err(("tls-key", "needs --tls-cert".into())),
        };
        let client_auth = match (self.tls_client_auth, &self.tls_ca) {
            (None, Some(_)) => ClientAuth::Peers,
            (None, None) => ClientAuth::Off,
            (Some(ClientAuth::Off), _) => ClientAuth::Off,
            (Some(mode), Some(_)) => mode,
            (Some(_), None) => {
                return Err((
                    "tls-client-auth",
                    "peers and all need --tls-ca, the CA that signs client certificates".into(),
                ))
            }
        };
        let peer_name = match self.tls_peer_name {
            None => None,
            Some(_) if self.tls_ca.is_none() => {
                return Err(("tls-peer-name", "needs --tls-ca".into()))
            }
            Some(name) => match ServerName::try_from(name) {
                Ok(name @ ServerName::DnsName(_)) => Some(name),
                _ => return Err(("tls-peer-name", "must be a DNS name".into())),
            },
        };
        Ok(Some(TlsFiles {
            cert,
            key,
            ca: self.tls_ca,
            client_auth,
            poll: self.tls_poll.into(),
            peer_name,
        }))
    }
}

/// What a connection's client certificate came to (a request extension; absent on plain
/// HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientCert {
    /// True when one was presented, `--tls-ca` verified it and it names a peer
    /// (`--tls-peer-name`): the connection may gossip.
    pub peer: bool,
    /// Why the connection may not gossip, when it may not.
    pub not_peer: Option<&'static str>,
    /// Why every request of the connection is refused, when it is (only under `all`): a
    /// certificate that does not verify, or none. Under `peers` such a client is served as
    /// one without a certificate.
    pub refused: Option<&'static str>,
}

/// Why a verified certificate may not gossip.
const NOT_A_PEER: &str =
    "the client certificate is not valid for this cluster's --tls-peer-name: only nodes may gossip";

/// Why a chain of more than [`MAX_CHAIN`] certificates or [`MAX_CHAIN_BYTES`] is refused.
const CHAIN_TOO_LONG: &str =
    "the client certificate chain is too long: at most 1 + 6 certificates and 16 KiB";

/// Why a chain does not verify against `--tls-ca`, in a client's words.
fn invalid(error: &rustls::Error) -> &'static str {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the client certificate has expired"
        }
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            "the client certificate is not signed by this node's CA"
        }
        _ => "the client certificate is not valid for a client of this node",
    }
}

impl ClientCert {
    /// `presented`: whether the chain verified against `--tls-ca` and names a peer, or why it
    /// did not verify.
    fn of(presented: Option<Result<bool, &'static str>>, mode: ClientAuth) -> ClientCert {
        let (peer, not_peer) = match presented {
            Some(Ok(true)) => (true, None),
            Some(Ok(false)) => (false, Some(NOT_A_PEER)),
            Some(Err(why)) => (false, Some(why)),
            None => (
                false,
                Some("this node requires a client certificate signed by its CA (--cert and --key)"),
            ),
        };
        let verified = matches!(presented, Some(Ok(_)));
        let refused = match mode {
            ClientAuth::All if !verified => not_peer,
            _ => None,
        };
        ClientCert {
            peer,
            not_peer,
            refused,
        }
    }
}

/// The answer to each request of a connection whose [`ClientCert::refused`] says why.
pub(crate) fn certificate_refused(why: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    // The connection is closed after it: it will never be served, and a client that fixes its
    // certificate (or trusts a new CA) needs a new handshake anyway.
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(axum::http::header::CONNECTION, "close")],
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// Why a gossip request may not go on, if it may not: when a client certificate is required
/// (see [`client_cert_required`]), only a connection whose client certificate verified and
/// names a peer (`--tls-peer-name`) may gossip.
pub(crate) fn gossip_refused(
    cert_required: bool,
    extensions: &axum::http::Extensions,
) -> Option<&'static str> {
    if !cert_required {
        return None;
    }
    match extensions.get::<ClientCert>() {
        Some(cert) if cert.peer => None,
        cert => Some(
            cert.and_then(|c| c.not_peer)
                .unwrap_or("gossip requires a client certificate signed by this node's --tls-ca"),
        ),
    }
}

/// Whether the gossip endpoint requires a verified client certificate: under
/// `--tls-client-auth peers` or `all`.
pub(crate) fn client_cert_required(tls: Option<&TlsFiles>) -> bool {
    tls.is_some_and(|t| t.client_auth != ClientAuth::Off)
}

/// Everything loaded from the files at one time; replaced whole on a reload.
struct Material {
    /// One more for every reload that took: a connection whose client certificate was judged
    /// under an older one is judged again ([`Identity::cert`]).
    generation: u64,
    /// What new HTTP connections are accepted with.
    server: Arc<ServerConfig>,
    /// The same for xDS connections, with ALPN `h2`.
    xds: Arc<ServerConfig>,
    /// Presented to peers as the gossip client's certificate.
    cert: Arc<CertifiedKey>,
    /// Verifies peers' server certificates (from `--tls-ca`); none without a CA.
    peers: Option<Arc<WebPkiServerVerifier>>,
    /// Verifies client certificates after the handshake (see [`Deferred`]); none when no
    /// client is asked for one.
    clients: Option<Arc<dyn ClientCertVerifier>>,
    /// When the certificates stop being valid.
    expiry: Expiry,
}

/// When this node's certificates stop being valid, in Unix seconds: the expiry gauges and the
/// warning ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The earliest not-after of the certificates clients check when this node presents
    /// `--tls-cert`: the leaf and the intermediates of its verified path (a certificate of the
    /// file off that path, such as an old cross-signature, is no one's concern).
    pub(crate) certificate: i64,
    /// The not-after of the `--tls-ca` certificate that this node's chain verifies to, if a
    /// CA is given (an expired CA kept in the bundle next to its successor is not reported).
    pub(crate) ca: Option<i64>,
}

/// How long before its certificate expires a node starts warning, once per
/// [`EXPIRY_WARN_EVERY`].
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(EXPIRY_WARNING_DAYS * 86_400);
/// [`EXPIRY_WARNING`] in days, as logs and the dashboard say it.
pub(crate) const EXPIRY_WARNING_DAYS: u64 = 7;
/// How often the warning of [`EXPIRY_WARNING`] repeats.
const EXPIRY_WARN_EVERY: Duration = Duration::from_secs(3600);

impl Expiry {
    /// Sets the expiry gauges.
    fn record(&self, metrics: &TlsMetrics) {
        metrics.set_not_after(TlsCertificate::node, self.certificate);
        if let Some(ca) = self.ca {
            metrics.set_not_after(TlsCertificate::ca, ca);
        }
    }

    /// Logs a warning when a certificate of `files` expires within [`EXPIRY_WARNING`] of `now`
    /// (Unix seconds), or an error when it has expired; returns whether it logged.
    fn warn(&self, files: &TlsFiles, now: i64) -> bool {
        let soon = now.saturating_add(EXPIRY_WARNING.as_secs() as i64);
        let within = format!("{EXPIRY_WARNING_DAYS} days");
        let mut logged = false;
        let mut certificates = vec![(files.cert.as_path(), self.certificate, false)];
        certificates.extend(
            files
                .ca
                .as_deref()
                .zip(self.ca)
                .map(|(p, at)| (p, at, true)),
        );
        for (path, not_after, ca) in certificates {
            let file = path.display();
            let at = rfc3339_secs(not_after);
            if not_after <= now {
                // rustls does not check a trust anchor's dates: peers still accept a chain to
                // an expired CA, other TLS clients may not.
                let consequence = match ca {
                    false => "a TLS certificate has expired: peers and clients refuse it; replace the file (it is reloaded without a restart)",
                    true => "the --tls-ca certificate this node's certificate is signed by has expired: this cluster's nodes (rustls) still accept it, other TLS clients may not; renew the CA and add it to the bundle (reloaded without a restart)",
                };
                tracing::error!(%file, not_after = %at, "{consequence}");
                logged = true;
            } else if not_after <= soon {
                let days = (not_after - now) as f64 / 86_400.0;
                tracing::warn!(%file, not_after = %at, days_left = format!("{days:.1}"), "a TLS certificate expires within {within}: replace the file (it is reloaded without a restart)");
                logged = true;
            }
        }
        logged
    }
}

/// Unix seconds as RFC 3339.
pub(crate) fn rfc3339_secs(unix_secs: i64) -> String {
    crate::registry::rfc3339(u64::try_from(unix_secs).unwrap_or(0).saturating_mul(SECOND))
}

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    UnixTime::now().as_secs() as i64
}

/// The contents of the files as last read: a reload happens when they change.
type Snapshot = Vec<Result<Vec<u8>, String>>;

/// The files as the poller last read them, and whether they are to be tried again although
/// they did not change.
#[derive(Default)]
struct Seen {
    /// Their contents (loaded or refused): a refused file is logged once, not on every poll.
    files: Snapshot,
    /// They were refused for a reason that time ends: a certificate not valid yet (issued a
    /// moment ago on a host whose clock is ahead of ours). Each poll tries them again until
    /// they load or change.
    retry: bool,
}

/// A node's TLS state; see the module docs.
pub(crate) struct Tls {
    files: TlsFiles,
    current: ArcSwap<Material>,
    seen: parking_lot::Mutex<Seen>,
    /// The generation of the material in use, for long-lived streams to notice a reload.
    reloaded: watch::Sender<u64>,
    /// One permit per handshake computing ([`handshake_slots`]).
    slots: Arc<Semaphore>,
    /// How long a handshake may take ([`handshake_timeout`]).
    handshake_timeout: Duration,
    /// Handshakes that time out: any client can cause them at will.
    timeout_log: Throttle,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

fn refused(e: impl std::fmt::Display) -> TlsError {
    TlsError::Refused(e.to_string())
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it. Handshakes of a
    /// node with `--read-timeout` `read_timeout` take at most [`handshake_timeout`] of it.
    pub(crate) fn load(files: TlsFiles, read_timeout: Duration) -> Result<Arc<Tls>, TlsError> {
        let contents = snapshot(&files);
        let material = build(&files, &contents, 0).map_err(|refusal| refusal.error)?;
        Ok(Arc::new(Tls {
            files,
            current: ArcSwap::from_pointee(material),
            seen: parking_lot::Mutex::new(Seen {
                files: contents,
                retry: false,
            }),
            reloaded: watch::Sender::new(0),
            slots: Arc::new(Semaphore::new(handshake_slots())),
            handshake_timeout: handshake_timeout(read_timeout),
            timeout_log: Throttle::new(),
        }))
    }

    /// Reads the files again and, when they load, swaps them in for new connections. With
    /// `only_if_changed`, does nothing unless a file's content changed since the last read or
    /// was refused as not valid yet ([`Seen::retry`]). Logs what it did; an error keeps the old
    /// material. A retry refused again for the same files is neither logged at `error` nor
    /// returned as an error again (it was, the first time): `Ok(false)`.
    pub(crate) fn reload(&self, only_if_changed: bool) -> Result<bool, TlsError> {
        let now = snapshot(&self.files);
        let retrying = {
            let mut seen = self.seen.lock();
            let unchanged = seen.files == now;
            if only_if_changed && unchanged && !seen.retry {
                return Ok(false);
            }
            seen.files = now.clone();
            unchanged && seen.retry
        };
        // Reloads run one at a time (one reloader task), so the generation cannot be taken twice.
        let generation = self.current.load().generation + 1;
        let built = build(&self.files, &now, generation);
        self.seen.lock().retry = matches!(&built, Err(refusal) if refusal.not_yet);
        match built {
            Ok(material) => {
                self.current.store(Arc::new(material));
                self.reloaded.send_replace(generation);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded; new connections use them");
                Ok(true)
            }
            Err(refusal) if retrying && only_if_changed => {
                tracing::debug!(error = %refusal.error, "TLS certificates still not valid yet; trying again at the next poll");
                Ok(false)
            }
            Err(Refusal { error, not_yet }) => {
                let retry = if not_yet {
                    "; tried again at every poll (--tls-poll) until it is valid"
                } else {
                    ""
                };
                tracing::error!(error = %error, "TLS certificates not reloaded, the previous ones stay in use{retry}");
                Err(error)
            }
        }
    }

    /// Polls the files for a change every `--tls-poll` until shutdown, and reloads on a SIGHUP
    /// of `hup` (see [`hangup`]). Keeps the expiry gauges of `metrics` equal to the material in
    /// use, and warns while a certificate expires within [`EXPIRY_WARNING`].
    fn spawn_reloader(
        self: &Arc<Self>,
        mut hup: Option<tokio::signal::unix::Signal>,
        metrics: TlsMetrics,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let tls = self.clone();
        // Set before the node says `listening`: its first scrape has them.
        let mut expiry = tls.expiry();
        expiry.record(&metrics);
        tasks.spawn(async move {
            // The files were just loaded: the first look is one period away (an immediate
            // first tick would race a rotation right after the start).
            let period = tls.files.poll;
            let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned: Option<tokio::time::Instant> = None;
            loop {
                let due = warned.is_none_or(|at| at.elapsed() >= EXPIRY_WARN_EVERY);
                if due && expiry.warn(&tls.files, unix_now()) {
                    warned = Some(tokio::time::Instant::now());
                }
                let forced = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = poll.tick() => false,
                    Some(()) = async { hup.as_mut()?.recv().await } => true,
                };
                // Blocking file reads and key parsing: off the async workers.
                let reloading = tls.clone();
                let reloaded = tokio::task::spawn_blocking(move || reloading.reload(!forced)).await;
                match reloaded {
                    Ok(Err(_)) => {
                        metrics.reload_failures.inc();
                    }
                    Ok(Ok(true)) => {
                        expiry = tls.expiry();
                        expiry.record(&metrics);
                        // New certificates: say at once if these expire soon too.
                        warned = None;
                    }
                    _ => {}
                }
            }
        });
    }

    /// Accepts a TLS connection on `stream` come to `port`, with the certificate of the moment.
    /// The handshake must be done within [`handshake_timeout`] of now and computes in one of
    /// [`handshake_slots`]. A client that does not speak TLS is told why in the port's
    /// protocol ([`crate::plaintext`]); it, a failed and a late handshake get `None`, and are
    /// counted and logged at debug (late ones at warn, throttled): clients cause them at will.
    pub(crate) async fn accept<S>(
        self: &Arc<Self>,
        stream: S,
        port: Port,
        peer: std::net::SocketAddr,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> Option<(Pin<Box<dyn Io>>, Arc<Identity>)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Peek + Send + 'static,
    {
        let handshake = async {
            let mut first = [0u8; 1];
            if stream.peek_byte(&mut first).await? == 0 {
                return std::io::Result::Ok(Handshake::Closed);
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                return Ok(Handshake::NotTls(stream));
            }
            // The material of the moment the client starts its handshake.
            let material = self.current.load_full();
            let config = match port {
                Port::Http => material.server.clone(),
                Port::Xds => material.xds.clone(),
            };
            let tls = tokio_rustls::TlsAcceptor::from(config)
                .accept(stream)
                .await?;
            let chain = Presented::of(tls.get_ref().1.peer_certificates());
            let expiries = chain.expiries();
            let judged_passed = passed(&expiries);
            let cert = self.judge(&material, &chain);
            let identity = Identity {
                tls: self.clone(),
                chain,
                expiries,
                judged: parking_lot::Mutex::new(Judged {
                    generation: material.generation,
                    passed: judged_passed,
                    cert,
                }),
            };
            Ok(Handshake::Done(Box::pin(tls), Arc::new(identity)))
        };
        let paced = Paced {
            inner: Box::pin(handshake),
            slots: PollSemaphore::new(self.slots.clone()),
        };
        let timeout = self.handshake_timeout;
        let done = tokio::select! {
            _ = shutdown.cancelled() => return None,
            done = tokio::time::timeout(timeout, paced) => done,
        };
        match done {
            Ok(Ok(Handshake::Done(stream, identity))) => Some((stream, identity)),
            Ok(Ok(Handshake::Closed)) => None,
            Ok(Ok(Handshake::NotTls(stream))) => {
                metrics.tls_handshake_failed(HandshakeFailure::not_tls);
                tracing::debug!(%peer, ?port, "answered a client that does not speak TLS");
                crate::plaintext::refuse(stream, port).await;
                None
            }
            Ok(Err(e)) => {
                metrics.tls_handshake_failed(HandshakeFailure::failed);
                tracing::debug!(%peer, ?port, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics.tls_handshake_failed(HandshakeFailure::timeout);
                if self.timeout_log.allow(crate::state::now() / 1_000_000) {
                    tracing::warn!(
                        %peer,
                        ?port,
                        timeout_ms = timeout.as_millis() as u64,
                        "a TLS handshake did not finish in time; connection closed (at most one such line per 10 s; discovery_tls_handshakes_failed_total counts them all)"
                    );
                }
                None
            }
        }
    }

    /// What `chain` (the client's, if it presented one) comes to under `material`: verified
    /// against `--tls-ca`, then whether it names a peer.
    fn judge(&self, material: &Material, chain: &Presented) -> ClientCert {
        let chain = match chain {
            Presented::None => None,
            Presented::Chain(chain) => Some(&chain[..]),
            Presented::TooLong => {
                let presented = material.clients.is_some().then_some(Err(CHAIN_TOO_LONG));
                return ClientCert::of(presented, self.files.client_auth);
            }
        };
        let presented = chain.and_then(|chain| {
            let (end_entity, intermediates) = chain.split_first()?;
            let verifier = material.clients.as_ref()?;
            let now = UnixTime::now();
            let verified = verifier.verify_client_cert(end_entity, intermediates, now);
            // A peer's certificate is also a server certificate for --tls-peer-name (chain,
            // serverAuth, name), which an agent's client certificate is not.
            let peer = |name: &ServerName<'_>| {
                material.peers.as_ref().is_some_and(|peers| {
                    peers
                        .verify_server_cert(end_entity, intermediates, name, &[], now)
                        .is_ok()
                })
            };
            Some(
                verified
                    .map(|_| self.files.peer_name.as_ref().is_none_or(peer))
                    .map_err(|e| invalid(&e)),
            )
        });
        ClientCert::of(presented, self.files.client_auth)
    }

    /// When the certificates in use stop being valid.
    pub(crate) fn expiry(&self) -> Expiry {
        self.current.load().expiry
    }

    /// The rustls configuration of the gossip client: it presents this node's certificate and
    /// verifies peers against `--tls-ca`, both as of the latest reload.
    pub(crate) fn client_config(self: &Arc<Self>) -> ClientConfig {
        ClientConfig::builder_with_provider(pem::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerSide(self.clone())))
            .with_client_cert_resolver(Arc::new(PeerSide(self.clone())))
    }
}

/// The stream a listener serves on an accepted connection: as it is without TLS, else once its
/// handshake is done ([`Tls::accept`]), with its client certificate. `None`: nothing to serve.
pub(crate) async fn secure<S>(
    tls: Option<&Arc<Tls>>,
    stream: S,
    port: Port,
    peer: std::net::SocketAddr,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<(Pin<Box<dyn Io>>, Option<Arc<Identity>>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Peek + Send + 'static,
{
    match tls {
        None => Some((Box::pin(stream), None)),
        Some(tls) => {
            let (stream, identity) = tls.accept(stream, port, peer, metrics, shutdown).await?;
            Some((stream, Some(identity)))
        }
    }
}

/// Handles SIGHUP for the node's lifetime: reloads the TLS files (and polls them, see
/// [`Tls::spawn_reloader`], which keeps `metrics` current) or, without TLS, logs that there
/// is nothing to reload. Called before the node says `listening`, and the handler is installed
/// by the time it returns, so a SIGHUP never takes the default action (terminating the
/// process).
pub(crate) fn hangup(
    tls: Option<&Arc<Tls>>,
    metrics: TlsMetrics,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still polled");
            None
        }
    };
    match (tls, hup) {
        (Some(tls), hup) => tls.spawn_reloader(hup, metrics, shutdown, tasks),
        (None, None) => {}
        (None, Some(mut hup)) => {
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        Some(()) = hup.recv() => {
                            tracing::warn!("SIGHUP ignored: TLS is off, there is nothing to reload");
                        }
                    }
                }
            });
        }
    }
}

/// The first byte of a TLS connection (a handshake record); `GET`, `POST`... start with a
/// letter.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// How a handshake ended, short of failing.
enum Handshake<S> {
    Done(Pin<Box<dyn Io>>, Arc<Identity>),
    /// The client closed before sending anything.
    Closed,
    /// The client's first byte does not start a TLS record.
    NotTls(S),
}

/// A future polled only while it holds one of `slots`: a handshake computes (key exchange,
/// signatures) within a poll, and between polls waits on its client holding nothing. At most
/// as many handshakes as there are slots run their crypto at once, and a client that stalls
/// mid-handshake cannot keep a slot from the others.
struct Paced<F> {
    inner: Pin<Box<F>>,
    slots: PollSemaphore,
}

impl<F: Future> Future for Paced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // The semaphore is never closed: `None` does not happen; it would only mean "unpaced".
        let permit = std::task::ready!(self.slots.poll_acquire(cx));
        let polled = self.inner.as_mut().poll(cx);
        drop(permit);
        polled
    }
}

/// Most certificates of a client's chain that are verified (the client's own and 6
/// intermediates, webpki's own depth limit), and most bytes: a longer chain is refused
/// unverified ([`CHAIN_TOO_LONG`]) and not kept, so that a client cannot make each connection
/// hold, and each judgement verify, a hundred junk intermediates.
const MAX_CHAIN: usize = 1 + 6;
/// See [`MAX_CHAIN`].
const MAX_CHAIN_BYTES: usize = 16 * 1024;

/// The client certificate chain of a connection, as kept.
enum Presented {
    /// None presented (or none asked for).
    None,
    /// At most [`MAX_CHAIN`] certificates and [`MAX_CHAIN_BYTES`].
    Chain(Vec<CertificateDer<'static>>),
    /// Longer: refused without being verified.
    TooLong,
}

impl Presented {
    fn of(chain: Option<&[CertificateDer<'static>]>) -> Presented {
        match chain {
            None | Some([]) => Presented::None,
            Some(chain)
                if chain.len() > MAX_CHAIN
                    || chain.iter().map(|c| c.len()).sum::<usize>() > MAX_CHAIN_BYTES =>
            {
                Presented::TooLong
            }
            Some(chain) => Presented::Chain(chain.to_vec()),
        }
    }

    /// When the chain's certificates expire (their notAfter, Unix seconds), in order: the
    /// chain is judged again as each passes. Each, not the first alone: an intermediate
    /// the verifier does not use may expire first, and its expiry must not stand for the
    /// others'. One whose validity cannot be read is left out (the verifier refuses it if it
    /// is on the path).
    fn expiries(&self) -> Vec<u64> {
        let Presented::Chain(chain) = self else {
            return Vec::new();
        };
        let mut expiries: Vec<u64> = chain
            .iter()
            .filter_map(|c| u64::try_from(not_after(c).ok()?).ok())
            .collect();
        expiries.sort_unstable();
        expiries.dedup();
        expiries
    }
}

/// A TLS connection's client certificate: the chain it presented at the handshake, and what
/// that comes to under the node's current material. A reload (a new CA, or one that no longer
/// holds the issuer) makes the next [`Identity::cert`] judge the chain again, so a connection
/// kept alive across a CA swap is held to the new CA from its next request on; so does the
/// chain's expiry, so a certificate that expires during a connection is refused from then on.
pub(crate) struct Identity {
    tls: Arc<Tls>,
    /// As presented (bounded).
    chain: Presented,
    /// When its certificates expire (Unix seconds; see [`Presented::expiries`]).
    expiries: Vec<u64>,
    /// The last judgement. Requests of one connection take it in turn, briefly.
    judged: parking_lot::Mutex<Judged>,
}

/// What a chain came to, and under what.
struct Judged {
    /// The generation of the material it was judged under.
    generation: u64,
    /// How many of the chain's expiries had passed when it was judged.
    passed: usize,
    cert: ClientCert,
}

impl Identity {
    /// What the connection's client certificate comes to now: judged again when the material
    /// changed since it was last judged (a reload) or a certificate of the chain has expired
    /// since; otherwise a generation compare and a clock read.
    pub(crate) fn cert(&self) -> ClientCert {
        let material = self.tls.current.load();
        let passed = self.passed();
        let mut judged = self.judged.lock();
        if judged.generation != material.generation || judged.passed != passed {
            *judged = Judged {
                generation: material.generation,
                passed,
                cert: self.tls.judge(&material, &self.chain),
            };
        }
        judged.cert
    }

    /// A receiver of reloads, for [`Identity::withdrawn`].
    pub(crate) fn reloads(&self) -> watch::Receiver<u64> {
        self.tls.reloaded.subscribe()
    }

    /// How many of the chain's expiries have passed.
    fn passed(&self) -> usize {
        passed(&self.expiries)
    }

    /// How long until the next of the chain's expiries has passed, if one is to come.
    fn until_expiry(&self) -> Option<Duration> {
        let at = (self.expiries.get(self.passed())? + 1).checked_mul(1_000_000)?;
        at.checked_sub(crate::state::now())
            .map(Duration::from_micros)
    }

    /// Waits for every request of this connection to be refused, and says why: a reload after
    /// which the chain no longer verifies, or its expiry. A long-lived stream ends then rather
    /// than serve a client the node no longer trusts.
    pub(crate) async fn withdrawn(&self, reloads: &mut watch::Receiver<u64>) -> &'static str {
        let mut reloading = true;
        loop {
            // First, and not only after a change: a reload between the caller's own check
            // and its taking `reloads` is not a change for this receiver.
            if let Some(why) = self.cert().refused {
                return why;
            }
            let expiry = self.until_expiry();
            tokio::select! {
                changed = reloads.changed(), if reloading => reloading = changed.is_ok(),
                () = tokio::time::sleep(expiry.unwrap_or_default()), if expiry.is_some() => {}
                else => return std::future::pending().await,
            }
        }
    }
}

/// How many of `expiries` (sorted, Unix seconds) have passed: webpki's rule, expired once the
/// time is past notAfter.
fn passed(expiries: &[u64]) -> usize {
    let now = crate::state::now() / 1_000_000;
    expiries.partition_point(|&at| at < now)
}

/// The notAfter of a DER X.509 certificate (RFC 5280 4.1.2.5), in Unix seconds.
fn not_after(cert: &[u8]) -> Result<i64, String> {
    x509_parser::parse_x509_certificate(cert)
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .map_err(|e| e.to_string())
}

/// A stream whose first byte can be looked at without taking it.
pub(crate) trait Peek {
    /// Waits for the first byte; returns how many were peeked (0 at end of stream).
    fn peek_byte(
        &self,
        buf: &mut [u8; 1],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
}

impl Peek for TcpStream {
    async fn peek_byte(&self, buf: &mut [u8; 1]) -> std::io::Result<usize> {
        self.peek(buf).await
    }
}

impl<S: Peek + AsyncWrite + Sync> Peek for Pin<Box<tokio_io_timeout::TimeoutWriter<S>>> {
    async fn peek_byte(&self, buf: &mut [u8; 1]) -> std::io::Result<usize> {
        self.as_ref().get_ref().get_ref().peek_byte(buf).await
    }
}

/// Reads every file (certificate, key, CA) as they are now.
fn snapshot(files: &TlsFiles) -> Snapshot {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut all = vec![read(&files.cert), read(&files.key)];
    if let Some(ca) = &files.ca {
        all.push(read(ca));
    }
    all
}

/// Why the files were not loaded, and whether only time stands in the way.
struct Refusal {
    error: TlsError,
    /// A certificate is not valid yet: the same files may load later (see [`Seen::retry`]).
    not_yet: bool,
}

impl From<TlsError> for Refusal {
    fn from(error: TlsError) -> Self {
        Refusal {
            error,
            not_yet: false,
        }
    }
}

/// The material of one snapshot of the files.
fn build(files: &TlsFiles, contents: &Snapshot, generation: u64) -> Result<Material, Refusal> {
    let bytes = |i: usize| {
        contents[i]
            .as_deref()
            .map_err(|e| TlsError::Refused(e.clone()))
    };
    let chain = pem::parse_certs(&files.cert, bytes(0)?)?;
    let key = pem::parse_key(&files.key, bytes(1)?)?;
    let cert = pem::certified_key(chain.clone(), key.clone_key()).map_err(|e| {
        let (cert, key) = (files.cert.display(), files.key.display());
        TlsError::Refused(format!("{cert} and {key}: {e}"))
    })?;
    let cert = Arc::new(cert);
    let ca = match &files.ca {
        Some(path) => {
            let bundle = bytes(2)?;
            Some((path.as_path(), pem::parse_certs(path, bundle)?))
        }
        None => None,
    };
    let expiry = own_chain_verifies(&files.cert, &chain, ca.as_ref(), UnixTime::now())?;
    let roots = match &ca {
        Some((path, _)) => Some(Arc::new(pem::parse_roots(path, bytes(2)?)?)),
        None => None,
    };
    let builder = ServerConfig::builder_with_provider(pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(refused)?;
    let clients = match (files.client_auth, &roots) {
        (ClientAuth::Off, _) | (_, None) => None,
        (ClientAuth::Peers | ClientAuth::All, Some(roots)) => Some(
            WebPkiClientVerifier::builder_with_provider(roots.clone(), pem::provider())
                .allow_unauthenticated()
                .build()
                .map_err(refused)?,
        ),
    };
    let builder = match &clients {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(Arc::new(Deferred(verifier.clone()))),
    };
    let server = builder.with_single_cert(chain, key).map_err(refused)?;
    let mut xds = server.clone();
    xds.alpn_protocols = vec![b"h2".to_vec()];
    let peers = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots, pem::provider())
                .build()
                .map_err(refused)?,
        ),
        None => None,
    };
    Ok(Material {
        generation,
        server: Arc::new(server),
        xds: Arc::new(xds),
        cert,
        peers,
        clients,
        expiry,
    })
}

/// The not-after (Unix seconds) of a certificate of the file at `path`.
fn not_after_of(path: &Path, der: &CertificateDer<'_>) -> Result<i64, TlsError> {
    not_after(der).map_err(|e| {
        TlsError::Refused(format!("{}: not an X.509 certificate: {e}", path.display()))
    })
}

/// The names of `leaf`'s subjectAltName as a client would ask for them: its DNS names (a
/// wildcard stands for one label under it) and IP addresses.
fn names_of(leaf: &CertificateDer<'_>) -> Vec<ServerName<'static>> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => {
                let dns = match dns.strip_prefix("*.") {
                    Some(under) => format!("node.{under}"),
                    None => dns.to_string(),
                };
                ServerName::try_from(dns).ok()
            }
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|o| ServerName::from(std::net::IpAddr::from(o))),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|o| ServerName::from(std::net::IpAddr::from(o))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Verifies this node's own chain as the other side of its connections will (rustls' webpki,
/// with the provider's algorithms, at `now`), so that a chain they would refuse is refused
/// here with the cause instead of the node starting (or reloading) and failing every
/// handshake: as a server certificate (serverAuth on every certificate of the path, valid
/// dates, not a CA) for one of the names it gives, and with `--tls-ca` (`ca`: its path and
/// certificates) also as a client certificate of that CA (the node presents it to its peers).
/// The path ends at a certificate of `--tls-ca`; without one, at the top certificate of the
/// chain, taken as the clients' root (whose own dates are then theirs to judge), and a chain
/// that does not reach it (a leaf alone, signed by a CA the file does not hold) is judged on
/// what webpki checks before looking for an issuer: the leaf's dates and usages. Returns when
/// the certificates of the verified path expire.
fn own_chain_verifies(
    path: &Path,
    chain: &[CertificateDer<'static>],
    ca: Option<&(&Path, Vec<CertificateDer<'static>>)>,
    now: UnixTime,
) -> Result<Expiry, Refusal> {
    let file = path.display();
    let refuse = |why: String| TlsError::Refused(format!("{file}: {why}"));
    let Some((leaf_der, rest)) = chain.split_first() else {
        return Err(refuse("no certificate".into()).into());
    };
    let leaf = webpki::EndEntityCert::try_from(leaf_der)
        .map_err(|e| refuse(format!("not a usable X.509 certificate: {e:?}")))?;
    let leaf_not_after = not_after_of(path, leaf_der)?;
    let (anchor_ders, intermediates): (&[CertificateDer<'static>], &[CertificateDer<'static>]) =
        match ca {
            Some((_, certs)) => (certs, rest),
            None => match rest.split_last() {
                Some((top, between)) => (std::slice::from_ref(top), between),
                None => (std::slice::from_ref(leaf_der), &[]),
            },
        };
    let mut anchors = Vec::with_capacity(anchor_ders.len());
    for der in anchor_ders {
        let anchor = webpki::anchor_from_trusted_cert(der).map_err(|e| {
            let source = ca.map_or(path, |(ca, _)| *ca).display();
            TlsError::Refused(format!("{source}: not a usable CA certificate: {e:?}"))
        })?;
        anchors.push(anchor);
    }
    let algorithms = pem::provider().signature_verification_algorithms.all;
    let verify = |usage: webpki::KeyUsage| {
        leaf.verify_for_usage(algorithms, &anchors, intermediates, now, usage, None, None)
    };
    let which = |not_after: i64| match not_after == leaf_not_after {
        true => "the certificate",
        false => "a certificate of its chain (an intermediate)",
    };
    // What the other side would say, in this node's words.
    let why = |e: webpki::Error, client: bool| -> Refusal {
        use webpki::Error as E;
        let not_yet = matches!(e, E::CertNotValidYet { .. });
        let why = match e {
            E::CertExpired { not_after, .. } => {
                let at = not_after.as_secs() as i64;
                format!("{} has expired (not after {})", which(at), rfc3339_secs(at))
            }
            E::CertNotValidYet { not_before, .. } => format!(
                "a certificate of its chain is not valid yet (not before {}; this host's clock says {})",
                rfc3339_secs(not_before.as_secs() as i64),
                rfc3339_secs(now.as_secs() as i64)
            ),
            #[allow(deprecated)]
            E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) if !client => "a certificate of its chain lacks serverAuth in its extended key usage (anyExtendedKeyUsage does not count), so clients and peers refuse it as a server's".into(),
            #[allow(deprecated)]
            E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => "a certificate of its chain lacks clientAuth in its extended key usage (anyExtendedKeyUsage does not count), and with --tls-ca the node presents it to its peers as its client certificate, which they refuse".into(),
            E::CaUsedAsEndEntity => "its first certificate is a CA's, not a server's: put the node's own certificate first".into(),
            e => match ca {
                Some((ca, _)) => format!(
                    "not a valid certificate of --tls-ca {} for this node: {e:?}",
                    ca.display()
                ),
                None => format!("refused as a server certificate: {e:?}"),
            },
        };
        Refusal {
            error: refuse(why),
            not_yet,
        }
    };
    let path_expiry = |verified: &webpki::VerifiedPath<'_>| -> Result<Expiry, TlsError> {
        let mut certificate = leaf_not_after;
        for intermediate in verified.intermediate_certificates() {
            certificate = certificate.min(not_after_of(path, &intermediate.der())?);
        }
        let ca_not_after = match ca {
            Some((ca, certs)) => {
                let at = anchors
                    .iter()
                    .position(|a| std::ptr::eq(a, verified.anchor()))
                    .map_or(Ok(i64::MAX), |i| not_after_of(ca, &certs[i]))?;
                Some(at)
            }
            None => None,
        };
        Ok(Expiry {
            certificate,
            ca: ca_not_after,
        })
    };
    let expiry = match verify(webpki::KeyUsage::server_auth()) {
        Ok(verified) => path_expiry(&verified)?,
        // Without --tls-ca the clients' roots are unknown: a leaf whose issuer the file does
        // not hold is theirs to find (webpki checked the leaf itself before looking).
        Err(webpki::Error::UnknownIssuer) if ca.is_none() => Expiry {
            certificate: leaf_not_after,
            ca: None,
        },
        Err(e) => return Err(why(e, false)),
    };
    if ca.is_some() {
        verify(webpki::KeyUsage::client_auth()).map_err(|e| why(e, true))?;
    }
    let names = names_of(leaf_der);
    let named = names
        .iter()
        .any(|name| leaf.verify_is_valid_for_subject_name(name).is_ok());
    if !named {
        return Err(refuse("names no host (no DNS name or IP address in its subjectAltName): clients and peers refuse it for any address".into()).into());
    }
    Ok(expiry)
}

/// The handshake-signature methods of a certificate verifier: checked with the provider's
/// algorithms whatever the chain's verdict (they prove the peer holds the certificate's key).
/// One body for the server's [`Deferred`] and the gossip client's [`PeerSide`].
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = pem::provider().signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = pem::provider().signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            pem::provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// The server's client-certificate verifier: it takes any chain in the handshake, still
/// checking the handshake signature (the client holds the certificate's key), and leaves
/// the chain to [`Tls::accept`], which verifies it against `--tls-ca` once the handshake is
/// done. A refused certificate then gets a 401 that says why on every request, where a TLS
/// alert in TLS 1.3 reaches most clients as "connection closed" and names no cause.
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// The gossip client's view of the current material (see [`Tls::client_config`]).
#[derive(Debug)]
struct PeerSide(Arc<Tls>);

impl PeerSide {
    fn verifier(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        self.0.current.load().peers.clone().ok_or_else(|| {
            rustls::Error::General("no --tls-ca to verify peers' certificates with".into())
        })
    }
}

impl ResolvesClientCert for PeerSide {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().cert.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for PeerSide {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cert: bool, key: bool, ca: bool, mode: Option<ClientAuth>) -> TlsArgs {
        TlsArgs {
            tls_cert: cert.then(|| "c.pem".into()),
            tls_key: key.then(|| "k.pem".into()),
            tls_ca: ca.then(|| "ca.pem".into()),
            tls_client_auth: mode,
            tls_poll: POLL.into(),
            tls_peer_name: None,
        }
    }

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
        KeyPair,
    };

    /// A certificate made for a test, with the issuer it can sign others with when a CA.
    struct Made {
        der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    /// When a test certificate is valid: rcgen's default (1975-4096), or in 2000 only.
    #[derive(Clone, Copy)]
    enum Dates {
        Now,
        Expired,
    }

    /// A certificate named `cn` (a CA when `ca`) with `usages` and `dates`, signed by
    /// `by` (self-signed without).
    fn make(cn: &str, ca: bool, usages: &[Eku], dates: Dates, by: Option<&Made>) -> Made {
        let key = KeyPair::generate().unwrap();
        let sans = if ca {
            vec![]
        } else {
            vec!["node.test".to_owned()]
        };
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.extended_key_usages = usages.to_vec();
        if let Dates::Expired = dates {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = match by {
            Some(by) => params.signed_by(&key, &by.issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        Made {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    const NODE: &[Eku] = &[Eku::ServerAuth, Eku::ClientAuth];

    /// The verdict on `chain` of a node with (or without) `ca` as its `--tls-ca`.
    fn verdict(chain: &[&Made], ca: Option<&[&Made]>) -> Result<Expiry, String> {
        let chain: Vec<_> = chain.iter().map(|m| m.der.clone()).collect();
        let ca = ca.map(|certs| {
            let certs = certs.iter().map(|m| m.der.clone()).collect::<Vec<_>>();
            (Path::new("ca.pem"), certs)
        });
        own_chain_verifies(Path::new("node.pem"), &chain, ca.as_ref(), UnixTime::now())
            .map_err(|refusal| refusal.error.to_string())
    }

    /// Review finding 4: an expired certificate in the file that is not on the chain's path
    /// (as Let's Encrypt's old expired cross-signature was) does not stop a chain that
    /// clients accept; the expiry reported is that of the path.
    #[test]
    fn an_expired_certificate_off_the_path_does_not_refuse_a_working_chain() {
        let root = make("root", true, &[], Dates::Now, None);
        let inter = make("inter", true, &[], Dates::Now, Some(&root));
        let leaf = make("leaf", false, NODE, Dates::Now, Some(&inter));
        let stale = make("stale", true, &[], Dates::Expired, None);
        let expiry = verdict(&[&leaf, &inter, &stale], Some(&[&root])).unwrap();
        assert!(
            expiry.certificate > unix_now(),
            "the path's expiry, not the stale one"
        );
        // Without --tls-ca the top certificate is the clients' root: the same.
        verdict(&[&leaf, &inter, &stale], None).unwrap();
        verdict(&[&leaf, &inter, &root], None).unwrap();
        // An expired certificate on the path still refuses.
        let old_inter = make("old-inter", true, &[], Dates::Expired, Some(&root));
        let leaf2 = make("leaf2", false, NODE, Dates::Now, Some(&old_inter));
        let err = verdict(&[&leaf2, &old_inter], Some(&[&root])).unwrap_err();
        assert!(err.contains("(an intermediate) has expired"), "{err}");
        let err = verdict(
            &[&make("old", false, NODE, Dates::Expired, Some(&root))],
            Some(&[&root]),
        )
        .unwrap_err();
        assert!(err.contains("the certificate has expired"), "{err}");
    }

    /// Review finding 4: usages are checked as rustls checks them, on every certificate of the
    /// path, and anyExtendedKeyUsage is not serverAuth or clientAuth.
    #[test]
    fn extended_key_usages_are_what_rustls_clients_and_peers_accept() {
        let root = make("root", true, &[], Dates::Now, None);
        let any = make("any", false, &[Eku::Any], Dates::Now, Some(&root));
        let err = verdict(&[&any], None).unwrap_err();
        assert!(err.contains("lacks serverAuth"), "{err}");
        let client_any = make(
            "c-any",
            false,
            &[Eku::ClientAuth, Eku::Any],
            Dates::Now,
            Some(&root),
        );
        let err = verdict(&[&client_any], Some(&[&root])).unwrap_err();
        assert!(err.contains("lacks serverAuth"), "{err}");
        let server_any = make(
            "s-any",
            false,
            &[Eku::ServerAuth, Eku::Any],
            Dates::Now,
            Some(&root),
        );
        let err = verdict(&[&server_any], Some(&[&root])).unwrap_err();
        assert!(err.contains("lacks clientAuth"), "{err}");
        verdict(&[&server_any], None).unwrap();
        // An intermediate for client certificates only cannot issue a server's.
        let clients_ca = make(
            "clients-ca",
            true,
            &[Eku::ClientAuth],
            Dates::Now,
            Some(&root),
        );
        let leaf = make("leaf", false, NODE, Dates::Now, Some(&clients_ca));
        let err = verdict(&[&leaf, &clients_ca], Some(&[&root])).unwrap_err();
        assert!(err.contains("lacks serverAuth"), "{err}");
        // No extension: any use.
        let plain = make("plain", false, &[], Dates::Now, Some(&root));
        verdict(&[&plain], Some(&[&root])).unwrap();
        // A leaf alone whose CA the file does not hold: the clients' roots decide.
        verdict(&[&plain], None).unwrap();
    }

    /// Review finding 7: a CA bundle that still holds the expired CA it replaced reports the
    /// CA that signs this node's certificate, not the earliest of the bundle.
    #[test]
    fn the_ca_expiry_is_the_one_of_the_ca_that_signs_the_node() {
        let old = make("old", true, &[], Dates::Expired, None);
        let new = make("new", true, &[], Dates::Now, None);
        let leaf = make("leaf", false, NODE, Dates::Now, Some(&new));
        let expiry = verdict(&[&leaf], Some(&[&old, &new])).unwrap();
        let new_not_after = not_after_of(Path::new("ca.pem"), &new.der).unwrap();
        assert_eq!(expiry.ca, Some(new_not_after));
    }

    /// Without --tls-ca a self-signed certificate is its own root (a test node, say).
    #[test]
    fn a_self_signed_certificate_serves_without_a_ca() {
        let own = make("own", false, NODE, Dates::Now, None);
        verdict(&[&own], None).unwrap();
        let old = make("old", false, NODE, Dates::Expired, None);
        let err = verdict(&[&old], None).unwrap_err();
        assert!(err.contains("the certificate has expired"), "{err}");
    }

    #[test]
    fn a_certificate_without_a_name_or_that_is_a_ca_is_refused() {
        let root = make("root", true, &[], Dates::Now, None);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "node.test");
        let nameless = params.signed_by(&key, &root.issuer).unwrap().der().clone();
        let nameless = Made {
            der: nameless,
            issuer: Issuer::new(params, key),
        };
        let err = verdict(&[&nameless], Some(&[&root])).unwrap_err();
        assert!(err.contains("names no host"), "{err}");
        let err = verdict(&[&root], Some(&[&root])).unwrap_err();
        assert!(err.contains("a CA's"), "{err}");
    }

    /// Polls `f` once: whether it is pending.
    async fn pending<F: Future + Unpin>(f: &mut F) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx).is_pending())).await
    }

    #[tokio::test]
    async fn a_paced_handshake_computes_only_with_a_slot_and_holds_none_while_it_waits() {
        let slots = Arc::new(Semaphore::new(1));
        let (client_tx, client_rx) = tokio::sync::oneshot::channel::<()>();
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let mut paced = Paced {
            inner: Box::pin(async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                client_rx.await.is_ok()
            }),
            slots: PollSemaphore::new(slots.clone()),
        };
        let polls_now = || polls.load(std::sync::atomic::Ordering::SeqCst);
        let busy = slots.clone().try_acquire_owned().unwrap();
        // Every slot taken: it waits without running.
        assert!(pending(&mut paced).await);
        assert_eq!(polls_now(), 0);
        drop(busy);
        // A slot is free: it runs, then waits on its "client" holding none.
        assert!(pending(&mut paced).await);
        assert_eq!(polls_now(), 1);
        assert_eq!(slots.available_permits(), 1, "no slot held while waiting");
        client_tx.send(()).unwrap();
        assert!(paced.await);
        assert_eq!(slots.available_permits(), 1);
    }

    /// A self-signed certificate valid until `not_after`.
    fn valid_until(not_after: time::OffsetDateTime) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap();
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificates_expiry_is_read_from_its_der_in_both_time_forms() {
        for (year, month, day, unix) in [
            // UTCTime until 2049, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5).
            (2030, 1, 2, 1_893_542_400),
            (2024, 2, 29, 1_709_164_800),
            (2049, 12, 31, 2_524_521_600),
            (2060, 3, 1, 2_845_324_800),
        ] {
            let cert = valid_until(rcgen::date_time_ymd(year, month, day));
            assert_eq!(not_after(&cert), Ok(unix), "{year}-{month}-{day}");
        }
        assert!(not_after(b"\x30\x03\x02\x01\x01").is_err());
        assert!(not_after(&[]).is_err());
    }

    #[test]
    fn every_expiry_of_a_chain_is_kept_in_order_and_unreadable_ones_left_out() {
        let later = valid_until(rcgen::date_time_ymd(2040, 1, 1));
        let sooner = valid_until(rcgen::date_time_ymd(2030, 1, 2));
        let junk = CertificateDer::from(vec![0x30, 0x00]);
        let chain = Presented::Chain(vec![later, junk, sooner.clone(), sooner]);
        assert_eq!(chain.expiries(), vec![1_893_542_400, 2_208_988_800]);
        assert_eq!(passed(&chain.expiries()), 0);
        assert_eq!(passed(&[1, 2, 2_208_988_800]), 2);
    }

    #[test]
    fn a_chain_past_seven_certificates_or_16_kib_is_not_kept() {
        let cert = |len: usize| CertificateDer::from(vec![0u8; len]);
        let chain = |n: usize, len: usize| vec![cert(len); n];
        assert!(matches!(Presented::of(None), Presented::None));
        assert!(matches!(
            Presented::of(Some(&chain(MAX_CHAIN, 1000))),
            Presented::Chain(c) if c.len() == MAX_CHAIN
        ));
        assert!(matches!(
            Presented::of(Some(&chain(MAX_CHAIN + 1, 100))),
            Presented::TooLong
        ));
        assert!(matches!(
            Presented::of(Some(&chain(2, MAX_CHAIN_BYTES / 2))),
            Presented::Chain(_)
        ));
        let mut over = chain(2, MAX_CHAIN_BYTES / 2);
        over.push(cert(1));
        assert!(matches!(Presented::of(Some(&over)), Presented::TooLong));
    }

    #[test]
    fn the_handshake_timeout_is_ten_seconds_or_a_shorter_read_timeout() {
        assert_eq!(
            handshake_timeout(Duration::from_secs(30)),
            HANDSHAKE_TIMEOUT
        );
        assert_eq!(
            handshake_timeout(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert!(handshake_slots() >= 1);
    }

    #[test]
    fn client_auth_defaults_to_peers_with_a_ca_and_needs_one_to_be_required() {
        assert!(args(false, false, false, None)
            .validate()
            .unwrap()
            .is_none());
        let mode = |a: TlsArgs| a.validate().unwrap().unwrap().client_auth;
        assert_eq!(mode(args(true, true, true, None)), ClientAuth::Peers);
        assert_eq!(mode(args(true, true, false, None)), ClientAuth::Off);
        assert_eq!(
            mode(args(true, true, true, Some(ClientAuth::All))),
            ClientAuth::All
        );
        for (bad, flag) in [
            (args(true, false, false, None), "tls-cert"),
            (args(false, true, false, None), "tls-key"),
            (args(false, false, true, None), "tls-ca"),
            (
                args(true, true, false, Some(ClientAuth::Peers)),
                "tls-client-auth",
            ),
            (
                args(true, true, false, Some(ClientAuth::All)),
                "tls-client-auth",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().0, flag);
        }
    }
}
