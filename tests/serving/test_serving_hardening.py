"""Serving under hostile traffic (issue 13): decompression bombs, targetSize amplification, slow
senders, dripping URL sources, hang-ups. All traffic goes to 127.0.0.1; every loop is bounded."""

from __future__ import annotations

import http.server
import logging
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fastseg.errors import InputError
from fastseg.model_dir import read_meta
from fastseg.serving import ServingConfig, ServingConfigError, UrlInputConfig, create_app, decode_image_bytes
from fastseg.fetch import fetch_bytes
from tests.serving_fixtures import (
    b64, free_port, live_server, png_bytes, quadrant_image, read_until_closed, wait_for_health,
    GatedSegmenter, assert_error, wait_for,
)

ENDPOINT = "/semantic-segmentation"


def png_bomb() -> bytes:
    """A small real PNG whose first IDAT length field says 0xFFFFFFFF (OpenCV 5 then allocates ~4 GB)."""
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = bytearray(png_bytes(noise))
    at = data.find(b"IDAT")
    data[at - 4 : at] = b"\xff\xff\xff\xff"
    return bytes(data)


def post(url: str, body: Any, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + ENDPOINT, json=body, timeout=timeout)


GOOD = {"image": b64(png_bytes(quadrant_image(48, 64))), "visualize": False}


# ------------------------------------------------------------------ 1. decompression bomb
def test_png_bomb_is_refused_from_its_chunk_lengths() -> None:
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"'IDAT' chunk at byte \d+ declares 4294967295 bytes"):
        decode_image_bytes(png_bomb(), max_pixels=40_000_000)
    assert time.perf_counter() - started < 1.0  # refused from the container, never decoded


def test_png_chunk_walk_keeps_good_pngs_and_refuses_truncated_ones() -> None:
    good = png_bytes(quadrant_image(30, 40))
    assert decode_image_bytes(good, max_pixels=10_000).shape == (30, 40, 3)
    assert decode_image_bytes(good + b"trailing junk", max_pixels=10_000).shape == (30, 40, 3)
    with pytest.raises(InputError, match="truncated"):
        decode_image_bytes(good[:-12], max_pixels=10_000)  # IEND cut off


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_server_peak_rss_stays_flat_under_bombs_and_huge_target_sizes(tiny_dir: Path, tmp_path: Path) -> None:
    """`fastseg serve` in its own process: 4 PNG bombs and 4 targetSize [8000, 4000] requests at
    once raise its peak RSS (VmHWM) by less than 100 MB (each bomb alone cost 4 GB before the fix,
    each huge targetSize 3.4 GB), all answered 422, and a normal request still gets 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "fastseg", "serve", "--model", str(tiny_dir), "--port", str(port),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc)
        assert post(url, GOOD).status_code == 200  # warm: sessions, buffers, thread pool
        baseline = _vm_hwm_mb(proc.pid)
        bomb = {"image": b64(png_bomb())}
        huge = {"image": b64(png_bytes(quadrant_image(48, 64))), "targetSize": [8000, 4000]}
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: post(url, body), [bomb, huge] * 4))
        for resp, needle in zip(answers, ["declares 4294967295 bytes", "max_input_pixels"] * 4):
            assert_error(resp, 422, needle)
        grown = _vm_hwm_mb(proc.pid) - baseline
        assert grown < 100, f"peak RSS grew by {grown:.0f} MB"
        assert post(url, GOOD).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_decode_memory_budget_makes_large_images_wait(tiny_dir: Path) -> None:
    """Room for two 64x64 decoded images: a third waits (admitted, holding nothing) until one
    answer is written, then completes."""
    stub = GatedSegmenter(read_meta(tiny_dir))
    one = 64 * 64 * 3
    app = create_app(stub, ServingConfig(max_pixels=64 * 64, decode_memory_bytes=2 * one, max_batch=1))
    body = {"image": b64(png_bytes(quadrant_image(64, 64))), "visualize": False}
    with live_server(app) as url, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, url, body) for _ in range(3)]
        wait_for(lambda: app.state.budget.used == 2 * one and app.state.budget.waiting == 1)
        assert app.state.batcher.admitted == 3
        info = httpx.get(url + "/info").json()
        assert info["decodeMemory"] == {"reservedBytes": 2 * one, "waiting": 1}
        stub.gate.set()
        assert [f.result().status_code for f in futures] == [200, 200, 200]
        assert app.state.budget.used == 0


def test_decode_budget_must_fit_one_image_at_the_pixel_limit() -> None:
    with pytest.raises(ServingConfigError, match="decode_memory_bytes .* at least 3 \\* max_pixels"):
        ServingConfig(max_pixels=1_000_000, decode_memory_bytes=2_000_000)


# ------------------------------------------------------------------ 2. targetSize amplification
@pytest.mark.parametrize(
    ("target", "hw", "needle"),
    [
        ([8000, 4000], (48, 64), "targetSize [8000, 4000] on this 64x48 image gives a 5344x4000"),
        (-1, (300, 400), "targetSize -1 on this 400x300 image gives a 400x300 network input"),
        (None, (300, 400), "the model's own Resize on this 400x300 image"),
    ],
)
def test_network_input_size_has_its_own_limit(segmenter: Any, target: Any, hw: tuple[int, int], needle: str) -> None:
    with live_server(create_app(segmenter, ServingConfig(max_input_pixels=100_000))) as url:
        body = {"image": b64(png_bytes(quadrant_image(*hw))), "targetSize": target}
        assert_error(post(url, body), 422, needle, "max_input_pixels of 100000")
        small = {"image": b64(png_bytes(quadrant_image(48, 64))), "targetSize": [128, 96], "visualize": False}
        assert post(url, small).status_code == 200  # 128x96 = 12288 pixels


# ------------------------------------------------------------------ 3. slow senders
def _slow_sender(port: int, content_length: int, drips: int, interval: float) -> bytes:
    """Send the headers, then one body byte every ``interval`` s (``drips`` at most); return the
    server's answer (read until it closes or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {ENDPOINT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {content_length}\r\n\r\n".encode()
        )
        for _ in range(drips):
            try:
                sock.sendall(b" ")
            except OSError:
                break  # the server answered and closed
            time.sleep(interval)
        return read_until_closed(sock)


