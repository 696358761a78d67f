"""PaddleX's ``create_pipeline`` for the semantic segmentation pipeline: a ``Segmenter``
configured from a pipeline YAML (``fastseg.pipeline_config`` reads and writes those)."""

from __future__ import annotations

from pathlib import Path

from fastseg.engines.ort import RuntimeOptions
from fastseg.model_resolution import DEFAULT_MODEL
from fastseg.pipeline_config import PIPELINE_NAME, load_pipeline_config, parse_weights, target_size_from_yaml
from fastseg.reference import Weights
from fastseg.segmenter import Segmenter


def create_pipeline(
    pipeline: str | Path = PIPELINE_NAME,
    *,
    device: str = "cpu",
    options: RuntimeOptions | None = None,
    allow_fallback: bool = False,
    home: Path | None = None,
    engine: str = "auto",
    weights: Weights | None = None,
    compiled_kernels: bool = True,
) -> Segmenter:
    """PaddleX-style ``create_pipeline``: a ``Segmenter`` configured from a pipeline YAML.

    Reads ``SubModules.SemanticSegmentation``: ``model_dir`` (wins when set) or ``model_name``,
    ``weights`` (``official`` or ``reference``, as ``Segmenter``'s; the ``weights`` argument
    overrides it), ``batch_size``, ``target_size``. Use ``predict(input=...)`` on the result, as
    in PaddleX. ``compiled_kernels``: as ``Segmenter``'s.
    """
    sub = load_pipeline_config(pipeline)
    model = sub.get("model_dir") or sub.get("model_name") or DEFAULT_MODEL
    return Segmenter(
        model,
        weights=weights or parse_weights(sub.get("weights")),
        device=device,
        batch_size=int(sub.get("batch_size") or 1),
        target_size=target_size_from_yaml(sub.get("target_size")),
        options=options,
        allow_fallback=allow_fallback,
        home=home,
        engine=engine,
        compiled_kernels=compiled_kernels,
    )

