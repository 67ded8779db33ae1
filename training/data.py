"""Datasets for training and evaluation: RESIDE-layout pairs, on-the-fly haze synthesis, unpaired real photos.

RESIDE layout (ITS, OTS, SOTS and ``../shared/datasets/sots-indoor-train``)::

    root/hazy/<scene>_<anything>.<ext>   hazy versions of a scene
    root/GT/<scene>.<ext>                the clear image
    root/depth/<scene>.png               optional: relative depth of the clear image, 0 = near, max = far

A hazy file pairs with the GT file whose stem equals the hazy name before its first ``_`` (``1400_7`` ->
``1400``). Depth PNGs are 16-bit (or 8-bit) and normalised to [0, 1] by the type's maximum.

Items are dicts of float32 torch tensors in [0, 1]: ``hazy`` 3×h×w, ``clear`` 3×h×w, ``depth`` 1×h×w (only when
the folder has depth) and ``name`` (str). Randomness per item comes from ``np.random.default_rng((seed, epoch,
index))``: reproducible, independent of DataLoader workers, and different every epoch after ``set_epoch``.

Synthetic haze: ``I = J·t + A·(1 − t)``, ``t = exp(−β·s·d)`` with β ~ U(0.6, 1.8) and A ~ U(0.7, 1.0) (the RESIDE
ranges) and ``d`` the scene's relative depth in [0, 1]. Because ``d`` is normalised per scene, the depth scale
``s`` sets how thick the haze gets. ``haze_params.json`` gives, for each SOTS scene and each of the 10 levels, the
fitted scattering scale ``beta_rel`` with ``−ln t = beta_rel·d``; assuming the 10 levels are RESIDE's β evenly
spaced over [0.6, 1.8], ``beta_rel / β`` is 0.82 on average (std 0.065, range 0.60-0.98 over the 35 scenes;
``fit_depth_scale`` recomputes it). ``DEFAULT_DEPTH_SCALE = 0.82`` therefore makes synthetic pairs span the same
optical depths (0.49-1.48 at the far plane) as the real SOTS pairs (0.43-1.48).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from model.physics import synthesize_haze
from training.augment import augment_pair, center_crop

__all__ = [
    "AIRLIGHT_RANGE",
    "BETA_RANGE",
    "DEFAULT_DEPTH_SCALE",
    "IMAGE_EXTENSIONS",
    "HazeMix",
    "PairRecord",
    "PairedFolder",
    "SyntheticHaze",
    "UnpairedFolder",
    "fit_depth_scale",
    "from_chw",
    "list_images",
    "load_depth",
    "load_rgb",
    "resize_max_side",
    "scan_pairs",
    "scene_of",
    "synthesize",
    "to_chw",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
BETA_RANGE = (0.6, 1.8)
AIRLIGHT_RANGE = (0.7, 1.0)
DEFAULT_DEPTH_SCALE = 0.82
_RESIDE_LEVELS = 10


@dataclass(frozen=True)
class PairRecord:
    """One hazy image, its clear image and (optionally) the clear image's depth."""

    name: str
    scene: str
    hazy: Path
    clear: Path
    depth: Path | None


