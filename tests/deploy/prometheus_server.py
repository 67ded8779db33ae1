"""A real Prometheus server for tests: scrape config rewritten to loopback targets, start, wait, query."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.processes import running, wait_ready

__all__ = ["loopback_config", "query", "running_prometheus", "scalar", "wait_for"]


def loopback_config(source: dict[str, Any], targets: dict[str, str], interval: str = "1s") -> dict[str, Any]:
    """The project's scrape configuration with every job's service discovery replaced by one static target.

    Job names, metrics paths and everything else are kept; only discovery and the intervals change.

    Raises:
        KeyError: if ``targets`` has no address for one of the jobs.
    """
    config = copy.deepcopy(source)
    config.setdefault("global", {}).update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    for job in config["scrape_configs"]:
        for key in [k for k in job if k.endswith("_sd_configs")]:
            del job[key]
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return config


def query(base_url: str, expr: str) -> dict[str, Any]:
    """Evaluate an instant query; the ``data`` of Prometheus's answer.

    Raises:
        RuntimeError: if Prometheus rejects the expression (the error text is in the message).
    """
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:  # 400/422: bad expression, with Prometheus's explanation
        answer = json.load(error)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
    return answer["data"]


def scalar(base_url: str, expr: str) -> float:
    """The value of a query that returns one sample; NaN when it returns none yet."""
    result = query(base_url, expr)["result"]
    return float(result[0]["value"][1]) if len(result) == 1 else math.nan


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.25) -> None:
    """Poll ``condition`` until it is true; an exception it raises counts as "not yet" (servers still starting).

    Raises:
        TimeoutError: naming ``what`` and the last exception seen, when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as error:  # connection refused and friends: reported on timeout
            last_error = error
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last error: {last_error!r})")


def _ready(base_url: str) -> bool:
    with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as response:
        return response.status == 200


@contextlib.contextmanager
def running_prometheus(config: dict[str, Any], workdir: Path, port: int) -> Iterator[str]:
    """Run ``prometheus`` with ``config`` on ``127.0.0.1:port``; yields its base URL, stops it afterwards.

    Raises:
        FileNotFoundError: if the ``prometheus`` binary is not installed.
        tests.processes.NotReadyError: if it exits or is not ready within 60 s (with its log).
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus")
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with running(argv, workdir / "prometheus.log", cwd=None, grace_s=20) as child:
        wait_ready(lambda: _ready(base_url), 60, "Prometheus to be ready", [child], interval_s=0.25)
        yield base_url
