"""xDS streams checked message by message against Envoy's own definitions (xds-protos):
state of the world and delta, ACK/NACK, nonces, removal, tokens, limits, readiness, and a
write on one node of a cluster reaching a stream held on another (issue 12)."""

import json
import os
import queue
import re
import signal
import threading
import time

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from google.rpc import status_pb2

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
NODE = {"id": "pytest-envoy", "cluster": "tests"}
# How long "nothing arrives" is watched for: an absence cannot be awaited.
QUIET = 0.3


class Stream:
    """One bidirectional xDS stream; responses are read by a thread into a queue."""

    def __init__(self, method, metadata=None):
        self.requests = queue.Queue()
        self.responses = queue.Queue()

        def outgoing():
            while (item := self.requests.get()) is not None:
                yield item

        self.call = method(outgoing(), metadata=metadata)

        def read():
            try:
                for response in self.call:
                    self.responses.put(response)
            except grpc.RpcError as e:
                self.responses.put(e)

        threading.Thread(target=read, daemon=True).start()

    def send(self, **fields):
        self.requests.put(discovery_pb2.DiscoveryRequest(node=NODE, **fields))

    def send_delta(self, **fields):
        self.requests.put(discovery_pb2.DeltaDiscoveryRequest(node=NODE, **fields))

    def recv(self, timeout=5.0):
        item = self.responses.get(timeout=timeout)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def error(self, timeout=5.0) -> grpc.RpcError:
        item = self.responses.get(timeout=timeout)
        assert isinstance(item, grpc.RpcError), f"expected the stream to end, got {item}"
        return item

    def nothing(self):
        with pytest.raises(queue.Empty):
            got = self.responses.get(timeout=QUIET)
            print("unexpected:", got)

    def close(self):
        self.requests.put(None)
        self.call.cancel()


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def xds_types(node):
    """The types of the node's first xDS stream, by type URL, from GET /v1/xds/clients."""
    clients = json.loads(node.request("GET", "/v1/xds/clients")[2])["clients"]
    return {t["type_url"]: t for t in clients[0]["types"]} if clients else {}


def ads(node, metadata=None, delta=False):
    channel = grpc.insecure_channel(node.xds)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
    return Stream(method, metadata)


def cla(any_msg) -> endpoint_pb2.ClusterLoadAssignment:
    out = endpoint_pb2.ClusterLoadAssignment()
    assert any_msg.Unpack(out)
    return out


def addresses(assignment):
    return sorted(
        f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
        for group in assignment.endpoints
        for e in group.lb_endpoints
    )


def register(node, service, ip, port, **tags):
    node.register(service, ip=ip, port=port, revision="r1", ttl=600, tags=tags)


def delete(node, service, ip):
    status, _, body = node.request("DELETE", f"/v1/registration/{service}/{ip}")
    assert status == 200, body


