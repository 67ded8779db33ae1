"""``bench_peers`` still runs: its quick mode on the tiny model (ours and the plain FastAPI peer), and its pure parts.

The figures are not checked (they mean nothing at this size and for a second per cell), only that the table has
our rows and the FastAPI peer's with finite throughput, that both servers answer the same pixels, and that a peer
whose package is missing is skipped with a line saying so. LitServe and PyTriton are benchmark-only extras: this
test asks for neither.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.benchmarks import bench_peers


def _textured(path: Path, height: int, width: int) -> Path:
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 7) % 256, (ys * 5) % 256, (xs + ys) % 256], axis=-1) * 0.6
    noise = np.random.default_rng(1).integers(0, 90, base.shape)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_quick_mode_runs_ours_and_the_fastapi_peer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _textured(tmp_path / "upload.png", 120, 160)
    out = tmp_path / "peers.json"
    argv = ["--quick", "--servers", "ours-embedded", "fastapi", "pytriton", "--image", str(image)]
    argv += ["--triton-python", str(tmp_path / "no-such-python"), "--threads", "1", "--device", "cpu"]
    bench_peers.main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "skipped pytriton: PyTriton cannot be imported" in printed
    start = printed.index("throughput")
    table = printed[start : printed.index("\n\n", start)]
    for server in ("ours-embedded", "fastapi"):
        rows = [line.split() for line in table.splitlines() if f" {server} " in f" {line} "]
        assert [row[1] for row in rows] == ["1", "2"], printed  # model, clients, server, req/s, ...
        assert all(math.isfinite(float(row[3])) and float(row[3]) > 0 for row in rows), printed
    document = json.loads(out.read_text())
    assert document["config"]["servers"] == ["ours-embedded", "fastapi"]
    assert [s["max_diff_vs_ours"] for s in document["results"]["servers"]] == [0, 0]  # the same pixels
    assert {r["server"] for r in document["results"]["summary"] if r["errors"] == 0} == {"ours-embedded", "fastapi"}
    shapes = document["results"]["first_shape"]
    assert [r["padded"] for r in shapes] == ["64x96", "32x64"]  # the 96x128 upload, 32 and 64 px smaller
    assert all(r["steady_ms"] > 0 and r["compute_steady_ms"] > 0 for r in shapes)
    assert [t["met"] is not None for t in document["targets"]] == [True]
    assert all(0 <= s["idle_cpu_percent"] < 100 for s in document["results"]["servers"])
    paired = {r["server"]: r for r in document["results"]["paired"]}
    assert set(paired) == {"ours-embedded", "fastapi"} and "one client, requests alternating" in printed
    assert paired["ours-embedded"]["x_ours"] == 1.0 and paired["ours-embedded"]["ok"] == 2  # --quick: 2 turns
    assert paired["fastapi"]["x_ours"] > 0 and paired["fastapi"]["p50_ms"] > 0
    for row in paired.values():  # both answer with Server-Timing: the model's share and the rest of a request
        assert 0 < row["model_p50_ms"] < row["p50_ms"] and row["rest_p50_ms"] > 0


def test_triton_request_and_answer_round_trip() -> None:
    body, headers = bench_peers.request_body("triton", b"\x89PNG-bytes", "a.png")
    header_length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:header_length])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 4 + len(b"\x89PNG-bytes")
    assert body[header_length + 4 :] == b"\x89PNG-bytes"
    answer_header = json.dumps({"outputs": [{"name": "png"}]}).encode()
    content = answer_header + len(b"PNG").to_bytes(4, "little") + b"PNG"
    response = httpx.Response(
        200, content=content, headers={"Inference-Header-Content-Length": str(len(answer_header))}
    )
    assert bench_peers.answer_png("triton", response) == b"PNG"


def test_multipart_request_carries_the_upload() -> None:
    body, headers = bench_peers.request_body("multipart", b"\x89PNG-bytes", "a.png")
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="image"; filename="a.png"' in body and b"\x89PNG-bytes" in body


def test_new_sizes_give_new_padded_shapes() -> None:
    assert bench_peers.new_sizes(460, 620, 32) == [(428, 588), (396, 556)]  # padded 448x608 and 416x576, not 480x640
    assert bench_peers.new_sizes(30, 60, 32) == []


def test_summary_ratios_are_taken_within_a_round_and_targets_allow_the_noise() -> None:
    measured = [(0, "ours-embedded", 10.0), (0, "fastapi", 10.4), (1, "ours-embedded", 5.0), (1, "fastapi", 5.1)]
    cells = [
        {"model": "tiny", "round": r, "clients": 1, "server": s, "rps": rps, "ok": 1, "errors": 0, "p50_ms": 1.0}
        | {"p95_ms": 2.0}
        for r, s, rps in measured
    ]
    summary = {row["server"]: row for row in bench_peers.summarise(cells)}
    assert summary["fastapi"]["x_ours"] == pytest.approx((1.04 + 1.02) / 2)
    assert summary["ours-embedded"]["x_ours"] == 1.0
    (target,) = bench_peers.peer_targets(list(summary.values()), noise=0.05)
    assert target["met"] is True
    (target,) = bench_peers.peer_targets(list(summary.values()), noise=0.01)
    assert target["met"] is False
