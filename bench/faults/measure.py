"""What happened, against what was true: the ground truth the harness keeps as it acts
(which hosts are live, silent or dead, since when), the samples it takes (every consumer's
list every 100 ms, every node's guard state every 500 ms), and the figures computed from
them per fault window. No processes, no IO beyond the node probes.

Definitions (docs/faults.md has them with their reasons):
- a host is *live* while its agent heartbeats, *silent* while its agent is stopped
  (SIGSTOP: the host still serves, it only stopped telling the registry), *dead* from the
  moment its agent is killed (SIGKILL) or told to leave (SIGTERM: it deregisters);
- coverage: the share of samples whose list holds at least one live or silent host;
- empty: samples with an empty list while live or silent hosts exist;
- dead held: how long after its death a consumer still listed a killed host;
- deregistered held: the same for a host that deregistered (SIGTERM), the lag of a delete;
- missing: a live or silent host the consumer had listed in its current life but no
  longer lists; episodes and host-seconds;
- appear lag: from an agent's start until the consumer first lists it;
- back from the dead: a dead host that a consumer had stopped listing and lists again.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field

from cluster import http

LIVE = ("live", "silent")


class Clock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0


@dataclass
class Truth:
    """Every change of a host's state, in order: (t, port, state, how)."""
    clock: Clock
    events: list[tuple[float, int, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, port: int, state: str, how: str = "") -> None:
        with self.lock:
            self.events.append((self.clock.now(), port, state, how))


@dataclass
class NodeSample:
    t: float
    up: bool
    hosts: int
    stale: int
    engaged: bool


class Sampler:
    """Samples every consumer every `period` and every node every `node_period`."""

    def __init__(self, clock: Clock, consumers: list, nodes: list, period: float = 0.1,
                 node_period: float = 0.5) -> None:
        self.clock = clock
        self.consumers = consumers
        self.nodes = nodes
        self.period = period
        self.node_period = node_period
        self.samples: dict[str, list[tuple[float, frozenset | None]]] = {
            c.name: [] for c in consumers}
        self.node_samples: dict[str, list[NodeSample]] = {n.name: [] for n in nodes}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._consumers, daemon=True)]
        self.threads += [threading.Thread(target=self._node, args=(n,), daemon=True)
                         for n in nodes]
        for th in self.threads:
            th.start()

    def _consumers(self) -> None:
        next_t = time.monotonic()
        while not self.stop.is_set():
            t = self.clock.now()
            for c in self.consumers:
                self.samples[c.name].append((t, c.current()))
            next_t += self.period
            self.stop.wait(max(0.0, next_t - time.monotonic()))

    def _node(self, node) -> None:
        # One thread per node, short timeouts: a frozen node must not delay the others.
        while not self.stop.is_set():
            t = self.clock.now()
            status, _, body = http("GET", node.url + "/v1/services", timeout=0.4)
            hosts = stale = 0
            engaged = False
            up = status == 200
            if up:
                try:
                    for svc in json.loads(body).get("services", []):
                        hosts += svc.get("hosts", 0)
                        stale += svc.get("stale", 0)
                except ValueError:
                    up = False
                status, _, metrics = http("GET", node.url + "/metrics", timeout=0.4)
                m = re.search(rb"^discovery_expiry_guard_engaged(?:\{[^}]*\})? (\S+)",
                              metrics, re.M)
                engaged = bool(m and float(m.group(1)) > 0)
            self.node_samples[node.name].append(NodeSample(t, up, hosts, stale, engaged))
            self.stop.wait(self.node_period)

    def close(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=2)


@dataclass
class Series:
    """Per sample of one consumer: t, live hosts that exist, live hosts listed, dead hosts
    listed, live hosts missing, and whether the list was empty."""
    t: list[float] = field(default_factory=list)
    live: list[int] = field(default_factory=list)
    listed: list[int] = field(default_factory=list)
    dead_held: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    empty: list[bool] = field(default_factory=list)


@dataclass
class Episodes:
    held: list[tuple[int, float, float, str]] = field(default_factory=list)    # port, died, last listed, how
    missing: list[tuple[int, float, float]] = field(default_factory=list)      # port, from, to
    appear: list[tuple[int, float, float]] = field(default_factory=list)       # port, started, first listed
    back: list[tuple[int, float]] = field(default_factory=list)                # port, t
    never: list[tuple[int, float]] = field(default_factory=list)               # port, started: live, never listed


