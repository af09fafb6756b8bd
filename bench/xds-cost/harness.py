"""The xDS cost benches' harness (from the review of the xDS fan-out change): one node of
$DISCOVERY_BIN (default target/release/discovery) and ADS streams on it.
Needs grpcio and xds-protos (tests/xds's packages)."""
import json, os, queue, subprocess, threading, time, urllib.request, urllib.error
import grpc
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
NODE = {"id": "review", "cluster": "tests"}
BIN = os.environ.get("DISCOVERY_BIN", "target/release/discovery")

class Node:
    def __init__(self, *args, log=None):
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=open(log or os.devnull, "w"), text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.url = line.removeprefix("listening on ")
        self.xds = None
        if "off" not in args:
            line = self.proc.stdout.readline().strip()
            self.xds = line.removeprefix("xds listening on ")
        print("node pid", self.proc.pid, self.url, self.xds, flush=True)
    def request(self, method, path, body=None, ct="application/json", headers=None):
        h = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else body.encode(); h["Content-Type"] = ct
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
    def register(self, service, ip, port=80, **tags):
        s, _, b = self.request("POST", f"/v1/registration/{service}",
            json.dumps(dict(ip=ip, port=port, revision="r1", ttl=600, tags=tags)))
        assert s == 200, (s, b)
    def delete(self, service, ip):
        return self.request("DELETE", f"/v1/registration/{service}/{ip}")
    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired: self.proc.kill()

class Stream:
    def __init__(self, method, metadata=None, **kw):
        self.requests = queue.Queue(); self.responses = queue.Queue()
        def outgoing():
            while (item := self.requests.get()) is not None:
                yield item
        self.call = method(outgoing(), metadata=metadata, **kw)
        def read():
            try:
                for r in self.call: self.responses.put(r)
            except grpc.RpcError as e: self.responses.put(e)
        threading.Thread(target=read, daemon=True).start()
    def send(self, **f): self.requests.put(discovery_pb2.DiscoveryRequest(node=NODE, **f))
    def send_delta(self, **f): self.requests.put(discovery_pb2.DeltaDiscoveryRequest(node=NODE, **f))
    def recv(self, timeout=5.0):
        item = self.responses.get(timeout=timeout)
        if isinstance(item, grpc.RpcError): raise item
        return item
    def close(self):
        self.requests.put(None); self.call.cancel()

def channel(node, opts=None, compression=None):
    return grpc.insecure_channel(node.xds, options=opts or [("grpc.max_receive_message_length", 1<<30)], compression=compression)

def ads(node, delta=False, metadata=None, ch=None, **kw):
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch or channel(node))
    return Stream(stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources, metadata, **kw)

def cla(any_msg):
    out = endpoint_pb2.ClusterLoadAssignment(); assert any_msg.Unpack(out); return out
def addrs(a):
    return sorted(f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}" for g in a.endpoints for e in g.lb_endpoints)


def cpu(pid):
    """User + system CPU seconds of a process so far."""
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return l.split()[1] + " kB"
