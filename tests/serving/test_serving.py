"""fastseg serve: a real uvicorn server on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import base64
import http.server
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import pytest

from fastseg.errors import InputError
from fastseg.model_dir import ModelMeta, read_meta
from fastseg.serving import ServingConfig, ServingConfigError, UrlInputConfig, create_app, load_serving_config
from tests.serving_fixtures import (
    TINY_PALETTE,
    GatedSegmenter,
    assert_error,
    b64,
    live_server,
    png_bytes,
    quadrant_image,
    quadrant_labels,
    wait_for,
)

ENDPOINT = "/semantic-segmentation"
NOISE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
NOISE_PNG = png_bytes(NOISE)
NOISE_JPEG = cv2.imencode(".jpg", NOISE)[1].tobytes()


@pytest.fixture(scope="module")
def server(segmenter: Any) -> Iterator[str]:
    with live_server(create_app(segmenter, ServingConfig(max_pixels=40_000_000))) as url:
        yield url


def post(url: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(url + ENDPOINT, json=body, timeout=30, **kw)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (valid CRC) and holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    iend = b"IEND"
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0) + iend + struct.pack(">I", zlib.crc32(iend))
    )


# ------------------------------------------------------------------ success
def test_success_schema_field_by_field(server: str) -> None:
    resp = post(server, {"image": b64(png_bytes(quadrant_image(48, 64)))})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    timing = dict(part.strip().split(";dur=")[:2] for part in resp.headers["Server-Timing"].split(","))
    assert {"read", "decode", "queue", "infer", "encode", "total"} == set(timing)
    assert float(timing["total"].split(";")[0]) >= float(timing["infer"].split(";")[0]) > 0
    body = resp.json()
    assert set(body) == {"logId", "errorCode", "errorMsg", "result"}
    assert len(body["logId"]) == 36 and body["logId"].count("-") == 4  # uuid4
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success"
    result = body["result"]
    assert set(result) == {"labelMap", "size", "image"}
    assert result["size"] == [48, 64]
    labels = np.asarray(result["labelMap"])
    assert labels.shape == (48 * 64,)
    assert labels.min() >= 0 and labels.max() < 4
    np.testing.assert_array_equal(labels.reshape(48, 64), quadrant_labels(48, 64))
    colour = cv2.imdecode(np.frombuffer(base64.b64decode(result["image"]), np.uint8), cv2.IMREAD_COLOR)
    assert colour.shape == (48, 64, 3)
    # JPEG colour map: top-left quadrant is class 0's palette colour (RGB -> BGR), within JPEG error.
    np.testing.assert_allclose(colour[5, 5].astype(int), TINY_PALETTE[0][::-1], atol=12)
    np.testing.assert_allclose(colour[40, 50].astype(int), TINY_PALETTE[3][::-1], atol=12)


def test_paddlex_documented_client_works_unchanged(server: str, tmp_path: Path) -> None:
    """PaddleX's documented Python client, only API_URL changed."""
    import requests

    image_path = tmp_path / "demo.jpg"
    cv2.imwrite(str(image_path), quadrant_image(64, 96))
    output_image_path = tmp_path / "out.jpg"

    API_URL = server + "/semantic-segmentation"
    with open(image_path, "rb") as file:
        image_bytes = file.read()
        image_data = base64.b64encode(image_bytes).decode("ascii")
    payload = {"image": image_data}
    response = requests.post(API_URL, json=payload)
    assert response.status_code == 200
    result = response.json()["result"]
    with open(output_image_path, "wb") as file:
        file.write(base64.b64decode(result["image"]))

    written = cv2.imread(str(output_image_path))
    assert written.shape == (64, 96, 3)
    assert result["size"] == [64, 96] and len(result["labelMap"]) == 64 * 96


def test_compact_png_label_map(server: str) -> None:
    resp = post(server, {"image": b64(png_bytes(quadrant_image(30, 40))), "labelMapFormat": "png", "visualize": False})
    assert resp.status_code == 200
    result = resp.json()["result"]
    assert "labelMap" not in result and result["image"] is None and result["size"] == [30, 40]
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(result["labelMapPng"]), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, quadrant_labels(30, 40))


def test_url_data_prefix_and_jpeg_accepted(server: str) -> None:
    ok, jpeg = cv2.imencode(".jpg", quadrant_image(32, 32), [cv2.IMWRITE_JPEG_QUALITY, 100])
    resp = post(server, {"image": "data:image/jpeg;base64," + b64(jpeg.tobytes()), "visualize": False})
    assert resp.status_code == 200
    labels = np.asarray(resp.json()["result"]["labelMap"]).reshape(32, 32)
    assert (labels == quadrant_labels(32, 32)).mean() > 0.9  # JPEG edges may blur


