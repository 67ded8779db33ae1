"""Security: API keys on every work endpoint, no file path taken from a request, and a private, non-root deployment.

Already proven elsewhere and relied on here:
    * ``tests/service/test_api_queue.py::test_api_keys_guard_the_work_endpoints_only``: health, readiness, metrics
      and the OpenAPI document stay open when keys are set;
    * ``tests/deploy/test_compose.py::test_redis_is_durable_private_and_checked``: Redis publishes no port;
    * ``tests/deploy/test_dockerfile.py::test_runs_as_a_non_root_user_it_creates``: the image's USER is uid 10001.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.compose_file import load_compose, merge
from tests.reliability.corpus import FORM, Part, multipart
from tests.reliability.processes import REPO
from tests.reliability.traffic import expect_error, expect_image
from tests.service.live_server import image_bytes, live_server, model_settings

KEYS = ("k-alpha-7f3e", "k-beta-91c2")
WORK_ENDPOINTS = ("/dehaze", "/depth", "/density")
BAD_AUTHORIZATION = {
    "missing": None,
    "unknown-key": "Bearer k-gamma-0000",
    "prefix-of-a-key": f"Bearer {KEYS[0][:-1]}",
    "key-with-suffix": f"Bearer {KEYS[0]}x",
    "both-keys-joined": f"Bearer {','.join(KEYS)}",
    "empty-token": "Bearer",
    "no-scheme": KEYS[0],
    "basic-scheme": f"Basic {KEYS[0]}",
}
REQUEST_HANDLING: tuple[str, ...] = ("service/api", "service/queue", "service/codec.py", "service/density.py")
REQUEST_HANDLING += ("service/headers.py", "service/errors.py", "service/server.py")
REQUEST_HANDLING += (
    "service/main.py",
    "service/worker/loop.py",
    "service/worker/batching.py",
    "service/worker/plan.py",
    "service/worker/tiling.py",
)
"""Every module that sees request data. ``service/worker/runner.py`` opens the model file named by the settings."""
FILE_CALLS = frozenset({"open", "read_bytes", "read_text", "write_bytes", "write_text", "mkdir", "unlink", "rename"})
FILE_CALLS |= {"replace", "touch", "rmdir", "remove", "rmtree", "copyfile", "NamedTemporaryFile", "mkstemp"}


@pytest.fixture(scope="module")
def keyed(tiny_model: tuple[Path, Path]) -> Iterator[str]:
    """The embedded service with two API keys."""
    with live_server(model_settings(tiny_model, api_keys=",".join(KEYS))) as url:
        yield url


def upload(url: str, path: str, authorization: str | None, data: bytes, filename: str = "a.png") -> httpx.Response:
    """POST ``data`` as the ``image`` file to ``path`` with the given Authorization header (None: none)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    files = {"image": (filename, data, "image/png")}
    return httpx.post(f"{url}{path}", files=files, headers=headers, timeout=60)


