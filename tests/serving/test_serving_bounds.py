"""Serving with bounded cost (issue 21): decode bombs refused before decoding, work of timed-out
requests dropped, bodies counted before they are read, batches bounded in pixels, a header
deadline and a connection cap. Loopback only; every wait is bounded."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image

from fastseg.errors import InputError
from fastseg.model_dir import read_meta
from fastseg.serving import ServingConfig, ServingConfigError, create_app, decode_image_bytes
from fastseg.serving.decode_cost import MAX_JPEG_SCANS, MAX_PNG_CHUNKS
from fastseg.serving.server import uvicorn_config
from tests.serving_fixtures import (
    b64, free_port, live_server, png_bytes, quadrant_image, read_until_closed,
    GatedSegmenter, assert_error, wait_for,
)

ENDPOINT = "/semantic-segmentation"


def scan_bomb(scans: int, side: int = 64) -> bytes:
    """A valid progressive JPEG whose last AC scan is repeated until it has ``scans`` scans."""
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:last] + data[last:end] * (scans - data.count(b"\xff\xda") + 1) + data[end:]


def image_file(fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(quadrant_image(32, 32)[..., ::-1])).save(buf, fmt, **save)
    return buf.getvalue()


def png_with_chunks(count: int) -> bytes:
    """A real PNG with ``count`` empty private chunks before IEND (a chunk-walk cost bomb)."""
    data = png_bytes(quadrant_image(8, 8))
    iend = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    return data[:iend] + chunk * count + data[iend:]


def post(url: str, body: Any, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + ENDPOINT, json=body, timeout=timeout)


class NoDecode:
    """Stands in for ``decode_pixels``: any call is recorded (a refused bomb must never get here)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        raise AssertionError("decode_pixels called for an image that should have been refused")


# ------------------------------------------------------------------ decode bombs
def test_scan_bomb_jpeg_is_refused_before_decoding(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = scan_bomb(MAX_JPEG_SCANS + 1)
    with pytest.raises(InputError, match=rf"has {MAX_JPEG_SCANS + 1} scans, over the limit of {MAX_JPEG_SCANS}"):
        decode_image_bytes(bomb, max_pixels=40_000_000)
    spy = NoDecode()
    monkeypatch.setattr("fastseg.serving.handler.decode_pixels", spy)
    app = create_app(GatedSegmenter(read_meta(tiny_dir)), ServingConfig())
    with live_server(app) as url, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: post(url, {"image": b64(scan_bomb(100_000))}), range(4)))
    for resp in answers:
        body = assert_error(resp, 422, "100000 scans", "baseline JPEG")
        assert "\n" not in body["errorMsg"]
    assert spy.calls == 0  # refused from the marker count: no decode ran, none is left running


def test_ordinary_progressive_and_baseline_jpegs_still_decode() -> None:
    progressive = image_file("JPEG", progressive=True)
    assert 1 < progressive.count(b"\xff\xda") <= MAX_JPEG_SCANS
    assert decode_image_bytes(progressive, max_pixels=10_000).shape == (32, 32, 3)
    assert decode_image_bytes(scan_bomb(MAX_JPEG_SCANS), max_pixels=10_000).shape == (64, 64, 3)
    assert decode_image_bytes(image_file("JPEG"), max_pixels=10_000).shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (image_file("TIFF"), "not a readable image"),
        (
            image_file("WEBP", save_all=True, append_images=[Image.new("RGB", (32, 32), (80 * i, 0, 0)) for i in (1, 2)]),
            "animated (3 frames)",
        ),
        (png_with_chunks(MAX_PNG_CHUNKS + 10), f"over {MAX_PNG_CHUNKS} chunks"),
    ],
    ids=["tiff", "animated-webp", "png-chunks"],
)
def test_other_formats_out_of_proportion_are_refused(data: bytes, needle: str) -> None:
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        decode_image_bytes(data, max_pixels=10_000_000)


# ------------------------------------------------------------------ work of timed-out requests
def test_timed_out_request_never_runs_inference(tiny_dir: Path) -> None:
    """The first request holds the inference thread; the second waits in the queue, times out
    (503), and is dropped: when the thread frees up only new work runs."""
    stub = GatedSegmenter(read_meta(tiny_dir))
    app = create_app(stub, ServingConfig(request_timeout_s=0.5, max_wait_ms=0))
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(app) as url, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, body)
        wait_for(lambda: app.state.batcher.admitted == 1 and app.state.batcher.queued == 0)
        assert_error(post(url, body), 503, "timed out")
        assert_error(first.result(), 503, "timed out")
        stub.gate.set()
        assert post(url, body).status_code == 200
    assert stub.batches == [1, 1]  # the gated first one and the last one; the queued one never ran


def test_batches_are_bounded_in_pixels(tiny_dir: Path) -> None:
    """8x8 images (64 network pixels) with max_batch_pixels 128: five waiting requests run as
    batches of 2, 2 and 1 although max_batch is 8."""
    stub = GatedSegmenter(read_meta(tiny_dir))
    app = create_app(stub, ServingConfig(max_batch=8, max_wait_ms=0, max_batch_pixels=128))
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(app) as url, ThreadPoolExecutor(6) as pool:
        first = pool.submit(post, url, body)
        wait_for(lambda: app.state.batcher.admitted == 1 and app.state.batcher.queued == 0)
        rest = [pool.submit(post, url, body) for _ in range(5)]
        wait_for(lambda: app.state.batcher.queued == 5)
        stub.gate.set()
        assert [f.result().status_code for f in [first, *rest]] == [200] * 6
    assert stub.batches == [1, 2, 2, 1]


