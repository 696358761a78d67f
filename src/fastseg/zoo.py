"""The model registry: ``model_zoo.yaml`` read into frozen ``ModelSpec`` records.

The YAML ships inside the package (``fastseg/model_zoo.yaml``; the repository's
top-level ``model_zoo.yaml`` is a link to it) so a wheel install has it too.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from fastseg.errors import UnknownModelError

ZOO_RESOURCE = "model_zoo.yaml"
CACHE_ENV = "FASTSEG_HOME"


@dataclass(frozen=True)
class LabelSpace:
    """A label space: class names and the PaddleSeg palette (RGB per class)."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255


@dataclass(frozen=True)
class Published:
    """Figures PaddleX publishes for a model (other hardware: never a ratio to ours).

    None where PaddleX publishes no figure (its table leaves MaskFormer's latency and size blank).
    """

    miou: float
    gpu_ms: float | None
    cpu_ms: float | None
    size_mb: float | None
    latency_note: str | None = None


@dataclass(frozen=True)
class Protocol:
    """How PaddleSeg evaluated the published mIoU, read from its config (``config``).

    ``target_size`` is (width, height) as PaddleSeg writes it, applied with keep_ratio and
    size_divisor 32 (PaddleX's target_size defaults); ``slide``/``slide_stride`` are
    (height, width) windows on the resized image; ``test_scale`` is PaddleSeg's
    ``test_config.scales`` (recorded; fastseg applies it as ``target_size`` for the
    dataset's frame size). ``exact_resize`` (width, height) records a Resize without
    keep_ratio that the model's own inference.yml already applies (MaskFormer's fixed 512x512),
    so it sets nothing. None everywhere = the whole image at its own resolution.
    """

    config: str
    target_size: tuple[int, int] | None = None
    test_scale: float | None = None
    slide: tuple[int, int] | None = None
    slide_stride: tuple[int, int] | None = None
    note: str | None = None
    exact_resize: tuple[int, int] | None = None

    def describe(self) -> str:
        """A short human form: ``slide 1024x1024/768x768``, ``resize 1024x512`` (WxH) or ``whole image``."""
        parts = []
        if self.exact_resize is not None:
            parts.append(f"resize {self.exact_resize[0]}x{self.exact_resize[1]} exactly")
        if self.target_size is not None:
            parts.append(f"resize {self.target_size[0]}x{self.target_size[1]}")
        if self.slide is not None:
            stride = self.slide_stride or self.slide
            parts.append(f"slide {self.slide[0]}x{self.slide[1]}/{stride[0]}x{stride[1]}")
        return ", ".join(parts) or "whole image"

    def segmenter_kwargs(self) -> dict[str, Any]:
        """``Segmenter`` keyword arguments that apply this protocol (``target_size``, ``slide``, ``slide_stride``)."""
        return {"target_size": self.target_size, "slide": self.slide, "slide_stride": self.slide_stride}


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry: what the model is, where its official files live, what PaddleX published."""

    name: str
    family: str
    backbone: str
    dataset: LabelSpace
    inference_urls: tuple[str, ...]
    inference_sha256: str | None
    pretrained_url: str
    published: Published
    protocol: Protocol | None = None


OTHERWISE_MODEL_DIR = "or pass a converted model directory."
OTHERWISE_PADDLE_DIR = "or convert your own Paddle model with --model-dir DIR."


@dataclass(frozen=True)
class Zoo:
    """The whole registry; ``models`` is read-only and keeps the YAML's order."""

    models: Mapping[str, ModelSpec]
    datasets: Mapping[str, LabelSpace]
    published_conditions: Mapping[str, str]

    def get(self, name: str, *, otherwise: str = OTHERWISE_MODEL_DIR) -> ModelSpec:
        """Return the spec for ``name``.

        Raises:
            UnknownModelError: with the nearest known names as suggestions, then ``otherwise``
                (what else the caller accepts; ``fastseg convert`` takes no converted directory).
        """
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModelError(unknown_model_message(name, list(self.models), otherwise=otherwise)) from None

    def names(self) -> list[str]:
        return list(self.models)


def unknown_model_message(name: str, known: list[str], *, otherwise: str = OTHERWISE_MODEL_DIR) -> str:
    """Say that ``name`` is unknown, suggesting the closest known names (case-insensitive)."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    return (
        f"Unknown model {name!r}.{hint} Run 'fastseg models' for the {len(known)} known names, {otherwise}"
    )


def _dataset(name: str, raw: Mapping[str, Any]) -> LabelSpace:
    return LabelSpace(
        name=name,
        num_classes=int(raw["num_classes"]),
        class_names=tuple(raw["class_names"]),
        palette=tuple((int(c[0]), int(c[1]), int(c[2])) for c in raw["palette"]),
        ignore_index=int(raw.get("ignore_index", 255)),
    )


def _pair(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _protocol(raw: Mapping[str, Any] | None) -> Protocol | None:
    if raw is None:
        return None
    return Protocol(
        config=str(raw["config"]),
        target_size=_pair(raw.get("target_size")),
        test_scale=None if raw.get("test_scale") is None else float(raw["test_scale"]),
        slide=_pair(raw.get("slide")),
        slide_stride=_pair(raw.get("slide_stride")),
        note=raw.get("note"),
        exact_resize=_pair(raw.get("exact_resize")),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_zoo(raw: Mapping[str, Any]) -> Zoo:
    """Build a ``Zoo`` from the YAML's parsed mapping (validates the cross references)."""
    datasets = {name: _dataset(name, d) for name, d in raw["datasets"].items()}
    models: dict[str, ModelSpec] = {}
    for name, m in raw["models"].items():
        pub = m["published"]
        models[name] = ModelSpec(
            name=name,
            family=m["family"],
            backbone=m["backbone"],
            dataset=datasets[m["dataset"]],
            inference_urls=tuple(m["inference_urls"]),
            inference_sha256=m.get("inference_sha256"),
            pretrained_url=m["pretrained_url"],
            published=Published(
                miou=float(pub["miou"]),
                gpu_ms=_optional_float(pub.get("gpu_ms")),
                cpu_ms=_optional_float(pub.get("cpu_ms")),
                size_mb=_optional_float(pub.get("size_mb")),
                latency_note=pub.get("latency_note"),
            ),
            protocol=_protocol(m.get("protocol")),
        )
    return Zoo(
        models=MappingProxyType(models),
        datasets=MappingProxyType(datasets),
        published_conditions=MappingProxyType(dict(raw.get("published_conditions", {}))),
    )


@cache
def load_zoo() -> Zoo:
    """Load the packaged ``model_zoo.yaml`` (parsed once; the result is immutable)."""
    text = resources.files("fastseg").joinpath(ZOO_RESOURCE).read_text(encoding="utf-8")
    return parse_zoo(yaml.safe_load(text))


def cache_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where fastseg keeps downloads and converted models.

    ``$FASTSEG_HOME`` when set, else ``$XDG_CACHE_HOME/fastseg``, else ``~/.cache/fastseg``.
    """
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "fastseg"


def converted_model_dir(name: str, home: Path | None = None) -> Path:
    """The default directory of a zoo model once converted: ``<cache_home>/models/<name>``."""
    return (home or cache_home()) / "models" / name


def downloads_dir(home: Path | None = None) -> Path:
    """Where official tarballs are downloaded to."""
    return (home or cache_home()) / "downloads"
