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


def _write(good_dir: Path, target: Path, text: str) -> Path:
    shutil.copytree(good_dir, target)
    (target / META_FILE).write_text(text, encoding="utf-8")
    return target


@pytest.mark.parametrize(
    ("old", "new", "field", "why"),
    [
        ('"num_classes": 3', '"num_classes": 1e400', "num_classes", "an overflow like 1e400 reads as infinity"),
        ('"num_classes": 3', '"num_classes": NaN', "num_classes", "NaN"),
        ('"opset": 13', '"opset": -1e400', "opset", "an overflow like 1e400 reads as infinity"),
    ],
)
def test_non_finite_number_names_the_field(good_dir: Path, tmp_path: Path, old: str, new: str, field: str, why: str) -> None:
    """JSON reads 1e400 as infinity; int() of it was an OverflowError traceback."""
    text = (good_dir / META_FILE).read_text(encoding="utf-8")
    assert old in text
    broken = _write(good_dir, tmp_path / "m", text.replace(old, new))
    with pytest.raises(ModelDirError, match=rf"^fastseg.json: {field} is not a finite number \({why}\)"):
        read_meta(broken)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("palette", [[0, 0, 0], [1, 1, float("inf")], [2, 2, 2]], r"palette\[1\]\[2\]"),
        ("preprocess.resize", {"target_size": [float("inf"), 512]}, r"preprocess.resize.target_size\[0\]"),
        ("fixed_hw", [32, float("-inf")], r"fixed_hw\[1\]"),
    ],
)
def test_non_finite_nested_value_names_its_path(raw: dict[str, Any], path: str, value: Any, field: str) -> None:
    with pytest.raises(ModelDirError, match=rf"^fastseg.json: {field} is not a finite number"):
        ModelMeta.from_json(_set(raw, path, value))


def test_deeply_nested_fastseg_json_is_a_model_dir_error(good_dir: Path, tmp_path: Path) -> None:
    depth = 200_000
    text = '{"format_version": 1, "provenance": ' + "[" * depth + "]" * depth + "}"
    broken = _write(good_dir, tmp_path / "deep", text)
    with pytest.raises(ModelDirError, match="nests arrays/objects too deeply to read; re-convert"):
        read_meta(broken)


def test_huge_integer_is_a_model_dir_error(good_dir: Path, tmp_path: Path) -> None:
    text = (good_dir / META_FILE).read_text(encoding="utf-8").replace('"opset": 13', '"opset": ' + "9" * 5000)
    with pytest.raises(ModelDirError, match="is invalid .*4300 digits"):
        read_meta(_write(good_dir, tmp_path / "big", text))


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("preprocess.resize", {"target_size": [512, 512], "interp": "BOGUS"},
         r"preprocess.resize.interp is 'BOGUS'; use one of \['NEAREST', 'LINEAR'"),
        ("preprocess.resize", {"target_size": [10**6, 512]}, r"target_size is \[1000000, 512\]; give \[width, height\] from 1 to 16384"),
        ("preprocess.resize", {"target_size": [512, 512], "size_divisor": 10**9}, "size_divisor is 1000000000; use an int from 1 to 4096"),
        ("fixed_hw", [32, 10**6], r"fixed_hw is \[32, 1000000\]; give \[height, width\] from 1 to 16384"),
    ],
)
def test_unusable_resize_is_refused_at_load(raw: dict[str, Any], path: str, value: Any, needle: str) -> None:
    with pytest.raises(ModelDirError, match=needle):
        ModelMeta.from_json(_set(raw, path, value))


def test_lower_case_interp_is_accepted_and_the_names_match_processing(raw: dict[str, Any]) -> None:
    from fastseg.processing import INTERPOLATIONS

    meta = ModelMeta.from_json(_set(raw, "preprocess.resize", {"target_size": [8, 8], "interp": "nearest"}))
    assert meta.preprocess.resize is not None and meta.preprocess.resize.interp == "nearest"
    for name in INTERPOLATIONS:  # every name processing maps is one check_meta accepts, and no other
        ModelMeta.from_json(_set(raw, "preprocess.resize", {"target_size": [8, 8], "interp": name}))
    with pytest.raises(ModelDirError):
        ModelMeta.from_json(_set(raw, "preprocess.resize", {"target_size": [8, 8], "interp": "INTER_LINEAR"}))


def _with_kind(model_dir: Path, kind: str) -> Path:
    meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    meta["output_kind"] = kind
    (model_dir / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return model_dir


@pytest.mark.parametrize(
    ("graph", "claimed", "shown"),
    [("labels", "logits", r"tensor\(int64\) \['N', 'H', 'W'\]"), ("labels", "probs", "tensor\\(int64\\)"),
     ("logits", "labels", r"tensor\(float\) \['N', 3, 'H', 'W'\]")],
)
def test_output_kind_that_the_graph_contradicts_is_refused_at_load(tmp_path: Path, graph: str, claimed: str, shown: str) -> None:
    from fastseg.segmenter import Segmenter

    model = _with_kind(colour_model_dir(tmp_path / "m", kind=graph), claimed)
    with pytest.raises(ModelDirError, match=rf"output_kind is '{claimed}' with num_classes 3, but the model's output '\w+' is {shown}"):
        Segmenter(model, device="cpu", head="graph")


def test_logits_channels_must_match_num_classes() -> None:
    from fastseg.processing import check_output_kind

    check_output_kind("logits", 3, "y", ("N", 3, "H", "W"), "tensor(float)")
    check_output_kind("probs", 3, "y", ("N", None, "H", "W"), "tensor(float16)")  # dynamic channels: not judged
    check_output_kind("labels", 3, "y", ("N", 1, "H", "W"), "tensor(int32)")
    with pytest.raises(ModelDirError, match=r"is tensor\(float\) \['N', 19, 'H', 'W'\]"):
        check_output_kind("logits", 3, "y", ("N", 19, "H", "W"), "tensor(float)")
    with pytest.raises(ModelDirError, match="labels: integer"):
        check_output_kind("labels", 3, "y", ("N", 2, "H", "W"), "tensor(int64)")


def test_probs_graph_read_as_logits_is_accepted(tmp_path: Path) -> None:
    """Both are float [N,C,H,W] and argmax the same: only the score differs, nothing to refuse."""
    from fastseg.segmenter import Segmenter

    with Segmenter(_with_kind(colour_model_dir(tmp_path / "m", kind="probs"), "logits"), device="cpu") as seg:
        assert seg.meta.output_kind == "logits"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m["preprocess"].update(resize={"target_size": [8, 8], "interp": "BOGUS"}), "preprocess.resize.interp is 'BOGUS'"),
        (lambda m: m.update(output_kind="logits"), "output_kind is 'logits'"),
        (lambda m: m.update(num_classes=float("inf")), "num_classes is not a finite number"),
    ],
)
def test_serve_refuses_an_unservable_model_at_start_in_one_line(good_dir: Path, tmp_path: Path, edit: Any, needle: str) -> None:
    """Before: serve started and answered every request 422 (or a traceback for 1e400)."""
    pytest.importorskip("uvicorn", reason="needs the [serve] extra")
    import socket

    meta = json.loads((good_dir / META_FILE).read_text(encoding="utf-8"))
    edit(meta)
    broken = _write(good_dir, tmp_path / "m", json.dumps(meta))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["serve", "--model", str(broken), "--port", str(port)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: fastseg.json: ") and needle in lines[0], result.output