def analyse(truth: Truth, samples: list[tuple[float, frozenset | None]]) -> tuple[Series, Episodes]:
    """One pass over one consumer's samples, replaying the truth alongside."""
    events = sorted(truth.events)
    state: dict[int, str] = {}
    life_start: dict[int, float] = {}
    seen: set[int] = set()                  # listed at least once in its current life
    missing_since: dict[int, float] = {}
    death: dict[int, tuple[float, str]] = {}
    last_held: dict[int, float] = {}
    dead_present: set[int] = set()          # dead, not yet seen absent since death/return
    dead_absent: set[int] = set()
    live: set[int] = set()
    series, eps = Series(), Episodes()
    first_list_t = None
    prev_listed = None
    held_ports: list[int] = []
    changed = True
    i = 0
    for t, listed in samples:
        while i < len(events) and events[i][0] <= t:
            te, port, st, how = events[i]
            i += 1
            before = state.get(port, "dead")
            state[port] = st
            if st in LIVE and before == "dead":
                life_start[port] = te
                seen.discard(port)
                live.add(port)
                dead_present.discard(port)
                dead_absent.discard(port)
                if port in death and port in last_held:
                    eps.held.append((port, death[port][0], last_held.pop(port), death[port][1]))
                death.pop(port, None)
            elif st == "dead" and before in LIVE:
                live.discard(port)
                death[port] = (te, how)
                if port in missing_since:
                    eps.missing.append((port, missing_since.pop(port), te))
                if port in seen:
                    dead_present.add(port)
            changed = True
        if listed is None:
            continue
        if not changed and listed == prev_listed and series.t:
            # Nothing moved since the last sample: same figures (keeps long runs quick).
            for column in (series.live, series.listed, series.dead_held, series.missing,
                           series.empty):
                column.append(column[-1])
            series.t.append(t)
            for port in held_ports:
                last_held[port] = t
            continue
        changed = False
        prev_listed = listed
        if first_list_t is None:
            first_list_t = t
        for port in live:
            if port in listed:
                if port not in seen:
                    seen.add(port)
                    if life_start[port] > first_list_t:
                        eps.appear.append((port, life_start[port], t))
                if port in missing_since:
                    eps.missing.append((port, missing_since.pop(port), t))
            elif port in seen and port not in missing_since:
                missing_since[port] = t
        held = 0
        held_ports = []
        for port in listed:
            if port in live:
                continue
            held += 1
            if port in death:
                last_held[port] = t
                held_ports.append(port)
            if port in dead_absent:
                eps.back.append((port, t))
                dead_absent.discard(port)
                dead_present.add(port)
        for port in list(dead_present):
            if port not in listed:
                dead_present.discard(port)
                dead_absent.add(port)
                last_held.setdefault(port, death[port][0] if port in death else t)
        series.t.append(t)
        series.live.append(len(live))
        series.listed.append(sum(1 for p in listed if p in live))
        series.dead_held.append(held)
        series.missing.append(len(missing_since))
        series.empty.append(len(listed) == 0)
    end = samples[-1][0] if samples else 0.0
    for port in live:
        if port not in seen and first_list_t is not None and life_start[port] > first_list_t:
            eps.never.append((port, life_start[port]))
    for port, since in missing_since.items():
        eps.missing.append((port, since, end))
    for port, (died, how) in death.items():
        eps.held.append((port, died, last_held.get(port, died), how))
    return series, eps


@dataclass
class Window:
    name: str
    start: float      # the fault begins
    end: float        # the fault is undone
    until: float      # the next window begins (recovery included)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def window_stats(series: Series, eps: Episodes, w: Window) -> dict:
    idx = [k for k, t in enumerate(series.t) if w.start <= t < w.until]
    n = len(idx)
    covered = sum(1 for k in idx if series.listed[k] > 0)
    empty = sum(1 for k in idx if series.empty[k] and series.live[k] > 0)
    uncovered = sum(1 for k in idx if series.listed[k] == 0 and series.live[k] > 0)
    inside = lambda t: w.start <= t < w.until
    killed = [last - died for _, died, last, how in eps.held if how == "kill" and inside(died)]
    dereg = [last - died for _, died, last, how in eps.held if how == "term" and inside(died)]
    missing = [(max(a, w.start), min(b, w.until)) for _, a, b in eps.missing
               if a < w.until and b > w.start]
    appear = [seen - start for _, start, seen in eps.appear if inside(start)]
    return {
        "samples": n,
        "coverage": 100.0 * covered / n if n else 100.0,
        "empty": empty,
        "uncovered": uncovered,
        "dead_held_max": max(killed, default=0.0),
        "dereg_held_max": max(dereg, default=0.0),
        "missing_max": max((b - a for a, b in missing), default=0.0),
        "missing_host_s": sum(b - a for a, b in missing),
        "appear_p50": _pct(appear, 0.5),
        "appear_max": max(appear, default=0.0),
        "never": sum(1 for _, start in eps.never if inside(start)),
        "back": sum(1 for _, t in eps.back if inside(t)),
    }


def guard_stats(node_samples: dict[str, list[NodeSample]], w: Window) -> dict[str, dict]:
    out = {}
    for name, samples in node_samples.items():
        inside = [s for s in samples if w.start <= s.t < w.until]
        before = [s.hosts for s in samples if s.t < w.start and s.up]
        # Up to the first sample with the guard engaged: what the node let go before the
        # guard held the rest (later falls are --max-stale running out, by design).
        until_engaged = []
        for s in inside:
            until_engaged.append(s)
            if s.engaged or s.stale > 0:
                break
        out[name] = {
            "before": before[-1] if before else 0,
            "answered": sum(1 for s in inside if s.up),
            "engaged": any(s.engaged or s.stale > 0 for s in inside),
            "max_stale": max((s.stale for s in inside), default=0),
            "min_hosts": min((s.hosts for s in inside if s.up), default=0),
            "min_hosts_until_engaged": min((s.hosts for s in until_engaged if s.up), default=0),
        }
    return out
