"""Browser fixtures: one real `keysat serve` in development (sandbox) mode for the whole
session, Debian's Chromium driven by Playwright, and a page watcher that fails a test on
any dialog, console error, uncaught exception, CSP violation or request to another host.

Screenshots go to test-artifacts/browser/ at phone (390x844) and desktop (1280x800) size.
Without /usr/bin/chromium the tests are skipped; under CI (CI=true) that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Route,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from e2e.harness import ADMIN_KEY, KeysatServer, launch_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The browser leg runs beside the database legs on a busy machine; Playwright's 5 s default
# for an expectation to come true is too tight there. It still fails a page that never shows.
expect.set_options(timeout=20_000)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} not found, and CI never skips the browser tests")
        pytest.skip(f"browser leg skipped: {CHROMIUM} not found")
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium(chromium_path: Path) -> Iterator[Browser]:
    """Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running
    in this thread while it lives, and later tests that call asyncio.run() would fail."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def keysat(tmp_path_factory: pytest.TempPathFactory, chromium_path: Path) -> Iterator[KeysatServer]:
    """One development-mode server for the session; tests add their own products."""
    with launch_server(
        tmp_path_factory.mktemp("keysat-browser"), {"KEYSAT_ENV": "development"}
    ) as server:
        yield server


@dataclass
class Watch:
    """What a page did that a test must never see."""

    origin: str
    problems: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        """Chromium logs every 4xx answer as an error; those of the JSON API are answers
        the page's script reads and shows (a refused recovery is a 404), not faults."""
        if message.type != "error":
            return
        url = message.location.get("url", "")
        # An admin screen that refuses a form answers 4xx with the page re-rendered around
        # the server's message; Chromium logs the status, the page shows the message.
        api_answer = message.text.startswith("Failed to load resource") and url.startswith(
            (f"{self.origin}/v1/", f"{self.origin}/admin/")
        )
        if not api_answer:
            self.problems.append(f"console error: {message.text}")

    def dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog ({dialog.type}): {dialog.message}")
        dialog.dismiss()

    def page_error(self, error: PlaywrightError) -> None:
        self.problems.append(f"uncaught exception: {error}")

    def route(self, route: Route) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
            return
        self.problems.append(f"request to another host: {route.request.url}")
        route.abort()

    def attach(self, page: Page) -> None:
        page.on("console", self.console)
        page.on("dialog", self.dialog)
        page.on("pageerror", self.page_error)


@dataclass
class Browse:
    """Opens watched pages; `check()` fails on anything a watcher saw."""

    browser: Browser
    base_url: str
    contexts: list[BrowserContext] = field(default_factory=list)
    watch: Watch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = Watch(self.base_url)

    def page(self, *, javascript: bool = True, viewport: dict[str, int] = DESKTOP) -> Page:
        context = self.browser.new_context(
            base_url=self.base_url,
            viewport=viewport,  # type: ignore[arg-type]
            java_script_enabled=javascript,
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.base_url)
        context.route("**/*", self.watch.route)
        context.on("page", self.watch.attach)
        self.contexts.append(context)
        page = context.new_page()
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browse(chromium: Browser, keysat: KeysatServer) -> Iterator[Browse]:
    session = Browse(chromium, keysat.base_url)
    yield session
    session.close()
    assert session.watch.problems == []


@pytest.fixture
def shoot() -> Callable[[Page, str], None]:
    """Full-page screenshots of the page's current state at desktop and phone width."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        original = page.viewport_size or DESKTOP
        scrolled = page.evaluate("() => [window.scrollX, window.scrollY]")
        # A full-page shot of a scrolled page draws the sticky sidebar and top bar where the
        # window was, half-way down the picture.
        page.evaluate("() => window.scrollTo(0, 0)")
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)  # type: ignore[arg-type]
            # The phone layout slides the sidebar away with a transition; without this the
            # shot catches it half-way across the page.
            page.screenshot(
                path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True, animations="disabled"
            )
        page.set_viewport_size(original)  # type: ignore[arg-type]
        page.evaluate("([x, y]) => window.scrollTo(x, y)", scrolled)

    return take


def admin_login(page: Page, next_path: str = "/admin/") -> Page:
    """Sign in to the admin UI the way an operator does on first run: the login form with
    the admin API key."""
    page.goto(f"/admin/login?next={next_path}")
    if page.locator("details.key-login").count():
        page.click("details.key-login summary")
    page.fill("#api_key", ADMIN_KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_url(f"**{next_path}")
    return page


@pytest.fixture
def admin(browse: Browse) -> Page:
    """A signed-in admin page with JavaScript on."""
    return admin_login(browse.page())


@pytest.fixture
def admin_nojs(browse: Browse) -> Page:
    """A signed-in admin page with JavaScript off."""
    return admin_login(browse.page(javascript=False))
