"""Channels-last activations stay channels-last (model/layout.py), and NCHW ones NCHW."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.layout import cat_channels, channels_last_copy, is_channels_last, keep_channels_last
from model.pipeline import build_pipeline

NHWC = torch.channels_last


def test_cat_is_nhwc_when_any_part_is_and_values_are_unchanged() -> None:
    nhwc = torch.rand(1, 4, 5, 6).contiguous(memory_format=NHWC)
    depth = torch.rand(1, 1, 5, 6)  # 1 channel: NCHW and NHWC at once
    plain = torch.rand(1, 3, 5, 6)
    assert not is_channels_last(torch.cat([depth, nhwc], dim=1))  # what torch.cat alone does
    mixed = cat_channels([depth, nhwc])
    assert is_channels_last(mixed) and torch.equal(mixed, torch.cat([depth, nhwc], dim=1))
    assert not is_channels_last(cat_channels([depth, plain])) and cat_channels([depth, plain]).is_contiguous()
    summed = keep_channels_last(torch.stack([nhwc, nhwc], dim=1).sum(dim=1), [nhwc])
    assert is_channels_last(summed) and torch.equal(summed, 2 * nhwc)
    assert not is_channels_last(depth) and not is_channels_last(torch.rand(2, 3, 4))


@pytest.mark.parametrize("channels_last", [True, False], ids=["export-copy", "as-trained"])
def test_every_convolution_sees_the_layout_of_its_weights(channels_last: bool) -> None:
    """The exported (channels-last) copy feeds every convolution NHWC, so none converts its input; the network as
    trained keeps NCHW everywhere."""
    torch.manual_seed(0)
    pipeline = build_pipeline("dcmpnet_tiny").eval()
    network = channels_last_copy(pipeline) if channels_last else pipeline
    wrong: list[str] = []

    def check(name: str) -> object:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            ambiguous = x.is_contiguous() and x.is_contiguous(memory_format=NHWC)
            if not ambiguous and is_channels_last(x) is not channels_last:
                wrong.append(f"{name} {tuple(x.shape)}")

        return hook

    for name, module in network.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.register_forward_pre_hook(check(name))
    with torch.inference_mode():
        network(torch.rand(1, 3, 70, 90))
    assert not wrong, wrong
