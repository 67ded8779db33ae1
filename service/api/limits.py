"""The upload size limit, enforced while the body streams in (pure ASGI: no buffering middleware in between)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ApiError, error_response

__all__ = ["BodyLimitMiddleware", "BodyTooLargeError"]


class BodyTooLargeError(ApiError):
    """The request body exceeds the upload limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the upload exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Reject bodies larger than ``max_bytes`` with 413, without reading more than ``max_bytes`` of them.

    A declared ``Content-Length`` above the limit is rejected before the app runs. Otherwise (chunked uploads,
    or a lying header) the bytes are counted as the app receives them, and the receive call that crosses the
    limit raises ``BodyTooLargeError``; the app's error handler turns it into the JSON 413, or this middleware
    does when it escapes the app before a response has started.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_limit: int | None = None) -> None:
        """Wrap ``app``.

        Args:
            app: The application.
            max_bytes: The body limit: ``settings.max_upload_bytes`` plus room for the multipart framing.
            upload_limit: The limit the user configured, named in the error message (default ``max_bytes``).
        """
        self.app = app
        self.max_bytes = max_bytes
        self.upload_limit = max_bytes if upload_limit is None else upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count the streamed bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await error_response(413, BodyTooLargeError(self.upload_limit).detail)(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.upload_limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError as error:
            if started:
                raise
            await error_response(413, error.detail)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
