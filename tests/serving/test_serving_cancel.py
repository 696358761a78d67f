"""A request's work stops with the request (issue 21): a batch whose requests all timed out or
hung up has its engine run cancelled, so the inference thread is free for the next request; and
a chunked body is accepted, counted as it streams, and refused with 413 the moment it passes
``max_body_bytes``. Loopback only; every wait is bounded."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tiny_models import slow_model_dir

from fastseg.serving import ServingConfig, create_app
from tests.serving_fixtures import (
    assert_error, b64, build_tiny_model_dir, live_server, png_bytes, quadrant_image, quadrant_labels,
    read_until_closed, wait_for,
)

Segmenter = pytest.importorskip("fastseg.segmenter").Segmenter
ENDPOINT = "/semantic-segmentation"


def blue_png(side: int) -> bytes:
    img = np.zeros((side, side, 3), np.uint8)
    img[..., 0] = 200  # BGR blue -> class 2
    return png_bytes(img)


def info(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/info", timeout=10).json()["batching"])


def small_request_answers(url: str) -> None:
    """A 16x16 image (4 loop steps): answered 200 within the server's short request_timeout_s only
    when the inference thread is not still busy with an abandoned run (which takes minutes)."""
    resp = httpx.post(url + ENDPOINT, json={"image": b64(blue_png(16)), "visualize": False}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"]["labelMap"] == [2] * 256


@contextmanager
def slow_server(root: Path, request_timeout_s: float) -> Iterator[str]:
    seg = Segmenter(slow_model_dir(root / "slow"))
    try:
        with live_server(create_app(seg, ServingConfig(request_timeout_s=request_timeout_s, visualize=False))) as url:
            yield url
    finally:
        seg.close()


def test_a_timed_out_request_stops_its_inference_and_frees_the_worker(tmp_path: Path) -> None:
    with slow_server(tmp_path, 3) as url:
        _timed_out_request_stops(url)


def _timed_out_request_stops(url: str) -> None:
    resp = httpx.post(url + ENDPOINT, json={"image": b64(blue_png(1024))}, timeout=60)  # minutes of work
    assert_error(resp, 503, "timed out after 3s")
    wait_for(lambda: info(url)["cancelled"] == 1, timeout=60)
    small_request_answers(url)
    assert info(url)["cancelled"] == 1 and info(url)["inFlight"] == 0


def test_a_client_that_hangs_up_stops_its_inference(tmp_path: Path) -> None:
    with slow_server(tmp_path, 600) as url:  # no timeout can be what stops it
        _hang_up_stops(url)


def _hang_up_stops(url: str) -> None:
    body = b'{"image": "' + b64(blue_png(1024)).encode() + b'"}'
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST " + ENDPOINT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        wait_for(lambda: info(url)["inFlight"] == 1, timeout=30)
    wait_for(lambda: info(url)["cancelled"] == 1, timeout=60)
    small_request_answers(url)


def _chunked(port: int, pieces: list[bytes]) -> bytes:
    """POST ``pieces`` as HTTP/1.1 chunks (no Content-Length) on a raw socket; the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST " + ENDPOINT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for piece in pieces:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if sum(map(len, pieces)) <= 4000:
            sock.sendall(b"0\r\n\r\n")
        return read_until_closed(sock)


def test_chunked_bodies_are_accepted_and_cut_off_at_the_limit(tmp_path: Path) -> None:
    seg = Segmenter(build_tiny_model_dir(tmp_path / "tiny"))
    try:
        with live_server(create_app(seg, ServingConfig(max_body_bytes=4000, visualize=False))) as url:
            port = int(url.rsplit(":", 1)[1])
            body = b'{"image": "' + b64(png_bytes(quadrant_image(8, 8))).encode() + b'"}'
            assert len(body) < 4000
            answer = _chunked(port, [body[:10], body[10:50], body[50:]])
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            assert b'"labelMap":' + str(quadrant_labels(8, 8).ravel().tolist()).replace(" ", "").encode() in answer
            # over the limit: refused as soon as the count passes 4000, the rest is never read
            answer = _chunked(port, [b'{"image": "' + b"A" * 1500, b"A" * 1500, b"A" * 1500])
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413 "), answer[:200]
            assert payload.count(b"\n") == 0 and b"chunked request body is over the limit of 4000 bytes" in payload
            assert httpx.get(url + "/info", timeout=10).json()["batching"]["inFlight"] == 0
    finally:
        seg.close()
