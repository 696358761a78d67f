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
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastseg.errors import ModelDirError
from fastseg.files import write_text_atomic

FORMAT_VERSION = 1
META_FILE = "fastseg.json"
ONNX_FILE = "model.onnx"
_REFIX = "fix the value, or re-convert the model ('fastseg convert ... --force')"

OutputKind = Literal["labels", "logits", "probs"]
OUTPUT_KINDS: tuple[str, ...] = ("labels", "logits", "probs")
Precision = Literal["fp32", "int8", "bf16", "int8-bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "bf16", "int8-bf16")
REDUCED_PRECISIONS: tuple[str, ...] = PRECISIONS[1:]
"""What ``fastseg quantize`` writes, each behind a gate."""
BF16_PRECISIONS: tuple[str, ...] = ("bf16", "int8-bf16")
"""Precisions OpenVINO computes in bf16 (all of the graph, or what the int8 graph leaves
unquantized): OpenVINO only, and a CPU with bf16 instructions."""
QDQ_PRECISIONS: tuple[str, ...] = ("int8", "int8-bf16")
"""Precisions whose ``model.onnx`` is a calibrated QDQ int8 graph."""


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
class GateRecord:
    """How a reduced-precision model (int8, bf16, int8-bf16) compared with its fp32 model on held-out
    images, as ``fastseg quantize`` measured it; ``gated`` False = written with the gate off."""

    precision: Precision
    engine: str
    gated: bool
    agreement_pct: float
    """Pooled: % of all held-out pixels whose label equals fp32's."""
    worst_image_pct: float
    """The lowest single held-out image's agreement."""
    min_agreement_pct: float
    """The pooled threshold the gate applied."""
    min_image_agreement_pct: float
    """The per-image floor the gate applied."""
    val_images: int
    calib_images: int = 0
    format: str = ""
    calibration: str = ""
    worst_image: str = ""
    """The file name of the held-out image with the lowest agreement ("" in older records)."""
    cpu: str = ""
    """The CPU the gate ran on and its precision flags (``AMD EPYC: avx512_bf16 avx512_vnni ...``):
    bf16 and int8 kernels differ between AMX, AVX512-BF16 and VNNI, and so can the figures."""

    @property
    def label(self) -> str:
        """How the precision is shown: ``int8 (keeps 99.40% of fp32 labels)``, ``bf16 UNGATED``."""
        if not self.gated:
            return f"{self.precision} UNGATED" + ("" if self.val_images else " (agreement not measured)")
        return f"{self.precision} (keeps {self.agreement_pct:.2f}% of fp32 labels, worst image {self.worst_image_pct:.2f}%)"

    @classmethod
    def from_json(cls, raw: Any) -> GateRecord:
        """Parse ``fastseg.json``'s ``gate`` object (ValueError/KeyError/TypeError on bad input)."""
        if not isinstance(raw, dict):
            raise ValueError(f"gate must be a JSON object, got a JSON {_json_type(raw)}")
        precision = raw["precision"]
        if precision not in REDUCED_PRECISIONS:
            raise ValueError(f"gate.precision {precision!r} not in {REDUCED_PRECISIONS}")
        figures = {k: _finite(raw[k], f"gate.{k}") for k in (
            "agreement_pct", "worst_image_pct", "min_agreement_pct", "min_image_agreement_pct")}
        return cls(
            precision=precision, engine=str(raw["engine"]), gated=bool(raw["gated"]),
            val_images=int(raw["val_images"]), calib_images=int(raw.get("calib_images", 0)),
            format=str(raw.get("format", "")), calibration=str(raw.get("calibration", "")), cpu=str(raw.get("cpu", "")),
            worst_image=str(raw.get("worst_image", "")),
            **figures,
        )


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
    precision: Precision = "fp32"
    """What the engine computes in: ``fp32``, or a gated ``int8``/``bf16`` variant (``gate``)."""
    gate: GateRecord | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def precision_label(self) -> str:
        """How the precision is shown to users: ``fp32``, ``bf16 (keeps 99.9% ...)``, ``int8 UNGATED``."""
        return "fp32" if self.gate is None else self.gate.label

    @classmethod
    def from_json(cls, raw: Any) -> ModelMeta:
        """Parse ``fastseg.json``'s mapping and check that its fields agree with each other.

        Raises:
            ModelDirError: not a JSON object, an unknown format version, a missing/invalid field,
                or inconsistent metadata (the message names the field and the fix).
        """
        if not isinstance(raw, dict):
            raise ModelDirError(
                f"{META_FILE} must hold a JSON object, got a JSON {_json_type(raw)}; re-convert the model "
                "('fastseg convert ... --force')."
            )
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelDirError(
                f"fastseg.json has format_version {version!r}; this fastseg reads version "
                f"{FORMAT_VERSION}. Re-convert the model with this fastseg ('fastseg convert ... --force')."
            )
        try:
            for name in ("preprocess", "provenance", "verification"):
                if name in raw and not isinstance(raw[name], dict):
                    raise ValueError(f"{name} must be a JSON object, got a JSON {_json_type(raw[name])}")
            if not isinstance(raw["class_names"], list) or not all(isinstance(n, str) for n in raw["class_names"]):
                raise ValueError("class_names must be a list of strings")
            pre = dict(raw["preprocess"])
            resize = pre.pop("resize", None)
            kind = raw["output_kind"]
            if kind not in OUTPUT_KINDS:
                raise ValueError(f"output_kind {kind!r} not in {OUTPUT_KINDS}")
            fixed = raw.get("fixed_hw")
            precision = raw.get("precision", "fp32")
            if precision not in PRECISIONS:
                raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
            gate = None if raw.get("gate") is None else GateRecord.from_json(raw["gate"])
            meta = cls(
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
                        size_divisor=None if resize.get("size_divisor") is None else int(resize["size_divisor"]),
                        interp=str(resize.get("interp", "LINEAR")),
                    ),
                ),
                opset=int(raw["opset"]),
                dynamic_hw=bool(raw.get("dynamic_hw", True)),
                fixed_hw=None if fixed is None else (int(fixed[0]), int(fixed[1])),
                provenance=dict(raw.get("provenance", {})),
                verification=dict(raw.get("verification", {})),
                precision=precision,
                gate=gate,
            )
        except KeyError as exc:
            raise ModelDirError(f"{META_FILE} lacks the field {exc}; re-convert the model ('fastseg convert ... --force').") from exc
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            # int() of 1e400 (which JSON reads as infinity) or of NaN: name the field, not Python's words.
            where = _non_finite_path(raw) if isinstance(exc, OverflowError) or "NaN" in str(exc) else None
            if where is not None:
                value = _value_at(raw, where)
                why = "NaN" if value != value else "an overflow like 1e400 reads as infinity"
                raise ModelDirError(f"{META_FILE}: {where} is not a finite number ({why}); {_REFIX}.") from exc
            raise ModelDirError(f"{META_FILE} is invalid ({exc}); re-convert the model ('fastseg convert ... --force').") from exc
        check_meta(meta)
        return meta


