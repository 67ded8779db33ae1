"""One small request must never stall the API, hold a worker for minutes, or lose a request (issue 13).

One test per class of defect, each over a real server, each while a separate process polls ``/healthz``, which must
answer within ``HEALTHZ_LIMIT_S`` (100 ms) throughout:

1. header-heavy uploads (hundreds of thousands of empty markers, chunks or blocks) are refused with 422 within the
   parsing budget, off the event loop;
2. a lying header (a 700-byte JPEG claiming a megapixel) fails fast; a job whose client went away, or whose deadline
   passed, stops between forwards; a thin image whose tiles are mostly padding is refused before any work;
3. FADE of extreme aspect ratios (1×1,000,000 and 1,000,000×1) is bounded in time and memory;
4. a result Redis cannot store (maxmemory) is answered once with 503 and never computed again;
5. slow clients (partial headers, a body shorter than its Content-Length, many such connections) are cut off in
   seconds, raw sockets against ``dehaze api``;
6. malformed fields (a PNG transparency chunk longer than its palette, a BMP with a negative width or a height of
   INT_MIN) are 422 at once (the hostile corpus, ``tests.reliability.corpus``, checks them on every endpoint).

Classes 7 and 8 (``dehaze run``) are in ``tests/service/test_commands.py``.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.reliability.conftest import Served
from tests.reliability.corpus import (
    FORM,
    Part,
    bmp_with_size,
    header_heavy,
    lying_jpeg,
    multipart,
    png_with_long_transparency,
    thin_png,
)
from tests.reliability.health import probing_healthz
from tests.reliability.processes import (
    PREFIX,
    STREAM,
    ServiceProcess,
    assert_nothing_left,
    pending_by_consumer,
    rss_bytes,
    service_env,
    service_process,
    start_workers,
    wait_http_ready,
)
from tests.reliability.traffic import expect_error
from tests.service.live_server import free_port, image_bytes, live_server, model_settings, wait_until

FAST_WORK = 2.0
"""Seconds within which a refused upload must be answered (the old code took seconds to minutes for each)."""


def post(url: str, path: str, data: bytes, timeout: float = 30) -> httpx.Response:
    """POST ``data`` as the ``image`` file."""
    return httpx.post(
        f"{url}{path}", files={"image": ("upload.bin", data, "application/octet-stream")}, timeout=timeout
    )


def metric(url: str, name: str, labels: str = "") -> float:
    """The value of one sample of ``url``/metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def forwards(url: str) -> float:
    """Forward passes run by the worker so far."""
    return metric(url, "dehaze_batch_size_count")


# -- 1. header parsing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PNG-AFTER", "GIF", "WEBP"])
def test_header_heavy_uploads_are_refused_within_the_budget_off_the_event_loop(served: Served, fmt: str) -> None:
    data = header_heavy(fmt, {"JPEG": 240_000, "WEBP": 110_000, "GIF": 190_000}.get(fmt, 75_000))  # just under 1 MB
    with probing_healthz(served.url) as probe:
        for path in ("/dehaze", "/density"):
            started = time.monotonic()
            message = expect_error(post(served.url, path, data), 422)
            assert time.monotonic() - started < FAST_WORK
            assert "refused to bound the work" in message
    probe.check()


