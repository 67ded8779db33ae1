"""The Kubernetes manifests of deploy/k8s, rendered as a cluster would receive them, for tests without a cluster.

``render(overlay)`` runs ``kubectl kustomize`` (kustomize built into kubectl; the manifests use kustomize v4+
syntax: ``labels``, ``patches`` with targets) and parses every object. Helpers find objects by kind and name and
walk the containers of a workload.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = [
    "K8S",
    "OVERLAYS",
    "containers",
    "find",
    "kubectl_kustomize",
    "pod_spec",
    "render",
    "require_tool",
]

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
"""The overlays a user applies (the base is only their common part)."""
_MIN_KUSTOMIZE = (4, 0)


def require_tool(what: str, found: bool) -> None:
    """Skip when a tool is missing on a developer's machine; fail in CI (``CI=true``), where .ci/run installs it."""
    if found:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing in CI (.ci/run should provide it)")
    pytest.skip(f"{what} is not installed")


@functools.cache
def kubectl_kustomize() -> list[str] | None:
    """``[kubectl, kustomize]`` when kubectl embeds kustomize >= 4 (Debian's kubernetes-client 1.20 has v2.0.3)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    probe = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, check=False, timeout=60)
    found = re.search(r"Kustomize Version: v(\d+)\.(\d+)", probe.stdout)
    if probe.returncode != 0 or not found or (int(found[1]), int(found[2])) < _MIN_KUSTOMIZE:
        return None
    return [kubectl, "kustomize"]


@functools.cache
def _render_text(folder: str) -> str:
    command = kubectl_kustomize()
    require_tool("kubectl with kustomize >= 4", command is not None)
    assert command is not None
    result = subprocess.run([*command, folder], capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed:\n{result.stderr}")
    return result.stdout


def render(overlay: str) -> list[dict[str, Any]]:
    """Every object of ``deploy/k8s/overlays/<overlay>`` (or ``base``), as ``kubectl kustomize`` renders it."""
    folder = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
    return [doc for doc in yaml.safe_load_all(_render_text(str(folder))) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` named ``name``."""
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment or StatefulSet."""
    return workload["spec"]["template"]["spec"]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every Deployment and StatefulSet."""
    for workload in objects:
        if workload["kind"] in ("Deployment", "StatefulSet"):
            for container in pod_spec(workload)["containers"]:
                yield workload, container
