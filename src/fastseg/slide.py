"""Sliding-window inference with bounded memory: PaddleSeg's ``slide_inference``, band by band.

Semantics (PaddleSeg ``paddleseg/core/infer.py::slide_inference``): on the preprocessed
(resized) image of H x W, windows of ``crop`` with step ``stride`` are laid out row-major;
along each axis there are ``1`` window when the side fits in the crop, else
``ceil((side - crop) / stride) + 1``; window ``i`` ends at ``min(i * stride + crop, side)``
and starts at ``max(end - crop, 0)``, so the last one is flush with the border and a crop
larger than the image shrinks to it. Each window's **logits** are summed into the canvas,
the sum is divided by how many windows covered each pixel, and the argmax gives the labels.

Bounded memory: windows of one row of the layout all start at the same image row and rows
start strictly later than the previous one, so once the first window of a new row arrives,
every image row above its top is final. Only a band of ``crop_h`` rows x W x C float32 is
kept; final rows are divided, argmaxed (in chunks) and written to the int32 label map at once.
Coverage counts are separable (``rows_covering(y) * cols_covering(x)``), so no count canvas
either. For 8000 x 8000 with 19 classes and 1024-row windows the band is 19 x 1024 x 8000 x 4
bytes = 0.62 GB instead of a 4.9 GB canvas.

Sums are float32 in PaddleSeg's window order (PaddleSeg accumulates in float64): labels can
only differ where two classes tie to within float32 rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError
from fastseg.graph_edit import logits_model
from fastseg.model_dir import ModelMeta, PreprocessSpec, ResizeSpec
from fastseg.processing import INTERPOLATIONS, preprocess_into, resized_hw
from fastseg.engines.ort import RuntimeOptions
from fastseg.engines.session_base import CancelToken
from fastseg.zoo import cache_home

FINALISE_CHUNK_ROWS = 64  # rows divided/argmaxed at once: bounds the temporaries to C x 64 x W
HW = tuple[int, int]


@dataclass(frozen=True)
class SlideConfig:
    """Window size and step, both (height, width) in network-input pixels.

    Raises:
        InputError: non-positive sizes, or a stride larger than the crop (pixels between
            windows would never be predicted; PaddleSeg fails on them at the end).
    """

    crop_hw: HW
    stride_hw: HW

    def __post_init__(self) -> None:
        for name, (h, w) in (("slide", self.crop_hw), ("slide_stride", self.stride_hw)):
            if h < 1 or w < 1:
                raise InputError(f"{name} must be positive (height, width), got {h}x{w}.")
        if self.stride_hw[0] > self.crop_hw[0] or self.stride_hw[1] > self.crop_hw[1]:
            raise InputError(
                f"slide_stride {self.stride_hw[0]}x{self.stride_hw[1]} is larger than the window "
                f"{self.crop_hw[0]}x{self.crop_hw[1]}: pixels between windows would never be predicted. "
                "Use a stride <= the window size (HxW)."
            )

    @classmethod
    def create(cls, slide: Sequence[int], slide_stride: Sequence[int] | None = None) -> SlideConfig:
        """From user values: ``slide`` (h, w); ``slide_stride`` defaults to ``slide`` (tiles, no overlap)."""
        crop = _pair(slide, "slide")
        return cls(crop_hw=crop, stride_hw=crop if slide_stride is None else _pair(slide_stride, "slide_stride"))


def _pair(value: Sequence[int], name: str) -> HW:
    if isinstance(value, (str, bytes)) or len(value) != 2:
        raise InputError(f"{name} must be (height, width), got {value!r}.")
    return (int(value[0]), int(value[1]))


def parse_hw(text: str, *, name: str = "size") -> HW:
    """Parse ``"HxW"`` (e.g. ``1024x1024``) into (height, width).

    Raises:
        InputError: anything else.
    """
    h, sep, w = text.strip().lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit():
        raise InputError(f"{name} {text!r}: use HxW, e.g. 1024x1024 (height x width).")
    return (int(h), int(w))


# ----------------------------------------------------------------------------- layout
def axis_spans(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of each window along one axis, exactly as PaddleSeg lays them out."""
    count = 1 if length <= crop else math.ceil((length - crop) / stride) + 1
    spans = []
    for i in range(count):
        end = min(i * stride + crop, length)
        spans.append((max(end - crop, 0), end))
    return spans


def axis_counts(spans: Sequence[tuple[int, int]], length: int) -> npt.NDArray[np.float32]:
    """How many of ``spans`` cover each position of an axis of ``length`` (float32)."""
    delta = np.zeros(length + 1, dtype=np.int64)
    for start, end in spans:
        delta[start] += 1
        delta[end] -= 1
    return np.cumsum(delta[:length]).astype(np.float32)


