"""Frozen VGG19 feature extractor for the contrastive perceptual loss (Eq. 11; Simonyan & Zisserman, ICLR 2015).

The network is built here (no torchvision dependency) with torchvision's layout of ``vgg19().features``, so its
state dict keys are ``features.<index>.weight|bias`` exactly as in torchvision's ``vgg19-dcbb9e9d.pth``.

Weights: ImageNet weights cannot be downloaded on the project's machines, and a randomly initialised VGG is not
a perceptual metric. ``VGG19Features.from_file(path)`` loads a user-supplied file; training turns the perceptual
term OFF when no file is configured (docs/training.md says how to supply one).

Input is an RGB image in [0, 1]; the ImageNet mean/std normalisation happens inside ``forward``. The outputs are
relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 (at full, 1/2, 1/4, 1/8 and 1/16 resolution with 64, 128, 256,
512 and 512 channels). The layers after relu5_1 (conv5_2..conv5_4) exist only so that a full torchvision file
loads strictly; ``forward`` does not run them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

__all__ = ["VGG19Features"]

logger = logging.getLogger(__name__)

_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                               512, 512, 512, 512)  # fmt: skip
# Indices in ``features`` of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (torchvision numbering).
_TAPS = (1, 6, 11, 20, 29)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_MIN_SIZE = 16
_IGNORED_PREFIXES = ("classifier.",)


def _make_layers() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for item in _CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = int(item)
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """VGG19 conv stack returning relu1_1..relu5_1; frozen (no parameter gradients, eval mode).

    Gradients still flow to the input, as a perceptual loss needs. A freshly built instance has random weights;
    use ``from_file`` for real ones.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = _make_layers()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Stays in eval mode whatever ``mode`` is, so a parent's ``.train()`` cannot unfreeze it."""
        return super().train(False)

    def forward(self, image01: torch.Tensor) -> list[torch.Tensor]:
        """Extracts the five feature maps.

        Args:
            image01: RGB N×3×H×W in [0, 1], H and W at least 16.

        Returns:
            ``[relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]``.
        """
        if image01.dim() != 4 or image01.shape[1] != 3:
            raise ValueError(f"expected N×3×H×W, got shape {tuple(image01.shape)}")
        if min(image01.shape[2:]) < _MIN_SIZE:
            raise ValueError(f"VGG19 needs H, W >= {_MIN_SIZE} (four 2× poolings), got {tuple(image01.shape[2:])}")
        x = (image01 - self.mean) / self.std
        feats: list[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            if index > _TAPS[-1]:
                break
            x = layer(x)
            if index in _TAPS:
                feats.append(x)
        return feats

    @classmethod
    def from_file(cls, path: str | Path) -> VGG19Features:
        """Builds the extractor with weights from a file.

        Accepts torchvision's ``vgg19-dcbb9e9d.pth`` (``features.*`` keys; ``classifier.*`` is ignored) or a state
        dict saved from this module (the same ``features.*`` keys).

        Args:
            path: A ``torch.save``-d state dict.

        Returns:
            The frozen extractor in eval mode.

        Raises:
            FileNotFoundError: The file does not exist.
            ValueError: The file is not a state dict, or its keys or shapes do not fit VGG19.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"VGG19 weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a non-checkpoint file
            raise ValueError(f"cannot read VGG19 weights from {path}: {exc}") from exc
        model = cls()
        model.features.load_state_dict(_features_state(state, model, path))
        model.requires_grad_(False)
        logger.info("loaded VGG19 weights from %s", path)
        return model.eval()


def _features_state(state: object, model: VGG19Features, path: Path) -> dict[str, torch.Tensor]:
    """Checks a loaded state dict against the model and returns it keyed for ``model.features``."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    kept = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    wrong = [f"{k}: {tuple(kept[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in kept and kept[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} is not a VGG19 state dict (torchvision 'features.N.weight' layout expected): "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}, wrong shapes {wrong[:4]}"
        )
    prefix = "features."
    return {k[len(prefix) :]: v for k, v in kept.items()}
