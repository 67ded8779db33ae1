"""service.worker.warm_up: which padded shapes a worker computes before it is ready, and how often."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from model.kernel_cache import ONEDNN_ENV, PRIMITIVES_PER_SHAPE
from service.config import Settings
from service.worker.runner import Runner
from service.worker.warm_up import padded_shape, parse_sizes, warm_up, warm_up_shapes


class RecordingNet(torch.nn.Module):
    """The pipeline contract (image in, dehazed and depth out), remembering the shape of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.shapes.append((int(x.shape[2]), int(x.shape[3])))
        return x, x.mean(dim=1, keepdim=True)


def test_default_warms_the_bucket_the_tile_and_vga_in_both_orientations() -> None:
    assert warm_up_shapes(Settings()) == [(32, 32), (640, 640), (480, 640), (640, 480)]


def test_sizes_are_width_by_height_and_map_to_the_shapes_the_worker_computes() -> None:
    cfg = Settings(warm_up_sizes="620x460, 1000x300,4032x3024,640x480")
    # 620×460 pads to 480×640 (H×W); 1000×300 is cut into 300×640 tiles, padded to 320×640; 4032×3024 into 640²
    # tiles (already warmed); 640×480 is the same shape as 620×460: each shape once
    assert warm_up_shapes(cfg) == [(32, 32), (640, 640), (480, 640), (320, 640)]
    assert parse_sizes("620x460, 1000X300") == [(620, 460), (1000, 300)]
    assert padded_shape(300, 1000, cfg) == (320, 640)


def test_all_is_every_bucket_up_to_the_tile_and_empty_is_none_beyond_the_two() -> None:
    shapes = warm_up_shapes(Settings(warm_up_sizes="all", tile_size=128, bucket_multiple=32, tile_overlap=16))
    assert len(shapes) == len(set(shapes)) == 16
    assert set(shapes) == {(h, w) for h in (32, 64, 96, 128) for w in (32, 64, 96, 128)}
    assert shapes[:2] == [(32, 32), (128, 128)]
    assert warm_up_shapes(Settings(warm_up_sizes=" ")) == [(32, 32), (640, 640)]


@pytest.mark.parametrize("bad", ["640", "640x", "0x480", "640*480", "all,640x480", "-1x2"])
def test_malformed_sizes_are_refused_at_start(bad: str) -> None:
    with pytest.raises(ValidationError, match="WxH"):
        Settings(warm_up_sizes=bad)


def test_first_two_shapes_run_twice_and_the_others_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ONEDNN_ENV, raising=False)  # oneDNN's default keeps at least 5 shapes: no warning
    net = RecordingNet()
    cfg = Settings(warm_up_sizes="48x40,100x100", tile_size=64, tile_overlap=8, bucket_multiple=16)
    with caplog.at_level(logging.WARNING):
        warm_up(Runner(net, "cpu"), cfg)
    assert net.shapes == [(16, 16), (16, 16), (64, 64), (64, 64), (48, 48)]
    assert not caplog.records


@pytest.mark.parametrize(("capacity", "warned"), [(3 * PRIMITIVES_PER_SHAPE, True), (4 * PRIMITIVES_PER_SHAPE, False)])
def test_more_shapes_than_the_kernel_cache_in_force_holds_is_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, capacity: int, warned: bool
) -> None:
    """The capacity in force is oneDNN's variable, whoever set it (an operator's value wins over the setting)."""
    monkeypatch.setenv(ONEDNN_ENV, str(capacity))
    net = RecordingNet()
    small: dict[str, Any] = {"tile_size": 64, "tile_overlap": 8, "bucket_multiple": 32}
    with caplog.at_level(logging.WARNING, logger="service.worker.warm_up"):
        warm_up(Runner(net, "cpu"), Settings(warm_up_sizes="all", kernel_cache_shapes=64, **small))
    assert len(net.shapes) == 2 + 4  # (32, 32) and (64, 64) twice, then (32, 64) and (64, 32)
    assert ("evicted" in caplog.text and f"{ONEDNN_ENV}={capacity}" in caplog.text) is warned
