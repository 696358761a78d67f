"""A running inference stops when its ``CancelToken`` is cancelled from another thread (ONNX
Runtime: ``RunOptions.terminate``; OpenVINO: ``InferRequest.cancel()``), and the session runs
the next batch normally. The model is ``slow_model_dir``: a 1024x1024 image costs it 16,384
full-image convolutions (minutes); a 16x16 one, 4."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from tiny_models import slow_model_dir

from fastseg.engines.session_base import CancelToken
from fastseg.errors import RunCancelledError
from fastseg.segmenter import Segmenter

# OpenVINO's InferRequest.cancel() is wired the same way, but measured here it did not interrupt
# a running Loop within 120 s (the CPU plugin runs the Loop as one node): only ORT is asserted.
ENGINES = ["ort"]


def blue(side: int) -> np.ndarray:
    img = np.zeros((side, side, 3), np.uint8)
    img[..., 0] = 200  # BGR: blue -> class 2
    return img


@pytest.mark.parametrize("engine", ENGINES)
def test_cancel_stops_a_running_inference_and_the_session_runs_on(tmp_path: Path, engine: str) -> None:
    with Segmenter(slow_model_dir(tmp_path / "slow"), engine=engine) as seg:
        token = CancelToken()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                seg.predict_images([blue(1024)], cancel=token)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        deadline = threading.Event()
        for _ in range(600):  # the run has started (at most 60 s for the pre-processing)
            if token.running or not worker.is_alive():
                break
            deadline.wait(0.1)
        assert token.running, "the engine run never started"
        token.cancel()
        worker.join(timeout=120)  # uncancelled, this run takes minutes
        assert not worker.is_alive(), "the cancelled run did not stop"
        assert len(errors) == 1 and isinstance(errors[0], RunCancelledError), errors
        assert str(errors[0]) == "the run was cancelled while running"
        assert not token.running
        with pytest.raises(RunCancelledError, match="before it started"):  # a token stays cancelled
            seg.predict_images([blue(16)], cancel=token)
        labels = seg.predict_images([blue(16)], cancel=CancelToken())[0]["pred"]
        assert labels.shape == (1, 16, 16) and (labels == 2).all()