def window_layout(hw: HW, config: SlideConfig) -> list[tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` over an image of ``hw``, row-major (PaddleSeg's order)."""
    rows = axis_spans(hw[0], config.crop_hw[0], config.stride_hw[0])
    cols = axis_spans(hw[1], config.crop_hw[1], config.stride_hw[1])
    return [(y0, y1, x0, x1) for y0, y1 in rows for x0, x1 in cols]


# ----------------------------------------------------------------------------- accumulation
class BandAccumulator:
    """Sums window logits in a band of rows and finalises rows no later window touches.

    Feed windows in ``window_layout`` order with ``add``; ``finish`` returns the int32 label
    map [H,W] (and the winning class's softmax probability [H,W] with ``with_score``).
    """

    def __init__(self, hw: HW, config: SlideConfig, *, with_score: bool = False) -> None:
        self.hw = hw
        rows = axis_spans(hw[0], config.crop_hw[0], config.stride_hw[0])
        cols = axis_spans(hw[1], config.crop_hw[1], config.stride_hw[1])
        self._row_counts = axis_counts(rows, hw[0])
        self._col_counts = axis_counts(cols, hw[1])
        self._band_h = min(config.crop_hw[0], hw[0])
        self.labels: npt.NDArray[np.int32] = np.empty(hw, dtype=np.int32)
        self.scores: npt.NDArray[np.float32] | None = np.empty(hw, dtype=np.float32) if with_score else None
        self._band: npt.NDArray[np.float32] | None = None  # [C, band_h, W], allocated on the first window
        self._top = 0  # image row of band row 0; rows above it are final
        self.peak_band_bytes = 0

    def add(self, window: tuple[int, int, int, int], logits_chw: npt.NDArray[Any]) -> None:
        """Add one window's logits [C, y1-y0, x1-x0] (windows in layout order)."""
        y0, y1, x0, x1 = window
        if y0 < self._top:
            raise InputError(f"window starting at row {y0} arrived after rows up to {self._top} were finalised.")
        if self._band is None:
            self._band = np.zeros((logits_chw.shape[0], self._band_h, self.hw[1]), dtype=np.float32)
            self.peak_band_bytes = self._band.nbytes
        if y0 > self._top:
            self._finalise(y0)
        self._band[:, y0 - self._top : y1 - self._top, x0:x1] += logits_chw[:, : y1 - y0, : x1 - x0]

    def finish(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32] | None]:
        """Finalise the remaining rows; returns (labels [H,W] int32, scores [H,W] float32 or None)."""
        if self._band is None:
            raise InputError("No window was added.")
        self._finalise(self.hw[0])
        self._band = None
        return self.labels, self.scores

    def _finalise(self, until: int) -> None:
        """Divide, argmax and emit image rows [top, until); shift the rest of the band up."""
        band = cast("npt.NDArray[np.float32]", self._band)
        done = until - self._top
        for r0 in range(0, done, FINALISE_CHUNK_ROWS):
            r1 = min(r0 + FINALISE_CHUNK_ROWS, done)
            rows = slice(self._top + r0, self._top + r1)
            count = self._row_counts[rows, None] * self._col_counts[None, :]
            mean = band[:, r0:r1] / count  # PaddleSeg: final_logit / count
            self.labels[rows] = mean.argmax(axis=0)
            if self.scores is not None:
                np.subtract(mean, mean.max(axis=0, keepdims=True), out=mean)
                self.scores[rows] = 1.0 / np.exp(mean).sum(axis=0)  # softmax of the winner
        keep = self._band_h - done
        for r in range(max(keep, 0)):  # row by row: no overlapping copy, so no temporary band
            band[:, r] = band[:, r + done]
        band[:, max(keep, 0) :] = 0.0
        self._top = until


# ----------------------------------------------------------------------------- running
def slide_model_path(
    onnx_path: Path,
    meta: ModelMeta,
    config: SlideConfig | None,
    options: RuntimeOptions | None,
    home: Path | None,
) -> tuple[Path, RuntimeOptions | None]:
    """The ONNX file (and runtime options) a session needs: the model itself without ``config``,
    else its logits version (``graph_edit.logits_model``, cached under ``home``).

    Raises:
        InputError: a model frozen to one input size (windows need dynamic H, W).
        ModelDirError: a graph whose head cannot be removed.
    """
    if config is None:
        return onnx_path, options
    if meta.fixed_hw is not None and not meta.dynamic_hw:
        asked = (meta.provenance.get("options") or {}).get("fixed_hw") is not None
        fix = ("re-convert without --fixed-shape" if asked else
               "its export fixes the input size (as PaddleX's MaskFormer does), so run it without --slide")
        raise InputError(
            f"Model {meta.model_name!r} is frozen to {meta.fixed_hw[0]}x{meta.fixed_hw[1]}; sliding windows need "
            f"dynamic H and W ({fix})."
        )
    path = logits_model(onnx_path, home or cache_home())
    if options is not None and options.optimized_model_path is not None:  # never load the labels graph's cache
        cached = Path(options.optimized_model_path)
        options = dataclasses.replace(options, optimized_model_path=cached.with_name(f"{cached.stem}-logits{cached.suffix}"))
    return path, options


def resize_for_network(
    image_bgr: npt.NDArray[np.uint8], resize: ResizeSpec | None
) -> npt.NDArray[np.uint8]:
    """The image at network-input size, resized exactly as ``preprocess_into`` would (still uint8)."""
    h, w = resized_hw((int(image_bgr.shape[0]), int(image_bgr.shape[1])), resize)
    if (h, w) == image_bgr.shape[:2]:
        return image_bgr
    interp = INTERPOLATIONS.get((resize.interp if resize else "LINEAR").upper())
    if interp is None:
        raise InputError(f"Unknown Resize interp {resize.interp if resize else ''!r}; use one of {list(INTERPOLATIONS)}.")
    return cast("npt.NDArray[np.uint8]", cv2.resize(image_bgr, (w, h), interpolation=interp))


BufferFactory = Callable[[int, int, int], npt.NDArray[np.float32]]


class WindowSession(Protocol):
    """What ``slide_image`` needs from a session (``runtime.Session`` or any engine's):
    ``run`` and a ``runner`` with ``lock`` and ``reuses_output`` (IO binding and OpenVINO on the
    CPU reuse their output buffer)."""

    @property
    def runner(self) -> Any: ...

    def run(self, batch_nchw: npt.NDArray[np.float32], cancel: CancelToken | None = None) -> npt.NDArray[Any]: ...


def slide_image(
    image_bgr: npt.NDArray[np.uint8],
    session: WindowSession,
    *,
    config: SlideConfig,
    preprocess: PreprocessSpec,
    resize: ResizeSpec | None,
    batch_size: int,
    buffer: BufferFactory | None = None,
    with_score: bool = False,
    cancel: CancelToken | None = None,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32] | None]:
    """Segment one image by sliding windows over its network-size version.

    Args:
        image_bgr: BGR uint8 [H,W,3] source image.
        session: a session whose output is float logits [N,C,h,w] (``graph_edit.logits_model``).
        config: window size and stride at network resolution.
        preprocess: the model's normalisation (``ModelMeta.preprocess``).
        resize: the Resize to network size (or None), as in whole-image inference.
        batch_size: windows per network call.
        buffer: ``(n, h, w) -> float32 [n,3,h,w]`` reusable batch buffers (default: fresh arrays).
        with_score: also return the winning class's probability.
        cancel: stops the windows from another thread (``RunCancelledError``).

    Returns:
        (labels int32 [h,w], scores float32 [h,w] or None) at **network** resolution.
    """
    net = resize_for_network(image_bgr, resize)
    hw = (int(net.shape[0]), int(net.shape[1]))
    windows = window_layout(hw, config)
    acc = BandAccumulator(hw, config, with_score=with_score)
    wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]  # all windows share a size
    make = buffer or (lambda n, h, w: np.empty((n, 3, h, w), dtype=np.float32))
    runner = session.runner
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        crops = [net[y0:y1, x0:x1] for y0, y1, x0, x1 in chunk]
        batch = preprocess_into(crops, make(len(chunk), wh, ww), preprocess, resize=None)
        guard = runner.lock if runner.reuses_output else contextlib.nullcontext()
        with guard:  # a reused output buffer (IO binding, OpenVINO on the CPU): consume it before releasing
            logits = session.run(batch, cancel)
            if logits.ndim != 4 or logits.shape[2:] != (wh, ww):
                raise InputError(
                    f"Sliding windows need float logits [N,C,{wh},{ww}] from the model, got {logits.shape}."
                )
            for k, window in enumerate(chunk):
                acc.add(window, logits[k])
    return acc.finish()


# ----------------------------------------------------------------------------- published protocol
PROTOCOLS = ("paddlex", "published")


def protocol_kwargs(model: str | Path, protocol: str, *, home: Path | None = None) -> dict[str, Any]:
    """``Segmenter`` keyword arguments for ``protocol``: ``paddlex`` (the model's inference.yml:
    nothing to add) or ``published`` (the zoo's PaddleSeg test protocol for ``model``).

    ``model`` is a zoo name or a converted directory (its ``fastseg.json`` names the zoo model).

    Raises:
        InputError: an unknown protocol, or a model the zoo has no published protocol for.
    """
    from fastseg.model_dir import is_model_dir, read_meta
    from fastseg.zoo import load_zoo

    if protocol not in PROTOCOLS:
        raise InputError(f"Unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}.")
    if protocol == "paddlex":
        return {}
    path = Path(str(model)).expanduser()
    name = read_meta(path).model_name if is_model_dir(path) else str(model)
    zoo = load_zoo()
    if name not in zoo.models or zoo.models[name].protocol is None:
        raise InputError(
            f"No published protocol for {name!r}: only the {len(zoo.models)} zoo models have one "
            "(fastseg models); set the windows yourself with --slide (and predict's --target_size), or use the "
            "default protocol, paddlex."
        )
    return zoo.models[name].protocol.segmenter_kwargs()  # type: ignore[union-attr]
