"""fastseg: ONNX Runtime inference for PaddleX's semantic segmentation models.

Public API (everything else is internal)::

    from fastseg import Segmenter, create_pipeline
    seg = Segmenter(model="PP-LiteSeg-T", device="cpu")
    for res in seg.predict("street.jpg"):
        res.save_to_img("out/")

    from fastseg import quantize_model         # a gated bf16 / int8 / int8-bf16 model directory
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fastseg.errors import (
    ConversionError,
    DeviceError,
    DownloadError,
    FastSegError,
    InputError,
    MissingDependencyError,
    ModelDirError,
    QuantizationGateError,
    UnknownModelError,
)
from fastseg.offline import keep_offline

# Before any fastseg module imports onnxruntime or ray (the imports above load neither); see fastseg.offline.
keep_offline(os.environ)

if TYPE_CHECKING:
    from fastseg.evaluation.runner import evaluate
    from fastseg.results import SegResult
    from fastseg.engines.ort import RuntimeOptions
    from fastseg.segmenter import Segmenter
    from fastseg.pipeline import create_pipeline
    from fastseg.precision.quantize import quantize_model

# Imported on first use so `fastseg --help` does not load onnxruntime/OpenCV.
_LAZY = {
    "RuntimeOptions": "fastseg.engines.ort",
    "SegResult": "fastseg.results",
    "Segmenter": "fastseg.segmenter",
    "create_pipeline": "fastseg.pipeline",
    "evaluate": "fastseg.evaluation.runner",
    "quantize_model": "fastseg.precision.quantize",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastseg' has no attribute {name!r}")


try:
    __version__ = version("fastseg-ort")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = [
    "ConversionError",
    "DeviceError",
    "DownloadError",
    "FastSegError",
    "InputError",
    "MissingDependencyError",
    "ModelDirError",
    "QuantizationGateError",
    "RuntimeOptions",
    "SegResult",
    "Segmenter",
    "UnknownModelError",
    "__version__",
    "create_pipeline",
    "evaluate",
    "quantize_model",
]
