"""The processes of a fault run: registry nodes, agents, the hosts they stand for, and
the consumers that read the registry. Owns starting, signalling and stopping them; it
decides nothing about when (faults.py) and measures nothing (measure.py).

Every process is started by this module and recorded in `Cluster.procs`, so `close()`
can end each one by its pid. run.sh also kills whatever is left in the namespaces it made.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

SERVICE = "web"
EDS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_harness() -> None:
    """In the child before exec: SIGKILL it if the harness dies (PR_SET_PDEATHSIG), so that
    not even a harness killed by the watchdog leaves agents or nodes behind."""
    _libc.prctl(1, signal.SIGKILL)


def popen(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, preexec_fn=_die_with_harness, **kw)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 0.5,
         headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request; (0, {}, b"") when the node does not answer in time."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers or {}), err.read() if err.fp else b""
    except (OSError, ValueError):
        return 0, {}, b""


@dataclass
class Node:
    index: int
    name: str
    addr: str              # host:port it listens on
    netns: str | None      # its own network namespace, or None on plain loopback
    link: str | None       # the veth end in the harness namespace that joins it (partitions)
    proc: subprocess.Popen | None = None
    skew_file: str | None = None  # libfaketime's offset file, for the node whose clock we skew

    @property
    def url(self) -> str:
        return f"http://{self.addr}"


@dataclass
class Agent:
    """One host of the fleet: a `discovery heartbeat` process and the listener it stands for."""
    port: int
    home: int              # index of the node it asks first
    proc: subprocess.Popen | None = None
    state: str = "dead"    # live | silent | dead: what the harness did to it last


@dataclass
class Cluster:
    binary: str
    work: str
    nodes_n: int
    netns_prefix: str | None   # None: every node on 127.0.0.1 (no partition fault)
    node_flags: list[str]
    agent_interval: str
    nodes: list[Node] = field(default_factory=list)
    agents: dict[int, Agent] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    fleet: "Fleet | None" = None
    agents_log: object = None

    # ---- nodes -------------------------------------------------------------------------

    def plan_nodes(self, skewed: int | None) -> None:
        for i in range(self.nodes_n):
            if self.netns_prefix:
                node = Node(i, f"n{i + 1}", f"10.77.0.{11 + i}:8080",
                            f"{self.netns_prefix}-n{i + 1}", f"fhv{i + 1}b")
            else:
                node = Node(i, f"n{i + 1}", f"127.0.0.1:{free_port()}", None, None)
            if i == skewed:
                node.skew_file = os.path.join(self.work, f"{node.name}.faketime")
                with open(node.skew_file, "w") as f:
                    f.write("+0\n")
            self.nodes.append(node)

    def start_node(self, node: Node) -> None:
        peers = ",".join(n.url for n in self.nodes if n is not node)
        cmd = [self.binary, "serve", "--listen", node.addr, "--node-id", node.name,
               "--peers", peers, *self.node_flags]
        # Nodes on fixed ports would all take the default xDS port 18000.
        env = dict(os.environ, DISCOVERY_LOG="warn", DISCOVERY_XDS_LISTEN="off")
        if node.skew_file:
            # The node runs under libfaketime from the start with offset +0; the clock-skew
            # fault rewrites the file. Monotonic clocks stay true: only the wall clock lies,
            # as with a bad NTP step.
            env.update(LD_PRELOAD=LIBFAKETIME, FAKETIME_TIMESTAMP_FILE=node.skew_file,
                       FAKETIME_CACHE_DURATION="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        if node.netns:
            cmd = ["ip", "netns", "exec", node.netns, *cmd]
        out = open(os.path.join(self.work, f"{node.name}.log"), "ab")
        node.proc = popen(cmd, stdout=out, stderr=out, env=env)
        self.procs.append(node.proc)

    def stop_node(self, node: Node, sig: int = signal.SIGKILL) -> None:
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(sig)
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def signal_node(self, node: Node, sig: int) -> None:
        if node.proc and node.proc.poll() is None:
            node.proc.send_signal(sig)

    def wait_ready(self, nodes: list[Node], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(http("GET", n.url + "/readyz", timeout=0.3)[0] == 200 for n in nodes):
                return True
            time.sleep(0.1)
        return False

    def set_link(self, node: Node, up: bool) -> None:
        subprocess.run(["ip", "link", "set", "dev", node.link, "up" if up else "down"],
                       check=True)

    def set_skew(self, node: Node, offset: str) -> None:
        with open(node.skew_file, "w") as f:
            f.write(offset + "\n")

    # ---- agents ------------------------------------------------------------------------

    def registry_list(self, home: int) -> str:
        order = self.nodes[home:] + self.nodes[:home]
        return ",".join(n.url for n in order)

    def start_agent(self, port: int, home: int) -> Agent:
        agent = Agent(port, home)
        cmd = [self.binary, "heartbeat", "--registry", self.registry_list(home),
               "--service", SERVICE, "--ip", "127.0.0.1", "--port", str(port),
               "--revision", "r1", "--interval", self.agent_interval]
        if self.agents_log is None:
            self.agents_log = open(os.path.join(self.work, "agents.log"), "ab")
        agent.proc = popen(cmd, stdout=subprocess.DEVNULL, stderr=self.agents_log,
                                      env=dict(os.environ, DISCOVERY_LOG="error"))
        self.procs.append(agent.proc)
        self.agents[port] = agent
        return agent

    def signal_agent(self, agent: Agent, sig: int) -> None:
        if agent.proc and agent.proc.poll() is None:
            agent.proc.send_signal(sig)

    # ---- consumers ---------------------------------------------------------------------

    def start_watcher(self, home: int) -> "Watcher":
        cmd = [self.binary, "hosts", SERVICE, "--watch", "--json",
               "--registry", self.registry_list(home)]
        proc = popen(cmd, stdout=subprocess.PIPE,
                                stderr=open(os.path.join(self.work, "watchers.log"), "ab"),
                                env=dict(os.environ, DISCOVERY_LOG="warn"))
        self.procs.append(proc)
        return Watcher(f"watcher@{self.nodes[home].name}", proc)

    def start_haproxy(self) -> "Haproxy":
        socket_path = os.path.join(self.work, "haproxy.sock")
        cfg = os.path.join(self.work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
    stats socket {socket_path} mode 600 level admin
    stats timeout 30s
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 1s
frontend fe
    bind 127.0.0.1:{free_port()}
    default_backend be_web
backend be_web
    balance roundrobin
    option httpchk GET /
""")
        log = open(os.path.join(self.work, "haproxy.log"), "ab")
        proc = popen(["haproxy", "-db", "-f", cfg], stdout=log, stderr=log)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        sync = popen(
            [self.binary, "haproxy-sync", "--registry", ",".join(n.url for n in self.nodes),
             "--socket", socket_path, "--backend", f"{SERVICE}=be_web",
             "--check-inter", "1s", "--fall", "2", "--rise", "1", "--interval", "2s",
             "--drain-timeout", "2s"],
            stdout=log, stderr=log, env=dict(os.environ, DISCOVERY_LOG="warn"))
        self.procs.append(sync)
        return Haproxy("haproxy", socket_path)

    def start_eds(self, clock=None) -> "EdsPoller":
        """The rotating EDS poller; every answer it gets (time, node, status, ports) goes to
        eds-rr.log in the work directory (copied to the output's logs), so that a dead host
        seen again can be traced to the node that served it."""
        log = open(os.path.join(self.work, "eds-rr.log"), "a") if clock else None
        return EdsPoller("eds-rr", [n.url for n in self.nodes], log=log, clock=clock)

    # ---- the end -----------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.fleet:
            self.fleet.close()


