"""The training configuration: one validated object, loaded from YAML and written into the run folder.

Unknown keys are errors (a typo must not silently fall back to a default). Relative paths (``data.root``,
``run_dir``, ``loss.vgg_weights``) are resolved against the current directory when they exist there, otherwise
against the repository root (the folder that holds ``training/``), so ``../shared/datasets/sots-indoor-train``
works from the repository root and from anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.data import AIRLIGHT_RANGE, BETA_RANGE, DEFAULT_DEPTH_SCALE

__all__ = [
    "REPO_ROOT",
    "ClearSourceConfig",
    "DataConfig",
    "DistillConfig",
    "LossConfig",
    "OptimConfig",
    "RealPhotosConfig",
    "TrainConfig",
    "WallFittedRun",
    "WarmStartConfig",
    "load_config",
    "resolve_path",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """Resolves a config path: absolute as is; relative against the cwd if it exists there, else the repo root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve() if p.exists() else p
    return (REPO_ROOT / p).resolve()


class StrictModel(BaseModel):
    """A config section: unknown keys are errors and a loaded config cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSettings(StrictModel):
    """The run-level keys of every trainer's config (DCMPNet, CORUN, Colabator fine-tuning).

    Attributes:
        run_dir: Output folder (config.yaml, log.jsonl, checkpoints).
        seed: Seed of data sampling, augmentation and initialisation.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``/``cuda:N``.
        threads: torch intra-op threads (0 leaves torch's default).
        max_steps: Training iterations (also the cosine schedule's length).
        max_wall_seconds: Stop (validate or save) after this much wall time in this process; ``None``: no limit.
        progress: Show the tqdm progress bar.
    """

    run_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    threads: int = Field(default=0, ge=0)
    max_steps: int = Field(default=1000, ge=1)
    max_wall_seconds: float | None = Field(default=None, gt=0)
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    def to_yaml(self) -> str:
        """The config as YAML (what is written into the run folder)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class WallFittedRun(RunSettings):
    """The run-level keys of a trainer that can fit its length to a wall-time budget (DCMPNet and CORUN training).

    Attributes:
        fit_steps_to_wall: Re-fit ``max_steps`` (and so the cosine schedule) at the first validation so that the
            run ends inside ``max_wall_seconds``, from the measured time per step (validation included). For a
            machine of unknown speed lent for a fixed time (a GPU run); the fitted length is saved with the
            checkpoints, and ``--resume`` keeps it.
    """

    fit_steps_to_wall: bool = False

    @model_validator(mode="after")
    def _fit_needs_wall(self) -> WallFittedRun:
        if self.fit_steps_to_wall and self.max_wall_seconds is None:
            raise ValueError("fit_steps_to_wall needs max_wall_seconds")
        return self


class SceneSplits(StrictModel):
    """The held-out scenes of a RESIDE-layout folder, as strings and disjoint.

    Attributes:
        val_scenes: Held out of training; validation (checkpoint selection).
        test_scenes: Held out of training and of validation, kept for the final evaluation.
    """

    val_scenes: list[str] = Field(min_length=1)
    test_scenes: list[str] = Field(default_factory=list)

    @field_validator("val_scenes", "test_scenes", mode="before")
    @classmethod
    def _scenes_as_str(cls, v: object) -> object:
        return [str(s) for s in v] if isinstance(v, list | tuple) else v

    @model_validator(mode="after")
    def _disjoint_splits(self) -> SceneSplits:
        if shared := sorted(set(self.val_scenes) & set(self.test_scenes)):
            raise ValueError(f"scenes {shared} are in both val_scenes and test_scenes")
        return self


class DataConfig(SceneSplits):
    """Where the data lives and how training samples are made.

    Attributes:
        root: RESIDE-layout folder with hazy/, GT/ and depth/ (depth is the target M_u and is required).
        val_scenes: Scenes held out of training and used for validation (checkpoint selection).
        test_scenes: Scenes held out of training and of validation, kept for the final evaluation.
        crop: Training crop side.
        batch_size: Images per step.
        num_workers: DataLoader worker processes (0: load in the training process).
        synthetic_fraction: Probability that a training item is synthesised from GT + depth instead of a real pair.
        depth_scale: Depth of d = 1 for synthesis (see training.data).
        beta_range: β range for synthesis.
        airlight_range: A range for synthesis.
        val_crop: Centre-crop validation images to this side (``None``: full images, the evaluation protocol).
        val_max_images: Validate on at most this many images (evenly spaced), ``None``: all.
    """

    root: str
    crop: int = Field(default=256, ge=32)
    batch_size: int = Field(default=8, ge=1)
    num_workers: int = Field(default=0, ge=0)
    synthetic_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    depth_scale: float = Field(default=DEFAULT_DEPTH_SCALE, gt=0.0)
    beta_range: tuple[float, float] = BETA_RANGE
    airlight_range: tuple[float, float] = AIRLIGHT_RANGE
    val_crop: int | None = Field(default=None, ge=32)
    val_max_images: int | None = Field(default=None, ge=1)

    @field_validator("beta_range", "airlight_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"need 0 <= low <= high, got {v}")
        return v


class OptimConfig(StrictModel):
    """Adam for each network (+ its perceptron), cosine decay per step, clipping and mixed precision.

    Attributes:
        lr_phi: Initial learning rate of Φ and its perceptron.
        lr_backbone: Initial learning rate of Φ's DehazeFormer backbone (:data:`model.warm_start.BACKBONE_PREFIXES`)
            when it differs from ``lr_phi``, e.g. lower for a warm-started backbone than for the new parts;
            ``None``: ``lr_phi``. Both follow the same cosine curve.
        lr_psi: Initial learning rate of Ψ and its perceptron.
        lr_min: Final learning rate of the cosine schedule (reached at ``max_steps``).
        warmup_steps: Linear learning-rate warm-up over the first steps (0: none). A warm-started Φ needs it: at
            full rate from step 0, Adam's first updates moved the new parts off their pass-through start and cost
            1 dB of validation PSNR in 100 steps.
        betas: Adam betas.
        weight_decay: Adam weight decay.
        grad_clip: Max gradient norm per optimiser step; 0 disables clipping.
        amp: Mixed precision on CUDA: ``auto`` (bf16 where supported, else fp16 + GradScaler), ``bf16``,
            ``fp16`` or ``off``. Always off on the CPU.
    """

    lr_phi: float = Field(default=1e-4, gt=0)
    lr_backbone: float | None = Field(default=None, gt=0)
    lr_psi: float = Field(default=1e-4, gt=0)
    lr_min: float = Field(default=1e-6, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class LossConfig(StrictModel):
    """Loss weights and the difference perceptrons.

    Attributes:
        l1_weight: Weight of a plain ``L1(Φ(ũ*), u)`` beside Eq. 11's coefficient-weighted one (the released code's
            main term). With Eq. 11 alone (0), the adversarial coefficient map concentrates on the worst pixels and
            the output's global tone drifts: distillation from the previously shipped weights lost 3 dB in 100 steps.
        unet_weight: Weight of Eq. 5 (Φ's own U-Net features of hazy vs clear).
        depth_absolute_weight: Weight of Eq. 9 (absolute L1 towards the depth target) in Ψ's loss.
        depth_scale_invariant_weight: Weight of a scale-invariant L1 in Ψ's loss (the prediction aligned to the
            target's median per sample, :func:`training.losses.scale_invariant_l1`); 0 is the paper's loss. For depth
            normalised per scene, as SOTS's, whose scale a crop cannot show.
        depth_consistency_weight: Weight of ``L1(Ψ(Φ(ũ*)), M_u)`` in Φ's loss, the path by which the depth error
            reaches Φ (Eq. 12); the released code uses 0.1.
        perceptron_hidden: Width of both difference perceptrons.
        reverse_scale: Scale of the reversed gradient that trains the perceptrons adversarially.
        vgg_weights: File with ImageNet VGG19 weights for the contrastive perceptual term of Eq. 11; ``None``
            switches the term off (the weights cannot be downloaded here).
        perceptual_weight: Weight of that term.
    """

    l1_weight: float = Field(default=0.0, ge=0)
    unet_weight: float = Field(default=1.0, ge=0)
    depth_absolute_weight: float = Field(default=1.0, ge=0)
    depth_scale_invariant_weight: float = Field(default=0.0, ge=0)
    depth_consistency_weight: float = Field(default=0.1, ge=0)
    perceptron_hidden: int = Field(default=16, ge=1)
    reverse_scale: float = Field(default=1.0, ge=0)
    vgg_weights: str | None = None
    perceptual_weight: float = Field(default=1.0, ge=0)


class ClearSourceConfig(StrictModel):
    """Clear images hazed on the fly (see :mod:`training.sources`).

    Attributes:
        root: The folder.
        layout: ``reside`` (GT/ + depth/), ``nyu`` (scene/frame.jpg + .png) or ``flat`` (no depth: a prior depth
            shapes the haze, Ψ is not trained on it).
        weight: Share of the training mixture.
        exclude: Scenes left out (validation/test scenes of that folder).
        rotate: Also rotate crops by k·90° (indoor scenes; off for photos with a sky).
    """

    root: str
    layout: Literal["reside", "nyu", "flat"]
    weight: float = Field(ge=0.0)
    exclude: list[str] = Field(default_factory=list)
    rotate: bool = True


class RealPhotosConfig(StrictModel):
    """Real hazy photos without ground truth, trained on teacher labels.

    Attributes:
        roots: Flat folders of photos.
        exclude_names: File stems kept out of training (the held-out photos that evaluation uses).
        weight: Share of the training mixture.
        max_side: Working size: photos are downscaled so their longer side is at most this before the teachers run.
        depth_weight: Weight of the pseudo-depth target for Ψ (times its confidence); 0 turns it off.
    """

    roots: list[str] = Field(min_length=1)
    exclude_names: list[str] = Field(default_factory=list)
    weight: float = Field(ge=0.0)
    max_side: int = Field(default=640, ge=64)
    depth_weight: float = Field(default=1.0, ge=0.0)


class DistillConfig(StrictModel):
    """Learning from a published teacher (LKD-Net) on a mixture of sources (see :mod:`training.sources`).

    When set, it replaces ``data.synthetic_fraction``'s two-source mix: the training set becomes the mixture of
    the real pairs of ``data.root`` (with the teacher's output as an extra target), ``clear_sources`` hazed on the
    fly and ``real`` photos with teacher labels. Validation stays on ``data.val_scenes``.

    Attributes:
        teacher: Released LKD-Net weights run on the real pairs of ``data.root``.
        real_teachers: Name -> weights of the candidate teachers for real photos (the scorers choose per photo).
        pairs_weight: Share of the mixture taken by ``data.root``'s real pairs; 0 leaves them out, and then
            ``data.root`` need only hold the validation scenes.
        gt_teacher_weight: Weight of the L1 term towards the teacher's output where ground truth exists.
        clear_sources: Clear images hazed on the fly.
        real: Real photos with teacher labels, or ``None``.
        length: Items per epoch of the mixture.
        scale_range: Zoom range of the training crops.
        jitter: Colour jitter strength of clear images before hazing.
        cache_dir: Where teacher outputs and prior depths are cached.
        workers: Processes that compute missing teacher outputs before training starts.
    """

    teacher: str
    real_teachers: dict[str, str] = Field(default_factory=dict)
    pairs_weight: float = Field(default=0.2, ge=0.0)
    gt_teacher_weight: float = Field(default=0.5, ge=0.0)
    clear_sources: list[ClearSourceConfig] = Field(default_factory=list)
    real: RealPhotosConfig | None = None
    length: int = Field(default=4000, ge=1)
    scale_range: tuple[float, float] = (0.6, 1.0)
    jitter: float = Field(default=1.0, ge=0.0)
    cache_dir: str = ".data/teacher_cache"
    workers: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _real_needs_teachers(self) -> DistillConfig:
        if self.real is not None and not self.real_teachers:
            raise ValueError("distill.real needs at least one entry in distill.real_teachers")
        return self


class WarmStartConfig(StrictModel):
    """Trained weights to start from, loaded after ``init_from`` (a fresh schedule, not a resume).

    Attributes:
        dehazeformer: A DehazeFormer checkpoint loaded into Φ's backbone, the fusion convolutions set to pass it
            through: Φ then computes that DehazeFormer exactly (:func:`model.warm_start.warm_start_phi`).
        psi_from: A checkpoint of ours whose Ψ (same layout) starts Ψ, e.g. ``model/weights/dcmpnet_small.pt``.
        licence: SPDX id of the DehazeFormer file's licence (``GPL-3.0`` for the shared DehazeFormer-T). Weights
            trained from it are derived from it: every checkpoint of the run records it as ``licence``. Required,
            so that no derived weights are labelled with the project's licence by omission.
    """

    dehazeformer: str
    psi_from: str | None = None
    licence: str = Field(min_length=1)


class TrainConfig(WallFittedRun):
    """Everything a training run needs (the run-level keys are :class:`WallFittedRun`'s).

    Attributes:
        variant: Model variant name (model.variants).
        formulation: ``alternating`` (the paper, Eq. 10 then Eq. 12 each iteration), ``joint`` (the released
            code: one backward on L_dehaze + L_depth without detach, both optimisers step) or ``depth_only`` (the
            Ψ step alone, Φ frozen: the first stage after a warm start).
        val_every: Validate and save every this many steps (and always at the end).
        init_from: Start Φ and Ψ from this checkpoint's weights (a fresh schedule; ``--resume`` is different).
        warm_start: Start Φ's backbone from a trained DehazeFormer (:mod:`model.warm_start`); the variant must
            have its settings (``dcmpnet_t``).
        resume_state: A file (e.g. ``training/state/dcmpnet_t.pt``) that receives the run's compact resume state at
            every validation (:mod:`training.resume_state`), and from which ``--resume`` restarts the run when the
            run folder has no ``last.pt`` (a new machine).
        distill: Learn from a teacher on a mixture of sources; ``None``: the paper's data recipe.
    """

    variant: str = "dcmpnet_small"
    formulation: Literal["alternating", "joint", "depth_only"] = "alternating"
    val_every: int = Field(default=200, ge=1)
    init_from: str | None = None
    warm_start: WarmStartConfig | None = None
    resume_state: str | None = None
    data: DataConfig
    distill: DistillConfig | None = None
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()

    @field_validator("variant")
    @classmethod
    def _variant(cls, v: str) -> str:
        from model.variants import VARIANTS

        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choices: {sorted(VARIANTS)}")
        return v


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Reads and validates a YAML config.

    Args:
        path: The YAML file.
        overrides: Nested dict merged over the file's content (for tests and scripts).

    Returns:
        The validated config.

    Raises:
        FileNotFoundError: The file is missing.
        pydantic.ValidationError: A value is invalid or a key unknown.
    """
    return TrainConfig.model_validate(read_yaml(path, overrides))


def read_yaml(path: str | Path, overrides: dict | None = None) -> dict:
    """A YAML config file's mapping with a nested dict of overrides merged over it (every config kind's loader).

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: Its top level is not a mapping.
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return _merge(raw, overrides or {})


def check_device(v: str) -> str:
    """A config's ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; raises ValueError otherwise."""
    if v not in ("auto", "cpu") and not (v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit())):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")
    return v


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
