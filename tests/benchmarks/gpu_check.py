"""The one prepared GPU check of issue 15 §3, driven phase by phase by ``tests/benchmarks/gpu_check.sh``.

Each phase is a subcommand that runs in its own process under the shell's ``timeout`` and writes
``WORK/<phase>.json`` after every row it measures, so a phase that is killed at its deadline still leaves the rows
it had; ``report`` then merges whatever is there into ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``:

``prepare``   (on a machine with a package registry, before the device run) downloads the wheels of the project's
              dependencies that the device image lacks (for its Python 3.12) and copies ``redis-server`` with the
              shared libraries it needs into ``.gpu_check/``, the folder the device run carries.
``wheels``    prints the carried wheels whose distribution this Python lacks or has older (what the install step
              installs).
``model``     first what the check runs on (Python, torch, CUDA device, TF32 switches, versions, the install steps:
              ``WORK/install.json``), then ``dcmpnet`` (paper size, random-initialised: no weights are shipped, and
              speed does not depend on them), the default ``dcmpnet_t`` and ``dcmpnet_small`` (their shipped
              weights in ``model/weights/``), each
              exported by the project's own path (``model.export.export_pipeline``: trace + freeze). Per variant
              and size, the authors' protocol as the baseline: the eager pipeline, one image at a time, fp32, under
              ``no_grad``. Then the artifact through the worker's ``Runner`` (autocast for bf16/fp16) at every
              batch, size and precision: images/s, peak CUDA memory, share of peak MACs.
``service``   the service end to end: ``dehaze serve`` (embedded) and ``redis-server`` + ``dehaze api`` + one
              ``dehaze worker`` on the GPU, closed-loop HTTP clients (``tests.benchmarks.services``/``bench_service``).
``report``    targets as pass/fail lines, and the tables.

Definitions:
    images/s: images of one batch / median wall time of one forward (synchronised), inputs and outputs on the
        device (so the model's own throughput; the service row includes uploads, PNG codecs and queueing).
        Each cell: two untimed forwards first (TorchScript's profiling executor specialises on a new shape over
        its first calls), then timed forwards until ``--min-seconds`` (at least one).
    × eager: a cell's images/s over the eager baseline's at the same variant and size.
    GMAC/image: ``model.summary.pipeline_gmac`` (``FlopCounterMode`` on the meta device, MACs = FLOPs / 2).
    share of peak: 2 × MAC/s / the peak FLOP/s of the precision. Spec peaks (dense, i.e. the datasheet's
        with-sparsity figures halved) for the H200 SXM: :data:`SPEC_PEAK_TFLOPS`. fp32 rows are set against the
        TF32 tensor-core peak when cuDNN may use TF32 for convolutions (torch's default), else plain FP32. Other
        devices (and the CPU of a dry run) are set against a dense matmul measured in the run (``share of matmul``,
        given for every row).
    service / model: requests/s at the largest client count over the model's images/s for the same variant,
        image size, precision and batch size (the service pads 620×460 to its bucket, 640×480: 7.7 % more pixels).

``--dry-run`` runs the same code on the CPU: ``dcmpnet_tiny`` (random-initialised), two tiny sizes, batches 1-2,
fp32 only (the worker's autocast is CUDA-only), 2 and 4 clients; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata as metadata
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

__all__ = [
    "DEVICE_PACKAGES",
    "SPEC_PEAK_TFLOPS",
    "Plan",
    "build_report",
    "main",
    "markdown",
    "missing_wheels",
    "plan_for",
]

logger = logging.getLogger("gpu_check")

REPO = Path(__file__).resolve().parents[2]
PREPARED = REPO / ".gpu_check"
"""What ``prepare`` writes and the device run carries: ``wheels/`` and ``redis/`` (ignored by git)."""

SPEC_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column: FP32 67 TFLOPS; TF32, BF16 and FP16 Tensor Core
    # 989, 1,979 and 1,979 TFLOPS "with sparsity", so 494.5, 989.5 and 989.5 dense (the rates a convolution
    # can use). device/H200.md says the same (dense bf16 about 990, fp32 about 67); an 8192³ bf16 matmul measured
    # 769-798 TFLOP/s on this workplace's H200 (device/KINDS.md), and the run measures it again.
    "NVIDIA H200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
}
SPEC_SOURCE = "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM), dense = with-sparsity figures / 2"

DEVICE_PACKAGES = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
    charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
    cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
    joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
    markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
    mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
    nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
    opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn
    scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
    statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
    tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
    treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
    xarray xxhash yarl zipp""".split()  # noqa: SIM905 (the list as KINDS.md writes it)
)
"""Python packages of the device image ('cuda'), as device/KINDS.md lists them (read 2026-11-17): not carried."""

REFRESHED = frozenset(("annotated-doc", "anyio", "click", "h11", "idna", "prometheus-client", "typing-extensions"))
"""Pure-Python dependencies of the web stack that the image has too: carried anyway, and installed there when its own
version is older than ours (pydantic, FastAPI and uvicorn set minimum versions of them)."""

DEVICE_PYTHON = "3.12"
WHEEL_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
GLIBC_LIBS = ("linux-vdso", "libc.so", "libm.so", "ld-linux", "libpthread.so", "libdl.so", "librt.so")
"""Libraries of the C library itself: the device's own (newer) ones are used, never carried."""

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
PHASES = ("install", "cuda_tests", "model", "service")


