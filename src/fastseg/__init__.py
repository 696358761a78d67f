"""fastseg: ONNX Runtime inference for PaddleX's semantic segmentation models.

Public API (everything else is internal)::

    from fastseg import Segmenter, create_pipeline
    seg = Segmenter(model="PP-LiteSeg-T", device="cpu")
    for res in seg.predict("street.jpg"):
        res.save_to_img("out/")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastseg.errors import (
    ConversionError,
    DeviceError,
    DownloadError,
    FastSegError,
    InputError,
    MissingDependencyError,
    ModelDirError,
    UnknownModelError,
)

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
    "UnknownModelError",
    "__version__",
]
