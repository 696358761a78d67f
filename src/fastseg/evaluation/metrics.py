"""PaddleSeg's segmentation metrics over a confusion matrix, one ``np.bincount`` per label map.

The figures are PaddleSeg 2.8's (``paddleseg/utils/metrics.py`` + ``core/val.py``), pixel for
pixel: per class, over the whole set,

* ``intersect[i]`` = pixels with ``pred == i`` and ``label == i``,
* ``pred_area[i]`` = pixels with ``pred == i`` whose label is not ``ignore_index``,
* ``label_area[i]`` = pixels with ``label == i``;

then IoU = intersect / (pred + label - intersect) with a **zero union counted as 0** (the
Cityscapes scripts use NaN and skip the class, so a class absent from both prediction and
label lowers PaddleSeg's mIoU but not theirs), mIoU = the mean over all classes, accuracy =
sum(intersect) / sum(pred_area), class accuracy = intersect / pred_area (PaddleSeg's
``accuracy``, i.e. precision), Kappa and Dice. Labels outside ``0..C-1`` that are not
``ignore_index`` count as wrong predictions (PaddleSeg does the same) and are counted in
``unknown_label_pixels`` so a dataset in the wrong id space (Cityscapes ``labelIds`` instead
of ``labelTrainIds``) is noticed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import InputError

IGNORE_INDEX = 255


def _safe_ratio(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """num / den per class, 0 where den == 0 (PaddleSeg's rule for IoU, Dice and accuracy)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass(frozen=True, eq=False)
class Metrics:
    """PaddleSeg's figures for one evaluation (all arrays float64 [C], areas int64 [C]).

    ``confusion`` is int64 [C, C] (rows: label, columns: prediction) over the pixels whose label
    and prediction are both in ``0..C-1``. ``kappa`` is NaN when undefined (prediction and label
    are one and the same single class everywhere).
    """

    num_classes: int
    num_images: int
    intersect: npt.NDArray[np.int64]
    pred_area: npt.NDArray[np.int64]
    label_area: npt.NDArray[np.int64]
    confusion: npt.NDArray[np.int64]
    unknown_label_pixels: int

    @property
    def class_iou(self) -> npt.NDArray[np.float64]:
        union = (self.pred_area + self.label_area - self.intersect).astype(np.float64)
        return _safe_ratio(self.intersect.astype(np.float64), union)

    @property
    def miou(self) -> float:
        return float(np.mean(self.class_iou))

    @property
    def acc(self) -> float:
        """Pixel accuracy: sum(intersect) / sum(pred_area) (PaddleSeg's ``Acc``)."""
        return float(self.intersect.sum() / self.pred_area.sum())

    @property
    def class_acc(self) -> npt.NDArray[np.float64]:
        """intersect / pred_area per class: PaddleSeg's ``accuracy`` (= its class precision)."""
        return _safe_ratio(self.intersect.astype(np.float64), self.pred_area.astype(np.float64))

    @property
    def class_recall(self) -> npt.NDArray[np.float64]:
        """intersect / label_area per class: PaddleSeg's class recall."""
        return _safe_ratio(self.intersect.astype(np.float64), self.label_area.astype(np.float64))

    @property
    def class_dice(self) -> npt.NDArray[np.float64]:
        return _safe_ratio(2.0 * self.intersect.astype(np.float64), (self.pred_area + self.label_area).astype(np.float64))

    @property
    def dice(self) -> float:
        return float(np.mean(self.class_dice))

    @property
    def kappa(self) -> float:
        """Cohen's kappa from the areas, as PaddleSeg computes it (float64)."""
        inter = self.intersect.astype(np.float64)
        pred = self.pred_area.astype(np.float64)
        label = self.label_area.astype(np.float64)
        total = label.sum()
        po = inter.sum() / total
        pe = float(np.sum(pred * label)) / (total * total)
        return float("nan") if pe == 1.0 else float((po - pe) / (1.0 - pe))

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON values (NaN kappa -> null)."""
        kappa = self.kappa
        return {
            "miou": self.miou,
            "acc": self.acc,
            "kappa": None if np.isnan(kappa) else kappa,
            "dice": self.dice,
            "class_iou": self.class_iou.tolist(),
            "class_acc": self.class_acc.tolist(),
            "class_recall": self.class_recall.tolist(),
            "class_dice": self.class_dice.tolist(),
            "num_images": self.num_images,
            "unknown_label_pixels": self.unknown_label_pixels,
        }


class ConfusionAccumulator:
    """Accumulates (prediction, label) pairs into PaddleSeg's per-class areas.

    Internally a (C+2) x (C+1) count matrix: rows are the label (0..C-1, C = any other id,
    C+1 = ``ignore_index``), columns the prediction (0..C-1, C = out of range). Filled with one
    ``np.bincount`` per map; a 256-entry lookup table maps uint8 labels to rows.
    """

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._counts = np.zeros((num_classes + 2) * (num_classes + 1), dtype=np.int64)
        self._num_images = 0
        codes = np.arange(256, dtype=np.intp)
        codes[num_classes:] = num_classes
        if 0 <= ignore_index < 256:
            codes[ignore_index] = num_classes + 1
        self._uint8_rows = codes * (num_classes + 1)  # row offset per uint8 label value

    @property
    def num_images(self) -> int:
        return self._num_images

    def _row_offsets(self, label: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
        c = self.num_classes
        if label.dtype == np.uint8:
            rows: npt.NDArray[np.intp] = self._uint8_rows[label]
            return rows
        valid = (label >= 0) & (label < c)
        codes = np.where(valid, label, c).astype(np.intp)
        codes[label == self.ignore_index] = c + 1
        return codes * (c + 1)

    def _columns(self, pred: npt.NDArray[Any]) -> npt.NDArray[np.unsignedinteger[Any]]:
        """Prediction columns 0..C (C = out of range), unsigned (cast-free for the index sum)."""
        if pred.dtype.kind == "i":  # negatives wrap to huge unsigned values -> column C
            pred = pred.view(pred.dtype.str.replace("i", "u"))
        if pred.dtype.kind != "u":
            raise InputError(f"Predictions must be integer class ids, got dtype {pred.dtype}.")
        cols: npt.NDArray[np.unsignedinteger[Any]] = np.minimum(pred, self.num_classes)
        return cols

    def add(self, pred: npt.NDArray[Any], label: npt.NDArray[Any], *, name: str = "prediction") -> None:
        """Count one map pair: ``pred`` and ``label`` integer [H, W] (a leading 1 is squeezed).

        Raises:
            InputError: different sizes, or non-integer arrays (``name`` is used in the message).
        """
        pred = np.asarray(pred)
        label = np.asarray(label)
        if pred.ndim == 3 and pred.shape[0] == 1:
            pred = pred[0]
        if label.ndim == 3 and label.shape[0] == 1:
            label = label[0]
        if pred.shape != label.shape or pred.ndim != 2:
            raise InputError(
                f"{name}: prediction {pred.shape} and label {label.shape} must be the same [H, W]; "
                "PaddleSeg compares at the label's (original) size."
            )
        if label.dtype.kind not in "iu":
            raise InputError(f"{name}: labels must be integer class ids, got dtype {label.dtype}.")
        index = self._row_offsets(label).ravel()  # a fresh intp array: add in place
        np.add(index, self._columns(pred).ravel(), out=index, casting="unsafe")  # columns are <= C
        self._counts += np.bincount(index, minlength=self._counts.size)
        self._num_images += 1

    def merge(self, other: ConfusionAccumulator) -> None:
        """Add another accumulator's counts (same classes and ignore index), e.g. from a worker."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise InputError("Cannot merge accumulators with different num_classes or ignore_index.")
        self._counts += other._counts
        self._num_images += other._num_images

    def metrics(self) -> Metrics:
        """The figures so far.

        Raises:
            InputError: no pixel was evaluated (no maps, or every label pixel ignored).
        """
        c = self.num_classes
        full = self._counts.reshape(c + 2, c + 1)
        counted = full[: c + 1]  # rows without the ignore row
        pred_area = counted[:, :c].sum(axis=0)
        label_area = full[:c].sum(axis=1)
        if 0 <= self.ignore_index < c:  # PaddleSeg counts label == ignore_index in its label area
            label_area[self.ignore_index] += full[c + 1].sum()
        if pred_area.sum() == 0:
            raise InputError(
                f"No pixel to evaluate in {self._num_images} map(s): every label pixel is "
                f"ignore_index ({self.ignore_index}) or no prediction is a class id 0..{c - 1}."
            )
        return Metrics(
            num_classes=c,
            num_images=self._num_images,
            intersect=np.ascontiguousarray(np.diagonal(full)[:c]).astype(np.int64),
            pred_area=pred_area.astype(np.int64),
            label_area=label_area.astype(np.int64),
            confusion=np.ascontiguousarray(full[:c, :c]),
            unknown_label_pixels=int(full[c].sum()),
        )


def evaluate_labels(
    pairs: Iterable[tuple[npt.NDArray[Any], npt.NDArray[Any]]],
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> Metrics:
    """PaddleSeg's metrics for ``(pred, label)`` pairs of integer [H, W] maps.

    For callers that already hold predictions (the quantisation gate, tests).

    Raises:
        InputError: a pair of different sizes, non-integer maps, or nothing to evaluate.
    """
    acc = ConfusionAccumulator(num_classes, ignore_index=ignore_index)
    for i, (pred, label) in enumerate(pairs):
        acc.add(pred, label, name=f"pair {i}")
    return acc.metrics()


@dataclass(frozen=True, eq=False)
class MetricsDelta:
    """``candidate - baseline`` for the headline figures and per class (IoU)."""

    miou: float
    acc: float
    kappa: float
    dice: float
    class_iou: npt.NDArray[np.float64]

    def to_json(self) -> dict[str, Any]:
        return {
            "miou": self.miou,
            "acc": self.acc,
            "kappa": None if np.isnan(self.kappa) else self.kappa,
            "dice": self.dice,
            "class_iou": self.class_iou.tolist(),
        }


def compare(candidate: Metrics, baseline: Metrics) -> MetricsDelta:
    """How ``candidate`` (e.g. int8, OpenVINO) moves each figure relative to ``baseline`` (fp32 ORT).

    Raises:
        InputError: the two were computed over different class counts.
    """
    if candidate.num_classes != baseline.num_classes:
        raise InputError(
            f"Cannot compare metrics over {candidate.num_classes} and {baseline.num_classes} classes."
        )
    return MetricsDelta(
        miou=candidate.miou - baseline.miou,
        acc=candidate.acc - baseline.acc,
        kappa=candidate.kappa - baseline.kappa,
        dice=candidate.dice - baseline.dice,
        class_iou=candidate.class_iou - baseline.class_iou,
    )
