"""Helpers for the serving tests: a tiny converted model dir, test images, a live uvicorn server."""

from __future__ import annotations

import base64
import subprocess
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import uvicorn
from fastapi import FastAPI

from fastseg.model_dir import ONNX_FILE, ModelMeta, PreprocessSpec, write_meta

TINY_CLASSES = ("red", "green", "blue", "dark")
TINY_PALETTE = ((220, 20, 60), (0, 160, 0), (30, 60, 230), (40, 40, 40))


def build_tiny_model_dir(target: Path, *, logits: bool = False) -> Path:
    """A converted model: 1x1 Conv (logit c = channel c of the normalised RGB input, class 3 a
    constant 0.3) + ArgMax over classes, dynamic N/H/W. Red pixels -> 0, green -> 1, blue -> 2,
    black -> 3, so expected label maps are known exactly. ``logits``: the Conv's output is the
    model's (no ArgMax), so a Segmenter with ``scores=True`` gives scores (``tiny_scores``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((4, 3, 1, 1), dtype=np.float32)
    for c in range(3):
        weight[c, c, 0, 0] = 1.0
    bias = np.array([0.0, 0.0, 0.0, 0.3], dtype=np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["logits"])]
    if logits:
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4, "H", "W"])
    else:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        output = helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", "H", "W"])
    graph = helper.make_graph(
        nodes,
        "tiny_seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [output],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    target.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target / ONNX_FILE))
    write_meta(
        target,
        ModelMeta(
            model_name="TinySeg",
            input_name="x",
            output_kind="logits" if logits else "labels",
            num_classes=4,
            class_names=TINY_CLASSES,
            palette=TINY_PALETTE,
            preprocess=PreprocessSpec(),
            opset=13,
        ),
    )
    return target


def quadrant_image(height: int = 48, width: int = 64) -> npt.NDArray[np.uint8]:
    """BGR image: top-left red, top-right green, bottom-left blue, bottom-right black."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    h2, w2 = height // 2, width // 2
    image[:h2, :w2] = (0, 0, 255)
    image[:h2, w2:] = (0, 255, 0)
    image[h2:, :w2] = (255, 0, 0)
    return image


def quadrant_labels(height: int = 48, width: int = 64) -> npt.NDArray[np.int64]:
    labels = np.full((height, width), 3, dtype=np.int64)
    h2, w2 = height // 2, width // 2
    labels[:h2, :w2] = 0
    labels[:h2, w2:] = 1
    labels[h2:, :w2] = 2
    return labels


def tiny_scores(image_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """The tiny model's winning-class probability per pixel, by hand: softmax of its logits
    ((RGB / 255 - 0.5) / 0.5 for classes 0-2, 0.3 for class 3)."""
    rgb = (image_bgr[..., ::-1].astype(np.float64) / 255.0 - 0.5) / 0.5
    logits = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 0.3)], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).max(axis=-1)  # type: ignore[no-any-return]


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free 127.0.0.1 port; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def wait_for_health(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Poll ``url``/health until a ``fastseg serve`` child answers 200; fail with its stderr
    (or combined output) when it exits or ``timeout_s`` passes."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"fastseg serve did not come up: {err or out!r}")
        time.sleep(0.2)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (or the socket errors)."""
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except OSError:
        pass
    return answer


def assert_error(resp: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"logId", "errorCode", "errorMsg"}
    assert body["errorCode"] == status
    for needle in needles:
        assert needle.lower() in body["errorMsg"].lower(), body["errorMsg"]
    return body


class GatedSegmenter:
    """Blocks in predict_images until ``gate`` is set; records batch sizes; can fail on demand."""

    def __init__(self, meta: ModelMeta) -> None:
        self.meta = meta
        self.gate = threading.Event()
        self.batches: list[int] = []
        self.fail_with: Exception | None = None

    def predict_images(
        self, images_bgr: Sequence[npt.NDArray[np.uint8]], *, target_size: Any = None, cancel: Any = None
    ) -> list[Any]:
        self.gate.wait(timeout=30)
        self.batches.append(len(images_bgr))
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        return [{"pred": np.zeros((1, *im.shape[:2]), dtype=np.int64)} for im in images_bgr]


def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)