def test_sotw_eds_versions_nonces_ack_nack_and_removal(start_node):
    node = start_node()
    register(node, "web", "10.0.0.1", 80, az="z1", region="r1", canary=True)
    register(node, "web", "10.0.0.2", 80, az="z2", region="r1", load_balancing_weight=5)
    node.register("web", ip="10.0.0.3", port=80, revision="r1", ttl=600, status="draining")
    s = ads(node)
    s.send(type_url=EDS, resource_names=["web"])
    r1 = s.recv()
    assert (r1.type_url, len(r1.resources)) == (EDS, 1)
    assert r1.nonce and r1.version_info
    a = cla(r1.resources[0])
    assert a.cluster_name == "web"
    assert addresses(a) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    by_zone = {g.locality.zone: g for g in a.endpoints}
    # gRPC drops a locality without its own weight.
    assert all(g.load_balancing_weight.value >= 1 for g in a.endpoints)
    assert by_zone["z2"].lb_endpoints[0].load_balancing_weight.value == 5
    assert by_zone["z2"].load_balancing_weight.value == 5
    canary = by_zone["z1"].lb_endpoints[0]
    assert canary.metadata.filter_metadata["envoy.lb"].fields["canary"].bool_value is True
    draining = by_zone[""].lb_endpoints[0]
    assert draining.health_status == 3  # DRAINING

    # ACK: nothing more until something changes (the next response is that change's).
    s.send(type_url=EDS, resource_names=["web"], version_info=r1.version_info,
           response_nonce=r1.nonce)
    register(node, "web", "10.0.0.4", 80)
    r2 = s.recv(timeout=1)
    assert r2.nonce != r1.nonce and r2.version_info != r1.version_info
    assert addresses(cla(r2.resources[0]))[-1] == "10.0.0.4:80"

    # NACK: logged, shown, and that version is not sent again; repeating it counts once.
    for _ in range(3):
        s.send(type_url=EDS, resource_names=["web"], version_info=r1.version_info,
               response_nonce=r2.nonce,
               error_detail=status_pb2.Status(code=3, message="test rejects it"))
    register(node, "web", "10.0.0.5", 80)
    r3 = s.recv(timeout=1)
    assert len(addresses(cla(r3.resources[0]))) == 5, "the next response is the new version"
    _, _, body = node.request("GET", "/v1/xds/clients")
    client = json.loads(body)["clients"][0]
    assert client["node_id"] == "pytest-envoy" and client["protocol"] == "ads"
    eds = next(t for t in client["types"] if t["type_url"] == EDS)
    assert eds["nacked_version"] == r2.version_info
    assert eds["nack_error"] == "test rejects it"
    _, _, metrics = node.request("GET", "/metrics")
    assert b'discovery_xds_messages_total{resource="endpoints",event="nack"} 1' in metrics

    # A request quoting an older nonce is stale: ignored, subscription change included (the
    # next response is web's change alone).
    register(node, "db", "10.0.1.1", 5432)
    s.send(type_url=EDS, resource_names=["web", "db"], version_info=r1.version_info,
           response_nonce=r2.nonce)
    register(node, "web", "10.0.0.6", 80)
    r3 = s.recv(timeout=1)
    assert [cla(r).cluster_name for r in r3.resources] == ["web"]
    s.send(type_url=EDS, resource_names=["web", "db"], version_info=r3.version_info,
           response_nonce=r3.nonce)
    r4 = s.recv()
    assert sorted(cla(r).cluster_name for r in r4.resources) == ["db", "web"]

    # Removal: a service with no live hosts is absent (Envoy keeps its last endpoints).
    s.send(type_url=EDS, resource_names=["web", "db"], version_info=r4.version_info,
           response_nonce=r4.nonce)
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]:
        delete(node, "web", ip)
    deadline = time.monotonic() + 2
    while True:
        r5 = s.recv(timeout=1)
        if [cla(r).cluster_name for r in r5.resources] == ["db"] or time.monotonic() > deadline:
            break
    assert [cla(r).cluster_name for r in r5.resources] == ["db"]
    s.close()


def test_sotw_lds_and_cds_wildcard_describe_a_proxyless_grpc_service(start_node):
    node = start_node()
    register(node, "payments", "10.0.0.1", 80)
    s = ads(node)
    s.send(type_url=LDS)  # no names: wildcard
    r = s.recv()
    assert r.type_url == LDS and len(r.resources) == 1
    listener = listener_pb2.Listener()
    r.resources[0].Unpack(listener)
    assert listener.name == "payments"
    hcm = http_connection_manager_pb2.HttpConnectionManager()
    listener.api_listener.api_listener.Unpack(hcm)
    route = hcm.route_config.virtual_hosts[0].routes[0]
    assert route.route.cluster == "payments"
    assert hcm.http_filters[0].name == "envoy.filters.http.router"
    s.send(type_url=LDS, version_info=r.version_info, response_nonce=r.nonce)
    s.send(type_url=CDS, resource_names=["payments"])
    c = s.recv()
    cluster = cluster_pb2.Cluster()
    c.resources[0].Unpack(cluster)
    assert cluster.name == "payments"
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    s.send(type_url=CDS, resource_names=["payments"], version_info=c.version_info,
           response_nonce=c.nonce)
    # A new service appears in the wildcard listener list; a host change does not resend.
    register(node, "payments", "10.0.0.2", 80)
    s.nothing()
    register(node, "orders", "10.0.0.9", 80)
    r2 = s.recv(timeout=1)
    assert r2.type_url == LDS
    assert sorted(unpack_name(x) for x in r2.resources) == ["orders", "payments"]
    s.close()


def unpack_name(any_msg):
    listener = listener_pb2.Listener()
    any_msg.Unpack(listener)
    return listener.name


def test_delta_sends_changes_and_reports_removed_resources(start_node):
    node = start_node()
    register(node, "web", "10.0.0.1", 80)
    register(node, "db", "10.0.1.1", 5432)
    s = ads(node, delta=True)
    s.send_delta(type_url=EDS, resource_names_subscribe=["web", "db"])
    r1 = s.recv()
    assert sorted(r.name for r in r1.resources) == ["db", "web"]
    versions = {r.name: r.version for r in r1.resources}
    assert all(versions.values()) and r1.nonce
    s.send_delta(type_url=EDS, response_nonce=r1.nonce)
    s.nothing()
    register(node, "web", "10.0.0.2", 80)
    r2 = s.recv(timeout=1)
    assert [r.name for r in r2.resources] == ["web"]
    assert r2.resources[0].version != versions["web"]
    assert addresses(cla(r2.resources[0].resource)) == ["10.0.0.1:80", "10.0.0.2:80"]
    s.send_delta(type_url=EDS, response_nonce=r2.nonce)
    delete(node, "db", "10.0.1.1")
    r3 = s.recv(timeout=1)
    assert list(r3.removed_resources) == ["db"] and not r3.resources
    s.close()

    # A client reconnecting with what it holds gets only what differs.
    s = ads(node, delta=True)
    s.send_delta(type_url=EDS, resource_names_subscribe=["web"],
                 initial_resource_versions={"web": r2.resources[0].version})
    s.nothing()
    s.close()


