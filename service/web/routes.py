"""GET / (the web page), GET /docs (the API documentation, offline) and GET /static/{name}.

The page is static: it talks to the public API only (``POST /dehaze?response=json``) and holds no data, so it
needs no API key. The one thing it learns from the server is whether an API key is required
(``DEHAZE_API_KEYS``), written into the HTML as ``data-auth-required``, so it can show the key field up front.

Security headers on every response of these routes:

- ``Content-Security-Policy``: scripts and styles from this origin only (no inline script, no inline style
  element, no ``eval``), connections to this origin only, images from this origin or ``blob:`` URLs the page
  made itself, no framing, no form posts, no ``<base>``. ``/docs`` differs only in allowing ``data:`` images
  (Swagger UI's icons are data URLs in its CSS).
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY``.

Caching: the HTML pages are ``no-cache`` (revalidated by ETag, so a deployment shows at once); a static file
requested with its current ``?v=`` version is cacheable for a year (``immutable``), any other request of it is
``no-cache``. ``If-None-Match`` gives 304.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query, Request, Response

from service.api.errors import ApiError
from service.web.assets import Asset, render_page, static_assets

__all__ = ["ASSET_CSP", "DOCS_CSP", "PAGE_CSP", "SECURITY_HEADERS", "add_web_routes"]

_STRICT = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

PAGE_CSP = f"{_STRICT}; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'"
"""The web page's policy: everything from this origin, images also from the page's own ``blob:`` URLs."""

DOCS_CSP = f"{_STRICT}; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'"
"""Swagger UI's policy: as the page's, with ``data:`` images (its icons are data URLs in its CSS)."""

ASSET_CSP = _STRICT
"""Static files are never documents; should one be opened directly (e.g. the SVG icon), it may load nothing."""

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
"""Headers on every response of these routes, besides their Content-Security-Policy."""

_PAGE_CACHE = "no-cache"
_IMMUTABLE_CACHE = "public, max-age=31536000, immutable"


def _root_path(request: Request) -> str:
    """The app's mount prefix without a trailing slash ("" at the root), as FastAPI's own docs pages use it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _not_modified(request: Request, asset: Asset) -> bool:
    """Whether ``If-None-Match`` names the asset's current ETag (weak or strong, or ``*``)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or asset.etag in tags


def _answer(request: Request, asset: Asset, csp: str, cache_control: str) -> Response:
    """The asset (or 304) with its ETag, cache policy and the security headers."""
    headers = {
        **SECURITY_HEADERS,
        "Content-Security-Policy": csp,
        "Cache-Control": cache_control,
        "ETag": asset.etag,
    }
    if _not_modified(request, asset):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def index(request: Request) -> Response:
    """The page to try the service: upload an image, see and download the results."""
    auth_required = bool(request.app.state.settings.api_key_set)
    values = (("auth_required", "true" if auth_required else "false"),)
    return _answer(request, render_page("index.html", _root_path(request), values), PAGE_CSP, _PAGE_CACHE)


async def swagger_ui(request: Request) -> Response:
    """Swagger UI for the OpenAPI schema, its files served by this app (no CDN)."""
    root = _root_path(request)
    openapi_url = root + (request.app.openapi_url or "/openapi.json")
    values = (("title", f"{request.app.title} - Swagger UI"), ("openapi_url", openapi_url))
    return _answer(request, render_page("docs.html", root, values), DOCS_CSP, _PAGE_CACHE)


async def static_file(
    request: Request, name: str, v: Annotated[str | None, Query(description="the asset's version")] = None
) -> Response:
    """One of the page's or the documentation's files.

    Raises:
        ApiError: 404 when no such file is served.
    """
    asset = static_assets().get(name)
    if asset is None:
        raise ApiError(404, f"no static file {name!r}")
    cache_control = _IMMUTABLE_CACHE if v == asset.version else _PAGE_CACHE
    return _answer(request, asset, ASSET_CSP, cache_control)


def add_web_routes(app: FastAPI) -> None:
    """Add ``GET /``, ``GET /docs`` and ``GET /static/{name}`` to ``app``, outside its OpenAPI schema.

    They are the app's own routes (as FastAPI's default ``/docs`` would be), not an included router, so that
    ``app.routes`` lists their paths.
    """
    for path, endpoint in (("/", index), ("/docs", swagger_ui), ("/static/{name}", static_file)):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
