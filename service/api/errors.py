"""One JSON error shape for every failure: ``{"error": {"status": ..., "message": ...}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "ClientDisconnectedError", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)


class ApiError(StarletteHTTPException):
    """An error with its HTTP status; raised anywhere in a request (also from inside the body stream)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)


class ClientDisconnectedError(Exception):
    """The client went away while its job was queued or running; the job was cancelled."""


CLIENT_CLOSED_REQUEST = 499
"""Status recorded (never seen by the client) when it disconnected before its answer (nginx's convention)."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body with ``status``."""
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    return error_response(error.status_code, str(error.detail), dict(error.headers or {}))


async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in error.errors()]
    return error_response(422, "; ".join(parts) or "invalid request")


async def _client_disconnected(_: Request, error: ClientDisconnectedError) -> Response:
    logger.info("client disconnected; job %s cancelled", error)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(_: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=error)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Route HTTP, validation and unexpected errors to the JSON error shape."""
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnectedError, _client_disconnected)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)
