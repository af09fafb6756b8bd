//! Gossip benchmark (issue 3). Not run by CI; figures go to docs/gossip.md.
//!
//!     cargo build --release --bins --examples
//!     target/release/examples/gossip-bench convergence   # real processes, 3 and 5 nodes
//!     target/release/examples/gossip-bench heal          # real processes, SIGSTOP 30 s
//!     target/release/examples/gossip-bench bytes         # in-process, virtual time
//!     target/release/examples/gossip-bench all
//!     target/release/examples/gossip-bench scale         # in-process, 5-250 nodes (scale.rs)
//!
//! - convergence: N `discovery serve` processes on 127.0.0.1 at the default 1 s interval;
//!   200 writes of a new host, each to the next node in turn; every other node is long
//!   polling the service, and a write has converged when the last of them has it. Reports
//!   the median and p99 of that time.
//! - heal: 3 processes; 10,000 hosts registered everywhere; one node frozen with SIGSTOP for
//!   30 s while all 10,000 change revision on the other two; then SIGCONT, and the time
//!   until the thawed node serves all 10,000 new revisions.
//! - bytes: 5 in-process nodes over the in-memory network (which encodes every message as
//!   on the wire), virtual clock: 100,000 hosts (1000 services of 100) heartbeating every
//!   30 s (each host to one node), 1% of hosts changing revision per minute, default TTL
//!   600 s. Every node runs one anti-entropy round per virtual second and pushes after each
//!   local change, as the real loop does. Measured over 600 virtual seconds after a 60 s
//!   start-up (`GOSSIP_BENCH_TTL=90` for a 90 s TTL, where every heartbeat is
//!   re-shipped); reports payload bytes per node per second (HTTP headers excluded, message
//!   count given so they can be added).
//!
//! The `discovery` binary is taken from `DISCOVERY_BIN` or next to this example's directory.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use discovery::gossip::memory::MemoryTransport;
use discovery::gossip::{Clock, MemoryNetwork, Node};
use discovery::registry::{Micros, SECOND};
use discovery::{Config, NodeState, ServeArgs};
use discovery_api::{HostStatus, Port, Registration, RepoName, Revision, ServiceName, Tags};
use std::io::{BufRead, BufReader};

mod node;
mod scale;

struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = node::spawn(args);
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().trim_start_matches("listening on ").to_owned();
        Proc { child, url }
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `n` nodes: the first alone, the others naming it.
async fn start_cluster(n: usize, client: &reqwest::Client) -> Vec<Proc> {
    let first = Proc::start(&["--node-id", "n0"]);
    let seed = first.url.clone();
    let mut procs = vec![first];
    for i in 1..n {
        let id = format!("n{i}");
        procs.push(Proc::start(&["--node-id", &id, "--peers", &seed]));
    }
    for p in &procs {
        let url = format!("{}/v1/peers", p.url);
        wait_until("peers alive", Duration::from_secs(60), || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let Ok(r) = client.get(&url).send().await else {
                    return false;
                };
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let alive = v["peers"]
                    .as_array()
                    .map(|a| a.iter().filter(|p| p["state"] == "alive").count())
                    .unwrap_or(0);
                alive == n - 1 && v["ready"] == true
            }
        })
        .await;
    }
    procs
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn register(client: &reqwest::Client, url: &str, service: &str, ip: &str, rev: &str) {
    let r = client
        .post(format!("{url}/v1/registration/{service}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("ip={ip}&port=8080&revision={rev}"))
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success(), "register: {}", r.status());
}

async fn convergence(n: usize) {
    let client = discovery_client::tls::http_client(None).build().unwrap();
    let procs = start_cluster(n, &client).await;
    let mut times = Vec::new();
    for w in 0..200usize {
        let writer = w % n;
        let ip = format!("10.3.{}.{}", w / 256, w % 256);
        let mut polls = Vec::new();
        for (i, p) in procs.iter().enumerate() {
            if i == writer {
                continue;
            }
            let head = client
                .get(format!("{}/v1/registration/conv", p.url))
                .send()
                .await
                .unwrap();
            let index: u64 = head
                .headers()
                .get("x-discovery-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let client = client.clone();
            let url = p.url.clone();
            let ip = ip.clone();
            polls.push(tokio::spawn(async move {
                let mut index = index;
                loop {
                    let r = client
                        .get(format!("{url}/v1/registration/conv?index={index}&wait=30s"))
                        .send()
                        .await
                        .unwrap();
                    index = r
                        .headers()
                        .get("x-discovery-index")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(index);
                    let body = r.text().await.unwrap();
                    if body.contains(&format!("\"{ip}\"")) {
                        return Instant::now();
                    }
                }
            }));
        }
        let t0 = Instant::now();
        register(&client, &procs[writer].url, "conv", &ip, "r1").await;
        let mut last = t0;
        for p in polls {
            last = last.max(p.await.unwrap());
        }
        times.push((last - t0).as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "convergence of one write, {n} nodes, 1s interval, 200 writes: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
}

async fn count_revision(client: &reqwest::Client, url: &str, rev: &str) -> usize {
    let Ok(r) = client
        .get(format!("{url}/v1/registration/heal"))
        .send()
        .await
    else {
        return 0;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["hosts"]
        .as_array()
        .map(|h| h.iter().filter(|h| h["revision"] == rev).count())
        .unwrap_or(0)
}

async fn write_all(client: &reqwest::Client, urls: &[String], rev: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..32usize {
        let client = client.clone();
        let urls = urls.to_vec();
        let rev = rev.to_owned();
        tasks.spawn(async move {
            for i in (chunk..10_000).step_by(32) {
                let ip = format!("10.4.{}.{}", i / 256, i % 256);
                register(&client, &urls[i % urls.len()], "heal", &ip, &rev).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn heal() {
    let client = discovery_client::tls::http_client(None).build().unwrap();
    let procs = start_cluster(3, &client).await;
    let urls: Vec<String> = procs.iter().map(|p| p.url.clone()).collect();
    write_all(&client, &urls, "r1").await;
    for url in &urls {
        wait_until("10,000 hosts everywhere", Duration::from_secs(60), || {
            count_revision(&client, url, "r1").map(|n| n == 10_000)
        })
        .await;
    }
    let frozen = &procs[2];
    frozen.signal("STOP");
    let frozen_at = Instant::now();
    write_all(&client, &urls[..2], "r2").await;
    let written = frozen_at.elapsed();
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(written)).await;
    frozen.signal("CONT");
    let t0 = Instant::now();
    wait_until(
        "the thawed node converges",
        Duration::from_secs(120),
        || count_revision(&client, &frozen.url, "r2").map(|n| n == 10_000),
    )
    .await;
    println!(
        "heal: node frozen 30 s (SIGSTOP) while 10,000 hosts changed on the other two (written in {:.1} s): converged {:.2} s after SIGCONT (1s interval)",
        written.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

trait MapFut: std::future::Future + Sized {
    fn map<U>(self, f: impl FnOnce(Self::Output) -> U) -> impl std::future::Future<Output = U> {
        async move { f(self.await) }
    }
}
impl<F: std::future::Future> MapFut for F {}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// `n` nodes (`http://n{i}:80`, node ids `n{i}`) on one in-memory network and one virtual
/// clock read from `time`, each with every other in `--peers`, `--warmup 0s` and `extra`
/// flags, configured through the real flag parsing.
fn virtual_cluster(
    n: usize,
    time: &Arc<AtomicU64>,
    extra: &[&str],
) -> (MemoryNetwork, Vec<String>, Vec<Arc<Node<MemoryTransport>>>) {
    let net = MemoryNetwork::new();
    let addrs: Vec<String> = (0..n).map(|i| format!("http://n{i}:80")).collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let peers: Vec<&str> = addrs
            .iter()
            .filter(|a| *a != addr)
            .map(|s| s.as_str())
            .collect();
        let id = format!("n{i}");
        let peers = peers.join(",");
        let mut args = vec!["x", "--node-id", &id, "--peers", &peers, "--warmup", "0s"];
        args.extend_from_slice(extra);
        let config = Config::from_args(Cli::parse_from(args).serve).unwrap();
        let settings = config.gossip();
        let shared = Arc::new(NodeState::new(config));
        let time = time.clone();
        let clock: Clock = Arc::new(move || time.load(Ordering::Relaxed));
        nodes.push(net.join(shared, settings, addr, clock));
    }
    (net, addrs, nodes)
}

async fn bytes() {
    const NODES: usize = 5;
    const HOSTS: usize = 100_000;
    const PER_SERVICE: usize = 100;
    const HEARTBEAT_SECS: u64 = 30;
    const WARMUP_SECS: u64 = 60;
    const MEASURE_SECS: u64 = 600;
    // GOSSIP_BENCH_TTL overrides the hosts' TTL (default: the server's 600 s).
    let ttl: Option<u64> = std::env::var("GOSSIP_BENCH_TTL")
        .ok()
        .and_then(|t| t.parse().ok());
    let t0: Micros = 1_800_000_000 * SECOND;
    let time = Arc::new(AtomicU64::new(t0));
    let (net, addrs, nodes) = virtual_cluster(NODES, &time, &[]);
    let services: Vec<ServiceName> = (0..HOSTS / PER_SERVICE)
        .map(|s| ServiceName::parse(&format!("service-{s:04}")).unwrap())
        .collect();
    let mut revisions = vec![0u32; HOSTS];
    let tags: Tags = serde_json::from_str(
        r#"{"az":"us-east-1a","region":"us-east-1","instance_id":"i-0123456789abcdef0"}"#,
    )
    .unwrap();
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    let mut rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut before = Vec::new();
    let started = Instant::now();
    for second in 0..WARMUP_SECS + MEASURE_SECS {
        if second == WARMUP_SECS {
            before = addrs.iter().map(|a| net.traffic(a)).collect();
        }
        let now = time.load(Ordering::Relaxed);
        for h in (second % HEARTBEAT_SECS) as usize..HOSTS {
            if h as u64 % HEARTBEAT_SECS != second % HEARTBEAT_SECS {
                continue;
            }
            // 1% of hosts change per minute = 0.5% of heartbeats at 2 per minute.
            if second >= HEARTBEAT_SECS && rand() % 200 == 0 {
                revisions[h] += 1;
            }
            let node = &nodes[h % NODES];
            let reg = Registration {
                ip: None,
                port: Port::new(8080).unwrap(),
                revision: Revision::parse(&format!("{:040x}", revisions[h])).unwrap(),
                service_repo_name: RepoName::parse("shop").unwrap(),
                tags: tags.clone(),
                ttl,
                status: HostStatus::Up,
                auto_ip: false,
            };
            let ip = std::net::IpAddr::from([10, (h >> 16) as u8, (h >> 8) as u8, h as u8]);
            let hb = node
                .shared()
                .registry
                .heartbeat(&services[h / PER_SERVICE], ip, &reg, now)
                .unwrap();
            if let Some(change) = hb.change {
                node.shared().publish(&[change]);
                if second >= HEARTBEAT_SECS {
                    node.push().await;
                }
            }
        }
        for node in &nodes {
            node.round().await;
            node.shared().registry.sweep(now);
        }
        time.fetch_add(SECOND, Ordering::Relaxed);
    }
    let mut sent = 0.0;
    let mut received = 0.0;
    let mut messages = 0.0;
    for (i, a) in addrs.iter().enumerate() {
        let t = net.traffic(a);
        sent += (t.sent - before[i].sent) as f64;
        received += (t.received - before[i].received) as f64;
        messages += (t.messages - before[i].messages) as f64;
    }
    let per = |x: f64| x / NODES as f64 / MEASURE_SECS as f64;
    let hosts: Vec<usize> = nodes
        .iter()
        .map(|n| n.shared().registry.host_count())
        .collect();
    println!(
        "bytes: {NODES} nodes, {HOSTS} hosts, heartbeat every {HEARTBEAT_SECS}s, 1%/min changing, TTL {}s, {MEASURE_SECS} virtual s: per node {:.1} KB/s sent + {:.1} KB/s received = {:.1} KB/s, {:.1} messages/s sent (hosts per node at the end {hosts:?}; {:.0} s wall)",
        ttl.unwrap_or(600),
        per(sent) / 1000.0,
        per(received) / 1000.0,
        per(sent + received) / 1000.0,
        per(messages),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if what == "scale" {
        scale::run(scale::ScaleArgs::parse_from(std::env::args().skip(1))).await;
        return;
    }
    if what == "convergence" || what == "all" {
        convergence(3).await;
        convergence(5).await;
    }
    if what == "heal" || what == "all" {
        heal().await;
    }
    if what == "bytes" || what == "all" {
        bytes().await;
    }
}
