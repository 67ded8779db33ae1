"""Export of the inference pipeline to one TorchScript artifact (``dehaze export``: ``commands.export``).

Either family exports the same way: a DCMPNet :class:`model.pipeline.DehazePipeline` or a CORUN
:class:`model.corun_pipeline.CorunPipeline` (which pads to its multiple of 8 and crops back inside the graph); the
artifact's forward is the same, N×3×H×W in [0, 1] -> (dehazed, depth), and only its recorded variant says which.

``torch.jit.trace`` + ``torch.jit.freeze``. The artifact serves every batch size and every image size >= 1 px:
the networks keep batch sizes symbolic (``-1`` reshapes; the authors' ``window_reverse`` froze them) and the
pipeline's padding arithmetic has no branches. Tracing is strict: any ``TracerWarning`` (a value frozen into the
graph) fails the export instead of producing an artifact that is silently wrong at other shapes.

``torch.jit.script`` is not used (the authors' layout has optional submodules), ``torch.compile`` was measured
too slow to compile on a CPU for a dynamic-size server (DCMPNET.md §5.4).

An artifact exported from a weights file carries ``dehaze_model.json`` (variant, SHA-256 of the weights, their
licence (``model.licence``), the precision it computes in) as a TorchScript extra file: the service reports the
served model from it, and ``ensure_artifact`` re-exports when the weights' content or the wanted precision changes
(mtimes alone mislead after a copy, a checkout or a volume mount), or when the record names its weights but not their
licence (exported before licences were recorded).

Precision: ``dtype="bfloat16"`` traces a :class:`model.precision.CastPipeline` (bfloat16 weights, float32 in and
out), the CPU's reduced precision; its forward contract is the float32 one. An artifact that records no ``dtype``
computes in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from model.checkpoint import load_pipeline_from_weights, read_weights, variant_of, write_atomically
from model.layout import channels_last_copy
from model.licence import licence_of
from model.precision import ARTIFACT_DTYPES, TORCH_DTYPES, CastPipeline

__all__ = [
    "INFO_FILE",
    "artifact_dtype",
    "artifact_info",
    "check_export",
    "ensure_artifact",
    "export_pipeline",
    "file_sha256",
    "load_artifact",
    "weights_info",
    "weights_licence",
    "weights_variant",
]

logger = logging.getLogger(__name__)

INFO_FILE = "dehaze_model.json"


@contextlib.contextmanager
def _jit_deprecation_silenced() -> Iterator[None]:
    """TorchScript APIs warn that they are deprecated; we use them knowingly (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit\.")
        yield


def _trace_strict(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(module, example, check_trace=False)
    for w in caught:
        if not issubclass(w.category, (torch.jit.TracerWarning, DeprecationWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    frozen_values = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if frozen_values:
        details = "; ".join(f"{w.filename}:{w.lineno}: {w.message}" for w in frozen_values)
        raise RuntimeError(f"tracing froze input-dependent values into the graph: {details}")
    return traced


def export_pipeline(
    pipeline: nn.Module,
    path: str | Path,
    example_hw: tuple[int, int] = (64, 64),
    info: dict[str, str] | None = None,
    dtype: str = "float32",
) -> Path:
    """Traces, freezes and saves (atomically) the pipeline in eval mode, computing in ``dtype``.

    Args:
        pipeline: A :class:`model.pipeline.DehazePipeline`, a :class:`model.corun_pipeline.CorunPipeline`, or any
            module with the same forward contract.
        path: Destination file.
        example_hw: Size of the example input used for tracing (the artifact works at every size).
        info: What the artifact was made from (``variant``, ``weights_sha256``, ``licence``: :func:`weights_info`),
            stored inside it with ``dtype``.
        dtype: ``float32`` or ``bfloat16`` (the weights are cast; input and outputs stay float32).

    Returns:
        The path written.

    Raises:
        RuntimeError: Tracing emitted a TracerWarning.
        ValueError: An unknown ``dtype``.
    """
    if dtype not in ARTIFACT_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {list(ARTIFACT_DTYPES)}")
    path = Path(path)
    was_training = pipeline.training
    pipeline.eval()
    try:
        example = torch.rand(1, 3, *example_hw, generator=torch.Generator().manual_seed(0))
        param = next(iter(pipeline.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        module = channels_last_copy(pipeline)
        if dtype != "float32":
            module = CastPipeline(module, TORCH_DTYPES[dtype]).eval()
        with torch.inference_mode(False), torch.no_grad(), _jit_deprecation_silenced():
            frozen = torch.jit.freeze(_trace_strict(module, example.to(device)))
    finally:
        pipeline.train(was_training)
    recorded = {**(info or {}), "dtype": dtype}

    def write(tmp: str) -> None:
        with _jit_deprecation_silenced():
            torch.jit.save(frozen, tmp, _extra_files={INFO_FILE: json.dumps(recorded)})

    write_atomically(path, write)
    logger.info("exported TorchScript artifact %s", path)
    return path


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Loads an exported artifact onto ``device``; forward: N×3×H×W in [0, 1] -> (dehazed, depth)."""
    with _jit_deprecation_silenced():
        module = torch.jit.load(str(path), map_location=device)
    return module.eval()


def artifact_info(path: str | Path) -> dict[str, str]:
    """What an artifact was exported from (``variant``, ``weights_sha256``, ``licence``, ``dtype``); empty when it does
    not say (an artifact exported before a key was recorded lacks it).

    Read straight from the archive (a zip holding ``<archive>/extra/dehaze_model.json``) without loading the model:
    no deserialised weights, and no torch work on the calling thread (``model.openmp`` says why that matters).

    Raises:
        ValueError: the file is not a TorchScript archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.split("/")[1:] == ["extra", INFO_FILE]]
            text = archive.read(names[0]).decode("utf-8") if names else "{}"
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a TorchScript archive: {error}") from error
    try:
        info = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in info.items()} if isinstance(info, dict) else {}


def artifact_dtype(path: str | Path) -> str:
    """The precision an artifact computes in (``float32`` when it does not say: exported before it was recorded)."""
    return artifact_info(path).get("dtype", "float32")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_export(
    eager: nn.Module,
    traced: nn.Module,
    sizes: Iterable[tuple[int, int]],
    batch_sizes: Iterable[int],
) -> float:
    """Largest absolute difference between eager and traced outputs over random inputs of the given shapes."""
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    batch_sizes = list(batch_sizes)
    with torch.inference_mode():
        for h, w in sizes:
            for n in batch_sizes:
                x = torch.rand(n, 3, h, w, generator=generator)
                for a, b in zip(eager(x), traced(x), strict=True):
                    if a.shape != b.shape:
                        raise RuntimeError(f"shape mismatch at {(n, 3, h, w)}: {tuple(a.shape)} vs {tuple(b.shape)}")
                    worst = max(worst, float((a - b).abs().max()))
    return worst


def ensure_artifact(weights: str | Path, artifact: str | Path, dtype: str = "float32") -> Path:
    """The ``dtype`` artifact for ``weights``, exported first if it is missing, was made from other weights, does
    not record their licence or computes in another precision.

    An artifact that does not record its weights (exported without ``info``) is kept when it is newer than them and
    of the right precision (it then serves an unknown licence); a file there that is not an artifact at all is
    exported over.

    Raises:
        FileNotFoundError: The weights file does not exist.
    """
    weights, artifact = Path(weights), Path(artifact)
    if not weights.is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    digest = file_sha256(weights)
    if artifact.is_file() and _made_for(artifact, weights, digest, dtype):
        return artifact
    logger.info("exporting %s (%s) from %s", artifact, dtype, weights)
    return export_pipeline(load_pipeline_from_weights(weights), artifact, info=weights_info(weights), dtype=dtype)


def _made_for(artifact: Path, weights: Path, digest: str, dtype: str) -> bool:
    """Whether an existing artifact is the ``dtype`` export of the weights whose SHA-256 is ``digest``."""
    recorded = _readable_info(artifact)
    if recorded is None:
        return False
    made_from = recorded.get("weights_sha256")
    if made_from is None:  # exported without info: only its mtime can tell
        same_weights = artifact.stat().st_mtime >= weights.stat().st_mtime
    else:  # a record without the licence predates it: exported again so that the licence is served
        same_weights = made_from == digest and "licence" in recorded
    return same_weights and recorded.get("dtype", "float32") == dtype


def _readable_info(artifact: Path) -> dict[str, str] | None:
    """``artifact_info``, or None (with a warning) for a file that is not an artifact, which is then exported over."""
    try:
        return artifact_info(artifact)
    except ValueError as error:
        logger.warning("%s; exporting it again", error)
        return None


def weights_variant(weights: str | Path) -> str | None:
    """The variant a weights file holds (``dcmpnet``/``corun`` for the authors' files), None if unknown.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds something other than a dict.
    """
    return variant_of(read_weights(Path(weights), "cpu"))


def weights_licence(weights: str | Path) -> str:
    """SPDX id of a weights file's licence (:func:`model.licence.licence_of`).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds something other than a dict.
    """
    return licence_of(read_weights(Path(weights), "cpu"))


def weights_info(weights: str | Path) -> dict[str, str]:
    """What an artifact exported from a weights file records about it: ``variant`` (``unknown`` when the file does
    not say), ``weights_sha256`` and ``licence``; the file is read once.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds something other than a dict.
    """
    raw = read_weights(Path(weights), "cpu")
    return {"variant": variant_of(raw) or "unknown", "weights_sha256": file_sha256(weights), "licence": licence_of(raw)}
