"""compose.yaml (root), docker/compose.yaml and docker/compose.cpu.yaml: services, ports, volumes, health checks, GPU.

The root compose.yaml only includes docker/compose.yaml, so that `docker compose up` typed in the repository root
(the first command of docs/deployment.md) starts the stack; its tests resolve the include as Compose does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.compose_file import absolute_paths, load_compose, load_with_includes, merge
from tests.deploy.conftest import DOCKER, REPO

ROOT_COMPOSE = REPO / "compose.yaml"

SERVICES = {"redis", "api", "worker", "prometheus", "grafana"}


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return compose["services"][name]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _container_ports(service: dict[str, Any]) -> list[str]:
    """Container side of every published port ("host:container" or "ip:host:container")."""
    return [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]


def _bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_the_stack_has_its_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_no_service_pins_a_container_name(compose: dict[str, Any]) -> None:
    # A fixed container_name makes `--scale` fail.
    assert [name for name, s in compose["services"].items() if "container_name" in s] == []


def test_redis_is_durable_private_and_checked(compose: dict[str, Any]) -> None:
    redis = _service(compose, "redis")
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "ports" not in redis, "Redis must not be published outside the compose network"
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/data" for v in redis["volumes"])
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


@pytest.mark.parametrize(("name", "command"), [("api", ["api"]), ("worker", ["worker"])])
def test_api_and_worker_run_the_one_image(compose: dict[str, Any], name: str, command: list[str]) -> None:
    service = _service(compose, name)
    assert service["command"] == command
    assert service["image"] == _service(compose, "api")["image"]
    context = (DOCKER / service["build"]["context"]).resolve()
    assert context == REPO
    assert (context / service["build"]["dockerfile"]).is_file()
    assert _environment(service)["DEHAZE_REDIS_URL"] == "redis://redis:6379/0"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_start_after_redis_is_healthy(compose: dict[str, Any], name: str) -> None:
    assert _service(compose, name)["depends_on"]["redis"]["condition"] == "service_healthy"


def test_api_publishes_a_port_range_so_replicas_can_scale(compose: dict[str, Any]) -> None:
    (port,) = _service(compose, "api")["ports"]
    host, container = str(port).rsplit(":", 1)
    first, last = (int(p) for p in host.split("-"))
    assert container == "8000"
    assert first == 8000
    assert last > first


def test_worker_reserves_a_gpu_and_publishes_nothing(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert int(device["count"]) >= 1
    assert "ports" not in worker
    assert _environment(worker)["DEHAZE_DEVICE"] == "cuda"


@pytest.mark.parametrize(("name", "port"), [("api", "8000"), ("worker", "9100")])
def test_health_checks_probe_the_service_port(compose: dict[str, Any], name: str, port: str) -> None:
    test = " ".join(_service(compose, name)["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/" in test
    assert "curl" not in test  # the image has no curl


def test_worker_metrics_port_matches_its_health_check_and_expose(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    port = _environment(worker)["DEHAZE_WORKER_METRICS_PORT"]
    assert port in [str(p) for p in worker["expose"]]
    assert f":{port}/" in " ".join(worker["healthcheck"]["test"])


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    assert [name for name, s in compose["services"].items() if "healthcheck" not in s] == []


def test_every_mounted_file_exists_in_the_repo(compose: dict[str, Any]) -> None:
    mounted = [src for s in compose["services"].values() for src in _bind_sources(s)]
    assert mounted, "the monitoring services mount their configuration"
    missing = [src for src in mounted if not (DOCKER / src).exists()]
    assert missing == []


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    used = {
        v.split(":", 1)[0]
        for s in compose["services"].values()
        for v in s.get("volumes", [])
        if isinstance(v, str) and not v.startswith((".", "/"))
    }
    assert used == set(compose["volumes"])


def test_prometheus_loads_the_mounted_config(compose: dict[str, Any]) -> None:
    prometheus = _service(compose, "prometheus")
    mount = next(v for v in prometheus["volumes"] if v.startswith("./prometheus/prometheus.yml:"))
    target = mount.split(":")[1]
    assert f"--config.file={target}" in prometheus["command"]


def test_prometheus_discovers_every_replica_of_api_and_worker(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    worker_port = int(_environment(_service(compose, "worker"))["DEHAZE_WORKER_METRICS_PORT"])
    expected_ports = {"api": 8000, "worker": worker_port}
    for name, port in expected_ports.items():
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [name]  # the compose service name: one A record per replica
        assert sd["type"] == "A"
        assert sd["port"] == port
    assert "8000" in _container_ports(_service(compose, "api"))


def test_grafana_is_provisioned_without_clicking(compose: dict[str, Any]) -> None:
    grafana = _service(compose, "grafana")
    targets = {v.split(":")[1] for v in grafana["volumes"] if v.startswith("./")}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= targets
    env = _environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"]
    assert _service(compose, "grafana")["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_env_overrides_are_honoured() -> None:
    compose = load_compose(DOCKER / "compose.yaml", {"DEHAZE_API_PORTS": "9000", "DEHAZE_GPUS_PER_WORKER": "2"})
    assert compose["services"]["api"]["ports"] == ["9000:8000"]
    assert compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "2"


def test_cpu_override_removes_the_gpu_and_builds_the_cpu_image(compose: dict[str, Any]) -> None:
    merged = merge(compose, load_compose(DOCKER / "compose.cpu.yaml"))
    worker = merged["services"]["worker"]
    assert "devices" not in worker["deploy"]["resources"]["reservations"]
    assert _environment(worker)["DEHAZE_DEVICE"] == "cpu"
    assert _environment(worker)["DEHAZE_REDIS_URL"] == "redis://redis:6379/0"  # base environment kept
    for name in ("api", "worker"):
        service = merged["services"][name]
        assert service["build"]["args"]["TORCH_INDEX_URL"].endswith("/cpu")
        assert service["build"]["context"] == ".."
        assert service["image"] == "dehaze:cpu"
    assert set(merged["services"]) == SERVICES


def test_root_compose_file_includes_the_stack_unchanged(compose: dict[str, Any]) -> None:
    root = load_compose(ROOT_COMPOSE)
    assert set(root) == {"name", "include"}, "the root file only includes docker/compose.yaml"
    assert root["name"] == compose["name"] == "dehaze"  # one project: same containers and volumes either way
    resolved = load_with_includes(ROOT_COMPOSE)
    assert set(resolved["services"]) == SERVICES
    assert resolved["services"] == absolute_paths(compose, DOCKER)["services"]
    assert set(resolved["volumes"]) == set(compose["volumes"])


def test_root_compose_resolves_every_path_from_docker_folder() -> None:
    services = load_with_includes(ROOT_COMPOSE)["services"]
    for name in ("api", "worker"):
        assert Path(services[name]["build"]["context"]) == REPO
        assert (REPO / services[name]["build"]["dockerfile"]).is_file()
    mounts = [v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", []) if v.startswith("/")]
    assert len(mounts) >= 4 and all(Path(source).exists() for source in mounts), mounts


def test_root_compose_reader_fails_on_a_broken_include(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("name: x\ninclude:\n  - path: docker/missing.yaml\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError):
        load_with_includes(broken)
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "compose.yaml").write_text("services:\n  api:\n    image: a\n", encoding="utf-8")
    broken.write_text("include: [docker/compose.yaml]\nservices:\n  api:\n    image: b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="api"):
        load_with_includes(broken)


def test_deployment_guide_first_command_is_docker_compose_up() -> None:
    guide = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    compose = guide.split("\n## Docker Compose", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```(?:sh|bash)?\n(.*?)^```", compose, re.M | re.S)
    assert block, "the Docker Compose section of docs/deployment.md has a command block"
    first = next(line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#"))
    assert first.split("#", 1)[0].split() == ["docker", "compose", "up"]


def _compose_command() -> list[str] | None:
    """``docker compose`` or ``docker-compose``, if one of them is Compose >= 2.24 (needed for ``!reset``)."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        found = re.search(r"version v?(\d+)\.(\d+)", probe.stdout)
        if probe.returncode == 0 and found and (int(found[1]), int(found[2])) >= (2, 24):
            return command
    return None


@pytest.mark.parametrize(("files", "gpu"), [(["compose.yaml"], True), (["compose.yaml", "compose.cpu.yaml"], False)])
def test_docker_compose_config_accepts_the_files(files: list[str], gpu: bool) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("Docker Compose >= 2.24 (plugin or docker-compose) is not installed")
    args = [arg for name in files for arg in ("-f", str(DOCKER / name))]
    result = subprocess.run(
        [*command, *args, "config", "--format", "json"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == SERVICES
    reservations = services["worker"].get("deploy", {}).get("resources", {}).get("reservations", {})
    assert bool(reservations.get("devices")) is gpu
    assert services["worker"]["environment"]["DEHAZE_DEVICE"] == ("cuda" if gpu else "cpu")
    assert "ports" not in services["redis"]


def test_docker_compose_config_accepts_the_root_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("Docker Compose >= 2.24 (plugin or docker-compose) is not installed")
    result = subprocess.run(
        [*command, "-f", str(ROOT_COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == SERVICES
    assert Path(services["api"]["build"]["context"]) == REPO
