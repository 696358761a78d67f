"""ONNX Runtime sessions: device -> execution providers, session creation, run loop.

Devices are parsed by ``fastseg.engines.device``. ``resolve_providers`` is a
pure function so every device form is tested against a given list of available providers;
``create_session`` is the only place that touches onnxruntime's global provider list.

Never imports cv2, zoo or processing (see STYLE.md's layout).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from fastseg.engines.device import ACCEPTED_FORMS, DeviceKind, DeviceSpec, parse_device, physical_cores
from fastseg.errors import DeviceError, ModelDirError
from fastseg.engines.gpu_libs import CUDA_EP, TRT_EP
from fastseg.engines.preprocess_graph import FusedPreprocess, fused_model_bytes
from fastseg.engines.session_base import Batch, CancelToken, SessionBase, TensorInfo, contiguous_input

log = logging.getLogger(__name__)


RunMode = Literal["auto", "iobinding", "plain"]
GraphOptimization = Literal["disable", "basic", "extended", "all"]
ConvAlgoSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]

CPU_EP = "CPUExecutionProvider"
CANN_EP = "CANNExecutionProvider"
OPENVINO_EP = "OpenVINOExecutionProvider"
# Measured on CPU (docs/runtime.md, "IO binding"): plain session.run is as fast or faster,
# so "auto" binds only on accelerators, where it saves a host<->device copy per output.
_AUTO_IOBINDING = frozenset({"gpu", "tensorrt", "npu"})
_MAX_CACHED_SHAPES = 8


@dataclass(frozen=True)
class RuntimeOptions:
    """Session and provider options.

    Attributes:
        intra_op_threads: threads inside one operator; None = physical cores available.
        inter_op_threads: threads across independent operators; 0 = ONNX Runtime's default.
        graph_optimization: ONNX Runtime graph optimisation level.
        enable_tensorrt: put TensorRT before CUDA for ``gpu:N`` (``trt:N`` implies it).
        trt_fp16: let TensorRT build FP16 engines.
        trt_engine_cache_dir: where TensorRT keeps built engines (None = no cache).
        cudnn_conv_algo_search: CUDA EP convolution algorithm search.
        optimized_model_path: optimised-model cache. Written on the first session; a later
            session whose cache is newer than the model loads it with optimisation off
            (faster start). Same machine and providers only: ALL-level graphs are hardware specific.
        enable_profiling: write an ONNX Runtime JSON profile (path logged on close).
        io_binding: "plain" (session.run), "iobinding", or "auto" (the measured choice per device).
        ort_log_level: ONNX Runtime's own log severity (0 verbose .. 4 fatal); 3 = errors only,
            which hides graph-cleanup warnings such as unused initializers in converted models.
        enable_mem_pattern: ONNX Runtime's memory pattern (after the first run of an input
            shape, one block for all of that shape's intermediates). Off by default: on
            SegFormer-B2 at 1024x2048 it raised peak RSS from 5.9 to 9.2 GB on the second run
            (the block does not fit the arena's freed chunks, so the arena grows); off gives
            identical labels at the same speed (measured: 0.99x on SegFormer-B2, 1.00x on
            PP-LiteSeg-T; docs/runtime.md, "Memory: SegFormer at 1024x2048").
        enable_cpu_mem_arena: ONNX Runtime's CPU arena (freed buffers kept for reuse). Off
            returns large intermediates to the OS after each run: SegFormer-B2 at 1024x2048
            peaks at 3.7 GB instead of 6.5 GB, identical labels, at the cost of fresh page
            faults every run (measured: 1.70x the time on SegFormer-B2, 1.27x on PP-LiteSeg-T).
    """

    intra_op_threads: int | None = None
    inter_op_threads: int = 0
    graph_optimization: GraphOptimization = "all"
    enable_tensorrt: bool = False
    trt_fp16: bool = False
    trt_engine_cache_dir: Path | None = None
    cudnn_conv_algo_search: ConvAlgoSearch = "EXHAUSTIVE"
    optimized_model_path: Path | None = None
    enable_profiling: bool = False
    io_binding: RunMode = "auto"
    ort_log_level: int = 3
    enable_mem_pattern: bool = False
    enable_cpu_mem_arena: bool = True

    def __post_init__(self) -> None:
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise DeviceError(f"intra_op_threads must be >= 1 or None (auto), got {self.intra_op_threads}.")
        if self.inter_op_threads < 0:
            raise DeviceError(f"inter_op_threads must be >= 0, got {self.inter_op_threads}.")
        if self.graph_optimization not in ("disable", "basic", "extended", "all"):
            raise DeviceError(
                f"graph_optimization {self.graph_optimization!r} is not one of 'disable', 'basic', 'extended', 'all'."
            )
        if self.cudnn_conv_algo_search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            raise DeviceError(
                f"cudnn_conv_algo_search {self.cudnn_conv_algo_search!r} is not one of EXHAUSTIVE, HEURISTIC, DEFAULT."
            )
        if not 0 <= self.ort_log_level <= 4:
            raise DeviceError(f"ort_log_level must be 0 (verbose) .. 4 (fatal), got {self.ort_log_level}.")
        if self.io_binding not in ("auto", "iobinding", "plain"):
            raise DeviceError(f"io_binding {self.io_binding!r} is not one of 'auto', 'iobinding', 'plain'.")
        for flag in ("enable_mem_pattern", "enable_cpu_mem_arena"):
            if not isinstance(getattr(self, flag), bool):
                raise DeviceError(f"{flag} must be True or False, got {getattr(self, flag)!r}.")


FALLBACK_HINT = " Or pass allow_fallback=True to run on the CPU instead."
"""The last sentence of a missing-accelerator error (the command line says ``--allow_fallback``)."""


def _unavailable(spec: DeviceSpec, wanted: str, available: Sequence[str], allow_fallback: bool) -> None:
    msg = (
        f"Device {str(spec)!r} needs {wanted}, which this onnxruntime does not offer; "
        f"available providers: {list(available)}."
    )
    if not allow_fallback:
        hint = {
            CUDA_EP: " Install the GPU build: pip uninstall onnxruntime && pip install 'fastseg-ort[gpu]'.",
            TRT_EP: " Install onnxruntime-gpu with TensorRT libraries, or use device 'gpu:N' without TensorRT.",
            CANN_EP: " Install onnxruntime-cann for Ascend NPUs.",
            OPENVINO_EP: " Install OpenVINO: pip install 'fastseg-ort[openvino]'.",
        }.get(wanted, "")
        raise DeviceError(msg + hint + FALLBACK_HINT)
    log.warning("%s Falling back to the CPU, as allowed.", msg)


def resolve_providers(
    device_spec: DeviceSpec,
    available: Sequence[str],
    *,
    options: RuntimeOptions,
    allow_fallback: bool,
) -> list[tuple[str, dict[str, Any]]]:
    """Map a device to the ordered (provider, provider_options) list for ``InferenceSession``.

    ``gpu:N`` -> [TensorRT (when asked), CUDA(device_id=N), CPU]; ``npu:N`` -> [CANN, CPU];
    ``openvino:T`` -> [OpenVINO(device_type=T), CPU]. CPU always comes last so operators an
    accelerator lacks still run.

    Raises:
        DeviceError: the accelerator is not in ``available`` and ``allow_fallback`` is False.
    """
    cpu: tuple[str, dict[str, Any]] = (CPU_EP, {})
    spec = device_spec
    if spec.kind == "cpu":
        return [cpu]
    if spec.kind == "openvino":
        if OPENVINO_EP not in available:
            _unavailable(spec, OPENVINO_EP, available, allow_fallback)
            return [cpu]
        return [(OPENVINO_EP, {"device_type": spec.openvino_target}), cpu]
    if spec.kind == "npu":
        if CANN_EP not in available:
            _unavailable(spec, CANN_EP, available, allow_fallback)
            return [cpu]
        return [(CANN_EP, {"device_id": spec.index}), cpu]
    # gpu / tensorrt
    providers: list[tuple[str, dict[str, Any]]] = []
    if spec.kind == "tensorrt" or options.enable_tensorrt:
        if TRT_EP in available:
            trt: dict[str, Any] = {"device_id": spec.index, "trt_fp16_enable": options.trt_fp16}
            if options.trt_engine_cache_dir is not None:
                trt["trt_engine_cache_enable"] = True
                trt["trt_engine_cache_path"] = str(options.trt_engine_cache_dir)
            providers.append((TRT_EP, trt))
        else:
            _unavailable(spec, TRT_EP, available, allow_fallback)
    if CUDA_EP in available:
        providers.append(
            (CUDA_EP, {"device_id": spec.index, "cudnn_conv_algo_search": options.cudnn_conv_algo_search})
        )
    elif not providers:
        _unavailable(spec, CUDA_EP, available, allow_fallback)
    providers.append(cpu)
    return providers


class Runner:
    """Runs one float32 NCHW batch through a session, plain or with IO binding.

    IO binding: the input is bound from the caller's C-contiguous float32 array without a copy
    (``bind_cpu_input``); the output is bound to a numpy buffer kept per input shape and reused
    on every later run of that shape (the first run of a new shape is a plain run whose result
    becomes the buffer, so dynamic output shapes need no guessing). Up to 8 shapes are kept.

    With IO binding the returned array is that reused buffer: it is overwritten by the next run
    of the same shape, so copy it if you keep it. The lock makes concurrent ``run`` calls safe
    but not the buffer's reuse; callers that share a Runner across threads hold ``lock`` until
    they are done with the result (``Segmenter`` does).
    """

    def __init__(self, session: Any, input_name: str, output_name: str, *, mode: Literal["iobinding", "plain"]) -> None:
        self._session = session
        self._input = input_name
        self._output = output_name
        self.mode = mode
        self.lock = threading.RLock()
        self._binding: Any = session.io_binding() if mode == "iobinding" else None
        self._buffers: OrderedDict[tuple[int, ...], npt.NDArray[Any]] = OrderedDict()
        self._bound_shape: tuple[int, ...] | None = None

    @property
    def reuses_output(self) -> bool:
        """True under IO binding: ``run`` returns the buffer the next run of that shape overwrites."""
        return self._binding is not None

    def run(self, batch_nchw: Batch, cancel: CancelToken | None = None) -> npt.NDArray[Any]:
        """Run the network on ``batch_nchw`` (float32, [N,3,H,W], C-contiguous); returns its first output.

        ``cancel`` stops the run from another thread: ONNX Runtime checks ``RunOptions.terminate``
        between nodes (and in Loop/If bodies), then ``RunCancelledError`` is raised.
        """
        import onnxruntime as ort

        batch_nchw = contiguous_input(batch_nchw)
        options = ort.RunOptions()
        with contextlib.nullcontext() if cancel is None else cancel.guard(partial(setattr, options, "terminate", True)):
            if self._binding is None:
                return self._session.run([self._output], {self._input: batch_nchw}, options)[0]  # type: ignore[no-any-return]
            with self.lock:
                return self._run_bound(batch_nchw, options)

    def _run_bound(self, batch: Batch, options: Any) -> npt.NDArray[Any]:
        import onnxruntime as ort

        shape = tuple(batch.shape)
        out = self._buffers.get(shape)
        if out is None:  # new shape: one plain run tells the output shape; its result becomes the buffer
            out = np.ascontiguousarray(self._session.run([self._output], {self._input: batch}, options)[0])
            self._buffers[shape] = out
            if len(self._buffers) > _MAX_CACHED_SHAPES:
                self._buffers.popitem(last=False)
            self._bound_shape = None
            return out
        self._buffers.move_to_end(shape)
        io = self._binding
        io.bind_cpu_input(self._input, batch)
        if self._bound_shape != shape:  # fast path: the same shape as last time keeps its output binding
            io.bind_ortvalue_output(self._output, ort.OrtValue.ortvalue_from_numpy(out))
            self._bound_shape = shape
        self._session.run_with_iobinding(io, options)
        return out

    def cached_output(self, shape: tuple[int, ...]) -> npt.NDArray[Any] | None:
        """The reused output buffer for input ``shape`` (None before its first run); for tests."""
        return self._buffers.get(tuple(shape))


@dataclass
class Session(SessionBase):
    """An ONNX Runtime session with its IO description and run loop; close it or use ``with``."""

    engine: ClassVar[str] = "ort"
    model_path: Path
    device: DeviceSpec
    providers: list[str]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    runner: Runner
    _ort: Any = field(repr=False)

    def _check_open(self) -> None:
        if self._ort is None:
            raise DeviceError(f"Session for {self.model_path} is closed; create a new one.")

    def close(self) -> None:
        """Release the session (ends profiling, frees device memory)."""
        if self._ort is not None:
            if self._ort.get_session_options().enable_profiling:
                log.info("ONNX Runtime profile written to %s", self._ort.end_profiling())
            self._ort = None
            self.runner._session = None
            self.runner._binding = None


def choose_run_mode(
    options: RuntimeOptions, device_spec: DeviceSpec, providers_in_use: Sequence[str]
) -> Literal["iobinding", "plain"]:
    """The run loop for a session: the explicit choice, or for "auto" the measured one (IO
    binding on an accelerator that actually runs the graph, plain ``session.run`` on CPU)."""
    if options.io_binding != "auto":
        return options.io_binding
    on_accelerator = device_spec.kind in _AUTO_IOBINDING and providers_in_use[:1] != [CPU_EP]
    return "iobinding" if on_accelerator else "plain"


def session_options(options: RuntimeOptions) -> Any:
    """Build ``onnxruntime.SessionOptions`` from ``options``.

    The intra-op threads spin inside a run but stop as soon as it returns
    (``session.force_spinning_stop``): left spinning, they took the cores from the next image's
    decoding, 16-17 ms instead of 10-11 for a 2048x1024 PNG on 2 cores (docs/engines.md).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.intra_op_num_threads = options.intra_op_threads or physical_cores()
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.graph_optimization]
    if options.optimized_model_path is not None:
        Path(options.optimized_model_path).parent.mkdir(parents=True, exist_ok=True)
        so.optimized_model_filepath = str(options.optimized_model_path)
    so.enable_profiling = options.enable_profiling
    so.log_severity_level = options.ort_log_level
    so.enable_mem_pattern = options.enable_mem_pattern
    so.enable_cpu_mem_arena = options.enable_cpu_mem_arena
    return so


