"""The converted-model directory: ``model.onnx`` plus ``fastseg.json``.

This is the contract between ``fastseg convert`` (writes it) and ``Segmenter`` (loads it).
``fastseg.json`` is versioned by ``format_version``; a reader refuses versions it does not
know instead of guessing.

    my_model/
        model.onnx       input NCHW float32 [N,3,H,W] (H, W dynamic unless noted)
        fastseg.json     ModelMeta below

Preprocessing mirrors PaddleX/PaddleSeg ``Deploy.transforms``: the image is RGB, optionally
resized (``Resize``), then ``(pixel * scale - mean) / std`` per channel (``Normalize``, scale
1/255 by default), laid out CHW.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastseg.errors import ModelDirError
from fastseg.files import write_text_atomic

FORMAT_VERSION = 1
META_FILE = "fastseg.json"
ONNX_FILE = "model.onnx"

OutputKind = Literal["labels", "logits", "probs"]
OUTPUT_KINDS: tuple[str, ...] = ("labels", "logits", "probs")


@dataclass(frozen=True)
class ResizeSpec:
    """PaddleSeg ``Resize``: ``target_size`` is (width, height) as in PaddleSeg's YAML."""

    target_size: tuple[int, int]
    keep_ratio: bool = False
    size_divisor: int | None = None
    interp: str = "LINEAR"


@dataclass(frozen=True)
class PreprocessSpec:
    """What happens to an RGB uint8 image before it enters the network."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    scale: float = 1.0 / 255.0
    resize: ResizeSpec | None = None
    to_rgb: bool = True


@dataclass(frozen=True)
class ModelMeta:
    """Everything a runtime needs to use ``model.onnx`` correctly, plus where it came from."""

    model_name: str
    input_name: str
    output_kind: OutputKind
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    preprocess: PreprocessSpec
    opset: int
    dynamic_hw: bool = True
    fixed_hw: tuple[int, int] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelMeta:
        """Parse ``fastseg.json``'s mapping.

        Raises:
            ModelDirError: on an unknown format version or a missing/invalid field.
        """
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelDirError(
                f"fastseg.json has format_version {version!r}; this fastseg reads version "
                f"{FORMAT_VERSION}. Re-convert the model with this fastseg ('fastseg convert ... --force')."
            )
        try:
            pre = dict(raw["preprocess"])
            resize = pre.pop("resize", None)
            kind = raw["output_kind"]
            if kind not in OUTPUT_KINDS:
                raise ValueError(f"output_kind {kind!r} not in {OUTPUT_KINDS}")
            fixed = raw.get("fixed_hw")
            return cls(
                model_name=str(raw["model_name"]),
                input_name=str(raw["input_name"]),
                output_kind=kind,
                num_classes=int(raw["num_classes"]),
                class_names=tuple(raw["class_names"]),
                palette=tuple((int(c[0]), int(c[1]), int(c[2])) for c in raw["palette"]),
                preprocess=PreprocessSpec(
                    mean=_triple(pre.get("mean", (0.5, 0.5, 0.5))),
                    std=_triple(pre.get("std", (0.5, 0.5, 0.5))),
                    scale=float(pre.get("scale", 1.0 / 255.0)),
                    to_rgb=bool(pre.get("to_rgb", True)),
                    resize=None
                    if resize is None
                    else ResizeSpec(
                        target_size=(int(resize["target_size"][0]), int(resize["target_size"][1])),
                        keep_ratio=bool(resize.get("keep_ratio", False)),
                        size_divisor=resize.get("size_divisor"),
                        interp=str(resize.get("interp", "LINEAR")),
                    ),
                ),
                opset=int(raw["opset"]),
                dynamic_hw=bool(raw.get("dynamic_hw", True)),
                fixed_hw=None if fixed is None else (int(fixed[0]), int(fixed[1])),
                provenance=dict(raw.get("provenance", {})),
                verification=dict(raw.get("verification", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelDirError(f"fastseg.json is invalid ({exc!r}); re-convert the model.") from exc


def _triple(values: Any) -> tuple[float, float, float]:
    vals = [float(v) for v in values]
    if len(vals) != 3:
        raise ValueError(f"expected 3 per-channel values, got {len(vals)}")
    return (vals[0], vals[1], vals[2])


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a converted model (both files present)."""
    return (path / META_FILE).is_file() and (path / ONNX_FILE).is_file()


def read_meta(model_dir: Path) -> ModelMeta:
    """Read and validate ``fastseg.json`` of a converted model directory.

    Raises:
        ModelDirError: the directory is missing, is a Paddle model that needs converting,
            or lacks ``model.onnx``/``fastseg.json``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"Model directory {str(model_dir)!r} does not exist.")
    if not (model_dir / META_FILE).is_file() or not (model_dir / ONNX_FILE).is_file():
        paddle_files = [p.name for p in model_dir.iterdir() if p.suffix in (".pdmodel", ".pdiparams", ".json")]
        if any(n.endswith((".pdmodel", ".pdiparams")) or n in ("inference.json", "model.json") for n in paddle_files):
            raise ModelDirError(
                f"{str(model_dir)!r} is a Paddle inference model, not a converted one. "
                f"Convert it first: fastseg convert --model-dir {model_dir}"
            )
        raise ModelDirError(
            f"{str(model_dir)!r} is not a fastseg model directory: it needs {ONNX_FILE} and {META_FILE} "
            "(written by 'fastseg convert')."
        )
    try:
        raw = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{model_dir / META_FILE} is not valid JSON ({exc}); re-convert the model.") from exc
    return ModelMeta.from_json(raw)


def write_meta(model_dir: Path, meta: ModelMeta) -> Path:
    """Write ``fastseg.json`` atomically (temp file in the same dir, then rename)."""
    target = Path(model_dir) / META_FILE
    write_text_atomic(target, json.dumps(meta.to_json(), indent=2, ensure_ascii=False) + "\n")
    return target