def jobs_done(url: str) -> float:
    """Jobs finished by the worker so far, all outcomes (``dehaze_jobs_total``)."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(value) for value in re.findall(r"^dehaze_jobs_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
def test_every_work_endpoint_refuses_a_request_without_a_valid_key(keyed: str, authorization: str | None) -> None:
    before = jobs_done(keyed)
    for path in WORK_ENDPOINTS:
        response = upload(keyed, path, authorization, image_bytes(24, 16))
        assert "API key" in expect_error(response, 401), path
        assert response.headers["www-authenticate"] == "Bearer"
    assert jobs_done(keyed) == before  # nothing reached the queue


def test_the_key_is_checked_before_the_body_is_read(keyed: str) -> None:
    """An unauthenticated body that would fail to parse (10,000 parts) is refused as 401, not as 422."""
    body = multipart([Part(f"f{i}", b"x", None, None) for i in range(10_000)])
    for path in WORK_ENDPOINTS:
        expect_error(httpx.post(f"{keyed}{path}", content=body, headers=FORM, timeout=60), 401)


@pytest.mark.parametrize("key", KEYS)
def test_each_configured_key_opens_every_work_endpoint(keyed: str, key: str) -> None:
    for path, scheme in zip(WORK_ENDPOINTS, ("Bearer", "bearer", "BEARER"), strict=True):  # the scheme is caseless
        response = upload(keyed, path, f"{scheme} {key}", image_bytes(24, 16))
        assert response.status_code == 200, (path, response.text)


def test_the_upload_file_name_is_never_used_as_a_path(tmp_path: Path, keyed: str) -> None:
    """File names that point at a file on disk, or at a new file, do not make the server read or write it.

    The file named by the upload exists with other pixels (77×55): had the server read it instead of the uploaded
    bytes (40×30), the answer's size would show it. The other names point into an empty folder that must stay empty.
    """
    on_disk = tmp_path / "on-disk.png"
    on_disk.write_bytes(image_bytes(77, 55))
    empty = tmp_path / "must-stay-empty"
    empty.mkdir()
    target = empty / "written.png"
    names = [str(on_disk), str(target), "../" * 16 + str(target).lstrip("/"), f"file://{target}"]
    names += ["..\\..\\..\\windows\\win.ini", "/etc/passwd", "../../../../../../etc/shadow", "%2e%2e%2fetc%2fpasswd"]
    bearer = f"Bearer {KEYS[0]}"
    for name in names:
        expect_image(upload(keyed, "/dehaze", bearer, image_bytes(40, 30), filename=name), (40, 30))
        refused = upload(keyed, "/dehaze", bearer, b"not an image", filename=name)
        assert name not in expect_error(refused, 415)  # the name is not echoed back either
    assert list(empty.iterdir()) == []
    assert on_disk.read_bytes() == image_bytes(77, 55)


def file_system_calls(path: Path) -> list[str]:
    """``name (file:line)`` of every call in ``path`` that reads or writes files.

    A call to ``open`` is allowed only when its first argument is an ``io.BytesIO(...)``: that is Pillow decoding
    an upload in memory.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        in_memory = bool(node.args) and "BytesIO" in ast.unparse(node.args[0])
        if name in FILE_CALLS and not (name == "open" and in_memory):
            found.append(f"{name} ({path.name}:{node.lineno})")
    return found


def test_request_handling_code_has_no_file_system_access() -> None:
    """Nothing that handles a request can read or write a path, whatever the request says."""
    files = [
        p
        for entry in REQUEST_HANDLING
        for p in ([REPO / entry] if entry.endswith(".py") else (REPO / entry).rglob("*.py"))
    ]
    assert len(files) > 10
    assert [call for path in files for call in file_system_calls(path)] == []


def test_the_checker_finds_file_access(tmp_path: Path) -> None:
    """The AST check above is not blind: it reports file access and lets in-memory decoding pass."""
    module = tmp_path / "handler.py"
    module.write_text(
        "import io\nfrom pathlib import Path\nfrom PIL import Image\n\n"
        "def handle(name, data):\n"
        "    Image.open(io.BytesIO(data))\n"
        "    Path(name).write_bytes(data)\n"
        "    return open(name).read()\n",
        encoding="utf-8",
    )
    assert file_system_calls(module) == ["write_bytes (handler.py:7)", "open (handler.py:8)"]


@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.cpu.yaml"]])
def test_the_deployment_keeps_redis_private_and_no_service_runs_as_root(files: list[str]) -> None:
    """No compose file publishes Redis, puts a service on the host network, or overrides the image's user."""
    compose: dict[str, Any] = {}
    for name in files:
        compose = merge(compose, load_compose(REPO / "docker" / name))
    services = compose["services"]
    assert "ports" not in services["redis"] and "network_mode" not in services["redis"]
    for name in ("api", "worker", "redis"):
        service = services[name]
        assert service.get("network_mode") != "host" and not service.get("privileged"), name
        assert str(service.get("user", "10001")).split(":")[0] not in {"0", "root"}, name
    for name in ("api", "worker"):
        assert "user" not in services[name], f"{name} must run as the image's non-root USER"