def test_concurrent_requests_get_their_own_answers(server: str) -> None:
    sizes = [(20 + 4 * i, 24 + 2 * i) for i in range(8)] * 2

    def one(hw: tuple[int, int]) -> bool:
        resp = post(server, {"image": b64(png_bytes(quadrant_image(*hw))), "visualize": False})
        labels = np.asarray(resp.json()["result"]["labelMap"]).reshape(hw)
        return resp.status_code == 200 and bool((labels == quadrant_labels(*hw)).all())

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, sizes))


def test_health_info_and_openapi(server: str) -> None:
    health = httpx.get(server + "/health").json()
    assert health["errorCode"] == 0 and health["errorMsg"] == "Healthy" and "logId" in health
    info = httpx.get(server + "/info").json()
    assert info["modelName"] == "TinySeg" and info["classNames"] == ["red", "green", "blue", "dark"]
    assert_error(httpx.get(server + ENDPOINT), 405)
    assert_error(httpx.get(server + "/nope"), 404)
    spec = httpx.get(server + "/openapi.json").json()
    op = spec["paths"][ENDPOINT]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["image"]
    assert {"image", "targetSize", "visualize", "labelMapFormat"} <= set(schema["properties"])
    assert {"200", "422", "503"} <= set(op["responses"])


def test_page_and_assets_served_without_cdn(server: str) -> None:
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        assert httpx.get(server + asset).status_code == 200


