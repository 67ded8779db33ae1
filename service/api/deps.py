"""FastAPI dependencies and their ``Annotated`` aliases (tests override the ``get_*`` functions)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.api.errors import ApiError, ClientDisconnectedError
from service.api.state import Services
from service.config import Settings
from service.density import DensityScorer
from service.queue.base import JobQueue

__all__ = [
    "ComputeBudgetDep",
    "DensityDep",
    "QueueDep",
    "ServicesDep",
    "SettingsDep",
    "UploadDep",
    "get_compute_budget",
    "get_density",
    "get_queue",
    "get_services",
    "get_settings",
    "get_upload",
    "require_api_key",
]

UPLOAD_FIELD = "image"


def get_services(request: Request) -> Services:
    """The objects the lifespan opened."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    """The app's settings (not the process-wide ``service.config.get_settings``: tests build their own)."""
    return services.settings


def get_queue(services: ServicesDep) -> JobQueue:
    """The job queue."""
    return services.queue


def get_density(services: ServicesDep) -> DensityScorer:
    """The FADE process pool."""
    return services.density


def get_compute_budget(services: ServicesDep) -> int:
    """The pixels of model work one request may cost."""
    return services.compute_budget or services.settings.compute_budget_on("cuda")


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
DensityDep = Annotated[DensityScorer, Depends(get_density)]
ComputeBudgetDep = Annotated[int, Depends(get_compute_budget)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Check ``Authorization: Bearer <key>`` when API keys are configured.

    Runs before the upload is read, so an unauthenticated client cannot make the server parse its body.

    Raises:
        ApiError: 401 when keys are configured and the header is missing or names no configured key.
    """
    keys = settings.api_key_set
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    # compare against every key so the time taken does not reveal which prefix matched
    matched = [hmac.compare_digest(token.encode(), key.encode()) for key in keys]
    if scheme.lower() != "bearer" or not any(matched):
        raise ApiError(401, "a valid API key is required (Authorization: Bearer <key>)", {"WWW-Authenticate": "Bearer"})


async def get_upload(request: Request, settings: SettingsDep) -> bytes:
    """The bytes of the multipart file field ``image``.

    The body size is already bounded while it streams in (``service.api.limits.BodyLimitMiddleware``, which
    allows a little room for the multipart framing); the file itself is held to ``max_upload_bytes`` here.

    Raises:
        ApiError: 422 when the body is not multipart, is malformed, or has no file in the ``image`` field;
            413 when the file exceeds ``max_upload_bytes``.
    """
    try:
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get(UPLOAD_FIELD)
            if not isinstance(upload, UploadFile):
                raise ApiError(422, f"a multipart/form-data body with a file in the field {UPLOAD_FIELD!r} is required")
            data = await upload.read(settings.max_upload_bytes + 1)
    except HTTPException as error:
        if error.status_code != 400:  # e.g. 413 raised by the body limit while the form streams in
            raise
        raise ApiError(422, f"malformed multipart body: {error.detail}") from error
    except ClientDisconnect as error:  # e.g. cut off by the body read timeout (service.server)
        raise ClientDisconnectedError("before its upload was complete") from error
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, f"the upload exceeds the limit of {settings.max_upload_bytes} bytes")
    if not data:
        raise ApiError(422, f"the file in the field {UPLOAD_FIELD!r} is empty")
    return data


UploadDep = Annotated[bytes, Depends(get_upload)]