class Fleet:
    """The hosts' own service ports (what HAProxy health-checks): one listener per host,
    answering 200 to anything. A killed host closes its port; a silenced one keeps it
    (only its agent is stopped)."""

    def __init__(self) -> None:
        self.sockets: dict[int, socket.socket] = {}
        self.lock = threading.Lock()
        self.closing: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def open(self) -> int:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.setblocking(False)
        port = s.getsockname()[1]
        with self.lock:
            self.sockets[port] = s
        return port

    def shut(self, port: int) -> None:
        # The serving thread unregisters and closes it: closing here could let a new
        # socket reuse the descriptor while epoll still holds the old one.
        with self.lock:
            s = self.sockets.pop(port, None)
            if s:
                self.closing.append(s)

    def _serve(self) -> None:
        # One thread, epoll over every host's port: a health check gets 200 and is closed.
        import selectors
        sel = selectors.DefaultSelector()
        registered: dict[int, socket.socket] = {}
        while not self.stop.is_set():
            with self.lock:
                want = dict(self.sockets)
                closing, self.closing = self.closing, []
            for port, s in list(registered.items()):
                if want.get(port) is not s:
                    sel.unregister(s)
                    del registered[port]
            for s in closing:
                s.close()
            for port, s in want.items():
                if port not in registered:
                    sel.register(s, selectors.EVENT_READ)
                    registered[port] = s
            if not registered:
                time.sleep(0.05)
                continue
            try:
                events = sel.select(0.05)
            except (OSError, ValueError):
                continue
            for key, _ in events:
                try:
                    conn, _ = key.fileobj.accept()
                except OSError:
                    continue
                try:
                    conn.settimeout(0.2)
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass
                finally:
                    conn.close()

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            for s in self.sockets.values():
                s.close()
            self.sockets.clear()


