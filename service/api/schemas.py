"""Pydantic models of the JSON bodies the API returns (they also document the API in /docs)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from model.licence import UNKNOWN_LICENCE

__all__ = [
    "DEPTH_DESCRIPTION",
    "DehazeResponse",
    "DensityResponse",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "ModelInfo",
    "ReadinessResponse",
]

DEPTH_DESCRIPTION = (
    "16-bit greyscale PNG, 0 = near, 65535 = far. A DCMPNet model returns its depth network's estimate on the hazy "
    "input, a relative depth whose scale differs between images. A CORUN model has no depth network: its depth is "
    "derived from its transmission map t as -ln(t) / -ln(0.05) (t clamped to [0.05, 1]), on a fixed scale, so light "
    "haze gives a dark map. model.name in a JSON answer (or in /healthz) says which model served."
)


class ErrorBody(BaseModel):
    """What went wrong."""

    status: int = Field(description="the HTTP status, repeated for clients that only keep the body")
    message: str = Field(description="a human-readable reason")


class ErrorResponse(BaseModel):
    """Every error of the API has this body."""

    error: ErrorBody


class ModelInfo(BaseModel):
    """The model that produced a result."""

    name: str = Field(description="the model variant, e.g. dcmpnet_small or corun_small (its family is the prefix)")
    version: str = Field(description="the weights' version")
    licence: str = Field(
        description="SPDX id of the weights' licence, e.g. MIT or GPL-3.0 (unknown when the served artifact does "
        "not record it)"
    )

    @classmethod
    def of_result(cls, model: Mapping[str, str]) -> ModelInfo:
        """The model a job result names (``JobResult.model``); a worker older than the licence field gives none."""
        return cls(
            name=model.get("variant", ""),
            version=model.get("version", ""),
            licence=model.get("licence") or UNKNOWN_LICENCE,
        )


class DehazeResponse(BaseModel):
    """All three outputs of one upload (``Accept: application/json`` or ``?response=json``)."""

    image: str = Field(description="the dehazed image, base64 of the encoded file")
    image_media_type: str = Field(description="the dehazed image's format, e.g. image/png")
    depth: str = Field(description=f"the depth map, base64 of a {DEPTH_DESCRIPTION}")
    fade_in: float | None = Field(
        description="FADE haze density of the upload (lower = less haze; null where undefined, e.g. a flat image)"
    )
    fade_out: float | None = Field(description="FADE haze density of the dehazed image")
    width: int
    height: int
    model: ModelInfo
    timings: dict[str, float] = Field(description="milliseconds: queue_wait, decode, compute, encode, density, total")


class DensityResponse(BaseModel):
    """The haze density of an upload."""

    fade: float | None = Field(description="FADE haze density (lower = less haze; null where undefined)")
    width: int
    height: int
    timings: dict[str, float] = Field(description="milliseconds: density, total")


class HealthResponse(BaseModel):
    """The process is alive, and the model it last saw served."""

    status: str = Field(description="always ok")
    model: ModelInfo | None = Field(
        description="the model of the embedded worker or of the latest answer; null before either is known"
    )


class ReadinessResponse(BaseModel):
    """Whether the service can take work, and why not."""

    ready: bool
    reasons: list[str] = Field(default_factory=list, description="what is missing when not ready")
    workers_alive: int = 0
    queue_depth: int = 0