def test_eds_service_streams_endpoints_and_refuses_other_types(start_node):
    node = start_node()
    register(node, "web", "10.0.0.1", 80)
    channel = grpc.insecure_channel(node.xds)
    stub = eds_pb2_grpc.EndpointDiscoveryServiceStub(channel)
    s = Stream(stub.StreamEndpoints)
    s.send(resource_names=["web"])  # no type_url: this service's type
    assert cla(s.recv().resources[0]).cluster_name == "web"
    s.close()
    s = Stream(stub.StreamEndpoints)
    s.send(type_url=LDS, resource_names=["web"])
    assert s.error().code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as fetch:
        stub.FetchEndpoints(discovery_pb2.DiscoveryRequest(resource_names=["web"]), timeout=5)
    assert fetch.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "StreamEndpoints" in fetch.value.details()


def test_read_token_is_required_as_bearer_metadata(start_node):
    node = start_node("--read-token", "s3cret")
    register(node, "web", "10.0.0.1", 80)
    s = ads(node)
    s.send(type_url=EDS, resource_names=["web"])
    assert s.error().code() == grpc.StatusCode.UNAUTHENTICATED
    s = ads(node, metadata=[("authorization", "Bearer wrong")])
    s.send(type_url=EDS, resource_names=["web"])
    assert s.error().code() == grpc.StatusCode.UNAUTHENTICATED
    s = ads(node, metadata=[("authorization", "Bearer s3cret")])
    s.send(type_url=EDS, resource_names=["web"])
    assert cla(s.recv().resources[0]).cluster_name == "web"
    s.close()


def test_a_node_that_is_not_ready_sends_nothing_until_it_is(start_node):
    # A peer that never answers: the node waits out its warmup before it is ready.
    node = start_node("--peers", "http://127.0.0.1:9", "--warmup", "2s")
    register(node, "web", "10.0.0.1", 80)
    s = ads(node)
    s.send(type_url=EDS, resource_names=["web"])
    # A stream takes its requests in order, each to its end (answered, or held while not
    # ready) before the next: once the second is listed, the first was held, not answered.
    s.send(type_url=LDS, resource_names=["web"])
    wait_until(lambda: LDS in xds_types(node), 5, "the stream took both requests")
    assert node.request("GET", "/readyz")[0] == 503, "still warming up"
    assert xds_types(node)[EDS]["responses"] == 0
    sent = re.findall(rb'event="sent"\} (\d+)', node.request("GET", "/metrics")[2])
    assert sent and set(sent) == {b"0"}, "nothing sent at all"
    got = {r.type_url: r for r in (s.recv(timeout=5), s.recv(timeout=5))}
    assert cla(got[EDS].resources[0]).cluster_name == "web"
    assert unpack_name(got[LDS].resources[0]) == "web"
    s.close()


def test_a_stream_held_through_a_resync_that_gives_up_is_answered_without_a_change(start_node):
    # A node with a peer that never answers, stopped past its stall threshold: when it resumes
    # it re-syncs, serving nothing, and gives up after the re-sync bound (3 s at this gossip
    # interval); what its streams asked meanwhile is answered then, with no write to wake them.
    node = start_node("--peers", "http://127.0.0.1:9", "--warmup", "0s",
                      "--gossip-interval", "200ms")
    register(node, "web", "10.0.0.1", 80)
    register(node, "db", "10.0.1.1", 5432)
    s = ads(node)
    s.send(type_url=EDS, resource_names=["web"])
    r1 = s.recv()
    s.send(type_url=EDS, resource_names=["web"], version_info=r1.version_info,
           response_nonce=r1.nonce)
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        # The stall threshold is 2 s; the request waits in the socket meanwhile.
        s.send(type_url=EDS, resource_names=["web", "db"], version_info=r1.version_info,
               response_nonce=r1.nonce)
        time.sleep(2.5)
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    wait_until(lambda: xds_types(node)[EDS]["names"] == 2, 5, "the stream took the request")
    _, _, metrics = node.request("GET", "/metrics")
    assert b"discovery_stalls_total 1" in metrics, "the node noticed its stall"
    assert node.request("GET", "/readyz")[0] == 503, "re-syncing: the request is held"
    r2 = s.recv(timeout=6)
    assert sorted(cla(r).cluster_name for r in r2.resources) == ["db", "web"]
    assert node.request("GET", "/readyz")[0] == 200
    s.close()


