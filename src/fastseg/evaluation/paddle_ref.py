"""``fastseg eval --against paddle``: the source Paddle model on the same images.

The model directory's provenance (``fastseg.json`` -> ``provenance.source``) names the Paddle
tarball or directory it was converted from. Images get fastseg's preprocessing (the same
arrays the ONNX model sees), then run through Paddle Inference in the converter's child
process (``fastseg.convert.child.run_paddle_worker("predict")``, CPU, native kernels: the reference
the conversion was verified against), and the labels are resized back to each image's size.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import FastSegError, MissingDependencyError, ModelDirError
from fastseg.model_dir import ModelMeta
from fastseg.processing import labels_from_output, preprocess_batch, restore_size


class PaddleReference:
    """Labels from the Paddle model a converted model came from. Use as a context manager (it
    owns a temporary work directory for the extracted model and the exchanged arrays).

    Raises:
        MissingDependencyError: paddle is not installed.
        ModelDirError: the provenance names no source, or the source no longer exists.
    """

    engine_name = "paddle-inference"

    def __init__(self, meta: ModelMeta, *, threads: int = 2, workdir: Path | None = None) -> None:
        if importlib.util.find_spec("paddle") is None:
            raise MissingDependencyError(
                "--against paddle needs paddlepaddle (not installed): pip install 'fastseg-ort[convert]'."
            )
        source = meta.provenance.get("source")  # the converter records an absolute path
        if not source or not Path(str(source)).is_absolute() or not Path(str(source)).exists():
            raise ModelDirError(
                f"--against paddle: {meta.model_name}'s fastseg.json provenance names "
                f"{'no source' if not source else repr(str(source))}, "
                "which is not an available Paddle model; re-convert from the Paddle model to record it, "
                "or compare with another converted model (--against DIR)."
            )
        from fastseg.convert.sources import open_source

        self.meta = meta
        self.threads = threads
        self._work = Path(tempfile.mkdtemp(prefix="fastseg-eval-paddle-", dir=workdir))
        try:
            self.source = open_source(Path(str(source)), self._work)
        except FastSegError as exc:
            self.close()
            raise ModelDirError(f"--against paddle: the provenance source {source} is not a usable Paddle model: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.name = str(source)

    def labels(self, images_bgr: Sequence[npt.NDArray[np.uint8]]) -> list[npt.NDArray[np.int32]]:
        """Labels int32 [H, W] at each image's size, in order (one child process per call).

        Raises:
            ConversionError: Paddle Inference failed (the stderr tail is in the message).
        """
        from fastseg.convert.child import run_paddle_worker

        resize = self.meta.preprocess.resize
        inputs = {
            f"img{i:05d}": preprocess_batch([image], self.meta.preprocess, resize=resize)
            for i, image in enumerate(images_bgr)
        }
        call = self._work / "predict"
        call.mkdir(exist_ok=True)
        np.savez(call / "inputs.npz", **inputs)  # type: ignore[arg-type]
        run_paddle_worker(
            "predict",
            call,
            what="Paddle Inference (eval --against paddle)",
            inputs_npz=str(call / "inputs.npz"),
            outputs_npz=str(call / "outputs.npz"),
            programs=[{"model_file": str(self.source.model_file), "params_file": str(self.source.params_file)}],
            threads=self.threads,
        )
        out: list[npt.NDArray[np.int32]] = []
        with np.load(call / "outputs.npz") as outputs:
            for key, image in zip(sorted(inputs), images_bgr):
                raw: npt.NDArray[Any] = outputs[f"0:{key}"]
                kind = "labels" if raw.dtype.kind in "iu" else "logits"  # argmax(probs) == argmax(logits)
                labels, _ = labels_from_output(raw, kind)
                out.append(np.asarray(restore_size(labels[0], (int(image.shape[0]), int(image.shape[1])))))
        shutil.rmtree(call, ignore_errors=True)
        return out

    def close(self) -> None:
        """Remove the work directory (extracted model, exchanged arrays)."""
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> PaddleReference:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
