"""deploy/k8s matches the code: settings, routes, ports, the queue's stream and group, the shutdown bound.

A manifest that sets a variable the service does not read, probes a path the API does not serve, scrapes a port the
worker does not listen on or points KEDA at a stream or group the queue does not use would deploy without error and
silently do nothing; these tests fail instead.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.config import Settings
from service.queue.redis_streams import CONSUMER_GROUP, stream_key
from tests.deploy.k8s_manifests import OVERLAYS, containers, find, pod_spec, render

SHUTDOWN_MARGIN_S = 30
"""Grace beyond DEHAZE_REQUEST_TIMEOUT_S for the last forward pass, the encode and the Redis round trips."""


@pytest.fixture(scope="module")
def served_paths() -> set[str]:
    """Every path the API app serves (``create_app`` only; no lifespan, no model)."""
    from service.main import create_app

    app = create_app(Settings())
    endpoints = set(app.openapi()["paths"])
    return endpoints | {path for route in app.routes if isinstance(path := getattr(route, "path", None), str)}


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return find(objects, "ConfigMap", "dehaze-config")["data"]


def _settings(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod of this overlay reads: its ConfigMap (and Secret) as the process environment."""
    for name in [name for name in os.environ if name.startswith("DEHAZE_")]:
        monkeypatch.delenv(name)
    secret = find(objects, "Secret", "dehaze-api-keys")["stringData"]
    for name, value in {**_config(objects), **secret}.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _env_names(objects: list[dict[str, Any]]) -> set[str]:
    """Every variable a container of these objects gets: ConfigMap and Secret keys it loads, and its own ``env``."""
    names: set[str] = set()
    for _, container in containers(objects):
        names |= {entry["name"] for entry in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                names |= set(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
            if "secretRef" in source:
                names |= set(find(objects, "Secret", source["secretRef"]["name"])["stringData"])
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_a_setting_and_valid(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    assert all(name.startswith("DEHAZE_") for name in _env_names(objects)), "every variable is a DEHAZE_ setting"
    fields = {name.removeprefix("DEHAZE_").lower() for name in _env_names(objects)}
    assert fields <= set(Settings.model_fields), sorted(fields - set(Settings.model_fields))
    settings = _settings(objects, monkeypatch)  # validates every value as the service would at start
    assert settings.device == ("cuda" if overlay == "gpu" else "cpu")
    assert settings.host == "0.0.0.0"  # the API and the worker's metrics listen on the pod address


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_paths_and_ports_the_processes_serve(
    overlay: str, served_paths: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(overlay)
    settings = _settings(objects, monkeypatch)
    (api,) = pod_spec(find(objects, "Deployment", "api"))["containers"]
    (worker,) = pod_spec(find(objects, "Deployment", "worker"))["containers"]
    ports = {
        container["name"]: {p["name"]: p["containerPort"] for p in container["ports"]} for container in (api, worker)
    }
    assert ports == {"api": {"http": settings.port}, "worker": {"metrics": settings.worker_metrics_port}}
    assert api["args"] == ["api"] and worker["args"] == ["worker"]
    probes = {kind: api[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
    assert {probe["path"] for probe in probes.values()} <= served_paths
    assert {probe["port"] for probe in probes.values()} == {"http"}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):  # prometheus_client's server: /metrics
        assert worker[kind]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert settings.worker_metrics_port == Settings.model_fields["worker_metrics_port"].default


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_annotations_scrape_the_ports_that_serve_metrics(
    overlay: str, served_paths: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(overlay)
    settings = _settings(objects, monkeypatch)
    expected = {"api": settings.port, "worker": settings.worker_metrics_port}
    for name, port in expected.items():
        annotations = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port
        assert annotations["prometheus.io/path"] == "/metrics"
    assert "/metrics" in served_paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_reads_the_queue_the_code_writes(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(overlay)
    settings = _settings(objects, monkeypatch)
    redis_service = find(objects, "Service", "redis")
    (redis_port,) = redis_service["spec"]["ports"]
    url = urlsplit(settings.redis_url or "")
    assert (url.hostname, url.port) == (redis_service["metadata"]["name"], redis_port["port"])
    scaled = find(objects, "ScaledObject", "worker")["spec"]
    namespace = redis_service["metadata"]["namespace"]
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert meta["address"] == f"{redis_service['metadata']['name']}.{namespace}.svc:{redis_port['port']}"
        assert meta["databaseIndex"] == url.path.lstrip("/")
        assert meta["stream"] == stream_key(settings.queue_name)
        assert meta["consumerGroup"] == CONSUMER_GROUP
    waiting, running = scaled["triggers"]
    assert "lagCount" in waiting["metadata"] and waiting["metadata"]["activationLagCount"] == "0"
    # A worker holds at most one batch: max_batch_size jobs (each job brings at least one tile).
    assert int(running["metadata"]["pendingEntriesCount"]) == settings.batch_size_on(settings.device)
    assert int(waiting["metadata"]["lagCount"]) <= settings.max_queue_length  # reachable before the queue is full


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_periods_cover_the_longest_drain(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker drops a job past its deadline before the next forward; an API waits for a result that long."""
    objects = render(overlay)
    settings = _settings(objects, monkeypatch)
    for name in ("api", "worker"):
        grace = pod_spec(find(objects, "Deployment", name))["terminationGracePeriodSeconds"]
        assert grace >= settings.request_timeout_s + SHUTDOWN_MARGIN_S, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_api_reads_the_api_keys(overlay: str) -> None:
    objects = render(overlay)
    readers = {
        workload["metadata"]["name"]
        for workload, container in containers(objects)
        for source in container.get("envFrom", [])
        if source.get("secretRef", {}).get("name") == "dehaze-api-keys"
    }
    assert readers == {"api"}
