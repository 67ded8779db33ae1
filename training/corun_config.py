"""The configuration of a CORUN pre-training run: one validated object, loaded from YAML, written into the run folder.

``dehaze train --config FILE`` reads the file's ``variant`` first (:func:`is_corun_config`): a CORUN variant
(``model.corun.CORUN_VARIANTS``) selects this schema and :mod:`training.corun_train`; anything else stays with
DCMPNet's :class:`training.config.TrainConfig`. The run-level keys (``run_dir``, ``seed``, ``device``, ``threads``,
``max_steps``, ``max_wall_seconds``, ``val_every``, ``progress``, ``init_from``) mean what they mean there; unknown
keys are errors and relative paths resolve as :func:`training.config.resolve_path` says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from training.config import SceneSplits, StrictModel, WallFittedRun, read_yaml
from training.corun_haze import HazeRecipe
from training.corun_losses import CorunLossWeights

__all__ = [
    "CorunDataConfig",
    "CorunHazeConfig",
    "CorunLossConfig",
    "CorunOptimConfig",
    "CorunSourceConfig",
    "CorunTrainConfig",
    "is_corun_config",
    "load_corun_config",
]

_RELEASED = HazeRecipe()


class CorunSourceConfig(StrictModel):
    """A folder of clear images with true depth.

    Attributes:
        root: The folder.
        layout: ``reside`` (``GT/`` + ``depth/``, e.g. SOTS) or ``nyu`` (``scene/frame.jpg`` + ``.png``).
        weight: Share of the training mixture.
        exclude: Scenes left out. A ``reside`` folder that is also ``data.val_root`` always leaves out the
            validation and test scenes as well, whatever this list says.
    """

    root: str
    layout: Literal["reside", "nyu"]
    weight: float = Field(default=1.0, gt=0.0)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("exclude", mode="before")
    @classmethod
    def _as_str(cls, v: object) -> object:
        return [str(s) for s in v] if isinstance(v, list | tuple) else v


class CorunHazeConfig(StrictModel):
    """The synthetic-haze ranges (:class:`training.corun_haze.HazeRecipe`; defaults: the released pre-training)."""

    beta_range: tuple[float, float] = _RELEASED.beta_range
    airlight_range: tuple[float, float] = _RELEASED.airlight_range
    colour_p: float = _RELEASED.colour_p
    colour_shift: float = _RELEASED.colour_shift
    gamma_p: float = _RELEASED.gamma_p
    gamma_range: tuple[float, float] = _RELEASED.gamma_range
    noise_p: float = _RELEASED.noise_p
    noise_levels: tuple[int, int] = _RELEASED.noise_levels
    jpeg_p: float = _RELEASED.jpeg_p
    jpeg_quality: tuple[int, int] = _RELEASED.jpeg_quality

    @model_validator(mode="after")
    def _valid_recipe(self) -> CorunHazeConfig:
        self.recipe()  # HazeRecipe checks the ranges
        return self

    def recipe(self) -> HazeRecipe:
        """The degradation's ranges as :func:`training.corun_haze.degrade` takes them."""
        return HazeRecipe(**self.model_dump())


class CorunDataConfig(SceneSplits):
    """Training sources, the haze recipe, crops and the validation split.

    Attributes:
        sources: Clear images with depth, hazed on the fly.
        haze: The degradation's ranges.
        length: Training items per epoch of the mixture.
        crop: Training crop side (the released run: 288).
        scale_range: Zoom of the crop window; (1, 1) is a plain crop at full resolution (as released).
        batch_size: Images per step. num_workers: DataLoader processes.
        val_root: RESIDE-layout folder of real hazy/clear pairs for validation (checkpoint selection).
        val_scenes: Its scenes used for validation; test_scenes: kept out of training and validation.
        val_crop: Centre-crop validation images to this side (``None``: full images).
        val_max_images: Validate on at most this many images (evenly spaced), ``None``: all.
    """

    sources: list[CorunSourceConfig] = Field(min_length=1)
    haze: CorunHazeConfig = CorunHazeConfig()
    length: int = Field(default=1000, ge=1)
    crop: int = Field(default=128, ge=16)
    scale_range: tuple[float, float] = (1.0, 1.0)
    batch_size: int = Field(default=4, ge=1)
    num_workers: int = Field(default=0, ge=0)
    val_root: str
    val_crop: int | None = Field(default=None, ge=16)
    val_max_images: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _checks(self) -> CorunDataConfig:
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {self.scale_range}")
        if self.length < self.batch_size:
            raise ValueError(f"length {self.length} is smaller than batch_size {self.batch_size}")
        return self