# -- the plan ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What one run measures: the real check on the GPU, or its dry run on the CPU.

    Attributes:
        dry_run: CPU, tiny model, tiny sizes.
        device: ``cuda`` or ``cpu``.
        variants: (variant, weights) pairs; weights None = random-initialised.
        sizes: (height, width) of the model cells.
        batches: batch sizes of the model cells.
        dtypes: precisions of the model cells.
        baseline_images: images of one eager one-at-a-time pass.
        min_seconds: timed forwards of a cell run until this much time has passed (at least one).
        first_variant_share: share of the model phase's time the first (largest) variant may use.
        service_variant: the variant the service serves.
        upload_hw: (height, width) of the uploaded image.
        clients: closed-loop client counts.
        service_batch: ``DEHAZE_MAX_BATCH_SIZE``.
        service_dtype: ``DEHAZE_DTYPE`` (the model rows of this precision are the service's reference).
        service_threads: torch CPU threads of each model process.
        cell_seconds: aimed duration of one timed load run.
        startup_timeout_s: seconds a deployment may take to be ready.
    """

    dry_run: bool
    device: str
    variants: tuple[tuple[str, Path | None], ...]
    sizes: tuple[tuple[int, int], ...]
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    baseline_images: int
    min_seconds: float
    first_variant_share: float
    service_variant: str
    upload_hw: tuple[int, int]
    clients: tuple[int, ...]
    service_batch: int
    service_dtype: str
    service_threads: int
    cell_seconds: float
    startup_timeout_s: float


def plan_for(dry_run: bool) -> Plan:
    """The issue's plan (``dry_run`` False) or the dry run's."""
    if dry_run:
        return Plan(
            dry_run=True,
            device="cpu",
            variants=(("dcmpnet_tiny", None),),
            sizes=((48, 64), (32, 40)),
            batches=(1, 2),
            dtypes=("fp32",),
            baseline_images=2,
            min_seconds=0.0,
            first_variant_share=1.0,
            service_variant="dcmpnet_tiny",
            upload_hw=(48, 64),
            clients=(2, 4),
            service_batch=2,
            service_dtype="fp32",
            service_threads=1,
            cell_seconds=0.0,
            startup_timeout_s=120.0,
        )
    return Plan(
        dry_run=False,
        device="cuda",
        variants=(
            ("dcmpnet", None),
            ("dcmpnet_t", REPO / "model" / "weights" / "dcmpnet_t.pt"),
            ("dcmpnet_small", REPO / "model" / "weights" / "dcmpnet_small.pt"),
        ),
        sizes=((1080, 1920), (460, 620)),
        batches=(1, 4, 8, 16),
        dtypes=("bf16", "fp32", "fp16"),  # bf16 first: the paper-size target is on it, should time run short
        baseline_images=4,
        min_seconds=0.5,
        first_variant_share=0.6,
        service_variant="dcmpnet_t",  # the default
        upload_hw=(460, 620),
        clients=(8, 64),
        service_batch=8,
        service_dtype="fp32",
        service_threads=4,
        cell_seconds=10.0,
        startup_timeout_s=150.0,
    )


def size_label(hw: Sequence[int]) -> str:
    """``(1080, 1920)`` -> ``1920x1080`` (width first, as image sizes are written)."""
    return f"{hw[1]}x{hw[0]}"


# -- phase files -----------------------------------------------------------------------------------------------------
class PhaseFile:
    """``WORK/<phase>.json``, rewritten (atomically) after every row so a killed phase keeps what it measured."""

    def __init__(self, work: Path, phase: str) -> None:
        self.path = work / f"{phase}.json"
        self.started = time.time()
        self.data: dict[str, Any] = {"phase": phase, "status": "running", "rows": [], "error": None}

    def add(self, key: str, row: dict[str, Any]) -> None:
        """Append ``row`` to the list ``key`` and save."""
        self.data.setdefault(key, []).append(row)
        self.save()

    def save(self) -> None:
        """Write the file (tmp + rename)."""
        self.data["seconds"] = time.time() - self.started
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the final status (``ok``, ``partial`` when rows were skipped, ``error``) and save."""
        self.data["status"] = status
        self.data["error"] = error
        self.save()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value


class Deadline:
    """Seconds left until an absolute ``time.time()`` deadline."""

    def __init__(self, at: float) -> None:
        self.at = at

    def left(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - time.time()

    def split(self, share: float) -> Deadline:
        """A deadline ``share`` of the way from now to this one."""
        return Deadline(time.time() + max(0.0, self.left()) * share)


def _error_text(error: BaseException, limit: int = 1500) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


# -- prepare (on a machine with a registry) ------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_closure() -> dict[str, str]:
    """Canonical name -> version installed here, for the project's runtime requirements and theirs, recursively.

    The project's list is read from ``pyproject.toml`` (plus ``pytest-timeout``, which the test settings use);
    markers are evaluated for the device's Python on Linux, extras are not followed.
    """
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    environment = {"python_version": DEVICE_PYTHON, "python_full_version": f"{DEVICE_PYTHON}.3", "extra": ""}
    pending = [*project["dependencies"], "pytest-timeout"]
    found: dict[str, str] = {}
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = _canonical(requirement.name)
        if name in found:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            logger.warning("%s is not installed here; not carried", requirement.name)
            continue
        found[name] = distribution.version
        pending.extend(distribution.requires or [])
    return found


def prepare(dest: Path) -> int:
    """Download the wheels the device lacks and copy ``redis-server`` with its libraries into ``dest``.

    Returns:
        0, or 1 when a wheel or redis-server could not be had (the rest is still prepared).
    """
    status = 0
    wheels = dest / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    closure = _runtime_closure()
    carried = {n: v for n, v in sorted(closure.items()) if n not in DEVICE_PACKAGES or n in REFRESHED}
    logger.info("%d distributions needed, %d carried (missing on the device, or refreshed)", len(closure), len(carried))
    for name, version in carried.items():
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(wheels)]
        for tag in WHEEL_PLATFORMS:
            command += ["--platform", tag]
        result = subprocess.run([*command, f"{name}=={version}"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            logger.error("no wheel of %s==%s for Python %s: %s", name, version, DEVICE_PYTHON, result.stderr[-500:])
            status = 1
        else:
            logger.info("wheel: %s==%s", name, version)
    status |= _prepare_redis(dest / "redis")
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    logger.info("prepared %s: %.1f MiB (carry it: the device run's working tree may hold 64 MiB)", dest, total / 2**20)
    return status


def _prepare_redis(folder: Path) -> int:
    """``redis-server`` and the shared libraries it loads, except the C library's own."""
    binary = shutil.which("redis-server")
    if binary is None:
        logger.error("redis-server is not installed here (apt-get install redis-server); the Redis rows will fail")
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(Path(binary).resolve(), folder / "redis-server")
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        match = re.search(r"=>\s*(\S+)", line)
        if match and not any(lib in line for lib in GLIBC_LIBS):
            shutil.copy2(Path(match.group(1)).resolve(), folder / Path(match.group(1)).name)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    logger.info("redis-server: %s with %d libraries", version, len(list(folder.iterdir())) - 1)
    return 0


def missing_wheels(folder: Path) -> list[Path]:
    """The wheels in ``folder`` whose distribution this Python lacks, or has at an older version."""
    try:
        from packaging.version import Version
    except ImportError:  # no packaging: only missing distributions count
        Version = None  # type: ignore[assignment,misc]
    missing = []
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(wheel)
            continue
        with contextlib.suppress(ValueError):  # packaging's InvalidVersion is a ValueError
            if Version is not None and Version(installed) < Version(version):
                missing.append(wheel)
    return missing


# -- env ---------------------------------------------------------------------------------------------------------------
VERSIONS_OF = ("torch", "numpy", "fastapi", "starlette", "uvicorn", "pydantic", "redis", "httpx", "pytest")


def read_steps(work: Path) -> dict[str, str]:
    """The shell's install record, ``WORK/install_steps.txt`` (``KEY=VALUE`` lines)."""
    path = work / "install_steps.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return dict(line.split("=", 1) for line in lines if "=" in line)


def run_env(work: Path, plan: Plan) -> int:
    """Record the machine, the versions and the shell's install steps."""
    phase = PhaseFile(work, "install")
    install = read_steps(work)
    phase.data["steps"] = install
    try:
        import torch

        versions: dict[str, str | None] = {}
        for name in VERSIONS_OF:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
        cuda = torch.cuda.is_available()
        device: dict[str, Any] = {"cuda_available": cuda}
        if cuda:
            props = torch.cuda.get_device_properties(0)
            device |= {
                "name": props.name,
                "multiprocessors": props.multi_processor_count,
                "memory_gib": props.total_memory / 2**30,
                "capability": f"{props.major}.{props.minor}",
                "cuda_version": torch.version.cuda,
                "cudnn_version": torch.backends.cudnn.version(),
            }
        phase.data["machine"] = {
            "python": platform.python_version(),
            "executable": sys.executable,
            "platform": platform.platform(),
            "cpu_cores": os.cpu_count(),
            "versions": versions,
            "device": device,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "nvidia_smi": _nvidia_smi(),
            "redis_server": shutil.which("redis-server"),
        }
        try:  # the project and what its servers import
            import service.main  # noqa: F401

            install["import"] = "ok"
        except Exception as error:
            install["import"] = f"failed: {_error_text(error, 400)}"
        ok = install["import"] == "ok" and (cuda or plan.dry_run)
        phase.finish("ok" if ok else "error", None if ok else "CUDA is not available or the project did not import")
        return 0 if ok else 1
    except Exception as error:
        phase.finish("error", _error_text(error))
        logger.exception("env phase failed")
        return 1


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit"
    result = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True)
    return result.stdout.strip() or result.stderr.strip()


# -- model -------------------------------------------------------------------------------------------------------------
def run_model(work: Path, plan: Plan, deadline: Deadline) -> int:
    """Eager baseline and traced cells of every variant (see the module docstring); rows saved as they come."""
    phase = PhaseFile(work, "model")
    try:
        from tests.benchmarks import common

        device = common.setup_torch(plan.service_threads, plan.device)
        phase.data["peaks"] = _peaks(device, plan)
        phase.save()
        skipped = False
        for index, (variant, weights) in enumerate(plan.variants):
            last = index == len(plan.variants) - 1
            share = 1.0 if last else plan.first_variant_share
            skipped |= _model_variant(phase, plan, device, variant, weights, deadline.split(share))
        phase.finish("partial" if skipped else "ok")
        return 0
    except Exception as error:
        logger.exception("model phase failed")
        phase.finish("error", _error_text(error))
        return 1


def _peaks(device: Any, plan: Plan) -> dict[str, Any]:
    """Spec peak TFLOP/s per precision (None when the device is not in the table) and a measured dense matmul."""
    import torch

    from tests.benchmarks import common

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    spec = SPEC_PEAK_TFLOPS.get(name or "")
    tf32 = device.type == "cuda" and bool(torch.backends.cudnn.allow_tf32)
    measured = {}
    n = 8192 if device.type == "cuda" else 256
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for dtype in plan.dtypes:
        a = torch.rand(n, n, device=device, dtype=dtypes[dtype])
        b = torch.rand(n, n, device=device, dtype=dtypes[dtype])
        torch.mm(a, b)
        seconds = [common.timed(partial(torch.mm, a, b), device)[1] for _ in range(5)]
        measured[dtype] = 2 * n**3 / min(seconds) / 1e12
    basis = {d: ("tf32" if d == "fp32" and tf32 else d) for d in plan.dtypes}
    return {
        "device": name or "cpu",
        "spec_tflops": spec,
        "spec_source": SPEC_SOURCE if spec else None,
        "basis": basis,
        "matmul_measured_tflops": measured,
        "matmul_size": n,
        "matmul_note": "best of 5 dense n×n×n products of torch.rand at the precision; fp32 as torch's default "
        "(TF32 matmul off)",
    }


def _share(rate_gmac_s: float, dtype: str, peaks: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(share of the peak, share of the measured matmul, the peak used) for a MAC rate.

    The peak is the spec figure of the precision's basis when the device has one, else the measured matmul.
    """
    flops = 2 * rate_gmac_s * 1e9
    spec = peaks.get("spec_tflops")
    measured = peaks["matmul_measured_tflops"].get(dtype)
    peak = spec[peaks["basis"][dtype]] if spec else measured
    return (flops / (peak * 1e12) if peak else None, flops / (measured * 1e12) if measured else None, peak)


def _memory_mib(device: Any) -> tuple[float | None, float | None]:
    """(max allocated, allocated now) in MiB on CUDA; (None, None) on the CPU."""
    import torch

    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.memory_allocated(device) / 2**20


def _reset_memory(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _time_forwards(run: Callable[[], object], device: Any, min_seconds: float, warmup: int = 2) -> list[float]:
    """``warmup`` untimed calls, then timed calls until ``min_seconds`` have passed (at least one, at most 50)."""
    from tests.benchmarks import common

    for _ in range(warmup):
        run()
    common.sync(device)
    times: list[float] = []
    while not times or (sum(times) < min_seconds and len(times) < 50):
        times.append(common.timed(run, device)[1])
    return times


def _model_variant(
    phase: PhaseFile, plan: Plan, device: Any, variant: str, weights: Path | None, deadline: Deadline
) -> bool:
    """The baseline rows and the traced cells of one variant; True when cells were skipped for time."""
    import torch

    from model.pipeline import build_pipeline
    from model.summary import pipeline_gmac
    from service.worker.runner import Runner, is_out_of_memory
    from tests.benchmarks import common

    torch.manual_seed(0)
    if weights is None:  # no trained weights: random-initialised (speed does not depend on the values)
        pipeline, source = build_pipeline(variant), {"variant": variant, "weights": "random-init"}
    else:
        pipeline, source = common.load_pipeline(weights, variant)
    pipeline = pipeline.eval()
    gmac = {hw: pipeline_gmac(pipeline, hw) for hw in plan.sizes}
    artifact = common.export_traced(pipeline.cpu(), phase.path.parent, variant)  # model.export.export_pipeline
    logger.info("%s: exported %s (%s)", variant, artifact.name, source["weights"])
    peaks = phase.data["peaks"]
    eager_ips: dict[tuple[int, int], float] = {}
    per_image_s: dict[tuple[int, int], float] = {}

    # the authors' protocol: eager, one image at a time, fp32, no_grad
    pipeline = pipeline.to(device)
    for hw in plan.sizes:
        row: dict[str, Any] = {"variant": variant, "weights": source["weights"], "size": size_label(hw)}
        row |= {"mode": "eager one at a time", "dtype": "fp32", "batch": 1, "images": plan.baseline_images}
        try:
            _reset_memory(device)
            images = [torch.rand(1, 3, *hw, device=device) for _ in range(plan.baseline_images)]

            def eager(images: list[torch.Tensor] = images) -> None:
                with torch.no_grad():
                    for x in images:
                        pipeline(x)

            times = _time_forwards(eager, device, plan.min_seconds, warmup=1)
            ips = plan.baseline_images / statistics.median(times)
            eager_ips[hw], per_image_s[hw] = ips, 1.0 / ips
            row |= _rates(ips, gmac[hw], "fp32", peaks) | {"status": "ok", "reps": len(times)}
            row["peak_mib"] = _memory_mib(device)[0]
            del images
        except Exception as error:
            row |= {"status": "oom" if is_out_of_memory(error) else "error", "error": _error_text(error)}
            logger.warning("%s eager %s: %s", variant, size_label(hw), row["error"])
        phase.add("baseline", row)
        logger.info("%s eager %s: %s img/s", variant, size_label(hw), _fmt(row.get("images_per_s")))
    pipeline.cpu()  # frees its CUDA memory: the traced cells' peaks hold one artifact only
    _reset_memory(device)

    skipped = False
    for dtype in plan.dtypes:
        runner = Runner.from_artifact(artifact, device=device.type, dtype=DTYPE_NAMES[dtype])
        phase.add("checks", _runner_check(runner, artifact, device, variant, dtype))
        for hw in plan.sizes:
            for batch in plan.batches:
                row = {"variant": variant, "weights": source["weights"], "size": size_label(hw), "mode": "traced"}
                row |= {"dtype": dtype, "batch": batch}
                estimate = 3 * batch * per_image_s.get(hw, 0.0)
                if deadline.left() < max(1.0, estimate):
                    row["status"] = "skipped: time budget"
                    skipped = True
                    phase.add("rows", row)
                    continue
                row |= _traced_cell(runner, device, hw, batch, plan, gmac[hw], dtype, peaks)
                if row.get("images_per_s"):
                    per_image_s[hw] = max(per_image_s.get(hw, 0.0), 1.0 / row["images_per_s"])
                    if hw in eager_ips:
                        row["x_eager"] = row["images_per_s"] / eager_ips[hw]
                phase.add("rows", row)
                logger.info(
                    "%s %s %s b%d: %s img/s, peak %s MiB",
                    variant,
                    size_label(hw),
                    dtype,
                    batch,
                    _fmt(row.get("images_per_s")),
                    _fmt(row.get("peak_mib"), ".0f"),
                )
        del runner
        _reset_memory(device)
    return skipped


def _rates(ips: float, gmac: float, dtype: str, peaks: dict[str, Any]) -> dict[str, Any]:
    share, measured_share, peak = _share(ips * gmac, dtype, peaks)
    return {
        "images_per_s": ips,
        "gmac_per_image": gmac,
        "achieved_tflops": 2 * ips * gmac / 1000.0,
        "peak_tflops": peak,
        "peak_share": share,
        "matmul_share": measured_share,
    }


def _traced_cell(
    runner: Any,
    device: Any,
    hw: tuple[int, int],
    batch: int,
    plan: Plan,
    gmac: float,
    dtype: str,
    peaks: dict[str, Any],
) -> dict[str, Any]:
    """One batch size at one size through the runner's module, as ``Runner.forward`` calls it (device tensors)."""
    import torch

    from service.worker.runner import is_out_of_memory

    try:
        _reset_memory(device)
        resident = _memory_mib(device)[1]
        x = torch.rand(batch, 3, *hw, device=device)
        autocast = (
            torch.autocast(device_type="cuda", dtype=getattr(torch, DTYPE_NAMES[dtype]))
            if runner.dtype != "float32"
            else contextlib.nullcontext()
        )

        def forward() -> object:
            with torch.inference_mode(), autocast:
                return runner.module(x)

        times = _time_forwards(forward, device, plan.min_seconds)
        ips = batch / statistics.median(times)
        peak = _memory_mib(device)[0]
        out = {"status": "ok", "reps": len(times), "ms_per_batch": 1000.0 * statistics.median(times)}
        return out | _rates(ips, gmac, dtype, peaks) | {"peak_mib": peak, "resident_mib": resident}
    except Exception as error:
        oom = is_out_of_memory(error)
        _reset_memory(device)
        return {"status": "oom" if oom else "error", "error": _error_text(error)}


def _runner_check(runner: Any, artifact: Path, device: Any, variant: str, dtype: str) -> dict[str, Any]:
    """The worker's own path once (``Runner.run_items``: host arrays, shape checks, autocast) against fp32.

    ``max_abs_diff_vs_fp32`` > 0 shows that autocast reached the TorchScript graph; 0 would mean it ran fp32.
    """
    import numpy as np

    from service.worker.runner import Runner

    check: dict[str, Any] = {"variant": variant, "dtype": dtype}
    try:
        image = np.random.default_rng(0).random((64, 96, 3), dtype=np.float32)
        outputs = runner.run_items([image, image])
        errors = [o for o in outputs if isinstance(o, Exception)]
        if errors:
            raise errors[0]
        reference = (
            Runner.from_artifact(artifact, device=device.type, dtype="float32").run_items([image])[0]
            if runner.dtype != "float32"
            else outputs[0]
        )
        if isinstance(reference, Exception):
            raise reference
        dehazed = outputs[0][0]
        check |= {
            "status": "ok",
            "finite": bool(np.isfinite(dehazed).all() and np.isfinite(outputs[0][1]).all()),
            "max_abs_diff_vs_fp32": float(np.abs(dehazed - reference[0]).max()),
        }
    except Exception as error:
        check |= {"status": "error", "error": _error_text(error)}
    return check


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


# -- service -------------------------------------------------------------------------------------------------------
def run_service(work: Path, plan: Plan, deadline: Deadline) -> int:
    """Embedded and Redis deployments at each client count; rows saved as they come."""
    phase = PhaseFile(work, "service")
    try:
        weights = _service_weights(work, plan)
        from model.export import ensure_artifact

        artifact = ensure_artifact(weights, work / f"{plan.service_variant}.service.ts.pt")  # the service's export
        payload = _upload_png(plan.upload_hw)
        phase.data["config"] = {
            "variant": plan.service_variant,
            "weights": str(weights),
            "upload": f"{size_label(plan.upload_hw)} PNG, {len(payload)} bytes",
            "dtype": plan.service_dtype,
            "max_batch_size": plan.service_batch,
            "torch_threads": plan.service_threads,
            "clients": list(plan.clients),
        }
        phase.save()
        backends = ("embedded", "redis1")
        skipped = False
        for index, backend in enumerate(backends):
            share = 1.0 / (len(backends) - index)
            skipped |= _service_backend(phase, plan, backend, weights, artifact, payload, deadline.split(share))
        phase.finish("partial" if skipped else "ok")
        return 0
    except Exception as error:
        logger.exception("service phase failed")
        phase.finish("error", _error_text(error))
        return 1


def _service_weights(work: Path, plan: Plan) -> Path:
    """The served checkpoint: the plan's, or a random-initialised one written here (dry run)."""
    weights = dict(plan.variants).get(plan.service_variant)
    if weights is not None:
        return weights
    from model.checkpoint import save_checkpoint
    from model.pipeline import build_pipeline

    path = work / f"{plan.service_variant}.pt"
    import torch

    torch.manual_seed(0)
    pipeline = build_pipeline(plan.service_variant).eval()
    save_checkpoint(path, pipeline.phi, pipeline.psi, plan.service_variant, {"version": "gpu_check random-init"})
    return path


def _upload_png(hw: tuple[int, int]) -> bytes:
    """A textured RGB PNG of ``hw`` (content does not change the cost)."""
    import io

    import numpy as np
    from PIL import Image

    height, width = hw
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([(xs * 7) % 256, (ys * 5) % 256, (xs + ys) % 256], axis=-1) * 0.6
    noise = np.random.default_rng(0).integers(0, 90, base.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _service_env(plan: Plan, weights: Path, artifact: Path) -> dict[str, str]:
    return {
        "DEHAZE_WEIGHTS": str(weights),
        "DEHAZE_ARTIFACT": str(artifact),
        "DEHAZE_DEVICE": plan.device,
        "DEHAZE_DTYPE": DTYPE_NAMES[plan.service_dtype],
        "DEHAZE_HOST": "127.0.0.1",
        "DEHAZE_MAX_BATCH_SIZE": str(plan.service_batch),
        "DEHAZE_MAX_QUEUE_LENGTH": str(max(64, 2 * max(plan.clients))),
        "DEHAZE_DENSITY_WORKERS": "1",
        "DEHAZE_REQUEST_TIMEOUT_S": "600",
        **({"DEHAZE_TILE_SIZE": "64", "DEHAZE_TILE_OVERLAP": "8"} if plan.dry_run else {}),  # small warm-up shapes
    }


def _service_backend(
    phase: PhaseFile,
    plan: Plan,
    backend: str,
    weights: Path,
    artifact: Path,
    payload: bytes,
    deadline: Deadline,
) -> bool:
    """One deployment at every client count; True when rows were skipped for time."""
    from tests.benchmarks.bench_service import load_row
    from tests.benchmarks.services import metric_sums, run_load, running_service
    from tests.processes import REDIS_SERVER

    base = {"backend": backend, "workers": 0 if backend == "embedded" else 1}
    if backend != "embedded" and not Path(REDIS_SERVER).exists():
        for clients in plan.clients:
            phase.add("rows", base | {"clients": clients, "status": "error", "error": "redis-server not found"})
        return False
    if deadline.left() < 15:
        for clients in plan.clients:
            phase.add("rows", base | {"clients": clients, "status": "skipped: time budget"})
        return True
    filename = "upload.png"
    started = time.time()
    skipped = False
    try:
        env = _service_env(plan, weights, artifact)
        with running_service(backend, env, plan.service_threads, plan.startup_timeout_s) as service:
            startup = time.time() - started
            url = f"{service.url}/dehaze"
            for index, clients in enumerate(plan.clients):
                row: dict[str, Any] = base | {"clients": clients, "startup_s": startup}
                left = deadline.left() - 3.0
                if left < 2.0:
                    phase.add("rows", row | {"status": "skipped: time budget"})
                    skipped = True
                    continue
                cell = min(plan.cell_seconds, left / (len(plan.clients) - index) / 1.5)
                estimate = run_load(url, payload, clients, 2 * clients, filename)  # warm-up and rate estimate
                total = max(2 * clients, min(20_000, int(estimate.throughput * cell)))
                row |= load_row(service, payload, filename, clients, total) | {"status": "ok"}
                memory = metric_sums(service.metrics_urls).get("dehaze_gpu_memory_bytes_max_allocated")
                row["gpu_max_allocated_mib"] = memory / 2**20 if memory else None
                if row["errors"]:
                    row["status"] = "errors"
                phase.add("rows", row)
                logger.info("%s c=%d: %.2f req/s (%d ok)", backend, clients, row["throughput_rps"], row["ok"])
    except Exception as error:
        logger.warning("%s failed: %s", backend, _error_text(error, 400))
        done = {r["clients"] for r in phase.data["rows"] if r["backend"] == backend}
        for clients in plan.clients:
            if clients not in done:
                phase.add("rows", base | {"clients": clients, "status": "error", "error": _error_text(error)})
    return skipped


# -- report --------------------------------------------------------------------------------------------------------
def _load(work: Path, phase: str) -> dict[str, Any]:
    path = work / f"{phase}.json"
    if not path.is_file():
        return {"phase": phase, "status": "not run", "rows": [], "error": "no result (not reached, or killed early)"}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if data.get("status") == "running":
        data["status"] = "killed"
        data["error"] = data.get("error") or "killed at its time limit; rows measured until then are kept"
    return data


def _cuda_tests(work: Path) -> dict[str, Any]:
    """``pytest -m gpu``: the shell's record (command, exit code, seconds) and the JUnit XML's counts."""
    record_path = work / "cuda_tests.json"
    if not record_path.is_file():
        return {"phase": "cuda_tests", "status": "not run", "rows": [], "error": "not reached"}
    record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
    rows = []
    xml = work / "pytest_gpu.xml"
    if xml.is_file():
        with contextlib.suppress(ElementTree.ParseError):
            for case in ElementTree.parse(xml).getroot().iter("testcase"):
                outcome = "passed"
                message = ""
                for tag in ("failure", "error", "skipped"):
                    found = case.find(tag)
                    if found is not None:
                        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                        message = (found.get("message") or "")[:300]
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                rows.append(
                    {"test": name, "outcome": outcome, "seconds": float(case.get("time") or 0), "message": message}
                )
    counts = {k: sum(1 for r in rows if r["outcome"] == k) for k in ("passed", "failed", "error", "skipped")}
    rc = int(record.get("exit_code", -1))
    status = {0: "ok", 124: "killed", 137: "killed", 125: "skipped: time budget"}.get(rc, "failed")
    if rc == 0 and counts["passed"] == 0:
        status = "ok (all skipped)" if counts["skipped"] else "ok (none collected)"
    return record | {"phase": "cuda_tests", "status": status, "rows": rows, "counts": counts}


def _target(name: str, value: float | None, op: str, limit: float, basis: str) -> dict[str, Any]:
    met = None if value is None else (value >= limit if op == ">=" else value <= limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "met": met, "basis": basis}


def _best(rows: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The row of most images/s among the measured rows matching every ``key=value``."""
    found = [r for r in rows if r.get("images_per_s") and all(r.get(k) == v for k, v in match.items())]
    return max(found, key=lambda r: r["images_per_s"]) if found else None


def targets(plan: Plan, model: dict[str, Any], service: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's GPU targets, from the rows measured (value None = not measured)."""
    out = []
    large = size_label(max(plan.sizes, key=lambda hw: hw[0] * hw[1]))
    rows, baseline = model.get("rows", []), model.get("baseline", [])
    service_batch = plan.service_batch
    for variant, _ in plan.variants:
        eager = _best(baseline, variant=variant, size=large)
        traced = _best(rows, variant=variant, size=large, dtype="fp32", batch=service_batch)
        value = traced["images_per_s"] / eager["images_per_s"] if traced and eager else None
        out.append(
            _target(
                f"{variant} {large}: traced + batched (fp32, batch {service_batch}) / eager one at a time",
                value,
                ">=",
                3.0,
                "images/s, same precision as the baseline; batch = the service's max_batch_size on CUDA",
            )
        )
    paper = plan.variants[0][0]
    best_bf16 = _best([r for r in rows if r.get("peak_share") is not None], variant=paper, size=large, dtype="bf16")
    if not plan.dry_run or best_bf16:
        out.append(
            _target(
                f"{paper} {large}: share of the bf16 peak (best batch: {best_bf16['batch'] if best_bf16 else '-'})",
                best_bf16["peak_share"] if best_bf16 else None,
                ">=",
                0.40,
                "2 × MAC/s / spec bf16 peak",
            )
        )
    else:  # the CPU has no bf16 rows: the same arithmetic on the fp32 rows, against the measured matmul
        best = _best(rows, variant=paper, size=large)
        out.append(
            _target(
                f"{paper} {large}: share of peak (dry run: fp32 against the measured matmul)",
                best.get("peak_share") if best else None,
                ">=",
                0.40,
                "2 × MAC/s / measured dense matmul",
            )
        )
    upload = size_label(plan.upload_hw)
    reference = _best(rows, variant=plan.service_variant, size=upload, dtype=plan.service_dtype, batch=service_batch)
    top = max(plan.clients)
    for backend in ("embedded", "redis1"):
        row = next(
            (r for r in service.get("rows", []) if r.get("backend") == backend and r.get("clients") == top), None
        )
        rps = row.get("throughput_rps") if row and row.get("status") == "ok" else None
        value = rps / reference["images_per_s"] if rps and reference else None
        out.append(
            _target(
                f"service {backend} at {top} clients / model ({plan.service_variant} {upload} {plan.service_dtype} "
                f"batch {service_batch})",
                value,
                ">=",
                0.90,
                "req/s over the model row's images/s",
            )
        )
    return out


def build_report(work: Path, plan: Plan, started: float, budget_s: float) -> dict[str, Any]:
    """The JSON document: every phase's record (a missing phase says so), the targets and the notes."""
    install = _load(work, "install")
    model = _load(work, "model")
    service = _load(work, "service")
    cuda_tests = _cuda_tests(work)
    notes = [
        "images/s of the model rows: device tensors in and out, median of timed forwards after two untimed ones",
        "the eager baseline is the authors' protocol (eager pipeline, one image at a time, fp32, no_grad) on device "
        "tensors; cuDNN may use TF32 for fp32 convolutions in both (torch's default), matmuls stay fp32",
        "dcmpnet (paper size) is random-initialised (no weights are shipped): its speed is valid, its outputs are not",
        "service rows: closed-loop httpx clients in one process on the same machine (tests.benchmarks.services); the "
        "service pads a 620x460 upload to 640x480 (bucket_multiple 32), 7.7% more pixels than the model row",
    ]
    if plan.dry_run:
        notes.insert(0, "DRY RUN on the CPU with dcmpnet_tiny at tiny sizes: the figures mean nothing")
    return {
        "benchmark": "gpu_check",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "machine": install.get("machine", {}),
        "config": {
            "dry_run": plan.dry_run,
            "budget_s": budget_s,
            "wall_s": time.time() - started,
            "variants": [[v, str(w) if w else "random-init"] for v, w in plan.variants],
            "sizes": [size_label(hw) for hw in plan.sizes],
            "batches": list(plan.batches),
            "dtypes": list(plan.dtypes),
            "clients": list(plan.clients),
            "peaks": model.get("peaks"),
            "service": service.get("config"),
        },
        "results": {"install": install, "cuda_tests": cuda_tests, "model": model, "service": service},
        "targets": targets(plan, model, service),
        "notes": notes,
    }


def _cells(row: dict[str, Any], columns: Sequence[tuple[str, str, str]]) -> str:
    values = []
    for key, _, spec in columns:
        value = row.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            values.append("-")
        elif spec == "%":
            values.append(f"{100 * value:.1f}%")
        else:
            values.append(format(value, spec) if spec else str(value).replace("|", "/"))
    return "| " + " | ".join(values) + " |"


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    return [head, rule, *(_cells(r, columns) for r in rows)]


MODEL_COLUMNS = (
    ("variant", "variant", ""),
    ("size", "size", ""),
    ("mode", "mode", ""),
    ("dtype", "dtype", ""),
    ("batch", "batch", ""),
    ("status", "status", ""),
    ("images_per_s", "img/s", ".2f"),
    ("x_eager", "× eager", ".2f"),
    ("peak_mib", "peak MiB", ".0f"),
    ("gmac_per_image", "GMAC/img", ".4g"),
    ("achieved_tflops", "TFLOP/s", ".3g"),
    ("peak_share", "share of peak", "%"),
    ("matmul_share", "share of matmul", "%"),
)
SERVICE_COLUMNS = (
    ("backend", "backend", ""),
    ("clients", "clients", ""),
    ("status", "status", ""),
    ("requests", "requests", ""),
    ("ok", "ok", ""),
    ("throughput_rps", "req/s", ".2f"),
    ("p50_ms", "p50 ms", ".0f"),
    ("p99_ms", "p99 ms", ".0f"),
    ("mean_forward_batch", "mean fwd batch", ".2f"),
    ("gpu_max_allocated_mib", "GPU max MiB", ".0f"),
    ("startup_s", "startup s", ".0f"),
)


def markdown(document: dict[str, Any]) -> str:
    """The Markdown report: targets (PASS/FAIL), phases, CUDA tests, model, service, notes."""
    config, results = document["config"], document["results"]
    machine = document.get("machine") or {}
    device = (machine.get("device") or {}).get("name") or ("CPU (dry run)" if config["dry_run"] else "unknown")
    lines = [f"# GPU check: {device}", ""]
    lines.append(
        f"{document['created']}, {'DRY RUN, ' if config['dry_run'] else ''}{config['wall_s']:.0f} s of a "
        f"{config['budget_s']:.0f} s budget; torch {(machine.get('versions') or {}).get('torch', '?')}, "
        f"Python {machine.get('python', '?')}."
    )
    lines += ["", "## Targets", "", "| result | target | value | limit |", "|---|---|---|---|"]
    for t in document["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"| {verdict} | {t['name']} | {value} | {t['op']} {t['limit']:g} |")
    lines += ["", "## Phases", "", "| phase | status | seconds | error |", "|---|---|---|---|"]
    for name in PHASES:
        phase = results[name]
        error = str(phase.get("error") or "").replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {name} | {phase.get('status')} | {_fmt(phase.get('seconds'), '.0f')} | {error} |")
    steps = results["install"].get("steps") or {}
    if steps:
        lines += ["", "Install: " + "; ".join(f"{k}: {v}" for k, v in steps.items())]
    tests = results["cuda_tests"]
    lines += ["", "## CUDA tests (`pytest -m gpu`)", ""]
    lines.append(f"`{tests.get('command', '-')}`: exit {tests.get('exit_code', '-')}, {tests.get('counts', {})}")
    test_columns = (("test", "test", ""), ("outcome", "outcome", ""), ("message", "message", ""))
    lines += ["", *_table(tests.get("rows", []), test_columns)]
    model = results["model"]
    peaks = config.get("peaks") or {}
    lines += ["", "## Model", ""]
    if peaks:
        spec = peaks.get("spec_tflops")
        spec_text = f"spec {json.dumps(spec)} TFLOP/s ({peaks.get('spec_source')})" if spec else "no spec figure"
        measured = {k: round(v, 1) for k, v in (peaks.get("matmul_measured_tflops") or {}).items()}
        lines.append(
            f"Peaks: {spec_text}; fp32 rows against {peaks.get('basis', {}).get('fp32', 'fp32')}; "
            f"measured dense matmul {json.dumps(measured)} TFLOP/s."
        )
        lines.append("")
    lines += _table([*model.get("baseline", []), *model.get("rows", [])], MODEL_COLUMNS)
    checks = model.get("checks", [])
    if checks:
        lines += ["", "Runner checks (worker path, 96x64, two items; bf16/fp16 against fp32):", ""]
        lines += _table(
            checks,
            (
                ("variant", "variant", ""),
                ("dtype", "dtype", ""),
                ("status", "status", ""),
                ("finite", "finite", ""),
                ("max_abs_diff_vs_fp32", "max abs diff vs fp32", ".3g"),
                ("error", "error", ""),
            ),
        )
    service = results["service"]
    lines += ["", "## Service", ""]
    if service.get("config"):
        lines += [", ".join(f"{k}: {v}" for k, v in service["config"].items()), ""]
    lines += _table(service.get("rows", []), SERVICE_COLUMNS)
    lines += ["", "## Notes", "", *(f"- {n}" for n in document["notes"]), ""]
    return "\n".join(lines)


def run_report(work: Path, out: Path, plan: Plan, started: float, budget_s: float) -> int:
    """Write ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` from whatever the phases left."""
    document = build_report(work, plan, started, budget_s)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(_jsonable(document), indent=1) + "\n", encoding="utf-8")
    text = markdown(document)
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


# -- command line --------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Subcommand and its options."""
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("prepare", "wheels", "model", "service", "report"))
    parser.add_argument("--work", type=Path, help="folder of the phase files")
    parser.add_argument("--out", type=Path, help="report folder (report)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, tiny sizes")
    parser.add_argument("--deadline", type=float, help="time.time() by which the phase must end (model, service)")
    parser.add_argument("--started", type=float, default=time.time(), help="time.time() the check started (report)")
    parser.add_argument("--budget-s", type=float, default=0.0, help="the check's budget (report)")
    parser.add_argument("--dest", type=Path, default=PREPARED, help="prepare's folder (default .gpu_check)")
    parser.add_argument("--dir", type=Path, default=PREPARED / "wheels", help="wheels' folder (wheels)")
    return parser.parse_args(argv)


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one phase; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu_check %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = parse_args(argv)
    # The shell's `timeout` sends SIGTERM: unwind (stopping the servers a phase started) instead of dying at once.
    signal.signal(signal.SIGTERM, _exit_on_term)
    if args.phase == "prepare":
        return prepare(args.dest)
    if args.phase == "wheels":
        sys.stdout.write("".join(f"{path}\n" for path in missing_wheels(args.dir)))
        return 0
    if args.work is None:
        raise SystemExit("--work is needed")
    args.work.mkdir(parents=True, exist_ok=True)
    plan = plan_for(args.dry_run)
    deadline = Deadline(args.deadline or time.time() + 3600)
    if args.phase == "model":  # the environment first, in the same process (one torch import fewer)
        return run_env(args.work, plan) | run_model(args.work, plan, deadline)
    if args.phase == "service":
        return run_service(args.work, plan, deadline)
    if args.out is None:
        raise SystemExit("--out is needed")
    return run_report(args.work, args.out, plan, args.started, args.budget_s)


if __name__ == "__main__":
    sys.exit(main())
