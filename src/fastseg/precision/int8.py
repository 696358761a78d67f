"""int8 by static post-training quantization: ONNX Runtime's QDQ format, calibrated on the
user's images (per-channel int8 weights, uint8 ones on x86 without VNNI; uint8 activations),
one ``model.onnx`` that both engines run with int8 kernels. The classifier head (the last
convolution and everything after it) stays float: quantising logits to 256 levels before the
argmax moves labels for no speed. ``fastseg.precision.quantize`` gates the result.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError, MissingDependencyError
from fastseg.model_dir import ModelMeta, ResizeSpec
from fastseg.precision.gate import load_for_gate
from fastseg.processing import preprocess_batch
from fastseg.tempdirs import kill_point, scratch_dir, tempfile_redirected

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fastseg-ort[quantize]'"


def head_nodes(model: Any) -> list[str]:
    """Names of the last Conv node and every node after it (the classifier head), which stay float."""
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    return [n.name for n in nodes[convs[-1] :] if n.name]


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


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _root_logger_errors_only() -> Iterator[None]:
    """ONNX Runtime's quantization tools warn through the root logger (``logging.warning``):
    "Axis 1 is out-of-range for weight ..." once per LayerNorm weight (599 lines while
    quantizing the 20 reference models). Inside this block the root logger's own records below
    ERROR are dropped, and a handler on it keeps ``logging.warning`` from calling ``basicConfig``
    (which would leave a stderr handler behind). Records of named loggers (fastseg's) pass: a
    logger's filters apply to its own records, not to those propagated from its children."""
    root = logging.getLogger()
    quiet, guard = _BelowError(), logging.NullHandler()
    root.addFilter(quiet)
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)
        root.removeFilter(quiet)


def weight_format(flags: Sequence[str] | None = None) -> str:
    """``u8s8`` (uint8 activations, int8 weights: VNNI and AMX multiply them natively), or
    ``u8u8`` on an x86 CPU without VNNI, where u8s8's 16-bit pair sums saturate. Measured on
    an AMD EPYC Zen 1 (avx2 only) with the real PP-HumanSegV2-Lite: u8s8 kept 98.74% of fp32's
    labels on 3 held-out portraits (worst 97.71%), u8u8 99.30% (worst 98.78%); u8u8 ran 1.09x
    u8s8's time there, and neither beat fp32 on that CPU."""
    from fastseg.engines.cpu import int8_weights_saturate

    return "u8u8" if int8_weights_saturate(flags) else "u8s8"


def quantize_onnx(
    src: Path, dst: Path, calib: CalibrationSet, input_name: str, *, method: str = "percentile", weights: str = "u8s8"
) -> str:
    """Write the QDQ int8 model of ``src`` to ``dst``, calibrated on ``calib``; returns the method used.
    ``weights``: ``weight_format()``'s ``u8s8`` or ``u8u8``.

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
            kill_point("quant-calibrating")  # tests: ONNX Runtime's temp files exist now
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
    # ONNX Runtime's own temp files (pre.quant.*, ort.quant.* with the augmented model) go into
    # the scratch dir too, so a killed run's leftovers are swept by the next fastseg run.
    # ORT's sessions inside quant_pre_process and the calibrators log at the process-wide level
    # (one "Removing initializer ..." warning per unused initializer, 9 on the real
    # PP-HumanSegV2-Lite): errors only, as fastseg's sessions log.
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    with scratch_dir("quant") as tmp, tempfile_redirected(tmp), _root_logger_errors_only():
        pre = tmp / "pre.onnx"
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
                    weight_type=q.QuantType.QUInt8 if weights == "u8u8" else q.QuantType.QInt8,
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


