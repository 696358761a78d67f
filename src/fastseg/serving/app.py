"""``create_app``: a FastAPI app serving one ``Segmenter`` with PaddleX's HTTP contract.

    POST /semantic-segmentation   {"image": base64 | http(s) URL, "targetSize"?: int | [w, h],
                                   "visualize"?: bool, "labelMapFormat"?: "json" | "png"}
      200 {"logId", "errorCode": 0, "errorMsg": "Success",
           "result": {"labelMap": [row-major ints], "size": [H, W], "image": base64 JPEG | null}}
      4xx/5xx {"logId", "errorCode": <HTTP status>, "errorMsg": <reason>}
    GET /health   {"logId", "errorCode": 0, "errorMsg": "Healthy"}
    GET /info     model name, weights note, class names and palette (the browser page's legend)
    GET /         the browser demo page (static/, no CDN)

Each success carries a ``Server-Timing`` header (read: body and JSON, decode, queue, infer
with its batch size, encode, total; milliseconds). Request flow, all CPU work off the event loop: guard middleware (API key, Content-Length
limit) -> the whole body, within ``body_timeout_s`` (408), so slow senders hold no slot ->
admission (503 + Retry-After when full) -> JSON parse and image header in the thread pool ->
network input size check (``max_input_pixels``) -> decoded-bytes reservation
(``decode_memory_bytes``) -> decode in the pool -> dynamic batch on the inference thread(s)
-> JSON (orjson) encode in the pool.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fastseg.errors import FastSegError, InputError
from fastseg.model_dir import ModelMeta
from fastseg.processing import resize_spec_for, resized_hw
from fastseg.reference import weights_note
from fastseg.results import colorize
from fastseg.serving.batcher import Batcher, PredictFn, RequestedSize, Ticket
from fastseg.serving.budget import MemoryBudget
from fastseg.serving.config import ServingConfig
from fastseg.serving.docs import add_offline_docs
from fastseg.serving.guard import INFER_ENDPOINT, Guard, error_response, new_log_id
from fastseg.serving.inputs import ImageDecoder, ImageHeader, decode_pixels

LOG = logging.getLogger("fastseg.serving")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_JPEG_QUALITY = 90

Side = Annotated[int, Field(ge=1, le=16384)]
NoResize = Literal[-1]


class SegmenterLike(Protocol):
    """What the app needs from ``fastseg.segmenter.Segmenter`` (a stub can stand in for tests)."""

    @property
    def meta(self) -> ModelMeta: ...

    def predict_images(self, images_bgr: Sequence[npt.NDArray[np.uint8]], *, target_size: Any = None) -> list[Any]: ...


class InferRequest(BaseModel):
    """PaddleX's ``semantic_segmentation.InferRequest`` plus the opt-in ``labelMapFormat``."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(
        min_length=1, description="Base64 of the image file bytes (PNG/JPEG/BMP/WEBP), or an http(s) URL."
    )
    targetSize: Side | NoResize | tuple[Side, Side] | tuple[NoResize, NoResize] | None = Field(
        default=None,
        description="Inference size as PaddleX: an int (square) or [width, height]; -1 = no resize; "
        "default: the model's own Resize.",
    )
    visualize: bool | None = Field(default=None, description="Return result.image; default: the server config.")
    labelMapFormat: Literal["json", "png"] = Field(
        default="json",
        description="'png': result.labelMapPng (base64 single-channel PNG, uint8 or uint16) instead of labelMap.",
    )


class InferResult(BaseModel):
    labelMap: list[int] | None = Field(default=None, description="Row-major class ids, length H*W.")
    labelMapPng: str | None = Field(default=None, description="Only with labelMapFormat='png'.")
    size: tuple[int, int] = Field(description="[H, W] of the label map (the input image's size).")
    image: str | None = Field(default=None, description="Base64 JPEG of the colour map, or null.")


class InferResponse(BaseModel):
    logId: str
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"
    result: InferResult


class NoResultResponse(BaseModel):
    logId: str
    errorCode: int
    errorMsg: str


def _labels_from_result(result: Any, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.integer]:
    """``res["pred"]`` ([1,H,W] or [H,W]) -> HxW, checked against the source image size."""
    pred = np.asarray(result["pred"])
    while pred.ndim > 2 and pred.shape[0] == 1:
        pred = pred[0]
    height, width = image.shape[:2]
    if pred.shape != (height, width):
        raise RuntimeError(f"segmenter returned a label map of shape {pred.shape} for a {height}x{width} image")
    return pred


