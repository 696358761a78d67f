"""The OpenVINO engine: OpenVINO's own runtime on the same ``model.onnx``, behind the same
session interface as ONNX Runtime's (``run``/``close``/``runner``/``providers``).

Why OpenVINO's runtime (the ``openvino`` package) rather than ONNX Runtime's OpenVINO
execution provider: ``openvino`` installs beside ``onnxruntime`` (``pip install
"fastseg-ort[openvino]"``), while ``onnxruntime-openvino`` *replaces* the ``onnxruntime``
package and lags its releases (1.24 vs 1.32 when measured); both ran PP-LiteSeg-T at the same
speed here (1029 vs 1035 ms at 1024x2048). OpenVINO reads ONNX directly, dynamic H and W
included, and runs int8 QDQ models with its int8 kernels.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fastseg.engines.cpu import cpu_flags, require_bf16
from fastseg.engines.dilated_conv import dilated_convs_as_shifted_taps
from fastseg.engines.device import DeviceSpec, physical_cores
from fastseg.engines.ort import RuntimeOptions
from fastseg.engines.preprocess_graph import FUSED_INPUT, FusedPreprocess, fused_model_bytes
from fastseg.engines.session_base import Batch, CancelToken, SessionBase, TensorInfo, contiguous_input
from fastseg.errors import DeviceError, MissingDependencyError, ModelDirError
from fastseg.model_dir import BF16_PRECISIONS
from fastseg.offline import import_openvino_quietly

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fastseg-ort[openvino]'"


def import_openvino() -> Any:
    """The ``openvino`` module, or a MissingDependencyError naming the extra."""
    try:
        return import_openvino_quietly()  # without its import-time telemetry (fastseg.offline)
    except ImportError as exc:
        raise MissingDependencyError(
            f"The OpenVINO engine needs the openvino package ({exc}); install it with: {INSTALL_HINT}"
        ) from exc


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when it is not installed."""
    try:
        openvino = import_openvino_quietly()
    except ImportError:
        return None
    return str(openvino.get_version()).split("-")[0]


def openvino_reason(exc: BaseException, *, limit: int = 300) -> str:
    """OpenVINO's own words in ``exc``: its messages open with one "Exception from <file>:<line>:"
    line per layer it passed through, and the reason follows (first ``limit`` characters)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("Exception from ")]
    reason = " ".join(said) if said else (lines[0] if lines else type(exc).__name__)
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def openvino_device(spec: DeviceSpec) -> str:
    """OpenVINO's device name for a fastseg device: ``cpu`` -> CPU, ``openvino:GPU`` -> GPU,
    ``gpu:N`` -> GPU.N (Intel GPUs); other kinds have no OpenVINO device."""
    if spec.kind == "cpu":
        return "CPU"
    if spec.kind == "openvino":
        return spec.openvino_target
    if spec.kind == "gpu":
        return f"GPU.{spec.index}"
    raise DeviceError(f"The OpenVINO engine cannot run on {str(spec)!r}; use cpu, openvino:CPU|GPU|NPU or gpu:N (Intel).")


STATIC_SHAPES = 2
"""Input shapes per session that get a compiled model of their own (``OpenVINORunner``)."""


class OpenVINORunner:
    """Runs batches under a lock. OpenVINO's output tensor is reused by the next inference: with
    ``reuse_output`` (the CPU), ``run`` returns a view of it, and callers hold ``lock`` until they
    have consumed it, as under ONNX Runtime's IO binding; otherwise a copy the caller may keep.
    SeaFormer_tiny's 19.6 MB of logits at 1024x2048 cost ~4.8 ms a run in copies (52.3 -> 47.5
    ms, bf16, AMD EPYC Zen 5 with avx2 avx512f avx512_bf16 avx512_vnni, 2 cores; session 17): one
    by ``infer``'s result dictionary, which ``share_outputs`` now skips everywhere, and one here,
    with the fresh pages each needs.

    On the CPU, the first ``STATIC_SHAPES`` input shapes each get the model compiled for that
    exact shape, on first sight (as long as a compile takes: 0.4-1.6 s measured); later shapes
    run the dynamic-shape model. OpenVINO's CPU kernels for dynamic shapes were up to 2.8x
    slower (bf16 at 1024x2048, 2 cores, medians: SegFormer-B0 2,355 vs 831 ms, OCRNet-W18 2,767
    vs 2,398; PP-LiteSeg-B, SeaFormer_tiny equal), and a service or directory mostly sees one
    or two image sizes. A shape whose compile fails keeps the dynamic model.
    """

    mode: Literal["plain"] = "plain"

    def __init__(self, compiled: Any, specialise: Callable[[tuple[int, ...]], Any] | None = None, *,
                 reuse_output: bool = False) -> None:
        self.lock = threading.RLock()
        self.reuses_output = reuse_output
        self._compiled = compiled
        self._request: Any = compiled.create_infer_request()
        self._specialise = specialise
        self._by_shape: dict[tuple[int, ...], Any] = {}  # shape -> its infer request (None: dynamic)

    def run(self, batch_nchw: Batch, cancel: CancelToken | None = None) -> npt.NDArray[Any]:
        """Run one batch; ``cancel`` stops it from another thread (``InferRequest.cancel()``),
        then ``RunCancelledError`` is raised."""
        batch_nchw = contiguous_input(batch_nchw)
        with self.lock:
            if self._request is None:
                raise DeviceError("This OpenVINO session is closed; create a new one.")
            request = self._request_for(tuple(int(d) for d in batch_nchw.shape))
            # The batch is read in place (it lives until the run returns) and the result is a view: no copies.
            if cancel is None:
                request.infer({0: batch_nchw}, share_inputs=True, share_outputs=True)
            else:
                with cancel.guard(request.cancel):
                    request.start_async({0: batch_nchw}, share_inputs=True)
                    request.wait()
            output = request.get_output_tensor(0).data
            return output if self.reuses_output else np.array(output, copy=True)

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        """The infer request for ``shape``: its own compiled model's, compiled on first sight
        for the first ``STATIC_SHAPES`` shapes, else the dynamic model's. After the last
        attempt the source model is let go (its weights' memory)."""
        if shape not in self._by_shape and self._specialise is not None:
            try:
                self._by_shape[shape] = self._specialise(shape).create_infer_request()
            except RuntimeError as exc:
                log.warning("OpenVINO could not compile the model for input %s (%s); it runs the dynamic-shape model",
                            list(shape), openvino_reason(exc))
                self._by_shape[shape] = None
            if len(self._by_shape) >= STATIC_SHAPES:
                self._specialise = None
        return self._by_shape.get(shape) or self._request

    def close(self) -> None:
        with self.lock:
            self._request = None
            self._compiled = None
            self._by_shape.clear()


class OpenVINOSession(SessionBase):
    """A compiled OpenVINO model with the session interface fastseg's run loop uses."""

    engine = "openvino"
    runner: OpenVINORunner

    def __init__(
        self, model_path: Path, device: DeviceSpec, target: str, compiled: Any,
        specialise: Callable[[tuple[int, ...]], Any] | None = None,
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.target = target
        self.providers = [f"OpenVINO:{target}"]
        self.inputs = tuple(_tensor_info(p) for p in compiled.inputs)
        self.outputs = tuple(_tensor_info(p) for p in compiled.outputs)
        self.runner = OpenVINORunner(compiled, specialise, reuse_output=target == "CPU")

    def close(self) -> None:
        """Release the compiled model."""
        self.runner.close()


def _tensor_info(port: Any) -> TensorInfo:
    shape = port.get_partial_shape()
    dims: tuple[int | str | None, ...] = tuple(d.get_length() if d.is_static else None for d in shape)
    names = port.get_names()
    # The fused input keeps its name: OpenVINO may give the parameter its first node's output
    # name too (the channel Gather, when it runs in NHWC) and answer that one as "any name".
    name = FUSED_INPUT if FUSED_INPUT in names else port.get_any_name() if names else ""
    return TensorInfo(name, dims, _ort_type(port.get_element_type()))


def _ort_type(element_type: Any) -> str:
    """OpenVINO's element type in ONNX Runtime's spelling (``tensor(float)``, ``tensor(uint8)``), so
    ``TensorInfo.type`` reads the same whichever engine runs."""
    try:
        name = np.dtype(element_type.to_dtype()).name
    except (TypeError, RuntimeError, AttributeError):
        return str(element_type)
    return "tensor(float)" if name == "float32" else "tensor(double)" if name == "float64" else f"tensor({name})"


def _model_source(model_path: Path, fused: FusedPreprocess | None, *, rewrite_dilations: bool) -> str | bytes:
    """What OpenVINO reads: the file itself, or the graph with the pre-processing prepended and,
    for bf16 on AMX, its large-dilation convolutions as nine shifted 1x1 ones
    (``engines/dilated_conv.py``). A graph the rewrite does not change is read from the file."""
    edit = dilated_convs_as_shifted_taps if rewrite_dilations else None
    if fused is not None:
        return fused_model_bytes(model_path, fused, edit, layout_last=True)  # NHWC: see preprocess_graph
    if edit is None:
        return str(model_path)
    import onnx

    model = onnx.load(str(model_path))
    if not edit(model):
        return str(model_path)
    try:
        return bytes(model.SerializeToString())
    except ValueError:  # protobuf's 2 GB limit: the graph as it is still runs
        log.warning("%s is too large to rewrite in memory; its dilated convolutions run as they are", model_path)
        return str(model_path)


def create_openvino_session(
    model_path: Path | str,
    device: DeviceSpec,
    options: RuntimeOptions | None = None,
    *,
    cache_dir: Path | None = None,
    precision: str = "fp32",
    fused: FusedPreprocess | None = None,
) -> OpenVINOSession:
    """Compile ``model_path`` (ONNX) with OpenVINO for ``device``.

    Threads follow ``options.intra_op_threads`` (default: physical cores) with the LATENCY
    hint, as ONNX Runtime's sessions do. ``cache_dir`` enables OpenVINO's compiled-model cache.
    ``precision``: ``fp32`` and ``int8`` (QDQ graphs) compile with f32 as the inference
    precision; ``bf16`` and ``int8-bf16`` (a QDQ graph whose unquantized layers run in bf16)
    with bf16, on a CPU that has bf16 instructions only. ``fused``
    prepends the pre-processing: ``run`` then takes uint8 BGR NHWC images.

    Raises:
        MissingDependencyError: openvino is not installed.
        DeviceError: the OpenVINO device is not present on this machine, or bf16 on a CPU without it.
        ModelDirError: the model is missing or OpenVINO cannot read it.
    """
    ov = import_openvino()
    options = options or RuntimeOptions()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelDirError(f"ONNX model {str(model_path)!r} does not exist; convert the model first.")
    target = openvino_device(device)
    core = ov.Core()
    present = list(core.available_devices)
    if target.split(".")[0] not in {d.split(".")[0] for d in present}:
        raise DeviceError(f"OpenVINO has no {target} device on this machine; it has {present}. Use openvino:CPU.")
    in_bf16 = precision in BF16_PRECISIONS
    if in_bf16 and target == "CPU":
        require_bf16(precision=precision)
    # f32 explicitly unless bf16 is asked for: on CPUs with AVX512-BF16 or AMX, OpenVINO's
    # default is bf16, which moved 5.9% of a random-weight PP-LiteSeg-T's labels (max |logit
    # diff| 11.6): bf16 must be a gated model directory, never a silent default. int8-bf16 is
    # the int8 graph with bf16 wherever it is not quantized (OpenVINO's mixed precision).
    hint = "bf16" if in_bf16 else "f32"
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    if target == "CPU":
        config["INFERENCE_NUM_THREADS"] = options.intra_op_threads or physical_cores()
    if cache_dir is not None:
        core.set_property({"CACHE_DIR": str(cache_dir)})
    try:
        # AMX only: the taps lose ~10% on AVX512-BF16 alone (Zen 5), as they do in f32 (dilated_conv.py)
        rewrite_dilations = precision == "bf16" and target == "CPU" and "amx_bf16" in cpu_flags()
        model = core.read_model(_model_source(model_path, fused, rewrite_dilations=rewrite_dilations))
        compiled = core.compile_model(model, target, config)
    except RuntimeError as exc:
        raise ModelDirError(f"OpenVINO cannot load {str(model_path)!r}: {str(exc).splitlines()[0]}") from exc
    log.info("OpenVINO %s session for %s on %s", openvino_version(), model_path.name, target)
    specialise = None
    if target == "CPU" and model.inputs[0].get_partial_shape().is_dynamic:
        def specialise(shape: tuple[int, ...]) -> Any:
            fixed = model.clone()
            fixed.reshape({fixed.inputs[0]: ov.PartialShape(list(shape))})
            return core.compile_model(fixed, target, config)

    session = OpenVINOSession(model_path, device, target, compiled, specialise)
    session.precision = precision if precision in BF16_PRECISIONS else "fp32"
    session.fused_preprocess = fused is not None
    return session
