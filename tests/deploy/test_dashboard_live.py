"""Every dashboard query, evaluated by a real Prometheus that scrapes the real service.

The service runs from the real command line on free loopback ports with a tiny random-weight model, in both
topologies: embedded (`dehaze serve`, one process is both the `api` and the `worker` job) and the compose one
(redis-server + `dehaze worker` with its metrics port + `dehaze api`). Prometheus runs with
docker/prometheus/prometheus.yml, its DNS discovery replaced by static loopback targets, job names kept.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.deploy.dashboard_queries import dashboard_expressions, metric_names, to_promql
from tests.deploy.prometheus_server import loopback_config, query, running_prometheus, scalar, wait_for
from tests.processes import Child, dehaze_argv, env_without_dehaze, free_port, running, wait_ready

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )")
_TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)")
_SUFFIXES = ("", "_bucket", "_sum", "_count", "_total", "_created")


def _exposition_names(text: str) -> tuple[set[str], set[str]]:
    """(names declared or sampled, names that have at least one sample) in a /metrics text."""
    sampled = {m[1] for line in text.splitlines() if (m := _SAMPLE.match(line))}
    declared = {m[1] + suffix for line in text.splitlines() if (m := _TYPE.match(line)) for suffix in _SUFFIXES}
    return declared | sampled, sampled


def _png(width: int = 40, height: int = 28) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height))
    image.putdata([((7 * x) % 256, (5 * y) % 256, 128) for y in range(height) for x in range(width)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.checkpoint import save_checkpoint
    from model.pipeline import build_pipeline

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    pipeline = build_pipeline("dcmpnet_tiny")
    save_checkpoint(path, pipeline.phi, pipeline.psi, "dcmpnet_tiny", {"purpose": "deploy test"})
    return path


@dataclass(frozen=True)
class Stack:
    """A running deployment: where to send requests and where Prometheus scrapes each job."""

    api_url: str
    targets: dict[str, str]  # job name -> host:port


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


@contextlib.contextmanager
def _serving(
    argv: list[str], log_path: Path, ready: Callable[[], bool], env: dict[str, str] | None = None
) -> Iterator[Child]:
    """``argv`` running until the block ends (SIGTERM, SIGKILL after 30 s), once ``ready`` (180 s at most)."""
    with running(argv, log_path, env) as child:
        wait_ready(ready, 180, f"{argv} to be ready", [child], interval_s=0.5)
        yield child


def _model_settings(weights: Path, workdir: Path) -> dict[str, str]:
    return {
        "DEHAZE_WEIGHTS": str(weights),
        "DEHAZE_ARTIFACT": str(workdir / "tiny.ts.pt"),
        "DEHAZE_DEVICE": "cpu",
        "DEHAZE_TORCH_THREADS": "1",
    }


@contextlib.contextmanager
def _redis_stack(weights: Path, workdir: Path) -> Iterator[Stack]:
    """The compose topology on loopback: redis-server, `dehaze worker` (metrics port), `dehaze api`."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    redis_port, api_port, metrics_port = free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    common = {**_model_settings(weights, workdir), "DEHAZE_REDIS_URL": redis_url}
    redis_cmd = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    with (
        _serving(redis_cmd, workdir / "redis.log", lambda: redis.Redis.from_url(redis_url).ping()),
        _serving(
            dehaze_argv("worker"),
            workdir / "worker.log",
            lambda: _http_ok(f"http://127.0.0.1:{metrics_port}/metrics"),
            env_without_dehaze(**common, DEHAZE_WORKER_METRICS_PORT=str(metrics_port)),
        ),
        _serving(
            dehaze_argv("api"),  # configured through the environment, as in the container
            workdir / "api.log",
            lambda: _http_ok(f"http://127.0.0.1:{api_port}/readyz"),
            env_without_dehaze(**common, DEHAZE_HOST="127.0.0.1", DEHAZE_PORT=str(api_port)),
        ),
    ):
        yield Stack(
            f"http://127.0.0.1:{api_port}", {"api": f"127.0.0.1:{api_port}", "worker": f"127.0.0.1:{metrics_port}"}
        )


