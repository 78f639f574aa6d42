"""Headless Chromium for browser tests: where it is, how it starts offline, and why a test skips."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.support.processes import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

CHROMIUM_VARIABLE = "PREDCACHE_CHROMIUM"
DEBIAN_CHROMIUM = "/usr/bin/chromium"
HOW_TO_ENABLE = f"install Debian's chromium (apt-get install chromium) or set {CHROMIUM_VARIABLE}=/path"
# Playwright drives the system's Chromium: `playwright install` would download a browser of its own.
HOW_TO_INSTALL_PLAYWRIGHT = "pip install -r requirements-dev.txt (not `playwright install`)"
ASYNC_UNSAFE_VARIABLE = "DJANGO_ALLOW_ASYNC_UNSAFE"
SCREENSHOTS = REPO / "var" / "screenshots"

# Flags that keep a headless Chromium from reaching anything but the server under test:
# no update checks, sync, field trials or first-run pings, and every host name other than
# 127.0.0.1 resolving to nothing, so a stray CDN link fails loudly instead of leaving the machine.
LAUNCH_ARGUMENTS = [
    "--headless",
    "--no-sandbox",  # the tests run as root in CI, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-features=OptimizationHints,MediaRouter,Translate",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def chromium_executable() -> str | None:
    """The Chromium to drive: $PREDCACHE_CHROMIUM, else Debian's /usr/bin/chromium; None if neither runs."""
    candidate = os.environ.get(CHROMIUM_VARIABLE) or DEBIAN_CHROMIUM
    resolved = shutil.which(candidate)
    return resolved if resolved and os.access(resolved, os.X_OK) else None


def unavailable_reason() -> str | None:
    """Why browser tests cannot run here (with how to enable them), or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"the playwright package is missing: {HOW_TO_INSTALL_PLAYWRIGHT}, and {HOW_TO_ENABLE}"
    if chromium_executable() is None:
        where = os.environ.get(CHROMIUM_VARIABLE) or DEBIAN_CHROMIUM
        return f"no Chromium at {where}; {HOW_TO_ENABLE}"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """A running headless Chromium, or the calling test is skipped with how to enable it."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop registered on this thread while it runs, which
    # Django takes for an async context and so refuses every ORM call of the test and its fixtures.
    # They are plain synchronous calls, so say so for as long as the browser runs, and no longer.
    previous = os.environ.get(ASYNC_UNSAFE_VARIABLE)
    os.environ[ASYNC_UNSAFE_VARIABLE] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_executable(), args=LAUNCH_ARGUMENTS)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if previous is None:
            del os.environ[ASYNC_UNSAFE_VARIABLE]
        else:
            os.environ[ASYNC_UNSAFE_VARIABLE] = previous


@dataclass
class PageWatch:
    """What a page did besides rendering: console errors, uncaught exceptions, every request's URL."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", self._request)
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def off_machine(self) -> list[str]:
        """Requests to anywhere but 127.0.0.1 (data: and about: URLs never leave the browser)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "about", "blob") and urlsplit(url).hostname != "127.0.0.1"
        ]


def screenshot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save the viewport (or the whole page) as var/screenshots/NAME.png (git-ignored); returns the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
