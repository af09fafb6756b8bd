//! What the client subcommands (`heartbeat`, `hosts`, `services`, `peers`, `haproxy-sync`)
//! share: the `--registry` and `--token` flags, the [`RegistryClient`] built from them,
//! and the error they stop with.
//!
//! Talking to the registry is the client library's job; this file only turns flags into
//! its settings and its errors into one line a person can act on.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use discovery_client::{
    ClientTls, Error, RegistryClient, RegistryClientBuilder, WatcherConfig, DEFAULT_POLL_WAIT,
    DEFAULT_REQUEST_TIMEOUT,
};

/// The registry nodes to talk to (`--registry`), a flag of every client subcommand.
#[derive(Debug, Clone, Args)]
pub(crate) struct RegistryUrls {
    /// Registry base URLs (`http://HOST:PORT`), comma-separated or repeated. The client
    /// asks the one that answered last and fails over to the others in turn.
    #[arg(
        long = "registry",
        env = "DISCOVERY_REGISTRY",
        value_name = "URL[,URL]",
        required = true
    )]
    pub(crate) urls: Vec<String>,
    #[command(flatten)]
    pub(crate) tls: TlsFlags,
}

impl RegistryUrls {
    /// The client's settings, with these URLs and the TLS files.
    pub(crate) fn builder(&self) -> Result<RegistryClientBuilder, CommandError> {
        let builder = RegistryClient::builder(&self.urls);
        Ok(match self.tls.client_tls()? {
            Some(tls) => builder.tls(tls),
            None => builder,
        })
    }
}

/// The TLS flags of every client subcommand, for `https://` registries.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TlsFlags {
    /// CA bundle (PEM) that signs the registry's certificate; needed for https:// URLs.
    #[arg(long, env = "DISCOVERY_CA", value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Client certificate (PEM) for a registry that requires one (--tls-client-auth all).
    #[arg(long, env = "DISCOVERY_CERT", value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, env = "DISCOVERY_KEY", value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
}

impl TlsFlags {
    /// The client's TLS settings; `None` without `--ca` (plain HTTP only).
    pub(crate) fn client_tls(&self) -> Result<Option<ClientTls>, CommandError> {
        match &self.ca {
            Some(ca) => {
                let tls = ClientTls::from_files(ca, self.cert.as_deref(), self.key.as_deref())
                    .map_err(Error::Tls)?;
                Ok(Some(tls))
            }
            None if self.cert.is_some() => Err(CommandError::Usage(
                "--cert needs --ca, the CA that signs the registry's certificate".into(),
            )),
            None => Ok(None),
        }
    }
}

/// The flags of the read commands (`hosts`, `services`, `peers`, `haproxy-sync`).
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryUrls,
    /// The registry's read token, when it has one (`serve --read-token`).
    #[arg(long, env = "DISCOVERY_READ_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// How long one request to one registry may take before the next is asked (a long
    /// poll gets its `--poll-wait` on top). A frozen registry costs at most this.
    #[arg(long, env = "DISCOVERY_TIMEOUT", value_name = "DURATION", default_value_t = DEFAULT_REQUEST_TIMEOUT.into())]
    pub(crate) timeout: humantime::Duration,
}

impl ReadArgs {
    /// A client of the given registries that sends the read token.
    pub(crate) fn client(&self) -> Result<RegistryClient, CommandError> {
        let mut builder = self
            .registry
            .builder()?
            .request_timeout(self.timeout.into());
        if let Some(token) = non_empty(&self.token) {
            builder = builder.read_token(token);
        }
        Ok(builder.build()?)
    }
}

/// The flags of the commands that follow host lists (`hosts --watch`, `haproxy-sync`).
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// How long one long poll waits for a change. Changes arrive as they happen; this
    /// bounds how long a registry that froze keeps the command blind (it then asks the
    /// next one): at most `--poll-wait` + `--timeout`.
    #[arg(long, env = "DISCOVERY_POLL_WAIT", value_name = "DURATION", default_value_t = DEFAULT_POLL_WAIT.into())]
    pub(crate) poll_wait: humantime::Duration,
}

impl WatchArgs {
    /// `config` with these flags applied.
    pub(crate) fn apply(&self, config: WatcherConfig) -> WatcherConfig {
        WatcherConfig {
            wait: self.poll_wait.into(),
            ..config
        }
    }
}

/// A token from a flag or the environment; an empty one (`DISCOVERY_READ_TOKEN=`) counts
/// as none, since no registry accepts an empty token.
pub(crate) fn non_empty(token: &Option<String>) -> Option<&str> {
    token.as_deref().filter(|t| !t.is_empty())
}

/// Why a client subcommand stopped. `main` prints it as one line after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A flag is unusable in a way clap cannot check on its own.
    #[error("{0}")]
    Usage(String),
    /// No registry answered, or one refused the request.
    #[error("{0}")]
    Registry(Error),
    /// The registry refused the host's first heartbeat: the flags or the token are wrong.
    #[error("the first heartbeat was refused: {}", .0)]
    Refused(Arc<Error>),
    /// The host could not be deregistered on shutdown; it expires by its TTL instead.
    #[error("could not deregister the host, it will expire by its TTL: {}", .0)]
    Deregister(Error),
    /// A second SIGTERM or SIGINT arrived while the host was draining.
    #[error("interrupted while draining: the host expires by its TTL")]
    Interrupted,
    /// Stdout could not be written.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

// By hand rather than with `#[from]`, which would also make the inner error the `source`:
// `main` prints the source chain after the message, and these messages already hold it.
impl From<Error> for CommandError {
    fn from(error: Error) -> Self {
        CommandError::Registry(error)
    }
}

impl From<io::Error> for CommandError {
    fn from(error: io::Error) -> Self {
        CommandError::Output(error)
    }
}
