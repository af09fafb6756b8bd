//! Test support: a scripted HTTP/1.1 responder on a local port, for the few client
//! behaviours the real registry cannot be made to show (a node with no change index, a
//! node answering garbage). Behaviour against the real server is tested in `tests/`.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request as the stub saw it.
#[derive(Debug, Clone)]
pub(crate) struct SeenRequest {
    pub(crate) method: String,
    pub(crate) target: String,
    /// Header lines, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl SeenRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A canned response: status, extra headers, body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, String);

/// A running stub: its base URL and the requests it saw.
pub(crate) struct Stub {
    pub(crate) url: String,
    pub(crate) seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Stub {
    pub(crate) fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves every request with `respond` until the test's runtime ends.
pub(crate) async fn serve(
    respond: impl Fn(&SeenRequest) -> Answer + Send + Sync + 'static,
) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let respond = Arc::new(respond);
    let seen_by_task = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let respond = respond.clone();
            let seen = seen_by_task.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = line.trim_end().split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                let _ = read.read_exact(&mut body).await;
                let request = SeenRequest {
                    method,
                    target,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let (status, extra, body) = respond(&request);
                seen.lock().unwrap().push(request);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (name, value) in extra {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = write.write_all(head.as_bytes()).await;
                let _ = write.write_all(body.as_bytes()).await;
                let _ = write.shutdown().await;
            });
        }
    });
    Stub { url, seen }
}

/// A `GET /v1/registration/{service}` body with one host per port.
pub(crate) fn hosts_body(service: &str, ports: &[u16]) -> String {
    let hosts: Vec<_> = ports
        .iter()
        .map(|port| {
            serde_json::json!({
                "service": service, "ip_address": "10.0.0.1", "port": port,
                "revision": "r1", "service_repo_name": "", "tags": {},
                "last_check_in": "2026-11-28T12:00:00.000000Z"
            })
        })
        .collect();
    serde_json::json!({"service": service, "env": "test", "hosts": hosts}).to_string()
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `timeout`.
pub(crate) async fn wait_until(
    what: &str,
    timeout: std::time::Duration,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
