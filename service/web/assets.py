"""The web page's files and the offline documentation's files, read once and held in memory.

Two sources, one name space under ``/static/``:

- the page's own files, shipped as package data in ``service/web/static`` (HTML, CSS, JavaScript, an icon);
- the Swagger UI bundle of the installed ``fastapi-offline`` package (only its files are used, not its
  ``FastAPIOffline`` factory, whose pages carry inline scripts that our Content-Security-Policy forbids).

Each asset carries a version (the first 12 hex digits of its SHA-256), used as its ETag and in the ``?v=`` query
of the URLs that the HTML pages write, so that a browser may cache a versioned URL for a year and still sees a
new file after an upgrade. Nothing is read at import: the first request reads the files (a few MB).
"""

from __future__ import annotations

import hashlib
import html
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources.abc import Traversable

__all__ = ["PAGE_TEMPLATES", "Asset", "asset_url", "render_page", "static_assets"]

_OWN_FILES = ("app.js", "style.css", "docs.js", "docs.css", "favicon.svg")
"""The page's files in ``service/web/static`` that ``/static/{name}`` serves (the templates are not among them)."""

_VENDOR_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
"""Swagger UI's files, taken from ``fastapi_offline/static`` (its ReDoc bundle is not served, see service.web)."""

PAGE_TEMPLATES = ("index.html", "docs.html")
"""HTML templates in ``service/web/static``; ``{{name}}`` placeholders are filled by ``render_page``."""

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One file's bytes, its media type and its content version."""

    body: bytes
    media_type: str
    version: str

    @property
    def etag(self) -> str:
        """A strong ETag derived from the content."""
        return f'"{self.version}"'

    @classmethod
    def of(cls, body: bytes, name: str) -> Asset:
        """An asset for ``body``; the media type comes from ``name``'s extension."""
        suffix = name[name.rfind(".") :]
        return cls(body, _MEDIA_TYPES.get(suffix, "application/octet-stream"), hashlib.sha256(body).hexdigest()[:12])


def _own_folder() -> Traversable:
    return importlib.resources.files("service.web").joinpath("static")


def _vendor_folder() -> Traversable:
    return importlib.resources.files("fastapi_offline").joinpath("static")


@lru_cache(maxsize=1)
def static_assets() -> Mapping[str, Asset]:
    """Every file ``/static/{name}`` serves, by name (read on first use).

    Raises:
        FileNotFoundError: when a shipped file or a bundle of ``fastapi-offline`` is missing (a broken install).
    """
    assets = {name: Asset.of(_own_folder().joinpath(name).read_bytes(), name) for name in _OWN_FILES}
    assets.update({name: Asset.of(_vendor_folder().joinpath(name).read_bytes(), name) for name in _VENDOR_FILES})
    return assets


@lru_cache(maxsize=16)
def _template(name: str) -> str:
    return _own_folder().joinpath(name).read_text(encoding="utf-8")


def asset_url(root_path: str, name: str) -> str:
    """The versioned URL of static asset ``name`` under ``root_path`` (cacheable for a year)."""
    return f"{root_path}/static/{name}?v={static_assets()[name].version}"


@lru_cache(maxsize=64)
def render_page(template: str, root_path: str, values: tuple[tuple[str, str], ...] = ()) -> Asset:
    """The HTML page ``template`` with its placeholders filled, as an asset (cached per argument set).

    ``{{root}}`` becomes ``root_path`` (the app's mount prefix, "" when served at the root), ``{{asset:NAME}}``
    the versioned URL of a static asset, and ``{{KEY}}`` each of ``values`` (HTML-escaped).

    Raises:
        ValueError: when ``template`` is not one of ``PAGE_TEMPLATES`` or a placeholder is left unfilled.
    """
    if template not in PAGE_TEMPLATES:
        raise ValueError(f"unknown page template {template!r}; choose from {PAGE_TEMPLATES}")
    text = _template(template)
    for name in static_assets():
        text = text.replace(f"{{{{asset:{name}}}}}", html.escape(asset_url(root_path, name)))
    for key, value in (("root", root_path), *values):
        text = text.replace(f"{{{{{key}}}}}", html.escape(value))
    if "{{" in text:
        start = text.index("{{")
        raise ValueError(f"{template}: unfilled placeholder {text[start : text.find('}}', start) + 2]!r}")
    return Asset.of(text.encode("utf-8"), template)