def scene_of(name: str) -> str:
    """The scene key of a file stem: the part before the first ``_`` (the whole stem if there is none)."""
    return name.split("_", 1)[0]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path, warn: bool = True) -> list[Path]:
    """Image files of a folder, sorted by name; other files are skipped, with a warning when ``warn``.

    Args:
        folder: Directory to list (not recursive).
        warn: Log a warning naming each skipped non-image file.

    Returns:
        Sorted image paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    images: list[Path] = []
    skipped: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        (images if _is_image(path) else skipped).append(path)
    if warn and skipped:
        logger.warning(
            "skipping %d non-image file(s) in %s: %s", len(skipped), folder, ", ".join(p.name for p in skipped)
        )
    return images


def _by_stem(paths: Iterable[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        if p.stem in out:
            raise ValueError(f"two files with the stem {p.stem!r} in {folder}: {out[p.stem].name}, {p.name}")
        out[p.stem] = p
    return out


def _fmt(names: Iterable[str], limit: int = 20) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def scan_pairs(root: str | Path, scenes: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[PairRecord]:
    """Pairs the hazy, GT and optional depth files of a RESIDE-layout folder.

    The whole folder is checked before filtering by scene, so a broken folder fails at once, whatever the split.

    Args:
        root: Folder with ``hazy/``, ``GT/`` and optionally ``depth/``.
        scenes: Keep only these scenes (``None``: all).
        exclude: Drop these scenes (e.g. the validation scenes from the training split).

    Returns:
        Records sorted by hazy file name.

    Raises:
        FileNotFoundError: ``root``, ``hazy/`` or ``GT/`` is missing.
        ValueError: Hazy images without GT, GT images without hazy versions, or (when ``depth/`` exists) GT
            images without depth or depth maps without GT; the message names the files. Also an empty selection
            or requested scenes that do not exist.
    """
    root = Path(root)
    for sub in ("hazy", "GT"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root} is not a RESIDE-layout folder: missing {root / sub}")
    hazy = _by_stem(list_images(root / "hazy"), root / "hazy")
    clear = _by_stem(list_images(root / "GT"), root / "GT")
    has_depth = (root / "depth").is_dir()
    depth = _by_stem(list_images(root / "depth"), root / "depth") if has_depth else {}
    problems = []
    no_gt = [hazy[s].name for s in hazy if scene_of(s) not in clear]
    if no_gt:
        problems.append(f"hazy images without a GT image in {root / 'GT'}: {_fmt(no_gt)}")
    hazy_scenes = {scene_of(s) for s in hazy}
    no_hazy = [clear[s].name for s in clear if s not in hazy_scenes]
    if no_hazy:
        problems.append(f"GT images without any hazy version in {root / 'hazy'}: {_fmt(no_hazy)}")
    if has_depth:
        no_depth = [clear[s].name for s in clear if s not in depth]
        if no_depth:
            problems.append(f"GT images without a depth map in {root / 'depth'}: {_fmt(no_depth)}")
        orphan = [depth[s].name for s in depth if s not in clear]
        if orphan:
            problems.append(f"depth maps without a GT image: {_fmt(orphan)}")
    if problems:
        raise ValueError(f"unmatched files in {root}: " + "; ".join(problems))
    wanted = None if scenes is None else {str(s) for s in scenes}
    if wanted is not None and wanted - set(clear):
        raise ValueError(f"scenes not found in {root}: {_fmt(wanted - set(clear))}")
    dropped = {str(s) for s in exclude}
    records = [
        PairRecord(s, scene_of(s), hazy[s], clear[scene_of(s)], depth.get(scene_of(s)))
        for s in sorted(hazy)
        if (wanted is None or scene_of(s) in wanted) and scene_of(s) not in dropped
    ]
    if not records:
        raise ValueError(f"no pairs left in {root} after selecting scenes={scenes} excluding {sorted(dropped)}")
    return records


def load_rgb(path: str | Path) -> np.ndarray:
    """Reads an image as RGB float32 H×W×3 in [0, 1]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_depth(path: str | Path) -> np.ndarray:
    """Reads a depth PNG as float32 H×W×1 in [0, 1] (16-bit divided by 65535, 8-bit by 255)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:  # an RGB-saved depth map: all channels equal by convention
        arr = arr[..., 0]
    scale = 65535.0 if arr.dtype == np.uint16 or arr.dtype == np.int32 or arr.max() > 255 else 255.0
    return (arr.astype(np.float32) / scale)[..., None]


def to_chw(arr: np.ndarray) -> torch.Tensor:
    """An H×W×C array -> a contiguous C×H×W float32 tensor (a copy)."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def from_chw(tensor: torch.Tensor) -> np.ndarray:
    """A C×H×W tensor (any device or dtype) -> an H×W×C float32 array."""
    return tensor.detach().float().cpu().permute(1, 2, 0).numpy()


def synthesize(
    clear: np.ndarray,
    depth: np.ndarray,
    beta: float,
    airlight: float | np.ndarray,
    depth_scale: float = DEFAULT_DEPTH_SCALE,
) -> np.ndarray:
    """Atmospheric scattering model ``I = J·t + A·(1 − t)``, ``t = exp(−β·s·d)``, on H×W×C arrays.

    The one implementation is :func:`model.physics.synthesize_haze` (tensors); this adapts the data pipeline's
    arrays to it.

    Args:
        clear: Clear image J, H×W×3 in [0, 1].
        depth: Relative depth d, H×W×1 in [0, 1].
        beta: Scattering coefficient β.
        airlight: Airlight A: grey (a number) or one value per channel (3 values).
        depth_scale: Scene depth of d = 1 in the units β refers to (see the module docstring).

    Returns:
        Hazy image, float32 H×W×3.
    """
    j = torch.from_numpy(np.ascontiguousarray(clear.transpose(2, 0, 1), dtype=np.float32))[None]
    d = torch.from_numpy(np.ascontiguousarray(depth.transpose(2, 0, 1), dtype=np.float32))[None] * depth_scale
    a = torch.as_tensor(np.asarray(airlight, dtype=np.float32)).reshape(1, -1)
    return synthesize_haze(j, d, beta, a)[0].permute(1, 2, 0).numpy().astype(np.float32)


