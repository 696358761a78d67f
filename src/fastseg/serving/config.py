"""Serving configuration: one frozen dataclass, read from YAML.

The YAML mirrors the spirit of PaddleX's pipeline ``Serving`` section: either a top-level
``Serving:`` mapping or the bare mapping. Unknown keys are refused (a typo must not silently
leave a limit at its default).

    Serving:
      visualize: true            # return the colour map as base64 JPEG in result.image
      max_body_bytes: 20971520   # request body limit (413 above)
      max_pixels: 40000000       # decoded width*height limit, read from the image header (422 above)
      max_input_pixels: 4194304  # network input width*height after Resize/targetSize (422 above)
      decode_memory_bytes: 268435456  # decoded pixels (w*h*3) held by in-flight requests at once
      body_memory_bytes: 83886080  # Content-Length of bodies being read/decoded at once (503 above)
      body_timeout_s: 20         # the whole body must arrive within this (408 above), before admission
      header_timeout_s: 10       # a connection's request line and headers must arrive within this
      max_connections: 128       # open connections; more are answered 503 and closed at once
      cpu_workers: 2             # threads for JSON parsing, image decoding and response encoding
      max_batch: 1               # dynamic batching: at most this many images per inference call
      max_batch_pixels: 4194304  # ... and at most this many network-input pixels (one image always runs)
      max_wait_ms: 5             # ... waiting at most this long for a batch to fill
      queue_size: 32             # requests admitted at once (decoding, queued or running); 503 above
      workers: 1                 # inference threads (each runs one batch at a time)
      request_timeout_s: 30      # per-request deadline; 503 + Retry-After when exceeded
      retry_after_s: 1           # Retry-After header on 503
      api_key: null              # when set: 'Authorization: Bearer <key>' required on inference
      allow_compact_format: true # accept "labelMapFormat": "png"
      scores: false              # compute per-pixel confidence, so requests may ask "scores": true
      slide: null                # [h, w]: sliding windows (bounded memory); then images up to
      slide_stride: null         #   slide_max_pixels are accepted instead of max_pixels
      slide_max_pixels: 100000000
      url_inputs:
        allowed_hosts: []        # empty: URL inputs are refused; "*" allows any host
        allow_private_addresses: false  # loopback/private/link-local refused after DNS unless true
        timeout_s: 10
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastseg.errors import FastSegError


class ServingConfigError(FastSegError, ValueError):
    """A serving config file that is missing, not YAML, or has unknown/invalid keys."""


@dataclass(frozen=True)
class UrlInputConfig:
    """Which ``http(s)://`` image URLs the server may fetch (SSRF guard)."""

    allowed_hosts: tuple[str, ...] = ()
    allow_private_addresses: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True)
