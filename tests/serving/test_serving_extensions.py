"""fastseg's opt-in request fields (``scores``, ``overlay``): PaddleX's response stays byte for
byte without them, and each one adds its key only when asked, with the tiny model's known values."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from fastseg.results import overlay
from fastseg.serving import ServingConfig, create_app
from tests.serving_fixtures import (
    TINY_PALETTE,
    assert_error,
    b64,
    build_tiny_model_dir,
    live_server,
    png_bytes,
    quadrant_image,
    quadrant_labels,
    tiny_scores,
)

Segmenter = pytest.importorskip("fastseg.segmenter").Segmenter
ENDPOINT = "/semantic-segmentation"
IMAGE = quadrant_image(30, 40)
IMAGE[:15, :20, 0] = np.arange(20, dtype=np.uint8)[None] * 12  # blue into the red quadrant: varied scores, same labels
PAYLOAD = {"image": b64(png_bytes(IMAGE))}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(a default server, a server with 'scores: true'), both on the tiny model's logits variant."""
    model = build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "TinyLogits", logits=True)
    with Segmenter(model, device="cpu") as plain, Segmenter(model, device="cpu", scores=True) as scored:
        with live_server(create_app(plain, ServingConfig())) as url_plain, \
                live_server(create_app(scored, ServingConfig(scores=True))) as url_scored:
            yield url_plain, url_scored


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + ENDPOINT, json=body, timeout=30)


def _without_log_id(resp: httpx.Response) -> bytes:
    body = json.loads(resp.content)
    return resp.content.replace(body["logId"].encode(), b"LOG")


def test_default_response_is_paddlex_byte_for_byte(servers: tuple[str, str]) -> None:
    plain, scored = servers
    answers = [post(url, PAYLOAD) for url in (plain, scored)]
    assert [r.status_code for r in answers] == [200, 200]
    assert _without_log_id(answers[0]) == _without_log_id(answers[1])  # a scoring server answers the same
    body = answers[1].json()
    assert list(body) == ["logId", "errorCode", "errorMsg", "result"]
    assert list(body["result"]) == ["labelMap", "size", "image"]  # the exact keys, in PaddleX's order
    unknown = post(scored, {**PAYLOAD, "someFutureField": 1, "visualize": True})  # unknown fields: ignored as before
    assert unknown.status_code == 200 and list(unknown.json()["result"]) == ["labelMap", "size", "image"]


def test_scores_field_returns_the_confidence_png(servers: tuple[str, str]) -> None:
    _, scored = servers
    result = post(scored, {**PAYLOAD, "scores": True, "visualize": False}).json()["result"]
    assert list(result) == ["labelMap", "size", "image", "scoreMapPng"] and result["image"] is None
    grey = cv2.imdecode(np.frombuffer(base64.b64decode(result["scoreMapPng"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint8 and grey.shape == (30, 40)
    want = np.rint(tiny_scores(IMAGE) * 255)
    assert np.abs(grey.astype(int) - want).max() <= 1  # float16 scores, rounded to 0-255
    assert len(np.unique(grey)) > 4  # not a constant map
    np.testing.assert_array_equal(np.asarray(result["labelMap"]).reshape(30, 40), quadrant_labels(30, 40))


def test_overlay_field_returns_the_blend(servers: tuple[str, str]) -> None:
    plain, _ = servers
    for asked, alpha in ((0.7, 0.7), (True, 0.4)):
        result = post(plain, {**PAYLOAD, "overlay": asked}).json()["result"]
        assert list(result) == ["labelMap", "size", "image", "overlayImage"]
        got = cv2.imdecode(np.frombuffer(base64.b64decode(result["overlayImage"]), np.uint8), cv2.IMREAD_COLOR)
        want = overlay(IMAGE, quadrant_labels(30, 40), TINY_PALETTE, alpha)
        other = overlay(IMAGE, quadrant_labels(30, 40), TINY_PALETTE, 1.0 - alpha)
        error = np.abs(got.astype(int) - want).mean()  # JPEG's error (sharp quadrant edges, small image)
        assert got.shape == (30, 40, 3) and error < 8 and np.abs(got.astype(int) - other).mean() > 1.5 * error
    both = post(plain, {**PAYLOAD, "overlay": False}).json()["result"]
    assert list(both) == ["labelMap", "size", "image"]


@pytest.mark.parametrize(("body", "needle"), [
    ({"scores": True}, "start it with 'scores: true'"),
    ({"overlay": 1.5}, "overlay"),
    ({"scores": "yes please"}, "scores"),
])
def test_extension_errors_are_422(servers: tuple[str, str], body: dict[str, Any], needle: str) -> None:
    plain, _ = servers
    assert_error(post(plain, {**PAYLOAD, **body}), 422, needle)


def test_info_says_whether_scores_are_on(servers: tuple[str, str]) -> None:
    plain, scored = servers
    assert [httpx.get(url + "/info", timeout=10).json()["scores"] for url in (plain, scored)] == [False, True]


def test_scores_on_a_model_without_logits_is_a_clear_error(tmp_path: Path) -> None:
    with Segmenter(build_tiny_model_dir(tmp_path / "argmax"), device="cpu", scores=True) as seg, \
            live_server(create_app(seg, ServingConfig(scores=True))) as url:
        assert_error(post(url, {**PAYLOAD, "scores": True}), 422, "gives no scores")