class Consumer:
    """Something that holds a host list; `current()` is the set of ports it holds now."""

    name: str

    def current(self) -> frozenset | None:  # None: no list yet
        raise NotImplementedError

    def close(self) -> None:
        pass


def ports_of_body(body: dict) -> frozenset:
    return frozenset(h["port"] for h in body.get("hosts", []))


class Watcher(Consumer):
    """`discovery hosts --watch --json`: one JSON body per line on each change."""

    def __init__(self, name: str, proc: subprocess.Popen) -> None:
        self.name = name
        self.proc = proc
        self.list: frozenset | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.list = ports_of_body(json.loads(line))
            except (ValueError, KeyError):
                continue

    def current(self) -> frozenset | None:
        return self.list


class EdsPoller(Consumer):
    """An Envoy-like REST EDS client: polls `POST /v3/discovery:endpoints` every
    `refresh` with a `timeout`, one node after the other (README's STRICT_DNS setup), and
    keeps what it has on a failure, a 503, a 304 or an answer without the service."""

    def __init__(self, name: str, urls: list[str], refresh: float = 1.0,
                 timeout: float = 1.0, log=None, clock=None) -> None:
        self.name = name
        self.urls = urls
        self.log = log
        self.clock = clock
        self.refresh = refresh
        self.timeout = timeout
        self.list: frozenset | None = None
        self.version = ""
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            url = self.urls[turn % len(self.urls)] + "/v3/discovery:endpoints"
            turn += 1
            req = {"version_info": self.version, "node": {"id": "faults-eds"},
                   "resource_names": [SERVICE], "type_url": EDS_TYPE}
            status, _, body = http("POST", url, json.dumps(req).encode(), self.timeout,
                                   {"Content-Type": "application/json"})
            self._note(turn - 1, status, body)
            if status == 200:
                try:
                    resp = json.loads(body)
                    for res in resp.get("resources", []):
                        if res.get("cluster_name") != SERVICE:
                            continue
                        ports = set()
                        for group in res.get("endpoints", []):
                            for ep in group.get("lb_endpoints", []):
                                ports.add(ep["endpoint"]["address"]["socket_address"]["port_value"])
                        if ports != self.list:
                            self.list = frozenset(ports)
                        self.version = resp.get("version_info", "")
                except (ValueError, KeyError, TypeError):
                    pass
            self.stop.wait(self.refresh)

    def _note(self, turn: int, status: int, body: bytes) -> None:
        if not self.log:
            return
        ports = None
        if status == 200:
            try:
                ports = sorted(ep["endpoint"]["address"]["socket_address"]["port_value"]
                               for res in json.loads(body).get("resources", [])
                               for group in res.get("endpoints", [])
                               for ep in group.get("lb_endpoints", []))
            except (ValueError, KeyError, TypeError):
                pass
        line = {"t": round(self.clock(), 3), "node": turn % len(self.urls) + 1,
                "status": status, "ports": ports}
        self.log.write(json.dumps(line) + "\n")
        self.log.flush()

    def current(self) -> frozenset | None:
        return self.list

    def close(self) -> None:
        self.stop.set()
        if self.log:
            self.log.close()


class Haproxy(Consumer):
    """HAProxy fed by `haproxy-sync`: the list is the servers that would take traffic now
    (operationally up, not in maintenance or drain), read over the admin socket."""

    def __init__(self, name: str, socket_path: str) -> None:
        self.name = name
        self.socket_path = socket_path
        self.list: frozenset | None = None
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _query(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(self.socket_path)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                text = self._query("show servers state be_web")
                ports = set()
                header = None
                for line in text.splitlines():
                    if line.startswith("#"):
                        header = line[2:].split()
                        continue
                    cols = line.split()
                    if not header or len(cols) < len(header):
                        continue
                    row = dict(zip(header, cols))
                    if row["srv_op_state"] == "2" and row["srv_admin_state"] == "0":
                        ports.add(int(row["srv_port"]))
                if header is not None and ports != self.list:
                    self.list = frozenset(ports)
            except OSError:
                pass
            self.stop.wait(0.1)

    def current(self) -> frozenset | None:
        return self.list

    def close(self) -> None:
        self.stop.set()
