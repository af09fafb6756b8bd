"""The dashboard (`GET /`) in a real headless Chromium against real `discovery` processes:
it lists services, follows changes without a reload, shows hostile tag values as text,
marks draining and stale hosts, asks for the read token, and says when the node is not
ready. Screenshots are kept in tests/artifacts/."""

import re

from playwright.sync_api import expect

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'


def register(node, service, ip, port, revision="4f2a9c1", **fields):
    """A heartbeat (JSON) that must be taken."""
    node.register(service, ip=ip, port=port, revision=revision, **fields)


def service_row(page, name):
    return page.locator(f'#services tbody tr[data-service="{name}"]')


def test_page_lists_registered_services_with_their_counts(start_node, page):
    node = start_node()
    register(node, "payments", "10.0.0.7", 8080, tags={"az": "us-east-1a"})
    register(node, "payments", "10.0.0.8", 8080)
    register(node, "search", "10.0.1.1", 9000)

    page.goto(node.url + "/")

    expect(service_row(page, "payments")).to_contain_text("2")
    expect(service_row(page, "search")).to_be_visible()
    expect(page.locator("#n-services")).to_have_text("2")
    expect(page.locator("#n-hosts")).to_have_text("3")
    expect(page.locator("#ready")).to_have_text("ready")
    expect(page.locator("#env")).to_have_text("development")
    # The first service is selected: its hosts are listed with address:port and a ticking age.
    expect(page.locator("#hosts tbody tr")).to_have_count(2)
    expect(page.locator("#hosts tbody")).to_contain_text("10.0.0.7:8080")
    expect(page.locator("#hosts tbody tr").first.locator("td").last).to_have_text(re.compile(r"^\d+s ago$"))
    expect(page.locator("#peers-empty")).to_be_visible()
    # A lone node gossips with nobody: no unauthenticated-gossip warning.
    expect(page.locator("#gossip-auth")).to_be_hidden()
    assert page.errors == []


def test_page_follows_new_hosts_and_services_without_a_reload(start_node, page):
    node = start_node()
    register(node, "payments", "10.0.0.7", 8080)
    page.goto(node.url + "/#service=payments")
    expect(page.locator("#hosts tbody tr")).to_have_count(1)
    page.evaluate("window.__sameDocument = true")

    # A new host of the selected service arrives through the long poll...
    register(node, "payments", "10.0.0.9", 8081, revision="b7c1d00")
    expect(page.locator("#hosts tbody")).to_contain_text("10.0.0.9:8081", timeout=5000)
    expect(page.locator("#hosts tbody")).to_contain_text("b7c1d00")
    # ...and a new service through the periodic refresh.
    register(node, "checkout", "10.0.2.1", 7000)
    expect(service_row(page, "checkout")).to_be_visible(timeout=5000)
    expect(page.locator("#n-hosts")).to_have_text("3")

    # A deleted host leaves the list.
    status, _, _ = node.request("DELETE", "/v1/registration/payments/10.0.0.7")
    assert status == 200
    expect(page.locator("#hosts tbody tr")).to_have_count(1, timeout=5000)

    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert page.errors == []


def test_hostile_tag_values_are_shown_as_text_and_never_run(start_node, page, screenshot):
    node = start_node()
    tags = {"note": SCRIPT, "az": "us-east-1a", "region": "us-east-1", "canary": True, "load_balancing_weight": 30}
    register(node, "payments", "10.0.0.7", 8080, revision=IMG, tags=tags)
    register(node, "payments", "10.0.0.8", 8080, status="draining", tags={"az": "us-east-1b"})
    register(node, "payments", "2001:db8::1", 443, tags={"instance_id": "i-0abc"})
    register(node, "search", "10.0.1.1", 9000)

    page.goto(node.url + "/#service=payments")

    chip = page.locator("#hosts .chip", has_text=SCRIPT)
    expect(chip).to_be_visible()
    expect(chip).to_have_text("note=" + SCRIPT)
    expect(page.locator("#hosts tbody")).to_contain_text(IMG)
    assert page.locator("#hosts script, #hosts img").count() == 0
    assert page.locator("script").count() == 1, "only the page's own script exists"
    assert page.dialogs == [], f"a dialog fired: {page.dialogs}"

    # Draining hosts are marked; weights and IPv6 addresses are shown.
    draining = page.locator("#hosts tbody tr.draining")
    expect(draining).to_have_count(1)
    expect(draining).to_contain_text("10.0.0.8:8080")
    expect(draining.locator(".badge")).to_have_text("draining")
    expect(page.locator("#hosts tbody")).to_contain_text("[2001:db8::1]:443")
    expect(page.locator("#hosts tbody tr", has_text="10.0.0.7:8080").locator("td").nth(3)).to_have_text("30")

    page.wait_for_timeout(1500)  # let an age tick once, so the shot shows a live page
    screenshot(page, "dashboard.png")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "dashboard-dark.png")
    assert page.dialogs == []
    assert page.errors == []


def test_hosts_held_by_the_expiry_guard_are_highlighted(start_node, page, screenshot):
    node = start_node("--min-ttl", "1s", "--max-stale", "600s")
    for i in range(12):
        register(node, "payments", f"10.0.0.{i + 1}", 8080, ttl=2)
    # The guard's case: all 12 hosts go silent at once (the node lost contact with its
    # fleet). They go overdue into their grace together, the loss passes half of what the
    # node held, and the guard holds them. (Freezing the node no longer makes this case: a
    # node that notices it was stalled expires nothing for a while.)
    page.goto(node.url + "/#service=payments")

    expect(page.locator("#guard")).to_be_visible(timeout=15000)
    expect(page.locator("#n-stale")).to_have_text("12")
    expect(service_row(page, "payments")).to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator("#hosts tbody tr.stale")).to_have_count(12)
    screenshot(page, "dashboard-stale.png")
    assert page.errors == []


