"""xDS over TLS (issue 11): with --tls-cert/--tls-key the xDS port speaks TLS only, with the
HTTP port's certificate and client certificate policy. Streams checked message by message over
grpc.secure_channel; a client without a certificate under `all` refused with the reason; a
plaintext client failing at once with the cause; a CA swap ending the streams of clients the
new CA no longer trusts, and closing their connections; a client certificate that expires
during a stream ending it (review of the change, findings 2 and 3). Connections whose
frames matter are spoken by hand with the h2 package."""

import signal
import socket
import ssl
import time
import urllib.parse

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc

from test_streams import EDS, Stream, addresses, cla, register
from tls_certs import Ca, bundle


@pytest.fixture
def cas(tmp_path):
    """The cluster's CA and a foreign one."""
    return Ca(tmp_path, "good"), Ca(tmp_path, "foreign")


def tls_node(start_node, ca, mode, *extra, ca_file=None, client=None):
    """A TLS node with a certificate of `ca` (serial 1) under --tls-client-auth `mode`; its
    HTTP requests trust `ca` and present `client`."""
    node = start_node(*ca.leaf("node", 1).serve_args(), "--tls-ca", str(ca_file or ca.pem),
                      "--tls-client-auth", mode, *extra)
    assert node.url.startswith("https://")
    node.context = ssl.create_default_context(cafile=str(ca.pem))
    if client is not None:
        node.context.load_cert_chain(str(client.cert), str(client.key))
    return node


