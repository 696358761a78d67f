"""``Segmenter``: the one place the pipeline is wired (model dir -> preprocess -> run -> postprocess
-> ``SegResult``); ``fastseg.pipeline.create_pipeline`` builds one from a PaddleX pipeline YAML.

Inputs follow PaddleX's predict() (``fastseg.inputs``); a model is a zoo name or a converted
directory (``fastseg.model_resolution``); pipeline YAMLs are read by ``fastseg.pipeline_config``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fastseg.errors import FastSegError, InputError
from fastseg.head import Head, HeadMode, prepare_head
from fastseg.inputs import expand_inputs, read_ahead
from fastseg.jit import compiled_available
from fastseg.model_dir import ONNX_FILE, ModelMeta, ResizeSpec, read_meta
from fastseg.model_resolution import DEFAULT_MODEL, resolve_model_dir
from fastseg.png_decode import preload as preload_png_kernels
from fastseg.processing import (
    TargetSize,
    as_bgr,
    check_output_kind,
    group_by_shape,
    labels_from_output,
    preprocess_into,
    resize_spec_for,
    resized_hw,
    restore_size,
    uint8_batch,
)
from fastseg.reference import Weights
from fastseg.results import SegResult, half_score
from fastseg.engines import EngineSession, open_session
from fastseg.engines.session_base import Batch, CancelToken
from fastseg.engines.preprocess_graph import fused_preprocess
from fastseg.engines.tuning import EngineChoice, choose_engine
from fastseg.engines.device import DeviceSpec, parse_device
from fastseg.engines.ort import RuntimeOptions
from fastseg.slide import SlideConfig, slide_image, slide_model_path
from fastseg.video import FrameResult, predict_video

log = logging.getLogger(__name__)

PreprocessMode = Literal["auto", "engine", "numpy"]
PREPROCESS_MODES: tuple[str, ...] = ("auto", "engine", "numpy")


# ----------------------------------------------------------------------------- Segmenter
class Segmenter:
    """Semantic segmentation with a converted PaddleX model on ONNX Runtime.

    Args:
        model: a zoo name (``fastseg models``) or a converted model directory.
        weights: for a zoo name, ``official`` (the published weights, downloaded and converted
            on first use) or ``reference`` (the same architecture with UNTRAINED random weights,
            built once for offline use and labelled in every result; ``fastseg.reference``).
            A model directory holds its own weights and refuses ``reference``.
        device: ``cpu``, ``gpu``, ``gpu:N``, ``npu:N``, ``trt:N``, ``openvino[:CPU|GPU]``.
        engine: ``auto`` (the ``fastseg tune`` winner for this model on this machine, which may
            be an accuracy-gated int8 variant; ONNX Runtime fp32 when untuned), ``ort`` or
            ``openvino``. The engine that runs is logged and in ``engine_name``.
        batch_size: images per network call in ``predict``.
        target_size: int or (width, height) replacing the model's Resize, as PaddleX's
            ``target_size`` (keep_ratio, size_divisor 32); -1 = no resize.
        options: ONNX Runtime options (threads, TensorRT, IO binding, ...).
        allow_fallback: run on the CPU (with a warning) when the accelerator is missing.
        home: fastseg's cache directory (default ``$FASTSEG_HOME`` or ``~/.cache/fastseg``).
        scores: also return each pixel's winning-class probability as ``res.score``, float16
            [1,H,W] (computed in float32; the banded head gives it for ArgMax graphs too).
        slide: (height, width) of sliding windows at network resolution (PaddleSeg's
            ``slide_inference``: logits averaged over overlaps, bounded memory; see
            ``fastseg.slide``); None = whole-image inference.
        slide_stride: (height, width) step between windows (default: ``slide``, no overlap).
        head: ``graph`` runs the model's own Resize+ArgMax head; ``banded`` runs the graph cut
            before it and computes the same labels in bands (fastseg.head; much faster for
            many classes); ``auto`` = banded on CPU (ONNX Runtime, OpenVINO f32 or bf16) for a supported tail
            with >= 2 classes (>= 32 without numba's compiled pass: ``fastseg.head.auto_min_classes``).
        compiled_kernels: load numba's compiled kernels (the banded head's pass, PNG
            unfiltering) in the background, ~1 s of CPU once per process that pays from ~6-15
            large images; until loaded, numpy and libspng do the work. False for one-shot runs.
        preprocess: where normalisation and layout run: ``engine`` prepends them to the graph
            (uint8 BGR images in, the engine's threads do the work;
            fastseg.engines.preprocess_graph), ``numpy`` in Python before the call; ``auto`` =
            engine on the CPU (measured there), numpy on accelerators and under sliding windows.

    Raises:
        UnknownModelError, ModelDirError, MissingDependencyError, DeviceError, InputError.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        weights: Weights = "official",
        device: str = "cpu",
        batch_size: int = 1,
        target_size: TargetSize | None = None,
        options: RuntimeOptions | None = None,
        allow_fallback: bool = False,
        home: Path | None = None,
        scores: bool = False,
        engine: str = "auto",
        slide: tuple[int, int] | None = None,
        slide_stride: tuple[int, int] | None = None,
        head: HeadMode = "auto",
        preprocess: PreprocessMode = "auto",
        compiled_kernels: bool = True,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        self.model_dir = resolve_model_dir(model, home=home, weights=weights)
        spec = parse_device(device)
        self.engine_choice: EngineChoice = choose_engine(self.model_dir, engine, spec)
        self._meta = read_meta(self.engine_choice.model_dir)
        self.batch_size = batch_size
        self.scores = scores
        self._resize = self._base_resize(target_size)
        self.slide = None if slide is None else SlideConfig.create(slide, slide_stride)
        if self.slide is not None and head == "banded":
            raise InputError("head='banded' cannot be combined with slide: sliding windows average the graph's logits.")
        self._head = self._prepare_head(head, device=device, options=options, home=home, compiled=compiled_kernels)
        if compiled_kernels and compiled_available():
            preload_png_kernels()
        if preprocess not in PREPROCESS_MODES:
            raise InputError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}.")
        fuse = preprocess == "engine" or (preprocess == "auto" and self.slide is None and spec.on_cpu)
        if fuse and self.slide is not None:
            raise InputError("preprocess='engine' cannot be combined with slide: windows are cut from the normalised image.")
        self._session: EngineSession | None = self._open_session(
            spec, options, home=home, allow_fallback=allow_fallback, fuse=fuse
        )
        if self.slide is None and not self._head.banded:  # the session's output is the graph's own
            out = self._session.outputs[0]
            check_output_kind(self._meta.output_kind, self._meta.num_classes, out.name, out.shape, out.type)
        log.info(
            "%s runs on %s with %s %s (%s)",
            self._meta.model_name, spec, self._session.engine, self.engine_choice.precision, self.engine_choice.reason,
        )
        self._buffers = threading.local()

    # -- wiring (called once by __init__)
    def _prepare_head(
        self, head: HeadMode, *, device: str, options: RuntimeOptions | None, home: Path | None, compiled: bool
    ) -> Head:
        """The head that turns the network's output into labels (``graph`` under sliding windows).

        With ``scores`` on a model whose graph ends in ArgMax, ``auto`` means ``banded``
        where the tail allows it: only the banded head sees the logits a score needs."""
        mode = "graph" if self.slide is not None else head
        kwargs: dict[str, Any] = dict(
            output_kind=self._meta.output_kind, device=device,
            engine=self.engine_choice.engine if self.engine_choice.precision == "fp32" else self.engine_choice.precision,
            num_classes=self._meta.num_classes, home=home,
            threads=options.intra_op_threads if options else None, compiled=compiled,
        )
        model_path = self.engine_choice.model_dir / ONNX_FILE
        if self.scores and mode == "auto" and self._meta.output_kind == "labels":
            try:
                return prepare_head(model_path, head="banded", **kwargs)
            except FastSegError as exc:
                log.warning(
                    "scores: %s's graph ends in ArgMax and the banded head cannot take its tail over, so its results "
                    "carry no score; re-convert it with --head logits for scores.", self._meta.model_name,
                )
                log.debug("banded head refused: %s", exc)
        return prepare_head(model_path, head=mode, **kwargs)

    def _open_session(
        self, spec: DeviceSpec, options: RuntimeOptions | None, *, home: Path | None, allow_fallback: bool, fuse: bool
    ) -> EngineSession:
        """The engine session on the head's model (for sliding windows: its logits variant)."""
        model_path = self._head.model_path
        if self.slide is not None:  # windows need logits: the graph with its ArgMax stripped
            model_path, options = slide_model_path(model_path, self._meta, self.slide, options, home)
        return open_session(
            model_path, spec, options, engine=self.engine_choice.engine, allow_fallback=allow_fallback,
            precision=self._meta.precision, fused=fused_preprocess(self._meta.preprocess) if fuse else None,
        )

    # -- properties
    @property
    def meta(self) -> ModelMeta:
        """The model's ``fastseg.json`` (preprocessing, classes, provenance)."""
        return self._meta

    @property
    def engine_name(self) -> str:
        """The engine that runs: ``ort`` or ``openvino``."""
        return self.session.engine

    @property
    def precision(self) -> str:
        """``fp32``, or ``int8``/``bf16`` (an accuracy-gated, or explicitly ungated, variant)."""
        return self._meta.precision

    @property
    def precision_label(self) -> str:
        """How the precision is shown: ``fp32``, ``bf16 (keeps 99.91% ...)``, ``int8 UNGATED``."""
        return self._meta.precision_label

    @property
    def session(self) -> EngineSession:
        if self._session is None:
            raise InputError("This Segmenter is closed; create a new one.")
        return self._session

    @property
    def head(self) -> str:
        """The head in use: ``banded`` (fastseg.head) or ``graph`` (the model's own)."""
        return "banded" if self._head.banded else "graph"

    @property
    def owns_output(self) -> bool:
        """``infer`` returns a fresh array (the banded head's labels, or an engine that keeps no
        output buffer), so its labels need no copy."""
        return self._head.banded or not self.session.runner.reuses_output

    @property
    def providers(self) -> list[str]:
        """The execution providers ONNX Runtime actually uses."""
        return self.session.providers

    @property
    def resize(self) -> ResizeSpec | None:
        """The Resize every image gets (the model's, ``target_size``'s, or a fixed input's)."""
        return self._resize

    # -- resize policy
    def _base_resize(self, target_size: TargetSize | None) -> ResizeSpec | None:
        meta = self._meta
        if meta.fixed_hw is not None and not meta.dynamic_hw:
            if target_size is not None:
                raise InputError(
                    f"Model {meta.model_name!r} has a fixed input size {meta.fixed_hw} (HxW); target_size cannot be set."
                )
            h, w = meta.fixed_hw
            interp = meta.preprocess.resize.interp if meta.preprocess.resize else "LINEAR"
            return ResizeSpec(target_size=(w, h), keep_ratio=False, interp=interp)
        if target_size is None:
            return meta.preprocess.resize
        # PaddleX: a predictor-level target_size builds a fresh Resize with its defaults.
        return resize_spec_for(None, target_size)

    def _resize_for(self, target_size: TargetSize | None) -> ResizeSpec | None:
        if target_size is None:
            return self._resize
        if self._meta.fixed_hw is not None and not self._meta.dynamic_hw:
            raise InputError(f"Model {self._meta.model_name!r} has a fixed input size; target_size cannot be set.")
        return resize_spec_for(self._resize, target_size)

    # -- running
    def _buffer(self, n: int, h: int, w: int, dtype: type[Any] = np.float32) -> npt.NDArray[Any]:
        """A batch buffer reused per thread for repeated shapes: float32 [n,3,h,w] for the
        network, or uint8 [n,h,w,3] for a graph that pre-processes itself."""
        cache: dict[tuple[int, int, int, Any], npt.NDArray[Any]] | None = getattr(self._buffers, "cache", None)
        if cache is None:
            cache = self._buffers.cache = {}
        key = (n, h, w, dtype)
        buf = cache.get(key)
        if buf is None:
            if len(cache) >= 4:
                cache.clear()
            shape = (n, h, w, 3) if dtype == np.uint8 else (n, 3, h, w)
            buf = cache[key] = np.empty(shape, dtype=dtype)
        return buf

    def _run(
        self, images: Sequence[npt.NDArray[np.uint8]], sources: Sequence[str | None], resize: ResizeSpec | None,
        cancel: CancelToken | None = None,
    ) -> list[SegResult]:
        if self.slide is not None:
            return self._run_slide(images, sources, resize, self.slide, cancel)
        session = self.session
        meta = self._meta
        src_hw = [(int(im.shape[0]), int(im.shape[1])) for im in images]
        net_hw = [resized_hw(hw, resize) for hw in src_hw]
        results: list[SegResult | None] = [None] * len(images)
        for idx in group_by_shape(net_hw):
            guard = session.runner.lock if session.runner.reuses_output else contextlib.nullcontext()
            with guard:  # a reused output buffer (IO binding, OpenVINO on the CPU): consume it before releasing
                batch = self.prepare([images[i] for i in idx], resize)
                output, scores = self._infer_scored(batch, cancel) if self.scores else (self.infer(batch, cancel), None)
                labels, graph_scores = labels_from_output(output, meta.output_kind, with_score=self.scores, owned=self.owns_output)
                scores = graph_scores if scores is None else scores
            for k, i in enumerate(idx):
                pred = restore_size(labels[k], src_hw[i])
                score = None if scores is None else restore_size(scores[k], src_hw[i])
                results[i] = SegResult(
                    input_path=sources[i],
                    input_img=images[i],
                    pred=np.ascontiguousarray(pred[None]),
                    score=None if score is None else half_score(score),
                    class_names=meta.class_names,
                    weights=meta.provenance.get("weights"),
                )
        return [r for r in results if r is not None]

    def _run_slide(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        sources: Sequence[str | None],
        resize: ResizeSpec | None,
        slide: SlideConfig,
        cancel: CancelToken | None,
    ) -> list[SegResult]:
        """Each image by sliding windows (``fastseg.slide``); ``batch_size`` windows per network call."""
        results = []
        for image, source in zip(images, sources, strict=True):
            labels, scores = slide_image(
                image, self.session, config=slide,
                preprocess=self._meta.preprocess, resize=resize, batch_size=self.batch_size,
                buffer=self._buffer, with_score=self.scores, cancel=cancel,
            )
            src_hw = (int(image.shape[0]), int(image.shape[1]))
            results.append(SegResult(
                input_path=source,
                input_img=image,
                pred=restore_size(labels, src_hw)[None],
                score=None if scores is None else half_score(restore_size(scores, src_hw)),
                class_names=self._meta.class_names,
                weights=self._meta.provenance.get("weights"),
            ))
        return results

    def prepare(self, images: Sequence[npt.NDArray[np.uint8]], resize: ResizeSpec | None) -> Batch:
        """The network batch for BGR images that resize to one size, in the session's input
        format: uint8 [N,H,W,3] when the engine pre-processes (resize only, here), else the
        normalised float32 [N,3,H,W]. A per-thread buffer reused by the next call, or one image's own view."""
        h, w = resized_hw((int(images[0].shape[0]), int(images[0].shape[1])), resize)
        if self.session.fused_preprocess:
            return uint8_batch(images, (h, w), resize, lambda: self._buffer(len(images), h, w, np.uint8))
        return preprocess_into(images, self._buffer(len(images), h, w), self._meta.preprocess, resize=resize)

    def infer(self, batch: Batch, cancel: CancelToken | None = None) -> npt.NDArray[Any]:
        """The model's output for a ``prepare``d batch: its graph's, or the same computed by the
        body and the banded head (``head``). Where ``session.runner.reuses_output`` (IO binding,
        OpenVINO on the CPU) a buffer the next call overwrites: copy it to keep it.

        Raises:
            InputError: a float32 batch for an engine that pre-processes itself (or the reverse).
            RunCancelledError: ``cancel`` stopped the engine run.
        """
        return self._head.finish(*self._run_network(batch, cancel))

    def _infer_scored(
        self, batch: Batch, cancel: CancelToken | None
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32] | None]:
        """``infer`` plus the banded head's per-pixel score (None under the graph's head)."""
        return self._head.finish_scored(*self._run_network(batch, cancel))

    def _run_network(self, batch: Batch, cancel: CancelToken | None) -> tuple[npt.NDArray[Any], tuple[int, int, int, int]]:
        """The session's output for ``batch`` and the batch's NCHW shape (what the head needs)."""
        fused = self.session.fused_preprocess
        if fused != (batch.dtype == np.uint8):
            raise InputError(
                f"This Segmenter's engine takes {'uint8 BGR [N,H,W,3] images' if fused else 'a float32 [N,3,H,W] batch'}, "
                f"got {batch.dtype} {tuple(batch.shape)}: build the batch with Segmenter.prepare(), or pass preprocess='numpy'."
            )
        n, h, w = (batch.shape[0], batch.shape[1], batch.shape[2]) if fused else (batch.shape[0], batch.shape[2], batch.shape[3])
        return self.session.run(batch, cancel), (int(n), 3, int(h), int(w))

    def predict(
        self, input: Any, *, batch_size: int | None = None, target_size: TargetSize | None = None
    ) -> Iterator[SegResult]:
        """Segment images lazily, one result per image, in input order.

        Args:
            input: a BGR uint8 HxWx3 (or HxW gray) array, a path, a directory (recursive), an
                http(s) URL, a ``{"img": ...}`` dict, or a list of these.
            batch_size: images per network call (default: the constructor's).
            target_size: overrides the Resize size for this call (int or (width, height)).

        Yields:
            ``SegResult`` with ``pred`` int32 [1,H,W] at the source image size.

        Raises:
            InputError: missing file, unreadable image, empty directory, unsupported type.
        """
        bs = batch_size or self.batch_size
        if bs < 1:
            raise InputError(f"batch_size must be >= 1, got {bs}.")
        resize = self._resize_for(target_size)
        items = expand_inputs(input)
        chunks = [items[start : start + bs] for start in range(0, len(items), bs)]
        for chunk, images in read_ahead(chunks):
            yield from self._run(images, [item.source for item in chunk], resize)

    def predict_images(
        self,
        images_bgr: Sequence[npt.NDArray[np.uint8]],
        *,
        target_size: TargetSize | None = None,
        cancel: CancelToken | None = None,
    ) -> list[SegResult]:
        """Segment in-memory BGR images in one synchronous call (grouped by size); for servers.

        ``cancel`` stops the call from another thread (the engine run in flight included):
        ``RunCancelledError`` is raised and nothing is returned.
        """
        images = [as_bgr(im, source=f"image {i}") for i, im in enumerate(images_bgr)]
        if not images:
            return []
        return self._run(images, [None] * len(images), self._resize_for(target_size), cancel)

    def predict_video(
        self,
        source: str | Path,
        *,
        every: int = 1,
        max_frames: int | None = None,
        target_size: TargetSize | None = None,
    ) -> Iterator[FrameResult]:
        """Segment a video file, rtsp/http(s) stream or ``camera:N`` lazily (``fastseg.video``).

        Yields one ``FrameResult`` per kept frame (every ``every``-th, at most ``max_frames``),
        carrying ``frame_index`` and ``timestamp`` (s); its labels are those of predicting that
        frame alone. Decoding runs ahead in a thread with a bounded queue.
        """
        return predict_video(self, source, every=every, max_frames=max_frames, target_size=target_size)

    def __call__(self, input: Any, **kwargs: Any) -> Iterator[SegResult]:
        return self.predict(input, **kwargs)

    # -- lifecycle
    def close(self) -> None:
        """Release the ONNX Runtime session."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._session.device if self._session else "closed"
        return f"Segmenter(model={self._meta.model_name!r}, device={str(where)!r}, dir={str(self.model_dir)!r})"
