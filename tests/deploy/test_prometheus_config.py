"""promtool accepts docker/prometheus/prometheus.yml and parses every dashboard expression."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DOCKER
from tests.deploy.dashboard_queries import dashboard_expressions, to_promql


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    return path


def test_promtool_accepts_the_scrape_config(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(DOCKER / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_expression(promtool: str, dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool has no "check query"; recording rules make it parse each expression offline.
    expressions = dashboard_expressions(dashboard)
    rules = [{"record": f"dashboard:expr_{n}", "expr": to_promql(expr)} for n, (_, expr) in enumerate(expressions)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout
