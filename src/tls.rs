//! TLS and mutual TLS on `--listen` (SPEC 7, issue 11): the `--tls-*` flags, the certificate
//! material and its rotation, the handshake of each accepted connection, and the rustls
//! configuration the gossip client uses toward peers.
//!
//! One [`Tls`] per node holds the current material behind an [`ArcSwap`]: the server
//! configuration that new connections are accepted with, and the certificate and CA the gossip
//! client presents and verifies with. A reload (SIGHUP, or a change of a file's content, polled
//! every [`POLL`]) builds all of it from the files and swaps it in whole; a file that does not
//! load is refused with an error log and the old material stays. Connections already open keep
//! the session they made: nothing is dropped.
//!
//! `--tls-client-auth peers` and `all` ask every client for a certificate. The handshake
//! lets any through ([`Deferred`]); the chain is verified against `--tls-ca` right after it,
//! and each request of the connection carries the outcome as a [`ClientCert`] extension. A
//! certificate that does not verify, or none under `all`, gets every request answered 401
//! with the reason, before any handler; under `peers` the gossip endpoint requires a verified
//! one ([`gossip_allowed`]) and the rest of the API serves clients without one.
//!
//! This module does not parse HTTP, and owns no route: it only hands the server a stream.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
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
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{TlsCertificate, TlsMetrics};
use crate::registry::SECOND;

/// How often the files are read to notice a change by default (they are small; a rotation by
/// a tool such as cert-manager or a cron job is noticed within this). `--tls-poll` changes it.
pub(crate) const POLL: Duration = Duration::from_secs(2);

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
    /// This node's certificate chain (PEM). With --tls-key, --listen serves HTTPS only, and
    /// the node presents it to its peers as its client certificate.
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

impl ClientCert {
    /// `presented`: the chain's verdict against `--tls-ca`, then whether it names a peer.
    fn of(presented: Option<Result<bool, rustls::Error>>, mode: ClientAuth) -> ClientCert {
        use rustls::CertificateError as Cert;
        let (peer, not_peer) = match presented {
            Some(Ok(true)) => (true, None),
            Some(Ok(false)) => (false, Some(NOT_A_PEER)),
            Some(Err(rustls::Error::InvalidCertificate(
                Cert::Expired | Cert::ExpiredContext { .. },
            ))) => (false, Some("the client certificate has expired")),
            Some(Err(rustls::Error::InvalidCertificate(
                Cert::UnknownIssuer | Cert::BadSignature,
            ))) => (
                false,
                Some("the client certificate is not signed by this node's CA"),
            ),
            Some(Err(_)) => (
                false,
                Some("the client certificate is not valid for a client of this node"),
            ),
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
    (
        axum::http::StatusCode::UNAUTHORIZED,
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
    /// What new connections are accepted with.
    server: Arc<ServerConfig>,
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
    /// The earliest not-after of the chain this node presents (`--tls-cert`).
    pub(crate) certificate: i64,
    /// The earliest not-after of the `--tls-ca` bundle, if one is given.
    pub(crate) ca: Option<i64>,
}

/// How long before its certificate expires a node starts warning, once per
/// [`EXPIRY_WARN_EVERY`].
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
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
        let mut logged = false;
        let mut certificates = vec![(files.cert.as_path(), self.certificate)];
        certificates.extend(files.ca.as_deref().zip(self.ca));
        for (path, not_after) in certificates {
            let file = path.display();
            let at = rfc3339_secs(not_after);
            if not_after <= now {
                tracing::error!(%file, not_after = %at, "a TLS certificate has expired: peers and clients refuse it; replace the file (it is reloaded without a restart)");
                logged = true;
            } else if not_after <= soon {
                let days = (not_after - now) as f64 / 86_400.0;
                tracing::warn!(%file, not_after = %at, days_left = format!("{days:.1}"), "a TLS certificate expires within 7 days: replace the file (it is reloaded without a restart)");
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

/// A node's TLS state; see the module docs.
pub(crate) struct Tls {
    files: TlsFiles,
    current: ArcSwap<Material>,
    /// The files as last read by the poller (loaded or refused), so that a refused file is
    /// logged once, not on every poll.
    seen: parking_lot::Mutex<Snapshot>,
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
    /// Loads the files; an error names the file and what is wrong with it.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let seen = snapshot(&files);
        let material = build(&files, &seen)?;
        Ok(Arc::new(Tls {
            files,
            current: ArcSwap::from_pointee(material),
            seen: parking_lot::Mutex::new(seen),
        }))
    }

    /// Reads the files again and, when they load, swaps them in for new connections. With
    /// `only_if_changed`, does nothing unless a file's content changed since the last read.
    /// Logs what it did; an error keeps the old material.
    pub(crate) fn reload(&self, only_if_changed: bool) -> Result<bool, TlsError> {
        let now = snapshot(&self.files);
        {
            let mut seen = self.seen.lock();
            if only_if_changed && *seen == now {
                return Ok(false);
            }
            *seen = now.clone();
        }
        match build(&self.files, &now) {
            Ok(material) => {
                self.current.store(Arc::new(material));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded; new connections use them");
                Ok(true)
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificates not reloaded, the previous ones stay in use");
                Err(e)
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

    /// Accepts a TLS connection on `stream` (its handshake bounded by `timeout`), with the
    /// certificate of the moment. A client that speaks plain HTTP gets a `400` that says to use
    /// `https://`, and `None`, as does a failed handshake (logged at debug: clients cause them
    /// at will).
    pub(crate) async fn accept<S>(
        &self,
        stream: S,
        timeout: Duration,
        peer: std::net::SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<S>, ClientCert)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Peek,
    {
        let material = self.current.load_full();
        let acceptor = tokio_rustls::TlsAcceptor::from(material.server.clone());
        let mode = self.files.client_auth;
        let peer_name = self.files.peer_name.as_ref();
        let handshake = async {
            let mut first = [0u8; 1];
            if stream.peek_byte(&mut first).await.ok()? == 0 {
                return None;
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                let mut stream = stream;
                let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
                let _ = stream.shutdown().await;
                tracing::debug!(%peer, "answered a plain HTTP request on the TLS port");
                return None;
            }
            match acceptor.accept(stream).await {
                Ok(tls) => {
                    let presented = tls.get_ref().1.peer_certificates().and_then(|chain| {
                        let (end_entity, intermediates) = chain.split_first()?;
                        let verifier = material.clients.as_ref()?;
                        let now = UnixTime::now();
                        let verified = verifier.verify_client_cert(end_entity, intermediates, now);
                        // A peer's certificate is also a server certificate for --tls-peer-name
                        // (chain, serverAuth, name), which an agent's client certificate is not.
                        let peer = |name: &ServerName<'_>| {
                            material.peers.as_ref().is_some_and(|peers| {
                                peers
                                    .verify_server_cert(end_entity, intermediates, name, &[], now)
                                    .is_ok()
                            })
                        };
                        Some(verified.map(|_| peer_name.is_none_or(peer)))
                    });
                    Some((tls, ClientCert::of(presented, mode)))
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .ok()
            .flatten()
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

/// What a plain HTTP request to the TLS port gets, so that its client says why instead of
/// "connection closed".
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 74\r\nconnection: close\r\n\r\n{\"error\":\"this port speaks HTTPS only: use an https:// URL for this node\"}";

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

/// The material of one snapshot of the files.
fn build(files: &TlsFiles, contents: &Snapshot) -> Result<Material, TlsError> {
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
    let now = unix_now();
    // With a CA the certificate is also the gossip client's (see `PeerSide`).
    let certificate = own_certificate_usable(&files.cert, &chain, files.ca.is_some(), now)?;
    let (roots, ca_not_after) = match &files.ca {
        Some(ca) => {
            let bundle = bytes(2)?;
            let not_after = earliest_not_after(ca, &pem::parse_certs(ca, bundle)?)?;
            (
                Some(Arc::new(pem::parse_roots(ca, bundle)?)),
                Some(not_after),
            )
        }
        None => (None, None),
    };
    if let (Some(ca), Some(roots)) = (&files.ca, &roots) {
        own_chain_verifies(&files.cert, ca, &chain, roots.clone())?;
    }
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
    let peers = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots, pem::provider())
                .build()
                .map_err(refused)?,
        ),
        None => None,
    };
    Ok(Material {
        server: Arc::new(server),
        cert,
        peers,
        clients,
        expiry: Expiry {
            certificate,
            ca: ca_not_after,
        },
    })
}

/// A certificate of `path`, parsed.
fn parse_x509<'a>(
    path: &Path,
    der: &'a CertificateDer<'_>,
) -> Result<x509_parser::certificate::X509Certificate<'a>, TlsError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| {
            TlsError::Refused(format!("{}: not an X.509 certificate: {e}", path.display()))
        })
}

/// The earliest not-after (Unix seconds) of the certificates of `path`.
fn earliest_not_after(path: &Path, certs: &[CertificateDer<'_>]) -> Result<i64, TlsError> {
    let mut earliest = i64::MAX;
    for der in certs {
        earliest = earliest.min(parse_x509(path, der)?.validity().not_after.timestamp());
    }
    Ok(earliest)
}

/// Refuses a certificate this node cannot use, whatever signs it: one of its chain not valid at
/// `now` (Unix seconds: expired, or not yet valid), or an extended key usage that excludes
/// serving (serverAuth) or, when it is also the gossip client's certificate toward peers
/// (`client_too`, with `--tls-ca`), being a client (clientAuth); a certificate without the
/// extension may do both. rustls checks these only of the other side's certificate, so
/// without this the node would start (or reload) and fail every handshake. Returns the
/// chain's earliest not-after. (That the key matches is [`pem::certified_key`]'s check.)
fn own_certificate_usable(
    path: &Path,
    chain: &[CertificateDer<'_>],
    client_too: bool,
    now: i64,
) -> Result<i64, TlsError> {
    let file = path.display();
    let refuse = |why: String| Err(TlsError::Refused(format!("{file}: {why}")));
    let mut earliest = i64::MAX;
    for (i, der) in chain.iter().enumerate() {
        let cert = parse_x509(path, der)?;
        let which = match i {
            0 => "the certificate".to_owned(),
            _ => format!("certificate {} of the chain (an intermediate)", i + 1),
        };
        let validity = cert.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        if not_after < now {
            return refuse(format!(
                "{which} has expired (not after {})",
                rfc3339_secs(not_after)
            ));
        }
        if not_before > now {
            return refuse(format!(
                "{which} is not valid yet (not before {})",
                rfc3339_secs(not_before)
            ));
        }
        earliest = earliest.min(not_after);
    }
    let leaf = parse_x509(path, &chain[0])?;
    let usages = leaf
        .extended_key_usage()
        .map_err(|e| TlsError::Refused(format!("{file}: unreadable extended key usage: {e}")))?;
    if let Some(usages) = usages.map(|ext| ext.value).filter(|u| !u.any) {
        if !usages.server_auth {
            return refuse("not a server certificate: its extended key usage lacks serverAuth, so clients and peers would refuse it".into());
        }
        if client_too && !usages.client_auth {
            return refuse("its extended key usage lacks clientAuth, and with --tls-ca the node presents it to its peers as its client certificate, which they would refuse".into());
        }
    }
    Ok(earliest)
}

/// Refuses a certificate of this node that its peers would refuse: one that `--tls-ca` does
/// not sign, expired or not yet valid, or without clientAuth (the node presents it as the
/// gossip client's certificate). At startup the node does not start; on a reload the
/// previous certificate stays, instead of the node cutting itself off its cluster.
fn own_chain_verifies(
    cert: &Path,
    ca: &Path,
    chain: &[CertificateDer<'static>],
    roots: Arc<rustls::RootCertStore>,
) -> Result<(), TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, pem::provider())
        .build()
        .map_err(refused)?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(TlsError::Refused(format!(
            "{}: no certificate",
            cert.display()
        )));
    };
    verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| {
            TlsError::Refused(format!(
                "{}: not a valid certificate of --tls-ca {} for this node: {e}",
                cert.display(),
                ca.display()
            ))
        })
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
