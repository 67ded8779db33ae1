"""Screenshot of the web page with a real result: how ``docs/images/web-page.png`` is made.

Against a running service (e.g. ``dehaze serve`` with the shipped model), in the system's headless Chromium:

    python -m tests.web.screenshot --url http://127.0.0.1:8000 \\
        --image ../shared/datasets/real-hazy/hongkong_input.png --out docs/images/web-page.png

It uploads the image through the page, waits for the result, leaves the before/after divider at ``--divider``
percent and saves the page (full length, or the first ``--height`` pixels) at ``--width`` pixels wide. The
committed picture was then shrunk with ``pngquant --quality 70-90 --speed 1`` (Debian package ``pngquant``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.web.test_page_browser import CHROMIUM_ARGS, find_chromium

logger = logging.getLogger(__name__)


def take(url: str, image: Path, out: Path, width: int, height: int, divider: int, timeout_s: float) -> float:
    """Upload ``image`` through the page at ``url``, wait for the result and save a screenshot to ``out``.

    Returns:
        Seconds from the click to the result.

    Raises:
        RuntimeError: when no Chromium is installed.
    """
    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found (Debian package chromium), or set CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height or 900}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            page.set_input_files("#file", str(image))
            started = time.perf_counter()
            page.click("#submit")
            page.wait_for_selector("#result[data-ready=true]", timeout=timeout_s * 1000)
            elapsed = time.perf_counter() - started
            page.fill("#compare-range", str(divider))
            page.dispatch_event("#compare-range", "input")
            page.evaluate("window.scrollTo(0, 0)")
            out.parent.mkdir(parents=True, exist_ok=True)
            if height:
                page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": width, "height": height})
            else:
                page.screenshot(path=str(out), full_page=True)
            return elapsed
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and take the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    parser.add_argument("--image", type=Path, required=True, help="the hazy photo to upload")
    parser.add_argument("--out", type=Path, default=Path("docs/images/web-page.png"))
    parser.add_argument("--width", type=int, default=1100, help="viewport width in CSS pixels")
    parser.add_argument("--height", type=int, default=0, help="crop to this height (0: the full page)")
    parser.add_argument("--divider", type=int, default=50, help="before/after divider position in percent")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    elapsed = take(args.url, args.image, args.out, args.width, args.height, args.divider, args.timeout_s)
    logger.info("result after %.1f s; saved %s", elapsed, args.out)


if __name__ == "__main__":
    main()
