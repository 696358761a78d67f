"""Labelled datasets for ``fastseg eval``: PaddleSeg file lists and the Cityscapes layout.

* PaddleSeg: a list file (default ``<dataset>/val_list.txt``), one ``image_path label_path``
  pair per line, relative to the dataset directory; label PNGs hold class ids, 255 = ignore.
* Cityscapes: ``leftImg8bit/val/**/*_leftImg8bit.png`` paired with
  ``gtFine/val/**/*_gtFine_labelTrainIds.png`` (train ids 0-18, 255 = ignore).

Labels are read as PaddleSeg reads them (Pillow, ``np.asarray(Image.open(path))``), so palette
("P" mode) PNGs give their indices, not colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError

DEFAULT_LIST = "val_list.txt"
CITYSCAPES_IMAGES = "leftImg8bit"
CITYSCAPES_LABELS = "gtFine"
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


@dataclass(frozen=True)
class Sample:
    """One labelled image."""

    image: Path
    label: Path


@dataclass(frozen=True)
class Dataset:
    """Labelled images to evaluate on; ``layout`` is ``"list"`` or ``"cityscapes"``."""

    root: Path
    samples: tuple[Sample, ...]
    layout: str
    source: Path  # the list file, or the Cityscapes image folder

    def __len__(self) -> int:
        return len(self.samples)


def read_file_list(list_file: Path, root: Path) -> tuple[Sample, ...]:
    """Parse a PaddleSeg list file (``image label`` per line, relative to ``root``).

    Blank lines and lines starting with ``#`` are skipped; paths may not contain spaces
    (PaddleSeg splits on the separator too).

    Raises:
        InputError: unreadable or empty list, a line without exactly two paths, a missing file
            (the message names the file and line).
    """
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the list file {list_file}: {exc}.") from exc
    samples: list[Sample] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        where = f"{list_file}, line {number}"
        if len(parts) != 2:
            raise InputError(
                f"{where}: expected 'image_path label_path' (two paths separated by a space, relative to "
                f"{root}), got {len(parts)} field(s): {stripped[:120]!r}."
            )
        image, label = (root / parts[0], root / parts[1])
        for kind, path in (("image", image), ("label", label)):
            if not path.is_file():
                raise InputError(f"{where}: {kind} {path} does not exist (paths are relative to {root}).")
        samples.append(Sample(image=image, label=label))
    if not samples:
        raise InputError(f"{list_file} lists no images: add 'image_path label_path' lines.")
    return tuple(samples)


def cityscapes_samples(root: Path, split: str = "val") -> tuple[Sample, ...]:
    """Pair ``leftImg8bit/<split>/**/*_leftImg8bit.png`` with their ``labelTrainIds`` PNGs.

    Raises:
        InputError: no images, or an image without its label (the fix is named).
    """
    image_root = root / CITYSCAPES_IMAGES / split
    images = sorted(image_root.rglob(f"*{CITYSCAPES_IMAGE_SUFFIX}"))
    if not images:
        raise InputError(f"No *{CITYSCAPES_IMAGE_SUFFIX} under {image_root}.")
    samples: list[Sample] = []
    for image in images:
        rel = image.relative_to(image_root)
        label = (
            root / CITYSCAPES_LABELS / split / rel.parent / image.name.replace(CITYSCAPES_IMAGE_SUFFIX, CITYSCAPES_LABEL_SUFFIX)
        )
        if not label.is_file():
            raise InputError(
                f"{image} has no label {label}: create the *_labelTrainIds.png files with cityscapesScripts' "
                "createTrainIdLabelImgs (or pass a --val-list)."
            )
        samples.append(Sample(image=image, label=label))
    return tuple(samples)


def load_dataset(root: str | Path, *, val_list: str | Path | None = None) -> Dataset:
    """The dataset in ``root``: ``val_list`` if given (relative to ``root`` unless it exists as
    given), else ``root/val_list.txt``, else the Cityscapes layout.

    Raises:
        InputError: a missing directory/list, or a dataset in neither format.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"Dataset directory {root} does not exist.")
    if val_list is not None:
        given = Path(val_list).expanduser()
        list_file = given if given.is_file() or given.is_absolute() else root / given
        if not list_file.is_file():
            raise InputError(f"List file {val_list} not found (looked at {given} and {root / given}).")
        return Dataset(root=root, samples=read_file_list(list_file, root), layout="list", source=list_file)
    if (root / DEFAULT_LIST).is_file():
        list_file = root / DEFAULT_LIST
        return Dataset(root=root, samples=read_file_list(list_file, root), layout="list", source=list_file)
    if (root / CITYSCAPES_IMAGES / "val").is_dir():
        return Dataset(
            root=root, samples=cityscapes_samples(root), layout="cityscapes", source=root / CITYSCAPES_IMAGES / "val"
        )
    raise InputError(
        f"{root} is not a dataset fastseg knows: add {DEFAULT_LIST} ('image label' lines, PaddleSeg format), "
        f"pass --val-list FILE, or use the Cityscapes layout ({CITYSCAPES_IMAGES}/val + {CITYSCAPES_LABELS}/val)."
    )


def read_label(path: Path) -> npt.NDArray[Any]:
    """A label map as PaddleSeg reads it: integer [H, W] class ids (palette PNGs give indices).

    Raises:
        InputError: unreadable file, or a colour (RGB) image instead of class ids.
    """
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib ([eval] extra); grey PNGs need only OpenCV
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise InputError(f"Cannot read label {path} (missing or not an image).") from None
    else:
        try:
            with Image.open(path) as im:
                label = np.asarray(im)
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot read label {path}: {exc}.") from exc
    if label.ndim != 2 or label.dtype.kind not in "iu":
        raise InputError(
            f"Label {path} is {'x'.join(map(str, label.shape))} {label.dtype}, not a single-channel map of class "
            "ids: save labels as grey or palette PNGs of class ids (255 = ignore), not colour images."
        )
    return label
