"""The fine-tuning configuration of ``dehaze finetune``: one validated object, loaded from YAML.

Separate from :mod:`training.config` (``dehaze train``'s schema) because fine-tuning starts from a trained
checkpoint of *either* family and has no validation split: the variant comes from ``init_from``, the data are real
photos plus a synthetic RESIDE folder. Unknown keys are errors; relative paths resolve as in
:func:`training.config.resolve_path` (the current directory if the path exists there, else the repository root).

The held-out photos are named once: ``real.exclude_from`` points at a list in another YAML file as
``FILE#dotted.key`` (the shipped config reads ``distill.real.exclude_names`` of ``distill_small.yaml``, the list
``dehaze evaluate --held-out-of`` also reads), so the two recipes cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator

from training.config import RunSettings, StrictModel, read_yaml, resolve_path
from training.data import AIRLIGHT_RANGE, BETA_RANGE, DEFAULT_DEPTH_SCALE

__all__ = [
    "FinetuneConfig",
    "FinetuneLossConfig",
    "FinetuneOptimConfig",
    "PoolConfig",
    "PriorName",
    "RealConfig",
    "StrongAugConfig",
    "SyntheticConfig",
    "ToneRepairConfig",
    "TrustConfig",
    "load_finetune_config",
    "read_name_list",
]

ScorerName = Literal["fade", "niqe"]
PriorName = Literal["dcp"]


def _pool_scorers() -> list[ScorerName]:
    """``PoolConfig.scorers``'s default (a function, so the list is typed ``list[ScorerName]``)."""
    return ["fade", "niqe"]


def _trust_scorers() -> list[ScorerName]:
    """``TrustConfig.scorers``'s default."""
    return ["fade"]


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= v[0] <= v[1]:
        raise ValueError(f"need 0 <= low <= high, got {v}")
    return v


def read_name_list(reference: str) -> list[str]:
    """The list of names at ``FILE#dotted.key`` (a YAML file and the dotted path of a list inside it).

    Raises:
        ValueError: No ``#``, a missing key, or a value that is not a list.
        FileNotFoundError: The file does not exist.
    """
    file, sep, key = reference.partition("#")
    if not sep or not file or not key:
        raise ValueError(f"expected FILE#dotted.key, got {reference!r}")
    node: object = yaml.safe_load(resolve_path(file).read_text())
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"{file} has no key {key!r} (missing {part!r})")
        node = node[part]
    if not isinstance(node, list):
        raise ValueError(f"{reference} is not a list")
    return [str(name) for name in node]


class RealConfig(StrictModel):
    """Real hazy photos without ground truth.

    Attributes:
        roots: Flat folders of photos (``--real`` replaces them).
        exclude_names: File stems kept out of fine-tuning.
        exclude_from: ``FILE#dotted.key`` of a further list of held-out stems in another YAML file.
        max_side: Working size: each photo is downscaled once so its longer side is at most this. The teacher
            labels the whole working-size photo, so every visit scores the same input and the pool compares like
            with like.
        crop: Side of the training crop cut from the working-size photo (and, identically, from its label).
        batch_size: Real photos per step.
        max_photos: Fine-tune on only this many of the kept photos (``None``: all): the first ones of a permutation
            fixed by ``subset_seed``, so a smaller subset lies inside a larger one (how the gain grows with the
            number of photos).
        subset_seed: Seed of that permutation (not the run's seed, so runs of one subset can differ in their seed).
    """

    roots: list[str] = Field(default_factory=list)
    exclude_names: list[str] = Field(default_factory=list)
    exclude_from: str | None = None
    max_photos: int | None = Field(default=None, ge=1)
    subset_seed: int = 0
    max_side: int = Field(default=384, ge=32)
    crop: int = Field(default=256, ge=16)
    batch_size: int = Field(default=1, ge=1)

    def held_out(self) -> list[str]:
        """Every held-out stem: ``exclude_names`` plus the list ``exclude_from`` points at (sorted, unique)."""
        extra = read_name_list(self.exclude_from) if self.exclude_from else []
        return sorted({*self.exclude_names, *extra})