@contextlib.contextmanager
def _embedded_stack(weights: Path, workdir: Path) -> Iterator[Stack]:
    """`dehaze serve`: one process is both the `api` and the `worker` job."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _serving(
        dehaze_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
        workdir / "serve.log",
        lambda: _http_ok(f"{url}/readyz"),
        env_without_dehaze(**_model_settings(weights, workdir)),
    ):
        yield Stack(url, {"api": f"127.0.0.1:{port}", "worker": f"127.0.0.1:{port}"})


@pytest.fixture(scope="module", params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def stack(
    request: pytest.FixtureRequest, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The service running in one of its two topologies."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`; .ci/run installs it)")
    workdir = tmp_path_factory.mktemp(request.param)
    start = _embedded_stack if request.param == "embedded" else _redis_stack
    with start(tiny_weights, workdir) as running_stack:
        yield running_stack


def _send_requests(url: str, image: bytes, count: int) -> int:
    """``count`` good /dehaze requests and one bad upload (for the error panels); returns ``count``."""
    for _ in range(count):
        response = httpx.post(f"{url}/dehaze", files={"image": ("hazy.png", image, "image/png")}, timeout=60)
        assert response.status_code == 200, response.text
    bad = httpx.post(f"{url}/dehaze", files={"image": ("x.png", b"not an image", "image/png")}, timeout=60)
    assert 400 <= bad.status_code < 500
    return count


def _good_requests(prometheus: str) -> float:
    return scalar(prometheus, 'sum(dehaze_requests_total{job="api", route=~".*dehaze.*", status=~"2.."})')


@pytest.fixture(scope="module")
def scraped(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory, prometheus_config: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    """A running Prometheus that has scraped the stack before, between and after two rounds of requests.

    Yields its URL and the /metrics text of every scraped target, concatenated.
    """
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = loopback_config(prometheus_config, {**stack.targets, "prometheus": f"127.0.0.1:{port}"})
    image = _png()
    with running_prometheus(config, workdir, port) as prometheus:
        wait_for(lambda: scalar(prometheus, 'sum(up{job=~"api|worker"})') == 2, 60, "the first scrape")
        # Two rounds, each seen by a scrape: label series born in round one get a real rate in round two.
        sent = _send_requests(stack.api_url, image, 2)
        wait_for(lambda: _good_requests(prometheus) >= sent, 60, "round one to be scraped")
        sent += _send_requests(stack.api_url, image, 3)
        wait_for(lambda: _good_requests(prometheus) >= sent, 60, "round two to be scraped")
        texts = [httpx.get(f"http://{target}/metrics", timeout=10).text for target in set(stack.targets.values())]
        yield prometheus, "\n".join(texts)


def test_every_dashboard_query_is_valid_and_names_exported_metrics(
    scraped: tuple[str, str], dashboard: dict[str, Any]
) -> None:
    prometheus, metrics_text = scraped
    exported, sampled = _exposition_names(metrics_text)
    problems = []
    for title, expr in dashboard_expressions(dashboard):
        names = metric_names(expr)
        if missing := names - exported:
            problems.append(f"{title}: {sorted(missing)} not in /metrics")
            continue
        try:
            result = query(prometheus, to_promql(expr))["result"]
        except RuntimeError as error:
            problems.append(f"{title}: {error}")
            continue
        # Data is required wherever the service already has samples of every metric the query uses
        # (e.g. GPU memory has none on a CPU-only service).
        if names <= sampled and not result:
            problems.append(f"{title}: {expr!r} returned no data")
    assert problems == []


def test_latency_and_throughput_panels_show_the_requests(scraped: tuple[str, str]) -> None:
    prometheus, _ = scraped
    throughput = scalar(
        prometheus, to_promql('sum(rate(dehaze_requests_total{route=~".*dehaze.*"}[$__rate_interval]))')
    )
    assert throughput > 0
    p95 = query(
        prometheus,
        "histogram_quantile(0.95, sum by (le, route) (rate(dehaze_request_duration_seconds_bucket[1m])))",
    )["result"]
    values = {sample["metric"].get("route", ""): float(sample["value"][1]) for sample in p95}
    assert any("dehaze" in route and math.isfinite(v) and v > 0 for route, v in values.items()), values
