//! `gossip-bench scale` (issue 14): the gossip layer as it is (real `Node`s and `Registry`s
//! over the in-memory network, every message encoded and decoded), at 5 to 250 nodes, on one
//! virtual clock. Nothing sleeps: the loop below plays the part of each node's gossip loop
//! (`src/gossip/mod.rs`, `run`) and sweeper tick by tick.
//!
//! What one tick (5 ms, the push debounce) does, in order:
//! - the hosts whose 30 s heartbeat falls in it heartbeat to their home node (host `h` lives
//!   on node `h % N`); a heartbeat carries a new revision with the probability that makes the
//!   cluster-wide change rate that of the modelled fleet (1% of `--fleet` per minute);
//! - a node whose host lists changed in the previous tick pushes its new writes (up to 8
//!   peers: `PUSH_FANOUT`), as the loop does 5 ms after `NodeState::publish`;
//! - each node runs its anti-entropy round (3 random peers) once per second, at its own
//!   random phase, and sweeps every 500 ms;
//! - probes: a new service with one host written to a random node; its convergence time is
//!   when the last node holds it.
//!
//! Exchanges take no virtual time (no latency model): the convergence times are those of the
//! protocol (debounce, push fanout, round interval, loss), not of a network. A lost message
//! fails its exchange at once, where HTTP would wait out a 2 s timeout (during which the
//! real loop skips only that peer).
//!
//! Memory and CPU decide what can be materialized: every node holds every host (about 450 B
//! each), so N nodes × 1,000,000 hosts does not fit in 24 GiB past a handful of nodes, and one
//! thread plays every node. Each cluster size therefore runs with its own number of
//! materialized hosts (`--clusters N:HOSTS`), while the change stream (1% of `--fleet` per
//! minute, about 167 writes/s cluster-wide, which every node must absorb and which drives the
//! pushes) is always that of the whole fleet. Only the refresh stream (a heartbeat re-shipped
//! once a third of the TTL has passed, about HOSTS/210 records/s at 30 s heartbeats and the
//! default 600 s TTL) shrinks with the hosts; runs at 5 nodes with several host counts show
//! what it costs.
//!
//! Per cluster size and link loss: a settle, then a measured window (bytes per node per
//! second, probes), then 20% of the nodes cut off from the rest for `--partition` seconds
//! (hosts keep heartbeating on both sides) and healed; healed is when every node's digest
//! covers every write made anywhere before the heal. Every cluster size stops by itself:
//! its phases are bounded in virtual time, and `--wall-cap` bounds its wall time (what did
//! not run is reported as such).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use discovery::gossip::memory::MemoryTransport;
use discovery::gossip::{MemoryNetwork, Mode, Node};
use discovery::registry::{Digest, Micros, Origin, SECOND};
use discovery_api::{HostStatus, Port, Registration, RepoName, Revision, ServiceName, Tags};
use futures_util::FutureExt;

/// One tick of the simulation: the push debounce (`PUSH_DEBOUNCE`).
const TICK: Micros = 5_000;
/// The gossip interval (the default `--gossip-interval`).
const INTERVAL: Micros = SECOND;
/// The sweeper's period (`SWEEP_INTERVAL`).
const SWEEP: Micros = 500_000;
const HEARTBEAT: Micros = 30 * SECOND;
/// Hosts per service.
const PER_SERVICE: usize = 100;
/// The heartbeat TTL (the server's default): refreshes travel once a third of it has passed.
const TTL: Micros = 600 * SECOND;
/// How often the heal is checked (digests of every node: N² lookups).
const HEAL_CHECK: Micros = 100_000;
const T0: Micros = 1_800_000_000 * SECOND;

