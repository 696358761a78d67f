"""Named colour palettes (``paddlex``, ``cityscapes``, ``ade20k``, or a JSON file) and legend images.

PaddleX colours labels with its bit-interleaved pseudo-colour palette (the default, unchanged);
users comparing with their own ground truth want the dataset's official colours, and a legend
naming which colour is which class. A ``Palette`` is RGB rows per class plus, when known,
class names (the zoo's for Cityscapes/ADE20K, a JSON file's own).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError
from fastseg.files import write_bytes_atomic

PALETTE_NAMES = ("paddlex", "cityscapes", "ade20k")
_ZOO_DATASET = {"cityscapes": "Cityscapes", "ade20k": "ADE20K"}
_GENERIC_NAME = re.compile(r"class_(\d+)")


@cache
def paddlex_palette(num_colors: int = 256) -> npt.NDArray[np.uint8]:
    """PaddleX/PaddleSeg ``get_color_map_list``: RGB uint8 [num_colors, 3].

    Label k gets the bit-interleaved colour of k + 1 (PaddleX builds num_colors + 1 entries
    and drops the first), so label 0 is (128, 0, 0). The result is read-only.
    """
    idx = np.arange(1, num_colors + 1, dtype=np.int64)
    pal = np.zeros((num_colors, 3), dtype=np.int64)
    bits = int(idx.max()).bit_length()
    for j in range((bits + 2) // 3):
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * j + ch)) & 1) << (7 - j)
    out = pal.astype(np.uint8)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class Palette:
    """RGB colour per class (index = label) and the class names that came with it (may be empty)."""

    name: str
    colors: tuple[tuple[int, int, int], ...]
    class_names: tuple[str, ...] = ()

    def lut(self) -> npt.NDArray[np.uint8]:
        """RGB uint8 [256,3]; labels past ``colors`` keep PaddleX's colours."""
        pal = np.array(paddlex_palette(), dtype=np.uint8)
        n = min(len(self.colors), 256)
        if n:
            pal[:n] = np.asarray(self.colors[:n], dtype=np.uint8)
        return pal


@cache
def _builtin(name: str) -> tuple[tuple[int, int, int], ...]:
    raw = json.loads(resources.files("fastseg").joinpath("data/palettes.json").read_text(encoding="utf-8"))
    return tuple((int(c[0]), int(c[1]), int(c[2])) for c in raw[name])


def _colors(raw: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: the palette must be a non-empty list of [R, G, B] rows.")
    out = []
    for i, row in enumerate(raw):
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in row)):
            raise InputError(f"{where}: colour {i} is {row!r}; each colour is [R, G, B] with integers 0-255.")
        out.append((row[0], row[1], row[2]))
    return tuple(out)


def load_palette(spec: str | Path) -> Palette:
    """``paddlex``, ``cityscapes``, ``ade20k``, or a JSON file.

    A JSON file holds ``[[R, G, B], ...]`` (index = label) or
    ``{"palette": [[R, G, B], ...], "class_names": ["road", ...]}``.

    Raises:
        InputError: unknown name, unreadable or malformed file (the message shows the format).
    """
    text = str(spec)
    key = text.lower()
    if key == "paddlex":
        return Palette("paddlex", tuple((int(r), int(g), int(b)) for r, g, b in paddlex_palette()))
    if key in _ZOO_DATASET:
        from fastseg.zoo import load_zoo

        names = load_zoo().datasets[_ZOO_DATASET[key]].class_names
        return Palette(key, _builtin(key), tuple(names))
    path = Path(text).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        raise InputError(
            f"Unknown palette {text!r}: use {', '.join(PALETTE_NAMES)}, or a JSON file holding "
            '[[R, G, B], ...] or {"palette": [[R, G, B], ...], "class_names": [...]}.'
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read palette file {text!r}: {exc}.") from exc
    file_names: Any = ()
    if isinstance(raw, dict):
        file_names = raw.get("class_names", ())
        raw = raw.get("palette", raw.get("colors"))
        if not isinstance(file_names, list | tuple) or not all(isinstance(n, str) for n in file_names):
            raise InputError(f"{text}: class_names must be a list of strings.")
    return Palette(path.stem, _colors(raw, text), tuple(file_names))


def legend_names(num: int, *names: Sequence[str]) -> list[str]:
    """A display name per label: the first non-generic name any source gives, else the number.

    ``class_7`` (what ``fastseg convert`` writes for a model it has no names for) counts as generic.
    """
    out = []
    for label in range(num):
        chosen = str(label)
        for source in names:
            if label < len(source) and source[label] and not _GENERIC_NAME.fullmatch(source[label]):
                chosen = f"{label} {source[label]}"
                break
        out.append(chosen)
    return out


def legend_image(
    labels: Sequence[int], names: Sequence[str], lut_rgb: npt.NDArray[np.uint8], *, row_h: int = 22
) -> npt.NDArray[np.uint8]:
    """A BGR legend: one row per label in ``labels`` (a colour swatch, then its name).

    ``names[label]`` is shown (``legend_names`` builds them); labels past it show their number.
    """
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    texts = [names[k] if k < len(names) else str(k) for k in labels]
    width = max([cv2.getTextSize(t, font, scale, thick)[0][0] for t in texts] + [60]) + row_h + 16
    img = np.full((max(len(texts), 1) * row_h + 8, width, 3), 255, np.uint8)
    for row, (label, text) in enumerate(zip(labels, texts, strict=True)):
        y = 4 + row * row_h
        r, g, b = (int(v) for v in lut_rgb[label % 256])
        cv2.rectangle(img, (4, y + 2), (4 + row_h - 6, y + row_h - 4), (b, g, r), thickness=-1)
        cv2.rectangle(img, (4, y + 2), (4 + row_h - 6, y + row_h - 4), (0, 0, 0), thickness=1)
        cv2.putText(img, text, (row_h + 6, y + row_h - 7), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return cast("npt.NDArray[np.uint8]", img)


def present_labels(labels_hw: npt.NDArray[Any]) -> set[int]:
    """The labels that occur in a label map."""
    if labels_hw.size == 0:
        return set()
    counts = np.bincount(labels_hw.ravel().astype(np.int64, copy=False))
    return {int(k) for k in np.flatnonzero(counts)}


def save_legend(path: Path, labels: Sequence[int], names: Sequence[str], lut_rgb: npt.NDArray[np.uint8]) -> Path:
    """Write ``legend_image`` as a PNG (atomically); returns ``path``."""
    ok, buf = cv2.imencode(".png", legend_image(labels, names, lut_rgb))
    if not ok:
        raise InputError(f"Cannot encode the legend {path}.")
    write_bytes_atomic(path, buf.tobytes())
    return path
