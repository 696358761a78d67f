"""``/docs`` (Swagger UI) and ``/redoc`` served from packaged assets, so they work offline.

FastAPI's default pages load their JavaScript and CSS from a CDN, which leaves a blank page
on a machine without internet. The ``fastapi-offline`` package ships those files (Swagger UI
5, which reads OpenAPI 3.1, and ReDoc); this follows FastAPI's own "self-hosting JavaScript
and CSS for docs" recipe with them.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS_URL = "/static-docs"


def add_offline_docs(app: FastAPI) -> None:
    """Mount the packaged Swagger UI / ReDoc assets and add ``/docs`` and ``/redoc``.

    Call on an app created with ``docs_url=None, redoc_url=None``.
    """
    assets = files("fastapi_offline").joinpath("static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="static-docs")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
