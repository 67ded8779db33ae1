"""Serving the app over HTTP with uvicorn, with the connection guards uvicorn lacks: read timeouts and a limit.

uvicorn closes idle keep-alive connections (5 s) and can answer 503 above a concurrency limit, but it waits forever
for the rest of a request: a connection that sent half its headers, or a body shorter than its Content-Length,
stayed open through 150 s of silence, and 200 such connections held 200 file descriptors. ``GuardedH11Protocol``
(uvicorn's h11 protocol with three additions) closes:

* a connection that has not sent complete request headers ``header_timeout_s`` after its first byte (after it
  opened, for a new connection; slow drip-feeding does not extend this deadline);
* a connection whose request body has been silent for ``body_timeout_s`` (each received chunk restarts the timer,
  so a slow but steady upload goes through);
* any connection beyond ``max_connections`` open ones, at once.

A request whose body was cut off reaches the app as a client disconnect (recorded as status 499); nothing is sent
on a connection closed for a timeout. Once a request is complete the timers stop: its computation may take long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import Settings

__all__ = ["GuardedH11Protocol", "guarded_protocol", "serve"]

logger = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body read timeouts and a connection limit (class attributes)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers" or "body" while a timer runs

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse the connection above the limit, else start the header deadline."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("connection limit (%d) reached: closing a new connection", self.max_connections)
            transport.close()
            return
        self._update_read_timer()

    def data_received(self, data: bytes) -> None:
        """Feed h11, then arm, restart or stop the read timer for the request's new state."""
        super().data_received(data)
        self._update_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timer with the connection."""
        self._stop_read_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        """A response was sent: the next request's deadline starts with its first byte."""
        self._stop_read_timer()
        super().on_response_complete()

    def _update_read_timer(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:  # headers done, body incomplete: an idle timer, restarted by each chunk
            self._start_read_timer("body", self.body_timeout_s)
        elif state is h11.IDLE:  # no complete request yet (h11 buffers partial headers)
            if self._waiting_for != "headers":  # a deadline from the first byte: drip-feeding does not extend it
                self._start_read_timer("headers", self.header_timeout_s)
        else:
            self._stop_read_timer()

    def _start_read_timer(self, waiting_for: str, seconds: float) -> None:
        self._stop_read_timer()
        self._waiting_for = waiting_for
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer, self._waiting_for = None, None

    def _read_timed_out(self) -> None:
        what = self._waiting_for
        self._read_timer, self._waiting_for = None, None
        if self.transport.is_closing():
            return
        if what == "body" and self.flow.read_paused:  # the app is not reading yet: its slowness, not the client's
            self._start_read_timer("body", self.body_timeout_s)
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info("closing the connection of %s: no complete request %s in time", client, what)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass carrying the limits of ``settings``."""
    return type(
        "ConfiguredGuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
            "max_connections": settings.max_connections,
        },
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """Run ``app`` on ``settings.host:port`` until interrupted, with the guarded protocol."""
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings),
        log_config=None,
        access_log=False,
    )
