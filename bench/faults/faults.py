"""The fault harness: starts a cluster of real processes (cluster.py), plays the faults of
a profile one after the other while sampling every consumer (measure.py), then writes the
table and the timelines (report.py) and applies the CI checks.

Run it through run.sh, which makes the network namespaces, bounds the run in time and
cleans up; docs/faults.md explains every fault and figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import LIBFAKETIME, Cluster, Fleet  # noqa: E402
from measure import Clock, NodeSample, Sampler, Truth, Window, analyse, guard_stats  # noqa: E402
import report  # noqa: E402


@dataclass
class Profile:
    nodes: int
    agents: int
    fault: float          # seconds most faults last
    freeze: float         # a node frozen
    partition: float      # a node cut off
    all_down: float       # every node down
    recover: float        # quiet time after each fault, inside its window
    skew: str             # the clock offset of the skewed node (libfaketime syntax)


PROFILES = {
    # CI: about 3 minutes on two cores.
    "short": Profile(nodes=3, agents=60, fault=15, freeze=15, partition=15, all_down=15,
                     recover=7, skew="+10s"),
    # The benchmark of issue 14: 5 nodes, 300 agents, a 60 s freeze, 5 minutes all down.
    "full": Profile(nodes=5, agents=300, fault=30, freeze=60, partition=60, all_down=300,
                    recover=20, skew="+20s"),
}

EXPIRY_GUARD = 0.5  # the nodes' --expiry-guard (their default), which the guard check reads
NODE_FLAGS = ["--host-ttl", "6s", "--min-ttl", "1s", "--gossip-interval", "200ms",
              "--max-stale", "30s", "--warmup", "4s", "--expiry-guard", str(EXPIRY_GUARD)]
AGENT_INTERVAL = "2s"
WATCHER_MAX_BACKOFF = 30.0  # discovery-client's WatcherConfig::max_backoff default
CHECKS = ("empty", "resurrect", "guard")


class Run:
    def __init__(self, args, profile: Profile) -> None:
        self.args = args
        self.p = profile
        self.clock = Clock()
        self.truth = Truth(self.clock)
        self.rng = random.Random(14)
        self.windows: list[Window] = []
        self.cluster = Cluster(binary=args.binary, work=args.work, nodes_n=profile.nodes,
                               netns_prefix=args.netns or None, node_flags=NODE_FLAGS,
                               agent_interval=AGENT_INTERVAL)
        self.cluster.fleet = Fleet()
        self.consumers = []
        self.sampler: Sampler | None = None

    def log(self, msg: str) -> None:
        print(f"[faults {self.clock.now():6.1f}s] {msg}", flush=True)

    # ---- the fleet ---------------------------------------------------------------------

    def live_agents(self, home: int | None = None) -> list:
        return [a for a in self.cluster.agents.values()
                if a.state == "live" and (home is None or a.home == home)]

    def add_agent(self, home: int) -> None:
        port = self.cluster.fleet.open()
        self.truth.set(port, "live", "start")
        agent = self.cluster.start_agent(port, home)
        agent.state = "live"

    def kill_agent(self, agent, how: str) -> None:
        """how: "kill" (SIGKILL, the host dies) or "term" (SIGTERM, it deregisters)."""
        self.truth.set(agent.port, "dead", how)
        agent.state = "dead"
        self.cluster.signal_agent(agent, signal.SIGKILL if how == "kill" else signal.SIGTERM)
        self.cluster.fleet.shut(agent.port)

    def churn(self, home: int | None) -> None:
        """Changes during a node fault, so that blindness and lag show: a few hosts killed,
        a few deregistered, a few new ones (asking the faulted node first)."""
        k = max(1, self.p.agents // 30)
        pool = self.live_agents(home) or self.live_agents()
        victims = self.rng.sample(pool, min(2 * k, len(pool)))
        for agent in victims[:k]:
            self.kill_agent(agent, "kill")
        for agent in victims[k:]:
            self.kill_agent(agent, "term")
        for _ in range(k):
            self.add_agent(home if home is not None else self.rng.randrange(self.p.nodes))
        self.log(f"churn: {k} killed, {len(victims) - k} deregistered, {k} started")

    # ---- faults ------------------------------------------------------------------------

    def window(self, name: str, duration: float, start, undo, churn_home=None,
               churn: bool = True, after: float = 0.0) -> None:
        """Plays one fault: start, churn, wait, undo, then `recover` (+ `after`) seconds of
        quiet that still count as this fault's window."""
        self.log(f"fault {name}: begins ({duration:.0f}s)")
        begin = self.clock.now()
        start()
        if churn:
            time.sleep(min(2.0, duration / 2))
            self.churn(churn_home)
        time.sleep(max(0.0, begin + duration - self.clock.now()))
        end = self.clock.now()
        undo()
        self.log(f"fault {name}: undone; recovering {self.p.recover + after:.0f}s")
        time.sleep(self.p.recover + after)
        self.windows.append(Window(name, begin, end, self.clock.now()))

    def steady(self) -> None:
        begin = self.clock.now()
        time.sleep(5)
        self.windows.append(Window("steady (no fault)", begin, begin, self.clock.now()))

    def node_kill(self) -> None:
        node = self.cluster.nodes[0]
        self.window("node killed, restarted", self.p.fault,
                    lambda: self.cluster.stop_node(node), lambda: self.cluster.start_node(node),
                    churn_home=node.index)

    def node_freeze(self) -> None:
        node = self.cluster.nodes[1 % self.p.nodes]
        self.window(f"node frozen {self.p.freeze:.0f}s", self.p.freeze,
                    lambda: self.cluster.signal_node(node, signal.SIGSTOP),
                    lambda: self.cluster.signal_node(node, signal.SIGCONT),
                    churn_home=node.index)

    def partition(self) -> None:
        if not self.args.netns:
            self.log("fault partition: skipped (no network namespaces)")
            return
        node = self.cluster.nodes[2 % self.p.nodes]
        self.window("one node partitioned", self.p.partition,
                    lambda: self.cluster.set_link(node, False),
                    lambda: self.cluster.set_link(node, True), churn_home=node.index)

    def clock_skew(self) -> None:
        # After the clock comes back, the node's hybrid logical clock stays ahead until the
        # wall clock catches up with the timestamps it issued: that time belongs to this
        # fault, not to the next one.
        if self.skewed is None:
            self.log("fault clock skew: skipped (libfaketime not installed: apt-get install faketime)")
            return
        node = self.cluster.nodes[self.skewed]
        offset = float(self.p.skew.strip("+-s"))
        self.window(f"clock skewed {self.p.skew}", self.p.fault,
                    lambda: self.cluster.set_skew(node, self.p.skew),
                    lambda: self.cluster.set_skew(node, "+0"), churn_home=node.index,
                    after=offset if self.p.skew.startswith("+") else 0.0)

    def kill_third(self) -> None:
        killed = []

        def start():
            pool = self.live_agents()
            killed.extend(self.rng.sample(pool, len(pool) // 3))
            for agent in killed:
                self.kill_agent(agent, "kill")

        def undo():
            # Replacements, as an autoscaler would start: new hosts on new ports.
            for agent in killed:
                self.add_agent(agent.home)

        self.window("a third of agents killed", self.p.fault, start, undo, churn=False)

    def silence_two_thirds(self) -> None:
        silenced = []

        def start():
            pool = self.live_agents()
            silenced.extend(self.rng.sample(pool, 2 * len(pool) // 3))
            for agent in silenced:
                self.truth.set(agent.port, "silent", "stop")
                agent.state = "silent"
                self.cluster.signal_agent(agent, signal.SIGSTOP)

        def undo():
            for agent in silenced:
                self.cluster.signal_agent(agent, signal.SIGCONT)
                self.truth.set(agent.port, "live", "cont")
                agent.state = "live"

        self.window("two thirds of agents silenced", self.p.fault, start, undo, churn=False)
        self.guard_window = self.windows[-1]

    def rolling_deploy(self) -> None:
        def start():
            old = self.live_agents()
            batches = 3
            for b in range(batches):
                batch = old[b::batches]
                for agent in batch:
                    self.add_agent(agent.home)
                time.sleep(1.0)
                for agent in batch:
                    self.kill_agent(agent, "term")
                self.log(f"deploy: batch {b + 1}/{batches} replaced ({len(batch)} hosts)")
                if b < batches - 1:
                    time.sleep(max(0.0, self.p.fault / batches - 1.0))

        self.window("rolling deploy of the fleet", self.p.fault, start, lambda: None,
                    churn=False)

    def all_down(self) -> None:
        def start():
            for node in self.cluster.nodes:
                self.cluster.stop_node(node)

        def undo():
            for node in self.cluster.nodes:
                self.cluster.start_node(node)

        # A watcher's backoff doubles while no node answers, up to 30 s: its next try may
        # come up to min(outage, 30 s) after the nodes are back. The window waits that out,
        # so that what the consumers hold after the outage is measured too.
        self.window(f"every node down {self.p.all_down:.0f}s", self.p.all_down, start, undo,
                    after=min(self.p.all_down, WATCHER_MAX_BACKOFF))

    # ---- the run -----------------------------------------------------------------------

    def setup(self) -> None:
        c = self.cluster
        self.skewed = self.p.nodes - 1 if os.path.exists(LIBFAKETIME) else None
        c.plan_nodes(skewed=self.skewed)
        for node in c.nodes:
            c.start_node(node)
        if not c.wait_ready(c.nodes, 30):
            raise SystemExit("setup: the nodes did not become ready in 30 s")
        self.log(f"{self.p.nodes} nodes ready ({'netns' if self.args.netns else 'loopback'})")
        spacing = 2.0 / self.p.agents  # heartbeats spread over one interval, as in a fleet
        for i in range(self.p.agents):
            self.add_agent(i % self.p.nodes)
            time.sleep(spacing)
        self.consumers = [c.start_watcher(n.index) for n in c.nodes]
        self.consumers.append(c.start_eds(self.clock.now))
        if not self.args.no_haproxy:
            self.consumers.append(c.start_haproxy())
        self.sampler = Sampler(self.clock, self.consumers, c.nodes)
        deadline = time.monotonic() + 40
        want = frozenset(a.port for a in self.live_agents())
        while time.monotonic() < deadline:
            if all(x.current() is not None and want <= x.current() for x in self.consumers):
                break
            time.sleep(0.2)
        else:
            lagging = [x.name for x in self.consumers
                       if x.current() is None or not want <= x.current()]
            raise SystemExit(f"setup: consumers never listed every agent: {lagging}")
        self.log(f"{self.p.agents} agents listed by {len(self.consumers)} consumers")

    def play(self) -> None:
        only = set(self.args.only.split(",")) if self.args.only else None
        plan = [("steady", self.steady), ("kill", self.node_kill),
                ("freeze", self.node_freeze), ("partition", self.partition),
                ("skew", self.clock_skew), ("kill-third", self.kill_third),
                ("silence", self.silence_two_thirds), ("deploy", self.rolling_deploy),
                ("all-down", self.all_down)]
        self.guard_window = None
        for key, fault in plan:
            if only is None or key in only or key == "steady":
                fault()

    def close(self) -> None:
        if self.sampler:
            self.sampler.close()
        for x in self.consumers:
            x.close()
        self.cluster.close()

    # ---- results -----------------------------------------------------------------------

    def dump(self) -> None:
        """Everything measured, as JSON (lists only where they changed), for --replay."""
        samples = {}
        for name, ss in self.sampler.samples.items():
            rows, prev = [], object()
            for t, listed in ss:
                if listed != prev:
                    rows.append([round(t, 3), None if listed is None else sorted(listed)])
                    prev = listed
                else:
                    rows.append([round(t, 3)])
            samples[name] = rows
        data = {"profile": self.args.profile, "nodes": self.p.nodes, "agents": self.p.agents,
                "consumers": len(self.consumers), "elapsed": self.clock.now(),
                "truth": self.truth.events, "samples": samples,
                "node_samples": {n: [vars(x) for x in ss]
                                 for n, ss in self.sampler.node_samples.items()},
                "windows": [vars(w) for w in self.windows],
                "guard_window": self.windows.index(self.guard_window)
                if self.guard_window else None}
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "run.json"), "w") as f:
            json.dump(data, f)

    def results(self) -> int:
        analysed = {name: analyse(self.truth, samples)
                    for name, samples in self.sampler.samples.items()}
        out = self.args.out
        os.makedirs(out, exist_ok=True)
        table = report.table(self.windows, analysed)
        guards = report.guard_table(self.windows, self.sampler.node_samples)
        for w in self.windows:
            slug = "".join(ch if ch.isalnum() else "-" for ch in w.name.lower()).strip("-")
            while "--" in slug:
                slug = slug.replace("--", "-")
            with open(os.path.join(out, f"{slug}.svg"), "w") as f:
                f.write(report.timeline(w, analysed, self.sampler.node_samples))

        failures: dict[str, list[str]] = {k: [] for k in CHECKS}
        start = self.windows[0].start if self.windows else 0.0
        for name, (series, eps) in analysed.items():
            empty = [t for t, e, live in zip(series.t, series.empty, series.live)
                     if e and live > 0 and t >= start]
            if empty:
                failures["empty"].append(f"{name}: {len(empty)} samples with an empty list "
                                         f"while live hosts existed (first at {empty[0]:.1f}s)")
            back = [(p, t) for p, t in eps.back if t >= start]
            if back:
                failures["resurrect"].append(
                    f"{name}: {len(back)} times a dead host came back "
                    f"(first: port {back[0][0]} at {back[0][1]:.1f}s)")
        if self.guard_window:
            # The guard must engage, and in time: a node may drop up to --expiry-guard (0.5)
            # of the hosts it held before it holds the rest, not all of them; 0.1 of slack
            # for sweep timing.
            floor = 1.0 - EXPIRY_GUARD - 0.1
            for node, s in guard_stats(self.sampler.node_samples, self.guard_window).items():
                if not s["answered"]:
                    continue
                if not s["engaged"]:
                    failures["guard"].append(
                        f"{node}: the guard never engaged while two thirds of the agents were "
                        f"silent (hosts fell from {s['before']} to {s['min_hosts']}, stale stayed 0)")
                elif s["min_hosts_until_engaged"] < floor * s["before"]:
                    failures["guard"].append(
                        f"{node}: the guard engaged too late: hosts fell from {s['before']} to "
                        f"{s['min_hosts_until_engaged']} (below {floor:.0%}) before it held "
                        f"{s['max_stale']}")
        expect = {x for x in os.environ.get("FAULTS_EXPECT_FAIL", "").split(",") if x}
        lines = [f"# Fault run: profile {self.args.profile}, {self.p.nodes} nodes, "
                 f"{self.p.agents} agents, {len(self.consumers)} consumers", "",
                 report.summary(self.windows, analysed, self.sampler.node_samples), "",
                 "Per consumer:", "", table, "", "Expiry guard per node (engaged at any point / most stale hosts / "
                 "fewest hosts held):", "", guards, "", "Checks:", ""]
        failed = False
        for check in CHECKS:
            if check == "guard" and not self.guard_window:
                lines.append(f"- {check}: not run (no silence fault in this run)")
                continue
            if not failures[check]:
                lines.append(f"- {check}: pass")
                continue
            verdict = "FAIL (expected: FAULTS_EXPECT_FAIL)" if check in expect else "FAIL"
            failed |= check not in expect
            lines.append(f"- {check}: {verdict}")
            lines.extend(f"  - {msg}" for msg in failures[check])
        lines.append("")
        lines.append(f"Run time {self.elapsed:.0f}s; timelines in {out}/*.svg")
        text = "\n".join(lines)
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write(text + "\n")
        print(text, flush=True)
        return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="short")
    parser.add_argument("--binary", required=True)
    parser.add_argument("--work", required=True, help="scratch folder for logs and sockets")
    parser.add_argument("--out", required=True, help="where report.md and the SVGs go")
    parser.add_argument("--netns", default="", help="namespace prefix run.sh made ('' = loopback)")
    parser.add_argument("--max-seconds", type=int, default=600)
    parser.add_argument("--only", default="", help="comma-separated faults to play")
    parser.add_argument("--no-haproxy", action="store_true")
    parser.add_argument("--replay", help="recompute the report from a run.json")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if args.replay:
        return replay(args, profile)
    for key in ("nodes", "agents"):
        env = os.environ.get(f"FAULTS_{key.upper()}")
        if env:
            setattr(profile, key, int(env))

    def stop(signum, _frame):
        raise SystemExit(f"faults: stopped by signal {signum} (watchdog or Ctrl-C)")

    # A listening socket per host, hundreds of them: lift the soft descriptor limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(args.max_seconds)  # the watchdog: the run is bounded whatever hangs
    run = Run(args, profile)
    try:
        run.setup()
        run.play()
    finally:
        run.close()
    signal.alarm(0)
    run.elapsed = run.clock.now()
    run.dump()
    return run.results()


def replay(args, profile: Profile) -> int:
    """The report again from a saved run.json, without running anything."""
    with open(args.replay) as f:
        data = json.load(f)
    profile.nodes, profile.agents = data["nodes"], data["agents"]
    args.profile = data["profile"]
    run = Run.__new__(Run)
    run.args, run.p, run.elapsed = args, profile, data["elapsed"]
    run.truth = Truth(Clock())
    run.truth.events = [tuple(e) for e in data["truth"]]
    run.windows = [Window(**w) for w in data["windows"]]
    run.guard_window = (run.windows[data["guard_window"]]
                        if data["guard_window"] is not None else None)
    run.consumers = [None] * data["consumers"]

    class Saved:
        pass

    run.sampler = Saved()
    run.sampler.samples = {}
    for name, rows in data["samples"].items():
        ss, cur = [], None
        for row in rows:
            if len(row) == 2:
                cur = None if row[1] is None else frozenset(row[1])
            ss.append((row[0], cur))
        run.sampler.samples[name] = ss
    run.sampler.node_samples = {n: [NodeSample(**x) for x in ss]
                                for n, ss in data["node_samples"].items()}
    return run.results()


if __name__ == "__main__":
    sys.exit(main())
