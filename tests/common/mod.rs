//! Helpers for tests that start real `discovery` processes on 127.0.0.1 port 0.
#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `discovery serve` process, killed on drop.
pub struct Node {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub args: Vec<String>,
}

/// The `discovery` binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_discovery")
}

impl Node {
    /// Starts `discovery serve --listen 127.0.0.1:0 <args>` and waits for its listening line.
    pub fn start(args: &[&str]) -> Node {
        Node::start_on("127.0.0.1:0", args)
    }

    /// Starts a node on a given listen address (to restart one on the same port).
    pub fn start_on(listen: &str, args: &[&str]) -> Node {
        Node::spawn(listen, args, Stdio::inherit())
    }

    /// Like [`Node::start`], with the node's log lines (stderr, `DISCOVERY_LOG`, default
    /// `warn`) collected for assertions.
    pub fn start_logged(args: &[&str]) -> (Node, Logs) {
        let mut node = Node::spawn("127.0.0.1:0", args, Stdio::piped());
        let stderr = node.child.stderr.take().expect("stderr");
        let logs = Logs::default();
        let lines = logs.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                lines.lock().unwrap().push(line);
            }
        });
        (node, logs)
    }

    fn spawn(listen: &str, args: &[&str], stderr: Stdio) -> Node {
        let mut child = Command::new(binary())
            .arg("serve")
            .args(["--listen", listen])
            .args(args)
            .env(
                "DISCOVERY_LOG",
                std::env::var("DISCOVERY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start discovery");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Node {
            child,
            url,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `host:port` of the node.
    pub fn addr(&self) -> &str {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Stops the node with SIGTERM and waits for it to exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        self.signal("TERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            if started.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The log lines of a node started with [`Node::start_logged`], as they arrive.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Logs {
    /// Whether a line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Every line so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; panics with `what`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP call with curl-like simplicity: returns (status, body).
pub fn http(method: &str, url: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    curl(&[], method, url, content_type, body)
}

/// [`http`] with more curl options first (`--cacert`, `--cert`...).
pub fn curl(
    options: &[&str],
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(options);
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]);
    if let Some(ct) = content_type {
        cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary", body]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// GET a URL and parse JSON; `None` on any failure or non-200.
pub fn get_json(url: &str) -> Option<serde_json::Value> {
    let (status, body) = http("GET", url, None, "");
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// An agent: keeps `hosts` of service `web` registered at `url` (TTL `ttl`, every `every`)
/// until `stop` is set.
pub fn agent(
    url: String,
    hosts: Vec<String>,
    ttl: u32,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for ip in &hosts {
                let body = format!("ip={ip}&port=8080&revision=r1&ttl={ttl}");
                http(
                    "POST",
                    &format!("{url}/v1/registration/web"),
                    Some("application/x-www-form-urlencoded"),
                    &body,
                );
            }
            std::thread::sleep(every);
        }
    })
}
