"""The label pool's rule with fake scorers: a label is replaced only when the new one is better on every criterion."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.colabator_fixtures import tiny_config
from training.colabator.config import load_finetune_config
from training.colabator.finetune import Finetuner
from training.colabator.pool import LabelPool, PoolEntry, better_on_every

CRITERIA = {"haze": False, "quality": True}  # haze: lower is better; quality: higher is better


def _entry(tag: float, scores: dict[str, float], step: int = 0) -> PoolEntry:
    return PoolEntry(torch.full((3, 4, 4), tag).half(), scores, f"src{tag}", step, torch.ones(1, 1))


def _offer(pool: LabelPool, tag: float, haze: float, quality: float) -> bool:
    scores = {"haze": haze, "quality": quality}
    return pool.offer("photo", scores, lambda: _entry(tag, scores))


def test_replaced_only_when_better_on_every_criterion() -> None:
    pool = LabelPool(CRITERIA)
    assert _offer(pool, 1, haze=2.0, quality=0.3)  # the first label is always kept
    assert not _offer(pool, 2, haze=1.0, quality=0.2)  # less haze but worse quality: kept the old one
    assert not _offer(pool, 3, haze=3.0, quality=0.9)  # better quality but more haze: kept
    assert not _offer(pool, 4, haze=2.0, quality=0.5)  # equal haze is not better (strict rule)
    assert not _offer(pool, 5, haze=math.nan, quality=0.9)  # an undefined score never wins
    assert pool.get("photo").source == "src1"  # type: ignore[union-attr]
    assert _offer(pool, 6, haze=1.5, quality=0.4)  # better on both: replaced
    assert pool.get("photo").source == "src6"  # type: ignore[union-attr]
    assert (pool.offers, pool.replacements, len(pool)) == (6, 1, 1)


def test_rejected_candidates_are_never_built() -> None:
    pool = LabelPool(CRITERIA)
    _offer(pool, 1, haze=1.0, quality=0.5)

    def build() -> PoolEntry:
        raise AssertionError("a rejected candidate's entry was built")

    assert not pool.offer("photo", {"haze": 0.5, "quality": 0.1}, build)


def test_directions_come_from_the_scorers() -> None:
    assert better_on_every({"a": 1.0}, {"a": 2.0}, {"a": False})
    assert not better_on_every({"a": 1.0}, {"a": 2.0}, {"a": True})
    with pytest.raises(ValueError, match="missing"):
        better_on_every({"a": 1.0}, {"b": 2.0}, {"a": True})


def test_pool_state_survives_a_weights_only_round_trip() -> None:
    pool = LabelPool(CRITERIA)
    _offer(pool, 1, haze=1.0, quality=0.5)
    _offer(pool, 2, haze=0.5, quality=0.6)
    buf = io.BytesIO()
    torch.save(pool.state_dict(), buf)
    buf.seek(0)
    restored = LabelPool(CRITERIA)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert (restored.offers, restored.replacements) == (2, 1)
    entry = restored.get("photo")
    assert entry is not None and entry.source == "src2" and torch.equal(entry.label, pool.get("photo").label)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="criteria"):
        LabelPool({"haze": False}).load_state_dict(pool.state_dict())


@dataclass
class ScriptedScorer:
    """A fake scorer that returns the next value of a script for each label it is asked about."""

    name: str
    higher_is_better: bool
    script: Iterator[float] = field(repr=False)
    calls: int = 0

    def __call__(self, rgb: np.ndarray) -> float:
        self.calls += 1
        return next(self.script)


@dataclass(frozen=True)
class FlatTrust:
    """A fake block scorer: every block scores 0 (full trust)."""

    name: str = "fade"
    higher_is_better: bool = False

    def __call__(self, rgb: np.ndarray) -> float:
        return 0.0

    def block_scores(self, rgb: np.ndarray, block: int) -> np.ndarray:
        return np.zeros((-(-rgb.shape[0] // block), -(-rgb.shape[1] // block)))


def test_the_training_loop_keeps_only_labels_better_on_every_criterion(tmp_path: Path) -> None:
    """One photo visited at steps 1-4; the EMA teacher's labels get the scripted scores below."""
    haze = ScriptedScorer("haze", False, iter([2.0, 1.0, 0.5, 0.4]))
    quality = ScriptedScorer("quality", True, iter([0.3, 0.5, 0.4, 0.6]))
    cfg = tiny_config(
        tmp_path, "corun_tiny", max_steps=4, real={"batch_size": 1, "exclude_names": ["photo1", "photo2"]}
    )
    ft = Finetuner(load_finetune_config(cfg), scorers=[haze, quality], trust_scorers=[FlatTrust()])
    labels = []
    for _ in range(4):
        labels.append(ft.teacher_label(ft.photos[0]))  # what the teacher will propose in this step
        ft.train_step()
        entry = ft.pool.get("photo0")
        assert entry is not None
        labels[-1] = (labels[-1], entry)
    kept = [entry.step for _, entry in labels]
    # step 1: first label stored; step 2: better on both -> replaced; step 3: less haze but lower quality -> kept;
    # step 4: better on both than the stored (1.0, 0.5) -> replaced.
    assert kept == [0, 1, 1, 3]
    assert labels[2][1].scores == {"haze": 1.0, "quality": 0.5}
    stored = labels[3][1].label.float().permute(1, 2, 0).numpy()
    np.testing.assert_allclose(stored, labels[3][0], atol=1e-3)  # the stored label is that step's teacher output
    assert (ft.pool.offers, ft.pool.replacements) == (4, 2) and haze.calls == quality.calls == 4
