"""Segmentation results that read like PaddleX's ``SegResult``, plus colour rendering.

A result is a read-only mapping with PaddleX's keys: ``input_path``, ``page_index``,
``input_img`` (BGR source image) and ``pred`` (int32 [1,H,W] label map at the source size),
plus ``score`` when asked for. ``print``/``json``/``save_to_json`` leave out ``input_img``;
``save_to_img`` writes PaddleX's pseudo-colour map (its ``get_color_map_list`` palette, the
same pixels as PaddleX's PIL 'P' image converted to RGB), optionally over the input image.

Never imports runtime (STYLE.md layout).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError
from fastseg.files import write_bytes_atomic
from fastseg.output_names import printable
from fastseg.palettes import Palette, load_palette
from fastseg.palettes import paddlex_palette as paddlex_palette  # re-exported: its old home

_KEYS = ("input_path", "page_index", "input_img", "pred")
DEFAULT_OVERLAY_ALPHA = 0.4  # PaddleSeg's visualize(): 0.6 image + 0.4 colour


PaletteLike = Sequence[Sequence[int]] | npt.NDArray[Any] | Palette | str | Path
"""RGB rows per class, a ``Palette``, or a palette name/JSON file (``fastseg.palettes.load_palette``)."""


def _palette_array(palette: PaletteLike | None) -> npt.NDArray[np.uint8]:
    if palette is None:
        return paddlex_palette()
    if isinstance(palette, (str, Path)):
        palette = load_palette(palette)
    if isinstance(palette, Palette):
        return palette.lut()
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(pal) < 256:  # unknown labels keep PaddleX's colours
        pal = np.concatenate([pal, paddlex_palette()[len(pal) :]])
    return pal[:256]


def colorize(
    labels_hw: npt.NDArray[Any],
    palette: PaletteLike | None = None,
    *,
    bgr: bool = False,
) -> npt.NDArray[np.uint8]:
    """Colour a label map through a 256-entry palette look-up table.

    Args:
        labels_hw: integer labels [H,W] in 0..255.
        palette: RGB rows per class, a ``Palette``, or a name/JSON file (``paddlex``,
            ``cityscapes``, ``ade20k``, ``FILE.json``); None = PaddleX's pseudo-colour palette.
            Labels beyond a short palette use PaddleX's colours.
        bgr: return BGR (for OpenCV) instead of RGB.

    Returns:
        uint8 [H,W,3].

    Raises:
        InputError: labels outside 0..255 (PaddleX cannot render those either).
    """
    if labels_hw.ndim != 2:
        raise InputError(f"colorize expects a [H,W] label map, got shape {labels_hw.shape}.")
    if labels_hw.size and (labels_hw.min() < 0 or labels_hw.max() > 255):
        raise InputError("Labels outside 0..255 cannot be rendered with a 256-colour palette.")
    lut = _palette_array(palette)
    if bgr:
        lut = lut[:, ::-1]
    lab8 = labels_hw.astype(np.uint8, copy=False)
    return cast("npt.NDArray[np.uint8]", cv2.LUT(cv2.merge([lab8, lab8, lab8]), np.ascontiguousarray(lut).reshape(256, 1, 3)))


def overlay(
    image_bgr: npt.NDArray[np.uint8],
    labels_hw: npt.NDArray[Any],
    palette: PaletteLike | None = None,
    alpha: float = DEFAULT_OVERLAY_ALPHA,
) -> npt.NDArray[np.uint8]:
    """Blend the colour map over the image: ``(1 - alpha) * image + alpha * colour`` (BGR uint8)."""
    if image_bgr.shape[:2] != labels_hw.shape[:2]:
        raise InputError(f"overlay: image {image_bgr.shape[:2]} and labels {labels_hw.shape[:2]} differ in size.")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"overlay alpha must be within [0, 1], got {alpha}.")
    colour = colorize(labels_hw, palette, bgr=True)
    return cast("npt.NDArray[np.uint8]", cv2.addWeighted(image_bgr, 1.0 - alpha, colour, alpha, 0.0))


def _array_json(arr: npt.NDArray[Any]) -> str:
    """Nested JSON lists for ``arr``, one innermost row per line (orjson when installed: ~10x faster)."""
    if arr.ndim <= 1:
        return json.dumps(arr.tolist(), separators=(",", ":"))
    try:
        import orjson

        def dump(row: npt.NDArray[Any]) -> str:
            return orjson.dumps(np.ascontiguousarray(row), option=orjson.OPT_SERIALIZE_NUMPY).decode()

    except ImportError:

        def dump(row: npt.NDArray[Any]) -> str:
            return json.dumps(row.tolist(), separators=(",", ":"))

    if arr.ndim == 2:
        return "[" + ",\n".join(dump(row) for row in arr) + "]"
    return "[" + ",".join(_array_json(sub) for sub in arr) + "]"


def _is_type(path: Path, prefix: str) -> bool:
    """By the suffix alone: a name holding ':', '#' or '?' must not be read as a URL."""
    mime, _ = mimetypes.guess_type(f"file{path.suffix}")
    return mime is not None and mime.startswith(prefix)


@dataclass(frozen=True, eq=False)
class SegResult(Mapping[str, Any]):
    """One image's segmentation, readable as PaddleX's result (``res["pred"]``) or ``res.pred``.

    Attributes:
        input_path: the source path or URL, None for in-memory arrays.
        input_img: the source image, BGR uint8 [H,W,3] (None if not kept).
        pred: int32 [1,H,W] label map at the source size (PaddleX's layout).
        score: float16 [1,H,W] probability of the winning class, when asked for (``scores=True``); else None.
        class_names: the model's class names (index = label).
        palette: RGB colour per class for rendering; None = PaddleX's pseudo-colour palette.
        page_index: always None (PaddleX uses it for PDF pages).
        weights: the model's ``provenance["weights"]`` when it declares one (``"reference-random"``
            for untrained reference weights); written into the JSON so a result never passes for
            the official model's. None (and absent from the JSON) otherwise.
    """

    input_path: str | None
    input_img: npt.NDArray[np.uint8] | None
    pred: npt.NDArray[np.int32]
    score: npt.NDArray[np.float16] | None = None
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] | None = field(default=None, repr=False)
    page_index: int | None = None
    weights: str | None = None

    # -- mapping protocol (PaddleX results are dicts)
    def _keys(self) -> tuple[str, ...]:
        return _KEYS + (("score",) if self.score is not None else ())

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __eq__(self, other: object) -> bool:  # arrays inside: identity, not Mapping's value comparison
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"SegResult(input_path={self.input_path!r}, pred={self.pred.dtype}{list(self.pred.shape)})"

    @property
    def labels_hw(self) -> npt.NDArray[np.int32]:
        """The label map as [H,W] (a view of ``pred``)."""
        return cast("npt.NDArray[np.int32]", self.pred[0])

    # -- serialisation
    def _data(self, *, with_pred: bool) -> dict[str, Any]:
        path = None if self.input_path is None else printable(self.input_path)  # always valid UTF-8 JSON
        data: dict[str, Any] = {"input_path": path, "page_index": self.page_index}
        if self.weights is not None:
            data["weights"] = self.weights
        data["pred"] = self.pred.tolist() if with_pred else "..."
        if self.score is not None:
            data["score"] = self.score.tolist() if with_pred else "..."
        return data

    @property
    def json(self) -> dict[str, Any]:
        """``{"res": {"input_path", "page_index", "pred"}}`` as PaddleX (pred as nested lists)."""
        return {"res": self._data(with_pred=True)}

    def to_json_text(self, *, indent: int = 4, ensure_ascii: bool = False) -> str:
        """JSON of ``json["res"]``; each row of ``pred`` (and ``score``) on one line, not one number per line."""
        frame = self._data(with_pred=False)
        arrays = {"pred": self.pred, "score": self.score}
        for key in ("pred", "score"):
            if key in frame:
                frame[key] = f"@@{key}@@"
        text = json.dumps(frame, indent=indent, ensure_ascii=ensure_ascii)
        for key, arr in arrays.items():
            if arr is not None:
                text = text.replace(f'"@@{key}@@"', _array_json(arr))
        return text

    def print(self, format_json: bool = True, indent: int = 4, ensure_ascii: bool = False) -> None:
        """Print the result without the image and with ``pred`` elided, like PaddleX's ``print``."""
        shown = {"res": self._data(with_pred=False)}
        print(json.dumps(shown, indent=indent, ensure_ascii=ensure_ascii) if format_json else shown)

    def _target(self, save_path: str | Path, suffix: str, kind: str) -> Path:
        path = Path(save_path)
        if _is_type(path, kind):
            return path
        return path / f"{self._stem()}_res{suffix}"

    def _stem(self) -> str:
        """The name a result saved into a directory starts with: the input's stem, as PaddleX's."""
        return Path(self.input_path).stem if self.input_path else "result"

    def save_to_json(self, save_path: str | Path, *, indent: int = 4, ensure_ascii: bool = False) -> Path:
        """Write ``json["res"]`` to ``save_path`` (a .json file, or a directory: ``<stem>_res.json``).

        Written atomically; returns the file written.
        """
        target = self._target(save_path, ".json", "application/json")
        write_bytes_atomic(target, self.to_json_text(indent=indent, ensure_ascii=ensure_ascii).encode("utf-8"))
        return target

    @property
    def img(self) -> dict[str, npt.NDArray[np.uint8]]:
        """``{"res": RGB uint8 [H,W,3]}``: PaddleX's pseudo-colour image (numpy, not PIL)."""
        return {"res": colorize(self.labels_hw, self.palette)}

    def save_to_img(
        self,
        save_path: str | Path,
        *,
        overlay: bool | float = False,
        alpha: float = DEFAULT_OVERLAY_ALPHA,
        palette: PaletteLike | None = None,
    ) -> Path:
        """Write the pseudo-colour map (or, with ``overlay``, the map blended over the input image).

        ``overlay`` may be the blend's alpha itself (``overlay=0.5``; ``True`` uses ``alpha``).
        ``palette`` overrides the result's palette for this image: RGB rows, a ``Palette``, or
        ``paddlex``/``cityscapes``/``ade20k``/``FILE.json`` (``fastseg.palettes``).

        ``save_path`` is an image file or a directory (then ``<input stem>_res.png``, as PaddleX
        names it; always PNG so labels are not blurred by JPEG). Written atomically.

        Raises:
            InputError: ``overlay`` without the input image.
        """
        target = self._target(save_path, ".png", "image/")
        pal: PaletteLike | None = self.palette if palette is None else palette
        if overlay is not False:
            if self.input_img is None:
                raise InputError("save_to_img(overlay=True) needs the input image; this result has none.")
            blend = alpha if overlay is True else float(overlay)
            picture = _overlay(self.input_img, self.labels_hw, pal, blend)
        else:
            picture = colorize(self.labels_hw, pal, bgr=True)
        ok, buf = cv2.imencode(target.suffix or ".png", picture)
        if not ok:
            raise InputError(f"Cannot encode an image as {target.suffix!r}; use .png.")
        write_bytes_atomic(target, buf.tobytes())
        return target


