"""Shared paths and parsed deployment files for the tests of Dockerfile, compose, Prometheus and Grafana files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.compose_file import load_compose

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker/compose.yaml with the defaults of every ``${VAR:-default}`` filled in."""
    return load_compose(DOCKER / "compose.yaml")


@pytest.fixture(scope="session")
def prometheus_config() -> dict[str, Any]:
    """docker/prometheus/prometheus.yml."""
    return yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def dashboard() -> dict[str, Any]:
    """The provisioned Grafana dashboard."""
    return json.loads((DOCKER / "grafana" / "dashboards" / "dehaze.json").read_text(encoding="utf-8"))
