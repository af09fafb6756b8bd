//! [`RegistryClient`]: the HTTP client of the registry API over a list of registry nodes, with
//! failover.
//!
//! Every call tries the node that answered last, then the others in turn. A node that
//! cannot be reached, times out, answers a 5xx (503 while it is not ready), 408 or 429, or
//! sends a body that is not a valid answer is skipped; the first usable answer ends the
//! call and its node becomes the first choice for the next one. A 4xx is the answer to a
//! wrong request, not a sign of a broken node, so it ends the call with
//! [`Error::Rejected`]. One call tries each node at most once and never sleeps: backing off
//! between rounds is the job of the loops built on it ([`crate::Heartbeater`],
//! [`crate::HostWatcher`]).
//!
//! **Timeouts, one rule.** A node that accepts connections but does not answer (a frozen
//! process, a stuck host) is only told apart from a slow one by a deadline, so every
//! request to one node has one: its timeout `T`, or `wait + T` for a long poll (the node
//! is expected to hold it for `wait`). Past it the node counts as down and the next one
//! is asked at once, in the same call, never after a backoff. `T` is
//! [`RegistryClientBuilder::request_timeout`] (default [`DEFAULT_REQUEST_TIMEOUT`]) for one-off
//! calls and for the [`crate::HostWatcher`]'s polls, and the heartbeat timeout for the
//! [`crate::Heartbeater`] (it follows the heartbeat interval, see
//! [`crate::HeartbeatConfig::timeout`]). A call that had to skip nodes reports them, so
//! the loops can say that they failed over.
//!
//! This module owns the URLs, paths, headers and status codes of the API on the client
//! side. It does not hold any state but the preferred node.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use discovery_api::{
    ErrorBody, HostsResponse, PeersResponse, Port, Registration, ServiceName, ServicesResponse,
    INDEX_HEADER,
};
use reqwest::header::{HeaderMap, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::tls::ClientTls;
use crate::{Error, Failure};

/// How long a connection attempt to one node may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request to one node may take, by default (long polls get their `wait` on
/// top of it). A healthy node answers a read in milliseconds and a long poll right at its
/// `wait`, so 2 s is ample headroom for a loaded node, and short enough that a frozen one
/// costs a caller seconds, not tens of them.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A cheap-to-clone client of a set of registry nodes that fails over between them.
///
/// ```no_run
/// # async fn example() -> Result<(), discovery_client::Error> {
/// use discovery_client::{RegistryClient, ServiceName};
///
/// let registry = RegistryClient::new(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])?;
/// let service = ServiceName::parse("payments").expect("a valid name");
/// for host in registry.hosts(&service).await?.hosts {
///     println!("{}:{}", host.ip_address, host.port);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Base URLs without a trailing `/`.
    urls: Vec<String>,
    /// The index in `urls` of the node that answered last; calls start there. An atomic
    /// because calls run concurrently and a stale read only costs one failed attempt.
    preferred: AtomicUsize,
    http: reqwest::Client,
    request_timeout: Duration,
    write_token: Option<String>,
    read_token: Option<String>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are left out on purpose: they must never reach a log.
        f.debug_struct("RegistryClient")
            .field("urls", &self.inner.urls)
            .field("preferred", &self.preferred_url())
            .finish_non_exhaustive()
    }
}

/// Settings of a [`RegistryClient`]; from [`RegistryClient::builder`].
#[derive(Debug, Clone)]
pub struct RegistryClientBuilder {
    urls: Vec<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    write_token: Option<String>,
    read_token: Option<String>,
    tls: Option<ClientTls>,
}

impl RegistryClientBuilder {
    /// Speak TLS to `https://` URLs: trust the CA of `tls`, and present its client
    /// certificate when it has one ([`ClientTls::from_files`]). Without it, only `http://`
    /// URLs are accepted.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long a connection attempt to one node may take before the next node is tried.
    /// Default [`DEFAULT_CONNECT_TIMEOUT`]: short, because a dead node should cost little.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request to one node may take before the next node is tried. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`]. Long polls are given their `wait` on top of it, so a
    /// [`crate::HostWatcher`] hears of a change within `wait` + this even when the node
    /// it polls freezes (see [`crate::WatcherConfig::blind_bound`]). Shorter fails over
    /// sooner; too short takes a busy node for a dead one.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The token sent as `Authorization: Bearer` with heartbeats and deletes (the
    /// registry's `--write-token`). None by default.
    pub fn write_token(mut self, token: impl Into<String>) -> Self {
        self.write_token = Some(token.into());
        self
    }

