"""PaddleX pipeline configuration: the ``semantic_segmentation`` pipeline YAML, read
(``load_pipeline_config``) and written (``write_pipeline_config``, PaddleX's ``get-config``).

``fastseg.pipeline.create_pipeline`` builds a ``Segmenter`` from what is read here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fastseg.errors import InputError, ModelDirError, UnknownModelError
from fastseg.files import write_text_atomic
from fastseg.model_resolution import DEFAULT_MODEL
from fastseg.processing import TargetSize
from fastseg.reference import WEIGHTS, Weights

PIPELINE_NAME = "semantic_segmentation"
DEFAULT_PIPELINE_YAML = f"""\
pipeline_name: {PIPELINE_NAME}

SubModules:
  SemanticSegmentation:
    module_name: semantic_segmentation
    model_name: {DEFAULT_MODEL}
    model_dir: null      # a converted fastseg model directory; null = the zoo model above
    batch_size: 1
    target_size: null    # int or [width, height]; null = the model's own Resize
    # weights: reference # untrained random weights of model_name (offline); default: official
"""


def target_size_from_yaml(value: Any) -> TargetSize | None:
    """A pipeline YAML's ``target_size``: null/"none" -> None, an int, or [width, height]."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise InputError(f"Pipeline target_size must be null, an int or [width, height], got {value!r}.")


def parse_weights(value: Any) -> Weights:
    """A pipeline YAML's ``weights``: absent/null -> ``official``, else ``official`` or ``reference``."""
    if value is None:
        return "official"
    for choice in WEIGHTS:
        if value == choice:
            return choice
    raise InputError(f"Pipeline weights must be {' or '.join(WEIGHTS)}, got {value!r}.")


def load_pipeline_config(pipeline: str | Path) -> dict[str, Any]:
    """PaddleX's ``SubModules.SemanticSegmentation`` settings for a pipeline name or YAML path.

    Raises:
        UnknownModelError: an unknown pipeline name; ModelDirError: an unreadable/invalid YAML.
    """
    text = str(pipeline)
    if text == PIPELINE_NAME:
        raw = yaml.safe_load(DEFAULT_PIPELINE_YAML)
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UnknownModelError(
                f"Unknown pipeline {text!r}: use {PIPELINE_NAME!r} or a pipeline YAML path "
                f"(write the default with: fastseg get-config {PIPELINE_NAME} --save_path ./)."
            )
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ModelDirError(f"Cannot read pipeline YAML {text!r}: {exc}") from exc
    try:
        name = raw.get("pipeline_name")
        if name != PIPELINE_NAME:
            raise ModelDirError(f"Pipeline {text!r} is {name!r}; fastseg runs only {PIPELINE_NAME!r}.")
        return dict(raw["SubModules"]["SemanticSegmentation"])
    except (AttributeError, KeyError, TypeError) as exc:
        raise ModelDirError(
            f"Pipeline YAML {text!r} lacks SubModules.SemanticSegmentation ({exc!r}); "
            f"compare with: fastseg get-config {PIPELINE_NAME}"
        ) from exc


def write_pipeline_config(save_path: Path, *, pipeline: str = PIPELINE_NAME) -> Path:
    """Write the default pipeline YAML (PaddleX's ``get-config``); a directory gets ``<pipeline>.yaml``."""
    if pipeline != PIPELINE_NAME:
        raise UnknownModelError(f"Unknown pipeline {pipeline!r}; fastseg provides {PIPELINE_NAME!r}.")
    save_path = Path(save_path)
    target = save_path if save_path.suffix in (".yaml", ".yml") else save_path / f"{pipeline}.yaml"
    write_text_atomic(target, DEFAULT_PIPELINE_YAML)
    return target