class CorunOptimConfig(StrictModel):
    """AdamW with a per-step cosine decay (the released run: lr 1e-4, effectively constant: eta_min = 1e-4).

    Attributes:
        lr: Initial learning rate. lr_min: Learning rate reached at ``max_steps``.
        betas: AdamW betas. weight_decay: AdamW's decoupled weight decay (not stated in CORUN.md; 0 here).
        grad_clip: Max gradient norm per step; 0 disables clipping.
        amp: Mixed precision on CUDA (``auto``, ``bf16``, ``fp16``, ``off``); always off on the CPU.
        ema_decay: Keep an exponential moving average of the weights (the released run's ``params_ema``, 0.999)
            and validate/ship it; ``None``: the trained weights themselves.
    """

    lr: float = Field(default=1e-4, gt=0)
    lr_min: float = Field(default=1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=0.0, ge=0)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    ema_decay: float | None = Field(default=0.999, gt=0.0, lt=1.0)

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class CorunLossConfig(StrictModel):
    """Weights of the pre-training terms (:mod:`training.corun_losses`) and the VGG weights file.

    Attributes:
        l1_weight: L1 of the final output to the clear image.
        stage_l1_weight: Mean L1 of the intermediate stages' outputs (the released run: 0, final stage only).
        asm_weight: The ASM re-synthesis term (released: 0.01).
        perceptual_weight: The contrastive perceptual term (released: 0.2).
        vgg_weights: ImageNet VGG19 weights for that term; ``None`` switches it off.
    """

    l1_weight: float = Field(default=1.0, ge=0)
    stage_l1_weight: float = Field(default=0.0, ge=0)
    asm_weight: float = Field(default=0.01, ge=0)
    perceptual_weight: float = Field(default=0.2, ge=0)
    vgg_weights: str | None = None

    def weights(self) -> CorunLossWeights:
        """The weights as :func:`training.corun_losses.pretrain_losses` takes them."""
        return CorunLossWeights(self.l1_weight, self.stage_l1_weight, self.asm_weight, self.perceptual_weight)


class CorunTrainConfig(WallFittedRun):
    """Everything a CORUN pre-training run needs (run-level keys as in :class:`training.config.TrainConfig`,
    ``fit_steps_to_wall`` included).

    Attributes:
        variant: A CORUN variant (``corun``, ``corun_small``, ``corun_tiny``).
        init_from: Start from this CORUN checkpoint's weights (ours or the authors' ``CORUN.pth``), fresh schedule.
    """

    variant: str
    run_dir: str = "runs/corun"
    val_every: int = Field(default=200, ge=1)
    init_from: str | None = None
    data: CorunDataConfig
    optim: CorunOptimConfig = CorunOptimConfig()
    loss: CorunLossConfig = CorunLossConfig()

    @field_validator("variant")
    @classmethod
    def _variant(cls, v: str) -> str:
        from model.corun import CORUN_VARIANTS

        if v not in CORUN_VARIANTS:
            raise ValueError(f"unknown CORUN variant {v!r}; choices: {sorted(CORUN_VARIANTS)}")
        return v


def is_corun_config(path: str | Path, overrides: dict | None = None) -> bool:
    """Whether a training YAML (with ``--set`` overrides) names a CORUN variant."""
    from model.corun import CORUN_VARIANTS

    return read_yaml(path, overrides).get("variant") in CORUN_VARIANTS


def load_corun_config(path: str | Path, overrides: dict | None = None) -> CorunTrainConfig:
    """Reads and validates a CORUN training YAML.

    Raises:
        FileNotFoundError: The file is missing.
        pydantic.ValidationError: A value is invalid or a key unknown.
    """
    return CorunTrainConfig.model_validate(read_yaml(path, overrides))