    /// The token sent as `Authorization: Bearer` with reads (the registry's
    /// `--read-token`). None by default.
    pub fn read_token(mut self, token: impl Into<String>) -> Self {
        self.read_token = Some(token.into());
        self
    }

    /// Checks the URLs and builds the client.
    pub fn build(self) -> Result<RegistryClient, Error> {
        let urls = self
            .urls
            .iter()
            .map(|u| normalize_url(u, self.tls.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(Error::NoRegistries);
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::Config("timeouts must be longer than zero".into()));
        }
        // No proxy: the registry lives on the same private network as its clients, and an
        // HTTP_PROXY meant for the outside world must not sit between them.
        let http = crate::tls::http_client(self.tls.as_ref())
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(Error::Http)?;
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                urls,
                preferred: AtomicUsize::new(0),
                http,
                request_timeout: self.request_timeout,
                write_token: self.write_token,
                read_token: self.read_token,
            }),
        })
    }
}

/// A registry base URL: `http://host:port[/prefix]` (or `https://` with `tls`, the CA to
/// verify it with) without a trailing `/`; anything else is refused with a reason.
pub fn normalize_url(raw: &str, tls: bool) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" if tls => {}
        "https" => {
            return Err(invalid(
                "https needs the CA that signed the registry's certificate (--ca FILE)",
            ))
        }
        _ => return Err(invalid("expected http://HOST:PORT or https://HOST:PORT")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL takes no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Which token a request carries.
#[derive(Clone, Copy)]
enum Access {
    Read,
    Write,
}

/// A complete answer from one node, before it is decoded.
struct Reply {
    url: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Why an answer was not taken: try the next node, or stop with this error.
enum Miss {
    Next(Failure),
    Stop(Error),
}

/// What a host-list poll asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostsPoll {
    /// The node the `index` and `etag` came from: both are only meaningful to that node
    /// (an index counts one node's changes), so another node gets a plain read.
    pub(crate) origin: Option<String>,
    /// Long poll: answer once the service's index exceeds this.
    pub(crate) index: Option<u64>,
    /// How long the long poll may wait.
    pub(crate) wait: Duration,
    /// Conditional read: `If-None-Match`.
    pub(crate) etag: Option<String>,
}

/// A host-list poll's result.
#[derive(Debug)]
pub(crate) enum Polled {
    /// A full host list.
    Hosts {
        url: String,
        response: HostsResponse,
        index: Option<u64>,
        etag: Option<String>,
    },
    /// `304`: the list did not change since `etag`.
    NotModified { url: String, index: Option<u64> },
}

impl Polled {
    /// The node that answered.
    pub(crate) fn url(&self) -> &str {
        match self {
            Polled::Hosts { url, .. } | Polled::NotModified { url, .. } => url,
        }
    }
}

/// An answer, with the nodes skipped on the way to it (empty when the first node asked
/// answered): a non-empty `skipped` means the call failed over.
#[derive(Debug)]
pub(crate) struct Answered<T> {
    pub(crate) value: T,
    pub(crate) skipped: Vec<Failure>,
}

impl RegistryClient {
    /// A client of these registry nodes with default settings. Each item is a base URL
    /// (`http://10.0.0.1:8080`); an item may also hold several, separated by commas, the
    /// way `--registry` takes them.
    pub fn new<I>(urls: I) -> Result<Self, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        RegistryClient::builder(urls).build()
    }

    /// Settings for a client of these registry nodes (see [`RegistryClient::new`]).
    pub fn builder<I>(urls: I) -> RegistryClientBuilder
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let urls = urls
            .into_iter()
            .flat_map(|item| {
                item.as_ref()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        RegistryClientBuilder {
            urls,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            write_token: None,
            read_token: None,
            tls: None,
        }
    }

    /// How long one request to one node may take before the next node is tried (a long
    /// poll gets its `wait` on top); see [`RegistryClientBuilder::request_timeout`].
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The base URLs, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.inner.urls
    }

    /// The node the next call tries first: the one that answered last.
    pub fn preferred_url(&self) -> &str {
        &self.inner.urls[self.inner.preferred.load(Ordering::Relaxed) % self.inner.urls.len()]
    }

    /// Registers or refreshes a host: one heartbeat (`POST /v1/registration/{service}`).
    pub async fn register(
        &self,
        service: &ServiceName,
        registration: &Registration,
    ) -> Result<(), Error> {
        self.register_within(service, registration, self.inner.request_timeout)
            .await
            .map(drop)
    }

    /// [`RegistryClient::register`] with `timeout` per node, telling which node took the
    /// heartbeat and which were skipped.
    pub(crate) async fn register_within(
        &self,
        service: &ServiceName,
        registration: &Registration,
        timeout: Duration,
    ) -> Result<Answered<String>, Error> {
        let path = format!("/v1/registration/{service}");
        self.call(
            |url| {
                self.request(Method::POST, url, &path, Access::Write)
                    .timeout(timeout)
                    .json(registration)
            },
            |reply| {
                if reply.status.is_success() {
                    Ok(reply.url)
                } else {
                    Err(unexpected(reply))
                }
            },
        )
        .await
    }

    /// Removes the service's hosts at `ip` (`DELETE /v1/registration/{service}/{ip}`), only
    /// the one on `port` when given. Returns whether anything was removed: `false` when the
    /// registry held no such host (it answers 400 then).
    pub async fn deregister(
        &self,
        service: &ServiceName,
        ip: IpAddr,
        port: Option<Port>,
    ) -> Result<bool, Error> {
        self.deregister_within(service, ip, port, self.inner.request_timeout)
            .await
    }

    /// [`RegistryClient::deregister`] with `timeout` per node.
    pub(crate) async fn deregister_within(
        &self,
        service: &ServiceName,
        ip: IpAddr,
        port: Option<Port>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let path = match port {
            Some(port) => format!("/v1/registration/{service}/{ip}?port={port}"),
            None => format!("/v1/registration/{service}/{ip}"),
        };
        self.call(
            |url| {
                self.request(Method::DELETE, url, &path, Access::Write)
                    .timeout(timeout)
            },
            |reply| match reply.status {
                s if s.is_success() => Ok(true),
                StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Ok(false),
                _ => Err(unexpected(reply)),
            },
        )
        .await
        .map(|answered| answered.value)
    }

    /// The live hosts of a service (`GET /v1/registration/{service}`), from the first node
    /// that answers. To follow a service over time use [`crate::HostWatcher`].
    pub async fn hosts(&self, service: &ServiceName) -> Result<HostsResponse, Error> {
        match self.poll_hosts(service, &HostsPoll::default()).await?.value {
            Polled::Hosts { response, .. } => Ok(response),
            // Unreachable without an ETag in the request; a server that answers 304 anyway
            // is broken.
            Polled::NotModified { url, .. } => Err(Error::Unavailable(vec![Failure::Decode {
                url,
                reason: "304 Not Modified to an unconditional request".into(),
            }])),
        }
    }

    /// Every service the answering node holds (`GET /v1/services`).
    pub async fn services(&self) -> Result<ServicesResponse, Error> {
        self.get_json("/v1/services").await
    }

    /// The answering node's view of the cluster (`GET /v1/peers`).
    pub async fn peers(&self) -> Result<PeersResponse, Error> {
        self.get_json("/v1/peers").await
    }

    /// One read of a host list: a long poll, a conditional read or a plain read, depending
    /// on what `poll` carries and on which node answers.
    pub(crate) async fn poll_hosts(
        &self,
        service: &ServiceName,
        poll: &HostsPoll,
    ) -> Result<Answered<Polled>, Error> {
        let path = format!("/v1/registration/{service}");
        self.call(
            |url| {
                let same_node = poll.origin.as_deref() == Some(url);
                let req = match poll.index.filter(|_| same_node) {
                    Some(index) => {
                        let wait = wait_param(poll.wait);
                        let long_poll = format!("{path}?index={index}&wait={wait}");
                        self.request(Method::GET, url, &long_poll, Access::Read)
                            .timeout(self.inner.request_timeout + poll.wait)
                    }
                    None => self.request(Method::GET, url, &path, Access::Read),
                };
                // On a long poll too: one that ends with no change is then a bodiless 304
                // rather than the whole list again, which keeps short waits cheap.
                match poll.etag.as_ref().filter(|_| same_node) {
                    Some(etag) => req.header(IF_NONE_MATCH, etag),
                    None => req,
                }
            },
            |reply| {
                let index = header_str(&reply.headers, INDEX_HEADER)
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match reply.status {
                    StatusCode::NOT_MODIFIED => Ok(Polled::NotModified {
                        url: reply.url,
                        index,
                    }),
                    StatusCode::OK => {
                        let response: HostsResponse = decode(&reply)?;
                        let etag = header_str(&reply.headers, ETAG.as_str()).map(str::to_owned);
                        Ok(Polled::Hosts {
                            url: reply.url,
                            response,
                            index,
                            etag,
                        })
                    }
                    _ => Err(unexpected(reply)),
                }
            },
        )
        .await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call(
            |url| self.request(Method::GET, url, path, Access::Read),
            |reply| {
                if reply.status == StatusCode::OK {
                    decode(&reply)
                } else {
                    Err(unexpected(reply))
                }
            },
        )
        .await
        .map(|answered| answered.value)
    }

    fn request(&self, method: Method, base: &str, path: &str, access: Access) -> RequestBuilder {
        let req = self
            .inner
            .http
            .request(method, format!("{base}{path}"))
            .timeout(self.inner.request_timeout);
        let token = match access {
            Access::Read => &self.inner.read_token,
            // The write token also covers reads on the server only if it is the admin
            // token, so each kind of request carries its own.
            Access::Write => &self.inner.write_token,
        };
        match token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// The failover loop: tries every node once, starting with the preferred one, until
    /// `accept` takes an answer. Statuses that say "this node cannot serve now" never reach
    /// `accept`; a 4xx does, so that a caller can give it a meaning (see `deregister`).
    /// A node that times out is skipped like one that is down: the next is asked at once.
    async fn call<T>(
        &self,
        build: impl Fn(&str) -> RequestBuilder,
        accept: impl Fn(Reply) -> Result<T, Miss>,
    ) -> Result<Answered<T>, Error> {
        let urls = &self.inner.urls;
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in (0..urls.len()).map(|k| (first + k) % urls.len()) {
            let url = &urls[i];
            let response = match build(url).send().await {
                Ok(response) => response,
                Err(source) => {
                    tracing::debug!(%url, error = %source, "registry unreachable");
                    failures.push(Failure::Transport {
                        url: url.clone(),
                        source,
                    });
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(body) => body.to_vec(),
                Err(source) => {
                    failures.push(Failure::Transport {
                        url: url.clone(),
                        source,
                    });
                    continue;
                }
            };
            let reply = Reply {
                url: url.clone(),
                status,
                headers,
                body,
            };
            if node_cannot_serve(status) {
                let failure = Failure::Status {
                    url: url.clone(),
                    status: status.as_u16(),
                    message: error_message(&reply.body),
                    retry_after: header_str(&reply.headers, RETRY_AFTER.as_str())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                };
                tracing::debug!(%failure, "registry cannot serve");
                failures.push(failure);
                continue;
            }
            match accept(reply) {
                Ok(value) => {
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(Answered {
                        value,
                        skipped: failures,
                    });
                }
                Err(Miss::Next(failure)) => {
                    tracing::debug!(%failure, "unusable answer");
                    failures.push(failure);
                }
                Err(Miss::Stop(error)) => return Err(error),
            }
        }
        Err(Error::Unavailable(failures))
    }
}

/// A long poll's `wait` in a form the registry parses (`30s`, `1500ms`).
fn wait_param(wait: Duration) -> String {
    if wait.subsec_millis() == 0 {
        format!("{}s", wait.as_secs())
    } else {
        format!("{}ms", wait.as_millis())
    }
}

/// Statuses after which another node is worth asking.
fn node_cannot_serve(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// The verdict on an answer the caller has no use for: a 4xx refuses the request, anything
/// else (a redirect, an odd 2xx) means the node is not the registry we expect.
fn unexpected(reply: Reply) -> Miss {
    if reply.status.is_client_error() {
        let message = error_message(&reply.body).unwrap_or_else(|| {
            reply
                .status
                .canonical_reason()
                .unwrap_or("no reason")
                .to_owned()
        });
        Miss::Stop(Error::Rejected {
            url: reply.url,
            status: reply.status.as_u16(),
            message,
        })
    } else {
        Miss::Next(Failure::Decode {
            url: reply.url,
            reason: format!("unexpected status {}", reply.status),
        })
    }
}

fn decode<T: DeserializeOwned>(reply: &Reply) -> Result<T, Miss> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        Miss::Next(Failure::Decode {
            url: reply.url.clone(),
            reason: e.to_string(),
        })
    })
}

