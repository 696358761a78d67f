"""Pre- and post-processing: pure numpy/OpenCV functions over batches.

decode -> (BGR->RGB) -> Resize (PaddleX/PaddleSeg rules) -> normalise + HWC->CHW written
straight into a preallocated float32 NCHW batch; then model output -> label map (argmax when
the graph has none) -> nearest resize back to each source size.

Mixed image sizes: ``group_by_shape`` splits a batch into runs of equal network input size
(after Resize); each group is one network call. Nothing is padded, so every image is computed
exactly as if it were alone (padding would change what global pooling and attention see).

Imports errors only (STYLE.md layout); the specs it reads are plain dataclasses from
``model_dir``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError, ModelDirError
from fastseg.model_dir import META_FILE, ModelMeta, PreprocessSpec, ResizeSpec
from fastseg.png_decode import decode_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# PaddleX's _BaseResize names (cv2 backend) plus the spelling its docstring uses (CUBIC).
INTERPOLATIONS = {
    "NEAREST": cv2.INTER_NEAREST,
    "LINEAR": cv2.INTER_LINEAR,
    "BICUBIC": cv2.INTER_CUBIC,
    "CUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA,
    "LANCZOS4": cv2.INTER_LANCZOS4,
}

TargetSize = int | tuple[int, int]
"""A user's target_size: an int (square) or (width, height); -1 means "do not resize"."""


def decode_image(data: bytes, *, source: str = "<bytes>") -> npt.NDArray[np.uint8]:
    """Decode encoded image bytes (PNG, JPEG, ...) to BGR uint8 HxWx3.

    Raises:
        InputError: the bytes are not an image OpenCV can decode.
    """
    img = decode_png(data)  # libspng where it equals OpenCV's decode, else None
    if img is None:
        buf = np.frombuffer(data, dtype=np.uint8)
        img = cast("npt.NDArray[np.uint8] | None", cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None)
    if img is None:
        raise InputError(
            f"Cannot decode {source} as an image ({len(data)} bytes); "
            f"use one of {', '.join(IMAGE_SUFFIXES)} and check the file is not truncated."
        )
    return img


def as_bgr(image: npt.NDArray[Any], *, source: str = "<array>") -> npt.NDArray[np.uint8]:
    """Validate an in-memory image and return it as BGR uint8 HxWx3 (gray and BGRA converted).

    Raises:
        InputError: wrong dtype or shape.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"{source}: expected a numpy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise InputError(
            f"{source}: expected a uint8 image (0-255, BGR as OpenCV reads it), got dtype {image.dtype}; "
            "convert with np.clip(img, 0, 255).astype(np.uint8)."
        )
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cast("npt.NDArray[np.uint8]", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 4:
        return cast("npt.NDArray[np.uint8]", cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    if image.ndim == 3 and image.shape[2] == 3:
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"{source}: the image is empty (shape {image.shape}).")
        return image
    raise InputError(f"{source}: expected an HxWx3 BGR (or HxW gray) image, got shape {image.shape}.")


def resize_spec_for(base: ResizeSpec | None, target_size: TargetSize | None) -> ResizeSpec | None:
    """The Resize to apply: the model's, with the user's ``target_size`` overriding its size.

    Follows PaddleX's SegPredictor: a user target_size keeps the model's keep_ratio/size_divisor
    when the model has a Resize, else uses PaddleX's defaults (keep_ratio=True, size_divisor=32,
    LINEAR); -1 (or (-1, -1)) means no resize at all.

    Raises:
        InputError: a malformed target_size.
    """
    if target_size is None:
        return base
    wh = _target_wh(target_size)
    if wh == (-1, -1):
        return None
    if base is None:
        return ResizeSpec(target_size=wh, keep_ratio=True, size_divisor=32, interp="LINEAR")
    return ResizeSpec(target_size=wh, keep_ratio=base.keep_ratio, size_divisor=base.size_divisor, interp=base.interp)


def _target_wh(target_size: TargetSize) -> tuple[int, int]:
    if isinstance(target_size, (int, np.integer)) and not isinstance(target_size, bool):
        wh = (int(target_size), int(target_size))
    elif isinstance(target_size, (tuple, list)) and len(target_size) == 2:
        wh = (int(target_size[0]), int(target_size[1]))
    else:
        raise InputError(f"target_size must be an int or (width, height), got {target_size!r}.")
    if wh != (-1, -1) and (wh[0] <= 0 or wh[1] <= 0):
        raise InputError(f"target_size must be positive (or -1 for no resize), got {target_size!r}.")
    return wh


def resized_hw(src_hw: tuple[int, int], resize: ResizeSpec | None) -> tuple[int, int]:
    """Network input (height, width) for a source (height, width), exactly as PaddleX's Resize.

    keep_ratio: scale = min(max(target)/max(src), min(target)/min(src)), sizes rounded with
    Python's round(); then each side is rounded UP to a multiple of size_divisor.
    """
    if resize is None:
        return src_hw
    h, w = src_hw
    tw, th = resize.target_size
    if resize.keep_ratio:
        scale = min(max(tw, th) / max(w, h), min(tw, th) / min(w, h))
        tw, th = max(1, round(w * scale)), max(1, round(h * scale))  # a 1x4000 strip must not vanish
    if resize.size_divisor:
        d = int(resize.size_divisor)
        tw, th = math.ceil(tw / d) * d, math.ceil(th / d) * d
    return (th, tw)


def network_hw(meta: ModelMeta, image_hw: tuple[int, int], target_size: TargetSize | None = None) -> tuple[int, int]:
    """(height, width) of the tensor the network gets for an ``image_hw`` image: a fixed-shape
    model's size, else its Resize (``target_size`` overriding, see ``resize_spec_for``) applied.

    Raises:
        InputError: a malformed ``target_size``.
    """
    if meta.fixed_hw is not None and not meta.dynamic_hw:
        return meta.fixed_hw
    return resized_hw(image_hw, resize_spec_for(meta.preprocess.resize, target_size))


def group_by_shape(shapes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of ``shapes`` grouped by equal (h, w), groups in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(shapes):
        groups.setdefault(hw, []).append(i)
    return list(groups.values())


def normalize_coefficients(spec: PreprocessSpec) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-channel (a, b) with ``out = pixel * a + b`` == ``(pixel * scale - mean) / std``."""
    mean = np.asarray(spec.mean, dtype=np.float64)
    std = np.asarray(spec.std, dtype=np.float64)
    return (spec.scale / std).astype(np.float32), (-mean / std).astype(np.float32)