def _encode_success(
    log_id: str,
    labels_hw: npt.NDArray[np.integer],
    *,
    palette: Sequence[Sequence[int]] | None,
    visualize: bool,
    label_format: str,
) -> bytes:
    height, width = labels_hw.shape
    result: dict[str, Any] = {}
    if label_format == "png":
        dtype = np.uint8 if int(labels_hw.max(initial=0)) < 256 else np.uint16
        ok, png = cv2.imencode(".png", labels_hw.astype(dtype, copy=False))
        if not ok:
            raise RuntimeError("PNG encoding of the label map failed")
        result["labelMapPng"] = base64.b64encode(png.tobytes()).decode("ascii")
    else:
        result["labelMap"] = np.ascontiguousarray(labels_hw).ravel()  # orjson writes int arrays natively
    result["size"] = [height, width]
    result["image"] = None
    if visualize:
        colour = colorize(labels_hw, palette, bgr=True)
        ok, jpeg = cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding of the colour map failed")
        result["image"] = base64.b64encode(jpeg.tobytes()).decode("ascii")
    body = {"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": result}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _parse_request(body: bytes) -> InferRequest:
    try:
        return InferRequest.model_validate_json(body)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise InputError(f"invalid request body: {reasons}.") from exc


def _network_hw(meta: ModelMeta, target: RequestedSize, image_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the tensor the network will get for this image and targetSize."""
    if meta.fixed_hw is not None and not meta.dynamic_hw:
        return meta.fixed_hw
    return resized_hw(image_hw, resize_spec_for(meta.preprocess.resize, target))


def _check_network_input(meta: ModelMeta, target: RequestedSize, header: ImageHeader, limit: int) -> None:
    """Refuse a network input over ``limit`` pixels (a small image with a huge targetSize)."""
    height, width = _network_hw(meta, target, (header.height, header.width))
    if height * width > limit:
        shown = list(target) if isinstance(target, tuple) else target  # as the client wrote it (JSON)
        asked = "the model's own Resize" if target is None else f"targetSize {shown!r}"
        raise InputError(
            f"{asked} on this {header.width}x{header.height} image gives a {width}x{height} network input "
            f"= {width * height} pixels, over this server's max_input_pixels of {limit}; send a smaller targetSize."
        )


#: (predict, config) -> the batch runner the app submits to (Ray Serve plugs in its own).
BatcherFactory = Callable[[PredictFn, ServingConfig], Batcher]


def default_batcher(predict: PredictFn, config: ServingConfig) -> Batcher:
    """The home-made dynamic batcher on ``config.workers`` inference threads."""
    return Batcher(
        predict,
        max_batch=config.max_batch,
        max_wait_s=config.max_wait_ms / 1000.0,
        capacity=config.queue_size,
        workers=config.workers,
    )


def create_app(
    segmenter: SegmenterLike, config: ServingConfig | None = None, *, batcher_factory: BatcherFactory | None = None
) -> FastAPI:
    """Build the serving app for ``segmenter``.

    Args:
        segmenter: a ``fastseg.segmenter.Segmenter`` (or anything with ``meta`` and
            ``predict_images``). The app does not own it: close it after the server stops.
        config: limits, batching and security (default: ``ServingConfig()``, the safe defaults).
        batcher_factory: builds the batch runner (default: ``default_batcher``); a subclass of
            ``Batcher`` may batch differently, e.g. with Ray Serve's ``@serve.batch``.

    Returns:
        The FastAPI app; its lifespan starts and stops the batching threads, so run it under
        an ASGI server (``uvicorn.run(app)``) or ``fastseg serve``.
    """
    config = config or ServingConfig()
    meta = segmenter.meta
    palette = meta.palette or None
    # The colours actually drawn (colorize falls back to PaddleX's palette), for the page legend.
    legend_rgb = colorize(np.arange(max(meta.num_classes, 1), dtype=np.int64)[None, :], palette)[0].tolist()
    # Sliding windows bound inference memory, so a slide segmenter accepts larger images.
    sliding = getattr(segmenter, "slide", None) is not None
    max_pixels = config.slide_max_pixels if sliding else config.max_pixels
    max_input_pixels = config.slide_max_pixels if sliding else config.max_input_pixels
    decoder = ImageDecoder(max_bytes=config.max_body_bytes, max_pixels=max_pixels, url_inputs=config.url_inputs)
    budget = MemoryBudget(config.decode_memory_bytes)

    def predict(images: Sequence[npt.NDArray[np.uint8]], target_size: RequestedSize) -> list[npt.NDArray[np.integer]]:
        results = segmenter.predict_images(list(images), target_size=target_size)
        return [_labels_from_result(r, img) for r, img in zip(results, images)]

    batcher = (batcher_factory or default_batcher)(predict, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="fastseg serving",
        summary=f"PaddleX-compatible semantic segmentation: {meta.model_name}",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by add_offline_docs from packaged assets, not a CDN
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.batcher = batcher
    app.state.budget = budget
    app.state.config = config
    app.add_middleware(Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes)

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

    async def handle(body: bytes, log_id: str, started: float, ticket: Ticket) -> Response:
        req = _parse_request(body)
        t0 = time.perf_counter()
        if req.labelMapFormat == "png" and not config.allow_compact_format:
            raise InputError("labelMapFormat 'png' is disabled on this server (allow_compact_format: false).")
        target: RequestedSize = req.targetSize
        sides = () if target is None else (target,) * 2 if isinstance(target, int) else target
        if 0 in sides or (-1 in sides and len(set(sides)) > 1):
            raise InputError(f"targetSize {req.targetSize!r} is invalid: use sides > 0, or -1 for no resize.")
        # a URL fetch ends with the request (its thread is not left reading after the answer)
        fetch_deadline = time.monotonic() + max(config.request_timeout_s - (t0 - started), 0.0)
        data, header = await run_in_threadpool(partial(decoder.load, req.image, deadline=fetch_deadline))
        _check_network_input(meta, target, header, max_input_pixels)
        async with budget.reserve(header.decoded_bytes):
            image = await run_in_threadpool(decode_pixels, data, header)
            del data
            t1 = time.perf_counter()
            done = await batcher.submit(ticket, image, target)
            t2 = time.perf_counter()
            visualize = config.visualize if req.visualize is None else req.visualize
            content = await run_in_threadpool(
                _encode_success, log_id, done.labels_hw, palette=palette, visualize=visualize,
                label_format=req.labelMapFormat,
            )
            t3 = time.perf_counter()
        timing = ", ".join(
            [
                f"read;dur={(t0 - started) * 1000:.2f}",
                f"decode;dur={(t1 - t0) * 1000:.2f}",
                f"queue;dur={max((t2 - t1) * 1000 - done.infer_ms, 0.0):.2f}",
                f'infer;dur={done.infer_ms:.2f};desc="batch of {done.batch_size}"',
                f"encode;dur={(t3 - t2) * 1000:.2f}",
                f"total;dur={(t3 - started) * 1000:.2f}",
            ]
        )
        return Response(content, media_type="application/json", headers={"Server-Timing": timing})

    @app.post(
        INFER_ENDPOINT,
        operation_id="infer",
        summary="Segment one image (PaddleX semantic-segmentation contract)",
        response_model=InferResponse,
        responses={
            s: {"model": NoResultResponse, "description": d}
            for s, d in (
                (401, "API key missing or wrong"),
                (411, "no Content-Length"),
                (408, "body not received within body_timeout_s"),
                (413, "body over max_body_bytes"),
                (
                    422,
                    "invalid input: bad base64, not an image, truncated or corrupt container, zero size, over "
                    "max_pixels or max_input_pixels, refused or slow URL",
                ),
                (503, "overloaded or timed out; see Retry-After"),
                (500, "server fault"),
            )
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
            }
        },
    )
    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        log_id = new_log_id()
        # The whole body first, outside admission: a slow sender holds a connection, never a slot.
        try:
            body = await asyncio.wait_for(request.body(), config.body_timeout_s)
        except TimeoutError:
            return error_response(
                408,
                f"the request body did not arrive within {config.body_timeout_s:g}s (body_timeout_s); "
                "send it faster or make it smaller.",
                headers={"Connection": "close"},
            )
        except ClientDisconnect:
            client = request.client
            LOG.info("client %s hung up before sending its whole body", f"{client.host}:{client.port}" if client else "?")
            return error_response(400, "client disconnected")
        ticket = batcher.try_admit()
        if ticket is None:
            return error_response(
                503,
                f"server is at capacity ({config.queue_size} requests in flight); retry after "
                f"{config.retry_after_s}s.",
                retry_after=config.retry_after_s,
            )
        try:
            return await asyncio.wait_for(handle(body, log_id, started, ticket), config.request_timeout_s)
        except TimeoutError:
            return error_response(
                503,
                f"request timed out after {config.request_timeout_s:g}s (server busy); retry later.",
                retry_after=config.retry_after_s,
            )
        except InputError as exc:
            return error_response(422, str(exc))
        except FastSegError as exc:
            LOG.error("segmenter error: %s", exc)
            return error_response(500, f"segmentation failed: {exc}")
        except Exception:
            LOG.exception("inference request %s failed", log_id)
            return error_response(500, "Internal server error")
        finally:
            batcher.release(ticket)

    @app.get("/health", operation_id="checkHealth", response_model=NoResultResponse)
    async def health() -> Response:
        body = orjson.dumps({"logId": new_log_id(), "errorCode": 0, "errorMsg": "Healthy"})
        return Response(body, media_type="application/json")

    @app.get("/info", operation_id="modelInfo")
    async def info() -> dict[str, Any]:
        stats = batcher.stats
        return {
            "modelName": meta.model_name,
            "weights": meta.provenance.get("weights"),
            "weightsNote": weights_note(meta),
            "numClasses": meta.num_classes,
            "classNames": list(meta.class_names),
            "palette": legend_rgb,
            "visualize": config.visualize,
            "authRequired": config.api_key is not None,
            "limits": {
                "maxBodyBytes": config.max_body_bytes,
                "maxPixels": max_pixels,
                "maxInputPixels": max_input_pixels,
                "decodeMemoryBytes": config.decode_memory_bytes,
                "bodyTimeoutS": config.body_timeout_s,
            },
            "decodeMemory": {"reservedBytes": budget.used, "waiting": budget.waiting},
            "batching": {
                "maxBatch": config.max_batch,
                "maxWaitMs": config.max_wait_ms,
                "batches": stats.batches,
                "images": stats.images,
                "maxBatchSeen": stats.max_batch_seen,
                "inFlight": batcher.admitted,
                "queued": batcher.queued,
            },
        }

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
