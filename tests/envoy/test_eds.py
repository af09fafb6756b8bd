"""Every shape of the EDS answer validates against Envoy's own message definitions.

`envoy-data-plane` is generated from Envoy's protos; its `from_dict` is strict about field
names and types, and unpacking each `Any` checks the ClusterLoadAssignment itself.
"""

import json

import envoy_data_plane.envoy.config.endpoint.v3 as endpoint_v3  # registers the CLA type
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryResponse

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def eds(node, names, version=""):
    body = json.dumps(
        {
            "version_info": version,
            "node": {"id": "envoy-test", "cluster": "test", "locality": {"zone": "a"}},
            "resource_names": names,
            "type_url": CLA,
        }
    )
    return node.request("POST", "/v3/discovery:endpoints", body, "application/json")


def validated(raw: bytes):
    """Parses the answer as Envoy would and returns the unpacked assignments."""
    data = json.loads(raw)
    response = DiscoveryResponse.from_dict(data)
    assert response.type_url == CLA
    assignments = []
    for any_ in response.resources:
        assert any_.type_url == CLA
        cla = endpoint_v3.ClusterLoadAssignment().parse(any_.value)
        assignments.append(cla)
    # Nothing was dropped on the way: Envoy's parse of each resource gives back our JSON.
    for ours, theirs in zip(data["resources"], assignments):
        round_trip = theirs.to_dict(casing=__import__("betterproto2").Casing.SNAKE)
        ours = {k: v for k, v in ours.items() if k != "@type"}
        assert round_trip == ours, (round_trip, ours)
    return response, assignments


def test_every_host_shape_validates_against_envoy_definitions(node):
    node.register("shop", ip="10.0.0.1", port=80, revision="r1")
    node.register(
        "shop",
        ip="10.0.0.2",
        port=8080,
        revision="r1",
        tags={"az": "us-east-1a", "region": "us-east-1", "canary": True, "load_balancing_weight": 100},
    )
    node.register("shop", ip="10.0.0.3", port=65535, revision="r1", status="draining", tags={"region": "eu-west-1"})
    node.register("shop", ip="::1", port=1, revision="r1", tags={"az": "b", "canary": False, "load_balancing_weight": 1})
    node.register("other", ip="192.168.0.9", port=443, revision="r2", tags={"instance_id": "i-1"})
    status, _, _ = node.request(
        "POST", "/v1/loadbalancing/shop/10.0.0.1", "load_balancing_weight=55",
        "application/x-www-form-urlencoded",
    )
    assert status == 204

    status, _, raw = eds(node, ["shop", "other", "nobody"])
    assert status == 200
    response, assignments = validated(raw)
    assert [c.cluster_name for c in assignments] == ["shop", "other"]
    shop = assignments[0]
    endpoints = {
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value): (
            loc.locality.region,
            loc.locality.zone,
            lb.health_status.name,
            lb.load_balancing_weight,
        )
        for loc in shop.endpoints
        for lb in loc.lb_endpoints
    }
    assert endpoints == {
        ("10.0.0.1", 80): ("", "", "HEALTHY", 55),
        ("10.0.0.2", 8080): ("us-east-1", "us-east-1a", "HEALTHY", 100),
        ("10.0.0.3", 65535): ("eu-west-1", "", "DRAINING", 1),
        ("::1", 1): ("", "b", "HEALTHY", 1),
    }
    canaries = [
        lb.metadata.filter_metadata["envoy.lb"].fields["canary"].bool_value
        for loc in shop.endpoints
        for lb in loc.lb_endpoints
        if lb.metadata is not None and "envoy.lb" in lb.metadata.filter_metadata
    ]
    assert canaries == [True]

    # The version Envoy sends back gets 304 with no body.
    status, _, raw = eds(node, ["shop", "other", "nobody"], response.version_info)
    assert (status, raw) == (304, b"")


def test_a_service_without_hosts_gives_an_empty_resources_list_envoy_accepts(node):
    status, _, raw = eds(node, ["nobody"])
    assert status == 200
    response, assignments = validated(raw)
    assert assignments == []
