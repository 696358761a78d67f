"""Choose the head a Segmenter runs: the graph's own, or its body plus the banded head.

``prepare_head`` returns a ``Head``: the ONNX file to give the session factory and a
``finish(output, batch_shape)`` that turns that file's output into what the full graph
would have returned (int labels [N,H,W], same dtype). The body (the graph cut before its
``Resize -> ArgMax`` tail) and the tail's description are cached under
``<cache_home>/heads/<key>/`` (key: the model file's path, size and mtime), never beside the
user's model, and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError, MissingDependencyError, ModelDirError
from fastseg.files import write_bytes_atomic, write_text_atomic
from fastseg.head.banded import TailResize, resize_argmax
from fastseg.head.fused import warm_up
from fastseg.head.interp import output_length
from fastseg.head.size_expr import evaluate_sizes
from fastseg.engines.device import parse_device, physical_cores
from fastseg.jit import compiled_available
from fastseg.zoo import cache_home

log = logging.getLogger(__name__)

HeadMode = Literal["auto", "graph", "banded"]
HEAD_MODES = ("auto", "graph", "banded")
# "auto" runs the banded head from this many classes up, on CPU devices; see docs/banded-head.md:
# with numba's compiled row pass it beats ORT's tail from 2 classes (measured at 2-150),
# with numpy alone only from about 32.
AUTO_MIN_CLASSES = 32
AUTO_MIN_CLASSES_COMPILED = 2


def auto_min_classes(compiled: bool = True) -> int:
    """The class count from which ``auto`` picks the banded head with this install (with
    ``compiled`` False: when the compiled pass is not to be loaded)."""
    return AUTO_MIN_CLASSES_COMPILED if compiled and compiled_available() else AUTO_MIN_CLASSES


_FORMAT = 1
_MAX_PROTO_BYTES = 2**31 - 1


@dataclass(frozen=True)
class Head:
    """What to run and how to finish: ``banded`` False = the graph's own head (``finish`` is
    the identity); ``compiled`` False = the banded head keeps to its numpy paths."""

    model_path: Path
    banded: bool
    reason: str
    tail: dict[str, Any] | None = None
    band_rows: int | None = None
    threads: int = 1
    compiled: bool = True

    def finish(self, output: npt.NDArray[Any], batch_shape: tuple[int, ...]) -> npt.NDArray[Any]:
        """The full graph's output from the session's: labels [N,H,W] (or [N,1,H,W] when the
        graph's ArgMax keeps dims) in the graph's dtype.

        Args:
            output: the body's float32 logits [N,C,h,w] (banded) or the graph's output.
            batch_shape: the network input's shape [N,3,H,W].

        Raises:
            ModelDirError: the Resize's size computes to something the graph could not run.
        """
        if not self.banded or self.tail is None:
            return output
        return self._as_graph_labels(self._banded_labels(output, batch_shape)[0])

    def finish_scored(
        self, output: npt.NDArray[Any], batch_shape: tuple[int, ...]
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32] | None]:
        """``finish``'s labels and, for the banded head, the winning class's probability
        float32 [N,H,W] (softmax of the resized logits), computed band by band
        (``fastseg.head.score``); None for the graph's own head (its output has no logits)."""
        if not self.banded or self.tail is None:
            return output, None
        from fastseg.head.score import resize_score

        labels, spec, scales_hw = self._banded_labels(output, batch_shape)
        return self._as_graph_labels(labels), resize_score(output, labels, spec, scales_hw=scales_hw)

    def _as_graph_labels(self, labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The graph's layout and dtype (keepdims, Cast) of [N,H,W] labels (already in that
        dtype where it is int32 or int64: ``_banded_labels`` writes it directly)."""
        assert self.tail is not None
        if self.tail["keepdims"]:
            labels = labels[:, None]
        return labels.astype(self.tail["output_dtype"], copy=False)

    def _banded_labels(
        self, output: npt.NDArray[Any], batch_shape: tuple[int, ...]
    ) -> tuple[npt.NDArray[Any], TailResize, tuple[float, float] | None]:
        """[N,H,W] labels from the body's logits, with the Resize reproduced: int32 where the
        graph casts its ArgMax to int32 (PaddleX's exports), else int64."""
        assert self.tail is not None
        tail = self.tail
        if output.ndim != 4 or output.dtype != np.float32:
            raise ModelDirError(
                f"The banded head expects the body's float32 [N,C,h,w] logits, got {output.dtype} {list(output.shape)} "
                f"from {self.model_path} (an optimized-model cache of the full graph?). Use head='graph'."
            )
        n, c, h, w = output.shape
        scales, sizes = evaluate_sizes(tail["size_program"], tuple(batch_shape), tuple(output.shape))
        scales_hw: tuple[float, float] | None = None
        if sizes is not None:
            if sizes.shape != (4,) or int(sizes[0]) != n or int(sizes[1]) != c:
                raise ModelDirError(f"The model's Resize asks for sizes {sizes.tolist()} from logits {list(output.shape)}.")
            out_hw = (int(sizes[2]), int(sizes[3]))
        elif scales is not None and scales.shape == (4,) and float(scales[0]) == 1.0 and float(scales[1]) == 1.0:
            scales_hw = (float(scales[2]), float(scales[3]))
            out_hw = (output_length(h, scales_hw[0]), output_length(w, scales_hw[1]))
        else:
            raise ModelDirError(f"The model's Resize scales {scales} cannot be reproduced.")
        spec = TailResize(tail["mode"], tail["coordinate_mode"], tail["nearest_mode"], tail["select_last_index"])
        dtype = np.int32 if tail["output_dtype"] == "int32" else np.int64
        labels = resize_argmax(output, out_hw, spec, scales_hw=scales_hw, band_rows=self.band_rows, threads=self.threads,
                               use_fused=self.compiled, dtype=dtype)
        return labels, spec, scales_hw


def head_cache_dir(model_path: Path, home: Path | None = None) -> Path:
    """``<cache_home>/heads/<key>``: key = sha256 of the model file's resolved path, size, mtime."""
    st = model_path.stat()
    ident = f"{model_path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_FORMAT}"
    return (home or cache_home()) / "heads" / hashlib.sha256(ident.encode()).hexdigest()[:24]


BANDED_ENGINES: tuple[str, ...] = ("ort", "openvino", "bf16", "int8", "int8-bf16")
"""Engines (and reduced precisions) whose body output the banded head finishes under ``auto``:
ONNX Runtime, OpenVINO f32 and OpenVINO bf16, and the int8 QDQ graphs, whose head is float,
on either engine (a gate then measures the labels it gives). In OpenVINO f32 the graph's own
ArgMax over 19 full-size channels took 86 ms of an int8 PP-LiteSeg-T run at 1024x2048."""


def prepare_head(
    model_path: Path,
    *,
    head: str = "auto",
    output_kind: str = "labels",
    device: str = "cpu",
    engine: str = "ort",
    num_classes: int | None = None,
    home: Path | None = None,
    band_rows: int | None = None,
    threads: int | None = None,
    compiled: bool = True,
) -> Head:
    """The head to run for ``model_path`` (see the module docstring).

    ``auto``: the banded head when the model outputs labels through a supported
    ``Resize -> ArgMax`` tail with at least ``auto_min_classes()`` classes and runs on a CPU
    device with an engine in ``BANDED_ENGINES`` (the body's logits from any of them, the tail
    computed as ONNX Runtime's Resize does); else the graph. ``banded``: the banded head or an error saying why not.
    ``num_classes`` (the model metadata's) lets ``auto`` skip the analysis of small heads.
    ``compiled``: let the banded head load numba's compiled pass (in the background, ~1 s of
    CPU once per process; it pays from ~6-15 large images). False keeps to the numpy paths and
    their rule (banded from ``AUTO_MIN_CLASSES``): for one-shot processes.

    Raises:
        InputError: an unknown ``head``, or ``banded`` for a model it cannot reproduce.
        MissingDependencyError: ``banded`` without the ``onnx`` package.
    """
    if head not in HEAD_MODES:
        raise InputError(f"head must be one of {', '.join(HEAD_MODES)}; got {head!r}.")
    graph = Head(model_path=model_path, banded=False, reason="head='graph'")
    if head == "graph":
        return graph
    threads = threads or physical_cores()
    if output_kind != "labels":
        return _refuse(head, graph, f"the model outputs {output_kind}, not labels")
    if head == "auto" and not parse_device(device).on_cpu:
        return Head(model_path=model_path, banded=False, reason=f"auto: device {device!r} runs the graph's head")
    if head == "auto" and engine not in BANDED_ENGINES:
        return Head(model_path=model_path, banded=False, reason=f"auto: engine {engine!r} runs the graph's head")
    least = auto_min_classes(compiled)
    if head == "auto" and num_classes is not None and num_classes < least:
        return Head(model_path=model_path, banded=False, reason=f"auto: {num_classes} classes < {least}")
    try:
        record = _tail_record(model_path, home)
        if not record["supported"]:
            return _refuse(head, graph, record["reason"])
        tail = record["tail"]
        classes = tail.get("num_classes")
        if head == "auto" and (classes is None or classes < least):
            return Head(model_path=model_path, banded=False, reason=f"auto: {classes} classes < {least}")
        body = _body(model_path, tail, home)
    except ImportError as exc:
        if head == "banded":
            raise MissingDependencyError(f"head='banded' needs the onnx package ({exc}): pip install onnx.") from exc
        return Head(model_path=model_path, banded=False, reason=f"onnx is not installed ({exc})")
    except (InputError, MissingDependencyError):
        raise
    except Exception as exc:  # an optional speed-up: a model it cannot read runs as it is
        if head == "banded":
            raise ModelDirError(f"head='banded': cannot analyse {str(model_path)!r}: {exc}") from exc
        log.warning("Banded head off for %s: analysis failed (%s)", model_path, exc)
        return Head(model_path=model_path, banded=False, reason=f"analysis failed: {exc}")
    log.info("Banded head for %s (%s classes, %s Resize): running %s", model_path, classes, tail["mode"], body)
    if compiled and tail["mode"] == "linear" and compiled_available():
        warm_up()
    return Head(model_path=body, banded=True, reason="banded", tail=tail, band_rows=band_rows, threads=threads,
                compiled=compiled)


def _refuse(head: str, graph: Head, reason: str) -> Head:
    if head == "banded":
        raise InputError(f"head='banded' is not possible for this model: {reason}. Use head='auto' or 'graph'.")
    return Head(model_path=graph.model_path, banded=False, reason=reason)


def _tail_record(model_path: Path, home: Path | None) -> dict[str, Any]:
    """The cached analysis (``head.json``) of ``model_path``'s supported tail; analysed on a
    miss. An unsupported tail is not recorded (nothing written for models it does not help)."""
    record_path = head_cache_dir(model_path, home) / "head.json"
    try:
        record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format") == _FORMAT and "supported" in record:
            return record
    except (OSError, ValueError):
        pass
    from fastseg.head.tail import UnsupportedTail, find_tail, load_for_analysis

    base = {"format": _FORMAT, "source": str(model_path.resolve())}
    try:
        record = {**base, "supported": True, "reason": "", "tail": asdict(find_tail(load_for_analysis(model_path)))}
    except UnsupportedTail as exc:
        log.info("Banded head off for %s: %s", model_path, exc)
        return {**base, "supported": False, "reason": str(exc)}
    write_text_atomic(record_path, json.dumps(record, indent=1))
    return record


def _body(model_path: Path, tail: dict[str, Any], home: Path | None) -> Path:
    """The cached body (the graph cut before its tail), cut on a miss."""
    path = head_cache_dir(model_path, home) / "body.onnx"
    if path.is_file():
        return path
    import onnx

    from fastseg.head.tail import Tail, cut_body

    start = time.perf_counter()
    data = cut_body(onnx.load(str(model_path)), Tail(**tail)).SerializeToString()
    if len(data) > _MAX_PROTO_BYTES:
        raise ModelDirError(f"The body of {str(model_path)!r} is over 2 GB (protobuf's limit).")
    write_bytes_atomic(path, data)
    log.info("Cut %s before its Resize->ArgMax tail in %.1f s", model_path, time.perf_counter() - start)
    return path