class ServingConfig:
    """Limits, batching and security settings of ``create_app``. Defaults are the safe ones."""

    visualize: bool = True
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_input_pixels: int = 4_194_304
    decode_memory_bytes: int = 256 * 1024 * 1024
    body_memory_bytes: int = 80 * 1024 * 1024
    body_timeout_s: float = 20.0
    header_timeout_s: float = 10.0
    max_connections: int = 128
    cpu_workers: int = 2
    #: 1: measured on CPU, batching gives no throughput and multiplies memory (docs/serving.md).
    max_batch: int = 1
    max_batch_pixels: int = 4_194_304
    max_wait_ms: float = 5.0
    queue_size: int = 32
    workers: int = 1
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    api_key: str | None = None
    allow_compact_format: bool = True
    url_inputs: UrlInputConfig = field(default_factory=UrlInputConfig)
    slide: tuple[int, int] | None = None
    slide_stride: tuple[int, int] | None = None
    slide_max_pixels: int = 100_000_000
    #: fastseg extension: the segmenter computes scores, so a request may ask ``"scores": true``.
    scores: bool = False

    def __post_init__(self) -> None:
        positive = (
            "max_body_bytes", "max_pixels", "max_input_pixels", "decode_memory_bytes", "body_timeout_s",
            "max_batch", "queue_size", "workers", "request_timeout_s", "slide_max_pixels", "body_memory_bytes",
            "header_timeout_s", "max_connections", "cpu_workers", "max_batch_pixels",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ServingConfigError(f"serving config: {name} must be > 0, got {getattr(self, name)!r}.")
        if self.decode_memory_bytes < 3 * self.max_pixels:
            raise ServingConfigError(
                f"serving config: decode_memory_bytes ({self.decode_memory_bytes}) must be at least "
                f"3 * max_pixels ({3 * self.max_pixels}) so that an image at the pixel limit can be decoded; "
                "raise decode_memory_bytes or lower max_pixels."
            )
        if self.body_memory_bytes < self.max_body_bytes:
            raise ServingConfigError(
                f"serving config: body_memory_bytes ({self.body_memory_bytes}) must be at least max_body_bytes "
                f"({self.max_body_bytes}) so that a body at the size limit can be read; raise body_memory_bytes "
                "or lower max_body_bytes."
            )
        if self.url_inputs.timeout_s <= 0:
            raise ServingConfigError(f"serving config: url_inputs.timeout_s must be > 0, got {self.url_inputs.timeout_s!r}.")
        if self.max_wait_ms < 0 or self.retry_after_s < 0:
            raise ServingConfigError("serving config: max_wait_ms and retry_after_s must be >= 0.")
        if self.api_key is not None and not self.api_key:
            raise ServingConfigError("serving config: api_key is empty; remove it or set a non-empty key.")
        if self.slide_stride is not None and self.slide is None:
            raise ServingConfigError("serving config: slide_stride needs slide ([h, w] windows).")
        if self.slide is not None:
            stride = self.slide_stride or self.slide
            if min(*self.slide, *stride) < 1 or stride[0] > self.slide[0] or stride[1] > self.slide[1]:
                raise ServingConfigError(
                    f"serving config: slide {list(self.slide)} / slide_stride {list(stride)} must be positive "
                    "with the stride <= the window (else pixels between windows are never predicted)."
                )

    def replace(self, **changes: Any) -> ServingConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _build(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ServingConfigError(f"serving config: {where} must be a mapping, got {type(raw).__name__}.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ServingConfigError(
            f"serving config: unknown key(s) {unknown} in {where}; known keys: {sorted(known)}."
        )
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        default = known[name].default
        if name == "url_inputs":
            kwargs[name] = _build(UrlInputConfig, value or {}, f"{where}.url_inputs")
        elif name == "allowed_hosts":
            if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
                raise ServingConfigError(f"serving config: {where}.allowed_hosts must be a list of host names.")
            kwargs[name] = tuple(h.lower() for h in value)
        elif name in ("slide", "slide_stride"):
            if value is not None and (
                not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                raise ServingConfigError(f"serving config: {where}.{name} must be [height, width] integers or null, got {value!r}.")
            kwargs[name] = None if value is None else (value[0], value[1])
        elif name == "api_key":
            kwargs[name] = None if value is None else str(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ServingConfigError(f"serving config: {where}.{name} must be true or false, got {value!r}.")
            kwargs[name] = value
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ServingConfigError(f"serving config: {where}.{name} must be a number, got {value!r}.")
            kwargs[name] = type(default)(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_serving_config(path: Path | str) -> ServingConfig:
    """Read a serving YAML (a ``Serving:`` section or a bare mapping) into ``ServingConfig``.

    Raises:
        ServingConfigError: the file is missing, not YAML, or has unknown or invalid keys.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ServingConfigError(f"cannot read serving config {str(path)!r}: {exc}.") from exc
    except yaml.YAMLError as exc:
        raise ServingConfigError(f"serving config {str(path)!r} is not valid YAML: {exc}") from exc
    if raw is None:
        return ServingConfig()
    if isinstance(raw, dict) and set(raw) == {"Serving"}:
        raw = raw["Serving"] or {}
    config: ServingConfig = _build(ServingConfig, raw, "Serving")
    return config
