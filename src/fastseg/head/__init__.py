"""The banded head: a graph's final ``Resize -> ArgMax`` computed band by band (numba or numpy),
identical to the graph's labels, without the full-resolution C x H x W logits.

``prepare_head`` (plan.py) picks the head and caches the cut body; ``resize_argmax``
(banded.py) is the computation and fused.py its compiled row pass; interp.py reproduces
ORT's Resize sampling; tail.py finds and cuts the tail; size_expr.py evaluates the
Resize's size from shapes.
"""

from fastseg.head.banded import TailResize, resize_argmax
from fastseg.head.plan import (
    AUTO_MIN_CLASSES,
    AUTO_MIN_CLASSES_COMPILED,
    HEAD_MODES,
    Head,
    HeadMode,
    auto_min_classes,
    head_cache_dir,
    prepare_head,
)

__all__ = [
    "AUTO_MIN_CLASSES",
    "AUTO_MIN_CLASSES_COMPILED",
    "HEAD_MODES",
    "Head",
    "HeadMode",
    "TailResize",
    "auto_min_classes",
    "head_cache_dir",
    "prepare_head",
    "resize_argmax",
]
