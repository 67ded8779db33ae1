"""The web page at ``/`` and the API documentation at ``/docs``, both working without internet.

``add_web_routes(app)`` adds them to the app; ``service/web/static`` holds the page's HTML, CSS and JavaScript
(package data, no build step), and the Swagger UI bundle comes from the installed ``fastapi-offline`` package.

There is no ``/redoc``: ReDoc cannot run under the pages' Content-Security-Policy (it injects inline styles,
starts its search worker from a ``blob:`` URL and loads its logo from cdn.redoc.ly), and ``/docs`` covers it.
"""

from __future__ import annotations

from service.web.routes import add_web_routes

__all__ = ["add_web_routes"]