def secure(node, ca, client=None):
    """A channel over TLS with a TCP connection of its own, trusting `ca`, presenting
    `client`'s certificate when given."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.pem_bytes(),
        private_key=client.key_pem() if client else None,
        certificate_chain=client.cert_pem() if client else None,
    )
    return grpc.secure_channel(node.xds, creds, options=[
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.ssl_target_name_override", "localhost"),
    ])


def ads(channel, metadata=None):
    return Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources,
                  metadata)


def test_under_peers_streams_need_the_ca_but_no_client_certificate_and_the_read_token_holds(
        start_node, cas):
    ca, _ = cas
    node = tls_node(start_node, ca, "peers", "--read-token", "t0k")
    register(node, "web", "10.0.0.1", 80)
    s = ads(secure(node, ca), metadata=[("authorization", "Bearer t0k")])
    s.send(type_url=EDS, resource_names=["web"])
    assert cla(s.recv(timeout=10).resources[0]).cluster_name == "web"
    s.close()
    s = ads(secure(node, ca))
    s.send(type_url=EDS, resource_names=["web"])
    err = s.error(timeout=10)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "read token" in err.details()


def test_under_all_a_stream_needs_a_client_certificate_of_the_ca_and_is_told_why(
        start_node, cas):
    ca, foreign = cas
    client = ca.leaf("client", 2)
    node = tls_node(start_node, ca, "all", "--tls-peer-name", "localhost", client=client)
    register(node, "web", "10.0.0.1", 80)
    s = ads(secure(node, ca, client))
    s.send(type_url=EDS, resource_names=["web"])
    assert cla(s.recv(timeout=10).resources[0]).cluster_name == "web"
    s.close()
    for presented, why in [(None, "requires a client certificate"),
                           (foreign.leaf("intruder", 3), "not signed by this node's CA")]:
        s = ads(secure(node, ca, presented))
        s.send(type_url=EDS, resource_names=["web"])
        err = s.error(timeout=10)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
        assert why in err.details(), err.details()


def test_a_plaintext_client_on_the_tls_xds_port_fails_at_once_with_the_cause(start_node, cas):
    ca, _ = cas
    node = tls_node(start_node, ca, "peers")
    channel = grpc.insecure_channel(node.xds, options=[("grpc.use_local_subchannel_pool", 1)])
    started = time.monotonic()
    s = ads(channel)
    s.send(type_url=EDS, resource_names=["web"])
    err = s.error(timeout=10)
    assert time.monotonic() - started < 5, "failed at once, not after a timeout"
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert "this xDS port speaks TLS only" in err.details(), err.details()
    channel.close()


def test_a_ca_swap_ends_the_streams_of_clients_the_new_ca_no_longer_trusts(
        start_node, cas, tmp_path):
    kept, dropped = cas
    ca_file = bundle(tmp_path / "bundle.pem", kept, dropped)
    trusted, untrusted = kept.leaf("trusted", 2), dropped.leaf("untrusted", 3)
    node = tls_node(start_node, kept, "all", "--tls-peer-name", "localhost", "--tls-poll",
                    "1h", ca_file=ca_file, client=trusted)
    register(node, "web", "10.0.0.1", 80)
    a, b = ads(secure(node, kept, trusted)), ads(secure(node, kept, untrusted))
    for s in (a, b):
        s.send(type_url=EDS, resource_names=["web"])
        r = s.recv(timeout=10)
        s.send(type_url=EDS, resource_names=["web"], version_info=r.version_info,
               response_nonce=r.nonce)
    bundle(ca_file, kept)
    node.proc.send_signal(signal.SIGHUP)  # reload
    err = b.error(timeout=10)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    assert "not signed by this node's CA" in err.details(), err.details()
    # The client the new CA still trusts keeps its stream and gets the next change.
    register(node, "web", "10.0.0.2", 80)
    assert addresses(cla(a.recv(timeout=10).resources[0])) == ["10.0.0.1:80", "10.0.0.2:80"]
    a.close()


ADS_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def h2_call(node, ca, client=None):
    """A TLS connection to the node's xDS port, HTTP/2 spoken by hand, with one ADS call
    started (headers only): (socket, h2 connection)."""
    context = ssl.create_default_context(cafile=str(ca.pem))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    host, port = node.xds.rsplit(":", 1)
    sock = context.wrap_socket(socket.create_connection((host, int(port))),
                               server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
                          (":path", ADS_PATH), ("content-type", "application/grpc"),
                          ("te", "trailers")])
    sock.sendall(conn.data_to_send())
    return sock, conn


def h2_read(sock, conn, until, timeout=10.0):
    """Reads the connection's events (answering pings) until `until(event)` or until the node
    closes it; returns the events and whether it was closed. Fails after `timeout`."""
    events = []
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            data = b""
        if not data:
            return events, True
        for event in conn.receive_data(data):
            events.append(event)
            if until(event):
                return events, False
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            return events, True


def grpc_status(events):
    """The grpc-status and grpc-message of the call, from its headers or trailers."""
    fields = {}
    for event in events:
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            fields.update((k.decode(), v.decode()) for k, v in event.headers)
    return fields.get("grpc-status"), urllib.parse.unquote(fields.get("grpc-message", ""))


def test_under_all_a_connection_without_a_client_certificate_is_told_why_and_closed(
        start_node, cas):
    ca, _ = cas
    node = tls_node(start_node, ca, "all", "--tls-peer-name", "localhost", client=ca.leaf("c", 2))
    sock, conn = h2_call(node, ca)
    started = time.monotonic()
    events, closed = h2_read(sock, conn, until=lambda e: False)
    assert closed and time.monotonic() - started < 5, "closed at once, not kept (finding 2)"
    status, message = grpc_status(events)
    assert status == "16" and "requires a client certificate" in message, events
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), "a GOAWAY"


def test_a_connection_whose_certificate_a_reload_withdraws_is_closed(start_node, cas, tmp_path):
    kept, dropped = cas
    ca_file = bundle(tmp_path / "bundle.pem", kept, dropped)
    node = tls_node(start_node, kept, "all", "--tls-peer-name", "localhost", "--tls-poll", "1h",
                    ca_file=ca_file, client=kept.leaf("trusted", 2))
    sock, conn = h2_call(node, kept, dropped.leaf("untrusted", 3))
    events, closed = h2_read(sock, conn, until=lambda e: isinstance(e, h2.events.ResponseReceived))
    assert not closed, events
    bundle(ca_file, kept)
    node.proc.send_signal(signal.SIGHUP)  # reload
    later, closed = h2_read(sock, conn, until=lambda e: False)
    assert closed, "the connection is closed, not only its stream ended"
    status, message = grpc_status(events + later)
    assert status == "16" and "not signed by this node's CA" in message, later


def test_a_stream_ends_when_its_client_certificate_expires(start_node, cas):
    ca, _ = cas
    node = tls_node(start_node, ca, "all", "--tls-peer-name", "localhost", client=ca.leaf("c", 2))
    register(node, "web", "10.0.0.1", 80)
    short = ca.leaf("short", 3, seconds=4)
    s = ads(secure(node, ca, short))
    s.send(type_url=EDS, resource_names=["web"])
    assert cla(s.recv(timeout=10).resources[0]).cluster_name == "web"
    err = s.error(timeout=15)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    assert "expired" in err.details(), err.details()
