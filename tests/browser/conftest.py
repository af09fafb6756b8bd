"""Fixtures for the dashboard tests: headless Chromium from Debian (`/usr/bin/chromium`)
driven by Playwright, and screenshots kept in tests/artifacts/ (gitignored). Playwright never
downloads a browser here: `executable_path` points at the system one. The nodes come from
`start_node` in tests/conftest.py.

Environment: CHROMIUM (default /usr/bin/chromium), DISCOVERY_BIN (see tests/conftest.py)."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"


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


@pytest.fixture
def screenshot():
    """`screenshot(page, name)` keeps a full-page screenshot as a test artifact."""

    def take(page, name):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
