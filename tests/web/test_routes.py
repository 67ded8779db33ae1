"""The web page's and the documentation's routes, without a browser: status, types, caching, security headers.

Only ``create_app`` runs, not its lifespan, so no model, queue or FADE pool is needed: the pages are static. The
app is called in-process through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import codec
from service.config import Settings
from service.main import create_app
from service.web.assets import static_assets
from service.web.routes import DOCS_CSP, PAGE_CSP

STATIC = Path(__file__).resolve().parents[2] / "service" / "web" / "static"


class Client:
    """A synchronous GET client of an app, in-process (no server, no lifespan)."""

    def __init__(self, settings: Settings, root_path: str = "") -> None:
        self._transport = httpx.ASGITransport(app=create_app(settings), root_path=root_path)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """``GET path``, answered by the app."""

        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=self._transport, base_url="http://testserver") as client:
                return await client.get(path, headers=headers)

        return asyncio.run(call())


@pytest.fixture(scope="module")
def client() -> Client:
    """A client of the app with default settings (no API keys)."""
    return Client(Settings())


class _Tags(HTMLParser):
    """Collects (tag, attributes, text inside) of every element of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def _directives(csp: str) -> dict[str, list[str]]:
    parts = [part.split() for part in csp.split(";") if part.strip()]
    return {part[0]: part[1:] for part in parts}


def test_index_is_html_with_revalidated_caching_and_security_headers(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{12}"', response.headers["etag"])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert 'id="upload"' in response.text


def test_csp_is_strict(client: Client) -> None:
    csp = _directives(client.get("/").headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert set(csp["img-src"]) == {"'self'", "blob:"}


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_satisfy_their_policy(client: Client, path: str) -> None:
    """No inline script or handler, no inline style on our pages; every file comes from this origin."""
    page = _parse(client.get(path).text)
    assert page.script_text == []
    for tag, attributes in page.tags:
        assert not any(name.startswith("on") for name in attributes), f"inline event handler on <{tag}>"
        assert tag != "style" and "style" not in attributes, f"inline style on <{tag}>"
        if tag == "script":
            assert (attributes.get("src") or "").startswith("/static/")
        if tag == "link":
            assert (attributes.get("href") or "").startswith("/static/")
    assert "http://" not in client.get(path).text.replace("http://www.w3.org", "")
    assert "https://" not in client.get(path).text


def test_if_none_match_gives_304(client: Client) -> None:
    etag = client.get("/").headers["etag"]
    response = client.get("/", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert client.get("/", headers={"If-None-Match": '"stale"'}).status_code == 200


def test_static_files_are_immutable_at_their_version_only(client: Client) -> None:
    asset = static_assets()["app.js"]
    versioned = client.get(f"/static/app.js?v={asset.version}")
    assert versioned.status_code == 200
    assert versioned.headers["content-type"] == "text/javascript; charset=utf-8"
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert versioned.headers["x-content-type-options"] == "nosniff"
    assert versioned.content == (STATIC / "app.js").read_bytes()
    assert client.get("/static/app.js?v=0123456789ab").headers["cache-control"] == "no-cache"
    assert client.get("/static/app.js").headers["cache-control"] == "no-cache"
    assert client.get("/static/style.css").headers["content-type"] == "text/css; charset=utf-8"
    assert client.get("/static/favicon.svg").headers["content-type"] == "image/svg+xml"


def test_the_page_links_its_files_at_their_current_versions(client: Client) -> None:
    page = _parse(client.get("/").text)
    urls = [a.get("src") or a.get("href") or "" for tag, a in page.tags if tag in ("script", "link")]
    assert len(urls) == 3
    for url in urls:
        name, version = re.fullmatch(r"/static/([\w.-]+)\?v=([0-9a-f]{12})", url).groups()  # type: ignore[union-attr]
        assert static_assets()[name].version == version
        assert client.get(url).headers["cache-control"].endswith("immutable")


@pytest.mark.parametrize("path", ["/static/index.html", "/static/nope.js", "/static/..%2Fassets.py"])
def test_unknown_static_files_are_404_json(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


def test_the_page_needs_no_key_and_shows_the_key_field_when_keys_are_set() -> None:
    keyed = Client(Settings(api_keys="secret-1,secret-2"))
    response = keyed.get("/")
    assert response.status_code == 200
    assert 'data-auth-required="true"' in response.text
    assert "secret" not in response.text
    assert keyed.get("/docs").status_code == 200
    assert keyed.get("/static/app.js").status_code == 200
    plain = Client(Settings()).get("/")
    assert 'data-auth-required="false"' in plain.text
    assert plain.headers["etag"] != response.headers["etag"]


def test_docs_serve_swagger_ui_from_the_installed_package(client: Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == DOCS_CSP
    assert 'data-openapi-url="/openapi.json"' in response.text
    page = _parse(response.text)
    scripts = [a["src"] or "" for tag, a in page.tags if tag == "script"]
    assert [url.split("?")[0] for url in scripts] == ["/static/swagger-ui-bundle.js", "/static/docs.js"]
    bundle = client.get(scripts[0])
    assert bundle.status_code == 200
    assert len(bundle.content) > 500_000
    assert b"SwaggerUIBundle" in bundle.content
    assert client.get("/static/swagger-ui.css").status_code == 200


def test_there_is_no_redoc(client: Client) -> None:
    """ReDoc cannot meet the pages' CSP (inline styles, a blob: worker, a CDN logo): it is not served at all."""
    assert client.get("/redoc").status_code == 404
    assert client.get("/static/redoc.standalone.js").status_code == 404


def test_pages_are_not_in_the_openapi_schema(client: Client) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths.isdisjoint({"/", "/docs", "/static/{name}"})


def test_pages_follow_the_root_path() -> None:
    behind_proxy = Client(Settings(), root_path="/dehaze-api")
    index = behind_proxy.get("/").text
    assert 'data-root="/dehaze-api"' in index
    assert 'src="/dehaze-api/static/app.js?v=' in index
    assert 'data-openapi-url="/dehaze-api/openapi.json"' in behind_proxy.get("/docs").text


def test_the_page_colours_depth_with_the_service_colour_map() -> None:
    """app.js repeats service.codec's colour map (the page colours the JSON depth itself); the two agree."""
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    stops = re.search(r"const COLORMAP_STOPS = (\[.*?\]);", script, re.S)
    rgb = re.search(r"const COLORMAP_RGB = (\[.*?\]);", script, re.S)
    assert stops and rgb
    np.testing.assert_allclose(json.loads(stops.group(1)), codec._COLORMAP_STOPS, atol=1e-6)
    np.testing.assert_allclose(
        np.array(json.loads(re.sub(r",\s*\]", "]", rgb.group(1)))) / 255.0, codec._COLORMAP_RGB, atol=1e-6
    )
