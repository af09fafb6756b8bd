"""The xDS listener's connection bounds (review of issue 12, findings 1, 5 and 7): a budget of
open connections shared with nobody, the HTTP/2 preface within --read-timeout, at most
MAX_STREAMS_PER_CONNECTION streams on one connection, --xds-max-message, and a stream slot
held until its stream closes (finding 8)."""

import json
import socket
import threading
import time

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from test_streams import EDS, LDS, Stream, cla, register

# src/xds/mod.rs MAX_STREAMS_PER_CONNECTION.
MAX_STREAMS_PER_CONNECTION = 100


def channel(node):
    """A channel with a TCP connection of its own (grpcio shares them between channels by
    default)."""
    return grpc.insecure_channel(node.xds, options=[("grpc.use_local_subchannel_pool", 1)])


def stream(ch):
    return Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources)


def open_streams(node):
    status, _, body = node.request("GET", "/v1/xds/clients")
    assert status == 200, body
    return len(json.loads(body)["clients"])


def test_connections_that_send_no_preface_are_cut_and_free_their_slots(start_node):
    node = start_node("--max-connections", "2", "--read-timeout", "1s")
    register(node, "web", "10.0.0.1", 80)
    host, port = node.xds.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port))) for _ in range(2)]
    # Both slots are taken: this client waits in the accept queue until the idle ones go.
    s = stream(channel(node))
    s.send(type_url=EDS, resource_names=["web"])
    for sock in idle:
        sock.settimeout(10)
        assert sock.recv(1) == b"", "closed by the server"
    assert cla(s.recv(timeout=10).resources[0]).cluster_name == "web"
    s.close()


def test_a_connection_that_is_not_http2_is_closed_at_once(start_node):
    node = start_node("--read-timeout", "30s")
    host, port = node.xds.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    try:
        got = sock.recv(1024)
    except ConnectionResetError:  # closed with our request partly unread
        got = b""
    assert got == b"", "closed without an answer, long before --read-timeout"


def test_one_connection_has_at_most_100_streams_open(start_node):
    node = start_node()
    register(node, "web", "10.0.0.1", 80)
    ch = channel(node)
    streams = [stream(ch) for _ in range(MAX_STREAMS_PER_CONNECTION)]
    for s in streams:
        s.send(type_url=EDS, resource_names=["web"])
    for s in streams:
        s.recv(timeout=10)
    one_more = stream(ch)
    one_more.send(type_url=EDS, resource_names=["web"])
    # A stream on another connection is served after the one past the limit was sent...
    other = stream(channel(node))
    other.send(type_url=EDS, resource_names=["web"])
    other.recv(timeout=10)
    # ...and the one past the limit is not open: it waits for a stream of its connection.
    assert open_streams(node) == MAX_STREAMS_PER_CONNECTION + 1
    streams.pop().close()
    assert cla(one_more.recv(timeout=10).resources[0]).cluster_name == "web"
    for s in [*streams, one_more, other]:
        s.close()


def test_xds_messages_up_to_4_mib_are_taken_by_default_and_larger_refused(start_node):
    node = start_node()
    s = stream(channel(node))
    # About 1.1 MB of names, far past --max-body (64 KiB): taken.
    s.send(type_url=EDS, resource_names=[f"s{i:0100d}" for i in range(10_000)])
    assert len(s.recv(timeout=10).resources) == 0, "taken (none of them exists)"
    s.send(type_url=EDS, resource_names=[f"s{i:0100d}" for i in range(41_000)])  # > 4 MiB
    err = s.error(timeout=10)
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE and "too large" in err.details()


def test_xds_max_message_sets_the_limit(start_node):
    node = start_node("--xds-max-message", "64KiB")
    s = stream(channel(node))
    s.send(type_url=EDS, resource_names=["x" * 100] * 700)  # about 70 KB > 64 KiB
    err = s.error()
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE and "too large" in err.details()


def test_a_stream_that_stopped_reading_keeps_its_slot_until_it_closes(start_node):
    node = start_node("--max-connections", "2", "--write-timeout", "1s")
    pad = "-padding-to-make-listener-responses-large" * 2
    for i in range(300):
        register(node, f"svc{i:04d}{pad}"[:120], "10.0.0.1", 80)
    # Never read: tonic's window fills, then the stream task's queue, then its send times out.
    ch = grpc.insecure_channel(node.xds, options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.http2.lookahead_bytes", 0)])
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
    done = threading.Event()

    def requests():
        yield discovery_pb2.DiscoveryRequest(type_url=LDS)
        done.wait()  # keeps the request side open

    stalled = [stub.StreamAggregatedResources(requests()) for _ in range(2)]
    i = 0
    while open_streams(node) < 2:
        i += 1
        assert i < 2000, "both stalled streams opened"
    while open_streams(node) > 0:  # the tasks gave up on them
        register(node, f"more{i}", "10.0.0.1", 80)
        i += 1
        assert i < 2000, "the stalled streams' tasks ended"
    s = stream(channel(node))
    s.send(type_url=EDS, resource_names=["web"])
    err = s.error(timeout=10)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "both slots are still held"
    done.set()
    for call in stalled:
        call.cancel()
    s = stream(channel(node))
    register(node, "web", "10.0.0.1", 80)
    s.send(type_url=EDS, resource_names=["web"])
    assert cla(s.recv(timeout=10).resources[0]).cluster_name == "web", "freed when closed"


def test_a_client_that_never_reads_is_cut_after_the_write_timeout(start_node):
    """HTTP/2 frames that each call for an answer (SETTINGS, acknowledged) sent without ever
    reading: the node's answers fill both socket buffers, its write waits, and the connection
    is cut --write-timeout later and counted, as on the HTTP port (review of issue 11,
    finding 1: it was held for ever with ~4 MB of send buffer)."""
    node = start_node("--write-timeout", "1s")
    host, port = node.xds.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" * 1000
    sock.settimeout(1)
    deadline = time.monotonic() + 60
    cut = False
    while not cut:
        assert time.monotonic() < deadline, "the connection was never cut"
        try:
            sock.send(settings)
        except socket.timeout:
            pass  # the node stopped reading too: its write is the one waiting
        except OSError:
            cut = True
    status, _, body = node.request("GET", "/metrics")
    assert status == 200
    assert "discovery_write_timeouts_total 1" in body.decode(), "counted"
