"""``fastseg quantize``: static post-training int8, calibrated on the user's images, behind an
accuracy gate.

The int8 model is ONNX Runtime's QDQ format (per-channel int8 weights, uint8 activations,
MinMax calibration): one ``model.onnx`` that both engines run with int8 kernels (ONNX Runtime's
QLinear fusions, OpenVINO's low-precision transformations), so ``--engine`` only chooses which
engine the gate, and later ``fastseg tune``, measures. The network's head (the classifier
convolution and everything after it: upsampling, argmax) stays float: quantising logits to 256
levels before the argmax would move labels for no speed.

The gate runs fp32 and int8 on held-out images (never the calibration images) with the same
engine and pools label agreement over their pixels. Below ``min_agreement`` nothing is written.
``min_agreement=0`` writes an ungated model, marked ``"gated": false`` in its metadata and shown
as UNGATED wherever fastseg prints the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError, MissingDependencyError, ModelDirError, QuantizationGateError
from fastseg.model_dir import ONNX_FILE, ModelMeta, ResizeSpec, read_meta, write_meta
from fastseg.processing import IMAGE_SUFFIXES, decode_image, preprocess_batch

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fastseg-ort[quantize]'"


@dataclass(frozen=True)
class GateResult:
    """How the int8 model compares with fp32 on held-out images."""

    engine: str
    agreement_pct: float
    min_image_agreement_pct: float
    val_images: int
    calib_images: int
    min_agreement_pct: float
    calibration: str = "percentile"
    augmented: bool = True

    @property
    def gated(self) -> bool:
        return self.min_agreement_pct > 0

    @property
    def passed(self) -> bool:
        return self.agreement_pct >= self.min_agreement_pct

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": "int8",
            "engine": self.engine,
            "gated": self.gated,
            "agreement_pct": round(self.agreement_pct, 4),
            "min_image_agreement_pct": round(self.min_image_agreement_pct, 4),
            "min_agreement_pct": self.min_agreement_pct,
            "val_images": self.val_images,
            "calib_images": self.calib_images,
            "format": "onnx-qdq u8s8 per-channel",
            "calibration": self.calibration + (" + mirror/brightness" if self.augmented else ""),
        }


def image_files(folder: Path) -> list[Path]:
    """Images in ``folder`` (recursive, sorted).

    Raises:
        InputError: not a directory, or no images in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a directory of images.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def split_images(calib: Sequence[Path], val: Sequence[Path] | None) -> tuple[list[Path], list[Path]]:
    """(calibration, held-out) images. Without ``val``, every 4th calibration image is held out.

    Raises:
        InputError: too few images, or a validation image that is also a calibration image
            (same file or same content).
    """
    calib = list(calib)
    if val is None:
        if len(calib) < 2:
            raise InputError("Quantization needs >= 2 images to hold one out for the gate; add images or pass --val DIR.")
        held = calib[::4]
        return [p for p in calib if p not in held], held
    digest = {_sha256(p): p for p in calib}
    overlap = [p for p in val if _sha256(p) in digest]
    if overlap:
        raise InputError(
            f"{len(overlap)} --val image(s) are also calibration images (e.g. {str(overlap[0])!r}); "
            "the gate must use held-out images: pass disjoint folders."
        )
    return calib, list(val)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def head_nodes(model: Any) -> list[str]:
    """Names of the last Conv node and every node after it (the classifier head), which stay float."""
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    return [n.name for n in nodes[convs[-1] :] if n.name]


def load_for_gate(path: Path, meta: ModelMeta, max_side: int | None) -> npt.NDArray[np.uint8]:
    """Decode ``path``; downscale (area) to ``max_side`` when the model has no Resize of its own."""
    import cv2

    img = decode_image(Path(path).read_bytes(), source=repr(str(path)))
    if max_side and meta.preprocess.resize is None and meta.dynamic_hw and max(img.shape[:2]) > max_side:
        scale = max_side / max(img.shape[:2])
        size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
        img = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return img


def calibration_variants(img: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.uint8]]:
    """The image, its mirror, and 0.8x / 1.2x brightness: the lighting and pose a deployed model
    meets beyond the few calibration photos (on the real PP-HumanSegV2-Lite this took held-out
    label agreement from 98.8% to 99.2%)."""
    import cv2

    return [
        img,
        np.ascontiguousarray(img[:, ::-1]),
        np.asarray(cv2.convertScaleAbs(img, alpha=0.8), dtype=np.uint8),
        np.asarray(cv2.convertScaleAbs(img, alpha=1.2), dtype=np.uint8),
    ]


