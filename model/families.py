"""The model families and their variants, behind one inference contract.

Two families serve through the same pipeline contract (RGB in [0, 1] in; dehazed image and depth in [0, 1] out):
DCMPNet (Φ + Ψ; variants in :mod:`model.variants`, pipeline :class:`model.pipeline.DehazePipeline`) and CORUN
(variants in :mod:`model.corun`, pipeline :class:`model.corun_pipeline.CorunPipeline`). Each family keeps its own
registry, because their configurations have nothing in common; this module is the one place that knows both,
for the commands that take any variant name (``dehaze summary``, ``dehaze export --random-init``). Variant names
are unique across the families (a test checks it), so a name alone says the family.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from model.corun import CORUN_VARIANTS
from model.corun_pipeline import CorunPipeline, build_corun_pipeline
from model.pipeline import DehazePipeline, build_pipeline
from model.variants import VARIANTS

__all__ = ["FAMILIES", "Family", "InferencePipeline", "build_inference_pipeline", "family_of", "variant_names"]

Family = Literal["dcmpnet", "corun"]
FAMILIES: tuple[Family, ...] = ("dcmpnet", "corun")
InferencePipeline: TypeAlias = DehazePipeline | CorunPipeline


def variant_names() -> list[str]:
    """Every registered variant, DCMPNet's first, each family in its registry's order."""
    return [*VARIANTS, *CORUN_VARIANTS]


def family_of(variant_name: str) -> Family:
    """The family a variant belongs to.

    Raises:
        ValueError: Unknown name; the message lists every variant of every family.
    """
    if variant_name in VARIANTS:
        return "dcmpnet"
    if variant_name in CORUN_VARIANTS:
        return "corun"
    raise ValueError(f"unknown variant {variant_name!r}; choices: {', '.join(sorted(variant_names()))}")


def build_inference_pipeline(variant_name: str) -> InferencePipeline:
    """A randomly initialised inference pipeline of any registered variant, in eval mode.

    Raises:
        ValueError: Unknown variant.
    """
    if family_of(variant_name) == "corun":
        return build_corun_pipeline(variant_name)
    return build_pipeline(variant_name)
