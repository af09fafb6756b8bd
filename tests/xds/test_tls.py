"""xDS over TLS (issue 11): with --tls-cert/--tls-key the xDS port speaks TLS only, with the
HTTP port's certificate and client certificate policy. Streams checked message by message over
grpc.secure_channel; a client without a certificate under `all` refused with the reason; a
plaintext client failing at once with the cause; a CA swap ending the streams of clients the
new CA no longer trusts."""

import signal
import ssl
import time

import grpc
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