/// `gossip-bench scale` flags.
#[derive(Parser, Debug)]
#[command(name = "gossip-bench scale")]
pub struct ScaleArgs {
    /// Cluster sizes and the hosts materialized for each, `NODES:HOSTS`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5:6000,25:6000,100:6000,250:6000,5:100000"
    )]
    clusters: Vec<String>,
    /// The fleet modelled: its change rate (1% per minute) is kept whatever the hosts.
    #[arg(long, default_value_t = 1_000_000)]
    fleet: usize,
    /// Link loss rates, each message dropped on its own.
    #[arg(long, value_delimiter = ',', default_value = "0,0.01,0.05")]
    loss: Vec<f64>,
    /// Virtual seconds before the first measure (initial replication).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Virtual seconds between phases, unmeasured.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Virtual seconds of each measured window; probes are written in all but its last 10 s.
    #[arg(long, default_value_t = 30)]
    measure: u64,
    /// Milliseconds between probes (each a new one-host service on a random node).
    #[arg(long, default_value_t = 100)]
    probe_every_ms: u64,
    /// Virtual seconds 20% of the nodes are cut off.
    #[arg(long, default_value_t = 60)]
    partition: u64,
    /// Most virtual seconds waited for the heal.
    #[arg(long, default_value_t = 30)]
    heal_cap: u64,
    /// Most wall seconds per cluster size.
    #[arg(long, default_value_t = 1500)]
    wall_cap: u64,
    /// Seed of the workload, of the loss and of every node's choice of peers: a run with the
    /// same arguments makes the same choices (bytes vary a little with hash map order, CPU
    /// is wall time).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the plot goes (SVG).
    #[arg(long, default_value = "docs/gossip-scale.svg")]
    svg: String,
    /// A file each measured cell is appended to (one line each); the table and the plot are
    /// made from every cell in it, so runs split over several processes make one report.
    #[arg(long)]
    results: Option<String>,
}

/// A splitmix64 stream: repeatable without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Probe {
    service: ServiceName,
    written: Micros,
    have: Vec<bool>,
    count: usize,
    converged: Option<Micros>,
}

/// What one (cluster size, loss) cell measured.
#[derive(Clone, Debug, Default)]
struct Cell {
    nodes: usize,
    hosts: usize,
    loss: f64,
    /// Convergence of one write, seconds: median, p99, max; probes written, converged.
    median: f64,
    p99: f64,
    max: f64,
    probes: usize,
    converged: usize,
    /// Payload bytes per node per second, sent + received; messages sent per node per second.
    bytes: f64,
    messages: f64,
    /// Seconds from the heal until every node holds every write made before it (infinite: not
    /// within the cap; None: no partition was run).
    heal: Option<f64>,
    /// Wall seconds the simulation took per virtual second of the measured window, divided by
    /// the nodes: roughly the CPU one node spends per second (one thread runs them all).
    cpu: f64,
    wall: f64,
    ran: bool,
}

struct Sim {
    net: MemoryNetwork,
    time: Arc<AtomicU64>,
    nodes: Vec<Arc<Node<MemoryTransport>>>,
    addrs: Vec<String>,
    round_phase: Vec<Micros>,
    push_due: Vec<Option<Micros>>,
    hosts: usize,
    services: Vec<ServiceName>,
    revisions: Vec<u32>,
    /// Probability that a heartbeat carries a new revision, per million.
    change_per_million: u64,
    template: Registration,
    rng: Rng,
    probes: Vec<Probe>,
    pending: Vec<usize>,
    probe_every: Micros,
}

fn host_ip(h: usize) -> IpAddr {
    IpAddr::from([10, (h >> 16) as u8, (h >> 8) as u8, h as u8])
}

impl Sim {
    fn new(n: usize, hosts: usize, args: &ScaleArgs) -> Sim {
        let (fleet, seed) = (args.fleet, args.seed);
        let time = Arc::new(AtomicU64::new(T0));
        let (net, addrs, nodes) = super::virtual_cluster(n, &time, &["--max-hosts", "4000000"]);
        let mut rng = Rng(seed);
        for node in &nodes {
            node.seed_peer_choice(rng.next());
        }
        let round_phase = (0..n).map(|_| rng.below(INTERVAL / TICK) * TICK).collect();
        let services = (0..hosts.div_ceil(PER_SERVICE))
            .map(|s| ServiceName::parse(&format!("svc-{s:05}")).unwrap())
            .collect();
        // 1% of the fleet per minute, spread over the heartbeats of the hosts we hold.
        let changes_per_sec = fleet as f64 * 0.01 / 60.0;
        let beats_per_sec = hosts as f64 / (HEARTBEAT / SECOND) as f64;
        let change = changes_per_sec / beats_per_sec;
        assert!(
            change <= 1.0 + 1e-9,
            "too few hosts to carry the fleet's change rate: at least {} needed",
            (changes_per_sec * (HEARTBEAT / SECOND) as f64).ceil()
        );
        let tags: Tags = serde_json::from_str(
            r#"{"az":"us-east-1a","region":"us-east-1","instance_id":"i-0123456789abcdef0"}"#,
        )
        .unwrap();
        let template = Registration {
            ip: None,
            port: Port::new(8080).unwrap(),
            revision: Revision::parse(&format!("{:040x}", 0)).unwrap(),
            service_repo_name: RepoName::parse("shop").unwrap(),
            tags,
            ttl: None,
            status: HostStatus::Up,
            auto_ip: false,
        };
        Sim {
            net,
            time,
            nodes,
            addrs,
            round_phase,
            push_due: vec![None; n],
            hosts,
            services,
            revisions: vec![0; hosts],
            change_per_million: (change * 1e6).round() as u64,
            template,
            rng,
            probes: Vec::new(),
            pending: Vec::new(),
            probe_every: args.probe_every_ms * 1000,
        }
    }

