"""The app's routes and error handlers, bound to one ``InferenceHandler``.

    POST /semantic-segmentation   {"image": base64 | http(s) URL, "targetSize"?: int | [w, h],
                                   "visualize"?: bool, "labelMapFormat"?: "json" | "png"}
      200 {"logId", "errorCode": 0, "errorMsg": "Success",
           "result": {"labelMap": [row-major ints], "size": [H, W], "image": base64 JPEG | null}}
      4xx/5xx {"logId", "errorCode": <HTTP status>, "errorMsg": <reason>}
    GET /health   {"logId", "errorCode": 0, "errorMsg": "Healthy"}
    GET /info     model name, weights note, class names and palette (the browser page's legend)
    GET /         the browser demo page (static/, no CDN)

Each success carries a ``Server-Timing`` header (read: body and JSON, decode, queue, infer with
its batch size, encode, total; milliseconds).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fastseg.results import colorize
from fastseg.serving.guard import INFER_ENDPOINT, error_response, new_log_id
from fastseg.serving.handler import InferenceHandler
from fastseg.serving.schema import INFER_ERRORS, InferRequest, InferResponse, NoResultResponse

LOG = logging.getLogger("fastseg.serving")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def add_error_handlers(app: FastAPI) -> None:
    """Every failure in PaddleX's body; an unexpected one is a 500 without a traceback."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)  # 405 keeps its Allow

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, f"invalid request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        LOG.error("unhandled error: %r", exc)
        return error_response(500, "Internal server error")


def add_routes(app: FastAPI, handler: InferenceHandler) -> None:
    """The inference endpoint, /health, /info, the demo page and its static files."""
    meta = handler.meta
    # The colours actually drawn (colorize falls back to PaddleX's palette), for the page legend.
    legend_rgb = colorize(np.arange(max(meta.num_classes, 1), dtype=np.int64)[None, :], handler.palette)[0].tolist()

    @app.post(
        INFER_ENDPOINT,
        operation_id="infer",
        summary="Segment one image (PaddleX semantic-segmentation contract)",
        response_model=InferResponse,
        responses={s: {"model": NoResultResponse, "description": d} for s, d in INFER_ERRORS.items()},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
            }
        },
    )
    async def infer(request: Request) -> Response:
        return await handler.infer(request)

    @app.get("/health", operation_id="checkHealth", response_model=NoResultResponse)
    async def health() -> Response:
        body = orjson.dumps({"logId": new_log_id(), "errorCode": 0, "errorMsg": "Healthy"})
        return Response(body, media_type="application/json")

    @app.get("/info", operation_id="modelInfo")
    async def info() -> dict[str, Any]:
        return handler.info(legend_rgb)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
