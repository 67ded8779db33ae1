"""The web page and /docs in a real headless Chromium, against a live ``dehaze serve`` with the tiny model.

The browser is the system's Chromium (Debian packages ``chromium`` and ``chromium-driver``, installed by
``.ci/run``), driven by Playwright through ``executable_path``: Playwright never downloads a browser here. The
tests are skipped, with the reason, only when no Chromium executable is found.

Every request the browser makes outside the server under test is aborted and recorded, so the pages are
proven to work offline (no CDN), and every Content-Security-Policy violation and page error is recorded and
fails the test, so the strict policy is proven to hold for the page's own code and for Swagger UI.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, expect, sync_playwright

from tests.reliability.processes import ServiceProcess, service_env, service_process, wait_http_ready
from tests.service.live_server import free_port, tiny_model, tiny_weights, wait_until

__all__ = ["tiny_model", "tiny_weights"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
HAZY = REPO.parent / "shared" / "datasets" / "sots-indoor-train" / "hazy" / "1400_3.webp"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Flags for a quiet, offline, unprivileged headless Chromium (no sandbox: CI runs as root in a container)."""

SERVER_START_TIMEOUT_S = 600.0
"""How long ``dehaze serve`` may take to be ready (import torch, load and warm the model, start the FADE pool)."""

RESULT_TIMEOUT_MS = 180_000
"""How long a page may take to show a result (the tiny model, on a busy 2-core CPU, under nice)."""

_RECORD_PROBLEMS = """
window.__problems = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__problems.push(`CSP: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`);
});
"""


def find_chromium() -> str | None:
    """The system Chromium: ``$CHROMIUM`` if set, else ``chromium`` or ``chromium-browser`` on the PATH."""
    override = os.environ.get("CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """A headless system Chromium for this module (skips when none is installed)."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found (install the Debian packages chromium and chromium-driver, or set CHROMIUM)")
    playwright: Playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@dataclass(frozen=True)
class Server:
    """A running ``dehaze serve``: its base URL and its process."""

    url: str
    process: ServiceProcess

    def wait_ready(self) -> None:
        """Wait until ``/readyz`` is 200: the model is loaded and warm and the FADE pool has started."""
        wait_http_ready(self.url, self.process, timeout_s=SERVER_START_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: tuple[Path, Path]) -> Iterator[Server]:
    """``dehaze serve`` on a free port with the tiny model, answering HTTP (not necessarily ready yet).

    Only the upload test needs the model and the FADE pool, and waits for them itself (``Server.wait_ready``):
    the pages, the error paths and /docs work as soon as HTTP is up.
    """
    port = free_port()
    env = service_env(tiny_model, port=port, max_batch_wait_ms=5)
    log = tmp_path_factory.mktemp("web-serve") / "serve.log"
    with service_process(["serve"], env, log) as child:
        running = Server(f"http://127.0.0.1:{port}", child)

        def answers() -> bool:
            if not child.running():
                raise AssertionError(f"the service exited with {child.process.returncode}:\n{child.log()[-3000:]}")
            return httpx.get(f"{running.url}/healthz", timeout=5).status_code == 200

        wait_until(answers, SERVER_START_TIMEOUT_S, f"{running.url}/healthz")
        try:
            yield running
        finally:
            # a graceful stop closes the FADE pool too (a plain kill would leave its processes behind)
            child.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout_s=60)


class Session:
    """One browser context on the server: its page, the outside requests it tried, its problems."""

    def __init__(self, context: BrowserContext, base_url: str) -> None:
        self.context = context
        self.base_url = base_url
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        context.add_init_script(_RECORD_PROBLEMS)
        context.route("**/*", self._only_the_server)
        self.page: Page = context.new_page()
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("request", lambda request: self.requests.append(f"{request.method} {request.url}"))

    def _only_the_server(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.base_url):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def problems(self) -> list[str]:
        """Outside requests, CSP violations and page errors so far (empty when all is well)."""
        recorded = self.page.evaluate("window.__problems || []")
        return [*(f"outside request: {url}" for url in self.outside), *recorded, *self.errors]