    fn now(&self) -> Micros {
        self.time.load(Ordering::Relaxed)
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    /// The fleet as it stands after running for a while: every host registered on its home
    /// node, last shipped at a spread of ages up to a third of the TTL, so that refreshes
    /// flow at their steady rate from the start (oldest first: a node's hybrid clock never
    /// goes back), and copied to every node.
    fn prehistory(&mut self) {
        let third = TTL / 3;
        let h_count = self.hosts;
        // A permutation of the hosts unrelated to home node and heartbeat phase.
        const STRIDE: usize = 1_000_003;
        for k in 0..h_count {
            let h = (k * STRIDE) % h_count;
            let age = (h_count - 1 - k) as u128 * third as u128 / h_count as u128;
            let at = T0 - age as Micros;
            self.beat(h, at, false);
        }
        // Every node starts with the whole registry, copied with the registry's own delta and
        // merge (what gossip pages carry, in one piece): the start-up is not what is measured,
        // and a snapshot pulled in 5,000-record pages costs a scan of every record per page.
        let own: Vec<_> = self
            .nodes
            .iter()
            .map(|node| node.shared().registry.delta(&Digest::new(), usize::MAX))
            .collect();
        for (j, delta) in own.into_iter().enumerate() {
            for (i, node) in self.nodes.iter().enumerate() {
                if i != j {
                    node.shared().registry.apply(delta.clone(), T0);
                }
            }
        }
        for node in &self.nodes {
            node.check_warmup();
            let _ = node.shared().local_writes.notified().now_or_never();
        }
    }

    /// Host `h` heartbeats to its home node at `now`.
    fn beat(&mut self, h: usize, now: Micros, may_change: bool) {
        if may_change && self.rng.below(1_000_000) < self.change_per_million {
            self.revisions[h] += 1;
        }
        let mut reg = self.template.clone();
        reg.revision = Revision::parse(&format!("{:040x}", self.revisions[h])).unwrap();
        let home = h % self.n();
        let shared = self.nodes[home].shared();
        let hb = shared
            .registry
            .heartbeat(&self.services[h / PER_SERVICE], host_ip(h), &reg, now)
            .unwrap();
        if let Some(change) = hb.change {
            shared.publish(&[change]);
        }
    }

    /// Schedules a push for node `i` if its host lists changed (`NodeState::publish` poked it),
    /// as the node loop does.
    fn note_changed(&mut self, i: usize) {
        let now = self.now();
        if self.nodes[i]
            .shared()
            .local_writes
            .notified()
            .now_or_never()
            .is_some()
            && self.push_due[i].is_none()
        {
            self.push_due[i] = Some(now + TICK);
        }
    }

    fn index_of(&self, addr: &str) -> usize {
        addr.trim_start_matches("http://n")
            .trim_end_matches(":80")
            .parse()
            .unwrap()
    }

    async fn exchange(&mut self, i: usize, addr: &str, mode: Mode) {
        self.nodes[i].exchange(addr, mode).await;
        let j = self.index_of(addr);
        for k in [i, j] {
            self.see_probes(k);
            self.note_changed(k);
        }
    }

    /// Marks the pending probes node `k` now holds.
    fn see_probes(&mut self, k: usize) {
        let now = self.now();
        let registry = &self.nodes[k].shared().registry;
        let n = self.nodes.len();
        self.pending.retain(|&p| {
            let probe = &mut self.probes[p];
            if !probe.have[k] && registry.index(probe.service.as_str()) > 0 {
                probe.have[k] = true;
                probe.count += 1;
                if probe.count == n {
                    probe.converged = Some(now);
                    return false;
                }
            }
            true
        });
    }

    fn write_probe(&mut self) {
        let k = self.probes.len();
        let writer = self.rng.below(self.n() as u64) as usize;
        let service = ServiceName::parse(&format!("probe-{k}")).unwrap();
        let ip = IpAddr::from([192, 168, (k >> 8) as u8, k as u8]);
        let now = self.now();
        let shared = self.nodes[writer].shared();
        let hb = shared
            .registry
            .heartbeat(&service, ip, &self.template, now)
            .unwrap();
        shared.publish(hb.change.as_slice());
        let mut have = vec![false; self.n()];
        have[writer] = true;
        self.probes.push(Probe {
            service,
            written: now,
            have,
            count: 1,
            converged: None,
        });
        self.pending.push(k);
        self.note_changed(writer);
    }

    /// One tick: heartbeats, pushes due, rounds due, sweeps due; then the clock moves on.
    async fn tick(&mut self, probe: bool) {
        let now = self.now();
        let since = now - T0;
        // Hosts are spread evenly over the heartbeat period: host h beats at h × period / H.
        let h_count = self.hosts as u128;
        let in_period = (since % HEARTBEAT) as u128;
        let first = (in_period * h_count).div_ceil(HEARTBEAT as u128) as usize;
        let last = ((in_period + TICK as u128) * h_count).div_ceil(HEARTBEAT as u128) as usize;
        for h in first..last.min(self.hosts) {
            self.beat(h, now, true);
        }
        if probe && since.is_multiple_of(self.probe_every) {
            self.write_probe();
        }
        for i in 0..self.n() {
            self.note_changed(i);
        }
        for i in 0..self.n() {
            if self.push_due[i].is_some_and(|at| at <= now) {
                self.push_due[i] = None;
                for addr in self.nodes[i].push_targets() {
                    self.exchange(i, &addr, Mode::Push).await;
                }
            }
        }
        for i in 0..self.n() {
            if since % INTERVAL == self.round_phase[i] {
                for addr in self.nodes[i].round_targets() {
                    self.exchange(i, &addr, Mode::Round).await;
                }
                self.nodes[i].check_warmup();
            }
            if since % SWEEP == self.round_phase[i] % SWEEP {
                let shared = self.nodes[i].shared();
                let report = shared.registry.sweep(now);
                shared.publish(&report.changes);
            }
        }
        self.time.fetch_add(TICK, Ordering::Relaxed);
    }

    /// Runs `secs` virtual seconds; false when the wall cap struck first.
    async fn run(&mut self, secs: u64, probe: bool, deadline: Instant) -> bool {
        let ticks = secs * SECOND / TICK;
        for t in 0..ticks {
            // The last 10 s of a measured window write no probes: they have time to land.
            let probing = probe && (ticks - t) * TICK > 10 * SECOND;
            self.tick(probing).await;
            if t % 200 == 0 && Instant::now() > deadline {
                return false;
            }
        }
        true
    }

    fn traffic(&self) -> (u64, u64, u64) {
        self.addrs
            .iter()
            .map(|a| self.net.traffic(a))
            .fold((0, 0, 0), |(s, r, m), t| {
                (s + t.sent, r + t.received, m + t.messages)
            })
    }

    /// Whether every node's digest covers `targets` (origin, seq).
    fn covers(&self, targets: &[(Arc<Origin>, u64)]) -> bool {
        self.nodes.iter().all(|node| {
            let digest = node.shared().registry.digest();
            targets
                .iter()
                .all(|(o, seq)| digest.get(o).is_some_and(|s| s >= seq))
        })
    }

    /// Cuts the last 20% of the nodes (at least one) off from the others.
    fn partition(&self) {
        let n = self.n();
        let cut = (n / 5).max(1);
        for a in &self.addrs[n - cut..] {
            for b in &self.addrs[..n - cut] {
                self.net.cut(a, b);
            }
        }
    }
}

/// One cluster size through every loss rate.
async fn cluster(args: &ScaleArgs, n: usize, hosts: usize) -> Vec<Cell> {
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs(args.wall_cap);
    let mut sim = Sim::new(n, hosts, args);
    sim.prehistory();
    eprintln!(
        "[{n} nodes, {hosts} hosts] prehistory written in {:.1} s; warming up",
        started.elapsed().as_secs_f64()
    );
    let mut cells: Vec<Cell> = args
        .loss
        .iter()
        .map(|&loss| Cell {
            nodes: n,
            hosts,
            loss,
            ..Cell::default()
        })
        .collect();
    if !sim.run(args.warmup, false, deadline).await {
        return cells;
    }
    let held: Vec<usize> = sim
        .nodes
        .iter()
        .map(|x| x.shared().registry.host_count())
        .collect();
    eprintln!(
        "[{n} nodes] warm after {:.1} s wall; hosts held per node: min {} max {}",
        started.elapsed().as_secs_f64(),
        held.iter().min().unwrap(),
        held.iter().max().unwrap()
    );
    for (li, cell) in cells.iter_mut().enumerate() {
        let cell_started = Instant::now();
        sim.net.set_loss(cell.loss, args.seed + li as u64);
        if !sim.run(args.settle, false, deadline).await {
            break;
        }
        let before = sim.traffic();
        let first_probe = sim.probes.len();
        let measure_started = Instant::now();
        if !sim.run(args.measure, true, deadline).await {
            break;
        }
        cell.cpu = measure_started.elapsed().as_secs_f64() / args.measure as f64 / n as f64;
        let after = sim.traffic();
        let per = |x: u64| x as f64 / n as f64 / args.measure as f64;
        cell.bytes = per(after.0 - before.0) + per(after.1 - before.1);
        cell.messages = per(after.2 - before.2);
        let probes = &sim.probes[first_probe..];
        let mut times: Vec<f64> = probes
            .iter()
            .filter_map(|p| p.converged.map(|c| (c - p.written) as f64 / SECOND as f64))
            .collect();
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        cell.probes = probes.len();
        cell.converged = times.len();
        let percentile = |p| {
            if times.is_empty() {
                f64::NAN
            } else {
                super::percentile(&times, p)
            }
        };
        cell.median = percentile(0.5);
        cell.p99 = percentile(0.99);
        cell.max = times.last().copied().unwrap_or(f64::NAN);
        sim.pending.clear();
        cell.ran = true;
        cell.wall = cell_started.elapsed().as_secs_f64();
        if args.partition == 0 {
            eprintln!("[{n} nodes] {}", row(cell));
            continue;
        }
        sim.partition();
        if !sim.run(args.partition, false, deadline).await {
            break;
        }
        sim.net.heal_all();
        let targets: Vec<(Arc<Origin>, u64)> = sim
            .nodes
            .iter()
            .map(|x| {
                let registry = &x.shared().registry;
                (registry.origin().clone(), registry.own_seq())
            })
            .collect();
        let healed_from = sim.now();
        let mut ran = 0;
        while ran < args.heal_cap * SECOND {
            if sim.covers(&targets) {
                cell.heal = Some((sim.now() - healed_from) as f64 / SECOND as f64);
                break;
            }
            for _ in 0..HEAL_CHECK / TICK {
                sim.tick(false).await;
            }
            ran += HEAL_CHECK;
        }
        if cell.heal.is_none() {
            cell.heal = Some(if sim.covers(&targets) {
                (sim.now() - healed_from) as f64 / SECOND as f64
            } else {
                f64::INFINITY
            });
        }
        cell.wall = cell_started.elapsed().as_secs_f64();
        eprintln!("[{n} nodes] {}", row(cell));
    }
    eprintln!(
        "[{n} nodes, {hosts} hosts] done in {:.0} s wall",
        started.elapsed().as_secs_f64()
    );
    cells
}

impl Cell {
    /// One line of `--results`: the fields, space-separated (`-` for no heal).
    fn line(&self) -> String {
        let heal = self.heal.map_or("-".into(), |h| h.to_string());
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {heal} {} {}",
            self.nodes,
            self.hosts,
            self.loss,
            self.median,
            self.p99,
            self.max,
            self.probes,
            self.converged,
            self.bytes,
            self.messages,
            self.cpu,
            self.wall,
            self.ran
        )
    }