def _use_optimized_cache(
    model_path: Path, options: RuntimeOptions, fused: FusedPreprocess | None = None
) -> tuple[Path | None, RuntimeOptions]:
    """The optimised-model cache to load and the options to load it with (already optimised, so
    optimisation is off) when it holds this very graph: newer than ``model_path``, and stamped
    (``<cache>.fused``, written once ORT has written the cache, so a half-written cache has none)
    for the same pre-processing prefix, ``fused`` or the plain graph. Else (None, ``options``): the
    graph is built and ORT writes the cache."""
    cache = options.optimized_model_path
    if cache is None:
        return None, options
    cache, stamp = Path(cache), _fused_stamp(Path(cache))
    prefix = stamp.read_text(encoding="utf-8") if stamp.is_file() else None
    if cache.is_file() and cache.stat().st_mtime >= model_path.stat().st_mtime and prefix == _prefix_key(fused):
        return cache, replace(options, graph_optimization="disable", optimized_model_path=None)
    stamp.unlink(missing_ok=True)  # the cache about to be written is not what the stamp says
    return None, options


def _fused_stamp(cache: Path) -> Path:
    return cache.with_name(cache.name + ".fused")


def _prefix_key(fused: FusedPreprocess | None) -> str:
    return "plain graph" if fused is None else repr(fused)


