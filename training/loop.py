"""The step loop every trainer shares: data order, run folder, running loss means and the validation cadence.

A trainer (``training.trainer.Trainer`` for DCMPNet, ``training.corun_train.CorunTrainer`` for CORUN) owns its
networks, losses and checkpoint contents; what is the same for all of them lives here, so that ``--resume`` means
the same thing everywhere:

* The order of epoch ``e`` is ``randperm(n)`` from a generator seeded with ``seed·100003 + e``: a pure function of
  seed and epoch. After a resume at step ``s`` the loader starts inside epoch ``s // steps_per_epoch`` at the batch
  where the run stopped, so the remaining batches come in the order they would have come. Items themselves draw
  their randomness from ``(seed, epoch, index)`` (``training.data._Epoched``), so they are the same items too.
* ``run_dir/last.pt`` existing without ``--resume`` is an error (a run is never silently overwritten).
* Validation (and saving) happens every ``val_every`` steps, at ``max_steps`` and when ``max_wall_seconds`` runs
  out; the mean of every training loss since the previous validation goes into the log.
* With ``fit_to_wall``, the first validation also re-fits ``max_steps`` to what the measured pace (steps and that
  validation together, less the first steps' warm-up) lets finish inside ``max_wall_seconds``
  (:func:`fitted_max_steps`), and tells the trainer, whose learning-rate schedule follows it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

__all__ = [
    "LoopSettings",
    "RunningMeans",
    "StepHost",
    "batches",
    "cosine_factor",
    "dataset_len",
    "epoch_order",
    "fitted_max_steps",
    "log_validation",
    "prepare_run_dir",
    "run_steps",
    "save_validated",
]

logger = logging.getLogger(__name__)


def cosine_factor(step: int, total: int, lr0: float, lr_min: float, warmup: int = 0) -> float:
    """Multiplier of ``lr0`` giving a cosine decay from ``lr0`` to ``lr_min`` over ``total`` steps, after a linear
    warm-up over the first ``warmup`` steps (from ``lr0 / warmup`` up to ``lr0``; 0: none)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(step, total) / max(total, 1)
    return (lr_min + (lr0 - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))) / lr0


def dataset_len(dataset: Dataset) -> int:
    """``len(dataset)``: torch's ``Dataset`` declares no ``__len__`` (an iterable-style one has none), but every
    dataset the trainers use is map-style and defines it."""
    return len(cast(Sized, dataset))