    fn parse(line: &str) -> Option<Cell> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        Some(Cell {
            nodes: f.first()?.parse().ok()?,
            hosts: f.get(1)?.parse().ok()?,
            loss: num(2)?,
            median: num(3)?,
            p99: num(4)?,
            max: num(5)?,
            probes: f.get(6)?.parse().ok()?,
            converged: f.get(7)?.parse().ok()?,
            bytes: num(8)?,
            messages: num(9)?,
            cpu: num(10)?,
            heal: num(11),
            wall: num(12)?,
            ran: f.get(13)?.parse().ok()?,
        })
    }
}

fn fmt_secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// The markdown row of a cell.
fn row(c: &Cell) -> String {
    if !c.ran {
        return format!(
            "| {} | {} | {:.0}% | not run (wall cap) | | | | | |",
            c.nodes,
            c.hosts,
            c.loss * 100.0
        );
    }
    let heal = match c.heal {
        Some(s) if s.is_finite() => {
            let rounds = (s * SECOND as f64 / INTERVAL as f64).ceil();
            let plural = if rounds == 1.0 { "" } else { "s" };
            format!("{s:.1} s ({rounds:.0} round{plural})")
        }
        Some(_) => "not within the cap".into(),
        None => "-".into(),
    };
    format!(
        "| {} | {} | {:.0}% | {} | {} | {}/{} | {:.1} KB/s | {:.0} | {} | {:.1} ms |",
        c.nodes,
        c.hosts,
        c.loss * 100.0,
        fmt_secs(c.median),
        fmt_secs(c.p99),
        c.converged,
        c.probes,
        c.bytes / 1000.0,
        c.messages,
        heal,
        c.cpu * 1000.0
    )
}

