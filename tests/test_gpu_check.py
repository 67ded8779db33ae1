"""``tests/benchmarks/gpu_check.sh --dry-run``: the one-chance GPU script runs every phase on the CPU and reports.

A session lent a GPU machine gets one run of it, so this runs the same shell script and the same phase code on the
CPU (tiny model, tiny sizes, batches 1-2, fp32, 2 and 4 clients) and checks that the JSON and the Markdown hold
every phase's rows: install, the CUDA tests (skipped here, but collected and run), the eager baseline, the traced
cells, the worker-path checks, the service rows of both backends, and the targets as PASS/FAIL lines.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.gpu_check import plan_for, size_label

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PLAN = plan_for(dry_run=True)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(OUT folder, JSON document) of one dry run."""
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(out.parent)}
    result = subprocess.run(
        ["bash", "tests/benchmarks/gpu_check.sh", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = (out / "gpu_check.log").read_text(errors="replace") if (out / "gpu_check.log").is_file() else ""
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n--- log\n{log[-6000:]}"
    assert (out / "gpu_check.json").is_file() and (out / "gpu_check.md").is_file(), log[-6000:]
    return out, json.loads((out / "gpu_check.json").read_text())


def test_every_phase_ran(dry_run: tuple[Path, dict[str, Any]]) -> None:
    _, document = dry_run
    results = document["results"]
    log = json.dumps(results, indent=1)[-4000:]
    assert {name: results[name]["status"] for name in ("install", "model", "service")} == dict.fromkeys(
        ("install", "model", "service"), "ok"
    ), log
    assert results["install"]["steps"]["import"] == "ok"
    assert document["machine"]["python"] and document["config"]["dry_run"] is True

    tests = results["cuda_tests"]
    assert tests["exit_code"] == 0 and tests["files"], tests
    assert tests["rows"] and all(r["outcome"] in ("passed", "skipped") for r in tests["rows"]), tests


def test_model_rows(dry_run: tuple[Path, dict[str, Any]]) -> None:
    model = dry_run[1]["results"]["model"]
    variant = PLAN.variants[0][0]
    sizes = {size_label(hw) for hw in PLAN.sizes}
    baseline = model["baseline"]
    assert {(r["variant"], r["size"]) for r in baseline} == {(variant, s) for s in sizes}
    cells = {(r["size"], r["dtype"], r["batch"]) for r in model["rows"]}
    assert cells == {(s, d, b) for s in sizes for d in PLAN.dtypes for b in PLAN.batches}
    for row in [*baseline, *model["rows"]]:
        assert row["status"] == "ok", row
        for key in ("images_per_s", "gmac_per_image", "achieved_tflops", "matmul_share"):
            assert row[key] is not None and row[key] > 0, (key, row)
    assert all(r["x_eager"] > 0 for r in model["rows"])
    assert model["peaks"]["matmul_measured_tflops"]["fp32"] > 0
    assert [(c["dtype"], c["status"], c["finite"]) for c in model["checks"]] == [(d, "ok", True) for d in PLAN.dtypes]


def test_service_rows(dry_run: tuple[Path, dict[str, Any]]) -> None:
    rows = dry_run[1]["results"]["service"]["rows"]
    expected = [(backend, clients) for backend in ("embedded", "redis1") for clients in PLAN.clients]
    assert [(r["backend"], r["clients"]) for r in rows] == expected
    redis = shutil.which("redis-server") is not None
    for row in rows:
        if row["backend"] == "redis1" and not redis:
            assert row["status"] == "error" and "redis-server" in row["error"]
            continue
        assert row["status"] == "ok" and row["ok"] == row["requests"] >= 2 * row["clients"], row
        assert row["throughput_rps"] > 0 and row["p50_ms"] > 0 and row["mean_forward_batch"] >= 1


def test_targets_and_markdown(dry_run: tuple[Path, dict[str, Any]]) -> None:
    out, document = dry_run
    targets = document["targets"]
    assert len(targets) == len(PLAN.variants) + 3  # × eager per variant, share of peak, service per backend
    redis = shutil.which("redis-server") is not None
    for target in targets:
        if "redis1" in target["name"] and not redis:
            continue
        assert target["value"] is not None and target["met"] in (True, False), target
    text = (out / "gpu_check.md").read_text()
    for heading in ("## Targets", "## Phases", "## CUDA tests", "## Model", "## Service", "DRY RUN"):
        assert heading in text
    verdicts = [line for line in text.splitlines() if line.startswith(("| PASS |", "| FAIL |"))]
    assert len(verdicts) == len(targets) - (0 if redis else 1)
    for phase in ("install", "cuda_tests", "model", "service"):
        assert f"| {phase} | " in text