# -- 6. malformed fields get 422 (the corpus checks every endpoint; here /healthz is measured too) ------------------
MALFORMED = {
    "png-transparency-longer-than-palette": png_with_long_transparency,
    "bmp-negative-width": lambda: bmp_with_size(-4, 4),
    "bmp-height-int-min": lambda: bmp_with_size(4, -(2**31)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fields_are_422_at_once(served: Served, name: str) -> None:
    data = MALFORMED[name]()
    with probing_healthz(served.url) as probe:
        for path in ("/dehaze", "/density"):
            started = time.monotonic()
            expect_error(post(served.url, path, data), 422)
            assert time.monotonic() - started < FAST_WORK, name
    probe.check()


# -- 2. cost bounded by bytes; abandoned work stops ----------------------------------------------------------------
def test_a_header_claiming_more_pixels_than_its_data_can_hold_fails_fast(served: Served) -> None:
    data = lying_jpeg(1000, 1000)
    assert len(data) < 1000
    before = forwards(served.url)
    with probing_healthz(served.url) as probe:
        for path in ("/dehaze", "/depth", "/density"):
            started = time.monotonic()
            message = expect_error(post(served.url, path, data), 422)
            assert time.monotonic() - started < FAST_WORK
            assert "1000x1000" in message
    probe.check()
    assert forwards(served.url) == before


def test_a_thin_image_whose_tiles_are_padding_is_refused_before_any_work(served: Served) -> None:
    """1×1,000,000 is within the megapixel limit, but its tiles compute 32 times its pixels."""
    before = forwards(served.url)
    uploads = (thin_png(1, 1_000_000), thin_png(1_000_000, 1))  # built before probing: the probe shares our GIL
    with probing_healthz(served.url) as probe:
        for data in uploads:
            started = time.monotonic()
            message = expect_error(post(served.url, "/dehaze", data), 413)
            assert time.monotonic() - started < FAST_WORK
            assert "pixels of model work" in message
    probe.check()
    assert forwards(served.url) == before


def heavy_upload() -> bytes:
    """A textured 1000×1000 JPEG under the served limits: 81 tiles of 128², about 21 forwards of 4."""
    return image_bytes(1000, 1000, fmt="JPEG", seed=13)


def test_a_job_whose_client_disconnected_stops_between_forwards(served: Served) -> None:
    url = served.url
    cancelled_jobs = metric(url, "dehaze_jobs_total", '{outcome="cancelled"}')
    skipped = metric(url, "dehaze_cancelled_tiles_total")
    body = multipart([Part("image", heavy_upload())])
    head = f"POST /dehaze HTTP/1.1\r\nHost: test\r\nContent-Type: {FORM['Content-Type']}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with probing_healthz(url) as probe:
        before = forwards(url)
        client = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        client.sendall(head.encode() + body)
        wait_until(lambda: forwards(url) >= before + 2, 60, "the job's first forwards")
        client.close()  # the client hangs up in the middle of the job
        wait_until(lambda: metric(url, "dehaze_jobs_total", '{outcome="cancelled"}') > cancelled_jobs, 30, "cancel")
        stopped_at = forwards(url)
        time.sleep(1.5)
        assert forwards(url) == stopped_at, "the worker kept computing the cancelled job"
    probe.check()
    assert stopped_at - before < 21  # not computed in full
    assert metric(url, "dehaze_cancelled_tiles_total") > skipped


def test_a_job_past_its_deadline_stops_between_forwards(tiny_model: tuple[Path, Path]) -> None:
    """The request times out (504) while its job runs: the worker drops the rest of its tiles."""
    tiles = {"tile_size": 64, "tile_overlap": 16, "max_batch_size": 1}  # 441 forwards: seconds of work
    settings = model_settings(tiny_model, request_timeout_s=1.0, max_pixels=1_000_000, **tiles)
    with live_server(settings) as url:
        expired = metric(url, "dehaze_jobs_total", '{outcome="expired"}')
        skipped = metric(url, "dehaze_cancelled_tiles_total")
        before = forwards(url)
        upload = heavy_upload()
        with probing_healthz(url) as probe:
            expect_error(post(url, "/dehaze", upload), 504)
            wait_until(lambda: metric(url, "dehaze_jobs_total", '{outcome="expired"}') > expired, 30, "expiry")
            stopped_at = forwards(url)
            time.sleep(1.0)
            assert forwards(url) == stopped_at
        probe.check()
        assert stopped_at - before < 441
        assert metric(url, "dehaze_cancelled_tiles_total") > skipped


# -- 3. FADE at any aspect ratio ------------------------------------------------------------------------------------
def fade_pool_rss(served: Served) -> int:
    """Resident memory of the server's children (the FADE pool)."""
    pid = served.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split()
    return sum(rss_bytes(int(child)) for child in children)


@pytest.mark.parametrize("size", [(1, 1_000_000), (1_000_000, 1)], ids=["1x1000000", "1000000x1"])
def test_fade_of_an_extreme_aspect_ratio_is_bounded(served: Served, size: tuple[int, int]) -> None:
    data = thin_png(*size)
    with probing_healthz(served.url) as probe:
        started = time.monotonic()
        response = post(served.url, "/density", data, timeout=20)
        elapsed = time.monotonic() - started
    probe.check()
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == size  # FADE itself may be undefined (null) on a one-pixel line
    assert elapsed < 10, f"FADE took {elapsed:.1f} s"
    assert fade_pool_rss(served) < 1024**3  # the unbounded version took 5.3 GB


def test_a_score_the_fade_pool_cannot_deliver_in_time_is_a_504(tiny_model: tuple[Path, Path]) -> None:
    """/density waits for FADE no longer than ``request_timeout_s`` (a busy or CPU-starved pool held it forever)."""
    settings = model_settings(tiny_model, request_timeout_s=0.05, max_pixels=1_000_000)
    upload = image_bytes(1000, 1000, seed=21)  # 1 MP: about 0.3 s of FADE on an idle core
    with live_server(settings) as url, probing_healthz(url) as probe:
        started = time.monotonic()
        message = expect_error(post(url, "/density", upload), 504)
        assert time.monotonic() - started < FAST_WORK and "haze density" in message
    probe.check()


# -- 4. Redis at maxmemory ------------------------------------------------------------------------------------------
@pytest.mark.redis
def test_a_result_redis_cannot_store_is_answered_once_with_503(
    tmp_path: Path, tiny_model: tuple[Path, Path], redis_url: str, redis_client: redis.Redis
) -> None:
    """``dehaze api`` and a worker process: the job is taken, then Redis reaches a tiny maxmemory.

    The request gets one 503, the job is acknowledged, and it is never computed again (the old code left it
    pending, so it was reclaimed and recomputed until it counted as poisoned, and the request timed out).
    """
    port = free_port()
    reclaim = {"claim_idle_ms": 500, "heartbeat_s": 0.25, "delivery_limit": 2, "request_timeout_s": 30}
    env = service_env(tiny_model, redis_url=redis_url, port=port, max_batch_size=1, **reclaim)
    url = f"http://127.0.0.1:{port}"
    try:
        with (
            start_workers(1, env, tmp_path, redis_client) as (worker,),
            service_process(["api"], env, tmp_path / "api.log") as api,
        ):
            wait_http_ready(url, api)
            upload, filler = image_bytes(900, 700, seed=5), b"x" * (4 << 20)  # built before probing (shared GIL)
            with probing_healthz(url) as probe, concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(post, url, "/dehaze", upload, 60)
                wait_until(lambda: sum(pending_by_consumer(redis_client, PREFIX).values()) == 1, 30, "the job taken")
                redis_client.set("filler", filler)
                redis_client.config_set("maxmemory-policy", "noeviction")
                redis_client.config_set("maxmemory", 1 << 20)  # a tiny maxmemory: Redis is now far above it
                response = answer.result()
                time.sleep(2.5)  # several claim intervals: a redelivered job would be computed again
            probe.check()
            message = expect_error(response, 503)
            assert "could not be stored" in message and int(response.headers["retry-after"]) >= 1
            assert redis_client.xlen(STREAM) == 0 and sum(pending_by_consumer(redis_client, PREFIX).values()) == 0
            computed = worker.log().count("batch jobs=")
            assert computed == 1, worker.log()[-3000:]
            assert "answered 503" in worker.log()
    finally:
        redis_client.config_set("maxmemory", 0)
        redis_client.delete("filler")
    assert_nothing_left(redis_client)


# -- 5. slow clients ------------------------------------------------------------------------------------------------
GUARDS = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "max_connections": 100}


@pytest.fixture(scope="module")
def guarded_api(tmp_path_factory: pytest.TempPathFactory, tiny_model: tuple[Path, Path]) -> Iterator[ServiceProcess]:
    """``dehaze api`` (no model: it starts in a second) with one-second read timeouts and 100 connections at most."""
    port = free_port()
    env = service_env(tiny_model, port=port, redis_url="redis://127.0.0.1:1/0", **GUARDS)
    log = tmp_path_factory.mktemp("guarded") / "api.log"
    with service_process(["api"], env, log) as child:
        child.port = port  # type: ignore[attr-defined]
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200, 60, "api")
        yield child