def test_limits_streams(start_node):
    node = start_node("--max-connections", "2")
    a, b = ads(node), ads(node)
    for st in (a, b):
        st.send(type_url=EDS, resource_names=["web"])
    register(node, "web", "10.0.0.1", 80)
    a.recv(), b.recv()
    c = ads(node)
    c.send(type_url=EDS, resource_names=["web"])
    err = c.error()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 2" in err.details()
    a.close()
    b.close()


def test_more_names_than_the_limit_end_the_stream(start_node):
    node = start_node()
    s = ads(node)
    s.send(type_url=EDS, resource_names=[f"s{i}" for i in range(10_000)])
    assert len(s.recv().resources) == 0, "at the limit: taken (none of them exists)"
    s.send(type_url=EDS, resource_names=[f"s{i}" for i in range(10_001)])
    err = s.error()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 10000" in err.details()


def test_a_write_on_node_a_reaches_a_stream_on_node_c(start_node):
    a = start_node("--node-id", "a", "--gossip-interval", "200ms")
    b = start_node("--node-id", "b", "--peers", a.url, "--gossip-interval", "200ms")
    c = start_node("--node-id", "c", "--peers", f"{a.url},{b.url}", "--gossip-interval", "200ms")
    deadline = time.monotonic() + 10
    while c.request("GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "c became ready"
        time.sleep(0.05)
    s = ads(c)
    s.send(type_url=EDS, resource_names=["web"])
    assert len(s.recv().resources) == 0, "web does not exist yet"
    register(a, "web", "10.0.0.1", 80)
    r = s.recv(timeout=10)
    assert addresses(cla(r.resources[0])) == ["10.0.0.1:80"]
    # Same state, same version on every node: a client failing over gets nothing new.
    on_a = ads(a)
    on_a.send(type_url=EDS, resource_names=["web"])
    assert on_a.recv().version_info == r.version_info
    deadline = time.monotonic() + 10
    while b"10.0.0.1" not in b.request("GET", "/v1/registration/web")[2]:
        assert time.monotonic() < deadline, "the write reached b"
        time.sleep(0.05)
    on_b = ads(b)
    on_b.send(type_url=EDS, resource_names=["web"], version_info=r.version_info)
    on_b.nothing()
    s.close()
    on_a.close()
    on_b.close()


def test_node_ids_and_nack_errors_are_kept_to_256_bytes(start_node):
    node = start_node()
    register(node, "web", "10.0.0.1", 80)
    channel = grpc.insecure_channel(node.xds)
    s = Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources)
    big = {"id": "n" * 60_000, "cluster": "c" * 60_000}
    s.requests.put(discovery_pb2.DiscoveryRequest(node=big, type_url=EDS, resource_names=["web"]))
    r = s.recv()
    s.send(type_url=EDS, resource_names=["web", "y" * 60_000], response_nonce=r.nonce,
           error_detail=status_pb2.Status(code=3, message="e" * 60_000))
    register(node, "web", "10.0.0.2", 80)
    s.recv()
    _, _, body = node.request("GET", "/v1/xds/clients")
    client = json.loads(body)["clients"][0]
    assert (len(client["node_id"]), len(client["node_cluster"])) == (256, 256)
    eds = next(t for t in client["types"] if t["type_url"] == EDS)
    assert len(eds["nack_error"]) == 256
    assert eds["names"] == 1, "a name that is not a service name is not kept"
    assert len(body) < 4096
    s.close()


def test_a_fresh_node_serves_the_listener_and_cluster_of_any_service_name(start_node):
    node = start_node()
    for url in (LDS, CDS):
        s = ads(node)
        s.send(type_url=url, resource_names=["payments"])
        r = s.recv()
        assert len(r.resources) == 1, "absent would delete the client's copy"
        s.close()
    s = ads(node)
    s.send(type_url=EDS, resource_names=["payments"])
    assert len(s.recv().resources) == 0, "endpoints exist only with hosts"
    s.close()


def test_wildcard_lds_keeps_a_service_whose_hosts_all_went(start_node):
    node = start_node()
    register(node, "web", "10.0.0.1", 80)
    s = ads(node)
    s.send(type_url=LDS)
    r = s.recv()
    assert len(r.resources) == 1
    s.send(type_url=LDS, version_info=r.version_info, response_nonce=r.nonce)
    delete(node, "web", "10.0.0.1")
    register(node, "db", "10.0.1.1", 5432)
    r = s.recv()
    # The next answer is db's arrival: web's departure changed nothing.
    assert sorted(unpack_name(a) for a in r.resources) == ["db", "web"]
    s.close()