def test_page_asks_for_the_read_token_and_then_shows_the_registry(start_node, page, screenshot):
    node = start_node("--read-token", "s3cret")
    register(node, "payments", "10.0.0.7", 8080)

    page.goto(node.url + "/")
    expect(page.locator("#auth-banner")).to_be_visible()
    assert page.locator("#services tbody tr").count() == 0
    screenshot(page, "dashboard-token.png")

    page.fill("#token-input", "wrong")
    page.click("#auth-banner button[type=submit]")
    expect(page.locator("#auth-banner")).to_contain_text("refused")

    page.fill("#token-input", "s3cret")
    page.click("#auth-banner button[type=submit]")
    expect(service_row(page, "payments")).to_be_visible()
    expect(page.locator("#auth-banner")).to_have_count(0)
    expect(page.locator("#hosts tbody")).to_contain_text("10.0.0.7:8080")
    assert page.evaluate("sessionStorage.getItem('discovery.readToken')") == "s3cret"
    expect(page.locator("#ready")).to_have_text("ready")

    # Forgetting the token brings the prompt back.
    page.click("#token-button")
    expect(page.locator("#auth-banner")).to_be_visible()


def test_a_node_that_is_not_ready_is_shown_as_such(start_node, page):
    # A peer that never answers and a long warmup: the node stays not ready.
    node = start_node("--peers", "http://127.0.0.1:9", "--warmup", "10m")
    register(node, "payments", "10.0.0.7", 8080)

    page.goto(node.url + "/#service=payments")

    expect(page.locator("#ready")).to_have_text("not ready")
    expect(page.locator("#not-ready")).to_be_visible()
    # /v1/services still answers, so the service is listed; its host list answers 503.
    expect(service_row(page, "payments")).to_be_visible()
    assert page.errors == []


def test_hosts_appear_without_a_reload_once_the_node_becomes_ready(start_node, page):
    # No peer answers, so the node becomes ready when its warmup ends.
    node = start_node("--peers", "http://127.0.0.1:9", "--warmup", "4s")
    register(node, "payments", "10.0.0.7", 8080)
    page.goto(node.url + "/#service=payments")
    page.evaluate("window.__sameDocument = true")

    expect(page.locator("#ready")).to_have_text("ready", timeout=15000)
    expect(page.locator("#not-ready")).to_have_count(0)
    expect(page.locator("#hosts tbody")).to_contain_text("10.0.0.7:8080", timeout=10000)
    assert page.evaluate("window.__sameDocument") is True
    assert page.errors == []


def test_peers_are_shown_with_state_age_and_lag(start_node, page, screenshot):
    # b gossips with a (alive) and with an address where nothing listens (dead after a few
    # failed exchanges); then a stops and b stops counting it as alive.
    a = start_node("--gossip-interval", "100ms", "--node-id", "node-a")
    b = start_node("--gossip-interval", "100ms", "--node-id", "node-b", "--peers", f"{a.url},http://127.0.0.1:9")
    register(a, "payments", "10.0.0.7", 8080)

    page.goto(b.url + "/")

    alive = page.locator("#peers tbody tr", has_text=a.url)
    nobody = page.locator("#peers tbody tr", has_text="http://127.0.0.1:9")
    expect(alive.locator(".badge")).to_have_text("alive", timeout=10000)
    expect(alive).to_contain_text("node-a")
    expect(alive.locator("td").nth(3)).to_have_text(re.compile(r"^\d+s ago$"))
    expect(nobody.locator(".badge")).to_have_text("dead", timeout=10000)
    expect(nobody).to_contain_text("unknown")
    expect(nobody).to_contain_text("never")
    expect(page.locator("#n-peers")).to_have_text("1 / 2")
    expect(page.locator("#card-peers")).to_have_class(re.compile(r"\bbad\b"))
    expect(page.locator("#node")).to_have_text("node-b")
    # Peers and no --peer-token: the header says gossip is unauthenticated.
    expect(page.locator("#gossip-auth")).to_be_visible()
    expect(page.locator("#gossip-auth")).to_have_text("gossip unauthenticated")
    # a's host reached b by gossip and shows on b's page.
    expect(service_row(page, "payments")).to_be_visible(timeout=10000)
    screenshot(page, "dashboard-peers.png")

    a.stop()
    expect(alive.locator(".badge")).not_to_have_text("alive", timeout=10000)
    expect(page.locator("#n-peers")).to_have_text("0 / 2")
    assert page.errors == []


def test_page_lists_xds_clients_with_their_nacks_as_text(start_node, page):
    import queue

    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
    from google.rpc import status_pb2

    eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    node = start_node()
    register(node, "payments", "10.0.0.7", 8080)
    requests = queue.Queue()
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(grpc.insecure_channel(node.xds))
    call = stub.StreamAggregatedResources(iter(requests.get, None))
    ident = {"id": IMG, "cluster": "edge"}
    requests.put(discovery_pb2.DiscoveryRequest(node=ident, type_url=eds, resource_names=["payments"]))
    first = next(call)
    requests.put(discovery_pb2.DiscoveryRequest(
        node=ident, type_url=eds, resource_names=["payments"], response_nonce=first.nonce,
        error_detail=status_pb2.Status(code=3, message=SCRIPT)))

    page.goto(node.url + "/")
    row = page.locator("#xds tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").first).to_have_text(IMG)
    expect(row).to_contain_text("ads")
    expect(row).to_contain_text("ClusterLoadAssignment ×1")
    expect(row.locator("td").last).to_have_text("ClusterLoadAssignment: " + SCRIPT, timeout=5000)
    assert page.errors == []
    requests.put(None)
    call.cancel()