pub async fn run(args: ScaleArgs) {
    let mut cells = Vec::new();
    let started = Instant::now();
    for spec in args.clusters.iter().filter(|s| !s.is_empty()) {
        let (n, hosts) = spec
            .split_once(':')
            .and_then(|(n, h)| Some((n.parse().ok()?, h.parse().ok()?)))
            .expect("--clusters takes NODES:HOSTS");
        let measured = cluster(&args, n, hosts).await;
        if let Some(path) = &args.results {
            let lines: String = measured.iter().map(|c| c.line() + "\n").collect();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open --results");
            std::io::Write::write_all(&mut file, lines.as_bytes()).expect("write --results");
        }
        cells.extend(measured);
    }
    if let Some(path) = &args.results {
        cells = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(Cell::parse)
            .collect();
    }
    cells.sort_by(|a, b| {
        (a.hosts, a.nodes)
            .cmp(&(b.hosts, b.nodes))
            .then(a.loss.total_cmp(&b.loss))
    });
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| nodes | hosts held | loss | convergence median | p99 | probes converged | payload bytes/node/s (sent+received) | messages sent/node/s | heal after {} s partition of 20% | CPU/node/s |",
        args.partition
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|");
    for c in &cells {
        let _ = writeln!(table, "{}", row(c));
    }
    println!("{table}");
    println!("total wall time {:.0} s", started.elapsed().as_secs_f64());
    let svg = plot(&cells, &args.loss, args.partition);
    match std::fs::write(&args.svg, svg) {
        Ok(()) => println!("plot written to {}", args.svg),
        Err(e) => eprintln!("cannot write {}: {e}", args.svg),
    }
}

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// One panel: log-scale x (cluster size), linear y from 0; a `<g>` placed at `x0`.
fn panel(x0: f64, title: &str, y_label: &str, xs: &[f64], series: &[Series]) -> String {
    let (w, h, left, top, bottom) = (330.0, 300.0, 55.0, 30.0, 45.0);
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let (xmin, xmax) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).ln(),
        xs.iter().copied().fold(0.0, f64::max).ln(),
    );
    let span = (xmax - xmin).max(1e-9);
    let px = |x: f64| left + (x.ln() - xmin) / span * (w - left - 15.0);
    let py = |y: f64| top + (1.0 - y / ymax) * (h - top - bottom);
    let mut g = format!(
        "<g transform=\"translate({x0},0)\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        g,
        "<text x=\"{}\" y=\"16\" font-size=\"13\" text-anchor=\"middle\">{title}</text>",
        w / 2.0
    );
    let _ = writeln!(
        g,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        py(0.0),
        w - 15.0,
        py(0.0)
    );
    let _ = writeln!(
        g,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        py(0.0)
    );
    for &x in xs {
        let _ = writeln!(
            g,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x}</text>",
            px(x),
            py(0.0) + 14.0
        );
    }
    let _ = writeln!(
        g,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">nodes (log scale)</text>",
        (left + w) / 2.0,
        h - 8.0
    );
    for k in 0..=4 {
        let y = ymax / 1.1 * k as f64 / 4.0;
        let label = match ymax {
            m if m < 0.1 => format!("{y:.3}"),
            m if m < 10.0 => format!("{y:.2}"),
            _ => format!("{y:.0}"),
        };
        let _ = writeln!(
            g,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            left - 4.0,
            py(y) + 4.0
        );
        let _ = writeln!(
            g,
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            py(y),
            w - 15.0,
            py(y)
        );
    }
    let _ = writeln!(
        g,
        "<text transform=\"translate(12,{}) rotate(-90)\" text-anchor=\"middle\">{y_label}</text>",
        (top + h - bottom) / 2.0
    );
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if s.dashed {
            " stroke-dasharray=\"5,4\""
        } else {
            ""
        };
        let _ = writeln!(
            g,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            s.color,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap();
            let _ = writeln!(
                g,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{}\"/>",
                s.color
            );
        }
        let ly = top + 4.0 + 13.0 * k as f64;
        let _ = writeln!(g, "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/>", left + 8.0, left + 26.0, s.color);
        let _ = writeln!(
            g,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            left + 30.0,
            ly + 4.0,
            s.label
        );
    }
    g.push_str("</g>\n");
    g
}