@pytest.fixture
def session(chromium: Browser, server: Server) -> Iterator[Session]:
    """A fresh desktop-sized browser context (nothing shared between tests) on the live server."""
    context = chromium.new_context(base_url=server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True)
    try:
        yield Session(context, server.url)
    finally:
        context.close()


def _natural_width(page: Page, selector: str) -> int:
    return int(page.eval_on_selector(selector, "img => img.complete ? img.naturalWidth : 0"))


def _download(page: Page, selector: str) -> Image.Image:
    """Click a download link; the file it gives, decoded."""
    with page.expect_download() as info:
        page.click(selector)
    data = Path(info.value.path()).read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.skipif(not HAZY.is_file(), reason=f"the shared data set is missing ({HAZY})")
def test_upload_shows_every_output_and_downloads_decode(server: Server, session: Session, tmp_path: Path) -> None:
    server.wait_ready()
    page = session.page
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_disabled("#submit")

    page.set_input_files("#file", str(HAZY))
    expect(page.locator("#preview-info")).to_contain_text("620 × 460 px")

    started = time.perf_counter()
    # two submits in a row (as a double click or a repeated Enter would): one request only
    page.eval_on_selector("#upload", "form => { form.requestSubmit(); form.requestSubmit(); }")
    assert page.is_disabled("#submit")
    assert page.is_visible("#progress-row")
    expect(page.locator("#elapsed")).to_have_text(re.compile(r"^\d+\.\d s$"))
    page.wait_for_selector("#result[data-ready=true]", timeout=RESULT_TIMEOUT_MS)
    elapsed = time.perf_counter() - started
    logger.info("result shown %.1f s after the upload", elapsed)
    assert [r for r in session.requests if r.startswith("POST")] == [f"POST {session.base_url}/dehaze?response=json"]
    assert page.is_enabled("#submit")

    for selector in ("#compare-before", "#compare-after", "#input-img", "#output-img", "#depth-img"):
        assert _natural_width(page, selector) == 620, selector
    fade_in, fade_out = float(page.inner_text("#fade-in")), float(page.inner_text("#fade-out"))
    assert math.isfinite(fade_in) and math.isfinite(fade_out)
    assert "lower means less haze" in page.inner_text("#fade-meaning")
    assert page.inner_text("#model").startswith("dcmpnet_tiny (version ")
    assert page.inner_text("#model").endswith(", licence MIT)")
    assert "620 × 460 px" in page.inner_text("#size")
    assert "Network" in page.inner_text("#timings")

    # the before/after slider follows the keyboard
    page.focus("#compare-range")
    page.keyboard.press("Home")
    assert page.eval_on_selector("#compare", "el => el.style.getPropertyValue('--pos')") == "0%"
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#compare", "el => el.style.getPropertyValue('--pos')") == "1%"

    png = _download(page, "#download-png")
    assert (png.format, png.size, png.mode) == ("PNG", (620, 460), "RGB")
    jpeg = _download(page, "#download-jpeg")
    assert (jpeg.format, jpeg.size) == ("JPEG", (620, 460))
    webp = _download(page, "#download-webp")
    assert (webp.format, webp.size) == ("WEBP", (620, 460))
    depth = _download(page, "#download-depth")
    assert (depth.format, depth.size) == ("PNG", (620, 460))
    assert depth.mode.startswith("I")  # 16-bit greyscale

    page.screenshot(path=str(tmp_path / "web-page.png"), full_page=True)
    # a phone-sized screen: nothing wider than the viewport
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(tmp_path / "web-page-phone.png"), full_page=True)
    assert (tmp_path / "web-page.png").stat().st_size > 10_000
    assert session.problems() == []


