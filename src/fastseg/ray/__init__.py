"""fastseg on Ray (the ``[ray]`` extra): batch segmentation on Ray Data, the PaddleX-compatible
service on Ray Serve, and one worker per device for ``gpu:0,1,2``.

    from fastseg.ray import segment
    report = segment("photos/", "PP-LiteSeg-T", save_path="out/", workers=2)

Importing this package does not import Ray; ``segment``, ``segment_dataset`` and
``build_serve_app`` load it on first use. Absolute imports only: inside this package ``ray``
is always the Ray distribution, never ``fastseg.ray``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fastseg.ray.devices import ClusterResources, WorkerPlan, plan_workers, split_devices

if TYPE_CHECKING:
    from fastseg.ray.batch import BatchReport, segment, segment_dataset
    from fastseg.ray.serve import build_serve_app

_LAZY = {
    "BatchReport": "fastseg.ray.batch",
    "segment": "fastseg.ray.batch",
    "segment_dataset": "fastseg.ray.batch",
    "build_serve_app": "fastseg.ray.serve",
}

__all__ = [
    "BatchReport",
    "ClusterResources",
    "WorkerPlan",
    "build_serve_app",
    "plan_workers",
    "segment",
    "segment_dataset",
    "split_devices",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastseg.ray' has no attribute {name!r}")