/// Three panels: convergence (median, p99), bytes per node per second (for the fleet), heal.
fn plot(cells: &[Cell], losses: &[f64], partition: u64) -> String {
    // One point per cluster size and loss: the smallest host count run at that size (the
    // sweep; larger ones at the same size show what the hosts held cost).
    let mut best: Vec<&Cell> = Vec::new();
    for p in cells.iter().filter(|p| p.ran) {
        match best
            .iter_mut()
            .find(|b| b.nodes == p.nodes && b.loss == p.loss)
        {
            Some(b) if b.hosts <= p.hosts => {}
            Some(b) => *b = p,
            None => best.push(p),
        }
    }
    let mut xs: Vec<f64> = best.iter().map(|p| p.nodes as f64).collect();
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs.dedup();
    let series = |f: &dyn Fn(&Cell) -> f64, dashed: bool, what: &str| {
        losses
            .iter()
            .enumerate()
            .map(|(k, &loss)| {
                let mut pts: Vec<(f64, f64)> = best
                    .iter()
                    .filter(|p| p.loss == loss)
                    .map(|p| (p.nodes as f64, f(p)))
                    .collect();
                pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                Series {
                    label: format!("{what}loss {:.0}%", loss * 100.0),
                    color: COLORS[k % COLORS.len()],
                    dashed,
                    points: pts,
                }
            })
            .collect::<Vec<_>>()
    };
    let mut conv = series(&|p| p.p99, false, "p99, ");
    conv.extend(series(&|p| p.median, true, "median, "));
    let bytes = series(&|p| p.bytes / 1000.0, false, "");
    let heal = series(&|p| p.heal.unwrap_or(f64::NAN), false, "");
    let mut svg = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"320\" viewBox=\"0 0 1000 320\">\n<rect width=\"1000\" height=\"320\" fill=\"white\"/>\n",
    );
    svg += &panel(0.0, "convergence of one write", "seconds", &xs, &conv);
    svg += &panel(
        335.0,
        "gossip payload per node",
        "KB/s, sent + received",
        &xs,
        &bytes,
    );
    svg += &panel(
        670.0,
        &format!("heal after a {partition} s partition of 20%"),
        "seconds",
        &xs,
        &heal,
    );
    svg.push_str("</svg>\n");
    svg
}