def test_a_dropped_text_file_shows_the_415_message_and_the_page_stays_usable(session: Session) -> None:
    page = session.page
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    # drag and drop, as a user would from a file manager
    transfer = page.evaluate_handle(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["just some words\\n"], "notes.txt", { type: "text/plain" }));
            return transfer;
        }"""
    )
    page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    expect(page.locator("#preview-info")).to_contain_text("cannot show a preview")
    assert "notes.txt" in page.inner_text("#preview-info")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    assert "This file is not an image the service can read." in page.inner_text("#error-title")
    assert "PNG, JPEG, WebP" in page.inner_text("#error-detail")
    assert page.is_enabled("#submit")
    assert page.is_hidden("#result")
    assert session.problems() == []


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (413, {}, {"error": {"status": 413, "message": "the upload exceeds 1 bytes"}}, "too large"),
        (422, {}, {"error": {"status": 422, "message": "broken image"}}, "could not be read"),
        (503, {"Retry-After": "7"}, {"error": {"status": 503, "message": "queue full"}}, "Try again in 7 s"),
        (504, {}, {"error": {"status": 504, "message": "no result in time"}}, "did not finish in time"),
        (502, {}, "<html><body>Bad gateway</body></html>", "HTTP 502"),
    ],
)
def test_api_errors_become_readable_messages(
    session: Session, status: int, headers: dict[str, str], body: object, expected: str
) -> None:
    """Each error status the API documents (answered here by the browser's network layer) reads as a sentence."""
    page = session.page

    def answer(route: Route) -> None:
        if isinstance(body, str):
            route.fulfill(status=status, headers=headers, content_type="text/html", body=body)
        else:
            route.fulfill(status=status, headers=headers, json=body)

    page.route("**/dehaze?response=json", answer)
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#file", files=[{"name": "a.png", "mimeType": "image/png", "buffer": _png(8, 8)}])
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert expected in page.inner_text("#error")
    assert "{" not in page.inner_text("#error")  # never raw JSON
    assert page.is_enabled("#submit")
    assert session.problems() == []


def test_a_401_asks_for_the_key_and_sends_it_as_bearer_token(session: Session) -> None:
    page = session.page
    seen: list[str | None] = []

    def answer(route: Route) -> None:
        authorization = route.request.headers.get("authorization")
        seen.append(authorization)
        if authorization != "Bearer secret-key":
            message = {"error": {"status": 401, "message": "a valid API key is required"}}
            route.fulfill(status=401, headers={"WWW-Authenticate": "Bearer"}, json=message)
        else:
            route.fulfill(status=503, headers={"Retry-After": "1"}, json={"error": {"status": 503, "message": "busy"}})

    page.route("**/dehaze?response=json", answer)
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_hidden("#key-row")  # this server has no keys: no field until a 401 says one is needed
    page.set_input_files("#file", files=[{"name": "a.png", "mimeType": "image/png", "buffer": _png(8, 8)}])
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "needs an API key" in page.inner_text("#error-title")
    assert page.is_visible("#api-key")
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.keyboard.type("secret-key")
    page.keyboard.press("Enter")  # submits the form from the keyboard
    expect(page.locator("#error-title")).to_contain_text("busy")
    assert seen == [None, "Bearer secret-key"]
    assert session.problems() == []


def test_docs_list_the_operations_offline(session: Session) -> None:
    page = session.page
    page.goto("/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/dehaze", "/depth", "/density", "/healthz", "/readyz", "/metrics"} <= {p.strip() for p in paths}
    # "Try it out" works too: Swagger UI's request goes to this origin, as the policy allows
    page.locator(".opblock-summary", has_text="/healthz").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    status = page.locator(".live-responses-table tr.response .response-col_status").first
    expect(status).to_have_text("200", timeout=30_000)
    assert session.problems() == []


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(buffer, format="PNG")
    return buffer.getvalue()
