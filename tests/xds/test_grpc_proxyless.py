"""gRPC's own xDS client (grpcio resolving `xds:///SERVICE`) against the registry's xDS server,
calling real gRPC backends registered in the registry (issue 12).

gRPC reads its bootstrap once per process, so this file runs in its own interpreter
(tests/run.sh starts it alone) and holds one registry for the module.
"""

import json
import os
import tempfile
import time
from concurrent import futures

import grpc
import pytest

from test_streams import wait_until

SERVICE = "echo"
METHOD = "/test.Echo/Who"


class Backend:
    """A real gRPC server answering its own name."""

    def __init__(self, name: str):
        self.name = name
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: name.encode())
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", {"Who": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(None)


def call(stub) -> str:
    return stub(b"", timeout=2).decode()


def test_grpc_xds_client_follows_the_registry_and_survives_its_loss(start_node):
    node = start_node()
    assert node.xds, "the node printed its xds address"
    backends = [Backend(f"b{i}") for i in range(4)]
    try:
        for b in backends[:3]:
            node.register(SERVICE, ip="127.0.0.1", port=b.port, revision="r1", ttl=600,
                          tags={"az": "z1", "region": "r"})
        bootstrap = {
            "xds_servers": [{
                "server_uri": node.xds,
                "channel_creds": [{"type": "insecure"}],
                # fail_on_data_errors: a resource left out of an answer is deleted (gRFC
                # A88), as in gRPC before 1.7x, so the restart below would show it.
                "server_features": ["xds_v3", "fail_on_data_errors"],
            }],
            "node": {"id": "pytest-grpc-client", "cluster": "tests"},
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(bootstrap, f)
        os.environ["GRPC_XDS_BOOTSTRAP"] = f.name
        channel = grpc.insecure_channel(f"xds:///{SERVICE}")
        stub = channel.unary_unary(METHOD)

        # Spreads calls over every registered backend.
        seen = set()
        wait_until(lambda: seen.add(call(stub)) or seen == {"b0", "b1", "b2"}, 15,
                   "calls to reach all three backends")

        # The registry lists it as an xDS client with its node id and ACKed types.
        status, _, body = node.request("GET", "/v1/xds/clients")
        assert status == 200
        clients = json.loads(body)["clients"]
        mine = [c for c in clients if c["node_id"] == "pytest-grpc-client"]
        assert mine, clients
        acked = {t["type_url"].rsplit(".", 1)[-1] for t in mine[0]["types"] if t.get("acked_version")}
        assert {"Listener", "Cluster", "ClusterLoadAssignment"} <= acked, mine

        # A deregistered backend stops getting calls within a second.
        status, _, body = node.request(
            "DELETE", f"/v1/registration/{SERVICE}/127.0.0.1?port={backends[0].port}")
        assert status == 200, body
        removed_at = time.monotonic()

        def avoided():
            return all(call(stub) != "b0" for _ in range(12))
        wait_until(avoided, 1.0, "b0 to stop getting calls")
        assert time.monotonic() - removed_at < 1.0

        # A new one is picked up.
        node.register(SERVICE, ip="127.0.0.1", port=backends[3].port, revision="r1", ttl=600,
                      tags={"az": "z2", "region": "r"})
        seen = set()
        wait_until(lambda: seen.add(call(stub)) or "b3" in seen, 2.0, "calls to reach b3")

        # The registry restarts empty (alone, so ready at once): the client reconnects,
        # keeps its Listener and Cluster (their content depends on the name only, so nothing
        # is resent) and calls on. The bootstrap asks for deletions to be honoured: an
        # answer without them would delete them and fail every call.
        node.stop()
        node = start_node("--xds-listen", node.xds)

        def acked(types):
            _, _, body = node.request("GET", "/v1/xds/clients")
            mine = [c for c in json.loads(body)["clients"]
                    if c["node_id"] == "pytest-grpc-client"]
            return bool(mine) and types <= {
                t["type_url"].rsplit(".", 1)[-1] for t in mine[0]["types"]
                if t.get("acked_version")}
        wait_until(lambda: call(stub) and acked(set()) and call(stub), 15,
                   "the client to reconnect to the restarted node, calls answered meanwhile")
        node.register(SERVICE, ip="127.0.0.1", port=backends[1].port, revision="r1", ttl=600,
                      tags={"az": "z1", "region": "r"})
        # Endpoints come after the listener and cluster on the stream: once they are ACKed,
        # whatever the restarted node said about the others has been said.
        wait_until(lambda: call(stub) and acked({"ClusterLoadAssignment"}), 15,
                   "the client to ACK the restarted node's endpoints")
        wait_until(lambda: {call(stub) for _ in range(6)} == {"b1"}, 2.0,
                   "calls to follow the restarted node's endpoints")

        # Every registry node down: the client keeps calling the last known backends.
        node.stop()
        answers = {call(stub) for _ in range(30)}
        assert answers == {"b1"}, answers
        channel.close()
    finally:
        for b in backends:
            b.stop()
