"""Hostile and odd uploads against a real ``dehaze serve`` process over TCP.

Each case of the corpus (``tests.reliability.corpus``) gets its defined answer from ``/dehaze`` and ``/density``:
200 with the image at its displayed size for valid odd images, a 4xx with the JSON error shape for the rest. Then
the whole corpus is sent again several times: the answers stay the same, the server stays healthy, and the
resident memory of the server's processes stops growing once the first round has warmed them up.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.reliability.conftest import Served
from tests.reliability.corpus import Case, build_corpus, bulk_case
from tests.reliability.processes import rss_bytes

logger = logging.getLogger(__name__)

ENDPOINTS = ("/dehaze", "/density")
MEMORY_ROUNDS = 5
BULK_REPEATS = 10
MEMORY_GROWTH_LIMIT = 48 * 1024 * 1024
"""Allowed RSS growth over ``MEMORY_ROUNDS`` rounds after a warm-up round. Each round moves about 20 MB of request
bodies through the whole path (the corpus plus ``BULK_REPEATS`` bulk uploads to each endpoint), so a server that
kept its uploads would grow by about 100 MB; allocator noise stays far below the limit."""


def send(client: httpx.Client, url: str, path: str, case: Case) -> httpx.Response:
    """POST the case's raw body and headers to ``path``."""
    return client.post(f"{url}{path}", content=case.body, headers=case.headers)


def expected_status(case: Case, path: str) -> int:
    """The status the case must get from ``path``."""
    if path == "/density" and case.density_status is not None:
        return case.density_status
    return case.status


def check_answer(response: httpx.Response, case: Case, path: str) -> None:
    """The status, and the JSON error shape (4xx) or the output size (200) of one answer."""
    status = expected_status(case, path)
    assert response.status_code == status, f"{case.name} on {path}: {response.status_code} {response.text[:300]}"
    if status >= 400:
        error = response.json()["error"]
        assert error["status"] == status and error["message"], error
    elif path == "/dehaze":
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == case.size
    else:
        body = response.json()
        assert (body["width"], body["height"]) == case.size
        fade = body["fade"]
        assert fade is None if case.fade_undefined else fade is not None and math.isfinite(fade), fade


def server_rss(served: Served) -> int:
    """RSS of the server process and of its children (the FADE pool)."""
    pid = served.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
    return rss_bytes(pid) + sum(rss_bytes(int(child)) for child in children)


def send_round(client: httpx.Client, url: str) -> None:
    """Every case and ``BULK_REPEATS`` bulk uploads to every endpoint, each answer checked."""
    for case in (*build_corpus(), *[bulk_case()] * BULK_REPEATS):
        for path in ENDPOINTS:
            check_answer(send(client, url, path, case), case, path)


def test_the_corpus_is_large_enough() -> None:
    cases = build_corpus()
    assert len(cases) >= 25
    assert {case.status for case in cases} == {200, 413, 415, 422}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", build_corpus(), ids=lambda case: case.name)
def test_upload_gets_its_defined_answer(served: Served, case: Case, path: str) -> None:
    with httpx.Client(timeout=60) as client:
        check_answer(send(client, served.url, path, case), case, path)
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200


@pytest.mark.slow
def test_repeated_corpus_keeps_the_server_healthy_and_its_memory_bounded(served: Served) -> None:
    with httpx.Client(timeout=60) as client:
        send_round(client, served.url)  # warm-up: allocator arenas, codec and model caches
        before = server_rss(served)
        for _ in range(MEMORY_ROUNDS):
            send_round(client, served.url)
        after = server_rss(served)
        assert client.get(f"{served.url}/readyz").status_code == 200
        good = next(case for case in build_corpus() if case.name == "progressive-jpeg")
        check_answer(send(client, served.url, "/dehaze", good), good, "/dehaze")
    growth = after - before
    logger.info("server RSS %.1f MiB -> %.1f MiB after %d rounds", before / 2**20, after / 2**20, MEMORY_ROUNDS)
    assert growth < MEMORY_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB over {MEMORY_ROUNDS} rounds"