def preprocess_into(
    images_bgr: Sequence[npt.NDArray[np.uint8]],
    out_nchw: npt.NDArray[np.float32],
    spec: PreprocessSpec,
    *,
    resize: ResizeSpec | None,
) -> npt.NDArray[np.float32]:
    """Resize, colour-order, normalise and lay out ``images_bgr`` into ``out_nchw`` in place.

    Args:
        images_bgr: N BGR uint8 HxWx3 images whose resized size equals ``out_nchw``'s H, W.
        out_nchw: float32 [N,3,H,W] C-contiguous buffer (allocated by the caller, reusable).
        spec: the model's normalisation and channel order.
        resize: the Resize to apply (``resize_spec_for``), or None.

    Returns:
        ``out_nchw``, filled: channel c of image i is ``pixel * a[c] + b[c]`` in RGB order when
        ``spec.to_rgb`` (one multiply and one add per channel, written into the batch: no
        HWC float copy, no transpose, no stack).
    """
    n, _, h, w = out_nchw.shape
    if len(images_bgr) != n:
        raise InputError(f"preprocess_into: {len(images_bgr)} images for a batch of {n}.")
    a, b = normalize_coefficients(spec)
    interp = INTERPOLATIONS.get((resize.interp if resize else "LINEAR").upper())
    if interp is None:
        raise InputError(f"Unknown Resize interp {resize.interp if resize else ''!r}; use one of {list(INTERPOLATIONS)}.")
    for i, img in enumerate(images_bgr):
        if img.shape[:2] != (h, w):
            img = cast("npt.NDArray[np.uint8]", cv2.resize(img, (w, h), interpolation=interp))
        for c in range(3):
            src_c = 2 - c if spec.to_rgb else c
            dst = out_nchw[i, c]
            np.multiply(img[:, :, src_c], a[c], out=dst, dtype=np.float32, casting="unsafe")
            np.add(dst, b[c], out=dst)
    return out_nchw


def resize_into(
    images_bgr: Sequence[npt.NDArray[np.uint8]],
    out_nhwc: npt.NDArray[np.uint8],
    *,
    resize: ResizeSpec | None,
) -> npt.NDArray[np.uint8]:
    """Resize ``images_bgr`` into the uint8 BGR [N,H,W,3] batch ``out_nhwc`` in place: the input
    of an engine whose graph does the rest of the pre-processing (``fastseg.engines.preprocess_graph``).

    Raises:
        InputError: a count that does not match the batch, or an unknown interpolation.
    """
    n, h, w, _ = out_nhwc.shape
    if len(images_bgr) != n:
        raise InputError(f"resize_into: {len(images_bgr)} images for a batch of {n}.")
    interp = INTERPOLATIONS.get((resize.interp if resize else "LINEAR").upper())
    if interp is None:
        raise InputError(f"Unknown Resize interp {resize.interp if resize else ''!r}; use one of {list(INTERPOLATIONS)}.")
    for i, img in enumerate(images_bgr):
        if img.shape[:2] == (h, w):
            out_nhwc[i] = img
        else:
            cv2.resize(img, (w, h), dst=out_nhwc[i], interpolation=interp)
    return out_nhwc


