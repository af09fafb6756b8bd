//! [`RuntimeApi`]: the client of HAProxy's runtime API on its admin (stats) socket.
//!
//! One command per connection: HAProxy's non-interactive mode answers one line of
//! commands and closes, so every answer belongs to exactly one command and an error text
//! is never attributed to the wrong one (a `;`-joined line concatenates the answers with
//! nothing to tell them apart). Every exchange is bounded by a timeout, so a wedged HAProxy
//! cannot stall the sync loop.
//!
//! HAProxy has no status codes on this socket: a command either says nothing (most `set`
//! commands), says a fixed success sentence (`New server registered.`), or prints an error
//! sentence. [`Expect`] says which answer means success for a command; anything else
//! becomes [`HaproxyError::Refused`] carrying HAProxy's own words. This module owns the
//! socket and that rule, not the meaning of any command.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long one command may take by default: connect, send, and read the whole answer.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read (a `show stat` of a backend with thousands of servers fits).
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// What went wrong talking to HAProxy.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// The admin socket could not be reached (HAProxy not running, wrong path, rights).
    #[error("cannot connect to HAProxy's admin socket {}: {source}", path.display())]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke while sending the command or reading the answer.
    #[error("HAProxy's admin socket {} failed during {command:?}: {source}", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The command being run.
        command: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// HAProxy did not finish answering within the timeout.
    #[error("HAProxy did not answer {command:?} within {after:?}")]
    Timeout {
        /// The command being run.
        command: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// HAProxy answered with something other than success: its own error sentence, for
    /// example `No such backend.` or `Only servers in maintenance mode can be deleted.`
    #[error("HAProxy refused {command:?}: {answer}")]
    Refused {
        /// The command being run.
        command: String,
        /// HAProxy's answer, trimmed.
        answer: String,
    },
    /// HAProxy answered something this client cannot read.
    #[error("unexpected answer from HAProxy to {command:?}: {reason}")]
    Unexpected {
        /// The command being run.
        command: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// Which answer means that a command succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing but blank lines (`set server`, `enable health`, `shutdown sessions`).
    Silence,
    /// An answer starting with this sentence (`add server`, `del server`).
    Sentence(&'static str),
    /// Output to be parsed by the caller (`show ...`); the caller judges it.
    Output,
}

/// A client of one HAProxy admin socket (`stats socket ... level admin`). Cheap to clone;
/// holds no connection between commands.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    path: PathBuf,
    timeout: Duration,
}

impl RuntimeApi {
    /// A client of the socket at `path`, with [`DEFAULT_COMMAND_TIMEOUT`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RuntimeApi {
            path: path.into(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// The same client with another timeout per command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs one command (one line, without its newline) and returns HAProxy's whole
    /// answer, untouched. Errors only when the socket fails; HAProxy's error sentences are
    /// returned as answers, since only the caller knows what success looks like.
    pub async fn execute(&self, command: &str) -> Result<String, HaproxyError> {
        if command.contains(['\n', '\r']) {
            return Err(HaproxyError::Unexpected {
                command: command.escape_debug().to_string(),
                reason: "a command must be a single line".into(),
            });
        }
        match tokio::time::timeout(self.timeout, self.exchange(command)).await {
            Ok(answer) => answer,
            Err(_) => Err(HaproxyError::Timeout {
                command: command.to_owned(),
                after: self.timeout,
            }),
        }
    }

    /// Runs one command and checks its answer against `expect`.
    pub(crate) async fn run(&self, command: &str, expect: Expect) -> Result<String, HaproxyError> {
        let answer = self.execute(command).await?;
        let trimmed = answer.trim();
        let ok = match expect {
            Expect::Silence => trimmed.is_empty(),
            Expect::Sentence(sentence) => trimmed.starts_with(sentence),
            Expect::Output => true,
        };
        if ok {
            Ok(answer)
        } else {
            Err(HaproxyError::Refused {
                command: command.to_owned(),
                answer: trimmed.to_owned(),
            })
        }
    }

    async fn exchange(&self, command: &str) -> Result<String, HaproxyError> {
        let mut stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| HaproxyError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let io_error = |source| HaproxyError::Io {
            path: self.path.clone(),
            command: command.to_owned(),
            source,
        };
        let mut line = String::with_capacity(command.len() + 1);
        line.push_str(command);
        line.push('\n');
        stream.write_all(line.as_bytes()).await.map_err(io_error)?;
        // Non-interactive mode: HAProxy closes the connection after answering, so the
        // answer is everything up to EOF.
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await
            .map_err(io_error)?;
        String::from_utf8(answer).map_err(|_| HaproxyError::Unexpected {
            command: command.to_owned(),
            reason: "the answer is not UTF-8".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    /// A one-connection-per-command socket answering like HAProxy does.
    fn fake_haproxy(dir: &Path, answer: &'static str) -> PathBuf {
        let path = dir.join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                tokio::io::BufReader::new(read)
                    .read_line(&mut line)
                    .await
                    .unwrap();
                write.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dc-rt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_silent_set_command_succeeds_and_an_error_sentence_is_refused() {
        let dir = temp_dir("silent");
        let api = RuntimeApi::new(fake_haproxy(&dir, "\n"));
        api.run("set server be/x state ready", Expect::Silence)
            .await
            .unwrap();

        let dir = temp_dir("refused");
        let api = RuntimeApi::new(fake_haproxy(&dir, "No such server.\n\n"));
        let err = api
            .run("set server be/x state ready", Expect::Silence)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HaproxyError::Refused { answer, .. } if answer == "No such server."),
            "{err}"
        );
        assert!(matches!(err, HaproxyError::Refused { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_success_sentence_must_match() {
        let dir = temp_dir("sentence");
        let api = RuntimeApi::new(fake_haproxy(&dir, "New server registered.\n\n"));
        api.run(
            "add server be/x 10.0.0.1:80",
            Expect::Sentence("New server registered"),
        )
        .await
        .unwrap();
        let err = api
            .run("del server be/x", Expect::Sentence("Server deleted"))
            .await
            .unwrap_err();
        assert!(matches!(err, HaproxyError::Refused { .. }));
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let api = RuntimeApi::new("/nonexistent/dir/admin.sock");
        let err = api.execute("show info").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_socket_that_never_answers_times_out() {
        let dir = temp_dir("silent-peer");
        let path = dir.join("admin.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let api = RuntimeApi::new(path).with_timeout(Duration::from_millis(100));
        let err = api.execute("show info").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_multi_line_command_is_never_sent() {
        let api = RuntimeApi::new("/nonexistent/admin.sock");
        let err = api.execute("show info\ndel server be/x").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Unexpected { .. }), "{err}");
    }
}
