"""Fixtures for the dashboard tests: real `discovery serve` processes on 127.0.0.1 port 0, and
headless Chromium from Debian (`/usr/bin/chromium`) driven by Playwright. Playwright never
downloads a browser here: `executable_path` points at the system one.

Environment: DISCOVERY_BIN (default target/debug/discovery), CHROMIUM (default
/usr/bin/chromium). Screenshots go to tests/artifacts/ (gitignored)."""

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"


class Node:
    """A running `discovery serve`; `url` is its base URL."""

    def __init__(self, args):
        binary = os.environ.get("DISCOVERY_BIN", str(ROOT / "target" / "debug" / "discovery"))
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "DISCOVERY_LOG": "warn"},
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), f"unexpected first line {line!r}"
        self.url = line.removeprefix("listening on ")

    def request(self, method, path, form=None, token=None):
        """Sends a request; returns (status, body text)."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                return res.status, res.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def register(self, service, ip, port, revision="4f2a9c1", tags=None, token=None, **extra):
        form = {"ip": ip, "port": str(port), "revision": revision, **extra}
        if tags is not None:
            form["tags"] = json.dumps(tags)
        status, body = self.request("POST", f"/v1/registration/{service}", form, token)
        assert status == 200, f"heartbeat refused: {status} {body}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start_node():
    """Starts nodes with the given flags; all are stopped after the test."""
    nodes = []

    def start(*args):
        node = Node(list(args))
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=["--no-sandbox"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page that records every dialog (none may open) and every page error."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.errors = []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def screenshot(page, name):
    """Keeps a full-page screenshot as a test artifact; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
