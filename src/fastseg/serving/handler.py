"""``InferenceHandler``: one inference request from its body to its answer, under fixed budgets.

Flow, all CPU work off the event loop: guard middleware (API key, Content-Length limit) -> the
body's Content-Length taken from ``body_memory_bytes`` (503 when bodies in flight would pass
it) -> the whole body, within ``body_timeout_s`` (408), so slow senders hold no slot ->
admission (``queue_size``; 503 + Retry-After when full) -> JSON parse, image header and decode
cost checks on the ``cpu_workers`` threads -> network input size check (``max_input_pixels``)
-> decoded-bytes reservation (``decode_memory_bytes``, waits) -> decode on the same threads ->
dynamic batch (``max_batch`` images, ``max_batch_pixels``) on the inference thread(s) -> JSON
encode on the ``cpu_workers`` threads. A request that times out, or whose client hangs up while
it waits for inference, cancels what has not started (its decode, its place in a batch) and,
once no request of its batch is left, the engine run itself (``CancelToken``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt
import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from fastseg.engines.session_base import CancelToken
from fastseg.errors import FastSegError, InputError
from fastseg.model_dir import ModelMeta
from fastseg.processing import network_hw
from fastseg.reference import weights_note
from fastseg.results import DEFAULT_OVERLAY_ALPHA, colorize, overlay, score_png
from fastseg.serving.batcher import Batcher, PredictFn, Prediction, RequestedSize, Ticket
from fastseg.serving.budget import ByteCounter, MemoryBudget
from fastseg.serving.config import ServingConfig
from fastseg.serving.guard import error_response, new_log_id
from fastseg.serving.inputs import ImageDecoder, ImageHeader, decode_pixels
from fastseg.serving.memory import IdleTrimmer
from fastseg.serving.schema import InferRequest, SegmenterLike, parse_request

LOG = logging.getLogger("fastseg.serving")

_JPEG_QUALITY = 90
_T = TypeVar("_T")

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
        max_batch_pixels=config.max_batch_pixels,
    )


def _labels_from_result(result: Any, image: npt.NDArray[np.uint8], num_classes: int) -> npt.NDArray[np.integer]:
    """``res["pred"]`` ([1,H,W] or [H,W]) -> HxW, checked against the source image size, in the
    smallest integer type that holds the class ids (a label map waiting for its encoder holds 1
    byte per pixel instead of 8; the JSON numbers are the same)."""
    pred = np.asarray(result["pred"])
    while pred.ndim > 2 and pred.shape[0] == 1:
        pred = pred[0]
    height, width = image.shape[:2]
    if pred.shape != (height, width):
        raise RuntimeError(f"segmenter returned a label map of shape {pred.shape} for a {height}x{width} image")
    small = np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else None
    if small is not None and pred.dtype.kind in "iu" and pred.itemsize > np.dtype(small).itemsize:
        return pred.astype(small)
    return pred


def _jpeg_b64(picture_bgr: npt.NDArray[np.uint8], what: str) -> str:
    ok, jpeg = cv2.imencode(".jpg", picture_bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding of the {what} failed")
    return base64.b64encode(jpeg.tobytes()).decode("ascii")


def _score_from_result(result: Any) -> npt.NDArray[np.floating] | None:
    """``res["score"]`` as HxW (float16 from a Segmenter), or None when it has none."""
    score = result.get("score") if isinstance(result, Mapping) else None
    if score is None:
        return None
    score = np.asarray(score)
    return score[0] if score.ndim == 3 else score


def _encode_success(
    log_id: str,
    labels_hw: npt.NDArray[np.integer],
    *,
    palette: Sequence[Sequence[int]] | None,
    visualize: bool,
    label_format: str,
    score_hw: npt.NDArray[np.floating] | None = None,
    overlay_on: tuple[npt.NDArray[np.uint8], float] | None = None,
) -> bytes:
    """PaddleX's success body; the fastseg extensions' keys (``scoreMapPng``, ``overlayImage``)
    come after PaddleX's, and only when given."""
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
        result["image"] = _jpeg_b64(colorize(labels_hw, palette, bgr=True), "colour map")
    if score_hw is not None:
        result["scoreMapPng"] = base64.b64encode(score_png(score_hw)).decode("ascii")
    if overlay_on is not None:
        result["overlayImage"] = _jpeg_b64(overlay(overlay_on[0], labels_hw, palette, overlay_on[1]), "overlay")
    body = {"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": result}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _check_network_input(meta: ModelMeta, target: RequestedSize, header: ImageHeader, limit: int) -> int:
    """Network-input pixels for this image; refuse over ``limit`` (a small image, huge targetSize)."""
    height, width = network_hw(meta, (header.height, header.width), target)
    if height * width > limit:
        shown = list(target) if isinstance(target, tuple) else target  # as the client wrote it (JSON)
        asked = "the model's own Resize" if target is None else f"targetSize {shown!r}"
        raise InputError(
            f"{asked} on this {header.width}x{header.height} image gives a {width}x{height} network input "
            f"= {width * height} pixels, over this server's max_input_pixels of {limit}; send a smaller targetSize."
        )
    return height * width