class StrongAugConfig(StrictModel):
    """The student's strong augmentation of a real crop (photometric and degradations; see ``strong_augment``).

    Attributes:
        brightness: Gain drawn from U(1 − b, 1 + b).
        contrast: Contrast factor about the mean, U(1 − c, 1 + c).
        saturation: Saturation factor, U(1 − s, 1 + s).
        gamma: Exponent drawn from U(1 − g, 1 + g).
        blur_p: Probability of a Gaussian blur.
        blur_sigma: Its σ range in pixels.
        noise_p: Probability of additive Gaussian noise.
        noise_sigma: Its σ range (on the [0, 1] scale).
        jpeg_p: Probability of a JPEG round trip.
        jpeg_quality: Its quality range.
        flip: Random horizontal flip of the crop, applied to the label, trust map and depth alike.
    """

    brightness: float = Field(default=0.25, ge=0, lt=1)
    contrast: float = Field(default=0.25, ge=0, lt=1)
    saturation: float = Field(default=0.25, ge=0, lt=1)
    gamma: float = Field(default=0.2, ge=0, lt=1)
    blur_p: float = Field(default=0.3, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_p: float = Field(default=0.3, ge=0, le=1)
    noise_sigma: tuple[float, float] = (0.003, 0.03)
    jpeg_p: float = Field(default=0.5, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (30, 95)
    flip: bool = True

    _check_ranges = field_validator("blur_sigma", "noise_sigma")(_ordered)

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1] <= 100:
            raise ValueError(f"jpeg_quality must be 1 <= low <= high <= 100, got {v}")
        return v


class ToneRepairConfig(StrictModel):
    """The tone repair of every candidate label (:mod:`training.colabator.tone_repair`).

    Attributes:
        shadow: Luminance below which a pixel is lifted towards the photo.
        strength: How far a black pixel moves towards the photo.
        colour: Remove the change of mean R−G and B−G.
    """

    shadow: float = Field(default=0.1, ge=0, lt=1)
    strength: float = Field(default=1.0, ge=0, le=1)
    colour: bool = True


class PoolConfig(StrictModel):
    """The optimal label pool and the candidates it chooses from.

    Attributes:
        scorers: The criteria a new label must improve, every one of them, to replace the stored label.
        max_pixels: Pixel budget of each scorer (see :mod:`training.quality`).
        teachers: Name -> released LKD-Net weights whose outputs are offered to the pool once per photo, before
            the first step (cached on disk as ``dehaze train``'s distillation caches them).
        priors: Hand-made dehazing methods whose outputs are offered after the teachers', once per photo before the
            first step: ``dcp`` is He et al.'s dark channel prior with a guided-filter transmission
            (``model.physics.dcp_dehaze``, ω = 0.95, t₀ = 0.1). A label source beside the paper's networks: it
            removes more haze than LKD-Net's OTS weights on most photos, and the pool rule and tone guard decide.
        seed_with_ema: Offer the EMA teacher's label of every photo first, before the teachers and priors, as the
            released code fills its pool from the first (teacher) label it sees of a photo.
        tone_repair: Repair every candidate's tones before the guard and the scorers see it (``None``: off).
        cache_dir: Where those teacher outputs are cached.
        workers: Processes computing missing teacher outputs.
        max_crushed: A candidate whose share of near-black pixels (``training.metrics.tone_shift``) exceeds this
            never replaces a stored label, however it scores (``None``: no limit). FADE rewards crushed shadows, so
            without this guard a network that darkens wins the pool with its own darkened outputs.
        max_color_shift: Likewise for the change of mean R−G or B−G against the photo (absolute value).
    """

    scorers: list[ScorerName] = Field(default_factory=_pool_scorers, min_length=1)
    max_pixels: int = Field(default=1_000_000, ge=256)
    teachers: dict[str, str] = Field(default_factory=dict)
    priors: list[PriorName] = Field(default_factory=list)
    seed_with_ema: bool = False
    tone_repair: ToneRepairConfig | None = None
    cache_dir: str = ".data/teacher_cache"
    workers: int = Field(default=1, ge=1)
    max_crushed: float | None = Field(default=None, ge=0.0, le=1.0)
    max_color_shift: float | None = Field(default=None, ge=0.0)

    @field_validator("scorers")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"scorers listed twice: {v}")
        return v


class TrustConfig(StrictModel):
    """The per-pixel trust map of a label (block-wise scores, mapped to [0, 1], upsampled; see ``trust``).

    Attributes:
        scorers: Scorers giving block scores; their unit weights are averaged.
        block: Block side in pixels of the working-size label (a multiple of 8 for FADE).
        half: Per scorer, the score at which a block's weight is 0.5.
        floor: Smallest weight a pixel keeps.
    """

    scorers: list[ScorerName] = Field(default_factory=_trust_scorers, min_length=1)
    block: int = Field(default=32, ge=8)
    half: dict[str, float] = Field(default_factory=lambda: {"fade": 1.0})
    floor: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _halves(self) -> TrustConfig:
        if missing := [s for s in self.scorers if s not in self.half]:
            raise ValueError(f"trust.half has no value for {missing}")
        if any(v <= 0 for v in self.half.values()):
            raise ValueError(f"trust.half values must be positive, got {self.half}")
        return self


