"""Shared pytest fixtures: a real `discovery serve` process on 127.0.0.1, port 0."""

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def binary() -> str:
    """The `discovery` binary: $DISCOVERY_BIN, else the debug build of this checkout."""
    path = os.environ.get("DISCOVERY_BIN", str(ROOT / "target" / "debug" / "discovery"))
    if not Path(path).exists():
        pytest.fail(f"{path} does not exist: run `cargo build` first")
    return path


def xds_off(args) -> bool:
    """Whether `args` turn the xDS listener off; any other "off" (`--tls-client-auth off`)
    leaves it on, and the node prints its xDS line."""
    pairs = zip(args, args[1:])
    return "--xds-listen=off" in args or ("--xds-listen", "off") in pairs


class Node:
    """A running registry node; `url` is its base URL."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [binary(), "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"unexpected first line {line!r}")
        self.url = line.removeprefix("listening on ")
        # For an https:// node: the ssl.SSLContext its requests use (the test sets it).
        self.context = None
        # The gRPC xDS address (on a free port beside --listen's, unless --xds-listen off).
        self.xds = None
        if not xds_off(args):
            line = self.proc.stdout.readline().strip()
            if line.startswith("xds listening on "):
                self.xds = line.removeprefix("xds listening on ")

    def request(self, method: str, path: str, body=None, content_type=None, headers=None):
        """Returns (status, headers, body bytes); never raises on HTTP errors."""
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, bytes) else body.encode()
            if content_type:
                hdrs["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.context) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def register(self, service: str, **fields):
        """A JSON heartbeat; asserts it was taken."""
        status, _, body = self.request(
            "POST", f"/v1/registration/{service}", json.dumps(fields), "application/json"
        )
        assert status == 200, body
        return body

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def node():
    """A fresh single-node registry."""
    n = Node()
    yield n
    n.stop()


@pytest.fixture
def start_node():
    """Starts nodes with the given `serve` flags; all are stopped after the test."""
    nodes = []

    def start(*args: str) -> Node:
        n = Node(*args)
        nodes.append(n)
        return n

    yield start
    for n in nodes:
        n.stop()