# ------------------------------------------------------------------ bodies, headers, connections
@contextmanager
def limited_server(app: FastAPI, config: ServingConfig) -> Iterator[tuple[str, int]]:
    """``app`` on uvicorn with ``fastseg serve``'s protocol limits; yields (url, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, config, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_bodies_are_counted_before_they_are_read(tiny_dir: Path) -> None:
    """Room for one 10 kB body: while a client announces 10 kB and stalls, the next body is
    refused 503 (naming body_memory_bytes) without being read; afterwards requests pass."""
    stub = GatedSegmenter(read_meta(tiny_dir))
    stub.gate.set()
    config = ServingConfig(max_body_bytes=10_000, body_memory_bytes=10_000, body_timeout_s=5.0)
    app = create_app(stub, config)
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n".encode())
            wait_for(lambda: app.state.handler.bodies.used == 10_000)
            resp = post(url, body)
            assert_error(resp, 503, "body_memory_bytes 10000")
            assert resp.headers["Retry-After"] == "1"
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408")
        wait_for(lambda: app.state.handler.bodies.used == 0)
        assert post(url, body).status_code == 200


def test_body_budget_must_fit_one_body() -> None:
    with pytest.raises(ServingConfigError, match="body_memory_bytes .* at least max_body_bytes"):
        ServingConfig(max_body_bytes=1_000_000, body_memory_bytes=500_000)


def test_headers_must_arrive_within_header_timeout(tiny_dir: Path) -> None:
    """A client sending its headers a byte at a time is cut off; a normal client is not."""
    config = ServingConfig(header_timeout_s=0.5)
    stub = GatedSegmenter(read_meta(tiny_dir))
    stub.gate.set()
    with limited_server(create_app(stub, config), config) as (url, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            closed = False
            for byte in b"POST /semantic-segmentation HTTP/1.1\r\nHost: 127.0.0.1\r\n":  # ~10 s at most
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
            assert closed or read_until_closed(sock) == b""  # cut off with no answer
        assert post(url, {"image": b64(png_bytes(quadrant_image(8, 8)))}).status_code == 200


def test_connections_over_the_limit_get_503_at_once(tiny_dir: Path) -> None:
    config = ServingConfig(max_connections=2)
    stub = GatedSegmenter(read_meta(tiny_dir))
    stub.gate.set()
    with limited_server(create_app(stub, config), config) as (url, port):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
                answer = read_until_closed(third)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower()
            assert b'"errorCode":503' in body and b"too many open connections (max_connections)" in body
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: httpx.get(url + "/health", timeout=5).status_code == 200)


def test_heap_is_trimmed_once_after_a_burst(tiny_dir: Path) -> None:
    stub = GatedSegmenter(read_meta(tiny_dir))
    stub.gate.set()
    app = create_app(stub, ServingConfig())
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(app) as url, ThreadPoolExecutor(4) as pool:
        assert [r.status_code for r in pool.map(lambda _: post(url, body), range(4))] == [200] * 4
        wait_for(lambda: app.state.handler.trimmer.trims >= 1)
        assert app.state.handler.trimmer.trims == 1


def test_heap_trim_waits_for_an_inference_that_outlived_its_request() -> None:
    """A timed-out request's inference may still run when the last answer is sent: the trim is
    put off until it ends, so the memory it frees is handed back too."""
    import asyncio

    from fastseg.serving.memory import IdleTrimmer

    working = [True]
    trimmer = IdleTrimmer(delay_s=0.05, still_working=lambda: working[0])

    async def scenario() -> tuple[int, int]:
        with ThreadPoolExecutor(1) as pool:
            trimmer.idle_if(True, pool)
            await asyncio.sleep(0.3)
            during = trimmer.trims
            working[0] = False
            for _ in range(100):  # bounded: 5 s at most
                if trimmer.trims:
                    break
                await asyncio.sleep(0.05)
            return during, trimmer.trims

    assert asyncio.run(scenario()) == (0, 1)


def test_the_serve_command_prints_fastseg_info_lines_at_its_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    """Hang-ups and cancelled batches are logged at INFO by fastseg.serving: the command's uvicorn
    set-up gives fastseg's loggers its handler and --log-level (else Python drops INFO lines)."""
    import logging

    from fastseg.serving.config import ServingConfig

    logger = logging.getLogger("fastseg")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    try:
        uvicorn_config(FastAPI(), ServingConfig(), host="127.0.0.1", port=0, log_level="info", with_fastseg_logs=True)
        logging.getLogger("fastseg.serving").info("client hung up while waiting: stopped")
        logging.getLogger("fastseg.serving").debug("below the level")
        err = capsys.readouterr().err
        assert "INFO:     client hung up while waiting: stopped" in err and "below the level" not in err
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
        logger.propagate = saved[2]
