//! xDS push benchmark (issue 12). Not run by CI; figures go to README ("Performance").
//!
//!     cargo build --release --bins --examples
//!     target/release/examples/xds-bench [--streams 1000] [--connections 20] [--rounds 50]
//!         [--services 0] [--wildcard-lds] [--no-ack]
//!
//! Starts one `discovery serve` process on 127.0.0.1 (from `DISCOVERY_BIN` or next to this
//! example's directory), registers one service (plus `--services` others), and opens
//! `--streams` ADS streams spread over `--connections` HTTP/2 connections, each subscribed to
//! that service's `ClusterLoadAssignment` and ACKing what it gets. Then, per round, one
//! heartbeat changes the service (a new revision) and the time from just before that request
//! to each stream's update is taken. With `--wildcard-lds` the streams subscribe to every
//! `Listener` instead, and each round's heartbeat adds a new service (review finding 3: the
//! fan-out to wildcard streams over many services). Reports the median and p99 over every
//! stream and round, the node's resident memory per stream (VmRSS after the streams opened
//! minus before, over the stream count), and the CPU time the node and this client spent per
//! round (from /proc): the client runs in this process on the same machine, so
//! its own scheduling and CPU are in the figures.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::Channel;

const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

#[derive(Parser)]
struct Args {
    /// ADS streams to open.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// HTTP/2 connections they share.
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Changes to time.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Other services registered before the streams open (one host each).
    #[arg(long, default_value_t = 0)]
    services: usize,
    /// Subscribe to every Listener (wildcard LDS); each round adds a service.
    #[arg(long)]
    wildcard_lds: bool,
    /// Never ACK (the server pushes each new version all the same): the node's CPU per round
    /// is then the push alone.
    #[arg(long)]
    no_ack: bool,
}

mod node;

struct Proc {
    child: Child,
    url: String,
    xds: String,
}

impl Proc {
    fn start() -> Proc {
        let mut child = node::spawn(&[]);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
        let url = next().trim_start_matches("listening on ").to_owned();
        let xds = next().trim_start_matches("xds listening on ").to_owned();
        Proc { child, url, xds }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) process `pid` has used, from /proc/PID/stat.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th,
    // in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

async fn heartbeat(http: &reqwest::Client, url: &str, service: &str, revision: usize) {
    let response = http
        .post(format!("{url}/v1/registration/{service}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "ip=10.0.0.1&port=8080&revision=r{revision}&ttl=3600"
        ))
        .send()
        .await
        .expect("heartbeat");
    assert!(response.status().is_success(), "{}", response.status());
}

fn request(wildcard_lds: bool, version: &str, nonce: &str) -> DiscoveryRequest {
    let (type_url, resource_names) = if wildcard_lds {
        (LDS, vec![])
    } else {
        (EDS, vec!["bench".into()])
    };
    DiscoveryRequest {
        node: Some(Node {
            id: "xds-bench".into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names,
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// One stream: subscribes, then reports the time of every update after the first and ACKs it
/// (unless `no_ack`).
async fn stream(
    wildcard_lds: bool,
    no_ack: bool,
    channel: Channel,
    round_start: Arc<Mutex<Instant>>,
    opened: mpsc::UnboundedSender<()>,
    samples: mpsc::UnboundedSender<Duration>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(request(wildcard_lds, "", "")).unwrap();
    let outgoing =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut incoming = client
        .stream_aggregated_resources(outgoing)
        .await
        .expect("open an ADS stream")
        .into_inner();
    let mut first = true;
    while let Ok(Some(response)) = incoming.message().await {
        let at = Instant::now();
        if first {
            first = false;
            let _ = opened.send(());
        } else {
            let _ = samples.send(at - *round_start.lock());
        }
        if no_ack {
            continue;
        }
        let _ = tx.send(request(
            wildcard_lds,
            &response.version_info,
            &response.nonce,
        ));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let node = Proc::start();
    let http = discovery_client::tls::http_client(None).build().unwrap();
    heartbeat(&http, &node.url, "bench", 0).await;
    for i in 0..args.services {
        heartbeat(&http, &node.url, &format!("other-{i}"), 0).await;
    }
    let before = node.rss_kib();

    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{}", node.xds))
                .unwrap()
                .connect()
                .await
                .expect("connect to the xDS port"),
        );
    }
    let round_start = Arc::new(Mutex::new(Instant::now()));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    for i in 0..args.streams {
        tokio::spawn(stream(
            args.wildcard_lds,
            args.no_ack,
            channels[i % channels.len()].clone(),
            round_start.clone(),
            opened_tx.clone(),
            samples_tx.clone(),
        ));
    }
    for _ in 0..args.streams {
        opened_rx
            .recv()
            .await
            .expect("every stream gets its first answer");
    }
    let open_secs = started.elapsed().as_secs_f64();
    let after = node.rss_kib();

    let mut all = Vec::with_capacity(args.streams * args.rounds);
    let mut last_of_round = Vec::with_capacity(args.rounds);
    let cpu_before = (cpu(node.child.id()), cpu(std::process::id()));
    for round in 1..=args.rounds {
        *round_start.lock() = Instant::now();
        if args.wildcard_lds {
            heartbeat(&http, &node.url, &format!("new-{round}"), 0).await;
        } else {
            heartbeat(&http, &node.url, "bench", round).await;
        }
        let mut slowest = Duration::ZERO;
        for _ in 0..args.streams {
            let d = tokio::time::timeout(Duration::from_secs(30), samples_rx.recv())
                .await
                .expect("every stream gets the update within 30 s")
                .unwrap();
            slowest = slowest.max(d);
            all.push(d);
        }
        last_of_round.push(slowest);
        // Lets the ACKs land before the next change.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Includes the 50 ms pauses, in which both should be idle.
    let node_cpu = cpu(node.child.id()) - cpu_before.0;
    let client_cpu = cpu(std::process::id()) - cpu_before.1;
    all.sort();
    last_of_round.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} ADS streams over {} connections ({}), {} other services, {} rounds (all opened and answered in {:.2} s)",
        args.streams,
        args.connections,
        if args.wildcard_lds {
            "wildcard LDS, each round adds a service"
        } else {
            "one service's EDS, each round changes it"
        },
        args.services,
        args.rounds,
        open_secs
    );
    println!(
        "push latency per stream: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(*all.last().unwrap())
    );
    println!(
        "time until the last stream has it: median {:.2} ms, p99 {:.2} ms",
        ms(percentile(&last_of_round, 0.5)),
        ms(percentile(&last_of_round, 0.99))
    );
    let per_round = |d: Duration| ms(d) / args.rounds as f64;
    println!(
        "CPU per round: node {:.2} ms, this client {:.2} ms",
        per_round(node_cpu),
        per_round(client_cpu)
    );
    println!(
        "node memory: {} KiB before, {} KiB with the streams: {:.1} KiB per stream",
        before,
        after,
        after.saturating_sub(before) as f64 / args.streams as f64
    );
}
