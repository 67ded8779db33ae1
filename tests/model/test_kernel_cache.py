"""model.kernel_cache: the oneDNN cache capacity it sets, and that oneDNN keeps that many kernels in a process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from commands import cli
from model.kernel_cache import (
    DEFAULT_SHAPES,
    ENV_SHAPES,
    ONEDNN_DEFAULT_CAPACITY,
    ONEDNN_ENV,
    PRIMITIVES_PER_SHAPE,
    shapes_kept,
    size_kernel_cache,
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    monkeypatch.delenv(ENV_SHAPES, raising=False)
    return monkeypatch


def test_default_capacity_holds_the_default_number_of_shapes(clean_env: pytest.MonkeyPatch) -> None:
    assert size_kernel_cache() == DEFAULT_SHAPES * PRIMITIVES_PER_SHAPE
    assert os.environ[ONEDNN_ENV] == str(DEFAULT_SHAPES * PRIMITIVES_PER_SHAPE)


def test_shapes_setting_scales_the_capacity(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ENV_SHAPES, " 400 ")
    assert size_kernel_cache() == 400 * PRIMITIVES_PER_SHAPE


def test_operator_capacity_and_zero_shapes_leave_onednn_alone(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ONEDNN_ENV, "77")
    assert size_kernel_cache() is None
    assert os.environ[ONEDNN_ENV] == "77"
    clean_env.delenv(ONEDNN_ENV)
    clean_env.setenv(ENV_SHAPES, "0")
    assert size_kernel_cache() is None
    assert ONEDNN_ENV not in os.environ


def test_shapes_kept_reads_the_capacity_in_force(clean_env: pytest.MonkeyPatch) -> None:
    assert shapes_kept() == ONEDNN_DEFAULT_CAPACITY // PRIMITIVES_PER_SHAPE  # nobody set it: oneDNN's default
    size_kernel_cache()
    assert shapes_kept() == DEFAULT_SHAPES
    clean_env.setenv(ONEDNN_ENV, str(10 * PRIMITIVES_PER_SHAPE + 5))  # the operator's own value
    assert shapes_kept() == 10
    clean_env.setenv(ONEDNN_ENV, "lots")  # not a number: counted as the default
    assert shapes_kept() == ONEDNN_DEFAULT_CAPACITY // PRIMITIVES_PER_SHAPE


def test_unparsable_shapes_fall_back_to_the_default(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ENV_SHAPES, "many")  # the service's Settings refuses it; here the default applies
    assert size_kernel_cache() == DEFAULT_SHAPES * PRIMITIVES_PER_SHAPE


def test_every_dehaze_command_sizes_the_cache(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ENV_SHAPES, "3")
    assert cli.main(["summary", "--variant", "dcmpnet_tiny"]) == 0
    assert os.environ[ONEDNN_ENV] == str(3 * PRIMITIVES_PER_SHAPE)


# A convolution at SHAPES distinct input sizes (one oneDNN primitive each), then at the first size again: oneDNN's
# verbose log says whether that last primitive came from its cache. Set after torch is imported and before the
# first convolution, as the dehaze command does.
_PROBE = """
import torch
from model.kernel_cache import size_kernel_cache
size_kernel_cache()
conv = torch.nn.Conv2d(16, 16, 3, padding=1)
sides = [40 + 2 * i for i in range({shapes})] + [40]
with torch.inference_mode():
    for i, side in enumerate(sides):
        if i == len(sides) - 1:
            print("REVISIT", flush=True)
        conv(torch.rand(1, 16, side, side).contiguous(memory_format=torch.channels_last))
"""


def _revisit_hits_the_cache(kernel_cache_shapes: str, shapes: int) -> bool:
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV}
    env.update({ENV_SHAPES: kernel_cache_shapes, "ONEDNN_VERBOSE": "2"})
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(shapes=shapes)], env=env, capture_output=True, text=True, check=True
    ).stdout
    revisit = [line for line in out.split("REVISIT", 1)[1].splitlines() if ",convolution," in line]
    assert any("create:cache_" in line for line in revisit), out[-2000:]  # the convolution ran through oneDNN
    return any("create:cache_hit" in line for line in revisit)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_keeps_as_many_kernels_as_the_setting_allows() -> None:
    shapes = PRIMITIVES_PER_SHAPE + 40  # more convolution primitives than one "shape" of capacity holds
    assert not _revisit_hits_the_cache("1", shapes)  # evicted: generated again
    assert _revisit_hits_the_cache(str(DEFAULT_SHAPES), shapes)  # kept