def fit_depth_scale(haze_params: str | Path) -> float:
    """Mean of ``beta_rel / β`` over a ``haze_params.json`` (levels 1-10 taken as β evenly spaced in 0.6-1.8).

    Args:
        haze_params: Path of the JSON file ``{scene: {level: {"A", "beta_rel", ...}}}``.

    Returns:
        The depth scale that makes synthetic haze match the fitted SOTS haze on average.
    """
    params = json.loads(Path(haze_params).read_text())
    betas = np.linspace(*BETA_RANGE, _RESIDE_LEVELS)
    ratios = [
        float(levels[str(k + 1)]["beta_rel"]) / betas[k]
        for levels in params.values()
        for k in range(_RESIDE_LEVELS)
        if str(k + 1) in levels
    ]
    if not ratios:
        raise ValueError(f"no levels 1-{_RESIDE_LEVELS} in {haze_params}")
    return float(np.mean(ratios))


class _Epoched(Dataset):
    """Base for datasets whose per-item randomness is ``default_rng((seed, epoch, index))``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Changes the random draws of every item (call once per pass over the data)."""
        self.epoch = int(epoch)

    def _rng(self, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index), stream))


class PairedFolder(_Epoched):
    """Real hazy/clear(/depth) pairs of a RESIDE-layout folder.

    Args:
        root: The folder (see the module docstring).
        crop: Random crop side for training; ``None`` gives full images.
        seed: Seed of the per-item random generators.
        scenes: Keep only these scenes.
        exclude: Drop these scenes.
        augment: Random crop + flip + rot90 when True; when False and ``crop`` is set, a centre crop.
    """

    def __init__(
        self,
        root: str | Path,
        crop: int | None = 256,
        seed: int = 0,
        scenes: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        augment: bool = True,
    ) -> None:
        super().__init__(seed)
        self.root = Path(root)
        self.records = scan_pairs(self.root, scenes, exclude)
        self.crop = crop
        self.augment = augment
        self.has_depth = all(r.depth is not None for r in self.records)

    @property
    def scenes(self) -> list[str]:
        """The distinct scenes, sorted."""
        return sorted({r.scene for r in self.records})

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> list[np.ndarray]:
        """The full-size arrays [hazy, clear(, depth)] of one record."""
        rec = self.records[index]
        arrays = [load_rgb(rec.hazy), load_rgb(rec.clear)]
        if rec.depth is not None:
            arrays.append(load_depth(rec.depth))
        if len({a.shape[:2] for a in arrays}) != 1:
            raise ValueError(f"{rec.name}: hazy, GT and depth differ in size: {[a.shape[:2] for a in arrays]}")
        return arrays

    def __getitem__(self, index: int) -> dict:
        arrays = self.load(index)
        if self.augment:
            arrays = augment_pair(arrays, self.crop, self._rng(index))
        elif self.crop is not None:
            arrays = center_crop(arrays, self.crop)
        item = {"hazy": to_chw(arrays[0]), "clear": to_chw(arrays[1]), "name": self.records[index].name}
        if len(arrays) == 3:
            item["depth"] = to_chw(arrays[2])
        return item