def _check_options(req: InferRequest, config: ServingConfig) -> RequestedSize:
    if req.labelMapFormat == "png" and not config.allow_compact_format:
        raise InputError("labelMapFormat 'png' is disabled on this server (allow_compact_format: false).")
    if req.scores and not config.scores:
        raise InputError("\"scores\": true needs a server that computes scores: start it with 'scores: true' "
                         "in its serving YAML (fastseg serve --config).")
    target: RequestedSize = req.targetSize
    sides = () if target is None else (target,) * 2 if isinstance(target, int) else target
    if 0 in sides or (-1 in sides and len(set(sides)) > 1):
        raise InputError(f"targetSize {req.targetSize!r} is invalid: use sides > 0, or -1 for no resize.")
    return target


class _BodyRefused(Exception):
    """A streamed (chunked) body went over a limit while arriving: answer ``status`` at once."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, bodies: ByteCounter | None, max_bytes: int, held: list[int]) -> bytearray:
    """The whole body, without Starlette's copy cached on the request for its lifetime.

    ``bodies`` is given for a body without Content-Length (chunked): each piece is counted as it
    arrives, against ``max_bytes`` (413) and the ``bodies`` budget (503, ``held`` grows with
    what was taken), so nothing past either limit is ever buffered.
    """
    body = bytearray()
    async for chunk in request.stream():
        if bodies is not None and chunk:
            if len(body) + len(chunk) > max_bytes:
                raise _BodyRefused(413, f"chunked request body is over the limit of {max_bytes} bytes (max_body_bytes).")
            if not bodies.try_take(len(chunk)):
                raise _BodyRefused(503, f"server is reading {bodies.used} bytes of request bodies (body_memory_bytes); retry later.")
            held[0] += len(chunk)
        body += chunk
    return body


class _ClientGone(Exception):
    """The client closed its connection while its request waited for inference."""


async def _disconnected(request: Request) -> None:
    """Return once the client has closed its connection (call after the body is read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _while_connected(request: Request, work: Awaitable[_T]) -> _T:
    """``work``'s result; when the client hangs up first, ``work`` is cancelled (a batch whose
    requests are all gone is then stopped) and ``_ClientGone`` is raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise _ClientGone
        return task.result()
    finally:
        watch.cancel()
        task.cancel()


class InferenceHandler:
    """Serves ``POST /semantic-segmentation`` for one segmenter: budgets, batcher, CPU threads."""

    def __init__(
        self, segmenter: SegmenterLike, config: ServingConfig, batcher_factory: BatcherFactory | None = None
    ) -> None:
        self.config = config
        self.meta = segmenter.meta
        self._segmenter = segmenter
        self.palette = self.meta.palette or None
        # Sliding windows bound inference memory, so a slide segmenter accepts larger images.
        sliding = getattr(segmenter, "slide", None) is not None
        self.max_pixels = config.slide_max_pixels if sliding else config.max_pixels
        self.max_input_pixels = config.slide_max_pixels if sliding else config.max_input_pixels
        self.decoder = ImageDecoder(
            max_bytes=config.max_body_bytes, max_pixels=self.max_pixels, url_inputs=config.url_inputs
        )
        self.budget = MemoryBudget(config.decode_memory_bytes)
        self.bodies = ByteCounter(config.body_memory_bytes)
        self.batcher = (batcher_factory or default_batcher)(self._predict, config)
        self.trimmer = IdleTrimmer(still_working=lambda: self.batcher.running > 0)
        self._cpu: ThreadPoolExecutor | None = None
        self._open = 0  # requests between body reservation and answer

    def _predict(
        self, images: Sequence[npt.NDArray[np.uint8]], target_size: RequestedSize, cancel: CancelToken
    ) -> list[Prediction]:
        results = self._segmenter.predict_images(list(images), target_size=target_size, cancel=cancel)
        return [Prediction(_labels_from_result(r, img, self.meta.num_classes), _score_from_result(r))
                for r, img in zip(results, images)]

    async def start(self) -> None:
        """Start the CPU threads and the batcher (inside the running loop)."""
        self._cpu = ThreadPoolExecutor(max_workers=self.config.cpu_workers, thread_name_prefix="fastseg-cpu")
        await self.batcher.start()

    async def stop(self) -> None:
        """Stop the batcher, then the CPU threads (queued work is dropped)."""
        self.trimmer.cancel()
        await self.batcher.stop()
        if self._cpu is not None:
            self._cpu.shutdown(wait=True, cancel_futures=True)
            self._cpu = None

    async def _on_cpu(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``fn`` on the bounded CPU threads; cancelling the wait drops it if not yet started."""
        if self._cpu is None:
            raise RuntimeError("InferenceHandler.start() was not called (is the app's lifespan running?)")
        return await asyncio.get_running_loop().run_in_executor(self._cpu, partial(fn, *args, **kwargs))

    async def infer(self, request: Request) -> Response:
        """The endpoint: body (counted first), admission, then ``_handle`` within the deadline."""
        started = time.perf_counter()
        log_id = new_log_id()
        config = self.config
        declared = request.headers.get("content-length")  # the guard checked it; None: chunked
        length = 0 if declared is None else int(declared)
        if not self.bodies.try_take(length):
            return error_response(
                503,
                f"server is reading {self.bodies.used} bytes of request bodies (body_memory_bytes "
                f"{config.body_memory_bytes}); retry after {config.retry_after_s}s.",
                retry_after=config.retry_after_s,
                headers={"Connection": "close"},  # its body is never read
            )
        self._open += 1
        self.trimmer.busy()
        body_held = [length]
        try:
            return await self._admit_and_handle(request, started, log_id, body_held, chunked=declared is None)
        finally:
            self.bodies.give(body_held[0])
            self._open -= 1
            self.trimmer.idle_if(self._open == 0, self._cpu)

    async def _admit_and_handle(
        self, request: Request, started: float, log_id: str, body_held: list[int], *, chunked: bool
    ) -> Response:
        config = self.config
        # The whole body first, outside admission: a slow sender holds a connection, never a slot.
        try:
            body = await asyncio.wait_for(
                _read_body(request, self.bodies if chunked else None, config.max_body_bytes, body_held),
                config.body_timeout_s,
            )
        except _BodyRefused as exc:
            retry = config.retry_after_s if exc.status == 503 else None
            return error_response(exc.status, str(exc), retry_after=retry, headers={"Connection": "close"})
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
        ticket = self.batcher.try_admit()
        if ticket is None:
            return error_response(
                503,
                f"server is at capacity ({config.queue_size} requests in flight, queue_size); retry after "
                f"{config.retry_after_s}s.",
                retry_after=config.retry_after_s,
            )
        box = [body]  # handed over, so that this frame does not keep the body alive
        del body
        try:
            return await asyncio.wait_for(
                self._handle(request, box, log_id, started, ticket, body_held), config.request_timeout_s
            )
        except _ClientGone:
            LOG.info("client of request %s hung up while it waited for inference; its work was dropped", log_id)
            return error_response(400, "client disconnected")
        except TimeoutError:
            return error_response(
                503,
                f"request timed out after {config.request_timeout_s:g}s (request_timeout_s; server busy); retry later.",
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
            self.batcher.release(ticket)

    def _read(self, body: bytearray, deadline: float) -> tuple[InferRequest, RequestedSize, bytes, ImageHeader]:
        """Parse, check options, read the image bytes and header (no pixels): one CPU-thread call."""
        req = parse_request(body)
        target = _check_options(req, self.config)
        data, header = self.decoder.load(req.image, deadline=deadline)
        req.image = ""  # the base64 text is no longer needed
        return req, target, data, header

    async def _handle(
        self, request: Request, box: list[bytearray], log_id: str, started: float, ticket: Ticket, body_held: list[int]
    ) -> Response:
        config = self.config
        t0 = time.perf_counter()
        body = box.pop()
        # a URL fetch ends with the request (its thread is not left reading after the answer)
        fetch_deadline = time.monotonic() + max(config.request_timeout_s - (t0 - started), 0.0)
        req, target, data, header = await self._on_cpu(self._read, body, fetch_deadline)
        del body
        ticket.pixels = _check_network_input(self.meta, target, header, self.max_input_pixels)
        async with self.budget.reserve(header.decoded_bytes):
            image = await self._on_cpu(decode_pixels, data, header)
            del data
            self.bodies.give(body_held[0])  # the body and file bytes are gone: only pixels remain
            body_held[0] = 0
            t1 = time.perf_counter()
            submitted = self.batcher.submit(ticket, image, target)
            # a client that hangs up drops its place (and stops its batch once nobody else waits)
            done = await (_while_connected(request, submitted) if self.batcher.cancellable else submitted)
            if req.scores and done.score_hw is None:
                raise InputError(f"{self.meta.model_name} gives no scores: its graph ends in ArgMax and fastseg's banded "
                                 "head cannot reproduce its tail (docs/video.md); serve it with slide windows for scores.")
            alpha = DEFAULT_OVERLAY_ALPHA if req.overlay is True else None if req.overlay is False else req.overlay
            overlay_on = None if alpha is None else (image, float(alpha))
            del image
            t2 = time.perf_counter()
            visualize = config.visualize if req.visualize is None else req.visualize
            content = await self._on_cpu(
                _encode_success, log_id, done.labels_hw, palette=self.palette, visualize=visualize,
                label_format=req.labelMapFormat, score_hw=done.score_hw if req.scores else None, overlay_on=overlay_on,
            )
            del overlay_on
            infer_ms, batch_size = done.infer_ms, done.batch_size
            del done
            t3 = time.perf_counter()
        timing = ", ".join(
            [
                f"read;dur={(t0 - started) * 1000:.2f}",
                f"decode;dur={(t1 - t0) * 1000:.2f}",
                f"queue;dur={max((t2 - t1) * 1000 - infer_ms, 0.0):.2f}",
                f'infer;dur={infer_ms:.2f};desc="batch of {batch_size}"',
                f"encode;dur={(t3 - t2) * 1000:.2f}",
                f"total;dur={(t3 - started) * 1000:.2f}",
            ]
        )
        return Response(content, media_type="application/json", headers={"Server-Timing": timing})

    def info(self, legend_rgb: list[list[int]]) -> dict[str, Any]:
        """The ``/info`` body: model, legend, limits and live counters."""
        config, stats, batcher = self.config, self.batcher.stats, self.batcher
        return {
            "modelName": self.meta.model_name,
            "weights": self.meta.provenance.get("weights"),
            "weightsNote": weights_note(self.meta),
            "numClasses": self.meta.num_classes,
            "classNames": list(self.meta.class_names),
            "palette": legend_rgb,
            "visualize": config.visualize,
            "scores": config.scores,
            "authRequired": config.api_key is not None,
            "limits": {
                "maxBodyBytes": config.max_body_bytes,
                "maxPixels": self.max_pixels,
                "maxInputPixels": self.max_input_pixels,
                "decodeMemoryBytes": config.decode_memory_bytes,
                "bodyTimeoutS": config.body_timeout_s,
            },
            "decodeMemory": {"reservedBytes": self.budget.used, "waiting": self.budget.waiting},
            "batching": {
                "maxBatch": config.max_batch,
                "maxWaitMs": config.max_wait_ms,
                "batches": stats.batches,
                "images": stats.images,
                "maxBatchSeen": stats.max_batch_seen,
                "cancelled": stats.cancelled,
                "inFlight": batcher.admitted,
                "queued": batcher.queued,
            },
        }