def api_url(child: ServiceProcess) -> str:
    """The base URL of ``guarded_api``."""
    return f"http://127.0.0.1:{child.port}"  # type: ignore[attr-defined]


def connect(child: ServiceProcess, first_bytes: bytes = b"") -> socket.socket:
    """A raw connection to ``guarded_api`` that has sent ``first_bytes``."""
    sock = socket.create_connection(("127.0.0.1", child.port))  # type: ignore[attr-defined]
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def seconds_until_closed(sock: socket.socket, limit_s: float) -> float:
    """How long until the server closes ``sock`` (inf if it is still open after ``limit_s``)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return float("inf")
    except OSError:  # reset by the server
        pass
    return time.monotonic() - started


PARTIAL_HEADERS = b"POST /dehaze HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"


def test_partial_headers_are_cut_off_in_seconds(guarded_api: ServiceProcess) -> None:
    silent = connect(guarded_api, PARTIAL_HEADERS)
    assert seconds_until_closed(silent, 6) < 3

    dripping = connect(guarded_api)  # one byte every 0.2 s: data keeps coming, the headers never end
    started = time.monotonic()

    def drip() -> None:
        for byte in PARTIAL_HEADERS * 10:
            try:
                dripping.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=drip, daemon=True).start()
    seconds_until_closed(dripping, 6)
    assert time.monotonic() - started < 3


def test_a_body_shorter_than_its_content_length_is_cut_off(guarded_api: ServiceProcess) -> None:
    head = PARTIAL_HEADERS + b"Content-Length: 100000\r\n\r\n"
    short = connect(guarded_api, head + b"--b\r\n" + b"x" * 1000)
    assert seconds_until_closed(short, 6) < 3


def test_a_slow_but_steady_body_is_not_cut_off(guarded_api: ServiceProcess) -> None:
    """The body timeout is an idle timeout: a chunk every 0.5 s keeps a 3-second upload alive to its answer."""
    body = multipart([Part("image", b"not an image" * 100)], "b")
    head = PARTIAL_HEADERS + f"Content-Length: {len(body)}\r\n\r\n".encode()
    sock = connect(guarded_api, head)
    for index in range(6):
        sock.sendall(body[index * len(body) // 6 : (index + 1) * len(body) // 6])
        time.sleep(0.5)
    sock.sendall(body[6 * len(body) // 6 :])
    sock.settimeout(10)
    assert sock.recv(64).startswith(b"HTTP/1.1 415")
    sock.close()


def open_fds(child: ServiceProcess) -> int:
    """File descriptors the server process holds."""
    return len(list(Path(f"/proc/{child.pid}/fd").iterdir()))


def test_many_slow_clients_are_bounded_and_cut_off_while_healthz_stays_fast(guarded_api: ServiceProcess) -> None:
    baseline = open_fds(guarded_api)
    with probing_healthz(api_url(guarded_api)) as probe:
        held = [connect(guarded_api, PARTIAL_HEADERS) for _ in range(90)]  # below the limit of 100
        time.sleep(0.3)
    probe.check()
    extra = [connect(guarded_api, PARTIAL_HEADERS) for _ in range(30)]  # beyond it: closed at once
    assert sum(seconds_until_closed(sock, 0.5) < 0.5 for sock in extra) >= 19
    assert all(seconds_until_closed(sock, 5) < 5 for sock in held)  # all cut off by the header timeout
    for sock in held + extra:
        sock.close()
    wait_until(lambda: open_fds(guarded_api) <= baseline + 2, 10, "the server to release the descriptors")
