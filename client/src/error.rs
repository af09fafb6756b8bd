//! The errors of the client library: what went wrong talking to the registry, and with the
//! cache file.
//!
//! Two kinds matter to callers. [`Error::Unavailable`] means no registry gave a usable
//! answer (each [`Failure`] says why, per URL); it is transient, and the background tasks
//! retry it with backoff. [`Error::Rejected`] means a registry understood the request and
//! refused it (a 4xx): asking another node would not help, so it is not failed over.

use std::path::PathBuf;
use std::time::Duration;

/// Why one registry URL gave no usable answer. A failure makes the client try the next URL.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The request did not complete: connection refused or reset, a timeout, a broken body.
    /// Shown with its root cause (`Connection refused`) or as `timed out`, rather than
    /// reqwest's outer text, which names the URL a second time and hides why; a TLS failure
    /// also says what it means ([`crate::tls::why_unreachable`]).
    #[error("{url}: {}", crate::tls::why_unreachable(.source))]
    Transport {
        /// The registry's base URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with a status that another node may not give: a 5xx (for
    /// example 503 while the node is not ready), 408 or 429.
    #[error("{url} answered {status}{}", message_suffix(.message))]
    Status {
        /// The registry's base URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The `error` of the JSON body, when there was one.
        message: Option<String>,
        /// The `Retry-After` the registry asked for, when it gave one in seconds.
        retry_after: Option<Duration>,
    },
    /// The registry answered 2xx with a body that is not what the API says.
    #[error("{url} sent a body that is not a valid answer: {reason}")]
    Decode {
        /// The registry's base URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// The nodes a call skipped on its way to an answer, as one log field.
pub(crate) fn describe_skipped(skipped: &[Failure]) -> String {
    join_failures(skipped)
}

fn message_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

impl Failure {
    /// Whether the node did not answer in time: it accepted the connection, or was not
    /// reachable at all, and the request's deadline passed (a frozen or stuck node).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Failure::Transport { source, .. } if source.is_timeout())
    }

    /// The registry URL that failed.
    pub fn url(&self) -> &str {
        match self {
            Failure::Transport { url, .. }
            | Failure::Status { url, .. }
            | Failure::Decode { url, .. } => url,
        }
    }
}

/// Everything that can go wrong in this library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client was configured with no registry URL.
    #[error("no registry URL was given")]
    NoRegistries,
    /// A registry URL cannot be used.
    #[error("registry URL {url:?} cannot be used: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why not.
        reason: String,
    },
    /// A setting is out of its range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A TLS file (CA, certificate, key) cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// Every registry URL was tried and none gave a usable answer.
    #[error("no registry answered: {}", join_failures(.0))]
    Unavailable(Vec<Failure>),
    /// A registry refused the request (a 4xx other than 408 and 429): the request itself is
    /// wrong, for example a missing token or an invalid field, so no other node is tried.
    #[error("{url} refused the request with {status}: {message}")]
    Rejected {
        /// The registry's base URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The `error` of the JSON body, or the status text.
        message: String,
    },
    /// The cache file could not be read or written.
    #[error("cache file {}: {source}", path.display())]
    Cache {
        /// The cache file's path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The cache file holds something else than a host list of the watched service.
    #[error("cache file {} is not usable: {reason}", path.display())]
    CacheContent {
        /// The cache file's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn join_failures(failures: &[Failure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl Error {
    /// The longest `Retry-After` any registry asked for in an [`Error::Unavailable`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable(failures) => failures
                .iter()
                .filter_map(|f| match f {
                    Failure::Status { retry_after, .. } => *retry_after,
                    _ => None,
                })
                .max(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_names_every_url_and_the_longest_retry_after() {
        let err = Error::Unavailable(vec![
            Failure::Status {
                url: "http://a:1".into(),
                status: 503,
                message: Some("not ready".into()),
                retry_after: Some(Duration::from_secs(2)),
            },
            Failure::Status {
                url: "http://b:1".into(),
                status: 502,
                message: None,
                retry_after: Some(Duration::from_secs(5)),
            },
        ]);
        let text = err.to_string();
        assert!(
            text.contains("http://a:1 answered 503: not ready"),
            "{text}"
        );
        assert!(text.contains("http://b:1 answered 502"), "{text}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn a_transport_failure_shows_its_root_cause_once() {
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::tls::http_client(None).build().unwrap();
        let source = client.get(&url).send().await.unwrap_err();
        let text = Error::Unavailable(vec![Failure::Transport {
            url: url.clone(),
            source,
        }])
        .to_string();
        assert!(
            text.starts_with(&format!("no registry answered: {url}: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert_eq!(text.matches(&url).count(), 1, "{text}");
    }
}
