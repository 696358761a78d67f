"""What ``evaluate`` measured (``EvalReport``) and how it is shown and saved: a rich per-class
table, ``eval.json`` and a row-normalised confusion-matrix PNG (every file written atomically).
Figures of untrained reference weights carry their warning in each."""

from __future__ import annotations

import io
import json
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fastseg.errors import MissingDependencyError
from fastseg.evaluation.metrics import Metrics, MetricsDelta
from fastseg.files import write_bytes_atomic, write_text_atomic
from fastseg.reference import REFERENCE_NOTE, REFERENCE_WEIGHTS

if TYPE_CHECKING:
    from rich.table import Table

JSON_FILE = "eval.json"
CONFUSION_FILE = "confusion.png"


@dataclass(frozen=True, eq=False)
class Comparison:
    """The second model's figures on the same images, and how the first differs from it."""

    name: str
    engine: str
    metrics: Metrics
    label_agreement: float  # fraction of all pixels where both models give the same class
    delta: MetricsDelta  # evaluated model - this one

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "engine": self.engine,
            **self.metrics.to_json(),
            "label_agreement": self.label_agreement,
            "delta": self.delta.to_json(),
        }


@dataclass(frozen=True, eq=False)
class EvalReport:
    """What ``evaluate`` measured; ``to_json`` is ``eval.json``."""

    model: str
    model_dir: str
    engine: str
    dataset: str
    layout: str
    class_names: tuple[str, ...]
    ignore_index: int
    metrics: Metrics
    seconds: float
    against: Comparison | None = None
    files: dict[str, str] = field(default_factory=dict)
    weights: str | None = None  # the model's provenance["weights"] ("reference-random" = untrained)

    @property
    def weights_note(self) -> str | None:
        """The untrained-weights warning for a reference build's figures, else None."""
        return REFERENCE_NOTE if self.weights == REFERENCE_WEIGHTS else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.metrics.to_json(),
            "engine": self.engine,
            "model": self.model,
            "model_dir": self.model_dir,
            "weights": self.weights,
            "weights_note": self.weights_note,
            "dataset": self.dataset,
            "layout": self.layout,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "seconds": round(self.seconds, 3),
            "confusion": self.metrics.confusion.tolist(),
            "metric": "PaddleSeg 2.8 (zero-union IoU counts as 0)",
        }
        if self.against is not None:
            out["against"] = self.against.to_json()
        return out


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.2f}"


def summary_line(report: EvalReport) -> str:
    """PaddleSeg's ``[EVAL]`` line: images, mIoU, Acc, Kappa, Dice."""
    m = report.metrics
    return (
        f"{_shown(report)} ({report.engine}) on {m.num_images} image(s) of {report.dataset}: "
        f"mIoU {m.miou:.4f}  Acc {m.acc:.4f}  Kappa {m.kappa:.4f}  Dice {m.dice:.4f}"
    )


def _shown(report: EvalReport) -> str:
    """The model's name, with the untrained-weights warning when it has one."""
    return report.model + (f" [{report.weights_note}]" if report.weights_note else "")


def comparison_lines(report: EvalReport) -> list[str]:
    """Both mIoUs, the label agreement and the delta, when the report has a comparison."""
    a = report.against
    if a is None:
        return []
    return [
        f"against {a.name} ({a.engine}): mIoU {a.metrics.miou:.4f}  Acc {a.metrics.acc:.4f}  "
        f"Kappa {a.metrics.kappa:.4f}  Dice {a.metrics.dice:.4f}",
        f"label agreement {a.label_agreement:.4%} of pixels; delta ({report.model} - against): "
        f"mIoU {a.delta.miou:+.6f}  Acc {a.delta.acc:+.6f}  Kappa {a.delta.kappa:+.6f}  Dice {a.delta.dice:+.6f}",
    ]


def render_table(report: EvalReport) -> Table:
    """Per class: IoU, Acc (PaddleSeg's: precision), Recall, Dice, labelled pixels (and the
    compared model's IoU and the difference, when there is one)."""
    from rich.table import Table

    m = report.metrics
    table = Table(title=f"{_shown(report)}: per-class metrics (%, PaddleSeg's definitions)")
    for col in ("Id", "Class", "IoU", "Acc", "Recall", "Dice", "Label px"):
        table.add_column(col, justify="left" if col == "Class" else "right")
    if report.against is not None:
        table.add_column("IoU against", justify="right")
        table.add_column("dIoU", justify="right")
    iou, prec, rec, dice = m.class_iou, m.class_acc, m.class_recall, m.class_dice
    for i in range(m.num_classes):
        row = [
            str(i),
            report.class_names[i] if i < len(report.class_names) else str(i),
            _pct(iou[i]),
            _pct(prec[i]),
            _pct(rec[i]),
            _pct(dice[i]),
            f"{int(m.label_area[i]):,}",
        ]
        if report.against is not None:
            row += [_pct(report.against.metrics.class_iou[i]), f"{100 * report.against.delta.class_iou[i]:+.2f}"]
        table.add_row(*row)
    return table


def warnings_for(report: EvalReport) -> list[str]:
    """Dataset problems worth a warning (labels outside the model's classes)."""
    m = report.metrics
    if not m.unknown_label_pixels:
        return []
    return [
        f"{m.unknown_label_pixels:,} labelled pixels have ids outside 0..{m.num_classes - 1} and are not "
        f"ignore_index ({report.ignore_index}); PaddleSeg counts them as wrong predictions. Labels in another id "
        "space (Cityscapes labelIds instead of labelTrainIds)?"
    ]


def row_normalised(confusion: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Each label row divided by its total (rows without pixels stay 0)."""
    rows = confusion.sum(axis=1, keepdims=True).astype(np.float64)
    out = np.zeros(confusion.shape, dtype=np.float64)
    np.divide(confusion, rows, out=out, where=rows != 0)
    return out


def confusion_png(report: EvalReport) -> bytes:
    """The row-normalised confusion matrix as PNG bytes, class names on both axes.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            "The confusion-matrix PNG needs matplotlib: pip install 'fastseg-ort[eval]'."
        ) from exc
    m = report.metrics
    norm = row_normalised(m.confusion)
    n = m.num_classes
    names = [report.class_names[i] if i < len(report.class_names) else str(i) for i in range(n)]
    side = min(40.0, max(5.0, 0.32 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    try:
        image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        ax.set_xlabel("prediction")
        ax.set_ylabel("label (rows sum to 1)")
        ax.set_title(f"{_shown(report)} ({report.engine}): mIoU {m.miou:.4f}, {m.num_images} image(s)")
        if n <= 30:
            for r in range(n):
                for c in range(n):
                    if norm[r, c] >= 0.005:
                        colour = "white" if norm[r, c] > 0.5 else "black"
                        ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=6, color=colour)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


def write_outputs(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """Write ``eval.json`` and (when matplotlib is installed) ``confusion.png`` into ``out_dir``
    atomically; their paths by kind (``json``, ``confusion``)."""
    data: dict[str, Any] = report.to_json()
    paths = {"json": out_dir / JSON_FILE}
    write_text_atomic(paths["json"], json.dumps(data, indent=2, allow_nan=False) + "\n")
    try:
        png = confusion_png(report)
    except MissingDependencyError:  # the figures matter more than the picture: keep eval.json
        return paths
    paths["confusion"] = out_dir / CONFUSION_FILE
    write_bytes_atomic(paths["confusion"], png)
    return paths