def test_slow_senders_hold_no_admission_slot(segmenter: Any) -> None:
    """8 connections dripping a byte every 0.2 s (queue_size is 4): normal requests are answered
    200 at once, nothing is admitted for the slow ones, and each gets 408 at body_timeout_s."""
    app = create_app(segmenter, ServingConfig(queue_size=4, body_timeout_s=2.0))
    with live_server(app) as url, ThreadPoolExecutor(8) as pool:
        port = int(url.rsplit(":", 1)[1])
        slow = [pool.submit(_slow_sender, port, 10_000, 25, 0.2) for _ in range(8)]
        time.sleep(0.5)
        for _ in range(3):
            started = time.perf_counter()
            assert post(url, GOOD, timeout=5).status_code == 200
            assert time.perf_counter() - started < 2.0
            assert app.state.batcher.admitted == 0
        answers = [f.result(timeout=30) for f in slow]
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout_s" in answer


def test_client_hanging_up_mid_body_logs_one_quiet_line(segmenter: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastseg.serving")
    with live_server(create_app(segmenter, ServingConfig())) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                f"POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".encode() + b'{"image": "'
            )
            time.sleep(0.3)
        wait_for(lambda: any("hung up" in r.getMessage() for r in caplog.records), timeout=10)
        assert post(url, GOOD).status_code == 200
    serving = [r for r in caplog.records if r.name == "fastseg.serving"]
    assert [r.levelno for r in serving] == [logging.INFO]
    assert serving[0].exc_info is None and "before sending its whole body" in serving[0].getMessage()


# ------------------------------------------------------------------ 4. URL fetch deadline
class _DripHandler(http.server.BaseHTTPRequestHandler):
    """Promises 200 bytes, sends one every 0.1 s; records when the client stopped listening."""

    closed_at: list[float] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "200")
        self.end_headers()
        for _ in range(200):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                self.closed_at.append(time.monotonic())
                return
            time.sleep(0.1)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def drip_host() -> Iterator[tuple[str, list[float]]]:
    closed: list[float] = []
    handler = type("Drip", (_DripHandler,), {"closed_at": closed})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/drip.png", closed
    httpd.shutdown()
    httpd.server_close()


def test_fetch_deadline_bounds_the_whole_download(drip_host: tuple[str, list[float]]) -> None:
    url, _ = drip_host
    started = time.monotonic()
    with pytest.raises(InputError, match="did not finish within 1.0s"):
        fetch_bytes(url, deadline=started + 1.0, max_bytes=10_000)  # each read alone takes only 0.1 s
    assert time.monotonic() - started < 1.5


def test_url_fetch_ends_with_its_request(segmenter: Any, drip_host: tuple[str, list[float]]) -> None:
    """url_inputs.timeout_s is 30 s, but the request's own 1.5 s deadline stops the download:
    the source sees its connection closed within ~2 s, not after its 20 s of dripping."""
    url_src, closed = drip_host
    urls = UrlInputConfig(allowed_hosts=("127.0.0.1",), allow_private_addresses=True, timeout_s=30)
    with live_server(create_app(segmenter, ServingConfig(url_inputs=urls, request_timeout_s=1.5))) as url:
        started = time.monotonic()
        resp = post(url, {"image": url_src})
        assert resp.status_code in (422, 503), resp.text
        wait_for(lambda: bool(closed), timeout=5)
        assert closed[0] - started < 3.0


# ------------------------------------------------------------------ 5. protocol details
def test_405_names_the_allowed_method_and_schema_refuses_empty_image(segmenter: Any) -> None:
    with live_server(create_app(segmenter, ServingConfig())) as url:
        resp = httpx.get(url + ENDPOINT)
        assert_error(resp, 405)
        assert resp.headers["Allow"] == "POST"
        spec = httpx.get(url + "/openapi.json").json()
        schema = spec["paths"][ENDPOINT]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["image"]["minLength"] == 1
        assert "408" in spec["paths"][ENDPOINT]["post"]["responses"]


def test_docs_pages_use_packaged_assets_only(segmenter: Any) -> None:
    with live_server(create_app(segmenter, ServingConfig())) as url:
        for page in ("/docs", "/redoc"):
            html = httpx.get(url + page).text
            assert "cdn" not in html.lower() and "https://" not in html
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            resp = httpx.get(f"{url}/static-docs/{asset}")
            assert resp.status_code == 200 and len(resp.content) > 100_000


def test_new_limits_load_from_the_config_file(tmp_path: Path) -> None:
    from fastseg.serving import load_serving_config

    path = tmp_path / "serving.yaml"
    path.write_text("max_input_pixels: 1000\ndecode_memory_bytes: 130000000\nbody_timeout_s: 5\n", encoding="utf-8")
    config = load_serving_config(path)
    assert (config.max_input_pixels, config.decode_memory_bytes, config.body_timeout_s) == (1000, 130_000_000, 5.0)
    path.write_text("body_timeout_s: 0\n", encoding="utf-8")
    with pytest.raises(ServingConfigError, match="body_timeout_s must be > 0"):
        load_serving_config(path)