def epoch_order(seed: int, n: int, epoch: int) -> list[int]:
    """The order in which epoch ``epoch`` visits ``n`` training items: a pure function of seed and epoch."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def batches(
    dataset: Dataset,
    start_step: int,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict]:
    """Batches from step ``start_step`` on, forever; the rest of an interrupted epoch comes first.

    Each epoch calls ``dataset.set_epoch(epoch)`` when the dataset has it and drops its last incomplete batch.

    Raises:
        ValueError: Fewer items than one batch.
    """
    steps_per_epoch = dataset_len(dataset) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{dataset_len(dataset)} training items is fewer than batch_size={batch_size}")
    epoch, done = divmod(start_step, steps_per_epoch)
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        order = epoch_order(seed, dataset_len(dataset), epoch)[done * batch_size : steps_per_epoch * batch_size]
        loader = DataLoader(
            Subset(dataset, order),
            batch_size=batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
        yield from loader
        epoch, done = epoch + 1, 0


def prepare_run_dir(run_dir: Path, config_yaml: Callable[[], str], resume: bool, load: Callable[[Path], None]) -> None:
    """Resumes from ``run_dir/last.pt`` (calling ``load``) or refuses to overwrite it; then writes ``config.yaml``
    from ``config_yaml()``, called after ``load`` so that what a resumed run restored (a fitted length) is in it.

    Raises:
        FileNotFoundError: ``resume`` without a ``last.pt``.
        FileExistsError: A ``last.pt`` exists and ``resume`` is off.
    """
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume given but {last} does not exist")
        load(last)
    elif last.exists():
        raise FileExistsError(f"{last} exists: pass --resume to continue, or choose another run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml())


@dataclass
class RunningMeans:
    """Running sums of the training losses between validations (keys as the trainer reports them)."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, losses: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def log_validation(
    run_dir: Path, step: int, metrics: dict[str, float], running: RunningMeans, lrs: dict[str, float], elapsed: float
) -> None:
    """Appends one validation's line to ``run_dir/log.jsonl`` (step, scores, mean losses, learning rates, seconds)."""
    record = {"step": step, **metrics, "losses": running.means(), **lrs, "elapsed": round(elapsed, 3)}
    with (run_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    logger.info("step %d: val PSNR %.3f SSIM %.4f", step, metrics["psnr"], metrics["ssim"])


def save_validated(
    save: Callable[[str, dict[str, float]], None], metrics: dict[str, float], best: float, key: str = "psnr"
) -> float:
    """Saves ``best.pt`` when validation ``metrics[key]`` (PSNR by default) beats ``best``, then ``last.pt``;
    returns the best value so far. Without a value for ``key`` (e.g. no depth could be scored), the first
    validation still writes a ``best.pt``."""
    value = metrics.get(key, -math.inf)
    if value > best or best == -math.inf:
        best = value
        save("best.pt", metrics)
    save("last.pt", metrics)
    return best


@dataclass(frozen=True)
class LoopSettings:
    """The config values the loop reads (both trainers' configs have them under these names)."""

    max_steps: int
    val_every: int
    batch_size: int
    progress: bool
    max_wall_seconds: float | None
    fit_to_wall: bool = False


class StepHost(Protocol):
    """What :func:`run_steps` needs from a trainer."""

    step: int

    def train_step(self, batch: dict) -> dict[str, float]: ...

    def _validate_and_save(self, running: RunningMeans) -> None: ...


def fitted_max_steps(
    step: int, steps_done: int, seconds_spent: float, seconds_left: float, margin: float = 0.04
) -> int:
    """The last step a run can reach in ``seconds_left`` at the pace of ``steps_done`` steps in ``seconds_spent``.

    The pace includes a validation (the first, with its own warm-up), so it errs on the slow side; ``margin``
    keeps a further share of the time back for the final validation and save. Never less than ``step``.
    """
    seconds_per_step = seconds_spent / max(steps_done, 1)
    return step + max(0, math.floor(seconds_left * (1.0 - margin) / max(seconds_per_step, 1e-9)))


class _Pace:
    """Wall time per step since the first ``skip`` steps of this process (cuDNN autotuning, the loader's start)."""

    def __init__(self, step: int, skip: int) -> None:
        self.from_step, self.mark = step + skip, (time.monotonic(), step)

    def tick(self, step: int) -> None:
        if step == self.from_step:
            self.mark = (time.monotonic(), step)

    def fit(self, step: int, seconds_left: float) -> int:
        t, s = self.mark
        return fitted_max_steps(step, step - s, time.monotonic() - t, seconds_left)


def run_steps(
    host: StepHost,
    source: Iterator[dict],
    settings: LoopSettings,
    t0: float,
    on_fit: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Steps ``host`` until ``max_steps`` or the wall-time limit (counted from ``t0``), validating on schedule.

    ``on_fit`` receives the re-fitted ``max_steps`` when ``settings.fit_to_wall`` is set (required then).

    Returns:
        The last step's losses (empty when there was nothing left to do).
    """
    running = RunningMeans()
    losses: dict[str, float] = {}
    max_steps, limit = settings.max_steps, settings.max_wall_seconds
    if host.step >= max_steps:
        logger.info("already at step %d >= max_steps %d: nothing to do", host.step, max_steps)
        return losses
    bar = tqdm(total=max_steps, initial=host.step, disable=not settings.progress, unit="step", dynamic_ncols=True)
    rate = 0.0
    fit = settings.fit_to_wall and limit is not None
    if fit and on_fit is None:
        raise ValueError("fit_to_wall needs an on_fit callback")
    pace = _Pace(host.step, skip=min(10, settings.val_every // 5))
    try:
        while host.step < max_steps:
            t = time.monotonic()
            losses = host.train_step(next(source))
            running.add(losses)
            pace.tick(host.step)
            ips = settings.batch_size / max(time.monotonic() - t, 1e-9)
            rate = ips if rate == 0 else 0.9 * rate + 0.1 * ips
            bar.update(1)
            bar.set_postfix({**{k: f"{v:.4f}" for k, v in losses.items()}, "img/s": f"{rate:.2f}"})
            out_of_time = limit is not None and time.monotonic() - t0 >= limit
            if host.step % settings.val_every == 0 or host.step >= max_steps or out_of_time:
                host._validate_and_save(running)
                running = RunningMeans()
                if fit and not out_of_time:
                    assert limit is not None and on_fit is not None  # what ``fit`` implies (checked above)
                    max_steps = pace.fit(host.step, limit - (time.monotonic() - t0))
                    on_fit(max_steps)
                    bar.total = max_steps
                    fit = False
            if out_of_time:
                logger.info("max_wall_seconds reached at step %d", host.step)
                break
    finally:
        bar.close()
    return losses