def check_meta(meta: ModelMeta) -> None:
    """Refuse metadata whose fields disagree or cannot work (each message names the field).

    Raises:
        ModelDirError: e.g. 150 classes with 1 name, ``std`` 0, ``target_size`` [0, 0].
    """

    def bad(field_name: str, problem: str) -> ModelDirError:
        return ModelDirError(f"{META_FILE}: {field_name} {problem}; {_REFIX}.")

    if not meta.model_name:
        raise bad("model_name", "is empty")
    if not meta.input_name:
        raise bad("input_name", "is empty")
    if meta.num_classes < 1:
        raise bad("num_classes", f"is {meta.num_classes}; a model has at least 1 class")
    if len(meta.class_names) != meta.num_classes:
        raise bad(
            "class_names",
            f"has {len(meta.class_names)} name(s) for num_classes {meta.num_classes}; list one name per class",
        )
    if meta.palette and len(meta.palette) != meta.num_classes:
        raise bad("palette", f"has {len(meta.palette)} colour(s) for num_classes {meta.num_classes}; give one per class, or []")
    if any(not 0 <= c <= 255 for colour in meta.palette for c in colour):
        raise bad("palette", "has a colour component outside 0-255")
    pre = meta.preprocess
    if not all(math.isfinite(v) for v in (*pre.mean, *pre.std, pre.scale)):
        raise bad("preprocess", "has a mean, std or scale that is not a finite number")
    if any(v == 0 for v in pre.std):
        raise bad("preprocess.std", f"is {list(pre.std)}; a zero std divides by zero (PaddleX's default is 0.5)")
    if pre.scale <= 0:
        raise bad("preprocess.scale", f"is {pre.scale}; it must be > 0 (1/255 for 8-bit images)")
    max_side = 16384  # no segmentation network runs on more per side; larger is a typo or an attack
    if pre.resize is not None:
        width, height = pre.resize.target_size
        if not (1 <= width <= max_side and 1 <= height <= max_side):
            raise bad(
                "preprocess.resize.target_size",
                f"is {[width, height]}; give [width, height] from 1 to {max_side}, or remove resize for no resizing",
            )
        if pre.resize.size_divisor is not None and not 1 <= pre.resize.size_divisor <= 4096:
            raise bad("preprocess.resize.size_divisor", f"is {pre.resize.size_divisor}; use an int from 1 to 4096, or null")
        # The names fastseg.processing.INTERPOLATIONS maps to OpenCV (tests keep the two equal):
        # refused here, a bad name would fail every image instead of the model's load.
        interps = ("NEAREST", "LINEAR", "BICUBIC", "CUBIC", "AREA", "LANCZOS4")
        if pre.resize.interp.upper() not in interps:
            raise bad("preprocess.resize.interp", f"is {pre.resize.interp!r}; use one of {list(interps)}")
    if meta.fixed_hw is not None and not all(1 <= side <= max_side for side in meta.fixed_hw):
        raise bad("fixed_hw", f"is {list(meta.fixed_hw)}; give [height, width] from 1 to {max_side}, or null")
    if meta.opset < 1:
        raise bad("opset", f"is {meta.opset}")
    if (meta.precision == "fp32") != (meta.gate is None):
        raise bad("gate", f"does not match precision {meta.precision!r} (int8, bf16 and int8-bf16 carry a gate, fp32 none)")
    if meta.gate is not None and meta.gate.precision != meta.precision:
        raise bad("gate.precision", f"is {meta.gate.precision!r} but precision is {meta.precision!r}")


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _non_finite_path(raw: Any) -> str | None:
    """The first path (``palette[2][0]``) in parsed JSON that holds a non-finite number, or None.
    Iterative: a deeply nested document must not turn into a RecursionError here."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}" if path else str(key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def _value_at(raw: Any, path: str) -> Any:
    """The value at a ``_non_finite_path`` path (``palette[2][0]``, ``a.b``) of parsed JSON."""
    value = raw
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        value = value[int(index)] if index else value[key]
    return value


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is not a finite number")
    return number


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
    meta_path = model_dir / META_FILE
    max_bytes = 16 * 1024 * 1024  # a real fastseg.json is a few KB (a 10k-class name list under 1 MB)
    if meta_path.stat().st_size > max_bytes:
        raise ModelDirError(f"{meta_path} holds {meta_path.stat().st_size} bytes, over {max_bytes}; re-convert the model.")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelDirError(f"{meta_path} is not UTF-8 text ({exc}); re-convert the model.") from exc
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{meta_path} is not valid JSON ({exc}); re-convert the model.") from exc
    except RecursionError as exc:
        raise ModelDirError(f"{meta_path} nests arrays/objects too deeply to read; re-convert the model.") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ModelDirError(f"{meta_path} is invalid ({exc}); re-convert the model.") from exc
    return ModelMeta.from_json(raw)


def write_meta(model_dir: Path, meta: ModelMeta) -> Path:
    """Write ``fastseg.json`` atomically (temp file in the same dir, then rename)."""
    target = Path(model_dir) / META_FILE
    write_text_atomic(target, json.dumps(meta.to_json(), indent=2, ensure_ascii=False) + "\n")
    return target
