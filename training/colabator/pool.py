"""The optimal label pool: per real photo, the best pseudo-label seen so far.

Colabator keeps, for each real photo (keyed by its file name), one label with its scores. A new candidate (the EMA
teacher's output on a later visit, or another teacher's output) replaces the stored label only when it is
**strictly better on every criterion**; a candidate better on one score and worse on another is discarded, so the
stored label never gets worse on any criterion. Each criterion's direction comes from its scorer
(``higher_is_better``, :class:`training.quality.Scorer`), never from an assumption. A NaN score is never better.

Departure from the released code: it replaces on ``new >= old`` for both of its scores; we require ``>`` so that an
identical candidate (a teacher that has not moved, or the same teacher output offered twice) does not churn the
pool. The first candidate for a photo is always stored.

Labels are stored as float16 tensors in memory as on disk, so a resumed run sees bit for bit the labels the
interrupted one would have used. :meth:`LabelPool.state_dict` holds only tensors, strings and numbers, so it rides
inside a checkpoint that loads with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LabelPool", "PoolEntry", "better_on_every"]

logger = logging.getLogger(__name__)


def better_on_every(new: Mapping[str, float], old: Mapping[str, float], higher_is_better: Mapping[str, bool]) -> bool:
    """Whether ``new`` is strictly better than ``old`` on every criterion of ``higher_is_better``.

    Raises:
        ValueError: A criterion is missing from ``new`` or ``old``.
    """
    missing = [k for k in higher_is_better if k not in new or k not in old]
    if missing:
        raise ValueError(f"scores missing for {missing}: new {dict(new)}, old {dict(old)}")
    for name, higher in higher_is_better.items():
        a, b = float(new[name]), float(old[name])
        if math.isnan(a) or not (a > b if higher else a < b):
            return False
    return True


@dataclass(frozen=True)
class PoolEntry:
    """A stored label and what goes with it, all at the photo's working size (H×W).

    Attributes:
        label: The pseudo-label, 3×H×W float16 in [0, 1].
        scores: Its global scores, one per criterion.
        source: Who proposed it (``ema`` or a teacher's name).
        step: The training step at which it entered the pool (0: before training).
        trust: Block-wise trust in [0, 1], rows×cols float32 (upsampled to H×W when used).
        depth: Physics pseudo-depth of the label, 1×H×W float16 (DCMPNet's Ψ), or ``None``.
        confidence: Where that depth can be trusted, 1×H×W float16, or ``None``.
    """

    label: torch.Tensor
    scores: dict[str, float]
    source: str
    step: int
    trust: torch.Tensor
    depth: torch.Tensor | None = None
    confidence: torch.Tensor | None = None

    def to_state(self) -> dict[str, Any]:
        """Plain tensors, strings and numbers (``weights_only``-loadable)."""
        return {
            "label": self.label,
            "scores": dict(self.scores),
            "source": self.source,
            "step": self.step,
            "trust": self.trust,
            "depth": self.depth,
            "confidence": self.confidence,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PoolEntry:
        """Inverse of :meth:`to_state`."""
        return cls(
            state["label"],
            {k: float(v) for k, v in state["scores"].items()},
            str(state["source"]),
            int(state["step"]),
            state["trust"],
            state.get("depth"),
            state.get("confidence"),
        )


class LabelPool:
    """Per photo name, the best label so far under the every-criterion rule.

    Args:
        higher_is_better: Criterion name -> its direction (from the scorers).
    """

    def __init__(self, higher_is_better: Mapping[str, bool]) -> None:
        if not higher_is_better:
            raise ValueError("the label pool needs at least one criterion")
        self.higher_is_better = dict(higher_is_better)
        self.entries: dict[str, PoolEntry] = {}
        self.offers = 0
        self.replacements = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> PoolEntry | None:
        """The stored entry of a photo, or ``None``."""
        return self.entries.get(name)

    def accepts(self, name: str, scores: Mapping[str, float]) -> bool:
        """Whether a candidate with these scores would enter the pool (first for its photo, or better on all)."""
        old = self.entries.get(name)
        if old is None:
            return all(not math.isnan(float(scores[k])) for k in self.higher_is_better)
        return better_on_every(scores, old.scores, self.higher_is_better)

    def offer(self, name: str, scores: Mapping[str, float], build: Callable[[], PoolEntry]) -> bool:
        """Stores the candidate if :meth:`accepts` its scores; returns whether it did.

        Args:
            name: The photo.
            scores: The candidate's scores.
            build: Makes the entry (called only when it is stored: its trust map and depth cost time).
        """
        self.offers += 1
        if not self.accepts(name, scores):
            return False
        entry = build()
        if name in self.entries:
            self.replacements += 1
            logger.debug("pool: %s replaced by %s at step %d %s", name, entry.source, entry.step, entry.scores)
        self.entries[name] = entry
        return True

    def mean_scores(self) -> dict[str, float]:
        """Each criterion's mean over the stored labels (empty pool: empty dict)."""
        if not self.entries:
            return {}
        return {k: sum(e.scores[k] for e in self.entries.values()) / len(self.entries) for k in self.higher_is_better}

    def sources(self) -> dict[str, int]:
        """How many stored labels each source proposed."""
        counts: dict[str, int] = {}
        for entry in self.entries.values():
            counts[entry.source] = counts.get(entry.source, 0) + 1
        return counts

    def state_dict(self) -> dict[str, Any]:
        """The pool for a checkpoint (``weights_only``-loadable)."""
        return {
            "higher_is_better": dict(self.higher_is_better),
            "entries": {name: e.to_state() for name, e in self.entries.items()},
            "offers": self.offers,
            "replacements": self.replacements,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a pool saved by :meth:`state_dict`.

        Raises:
            ValueError: The saved criteria differ from this pool's (a resumed run must score the same way).
        """
        saved = {k: bool(v) for k, v in state["higher_is_better"].items()}
        if saved != self.higher_is_better:
            raise ValueError(f"saved pool criteria {saved} differ from this run's {self.higher_is_better}")
        self.entries = {name: PoolEntry.from_state(e) for name, e in state["entries"].items()}
        self.offers = int(state["offers"])
        self.replacements = int(state["replacements"])
