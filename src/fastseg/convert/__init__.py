"""Paddle -> ONNX conversion (the ``[convert]`` extra: paddlepaddle, paddle2onnx, onnx).

Paddle itself is only ever imported in a child process (``_worker.py``); this package needs
``onnx`` in-process. Public API: ``convert_model`` and ``ConvertReport``.
"""

from fastseg.convert.pipeline import DEFAULT_THRESHOLD, DEFAULT_VERIFY_SIZES, ConvertReport, convert_model

__all__ = ["ConvertReport", "DEFAULT_THRESHOLD", "DEFAULT_VERIFY_SIZES", "convert_model"]
