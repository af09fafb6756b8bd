"""Prometheus HTTP service discovery (`GET /v1/prometheus/targets`) read by the real Prometheus
binary (Debian's `prometheus` package): it shows the registry's hosts as targets, with their
labels, and follows changes (issue 12)."""

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PROMETHEUS = shutil.which("prometheus")
TOKEN = "pr0m-read"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.skipif(PROMETHEUS is None, reason="apt-get install prometheus (.ci/run does)")
def test_prometheus_discovers_the_registry_hosts_and_follows_changes(start_node):
    node = start_node("--read-token", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def register(ip, port, **tags):
        status, _, body = node.request(
            "POST", "/v1/registration/payments",
            json.dumps({"ip": ip, "port": port, "revision": "abc", "ttl": 600, "tags": tags}),
            "application/json", headers=auth)
        assert status == 200, body

    register("127.0.0.1", 9101, az="z1", region="r1", **{"team-name": "pay"})
    register("::1", 9102, az="z2", region="r1", canary=True)
    assert node.request("GET", "/v1/prometheus/targets")[0] == 401

    work = Path(tempfile.mkdtemp(prefix="prom-"))
    web = f"127.0.0.1:{free_port()}"
    (work / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: discovery
    http_sd_configs:
      - url: {node.url}/v1/prometheus/targets
        refresh_interval: 1s
        # Prometheus 2.42 sends the bare credentials in http_sd unless the type is spelled out.
        authorization:
          type: Bearer
          credentials: {TOKEN}
    relabel_configs:
      - source_labels: [__meta_discovery_service]
        target_label: service
      - source_labels: [__meta_discovery_az]
        target_label: az
      - source_labels: [__meta_discovery_tag_team_name]
        target_label: team
""")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address={web}"],
        stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "wb"))
    try:
        def targets():
            try:
                with urllib.request.urlopen(f"http://{web}/api/v1/targets", timeout=2) as r:
                    active = json.load(r)["data"]["activeTargets"]
            except OSError:
                return None
            return {t["labels"]["instance"]: t for t in active}

        found = wait_until(lambda: (t := targets()) and len(t) == 2 and t, 30,
                           "Prometheus to discover both hosts")
        assert set(found) == {"127.0.0.1:9101", "[::1]:9102"}
        v4 = found["127.0.0.1:9101"]
        assert v4["labels"]["service"] == "payments"
        assert v4["labels"]["az"] == "z1"
        assert v4["labels"]["team"] == "pay"
        assert v4["discoveredLabels"]["__meta_discovery_revision"] == "abc"
        assert v4["discoveredLabels"]["__meta_discovery_region"] == "r1"
        assert found["[::1]:9102"]["discoveredLabels"]["__meta_discovery_canary"] == "true"
        assert found["[::1]:9102"]["scrapeUrl"] == "http://[::1]:9102/metrics"

        # It follows the registry: a host goes, another comes.
        status, _, body = node.request("DELETE", "/v1/registration/payments/::1", headers=auth)
        assert status == 200, body
        register("127.0.0.2", 9103, az="z3")
        found = wait_until(
            lambda: (t := targets()) and set(t) == {"127.0.0.1:9101", "127.0.0.2:9103"} and t,
            30, "Prometheus to follow the change")
        assert found["127.0.0.2:9103"]["labels"]["az"] == "z3"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
