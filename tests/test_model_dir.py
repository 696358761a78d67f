"""fastseg.json validation (issue 13, hardening 6): a clear ModelDirError naming the field and
the fix, never a traceback, for JSON that is not an object or metadata that cannot work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

from fastseg.cli import main
from fastseg.errors import ModelDirError
from fastseg.model_dir import META_FILE, ModelMeta, read_meta


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture()
def raw(good_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((good_dir / META_FILE).read_text(encoding="utf-8"))
    return loaded


def test_good_meta_round_trips(good_dir: Path, raw: dict[str, Any]) -> None:
    meta = ModelMeta.from_json(raw)
    assert meta == read_meta(good_dir)
    assert meta.num_classes == 3 and len(meta.class_names) == 3


@pytest.mark.parametrize(
    ("value", "needle"),
    [([1, 2], "must hold a JSON object, got a JSON array"), ("x", "got a JSON string"), (None, "got a JSON null")],
)
def test_non_object_json_is_refused(value: Any, needle: str) -> None:
    with pytest.raises(ModelDirError, match=needle):
        ModelMeta.from_json(value)


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = raw
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("num_classes", 150, r"class_names has 3 name\(s\) for num_classes 150; list one name per class"),
        ("class_names", ["only"], r"class_names has 1 name\(s\) for num_classes 3"),
        ("class_names", "abc", "class_names must be a list of strings"),
        ("num_classes", 0, "num_classes is 0; a model has at least 1 class"),
        ("palette", [[0, 0, 0]], r"palette has 1 colour\(s\) for num_classes 3"),
        ("palette", [[0, 0, 0], [1, 1, 1], [300, 0, 0]], "palette has a colour component outside 0-255"),
        ("preprocess.std", [0, 0.5, 0.5], r"preprocess.std is \[0.0, 0.5, 0.5\]; a zero std divides by zero"),
        ("preprocess.std", [0.5, 0.5], "expected 3 per-channel values"),
        ("preprocess.scale", 0, "preprocess.scale is 0.0; it must be > 0"),
        ("preprocess.resize", {"target_size": [0, 0]}, r"preprocess.resize.target_size is \[0, 0\]"),
        ("preprocess.resize", {"target_size": [64, 64], "size_divisor": 0}, "preprocess.resize.size_divisor is 0"),
        ("fixed_hw", [0, 32], r"fixed_hw is \[0, 32\]"),
        ("preprocess", [1, 2], "preprocess must be a JSON object"),
        ("output_kind", "mask", "output_kind 'mask' not in"),
        ("model_name", "", "model_name is empty"),
    ],
)
def test_inconsistent_meta_names_the_field(raw: dict[str, Any], path: str, value: Any, needle: str) -> None:
    with pytest.raises(ModelDirError, match=needle) as info:
        ModelMeta.from_json(_set(raw, path, value))
    assert "re-convert" in str(info.value) and "\n" not in str(info.value)


def test_missing_field_is_named(raw: dict[str, Any]) -> None:
    del raw["input_name"]
    with pytest.raises(ModelDirError, match="lacks the field 'input_name'"):
        ModelMeta.from_json(raw)


def test_predict_with_a_non_object_fastseg_json_is_one_line(good_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(good_dir, broken)
    (broken / META_FILE).write_text("[1, 2, 3]\n", encoding="utf-8")
    image = tmp_path / "img.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    result = CliRunner().invoke(main, ["predict", "--input", str(image), "--model", str(broken), "--device", "cpu"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: fastseg.json must hold a JSON object, got a JSON array; re-convert the model "
        "('fastseg convert ... --force')."
    ]
    assert "Traceback" not in result.output
