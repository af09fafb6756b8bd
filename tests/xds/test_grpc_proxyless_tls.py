"""gRPC's own xDS client resolving `xds:///SERVICE` against a registry whose xDS port speaks
mutual TLS only (`--tls-client-auth all`): the bootstrap's `tls` channel credentials (gRFC A65)
carry the CA and the client's certificate.

gRPC reads its bootstrap once per process, so this file runs in its own interpreter
(tests/run.sh starts it alone)."""

import json
import os
import ssl

import grpc

from test_grpc_proxyless import METHOD, SERVICE, Backend, call, wait_until
from tls_certs import Ca


def test_grpc_xds_client_resolves_through_a_mutual_tls_registry(start_node, tmp_path):
    ca = Ca(tmp_path, "mesh")
    client = ca.leaf("checkout", 2)
    node = start_node(*ca.leaf("node", 1).serve_args(), "--tls-ca", str(ca.pem),
                      "--tls-client-auth", "all", "--tls-peer-name", "localhost")
    node.context = ssl.create_default_context(cafile=str(ca.pem))
    node.context.load_cert_chain(str(client.cert), str(client.key))
    backends = [Backend(f"b{i}") for i in range(2)]
    try:
        for b in backends:
            node.register(SERVICE, ip="127.0.0.1", port=b.port, revision="r1", ttl=600,
                          tags={"az": "z1", "region": "r"})
        host, port = node.xds.rsplit(":", 1)
        bootstrap = {
            "xds_servers": [{
                # The node's certificate names localhost (and 127.0.0.1).
                "server_uri": f"localhost:{port}",
                "channel_creds": [{"type": "tls", "config": {
                    "ca_certificate_file": str(ca.pem),
                    "certificate_file": str(client.cert),
                    "private_key_file": str(client.key),
                }}],
                "server_features": ["xds_v3"],
            }],
            "node": {"id": "pytest-grpc-tls-client", "cluster": "tests"},
        }
        path = tmp_path / "bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        os.environ["GRPC_XDS_BOOTSTRAP"] = str(path)
        channel = grpc.insecure_channel(f"xds:///{SERVICE}")
        stub = channel.unary_unary(METHOD)
        seen = set()
        wait_until(lambda: seen.add(call(stub)) or seen == {"b0", "b1"}, 15,
                   "calls to reach both backends through the TLS registry")
        status, _, body = node.request("GET", "/v1/xds/clients")
        assert status == 200, body
        assert any(c["node_id"] == "pytest-grpc-tls-client"
                   for c in json.loads(body)["clients"]), body
        channel.close()
    finally:
        for b in backends:
            b.stop()