def uint8_batch(
    images_bgr: Sequence[npt.NDArray[np.uint8]],
    hw: tuple[int, int],
    resize: ResizeSpec | None,
    buffer: Callable[[], npt.NDArray[np.uint8]],
) -> npt.NDArray[np.uint8]:
    """The uint8 BGR [N,H,W,3] batch of an engine that pre-processes itself. One contiguous image
    already at the network's size ``hw`` is its own batch: a view, not a copy (6 MB, ~1 ms at
    1024x2048); otherwise ``resize_into`` the ``buffer()``."""
    img = images_bgr[0]
    if len(images_bgr) == 1 and img.dtype == np.uint8 and img.ndim == 3 and img.shape[:2] == hw and img.flags.c_contiguous:
        return img[np.newaxis]
    return resize_into(images_bgr, buffer(), resize=resize)


def preprocess_batch(
    images_bgr: Sequence[npt.NDArray[np.uint8]], spec: PreprocessSpec, *, resize: ResizeSpec | None
) -> npt.NDArray[np.float32]:
    """``preprocess_into`` a fresh buffer; all images must resize to the same size."""
    sizes = {resized_hw((int(i.shape[0]), int(i.shape[1])), resize) for i in images_bgr}
    if len(sizes) != 1:
        raise InputError(f"preprocess_batch: images resize to different sizes {sorted(sizes)}; group_by_shape first.")
    (h, w) = sizes.pop()
    out = np.empty((len(images_bgr), 3, h, w), dtype=np.float32)
    return preprocess_into(images_bgr, out, spec, resize=resize)


def check_output_kind(kind: str, num_classes: int, name: str, shape: Sequence[Any], type_name: str) -> None:
    """Refuse, when a model loads, a graph output that ``labels_from_output`` could not read as
    ``kind`` (else every image would fail): labels are integer [N,H,W] or [N,1,H,W], logits and
    probs float [N,num_classes,H,W]. ``type_name`` is ONNX Runtime's (``tensor(int64)``); an
    unknown rank (empty shape), a dynamic channel count or another type is not judged.

    Raises:
        ModelDirError: naming output_kind, the output and what it is.
    """
    integer = type_name.startswith(("tensor(int", "tensor(uint"))
    floating = type_name in ("tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)")
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
    if kind == "labels":
        wrong = floating or len(shape) not in (0, 3, 4) or channels not in (None, 1)
    else:
        wrong = integer or len(shape) not in (0, 4) or channels not in (None, num_classes)
    if wrong:
        raise ModelDirError(
            f"{META_FILE}: output_kind is {kind!r} with num_classes {num_classes}, but the model's output {name!r} is "
            f"{type_name} {list(shape)} (labels: integer [N,H,W]; logits/probs: float [N,num_classes,H,W]); "
            "fix output_kind, or re-convert the model ('fastseg convert ... --force')."
        )


def labels_from_output(
    output: npt.NDArray[Any], kind: str, *, with_score: bool = False, owned: bool = False
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32] | None]:
    """Turn a network output into int32 labels [N,H,W] (and optionally a float32 score map).

    Args:
        output: ``labels``: int [N,H,W] or [N,1,H,W]; ``logits``/``probs``: float [N,C,H,W].
        kind: the model's output kind (``ModelMeta.output_kind``).
        with_score: also return the winning class's probability [N,H,W] (softmax of logits);
            None for label outputs, which carry no score.
        owned: ``output`` is the caller's own array, not an engine's buffer that its next run
            overwrites (IO binding, OpenVINO on the CPU): int32 labels are then returned as they
            are, without the copy (8 MB, ~1 ms at 1024x2048).
    """
    if kind == "labels":
        labels = output[:, 0] if output.ndim == 4 else output
        if labels.ndim != 3:
            raise InputError(f"Label output must be [N,H,W] or [N,1,H,W], got {output.shape}.")
        return labels.astype(np.int32, copy=not owned), None
    if output.ndim != 4:
        raise InputError(f"{kind} output must be [N,C,H,W], got {output.shape}.")
    labels = output.argmax(axis=1).astype(np.int32, copy=False)
    if not with_score:
        return labels, None
    if kind == "probs":
        return labels, output.max(axis=1).astype(np.float32, copy=False)
    top = output.max(axis=1, keepdims=True)
    denom = np.exp(output - top).sum(axis=1)
    return labels, (1.0 / denom).astype(np.float32)  # exp(top - top) / sum = 1 / sum


def restore_size(
    labels_hw: npt.NDArray[Any], src_hw: tuple[int, int], *, interpolation: int = cv2.INTER_NEAREST
) -> npt.NDArray[Any]:
    """Resize a label (nearest) or score map back to the source (height, width); no-op if equal."""
    if labels_hw.shape[:2] == tuple(src_hw):
        return labels_hw
    return cv2.resize(labels_hw, (src_hw[1], src_hw[0]), interpolation=interpolation)