_overlay = overlay


def half_score(score_hw: npt.NDArray[Any]) -> npt.NDArray[np.float16]:
    """A score map [H,W] (computed in float32) as ``SegResult.score``: float16 [1,H,W], half the memory."""
    return np.ascontiguousarray(score_hw, dtype=np.float16)[None]


def score_png(score_hw: npt.NDArray[Any]) -> bytes:
    """A score map [H,W] in 0..1 (or a result's ``score``, [1,H,W]) as an 8-bit grey PNG (0-255,
    rounded): ``--save_scores``' file."""
    score = np.asarray(score_hw, dtype=np.float32)
    if score.ndim == 3 and score.shape[0] == 1:
        score = score[0]
    if score.ndim != 2:
        raise InputError(f"score_png takes a score map [H,W] or a result's score [1,H,W], got shape {score.shape}.")
    grey = np.clip(np.rint(score * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", grey)
    if not ok:
        raise InputError("Cannot encode the score map as PNG.")
    return bytes(buf.tobytes())


def save_score_png(target: Path, result: SegResult) -> Path:
    """Write ``result.score`` to ``target`` as ``score_png`` (atomically).

    Raises:
        InputError: the result has no score (the model's graph ends in ArgMax and its tail
            cannot run banded, or ``scores`` was off).
    """
    if result.score is None:
        raise InputError(
            "This result has no score map: create the Segmenter with scores=True; a model whose graph ends in "
            "ArgMax gives scores only where fastseg's banded head can reproduce its tail (docs/banded-head.md)."
        )
    write_bytes_atomic(target, score_png(result.score[0]))
    return target
