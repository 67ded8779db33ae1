"""The Grafana dashboard and its provisioning: one datasource uid, the panels the service needs, known metrics."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DOCKER
from tests.deploy.dashboard_queries import dashboard_expressions, metric_names, to_promql

# The metric names of the interface contract (service/metrics.py); the live test checks the real /metrics output.
CONTRACT_METRICS = {
    "dehaze_request_duration_seconds",
    "dehaze_requests_total",
    "dehaze_queue_wait_seconds",
    "dehaze_compute_seconds",
    "dehaze_job_duration_seconds",
    "dehaze_batch_size",
    "dehaze_queue_depth",
    "dehaze_jobs_total",
    "dehaze_workers_alive",
    "dehaze_gpu_memory_bytes",
    "dehaze_density_seconds",
    "dehaze_model_info",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in CONTRACT_METRICS:
            return name.removesuffix(suffix)
    return name


def _datasource_uids(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["datasource"]["uid"]} if isinstance(node.get("datasource"), dict) else set()
        return found.union(*(_datasource_uids(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_datasource_uids(v) for v in node))
    return set()


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    path = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    (source,) = yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    return source


def test_datasource_points_at_the_compose_prometheus(datasource: dict[str, Any]) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_every_panel_uses_the_provisioned_datasource(dashboard: dict[str, Any], datasource: dict[str, Any]) -> None:
    assert _datasource_uids(dashboard) == {datasource["uid"]}


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    provider_file = DOCKER / "grafana" / "provisioning" / "dashboards" / "dehaze.yaml"
    (provider,) = yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_names_only_contract_metrics(dashboard: dict[str, Any]) -> None:
    used = {_base_name(name) for _, expr in dashboard_expressions(dashboard) for name in metric_names(expr)}
    assert used - CONTRACT_METRICS == set()


@pytest.mark.parametrize(
    "needle",
    [
        "histogram_quantile(0.5, sum by (le, route) (rate(dehaze_request_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (le, route) (rate(dehaze_request_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, route) (rate(dehaze_request_duration_seconds_bucket",
        "dehaze_queue_wait_seconds_bucket",
        "dehaze_compute_seconds_bucket",
        "rate(dehaze_requests_total",
        "sum by (status)",
        "dehaze_queue_depth",
        "dehaze_batch_size_bucket",
        "dehaze_workers_alive",
        "dehaze_gpu_memory_bytes",
    ],
)
def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any], needle: str) -> None:
    assert any(needle in expr for _, expr in dashboard_expressions(dashboard))


def test_panels_have_unique_ids_and_titles(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["title"] for p in panels)
    assert dashboard["uid"]


def test_expressions_use_only_known_grafana_variables(dashboard: dict[str, Any]) -> None:
    for _, expr in dashboard_expressions(dashboard):
        to_promql(expr)  # raises on an unknown variable