def _stamp_written_cache(options: RuntimeOptions, fused: FusedPreprocess | None) -> None:
    """After ORT wrote ``options.optimized_model_path``: record which prefix the graph carries."""
    if options.optimized_model_path is not None:
        from fastseg.files import write_text_atomic

        write_text_atomic(_fused_stamp(Path(options.optimized_model_path)), _prefix_key(fused))


def create_session(
    model_path: Path | str,
    device: str | DeviceSpec = "cpu",
    options: RuntimeOptions | None = None,
    *,
    allow_fallback: bool = False,
    fused: FusedPreprocess | None = None,
) -> Session:
    """Create an ONNX Runtime session for ``model_path`` on ``device``.

    Logs the providers actually in use. ``options.io_binding="auto"`` picks IO binding on
    accelerators and plain ``session.run`` on CPU (measured; see docs/runtime.md). ``fused``
    prepends the pre-processing (``fastseg.engines.preprocess_graph``): ``run`` then takes
    uint8 BGR NHWC images (``options.optimized_model_path`` then caches the fused graph, stamped
    with its prefix, so a cache of another prefix or of the plain graph is never loaded for it).

    Raises:
        DeviceError: bad device string, or the accelerator is missing and fallback is off.
        ModelDirError: the ONNX file is missing or ONNX Runtime cannot load it.
    """
    import onnxruntime as ort

    options = options or RuntimeOptions()
    spec = device if isinstance(device, DeviceSpec) else parse_device(device)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelDirError(f"ONNX model {str(model_path)!r} does not exist; convert the model first.")
    providers = resolve_providers(
        spec, ort.get_available_providers(), options=options, allow_fallback=allow_fallback
    )
    if providers[0][0] in (CUDA_EP, TRT_EP):  # pip-installed CUDA/cuDNN, or one line naming what is missing
        from fastseg.engines.gpu_libs import prepare_cuda

        try:
            prepare_cuda(providers[0][0], ort=ort)
        except DeviceError as exc:
            if not allow_fallback:
                raise
            log.warning("%s Falling back to the CPU, as allowed.", exc)
            providers = [(CPU_EP, {})]
    cached, load_options = _use_optimized_cache(model_path, options, fused)
    # ORT's process-wide logger (provider and device-discovery warnings, printed before a session's
    # own level applies) follows ort_log_level too: its warnings must not bury fastseg's one line.
    ort.set_default_logger_severity(load_options.ort_log_level)
    source: str | bytes = str(cached or model_path)
    if fused is not None and cached is None:  # a cached fused graph already carries its prefix
        source = fused_model_bytes(model_path, fused)
    try:
        sess = ort.InferenceSession(
            source,
            sess_options=session_options(load_options),
            providers=[p for p, _ in providers],
            provider_options=[o for _, o in providers],
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException types
        if "ExecutionProvider" in str(exc) and not allow_fallback:
            raise DeviceError(f"Could not start {[p for p, _ in providers]} for {str(spec)!r}: {exc}") from exc
        raise ModelDirError(f"ONNX Runtime cannot load {str(model_path)!r}: {exc}. Re-convert the model.") from exc
    _stamp_written_cache(load_options, fused)
    in_use = list(sess.get_providers())
    wanted = providers[0][0]
    if wanted not in in_use:
        msg = f"Asked for {wanted} on {str(spec)!r} but ONNX Runtime runs {in_use}."
        if not allow_fallback:
            raise DeviceError(msg + " Pass allow_fallback=True to accept that.")
        log.warning(msg)
    log.info("Session for %s on %s uses providers %s", model_path.name, spec, in_use)
    inputs = tuple(TensorInfo(i.name, tuple(i.shape), i.type) for i in sess.get_inputs())
    outputs = tuple(TensorInfo(o.name, tuple(o.shape), o.type) for o in sess.get_outputs())
    mode = choose_run_mode(options, spec, in_use)
    runner = Runner(sess, inputs[0].name, outputs[0].name, mode=mode)
    session = Session(
        model_path=model_path,
        device=spec,
        providers=in_use,
        inputs=inputs,
        outputs=outputs,
        runner=runner,
        _ort=sess,
    )
    session.fused_preprocess = fused is not None
    return session