# ------------------------------------------------------------------ invalid input -> 422
@pytest.mark.parametrize(
    ("image", "needle"),
    [
        ("not base64 at all!!", "base64"),
        ("", "at least 1 character"),
        (b64(b"hello, this is text not an image"), "not a readable image"),
        (b64(NOISE_PNG[: len(NOISE_PNG) // 2]), "truncated"),
        (b64(NOISE_JPEG[: len(NOISE_JPEG) // 2]), "truncated"),
        (b64(png_header(0, 10)), "not a readable image"),
        (b64(png_header(8000, 8000)), "over this server's limit of 40000000 (max_pixels)"),
        (b64(png_header(100_000, 100_000)), "too many pixels, over this server's limit of 40000000 (max_pixels)"),
    ],
    ids=["bad-base64", "empty", "non-image", "truncated-png", "truncated-jpeg", "zero-size", "over-pixel-limit", "decompression-bomb"],
)
def test_invalid_images_are_422(server: str, image: str, needle: str) -> None:
    body = assert_error(post(server, {"image": image}), 422, needle)
    assert "178956970" not in body["errorMsg"]  # Pillow's own bomb limit is not this server's
    # the worker survived: a good request still works
    assert post(server, {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}).status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "image"),
        ({"image": 5}, "image"),
        ({"image": "x", "targetSize": 0}, "targetSize"),
        ({"image": "x", "targetSize": [-1, 64]}, "targetSize"),
        ({"image": "x", "targetSize": [100000, 64]}, "targetSize"),
        ({"image": "x", "targetSize": [1, 2, 3]}, "targetSize"),
        ({"image": "x", "labelMapFormat": "gif"}, "labelMapFormat"),
    ],
)
def test_invalid_bodies_are_422(server: str, body: dict[str, Any], needle: str) -> None:
    assert_error(post(server, body), 422, needle)


def test_not_json_is_422(server: str) -> None:
    resp = httpx.post(server + ENDPOINT, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(resp, 422, "invalid request body")


# ------------------------------------------------------------------ limits and auth
def test_body_limit_and_chunked(segmenter: Any) -> None:
    with live_server(create_app(segmenter, ServingConfig(max_body_bytes=10_000))) as url:
        big = {"image": b64(np.random.default_rng(0).bytes(20_000))}
        assert_error(post(url, big), 413, "over the limit of 10000 bytes (max_body_bytes)")

        def chunks() -> Iterator[bytes]:
            yield b'{"image": "'
            yield b'"}'

        assert httpx.post(url + ENDPOINT, content=chunks()).status_code == 422  # chunked: read, then judged
        assert post(url, {"image": b64(png_bytes(quadrant_image(8, 8)))}).status_code == 200


def test_api_key(segmenter: Any) -> None:
    with live_server(create_app(segmenter, ServingConfig(api_key="s3cret-key"))) as url:
        good = {"image": b64(png_bytes(quadrant_image(8, 8)))}
        resp = assert_error(post(url, good), 401, "API key")
        assert resp["errorCode"] == 401
        assert_error(post(url, good, headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(post(url, good, headers={"Authorization": "Basic s3cret-key"}), 401)
        assert post(url, good, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert httpx.get(url + "/health").status_code == 200  # health stays open


def test_visualize_off_in_config(segmenter: Any) -> None:
    with live_server(create_app(segmenter, ServingConfig(visualize=False, allow_compact_format=False))) as url:
        resp = post(url, {"image": b64(png_bytes(quadrant_image(8, 8)))})
        assert resp.status_code == 200 and resp.json()["result"]["image"] is None
        compact = post(url, {"image": b64(png_bytes(quadrant_image(8, 8))), "labelMapFormat": "png"})
        assert_error(compact, 422, "disabled")


# ------------------------------------------------------------------ URL inputs and SSRF
class _ImageHandler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def image_host() -> Iterator[str]:
    """A local http.server on 127.0.0.1 serving one PNG; yields its URL."""
    handler = type("H", (_ImageHandler,), {"payload": png_bytes(quadrant_image(24, 24))})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/img.png"
    httpd.shutdown()
    httpd.server_close()


def test_url_inputs_disabled_by_default(server: str, image_host: str) -> None:
    assert_error(post(server, {"image": image_host}), 422, "URL inputs are disabled")


def test_url_allowed_host_with_private_explicitly_allowed(segmenter: Any, image_host: str) -> None:
    urls = UrlInputConfig(allowed_hosts=("127.0.0.1",), allow_private_addresses=True)
    with live_server(create_app(segmenter, ServingConfig(url_inputs=urls))) as url:
        resp = post(url, {"image": image_host, "visualize": False})
        assert resp.status_code == 200, resp.text
        labels = np.asarray(resp.json()["result"]["labelMap"]).reshape(24, 24)
        np.testing.assert_array_equal(labels, quadrant_labels(24, 24))
        assert_error(post(url, {"image": "http://example.invalid/x.png"}), 422, "not allowed")


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:9/x.png", "http://10.1.2.3/x.png", "http://169.254.169.254/latest/meta-data",
     "http://[::1]:9/x.png", "http://localhost:9/x.png", "http://192.168.0.1/x.png", "http://[::ffff:127.0.0.1]/x"],
)
def test_ssrf_private_addresses_refused(segmenter: Any, target: str) -> None:
    urls = UrlInputConfig(allowed_hosts=("*",), allow_private_addresses=False)
    with live_server(create_app(segmenter, ServingConfig(url_inputs=urls))) as url:
        assert_error(post(url, {"image": target}), 422, "refused")


MALFORMED_URLS = (
    "http://[x]/", "http://[::1", "http://a]b/", "HTTPS://[", "http://u:p@[x/", "http://[::1]:99999/", "http://a:b/",
    "http://exa mple/", "http://a/\x00", "http://a\r\nb/", "http://é.example/", "http://a/é", "http:///x",
)


def test_malformed_urls_are_422_with_one_line(server: str, segmenter: Any) -> None:
    """urllib's ValueError (``http://[x]/``, ``[::1``, ``a]b``, bad ports) and httpcore's TypeError
    (non-ASCII) were 500s with a traceback, URL inputs on or off; now each is a one-line 422."""
    urls = UrlInputConfig(allowed_hosts=("*",), allow_private_addresses=False)
    with live_server(create_app(segmenter, ServingConfig(url_inputs=urls))) as url_on:
        for target in MALFORMED_URLS:
            off = assert_error(post(server, {"image": target}), 422, "URL inputs are disabled")
            on = assert_error(post(url_on, {"image": target}), 422, "'image' URL")
            assert "\n" not in off["errorMsg"] and "\n" not in on["errorMsg"], (target, on["errorMsg"])
        long_url = "http://a/" + "b" * 9000
        assert_error(post(url_on, {"image": long_url}), 422, "at most 8192")


# ------------------------------------------------------------------ concurrency: overload, timeout, faults
def test_overload_answers_503_with_retry_after(tiny_dir: Path) -> None:
    stub = GatedSegmenter(read_meta(tiny_dir))
    app = create_app(stub, ServingConfig(queue_size=2, max_batch=1))
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(app) as url, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, url, body) for _ in range(2)]
        wait_for(lambda: app.state.batcher.admitted == 2)
        resp = post(url, body)
        assert_error(resp, 503, "capacity")
        assert "queue_size" in resp.json()["errorMsg"]  # the setting to raise
        assert resp.headers["Retry-After"] == "1"
        stub.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert post(url, body).status_code == 200  # capacity is given back


def test_dynamic_batching_groups_waiting_requests(tiny_dir: Path) -> None:
    stub = GatedSegmenter(read_meta(tiny_dir))
    app = create_app(stub, ServingConfig(max_batch=8, max_wait_ms=0))
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(app) as url, ThreadPoolExecutor(6) as pool:
        first = pool.submit(post, url, body)
        wait_for(lambda: app.state.batcher.admitted == 1 and app.state.batcher.queued == 0)
        rest = [pool.submit(post, url, body) for _ in range(5)]
        wait_for(lambda: app.state.batcher.queued == 5)  # all five wait behind the gated first call
        stub.gate.set()
        assert all(f.result().status_code == 200 for f in [first, *rest])
    assert stub.batches == [1, 5]


def test_request_timeout_is_503(tiny_dir: Path) -> None:
    stub = GatedSegmenter(read_meta(tiny_dir))
    with live_server(create_app(stub, ServingConfig(request_timeout_s=0.3))) as url:
        resp = post(url, {"image": b64(png_bytes(quadrant_image(8, 8)))})
        assert_error(resp, 503, "timed out")
        assert "request_timeout_s" in resp.json()["errorMsg"]
        assert "Retry-After" in resp.headers
        stub.gate.set()


def test_segmenter_faults_are_500_and_worker_survives(tiny_dir: Path) -> None:
    stub = GatedSegmenter(read_meta(tiny_dir))
    stub.gate.set()
    body = {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}
    with live_server(create_app(stub, ServingConfig())) as url:
        stub.fail_with = RuntimeError("boom")
        assert_error(post(url, body), 500, "Internal server error")
        stub.fail_with = InputError("image too small for this model")
        assert_error(post(url, body), 422, "too small")
        assert post(url, body).status_code == 200


# ------------------------------------------------------------------ config file
def test_load_serving_config(tmp_path: Path) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(
        "Serving:\n  visualize: false\n  max_batch: 4\n  api_key: abc\n"
        "  url_inputs:\n    allowed_hosts: [Images.Example.com]\n",
        encoding="utf-8",
    )
    config = load_serving_config(path)
    assert config.visualize is False and config.max_batch == 4 and config.api_key == "abc"
    assert config.url_inputs.allowed_hosts == ("images.example.com",)
    assert config.url_inputs.allow_private_addresses is False
    path.write_text("Serving:\n  max_batchh: 4\n", encoding="utf-8")
    with pytest.raises(ServingConfigError, match="unknown key.*max_batchh"):
        load_serving_config(path)
    path.write_text("max_batch: 0\n", encoding="utf-8")
    with pytest.raises(ServingConfigError, match="max_batch must be > 0"):
        load_serving_config(path)


# ------------------------------------------------------------------ CLI
def test_cli_serve_runs_uvicorn_with_config(tiny_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.serving_fixtures import free_port, wait_for_health

    config = tmp_path / "serving.yaml"
    config.write_text("Serving:\n  visualize: false\n  max_batch: 2\n", encoding="utf-8")
    port = free_port()
    env = {**os.environ, "FASTSEG_API_KEY": "k3y"}
    cmd = [sys.executable, "-m", "fastseg", "serve", "--model", str(tiny_dir), "--port", str(port),
           "--config", str(config), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, proc)
        body = {"image": b64(png_bytes(quadrant_image(16, 16)))}
        assert_error(post(url, body), 401)
        resp = post(url, body, headers={"Authorization": "Bearer k3y"})
        assert resp.status_code == 200 and resp.json()["result"]["image"] is None  # config: visualize off
        assert httpx.get(url + "/info").json()["batching"]["maxBatch"] == 2
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert "fastseg serve: TinySeg (fp32, ort) on http://127.0.0.1:" in out


@pytest.mark.parametrize("target", [16, [32, 24], -1])
def test_target_size_keeps_source_size(server: str, target: Any) -> None:
    resp = post(server, {"image": b64(png_bytes(quadrant_image(48, 64))), "targetSize": target, "visualize": False})
    assert resp.status_code == 200, resp.text
    result = resp.json()["result"]
    assert result["size"] == [48, 64]
    labels = np.asarray(result["labelMap"]).reshape(48, 64)
    assert (labels == quadrant_labels(48, 64)).mean() > 0.85  # resized there and back: edges may move


def test_lone_request_does_not_wait_for_a_batch(segmenter: Any) -> None:
    """max_wait_ms only applies while other admitted requests could join: a single request with
    a 10 s batch window still answers well inside a 5 s request timeout."""
    config = ServingConfig(max_batch=8, max_wait_ms=10_000, request_timeout_s=5)
    with live_server(create_app(segmenter, config)) as url:
        for _ in range(2):
            assert post(url, {"image": b64(png_bytes(quadrant_image(8, 8))), "visualize": False}).status_code == 200