class SyntheticConfig(StrictModel):
    """Synthetic pairs mixed into every step so the network does not forget (the existing data code).

    Attributes:
        root: RESIDE-layout folder with hazy/, GT/ and depth/.
        exclude: Scenes kept out (validation and test scenes of that folder).
        crop: Training crop side.
        batch_size: Synthetic items per step.
        synthetic_fraction: Share of items hazed on the fly from GT + depth; the rest are the folder's hazy pairs.
        beta_range: β range for haze synthesis.
        airlight_range: A range for haze synthesis.
        depth_scale: Depth of d = 1 for synthesis (see :mod:`training.data`).
    """

    root: str
    exclude: list[str] = Field(default_factory=list)
    crop: int = Field(default=256, ge=16)
    batch_size: int = Field(default=1, ge=1)
    synthetic_fraction: float = Field(default=0.5, ge=0, le=1)
    beta_range: tuple[float, float] = BETA_RANGE
    airlight_range: tuple[float, float] = AIRLIGHT_RANGE
    depth_scale: float = Field(default=DEFAULT_DEPTH_SCALE, gt=0)

    _check_ranges = field_validator("beta_range", "airlight_range")(_ordered)

    @field_validator("exclude", mode="before")
    @classmethod
    def _as_str(cls, v: object) -> object:
        return [str(s) for s in v] if isinstance(v, list | tuple) else v


class FinetuneOptimConfig(StrictModel):
    """AdamW over the student with a per-step cosine decay (the released Colabator: AdamW, lr 5e-5).

    Attributes:
        lr: Initial learning rate.
        lr_min: Learning rate reached at ``max_steps``.
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        grad_clip: Max gradient norm; 0 disables clipping.
    """

    lr: float = Field(default=5e-5, gt=0)
    lr_min: float = Field(default=1e-6, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)


class FinetuneLossConfig(StrictModel):
    """Weights of the fine-tuning loss terms (see :mod:`training.colabator.losses`).

    Attributes:
        synthetic_weight: L1 to ground truth on the synthetic pairs.
        real_weight: Trust-weighted L1 to the pool label on the strongly augmented real crop.
        asm_weight: CORUN only: trust-weighted re-synthesis ``|J·T + 1 − T − P|`` on the real crop (released: 0.01).
        depth_weight: DCMPNet only: L1 of Ψ to the synthetic pairs' true depth.
        real_depth_weight: DCMPNet only: confidence-weighted L1 of Ψ to the pool label's physics pseudo-depth.
    """

    synthetic_weight: float = Field(default=1.0, ge=0)
    real_weight: float = Field(default=1.0, ge=0)
    asm_weight: float = Field(default=0.01, ge=0)
    depth_weight: float = Field(default=0.1, ge=0)
    real_depth_weight: float = Field(default=0.1, ge=0)


class FinetuneConfig(RunSettings):
    """Everything a fine-tuning run needs.

    Attributes:
        init_from: The checkpoint to fine-tune: ours of either family, or the authors' ``CORUN.pth``.
        run_dir: Output folder (config.yaml, log.jsonl, last.pt).
        seed: Seed of photo order, crops, augmentation and the synthetic stream.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch intra-op threads (0 leaves torch's default).
        max_steps: Steps (also the cosine schedule's length).
        max_wall_seconds: Stop (and save) after this much wall time in this process.
        save_every: Write ``last.pt`` every this many steps (and always at the end).
        log_every: Append a line to ``log.jsonl`` every this many steps (and at the end).
        progress: Show a tqdm progress bar.
        ema_decay: The teacher after each step: ``decay·teacher + (1 − decay)·student`` (released: 0.999).
    """

    init_from: str
    run_dir: str = "runs/colabator"
    save_every: int = Field(default=100, ge=1)
    log_every: int = Field(default=10, ge=1)
    progress: bool = False
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    real: RealConfig = RealConfig()
    strong: StrongAugConfig = StrongAugConfig()
    pool: PoolConfig = PoolConfig()
    trust: TrustConfig = TrustConfig()
    synthetic: SyntheticConfig
    optim: FinetuneOptimConfig = FinetuneOptimConfig()
    loss: FinetuneLossConfig = FinetuneLossConfig()

    @model_validator(mode="after")
    def _crop_fits(self) -> FinetuneConfig:
        if self.real.crop > self.real.max_side:
            raise ValueError(f"real.crop {self.real.crop} exceeds real.max_side {self.real.max_side}")
        return self


def load_finetune_config(path: str | Path, overrides: dict | None = None) -> FinetuneConfig:
    """Reads and validates a fine-tuning YAML file, with a nested dict of overrides merged over it.

    Raises:
        FileNotFoundError: The file is missing.
        pydantic.ValidationError: A value is invalid or a key unknown.
    """
    return FinetuneConfig.model_validate(read_yaml(path, overrides))
