"""Accuracy on labelled data with PaddleSeg's metric: ``evaluate``, ``evaluate_labels``, ``compare``.

    from fastseg.evaluation import evaluate
    report = evaluate("PP-LiteSeg-T", "data/cityscapes", out_dir="eval-out")
    print(report.metrics.miou)

Submodules are imported on first use, so ``fastseg --help`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastseg.evaluation.datasets import Dataset as Dataset
    from fastseg.evaluation.datasets import Sample as Sample
    from fastseg.evaluation.datasets import load_dataset as load_dataset
    from fastseg.evaluation.metrics import ConfusionAccumulator as ConfusionAccumulator
    from fastseg.evaluation.metrics import Metrics as Metrics
    from fastseg.evaluation.metrics import MetricsDelta as MetricsDelta
    from fastseg.evaluation.metrics import compare as compare
    from fastseg.evaluation.metrics import evaluate_labels as evaluate_labels
    from fastseg.evaluation.report import Comparison as Comparison
    from fastseg.evaluation.report import EvalReport as EvalReport
    from fastseg.evaluation.runner import evaluate as evaluate

_LAZY = {
    "Comparison": "fastseg.evaluation.report",
    "ConfusionAccumulator": "fastseg.evaluation.metrics",
    "Dataset": "fastseg.evaluation.datasets",
    "EvalReport": "fastseg.evaluation.report",
    "Metrics": "fastseg.evaluation.metrics",
    "MetricsDelta": "fastseg.evaluation.metrics",
    "Sample": "fastseg.evaluation.datasets",
    "compare": "fastseg.evaluation.metrics",
    "evaluate": "fastseg.evaluation.runner",
    "evaluate_labels": "fastseg.evaluation.metrics",
    "load_dataset": "fastseg.evaluation.datasets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastseg.evaluation' has no attribute {name!r}")


__all__ = sorted(_LAZY)
