"""Accuracy on labelled data with PaddleSeg's metric: ``evaluate``, ``evaluate_labels``, ``compare``.

    from fastseg.evaluation import evaluate
    report = evaluate("PP-LiteSeg-T", "data/cityscapes", out_dir="eval-out")
    print(report.metrics.miou)

Submodules are imported on first use, so ``fastseg --help`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastseg.evaluation.datasets import Dataset, Sample, load_dataset
    from fastseg.evaluation.metrics import ConfusionAccumulator, Metrics, MetricsDelta, compare, evaluate_labels
    from fastseg.evaluation.runner import Comparison, EvalReport, evaluate

_LAZY = {
    "Comparison": "fastseg.evaluation.runner",
    "ConfusionAccumulator": "fastseg.evaluation.metrics",
    "Dataset": "fastseg.evaluation.datasets",
    "EvalReport": "fastseg.evaluation.runner",
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
