"""The fastseg exception tree.

Every error a user can cause is a ``FastSegError`` whose message names the problem
and the fix. Nothing else in fastseg should raise bare ``ValueError``/``KeyError``
for user input.

    FastSegError
    ├── UnknownModelError        a model name that is not in the zoo (nearest names suggested)
    ├── ModelDirError            a directory that is not a converted model / Paddle model
    ├── DownloadError            network, resume or checksum failure
    ├── ConversionError          Paddle -> ONNX failed, or verification below threshold
    │   └── QuantizationGateError  int8 kept too few of fp32's labels (nothing written)
    ├── MissingDependencyError   an optional extra (convert, serve, gpu) is not installed
    ├── DeviceError              a device string that cannot be parsed or served
    ├── RunCancelledError        an engine run stopped by its ``CancelToken`` (a timed-out request)
    └── InputError               an image that is missing, unreadable or of the wrong type
"""

from __future__ import annotations


class FastSegError(Exception):
    """Base class of every error fastseg raises on purpose."""


class UnknownModelError(FastSegError, KeyError):
    """A model name that is not in the zoo."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ModelDirError(FastSegError):
    """A directory that is not a usable model directory."""


class DownloadError(FastSegError):
    """A download that failed, could not resume, or had the wrong checksum."""


class ConversionError(FastSegError):
    """Paddle -> ONNX conversion or its verification failed."""


class QuantizationGateError(ConversionError):
    """An int8 model kept too few of its fp32 model's labels on held-out images; nothing was written."""


class MissingDependencyError(FastSegError, ImportError):
    """An optional dependency needed for this feature is not installed."""


class DeviceError(FastSegError, ValueError):
    """A device string that cannot be parsed, or an accelerator that is not available."""


class RunCancelledError(FastSegError):
    """An engine run was cancelled from another thread (``CancelToken.cancel``); it produced nothing."""


class InputError(FastSegError, ValueError):
    """An input image that is missing, unreadable or of an unsupported type."""