class SyntheticHaze(_Epoched):
    """Unlimited hazy pairs synthesised from each scene's clear image and depth with random β and A.

    Item ``i`` uses scene ``i % n_scenes``; the crop/flip/rotation and β, A are drawn from the item's generator,
    so ``length`` can be any number (35 scenes give as many distinct pairs as wanted).

    Args:
        root: RESIDE-layout folder with ``depth/``.
        crop: Crop side (``None``: full image).
        seed: Seed of the per-item random generators.
        length: Items per epoch (default: one per scene).
        scenes: Keep only these scenes.
        exclude: Drop these scenes.
        beta_range: Range of β.
        airlight_range: Range of the grey airlight A.
        depth_scale: See ``synthesize``.
    """

    def __init__(
        self,
        root: str | Path,
        crop: int | None = 256,
        seed: int = 0,
        length: int | None = None,
        scenes: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        beta_range: Sequence[float] = BETA_RANGE,
        airlight_range: Sequence[float] = AIRLIGHT_RANGE,
        depth_scale: float = DEFAULT_DEPTH_SCALE,
    ) -> None:
        super().__init__(seed)
        records = scan_pairs(root, scenes, exclude)
        if any(r.depth is None for r in records):
            raise ValueError(f"haze synthesis needs depth maps, but {Path(root) / 'depth'} does not exist")
        by_scene = {r.scene: r for r in records}
        self.scenes = sorted(by_scene)
        self.records = [by_scene[s] for s in self.scenes]
        self.crop = crop
        self.length = len(self.scenes) if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        for name, rng_ in (("beta_range", beta_range), ("airlight_range", airlight_range)):
            if len(rng_) != 2 or not 0 <= rng_[0] <= rng_[1]:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {rng_}")
        self.beta_range = (float(beta_range[0]), float(beta_range[1]))
        self.airlight_range = (float(airlight_range[0]), float(airlight_range[1]))
        self.depth_scale = float(depth_scale)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index % len(self.records)]
        assert rec.depth is not None  # __init__ rejects records without depth
        rng = self._rng(index)
        clear, depth = augment_pair([load_rgb(rec.clear), load_depth(rec.depth)], self.crop, rng)
        beta = float(rng.uniform(*self.beta_range))
        airlight = float(rng.uniform(*self.airlight_range))
        hazy = synthesize(clear, depth, beta, airlight, self.depth_scale)
        return {
            "hazy": to_chw(hazy),
            "clear": to_chw(clear),
            "depth": to_chw(depth),
            "name": f"{rec.scene}_syn_b{beta:.2f}_a{airlight:.2f}",
        }


class HazeMix(_Epoched):
    """Mixes real pairs with synthetic ones: each item is synthetic with probability ``synthetic_fraction``.

    Args:
        real: The real pairs.
        synthetic: The synthetic source (indexed with the same index, so its draws stay reproducible).
        synthetic_fraction: Probability in [0, 1] that an item is synthetic.
        seed: Seed of the mixing draws.
        length: Items per epoch (default: ``len(real)``).
    """

    def __init__(
        self,
        real: PairedFolder,
        synthetic: SyntheticHaze,
        synthetic_fraction: float,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not 0.0 <= synthetic_fraction <= 1.0:
            raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}")
        self.real, self.synthetic = real, synthetic
        self.fraction = float(synthetic_fraction)
        self.length = len(real) if length is None else int(length)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch here and in both sources."""
        super().set_epoch(epoch)
        self.real.set_epoch(epoch)
        self.synthetic.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if self._rng(index, stream=1).random() < self.fraction:
            return self.synthetic[index]
        return self.real[index % len(self.real)]


class UnpairedFolder(Dataset):
    """A flat folder of real hazy photos without ground truth (no-reference evaluation).

    Non-image files are skipped with a warning. Items: ``{"hazy": 3×H×W, "name": stem}``.

    Args:
        root: The folder.
        max_side: Downscale (area resampling) so the longer side is at most this; ``None`` keeps full size.
    """

    def __init__(self, root: str | Path, max_side: int | None = None) -> None:
        self.root = Path(root)
        self.paths = list_images(self.root)
        if not self.paths:
            raise ValueError(f"no images in {self.root}")
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        return {"hazy": to_chw(resize_max_side(load_rgb(path), self.max_side)), "name": path.stem}


def resize_max_side(arr: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscales an H×W×C float array so that max(H, W) <= ``max_side`` (box filter); no-op when it fits.

    Args:
        arr: Image or depth, H×W×C float32.
        max_side: Longest side allowed, or ``None``.

    Returns:
        The (possibly) resized array.
    """
    if max_side is None or max(arr.shape[:2]) <= max_side:
        return arr
    h, w = arr.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    channels = [
        np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F").resize(size, Image.Resampling.BOX))
        for c in range(arr.shape[2])
    ]
    return np.stack(channels, axis=-1).astype(np.float32)
