"""Pydantic models of the JSON bodies the API returns (they also document the API in /docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["DehazeResponse", "DensityResponse", "ErrorBody", "ErrorResponse", "ModelInfo", "ReadinessResponse"]


class ErrorBody(BaseModel):
    """What went wrong."""

    status: int = Field(description="the HTTP status, repeated for clients that only keep the body")
    message: str = Field(description="a human-readable reason")


class ErrorResponse(BaseModel):
    """Every error of the API has this body."""

    error: ErrorBody


class ModelInfo(BaseModel):
    """The model that produced a result."""

    name: str = Field(description="the model variant, e.g. dcmpnet_small")
    version: str = Field(description="the weights' version")


class DehazeResponse(BaseModel):
    """All three outputs of one upload (``Accept: application/json`` or ``?response=json``)."""

    image: str = Field(description="the dehazed image, base64 of the encoded file")
    image_media_type: str = Field(description="the dehazed image's format, e.g. image/png")
    depth: str = Field(description="the depth map, base64 of a 16-bit greyscale PNG (0 = near, 65535 = far)")
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


class ReadinessResponse(BaseModel):
    """Whether the service can take work, and why not."""

    ready: bool
    reasons: list[str] = Field(default_factory=list, description="what is missing when not ready")
    workers_alive: int = 0
    queue_depth: int = 0
