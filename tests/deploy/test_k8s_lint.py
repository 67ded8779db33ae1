"""checkov lints the rendered manifests: nothing fails but the checks deploy/k8s/.checkov.yaml skips, with reasons.

checkov pins many libraries, so it lives in its own virtual environment (``.venv-checkov``, made by .ci/run); the
test calls that executable. checkov runs once per overlay without the skips: the failed checks must be exactly the
skipped ones (every other check passes, and no skip outlives its need).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.k8s_manifests import K8S, OVERLAYS, render, require_tool

REPO = K8S.parents[1]
CHECKOV = Path(os.environ.get("DEHAZE_CHECKOV", REPO / ".venv-checkov" / "bin" / "checkov"))
CONFIG = K8S / ".checkov.yaml"


def _skips() -> list[str]:
    return list(yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["skip-check"])


def _checkov(folder: Path) -> list[dict[str, Any]]:
    """Failed checks of checkov on ``folder`` (kubernetes framework, no skips)."""
    require_tool(f"checkov at {CHECKOV}", CHECKOV.is_file())
    result = subprocess.run(
        [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "-o", "json", "--quiet", "--compact"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},  # offline: do not fetch the guideline links
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some check failed
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert sum(r.get("summary", {}).get("passed", 0) for r in reports) > 50, "checkov ran its Kubernetes checks"
    return [check for r in reports for check in r.get("results", {}).get("failed_checks", [])]


def test_every_skip_is_justified_in_a_comment() -> None:
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    for skip in _skips():
        (index,) = [i for i, line in enumerate(lines) if re.fullmatch(rf"\s*-\s*{skip}\s*", line)]
        assert lines[index - 1].lstrip().startswith("#"), f"{skip} has no comment above it"


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_fails_nothing_but_the_justified_skips(overlay: str, tmp_path: Path) -> None:
    (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(render(overlay)), encoding="utf-8")
    failed = _checkov(tmp_path)
    details = sorted({f"{c['check_id']} {c['resource']}" for c in failed if c["check_id"] not in _skips()})
    assert not details, f"checks failing that are not skipped: {details}"
    assert {c["check_id"] for c in failed} == set(_skips()), "a skip in .checkov.yaml is no longer needed"
