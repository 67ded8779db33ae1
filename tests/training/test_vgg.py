"""Tests for the project-built VGG19 feature extractor (training/vgg.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.vgg import VGG19Features

# Conv layers of torchvision's vgg19().features: index -> (out, in) channels.
_TORCHVISION_CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
    16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512),
    30: (512, 512), 32: (512, 512), 34: (512, 512),
}  # fmt: skip


def _torchvision_layout_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for index, (out_ch, in_ch) in _TORCHVISION_CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * 0.01
        state[f"features.{index}.bias"] = torch.randn(out_ch, generator=gen) * 0.01
    state["classifier.0.weight"] = torch.zeros(8, 4)  # ignored on load (real shape 4096×25088)
    state["classifier.0.bias"] = torch.zeros(8)
    return state


def test_output_shapes_at_64() -> None:
    feats = VGG19Features()(torch.rand(1, 3, 64, 64))
    shapes = [tuple(f.shape) for f in feats]
    assert shapes == [(1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16), (1, 512, 8, 8), (1, 512, 4, 4)]
    assert all(bool((f >= 0).all()) for f in feats)  # all are ReLU outputs


def test_is_frozen_but_passes_gradients_to_the_input() -> None:
    vgg = VGG19Features()
    vgg.train()
    assert not vgg.training
    assert not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    sum(f.sum() for f in vgg(x)).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_loads_torchvision_layout(tmp_path: Path) -> None:
    state = _torchvision_layout_state()
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    vgg = VGG19Features.from_file(path)
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
    assert torch.equal(vgg.features[34].bias, state["features.34.bias"])
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())


def test_loads_its_own_state_dict(tmp_path: Path) -> None:
    original = VGG19Features()
    path = tmp_path / "own.pt"
    torch.save(original.state_dict(), path)
    x = torch.rand(1, 3, 32, 32)
    for a, b in zip(original(x), VGG19Features.from_file(path)(x), strict=True):
        assert torch.equal(a, b)


def test_normalises_with_imagenet_statistics() -> None:
    vgg = VGG19Features()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    first = vgg.features[1](vgg.features[0](torch.zeros(1, 3, 16, 16)))
    assert torch.allclose(vgg(mean)[0], first)  # the ImageNet mean maps to a zero input


@pytest.mark.parametrize("kind", ["wrong_shape", "missing_key", "not_a_state_dict", "not_torch"])
def test_rejects_a_wrong_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.pth"
    state = _torchvision_layout_state()
    if kind == "wrong_shape":
        state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
        torch.save(state, path)
    elif kind == "missing_key":
        del state["features.34.weight"]
        torch.save(state, path)
    elif kind == "not_a_state_dict":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"VGG19|state dict"):
        VGG19Features.from_file(path)


def test_rejects_images_too_small_for_four_poolings() -> None:
    with pytest.raises(ValueError):
        VGG19Features()(torch.rand(1, 3, 15, 32))


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        VGG19Features.from_file(tmp_path / "absent.pth")
