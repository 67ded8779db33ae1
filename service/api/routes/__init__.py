"""One small module per endpoint group; ``ROUTERS`` lists them in the order they are mounted."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import dehaze, density, depth, health, metrics

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (dehaze.router, depth.router, density.router, health.router, metrics.router)