/// The `error` of an `{"error": ...}` body, if the body is one.
fn error_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stub::{self, hosts_body};

    fn payments() -> ServiceName {
        ServiceName::parse("payments").unwrap()
    }

    /// A URL where nothing listens.
    async fn dead_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_node_that_cannot_serve_is_skipped_and_the_one_that_answered_is_asked_first() {
        let not_ready = stub::serve(|_| {
            let body = r#"{"error":"not ready"}"#.to_owned();
            (503, vec![("retry-after", "3".to_owned())], body)
        })
        .await;
        let ready = stub::serve(|_| (200, vec![], hosts_body("payments", &[1, 2]))).await;
        let dead = dead_url().await;
        let registry = RegistryClient::new([&dead, &not_ready.url, &ready.url]).unwrap();
        assert_eq!(registry.hosts(&payments()).await.unwrap().hosts.len(), 2);
        assert_eq!(registry.preferred_url(), ready.url);
        registry.hosts(&payments()).await.unwrap();
        assert_eq!(not_ready.requests().len(), 1);
        assert_eq!(ready.requests().len(), 2);
    }

    #[tokio::test]
    async fn a_refusal_ends_the_call_without_trying_other_nodes() {
        let strict = stub::serve(|_| (401, vec![], r#"{"error":"missing token"}"#.into())).await;
        let other = stub::serve(|_| (200, vec![], "{}".into())).await;
        let registry = RegistryClient::builder([&strict.url, &other.url])
            .write_token("t0ken")
            .build()
            .unwrap();
        let me = Registration::from_form(b"ip=10.0.0.7&port=8080&revision=r1").unwrap();
        let err = registry.register(&payments(), &me).await.unwrap_err();
        assert!(
            matches!(&err, Error::Rejected { status: 401, message, .. } if message == "missing token"),
            "{err}"
        );
        assert!(other.requests().is_empty());
        let seen = &strict.requests()[0];
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/v1/registration/payments");
        assert_eq!(seen.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(seen.header("content-type"), Some("application/json"));
    }

    #[tokio::test]
    async fn every_node_is_named_when_none_answers() {
        let garbage = stub::serve(|_| (200, vec![], "<html>".into())).await;
        let dead = dead_url().await;
        let registry = RegistryClient::new([&garbage.url, &dead]).unwrap();
        match registry.services().await {
            Err(Error::Unavailable(failures)) => {
                let urls: Vec<_> = failures.iter().map(Failure::url).collect();
                assert_eq!(urls, [garbage.url.as_str(), dead.as_str()]);
                assert!(matches!(failures[0], Failure::Decode { .. }));
                assert!(matches!(failures[1], Failure::Transport { .. }));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn deregistering_an_unknown_host_is_not_an_error() {
        let stub = stub::serve(|r| {
            if r.target.ends_with("port=8080") {
                (200, vec![], "{}".into())
            } else {
                (400, vec![], r#"{"error":"no such host"}"#.into())
            }
        })
        .await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let port = Port::new(8080).unwrap();
        assert!(registry
            .deregister(&payments(), ip, Some(port))
            .await
            .unwrap());
        assert!(!registry.deregister(&payments(), ip, None).await.unwrap());
        let targets: Vec<_> = stub.requests().into_iter().map(|r| r.target).collect();
        assert_eq!(
            targets,
            [
                "/v1/registration/payments/10.0.0.7?port=8080",
                "/v1/registration/payments/10.0.0.7"
            ]
        );
    }

    #[tokio::test]
    async fn a_node_that_accepts_but_never_answers_is_skipped_after_the_timeout() {
        // A frozen process: the kernel accepts the connection, nobody ever reads it.
        let frozen = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let frozen_url = format!("http://{}", frozen.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = frozen.accept().await {
                sockets.push(socket);
            }
        });
        let healthy = stub::serve(|_| (200, vec![], hosts_body("payments", &[1]))).await;
        let timeout = Duration::from_millis(300);
        let registry = RegistryClient::builder([&frozen_url, &healthy.url])
            .request_timeout(timeout)
            .build()
            .unwrap();
        let started = tokio::time::Instant::now();
        let poll = HostsPoll {
            origin: Some(frozen_url.clone()),
            index: Some(3),
            wait: Duration::from_millis(200),
            etag: None,
        };
        let answered = registry.poll_hosts(&payments(), &poll).await.unwrap();
        let elapsed = started.elapsed();
        // The long poll is given its wait on top of the timeout, and no more.
        assert!(elapsed >= timeout + poll.wait, "{elapsed:?}");
        assert!(
            elapsed < timeout + poll.wait + Duration::from_secs(2),
            "{elapsed:?}"
        );
        assert!(matches!(answered.value, Polled::Hosts { ref url, .. } if *url == healthy.url));
        match answered.skipped.as_slice() {
            [Failure::Transport { url, source }] => {
                assert_eq!(url, &frozen_url);
                assert!(source.is_timeout(), "{source}");
            }
            other => panic!("expected the frozen node to be skipped, got {other:?}"),
        }
        assert_eq!(registry.preferred_url(), healthy.url);
        held.abort();
    }

    #[tokio::test]
    async fn an_index_is_only_sent_to_the_node_that_gave_it() {
        let stub = stub::serve(|_| {
            let headers = vec![
                ("x-discovery-index", "7".to_owned()),
                ("etag", "W/\"e\"".to_owned()),
            ];
            (200, headers, hosts_body("payments", &[1]))
        })
        .await;
        let registry = RegistryClient::new([&stub.url]).unwrap();
        let mut poll = HostsPoll {
            origin: None,
            index: Some(7),
            wait: Duration::from_secs(30),
            etag: None,
        };
        let Polled::Hosts { index, etag, .. } =
            registry.poll_hosts(&payments(), &poll).await.unwrap().value
        else {
            panic!("expected hosts")
        };
        assert_eq!((index, etag.as_deref()), (Some(7), Some("W/\"e\"")));
        poll.origin = Some(stub.url.clone());
        poll.etag = etag;
        registry.poll_hosts(&payments(), &poll).await.unwrap();
        let requests = stub.requests();
        let targets: Vec<_> = requests.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/v1/registration/payments",
                "/v1/registration/payments?index=7&wait=30s"
            ]
        );
        assert_eq!(requests[0].header("if-none-match"), None);
        assert_eq!(
            requests[1].header("if-none-match"),
            Some("W/\"e\""),
            "a long poll that ends with no change can answer 304"
        );
    }

    #[test]
    fn base_urls_are_normalized_and_https_needs_a_ca() {
        assert_eq!(
            normalize_url("http://10.0.0.1:8080/", false).unwrap(),
            "http://10.0.0.1:8080"
        );
        assert_eq!(
            normalize_url(" http://registry/prefix/ ", false).unwrap(),
            "http://registry/prefix"
        );
        let err = normalize_url("https://registry", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ca"), "{err}");
        assert_eq!(
            normalize_url("https://registry:8443/", true).unwrap(),
            "https://registry:8443"
        );
        assert!(normalize_url("registry:8080", false).is_err());
        assert!(normalize_url("http://registry/?a=1", false).is_err());
    }

    #[test]
    fn comma_separated_lists_are_split_like_the_registry_flag() {
        let registry = RegistryClient::new(["http://a:1,http://b:2", " http://c:3 "]).unwrap();
        assert_eq!(registry.urls(), ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(registry.preferred_url(), "http://a:1");
        assert!(matches!(
            RegistryClient::new(Vec::<String>::new()),
            Err(Error::NoRegistries)
        ));
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let registry = RegistryClient::builder(["http://a:1"])
            .write_token("s3cret")
            .build()
            .unwrap();
        assert!(!format!("{registry:?}").contains("s3cret"));
    }

    #[test]
    fn wait_is_sent_in_whole_units() {
        assert_eq!(wait_param(Duration::from_secs(30)), "30s");
        assert_eq!(wait_param(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn only_node_trouble_is_failed_over() {
        assert!(node_cannot_serve(StatusCode::SERVICE_UNAVAILABLE));
        assert!(node_cannot_serve(StatusCode::BAD_GATEWAY));
        assert!(node_cannot_serve(StatusCode::TOO_MANY_REQUESTS));
        assert!(!node_cannot_serve(StatusCode::BAD_REQUEST));
        assert!(!node_cannot_serve(StatusCode::UNAUTHORIZED));
    }
}
