//! Test support: real `discovery serve` processes on local ports, and `wait_until`.
//!
//! The server binary is built once per test run (`cargo build --bin discovery`, a no-op when
//! it is up to date) unless `DISCOVERY_BIN` names one. A server's port is read from the
//! line it logs once it listens.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use discovery_client::{Registration, ServiceName};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The server binary, built on first use.
fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("DISCOVERY_BIN") {
                return PathBuf::from(path);
            }
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--bin", "discovery"])
                .current_dir(&workspace)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "cargo build --bin discovery failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            target.join("debug").join("discovery")
        })
        .clone()
}

/// A running `discovery serve`, killed on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its base URL.
    pub url: String,
    output: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a single node on a free port, with extra `serve` flags.
    pub fn start(flags: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), flags)
    }

    /// Starts a single node on `addr` (to restart one where it was), with extra flags.
    pub fn start_on(addr: SocketAddr, flags: &[&str]) -> Server {
        let listen = addr.to_string();
        let mut child = Command::new(binary())
            .args(["serve", "--listen", &listen])
            // A node restarted on a fixed port would take the default xDS port 18000.
            .env("DISCOVERY_XDS_LISTEN", "127.0.0.1:0")
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the discovery binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let line_tx = line_tx.clone();
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line.clone());
                    let _ = line_tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let bound = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match line_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(bound) = listening_addr(&line) {
                        break bound;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "discovery serve did not log its address; output:\n{}",
                        output.lock().unwrap().join("\n")
                    );
                }
            }
        };
        Server {
            child,
            addr: bound,
            url: format!("http://{bound}"),
            output,
        }
    }

    /// Kills the process (a crash, not a clean stop) and waits for it to be gone.
    pub fn kill(mut self) -> SocketAddr {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.addr
    }

    /// Sends a signal to the process (`STOP` freezes it: it still accepts connections, as
    /// the kernel does that, but answers nothing until `CONT`).
    #[allow(dead_code)]
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// What it logged so far, for failure messages.
    #[allow(dead_code)]
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a "listening on 127.0.0.1:PORT" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.to_ascii_lowercase().contains("listen") {
        return None;
    }
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start + "127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let port: u16 = digits.parse().ok()?;
    (port != 0).then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A URL where nothing listens.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_until`], for a condition that needs to await (a request).
#[allow(dead_code)]
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service name.
pub fn service(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

/// A registration of 10.0.0.1 on `port`, with a TTL long enough to outlive any test.
pub fn host(port: u16) -> Registration {
    let body = format!(r#"{{"ip": "10.0.0.1", "port": {port}, "revision": "r1", "ttl": 300}}"#);
    Registration::from_json(body.as_bytes()).unwrap()
}
