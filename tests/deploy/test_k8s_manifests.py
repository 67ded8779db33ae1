"""deploy/k8s renders, validates against the Kubernetes and KEDA schemas, and holds what the deployment promises.

Rendering is ``kubectl kustomize``; every built-in object is checked with ``kubernetes-validate`` (the API's OpenAPI
schemas, strict: unknown fields are errors) for the oldest Kubernetes release the manifests support, and the KEDA
ScaledObject against the CRD schema shipped in tests/deploy/schemas. No cluster is needed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.k8s_manifests import OVERLAYS, containers, find, pod_spec, render

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra) is missing")

KUBERNETES_VERSION = "1.29"
"""The oldest Kubernetes the manifests target (autoscaling/v2, policy/v1, sidecar-free probes all exist there)."""
KEDA_SCHEMA = Path(__file__).resolve().parent / "schemas" / "keda-scaledobject-v1alpha1.json"
KINDS = {
    ("Namespace", "dehaze"),
    ("ConfigMap", "dehaze-config"),
    ("ConfigMap", "redis-config"),
    ("Secret", "dehaze-api-keys"),
    ("StatefulSet", "redis"),
    ("Service", "redis"),
    ("NetworkPolicy", "redis"),
    ("Deployment", "api"),
    ("Service", "api"),
    ("HorizontalPodAutoscaler", "api"),
    ("PodDisruptionBudget", "api"),
    ("NetworkPolicy", "api"),
    ("Deployment", "worker"),
    ("PodDisruptionBudget", "worker"),
    ("NetworkPolicy", "worker"),
    ("ScaledObject", "worker"),
}


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.Draft202012Validator:
    """Validator of the KEDA ScaledObject schema."""
    schema = json.loads(KEDA_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _validate(obj: dict[str, Any], keda: jsonschema.Draft202012Validator) -> None:
    if obj["apiVersion"].startswith("keda.sh/"):
        keda.validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_object_in_the_namespace(overlay: str) -> None:
    objects = render(overlay)
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == KINDS
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"dehaze"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dehaze" for o in objects)


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_object_validates_against_its_schema(
    overlay: str, keda_validator: jsonschema.Draft202012Validator
) -> None:
    for obj in render(overlay):
        _validate(obj, keda_validator)


def test_the_validators_reject_broken_objects(keda_validator: jsonschema.Draft202012Validator) -> None:
    """The checks above are live: a misspelt field, a wrong type and an unknown trigger key all fail."""
    objects = render("gpu")
    deployment = copy.deepcopy(find(objects, "Deployment", "worker"))
    pod_spec(deployment)["terminationGracePeriod"] = 150  # the real field is terminationGracePeriodSeconds
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(find(objects, "ScaledObject", "worker"))
    scaled["spec"]["maxReplicaCount"] = "8"
    with pytest.raises(jsonschema.ValidationError):
        keda_validator.validate(scaled)
    scaled = copy.deepcopy(find(objects, "ScaledObject", "worker"))
    scaled["spec"]["triggers"][0]["metadata"]["lagcount"] = "8"
    with pytest.raises(jsonschema.ValidationError):
        keda_validator.validate(scaled)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_bounded_probed_and_unprivileged(overlay: str) -> None:
    for workload, container in containers(render(overlay)):
        where = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), where
        assert "memory" in resources["limits"], where
        assert "readinessProbe" in container and "livenessProbe" in container, where
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert pod_spec(workload)["securityContext"]["runAsNonRoot"] is True, where
        assert pod_spec(workload)["automountServiceAccountToken"] is False, where


def test_only_the_gpu_overlay_asks_for_gpus_and_gpu_nodes() -> None:
    cpu, gpu = (find(render(o), "Deployment", "worker") for o in OVERLAYS)
    (cpu_worker,), (gpu_worker,) = pod_spec(cpu)["containers"], pod_spec(gpu)["containers"]
    assert gpu_worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_worker["image"] == "dehaze:gpu" and cpu_worker["image"] == "dehaze:cpu"
    assert pod_spec(gpu)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {t["key"] for t in pod_spec(gpu)["tolerations"]} == {"nvidia.com/gpu"}
    assert "nvidia.com/gpu" not in cpu_worker["resources"].get("limits", {})
    assert "nodeSelector" not in pod_spec(cpu) and "tolerations" not in pod_spec(cpu)
    assert gpu["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}  # no spare GPU needed
    for overlay in OVERLAYS:  # the API never needs CUDA: the CPU image everywhere
        (api,) = pod_spec(find(render(overlay), "Deployment", "api"))["containers"]
        assert api["image"] == "dehaze:cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replica_counts_belong_to_the_autoscalers(overlay: str) -> None:
    objects = render(overlay)
    for name in ("api", "worker"):
        assert "replicas" not in find(objects, "Deployment", name)["spec"], name  # an apply must not reset them
    hpa = find(objects, "HorizontalPodAutoscaler", "api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    scaled = find(objects, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    assert 0 <= scaled["minReplicaCount"] <= 1 < scaled["maxReplicaCount"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_keep_the_api_up_and_let_nodes_drain(overlay: str) -> None:
    objects = render(overlay)
    api, worker = find(objects, "PodDisruptionBudget", "api"), find(objects, "PodDisruptionBudget", "worker")
    assert api["spec"]["minAvailable"] == 1 and worker["spec"]["maxUnavailable"] == 1
    for pdb in (api, worker):
        selector = pdb["spec"]["selector"]["matchLabels"]
        workload = find(objects, "Deployment", pdb["metadata"]["name"])
        assert selector == workload["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_their_pods(overlay: str) -> None:
    objects = render(overlay)
    for name, kind in (("api", "Deployment"), ("redis", "StatefulSet")):
        service, workload = find(objects, "Service", name), find(objects, kind, name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        ports = {p["name"] for c in pod_spec(workload)["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name


def test_redis_keeps_its_data_on_a_volume() -> None:
    objects = render("gpu")
    redis = find(objects, "StatefulSet", "redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (container,) = pod_spec(redis)["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    conf = find(objects, "ConfigMap", "redis-config")["data"]["redis.conf"]
    settings = dict(line.split(" ", 1) for line in conf.splitlines() if line.strip())
    assert settings["dir"] == "/data" and settings["appendonly"] == "yes"
    assert settings["appendfsync"] in ("always", "everysec") and settings["maxmemory-policy"] == "noeviction"
    assert container["args"][-1].startswith(mounts["config"])
