//! `discovery haproxy-sync` against a real HAProxy (Debian's `haproxy` 2.6), real HTTP
//! backends and a real registry, all on 127.0.0.1.
//!
//! Each test writes its own HAProxy configuration (an admin socket, a frontend on a free
//! port, a backend with `option httpchk` and one configuration server the sync must never
//! touch), starts HAProxy in the foreground, and checks what HAProxy itself reports over
//! its admin socket and what its frontend serves. The tests are skipped, with a message,
//! only when the `haproxy` binary is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{binary, http, wait_until, Node};

const WAIT: Duration = Duration::from_secs(30);
const BACKEND: &str = "be_web";

fn haproxy_missing() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: the `haproxy` binary is not installed (apt-get install haproxy)");
    }
    !found
}

/// A folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("discovery-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny HTTP server that answers every request `200` with its own name.
struct Backend {
    name: &'static str,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return; // drops the listener: connections are refused from now on
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || answer(stream, name));
                }
            }
        });
        Backend {
            name,
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket, so that connections (and health checks) are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    fn server(&self) -> String {
        format!("d-127.0.0.1-{}", self.port)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// An HAProxy process (and, after reloads, the ones it replaced), killed on drop.
struct Haproxy {
    config: PathBuf,
    /// HAProxy's own messages, shown when a test fails.
    log: PathBuf,
    socket: PathBuf,
    frontend: u16,
    current: Child,
    replaced: Vec<Child>,
}

impl Haproxy {
    fn start(dir: &Path) -> Haproxy {
        let socket = dir.join("admin.sock");
        let config = dir.join("haproxy.cfg");
        let frontend = free_port();
        std::fs::write(
            &config,
            format!(
                "global
    stats socket {socket} mode 600 level admin expose-fd listeners
    stats timeout 30s
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{frontend}
    default_backend {BACKEND}
backend {BACKEND}
    balance roundrobin
    option httpchk GET /
    server static 127.0.0.1:1 disabled
",
                socket = socket.display()
            ),
        )
        .unwrap();
        let log = dir.join("haproxy.log");
        let current = spawn_haproxy(&config, &log, &[]);
        let haproxy = Haproxy {
            config,
            log,
            socket,
            frontend,
            current,
            replaced: Vec::new(),
        };
        let pid = haproxy.current.id();
        wait_until("HAProxy answers on its admin socket", WAIT, || {
            haproxy.pid() == Some(pid)
        });
        haproxy
    }

    /// A seamless reload, the way init scripts do it: a new process takes the listeners
    /// over the socket (`-x`) and tells the old one to finish (`-sf`). Runtime changes are
    /// lost in it.
    fn reload(&mut self) {
        let old = self.current.id().to_string();
        let socket = self.socket.display().to_string();
        let new = spawn_haproxy(&self.config, &self.log, &["-x", &socket, "-sf", &old]);
        let pid = new.id();
        self.replaced
            .push(std::mem::replace(&mut self.current, new));
        wait_until(
            "the reloaded HAProxy answers on the admin socket",
            WAIT,
            || self.pid() == Some(pid),
        );
    }

    fn command(&self, command: &str) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    fn pid(&self) -> Option<u32> {
        let info = self.command("show info")?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .and_then(|p| p.trim().parse().ok())
    }

    /// Server name → (status, weight) as `show stat` reports them.
    fn servers(&self) -> BTreeMap<String, (String, u32)> {
        let Some(csv) = self.command(&format!("show stat {BACKEND} 4 -1")) else {
            return BTreeMap::new();
        };
        let mut lines = csv.lines();
        let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
            return BTreeMap::new();
        };
        let column = |name: &str| header.split(',').position(|c| c == name).unwrap();
        let (svname, status, weight, kind) = (
            column("svname"),
            column("status"),
            column("weight"),
            column("type"),
        );
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > kind && f[kind] == "2")
            .map(|f| {
                (
                    f[svname].to_owned(),
                    (f[status].to_owned(), f[weight].parse().unwrap_or(0)),
                )
            })
            .collect()
    }

    fn status(&self, server: &str) -> Option<String> {
        self.servers().get(server).map(|(status, _)| status.clone())
    }

    /// `get weight be/server`: `"7 (initial 3)"`.
    fn weight(&self, server: &str) -> String {
        self.command(&format!("get weight {BACKEND}/{server}"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The body of one request through the frontend, if it got a 200.
    fn fetch(&self) -> Option<String> {
        let (status, body) = http(
            "GET",
            &format!("http://127.0.0.1:{}/", self.frontend),
            None,
            "",
        );
        (status == 200).then_some(body)
    }

    /// Whether requests through the frontend reach every one of `names` (within a few
    /// round-robin turns).
    fn serves(&self, names: &[&str]) -> bool {
        let mut seen = BTreeSet::new();
        for _ in 0..(names.len() * 4) {
            if let Some(body) = self.fetch() {
                seen.insert(body);
            }
        }
        names.iter().all(|n| seen.contains(*n))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("HAProxy's log:\n{log}");
        }
        for child in self
            .replaced
            .iter_mut()
            .chain(std::iter::once(&mut self.current))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_haproxy(config: &Path, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new("haproxy")
        .arg("-f")
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start haproxy")
}

/// A running `discovery haproxy-sync`, its log lines collected; killed on drop.
struct Sync {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Sync {
    fn start(registry: &str, haproxy: &Haproxy, extra: &[&str]) -> Sync {
        let socket = haproxy.socket.display().to_string();
        let backend = format!("web={BACKEND}");
        let mut child = Command::new(binary())
            .args(["haproxy-sync", "--registry", registry, "--socket", &socket])
            .args(["--backend", &backend])
            .args(["--interval", "300ms", "--check-inter", "200ms"])
            .args(["--fall", "2", "--rise", "1"])
            .args(extra)
            .env_remove("DISCOVERY_READ_TOKEN")
            .env("DISCOVERY_LOG", "info,discovery_client::haproxy=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start discovery haproxy-sync");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains("sync round done") {
                    eprintln!("[haproxy-sync] {line}");
                }
                lines.lock().unwrap().push(line);
            }
        });
        Sync { child, log }
    }

    /// How many log lines contain every one of `parts`.
    fn count(&self, parts: &[&str]) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    fn logged(&self, parts: &[&str]) -> bool {
        self.count(parts) > 0
    }

    fn wait_logged(&self, what: &str, parts: &[&str]) {
        wait_until(what, WAIT, || self.logged(parts));
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn register(registry: &Node, backend: &Backend, tags: &str) {
    let body = format!(
        "ip=127.0.0.1&port={}&revision=r1&tags={}",
        backend.port,
        tags.replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace(':', "%3A")
    );
    let (status, text) = http(
        "POST",
        &format!("{}/v1/registration/web", registry.url),
        Some("application/x-www-form-urlencoded"),
        &body,
    );
    assert_eq!(status, 200, "{text}");
}

fn deregister(registry: &Node, backend: &Backend) {
    let url = format!(
        "{}/v1/registration/web/127.0.0.1?port={}",
        registry.url, backend.port
    );
    let (status, text) = http("DELETE", &url, None, "");
    assert_eq!(status, 200, "{text}");
}

#[test]
fn haproxy_backends_follow_the_registry_and_keep_vanished_hosts_while_their_checks_pass() {
    if haproxy_missing() {
        return;
    }
    let dir = TempDir::new("haproxy-follow");
    let registry = Node::start(&[]);
    let haproxy = Haproxy::start(&dir.0);
    let alpha = Backend::start("alpha");
    let mut bravo = Backend::start("bravo");
    let charlie = Backend::start("charlie");
    register(&registry, &alpha, r#"{"load_balancing_weight":3}"#);
    register(&registry, &bravo, "{}");
    let max_stale = Duration::from_secs(8);
    let sync = Sync::start(
        &registry.url,
        &haproxy,
        &["--max-stale", "8s", "--drain-timeout", "2s"],
    );

    // Registered hosts become servers, UP once their checks pass, and take traffic.
    wait_until("both hosts are UP in HAProxy", WAIT, || {
        haproxy.status(&alpha.server()).as_deref() == Some("UP")
            && haproxy.status(&bravo.server()).as_deref() == Some("UP")
    });
    wait_until("traffic through HAProxy reaches both hosts", WAIT, || {
        haproxy.serves(&[alpha.name, bravo.name])
    });

    // Weights: the tag, else 1; then the operator override for the whole service.
    assert!(
        haproxy.weight(&alpha.server()).starts_with("3 "),
        "{}",
        haproxy.weight(&alpha.server())
    );
    assert!(
        haproxy.weight(&bravo.server()).starts_with("1 "),
        "{}",
        haproxy.weight(&bravo.server())
    );
    let (status, text) = http(
        "POST",
        &format!("{}/v1/loadbalancing/web", registry.url),
        Some("application/x-www-form-urlencoded"),
        "load_balancing_weight=7",
    );
    assert_eq!(status, 204, "{text}");
    wait_until("both weights are 7", WAIT, || {
        haproxy.weight(&alpha.server()).starts_with("7 ")
            && haproxy.weight(&bravo.server()).starts_with("7 ")
    });
    let servers = haproxy.servers();
    assert_eq!(servers[&alpha.server()].1, 7, "show stat: {servers:?}");
    assert_eq!(servers[&bravo.server()].1, 7, "show stat: {servers:?}");

    // A deregistered host that still answers keeps its server and its traffic...
    deregister(&registry, &bravo);
    sync.wait_logged(
        "the sync notices bravo left the registry",
        &["keeping its server", &bravo.server()],
    );
    assert_eq!(haproxy.status(&bravo.server()).as_deref(), Some("UP"));
    wait_until("bravo still gets traffic", WAIT, || {
        haproxy.serves(&[bravo.name])
    });
    // ... until HAProxy's own check finds it down.
    bravo.stop();
    wait_until("bravo's server is removed", WAIT, || {
        !haproxy.servers().contains_key(&bravo.server())
    });
    sync.wait_logged(
        "bravo was removed for its failed check",
        &["removed server", &bravo.server(), "CheckDown"],
    );
    assert!(haproxy.serves(&[alpha.name]));

    // A deregistered host that keeps answering is drained and removed after --max-stale.
    register(&registry, &charlie, "{}");
    wait_until("charlie is UP", WAIT, || {
        haproxy.status(&charlie.server()).as_deref() == Some("UP")
    });
    deregister(&registry, &charlie);
    sync.wait_logged(
        "the sync notices charlie left the registry",
        &["keeping its server", &charlie.server()],
    );
    let vanished = Instant::now();
    wait_until("charlie's server is removed after max-stale", WAIT, || {
        !haproxy.servers().contains_key(&charlie.server())
    });
    assert!(
        vanished.elapsed() >= max_stale - Duration::from_millis(500),
        "removed after {:?}, before --max-stale",
        vanished.elapsed()
    );
    assert!(sync.logged(&["draining server", &charlie.server(), "Stale"]));
    // The sync logs the removal after HAProxy answered it: the server can be gone a moment
    // before the line is written.
    sync.wait_logged(
        "the sync logs charlie's removal",
        &["removed server", &charlie.server(), "Stale"],
    );

    // The configuration's own server was never touched.
    let servers = haproxy.servers();
    assert_eq!(
        servers.keys().cloned().collect::<Vec<_>>(),
        vec![alpha.server(), "static".to_owned()]
    );
    assert_eq!(servers["static"].0, "MAINT");
}

#[test]
fn haproxy_servers_survive_a_registry_outage_and_are_restored_after_reloads() {
    if haproxy_missing() {
        return;
    }
    let dir = TempDir::new("haproxy-outage");
    let registry = Node::start(&[]);
    let mut haproxy = Haproxy::start(&dir.0);
    let alpha = Backend::start("alpha");
    let mut delta = Backend::start("delta");
    register(&registry, &alpha, r#"{"load_balancing_weight":5}"#);
    register(&registry, &delta, "{}");
    let cache = dir.0.join("cache");
    let cache_arg = cache.display().to_string();
    let sync = Sync::start(
        &registry.url,
        &haproxy,
        &["--max-stale", "3s", "--cache-dir", &cache_arg],
    );
    let both_up = |haproxy: &Haproxy| {
        haproxy.status(&alpha.server()).as_deref() == Some("UP")
            && haproxy.status(&delta.server()).as_deref() == Some("UP")
    };
    wait_until("both hosts are UP", WAIT, || both_up(&haproxy));

    // A reload drops every runtime change; the sync puts the servers back.
    let old_pid = haproxy.current.id();
    haproxy.reload();
    assert_ne!(haproxy.pid(), Some(old_pid));
    wait_until("the servers are restored after the reload", WAIT, || {
        both_up(&haproxy)
    });
    assert!(haproxy.weight(&alpha.server()).starts_with("5 "));
    wait_until("traffic reaches both hosts after the reload", WAIT, || {
        haproxy.serves(&[alpha.name, delta.name])
    });
    assert!(sync.logged(&["HAProxy was reloaded"]));

    // Registry outage: delta left the registry just before it, then its backend dies.
    // With the registry reachable that would remove it at once (failed check, and past
    // --max-stale); while it is unreachable nothing is removed.
    deregister(&registry, &delta);
    sync.wait_logged(
        "the sync notices delta left the registry",
        &["keeping its server", &delta.server()],
    );
    drop(registry);
    sync.wait_logged("the watcher notices the outage", &["no registry answered"]);
    delta.stop();
    wait_until("HAProxy's check finds delta DOWN", WAIT, || {
        haproxy.status(&delta.server()).as_deref() == Some("DOWN")
    });
    let unreachable_rounds = sync.count(&["sync round done", "registry_reachable=false"]);
    let down_at = Instant::now();
    wait_until(
        "several sync rounds past --max-stale during the outage",
        WAIT,
        || {
            down_at.elapsed() > Duration::from_secs(3)
                && sync.count(&["sync round done", "registry_reachable=false"])
                    >= unreachable_rounds + 5
        },
    );
    assert!(sync.logged(&["keeping its server", &delta.server(), "RegistryUnreachable"]));
    let servers = haproxy.servers();
    assert!(
        servers.contains_key(&delta.server()),
        "delta was removed during the outage: {servers:?}"
    );
    assert_eq!(servers[&alpha.server()], ("UP".to_owned(), 5));
    assert!(!sync.logged(&["removed server"]));
    assert!(
        haproxy.serves(&[alpha.name]),
        "alpha keeps serving during the outage"
    );

    // A reload during the outage: the last good list (alpha) is put back.
    haproxy.reload();
    wait_until("alpha is restored while the registry is down", WAIT, || {
        haproxy.status(&alpha.server()).as_deref() == Some("UP")
    });
    wait_until("traffic reaches alpha", WAIT, || {
        haproxy.serves(&[alpha.name])
    });
    assert!(
        cache.join(format!("{BACKEND}.web.json")).exists(),
        "the cache file is written"
    );
}

/// Issue 11: `haproxy-sync` follows a registry cluster that speaks HTTPS and requires client
/// certificates (`--ca --cert --key`), through the second node when the first is gone.
#[test]
fn haproxy_sync_follows_an_https_cluster_with_client_certificates() {
    if haproxy_missing() {
        return;
    }
    let dir = TempDir::new("haproxy-tls");
    let ca = common::certs::Ca::new(&dir.0, "hap");
    let node_args = |leaf: &common::certs::Leaf, extra: &[&str]| {
        let mut args = leaf.serve_args();
        args.extend(["--tls-ca".into(), ca.pem.display().to_string()]);
        args.extend(["--tls-client-auth".into(), "all".into()]);
        args.extend(["--tls-peer-name".into(), "localhost".into()]);
        args.extend(["--gossip-interval".into(), "200ms".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let a_args = node_args(&ca.leaf("a", 1), &[]);
    let a = Node::start(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let b_args = node_args(&ca.leaf("b", 2), &["--peers", &a.url]);
    let b = Node::start(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
    let client = ca.leaf("sync", 3);
    let haproxy = Haproxy::start(&dir.0);
    let alpha = Backend::start("alpha");
    let ca_pem = ca.pem.display().to_string();
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let tls = ["--cacert", &ca_pem, "--cert", &cert, "--key", &key];
    let register_on = |node: &Node, backend: &Backend| {
        let (status, text) = common::curl(
            &tls,
            "POST",
            &format!("{}/v1/registration/web", node.url),
            Some("application/x-www-form-urlencoded"),
            &format!("ip=127.0.0.1&port={}&revision=r1", backend.port),
        );
        assert_eq!(status, 200, "{text}");
    };
    register_on(&a, &alpha);
    let registries = format!("{},{}", a.url, b.url);
    let sync = Sync::start(
        &registries,
        &haproxy,
        &["--ca", &ca_pem, "--cert", &cert, "--key", &key],
    );
    wait_until("the host is UP in HAProxy", WAIT, || {
        haproxy.status(&alpha.server()).as_deref() == Some("UP")
    });
    wait_until("traffic through HAProxy reaches it", WAIT, || {
        haproxy.serves(&[alpha.name])
    });
    // The node the sync follows goes away; a host registered on b (gossiped over mTLS from
    // there) still reaches HAProxy through b.
    drop(a);
    let bravo = Backend::start("bravo");
    register_on(&b, &bravo);
    wait_until("the host registered on b is UP", WAIT, || {
        haproxy.status(&bravo.server()).as_deref() == Some("UP")
    });
    drop(sync);
}
