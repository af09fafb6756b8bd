//! The one harness of the integration tests: real `discovery serve` processes on 127.0.0.1
//! port 0 (the binary cargo built for these tests; its port is read from its "listening on"
//! line), a two-node cluster, `wait_until`, and blocking HTTP calls (reqwest).
#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a node or a cluster may take to be ready: generous, the tests share two cores
/// with other builds.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running `discovery serve` process, killed on drop.
pub struct Node {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT` of its xDS listener (none with `--xds-listen off`).
    pub xds: Option<String>,
    pub args: Vec<String>,
}

/// Whether `args` turn the xDS listener off (`--xds-listen off` or `--xds-listen=off`); any
/// other "off" (`--tls-client-auth off`) leaves it on, and the node prints its xDS line.
fn xds_off(args: &[&str]) -> bool {
    args.contains(&"--xds-listen=off") || args.windows(2).any(|w| w == ["--xds-listen", "off"])
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
            // A node restarted on a fixed port would take the default xDS port 18000.
            .env("DISCOVERY_XDS_LISTEN", "127.0.0.1:0")
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
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // The xDS line follows at once, unless xDS is off.
        let mut xds = None;
        if !xds_off(args) {
            line.clear();
            stdout.read_line(&mut line).expect("read the xds line");
            xds = line
                .trim()
                .strip_prefix("xds listening on ")
                .map(str::to_owned);
        }
        Node {
            child,
            url,
            xds,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` of the node.
    pub fn addr(&self) -> &str {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }

    /// The node's address, to restart one where it was ([`Node::start_on`]).
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr()
            .parse()
            .expect("a node listens on an IP address")
    }

    /// Kills the process (a crash, not a clean stop), waits for it to be gone, and returns
    /// where it listened.
    pub fn kill(mut self) -> SocketAddr {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.socket_addr()
    }

    /// Sends a signal to the process. After `STOP` it waits until every thread of the
    /// process is stopped: `kill` returns once the signal is queued, and a thread running on
    /// the other core can still answer a request that the caller believes it sends to a
    /// frozen node.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id();
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        if sig == "STOP" {
            wait_until("every thread stopped", Duration::from_secs(10), || {
                all_threads_stopped(pid)
            });
        }
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

/// Whether every thread of process `pid` is in the stopped state (`T` in
/// `/proc/PID/task/TID/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; panics with `what`.
/// Callable from an async test on a multi-thread runtime too (it blocks in place); a
/// condition that needs to await uses [`block_on`].
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let mut poll = || {
        let started = Instant::now();
        while !condition() {
            if started.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(poll),
        Err(_) => poll(),
    }
}

/// Runs a future to completion from a [`wait_until`] condition in an async test.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(future)
}

/// An answer: status (0 when the request failed), headers and body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

/// A blocking HTTP request with `headers` and a body (none when empty). Callable from an
/// async test on a multi-thread runtime too (it blocks in place).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    let send = || {
        let client = CLIENT.get_or_init(|| {
            // reqwest brings no crypto provider (`rustls-no-provider`): the project's one.
            let _ = (*discovery_client::tls::provider())
                .clone()
                .install_default();
            reqwest::blocking::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(None)
                .build()
                .expect("the HTTP client builds")
        });
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if !body.is_empty() {
            request = request.body(body.to_owned());
        }
        match request.send() {
            Ok(response) => Answer {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body: response.text().unwrap_or_default(),
            },
            Err(_) => Answer {
                status: 0,
                headers: Default::default(),
                body: String::new(),
            },
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(send),
        Err(_) => send(),
    }
}

/// A blocking HTTP call: returns (status, body); status 0 when the request failed.
pub fn http(method: &str, url: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    let headers: &[(&str, &str)] = match content_type {
        Some(ct) => &[("content-type", ct)],
        None => &[],
    };
    let answer = request(method, url, headers, body);
    (answer.status, answer.body)
}

/// `curl` with `options` first (`--cacert`, `--cert`...): returns (status, body), status 0
/// when the request failed (a refused TLS handshake among others).
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

/// Whether a node answers `/readyz` with 200.
pub fn ready(node: &Node) -> bool {
    http("GET", &format!("{}/readyz", node.url), None, "").0 == 200
}

/// The peers a node's `/v1/peers` lists as alive.
pub fn alive_peers(node: &Node) -> usize {
    get_json(&format!("{}/v1/peers", node.url))
        .and_then(|p| {
            p["peers"]
                .as_array()
                .map(|peers| peers.iter().filter(|p| p["state"] == "alive").count())
        })
        .unwrap_or(0)
}

/// The value of one series of a node's `/metrics`, e.g. `discovery_long_polls`.
pub fn metric(node: &Node, series: &str) -> Option<f64> {
    let (_, text) = http("GET", &format!("{}/metrics", node.url), None, "");
    series_value(&text, series)
}

/// The value of one series in a Prometheus text answer.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Two nodes gossiping every 200 ms: `a`, whose log lines are collected, and `b`, with `a`
/// as its peer, each started with `extra` flags too. Returns once both are ready and see
/// each other alive.
pub fn pair(extra: &[&str]) -> (Node, Logs, Node) {
    let mut args = vec!["--node-id", "a", "--gossip-interval", "200ms"];
    args.extend_from_slice(extra);
    let (a, logs) = Node::start_logged(&args);
    let mut args = vec![
        "--node-id",
        "b",
        "--gossip-interval",
        "200ms",
        "--peers",
        &a.url,
    ];
    args.extend_from_slice(extra);
    let b = Node::start(&args);
    wait_until(
        "both nodes ready, each seeing the other alive",
        READY_WITHIN,
        || [&a, &b].iter().all(|n| ready(n) && alive_peers(n) == 1),
    );
    (a, logs, b)
}

/// A base URL where nothing listens: a port bound and released again.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
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

/// A service name, for the client library.
pub fn service(name: &str) -> discovery_client::ServiceName {
    discovery_client::ServiceName::parse(name).unwrap()
}

/// A registration of 10.0.0.1 on `port`, with a TTL long enough to outlive any test.
pub fn host(port: u16) -> discovery_client::Registration {
    let body = format!(r#"{{"ip": "10.0.0.1", "port": {port}, "revision": "r1", "ttl": 300}}"#);
    discovery_client::Registration::from_json(body.as_bytes()).unwrap()
}
