"""The model runner: one loaded module, one forward per list of same-shape items, failures kept to their item.

The runner accepts any callable with the pipeline's contract (``x`` N×3×H×W float in [0, 1] ->
``(dehazed N×3×H×W, depth N×1×H×W)``): the TorchScript artifact in production, an eager module in tests.
Forwards run under ``torch.inference_mode``; on CUDA in bfloat16/float16 through autocast when configured; on the
CPU in bfloat16 through a bfloat16 copy of the weights (``model.precision``: an artifact exported in bfloat16, or a
:class:`model.precision.CastPipeline` around an eager module).
A CUDA out-of-memory error splits the batch in halves and retries; any other error is narrowed down by the
same bisection, so only the item that really fails gets an error and its batch-mates get their outputs.
The runner holds no per-request state: one instance serves every batch. ``to_tensor`` and ``from_tensor`` are the
bridge between the worker's arrays (N×H×W×C) and the model's tensors (N×C×H×W).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.device import resolve_device
from model.licence import UNKNOWN_LICENCE
from model.precision import TORCH_DTYPES, artifact_dtype_for, resolve_dtype, with_precision
from service.worker.batching import group_by_shape
from service.worker.plan import ImagePlan

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["DEVICES", "Runner", "from_tensor", "infer_image", "is_out_of_memory", "served_artifact", "to_tensor"]

logger = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
ItemOutput = tuple[np.ndarray, np.ndarray] | Exception

DEVICES = ("auto", "cpu", "cuda")
"""The devices a runner accepts (``DEHAZE_DEVICE``); ``model.device.resolve_device`` says which one ``auto`` is."""


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """H×W×C or N×H×W×C float array -> N×C×H×W float32 tensor (a copy, contiguous)."""
    array = images[None] if images.ndim == 3 else images
    if array.ndim != 4:
        raise ValueError(f"expected H×W×C or N×H×W×C, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2), dtype=np.float32))


def from_tensor(tensor: torch.Tensor) -> np.ndarray:
    """N×C×H×W tensor (any device or dtype) -> N×H×W×C float32 array."""
    if tensor.ndim != 4:
        raise ValueError(f"expected N×C×H×W, got shape {tuple(tensor.shape)}")
    return tensor.detach().float().cpu().numpy().transpose(0, 2, 3, 1)


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (typed, or the older RuntimeError message)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


class Runner:
    """Runs a dehazing module on batches of same-shape H×W×3 arrays.

    Args:
        module: any callable with the pipeline's forward contract; moved to ``device`` when it is a module. An
            eager module is wrapped in a bfloat16 copy for a reduced precision on the CPU; a TorchScript module is
            taken to compute in ``dtype`` already (``from_artifact`` checks the artifact's record).
        device: ``auto``, ``cpu`` or ``cuda``.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``, resolved for the device by
            ``model.precision.resolve_dtype`` (``auto``: bfloat16 on a CPU with native bfloat16, else float32).
        info: ``variant``, ``version`` and ``licence`` of the model, copied into every result.
    """

    def __init__(
        self, module: Model, device: str = "auto", dtype: str = "float32", info: dict[str, str] | None = None
    ) -> None:
        self.device = resolve_device(device, DEVICES)
        self.dtype = resolve_dtype(dtype, self.device.type)
        if isinstance(module, torch.nn.Module) and not isinstance(module, torch.jit.ScriptModule):
            module = with_precision(module, self.dtype, self.device.type)
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        self.info = dict(info or {})

    @classmethod
    def from_artifact(cls, path: Path, device: str = "auto", dtype: str | None = None) -> Runner:
        """Load the TorchScript artifact once (``model.export.load_artifact``) onto the resolved device.

        The model's name is the variant recorded in the artifact, its version the first 12 hex digits of the
        SHA-256 of the weights it was exported from (of the artifact itself when it records neither), its licence
        the weights' licence the artifact records (``unknown`` when it records none). ``dtype`` None runs the
        artifact in the precision it records.

        Raises:
            ValueError: the artifact computes in another precision than ``dtype`` resolves to on the device (on
                CUDA a float32 artifact serves every precision, under autocast).
        """
        from model.export import artifact_info, file_sha256, load_artifact

        resolved = resolve_device(device, DEVICES)
        made_from = artifact_info(path)
        recorded = made_from.get("dtype", "float32")
        wanted = recorded if dtype is None else resolve_dtype(dtype, resolved.type)
        if recorded != artifact_dtype_for(wanted, resolved.type) and recorded != wanted:
            raise ValueError(
                f"artifact {path} computes in {recorded}, the settings ask for {wanted} on {resolved.type}: "
                f"export it with `dehaze export --dtype {artifact_dtype_for(wanted, resolved.type)}`"
            )
        module = load_artifact(path, device=str(resolved))
        variant = made_from.get("variant") or Path(path).name.split(".")[0]
        version = (made_from.get("weights_sha256") or file_sha256(path))[:12]
        info = {"variant": variant, "version": version, "licence": made_from.get("licence") or UNKNOWN_LICENCE}
        return cls(module, device=str(resolved), dtype=wanted, info=info)

    # -- forwards -------------------------------------------------------------------------------
    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One forward of N×H×W×3 [0, 1] -> (dehazed N×H×W×3, depth N×H×W×1), as float32 numpy arrays.

        Raises:
            ValueError: when the module's outputs do not have the contract's shapes.
        """
        x = to_tensor(batch).to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(device_type="cuda", dtype=TORCH_DTYPES[self.dtype])
            if self.dtype != "float32" and self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            dehazed, depth = self.module(x)
        n, _, h, w = x.shape
        if tuple(dehazed.shape) != (n, 3, h, w) or tuple(depth.shape) != (n, 1, h, w):
            raise ValueError(
                f"model returned {tuple(dehazed.shape)} and {tuple(depth.shape)} for input {tuple(x.shape)}"
            )
        return from_tensor(dehazed), from_tensor(depth)

    def run_items(self, items: Sequence[np.ndarray]) -> list[ItemOutput]:
        """Outputs for same-shape H×W×3 items, or the exception of each item that failed.

        One forward for all items when it succeeds. On CUDA OOM, or any other error, the items are split in
        halves and retried, so a failure ends up attached to the single item that causes it.
        """
        if not items:
            return []
        try:
            dehazed, depth = self.forward(np.stack(items))
        except Exception as error:
            if is_out_of_memory(error) and self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(items) == 1:
                logger.warning("an item failed in the forward pass: %s: %s", type(error).__name__, error)
                return [error]
            half = len(items) // 2
            logger.info("forward of %d items failed (%s); retrying in halves", len(items), type(error).__name__)
            return self.run_items(items[:half]) + self.run_items(items[half:])
        return [(dehazed[i], depth[i]) for i in range(len(items))]

    def warm_up(self, shapes: Sequence[tuple[int, int]], runs: int = 2) -> None:
        """Run the module a few times at the given shapes (TorchScript specialises and CUDA allocates here)."""
        for height, width in shapes:
            for _ in range(runs):
                self.forward(np.zeros((1, height, width, 3), dtype=np.float32))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def memory_stats(self) -> dict[str, int] | None:
        """CUDA memory figures in bytes (allocated, reserved, max_allocated), or None on CPU."""
        if self.device.type != "cuda":
            return None
        return {
            "allocated": int(torch.cuda.memory_allocated(self.device)),
            "reserved": int(torch.cuda.memory_reserved(self.device)),
            "max_allocated": int(torch.cuda.max_memory_allocated(self.device)),
        }


def served_artifact(settings: Settings) -> tuple[Path, str]:
    """The artifact a worker with these settings loads, and the precision it must be exported in.

    The device and precision are resolved here as the runner resolves them (``auto`` included), so the command that
    exports the artifact and the worker that loads it agree.
    """
    device_type = resolve_device(settings.device, DEVICES).type
    dtype = artifact_dtype_for(settings.dtype, device_type)
    return settings.artifact_path(dtype), dtype


def infer_image(
    model: Runner | Model,
    rgb01: np.ndarray,
    tile_size: int = 512,
    tile_overlap: int = 64,
    bucket_multiple: int = 32,
    max_batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Dehaze one H×W×3 image the way the worker does (same padding, tiling and blending).

    Returns:
        The dehazed image H×W×3 and the depth map H×W, in [0, 1].

    Raises:
        Exception: the error of the first piece that failed.
    """
    runner = model if isinstance(model, Runner) else Runner(model, device="cpu")
    plan = ImagePlan(rgb01, tile_size, tile_overlap, bucket_multiple)
    for group in group_by_shape(plan.pieces, lambda p: p.shape, max_batch_size):
        outputs = runner.run_items([piece.pixels(rgb01) for piece in group])
        for piece, output in zip(group, outputs, strict=True):
            if isinstance(output, Exception):
                raise output
            plan.add(piece, *output)
    return plan.outputs()
