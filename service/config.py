"""Settings of the service, read once from ``DEHAZE_*`` environment variables and validated at start."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PRECISIONS", "Precision", "Settings", "get_settings"]

Precision = Literal["auto", "float32", "bfloat16", "float16"]
"""``DEHAZE_DTYPE`` and ``--dtype``; ``model.precision.resolve_dtype`` says what each means on a device."""
PRECISIONS: tuple[str, ...] = get_args(Precision)

_SIZES = re.compile(r"(\s*[1-9]\d*x[1-9]\d*\s*(,\s*[1-9]\d*x[1-9]\d*\s*)*)?")
"""``warm_up_sizes`` when not ``all``: WxH image sizes separated by commas (or nothing)."""

_CPU_COMPUTE_BUDGET = 8 * 640 * 640
"""Default ``max_compute_pixels`` on the CPU: eight 640² tiles, exactly a 1920×1080 photo at the default tiling."""


class Settings(BaseSettings):
    """Every setting of the API and the worker. Each field is the env var ``DEHAZE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DEHAZE_", extra="ignore", validate_default=True)

    # network
    host: str = Field(default="127.0.0.1", description="address the API binds to")
    port: int = Field(default=8000, ge=1, le=65535, description="port the API listens on")
    # model
    weights: Path | None = Field(default=None, description="checkpoint to serve; default: the shipped weights")
    artifact: Path | None = Field(
        default=None,
        description="TorchScript artifact; default: next to the weights, exported on first start if missing",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto = CUDA when available, else CPU")
    dtype: Precision = Field(
        default="auto",
        description=(
            "compute precision; auto = bfloat16 on a CPU with native bfloat16 (AVX-512 BF16/AMX), else float32; "
            "bfloat16/float16 on CUDA run under autocast"
        ),
    )
    torch_threads: int = Field(default=0, ge=0, description="CPU threads for torch (0 = torch's default)")
    # queue
    redis_url: str | None = Field(default=None, description="Redis URL; unset = in-process queue (embedded mode)")
    queue_name: str = Field(default="dehaze", description="prefix of every Redis key and stream")
    max_queue_length: int = Field(default=64, ge=1, description="jobs waiting or running before the API answers 503")
    request_timeout_s: float = Field(
        default=120.0, gt=0, description="how long a request waits for its result (504 after)"
    )
    result_ttl_s: int = Field(default=300, ge=1, description="lifetime of job payload and result keys in Redis")
    delivery_limit: int = Field(default=3, ge=1, description="deliveries after which a job is failed as poisoned")
    claim_idle_ms: int = Field(default=30000, ge=100, description="idle time after which another worker reclaims a job")
    heartbeat_s: float = Field(default=2.0, gt=0, description="worker heartbeat interval")
    # batching and tiling
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="a batch closes when it holds this many tiles; unset: 8 on CUDA, 1 on the CPU",
    )
    max_batch_wait_ms: float = Field(default=10.0, ge=0, description="... or when its oldest job has waited this long")
    tile_size: int = Field(default=640, ge=64, description="images larger than this on a side are cut into tiles")
    tile_overlap: int = Field(default=64, ge=0, description="overlap between neighbouring tiles (blended)")
    bucket_multiple: int = Field(
        default=32, ge=4, description="images are padded up to a multiple of this to share a batch"
    )
    warm_up_sizes: str = Field(
        default="640x480,480x640",
        description=(
            "image sizes WxH (comma-separated) whose padded shapes the worker computes once before it is ready, "
            "beside the smallest bucket and the tile; 'all': every padded shape up to the tile size; empty: none"
        ),
    )
    kernel_cache_shapes: int = Field(
        default=64,
        ge=0,
        description=(
            "input shapes whose CPU kernels (oneDNN primitives) stay cached, set by every dehaze command at start "
            "(model.kernel_cache); 0 = oneDNN's default of about ten shapes"
        ),
    )
    # limits
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1, description="largest accepted upload (413 above)")
    max_pixels: int = Field(default=16_777_216, ge=1, description="largest accepted width*height (413 above)")
    max_compute_pixels: int | None = Field(
        default=None,
        ge=1,
        description=(
            "pixels one request may send through the model: its tiles, each padded to its bucket (413 above); "
            "unset: 3,276,800 on the CPU (a 1920x1080 photo), 2 x max_pixels on CUDA"
        ),
    )
    # haze density
    density_workers: int = Field(default=1, ge=1, description="processes computing FADE off the inference path")
    density_max_pixels: int = Field(
        default=1 << 20,
        ge=64,
        description="images with more pixels are shrunk (area filter) before FADE, bounding its cost",
    )
    # connections
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a client must send a request's headers within this (connection closed)"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="... and then some of its body at least this often (connection closed)"
    )
    max_connections: int = Field(default=512, ge=1, description="open connections beyond this are closed at once")
    # outputs
    default_quality: int = Field(default=90, ge=1, le=100, description="JPEG/WebP quality when the request names none")
    # security and ops
    api_keys: str = Field(default="", description="comma-separated bearer tokens; empty = no authentication")
    worker_metrics_port: int = Field(
        default=9100, ge=0, le=65535, description="a Redis worker's /metrics port (0 = off)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="logging level of every dehaze command (the --log-level flag wins)"
    )

    malloc_tuning: bool = Field(
        default=True,
        description="glibc malloc settings for inference (commands.allocator), set by every dehaze command at start",
    )

    @field_validator("warm_up_sizes")
    @classmethod
    def _check_sizes(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "all" and not _SIZES.fullmatch(value):
            raise ValueError("expected 'all', nothing, or image sizes WxH separated by commas, e.g. 640x480,480x640")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.tile_overlap * 2 >= self.tile_size:
            raise ValueError("tile_overlap must be less than half of tile_size")
        if self.tile_size % self.bucket_multiple:
            raise ValueError("tile_size must be a multiple of bucket_multiple")
        return self

    def batch_size_on(self, device_type: str) -> int:
        """``max_batch_size``, or the measured default for the device when unset.

        On the CPU a batch of several tiles measured no consistently faster per image than one tile at a time and
        adds about 1.1 GiB of peak memory per extra 640² tile (tests/benchmarks/bench_service.py, bench_memory.py),
        so the CPU default is 1; a GPU needs batches to fill its cores.
        """
        if self.max_batch_size is not None:
            return self.max_batch_size
        return 8 if device_type == "cuda" else 1

    def compute_budget_on(self, device_type: str) -> int:
        """``max_compute_pixels``, or the default for the device when unset.

        The budget bounds the model time of one request. On the CPU eight 640² tiles (a 1920×1080 photo) take about
        17 s with the small model (docs/benchmarks.md); the 49 tiles of a 4096² upload took 143 s, which held the
        worker (and every request queued behind it) for minutes. A GPU computes the whole ``max_pixels`` in seconds;
        its budget, twice that, only refuses shapes whose tiles are mostly padding (e.g. 1×16,000,000).
        """
        if self.max_compute_pixels is not None:
            return self.max_compute_pixels
        return 2 * self.max_pixels if device_type == "cuda" else _CPU_COMPUTE_BUDGET

    def weights_path(self) -> Path:
        """The checkpoint to serve: ``weights``, or the shipped weights when unset."""
        if self.weights is not None:
            return self.weights
        from model.checkpoint import DEFAULT_WEIGHTS  # imported on use: reading settings must not load torch

        return Path(DEFAULT_WEIGHTS)

    def artifact_path(self, dtype: str = "float32") -> Path:
        """The TorchScript artifact of a precision: ``artifact``, or ``<weights stem>.ts.pt`` next to the weights
        when unset; for bfloat16 its sibling ``<name>.bfloat16.ts.pt``, so both precisions can sit side by side
        (an ``artifact`` already named ``*.bfloat16.ts.pt`` is that sibling itself).
        """
        weights = self.weights_path()
        base = self.artifact if self.artifact is not None else weights.with_name(f"{weights.stem}.ts.pt")
        if dtype == "float32" or base.name.endswith(f".{dtype}.ts.pt"):
            return base
        stem = base.name.removesuffix(".pt").removesuffix(".ts")
        return base.with_name(f"{stem}.{dtype}.ts.pt")

    @property
    def api_key_set(self) -> frozenset[str]:
        """The accepted bearer tokens (empty: authentication off)."""
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read once; tests build their own ``Settings``)."""
    return Settings()