class CalibrationSet:
    """Preprocessed network inputs for calibration, made one at a time (bounded memory)."""

    def __init__(self, paths: Sequence[Path], meta: ModelMeta, max_side: int | None, *, augment: bool) -> None:
        self._meta = meta
        self._items = [(p, k) for p in paths for k in range(4 if augment else 1)]
        self._max_side = max_side
        self._resize = meta.preprocess.resize
        if meta.fixed_hw is not None and not meta.dynamic_hw:
            self._resize = ResizeSpec(target_size=(meta.fixed_hw[1], meta.fixed_hw[0]))

    def __len__(self) -> int:
        return len(self._items)

    def batch(self, index: int) -> npt.NDArray[np.float32]:
        path, variant = self._items[index]
        img = calibration_variants(load_for_gate(path, self._meta, self._max_side))[variant]
        return preprocess_batch([img], self._meta.preprocess, resize=self._resize)


def _import_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise MissingDependencyError(f"int8 quantization needs onnx and ml_dtypes ({exc}): {INSTALL_HINT}") from exc
    return quantization


CALIBRATION_METHODS = ("percentile", "minmax", "entropy")


def quantize_onnx(src: Path, dst: Path, calib: CalibrationSet, input_name: str, *, method: str = "percentile") -> str:
    """Write the QDQ int8 model of ``src`` to ``dst``, calibrated on ``calib``; returns the method used.

    ``percentile`` (99.99th, the default) clips activation outliers that MinMax lets stretch the
    int8 grid. Calibration runs one image at a time (``CalibStridedMinMax`` = 1, which ONNX
    Runtime applies to every calibrator), so histogram methods do not hold every image's
    activations at once. ONNX Runtime's histogram cannot bin a tensor whose range is too narrow
    for its 2048 bins (numpy's "Too many bins for data range", seen on PP-LiteSeg-B); such a
    model is calibrated with MinMax instead, with a warning, and the gate then judges it.
    """
    q = _import_quantization()
    import onnx

    class Reader(q.CalibrationDataReader):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self._range = range(len(calib))
            self._pos = 0

        def __len__(self) -> int:
            return len(calib)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._range = range(start_index, min(end_index, len(calib)))
            self._pos = 0

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            if self._pos >= len(self._range):
                return None
            self._pos += 1
            return {input_name: calib.batch(self._range[self._pos - 1])}

    methods = {
        "percentile": (q.CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
        "minmax": (q.CalibrationMethod.MinMax, {}),
        "entropy": (q.CalibrationMethod.Entropy, {}),
    }
    if method not in methods:
        raise InputError(f"Unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}.")
    calibrate_method, extra = methods[method]
    with tempfile.TemporaryDirectory(prefix="fastseg-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # BatchNorm folding + ONNX shape inference, as ORT's quantization docs advise. Symbolic
            # shape inference is skipped: it cannot complete on dynamic-H,W segmentation graphs.
            q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation only
            log.info("quant_pre_process skipped (%s); quantizing the model as is", exc)
            pre = Path(src)
        keep_float = head_nodes(onnx.load(str(pre)))
        chatter = io.StringIO()  # ORT's calibrators print progress to stdout; keep it for debugging only

        def run(calibrate_method: Any, extra: dict[str, Any]) -> None:
            # A fresh ModelProto per attempt: quantize_static may move its weights to external
            # data in a temp dir it deletes, which would leave a retry pointing at nothing.
            model = onnx.load(str(pre))
            with contextlib.redirect_stdout(chatter):
                q.quantize_static(
                    model,
                    str(dst),
                    Reader(),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=q.QuantType.QUInt8,
                    weight_type=q.QuantType.QInt8,
                    nodes_to_exclude=keep_float,
                    calibrate_method=calibrate_method,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibStridedMinMax": 1, **extra},
                )

        try:
            run(calibrate_method, extra)
        except ValueError as exc:
            if method == "minmax" or "bins" not in str(exc):
                raise
            log.warning("%s calibration failed (%s); calibrating with MinMax instead.", method, exc)
            run(q.CalibrationMethod.MinMax, {})
            method = "minmax"
        log.debug("ONNX Runtime calibration output:\n%s", chatter.getvalue())
    return method


def label_agreement(fp32: Any, int8: Any, images: Sequence[Path], max_side: int | None) -> tuple[float, float]:
    """(pooled %, worst image %) of pixels where ``int8`` predicts ``fp32``'s label."""
    same = total = 0
    worst = 100.0
    for path in images:
        img = load_for_gate(path, fp32.meta, max_side)
        a = next(iter(fp32.predict(img)))["pred"]
        b = next(iter(int8.predict(img)))["pred"]
        equal = int(np.count_nonzero(a == b))
        same += equal
        total += a.size
        worst = min(worst, 100.0 * equal / a.size)
    return 100.0 * same / total, worst


def quantize_model(
    model_dir: Path,
    calib_dir: Path,
    out_dir: Path,
    *,
    engine: str = "ort",
    min_agreement: float = 99.0,
    val_dir: Path | None = None,
    max_side: int | None = 1024,
    method: str = "percentile",
    augment: bool = True,
    force: bool = False,
    register: bool = True,
) -> GateResult:
    """Quantize ``model_dir`` to int8 into ``out_dir`` if it keeps ``min_agreement`` % of labels.

    Args:
        model_dir: a converted fp32 model directory.
        calib_dir: images like the ones the model will see (>= 2 without ``val_dir``).
        out_dir: the new model directory (a normal one: Segmenter, predict, serve, bench load it).
        engine: ``ort`` or ``openvino``: which engine the gate runs both models on.
        min_agreement: % of held-out pixels whose int8 label must equal fp32's; 0 = ungated.
        val_dir: held-out images; default: every 4th calibration image is held out instead.
        max_side: images larger than this are downscaled (area) first when the model has no
            Resize of its own, bounding calibration time; None = full size.
        method: calibration: ``percentile`` (99.99th), ``minmax`` or ``entropy``.
        augment: also calibrate on each image's mirror and 0.8x/1.2x brightness.
        force: replace an existing ``out_dir``.
        register: list the variant in ``model_dir``'s ``variants.json`` for ``fastseg tune``.

    Raises:
        QuantizationGateError: below the gate (nothing written); InputError, ModelDirError.
    """
    from fastseg.engines import check_engine
    from fastseg.engines.tuning import precision_of, register_variant
    from fastseg.segmenter import Segmenter

    check_engine(engine)
    if engine == "auto":
        raise InputError("quantize --engine must be ort or openvino (the engine the gate measures).")
    if not 0.0 <= min_agreement <= 100.0:
        raise InputError(f"--min-agreement must be 0..100, got {min_agreement}.")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = read_meta(model_dir)
    if precision_of(model_dir) != "fp32":
        raise ModelDirError(f"{str(model_dir)!r} is already int8; quantize its fp32 model instead.")
    if out_dir.exists() and not force:
        raise ModelDirError(f"{str(out_dir)!r} already exists; pass --force to replace it, or choose another -o.")
    if out_dir.resolve() == model_dir.resolve():
        raise ModelDirError("The int8 output must not be the fp32 model directory itself; choose another -o.")
    calib, val = split_images(image_files(calib_dir), None if val_dir is None else image_files(val_dir))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared model directory from other users
    try:
        log.info("Calibrating on %d image(s), gating on %d held-out image(s)", len(calib), len(val))
        calib_set = CalibrationSet(calib, meta, max_side, augment=augment)
        method = quantize_onnx(model_dir / ONNX_FILE, staging / ONNX_FILE, calib_set, meta.input_name, method=method)
        write_meta(staging, meta)  # the gate's Segmenter needs a model dir; the gate is added below
        with Segmenter(model_dir, engine=engine) as fp32, Segmenter(staging, engine=engine) as int8:
            pooled, worst = label_agreement(fp32, int8, val, max_side)
        result = GateResult(engine, pooled, worst, len(val), len(calib), float(min_agreement), method, augment)
        if not result.passed:
            raise QuantizationGateError(
                f"int8 keeps {pooled:.2f}% of fp32's labels on {len(val)} held-out image(s) with {engine} "
                f"(worst image {worst:.2f}%; gate {min_agreement:.2f}%): nothing written. Calibrate on more "
                "images like your data, or pass --min-agreement 0 for an ungated model (marked so)."
            )
        provenance = {**meta.provenance, "quantized_from": str(model_dir.resolve())}
        write_meta(staging, replace(meta, provenance=provenance, verification={**meta.verification, "int8_gate": result.to_json()}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if register:
        register_variant(model_dir, out_dir, result.to_json())
    return result


def gate_label(verification: dict[str, Any]) -> str:
    """How a model's precision is shown to users: ``fp32``, ``int8 (gate 99.4%)``, ``int8 UNGATED``."""
    gate = verification.get("int8_gate")
    if not gate:
        return "fp32"
    if not gate.get("gated", True):
        return "int8 UNGATED"
    return f"int8 (keeps {float(gate.get('agreement_pct', 0)):.2f}% of fp32 labels)"
