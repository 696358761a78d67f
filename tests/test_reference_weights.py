"""``--weights reference``: an untrained build is labelled wherever a user meets it, and never
passes for the official model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

import fastseg
from fastseg.cli import main
from fastseg.errors import MissingDependencyError
from fastseg.model_dir import read_meta, write_meta
from fastseg.convert.reference import build_reference_model, load_builder
from fastseg.reference import (
    REFERENCE_NOTE,
    REFERENCE_WEIGHTS,
    converted_status,
    reference_model_dir,
)

NAME = "PP-LiteSeg-T"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("FASTSEG_HOME", str(root))
    return root


def _label(model_dir: Path) -> Path:
    meta = read_meta(model_dir)
    write_meta(model_dir, replace(meta, provenance={**meta.provenance, "weights": REFERENCE_WEIGHTS}))
    return model_dir


@pytest.fixture
def built(home: Path) -> Path:
    """A (tiny) reference build where ``--weights reference`` keeps it, as if built earlier."""
    return _label(colour_model_dir(reference_model_dir(NAME, home), name=NAME))


def test_predict_with_reference_weights_labels_summary_and_json(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--model", NAME, "--weights", "reference", "--save_path", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Using untrained reference weights for {NAME}" in result.stderr
    summary = result.stdout.strip()
    assert summary.startswith("1 image(s) in ") and f"with {NAME} [{REFERENCE_NOTE}] on cpu" in summary
    res = json.loads((out / "demo_street_res.json").read_text())
    assert res["weights"] == REFERENCE_WEIGHTS and list(res)[:3] == ["input_path", "page_index", "weights"]
    assert np.array(res["pred"]).shape == (1, 512, 1024)


def test_official_name_never_uses_the_reference_build(built: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --weights reference the zoo name means the official model: offline, that is an error."""
    import fastseg.download as download

    def unreachable(url: str, dest: Path, **_: object) -> object:
        raise download.UnreachableError(f"Cannot reach {url}.")

    monkeypatch.setattr(download, "fetch", unreachable)
    result = CliRunner().invoke(main, ["predict", "--model", NAME])
    assert result.exit_code == 2 and "Cannot download PP-LiteSeg-T (offline?)" in result.output


def test_models_table_and_json_tell_reference_from_official(built: Path, home: Path) -> None:
    result = CliRunner().invoke(main, ["models"], terminal_width=200)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if f" {NAME} " in line)
    assert "│ reference │" in row  # the Converted column (the published protocol follows)
    assert "UNTRAINED reference weights" in result.output
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["models", "--format", "json"]).output)}
    assert rows[NAME]["converted"] is False and rows[NAME]["converted_weights"] == "reference"
    assert rows["SegFormer-B0"]["converted_weights"] == "no"
    assert rows[NAME]["inference_urls"][0].endswith(f"{NAME}_infer.tar")


def test_converted_status_cases(home: Path) -> None:
    assert converted_status(NAME) == "no"
    colour_model_dir(home / "models" / NAME, name=NAME)
    assert converted_status(NAME) == "yes"
    _label(colour_model_dir(reference_model_dir(NAME), name=NAME))
    assert converted_status(NAME) == "yes + reference"
    _label(home / "models" / NAME)  # a reference build converted into the official place still says so
    assert converted_status(NAME) == "reference"


def _fake_convert(calls: list[dict[str, Any]]) -> Any:
    """Stands in for fastseg.convert.convert_model: writes a tiny model dir, returns a report."""
    from fastseg.convert.pipeline import ConvertReport

    def convert(source: Path, output: Path, **kwargs: Any) -> ConvertReport:
        calls.append({"source": source, "output": output, **kwargs})
        colour_model_dir(output, name=kwargs["model_name"])
        meta = read_meta(output)
        return ConvertReport(output, meta.model_name, "pir", 13, 0.1, 1, False, {}, meta)

    return convert


def test_build_labels_before_the_directory_appears(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("fastseg.convert.convert_model", _fake_convert(calls))
    monkeypatch.setattr("fastseg.convert.child.require_convert_deps", lambda: None)
    tar = tmp_path / f"{NAME}_infer.tar"
    tar.write_bytes(b"")
    built_with: list[tuple[str, Path]] = []

    def builder(name: str, cache: Path) -> Path:
        built_with.append((name, cache))
        return tar

    model_dir, report = build_reference_model(NAME, builder=builder, convert_options={"head": "labels"})
    assert model_dir == reference_model_dir(NAME, home) and report is not None and report.output_dir == model_dir
    assert read_meta(model_dir).provenance["weights"] == REFERENCE_WEIGHTS
    assert built_with == [(NAME, home / "reference-models" / ".tars")]
    assert calls[0]["source"] == tar and calls[0]["head"] == "labels" and calls[0]["model_name"] == NAME
    assert [p.name for p in model_dir.parent.iterdir()] == [NAME]  # no staging dir left behind
    again, report2 = build_reference_model(NAME, builder=builder)
    assert again == model_dir and report2 is None and len(calls) == 1  # cached


def test_convert_weights_reference_prints_the_label(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("fastseg.convert.convert_model", _fake_convert(calls))
    monkeypatch.setattr("fastseg.convert.child.require_convert_deps", lambda: None)
    monkeypatch.setattr("fastseg.convert.reference.load_builder", lambda: lambda name, cache: tmp_path / "x.tar")
    out = tmp_path / "ref"
    result = CliRunner().invoke(main, ["convert", NAME, "--weights", "reference", "-o", str(out), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-2:] == [f"Model directory: {out}", f"Weights: {REFERENCE_NOTE}"]
    assert calls[0]["verify"] is False and read_meta(out).provenance["weights"] == REFERENCE_WEIGHTS


def test_builder_missing_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel install has no converters/: the error says where the builder comes from."""
    fake_pkg = tmp_path / "site-packages" / "fastseg" / "__init__.py"
    monkeypatch.setattr(fastseg, "__file__", str(fake_pkg))
    with pytest.raises(MissingDependencyError, match=r"converters/ is not in the wheel.*git clone.*scripts/setup\.sh"):
        load_builder()


def test_info_and_page_show_the_weights_note(built: Path) -> None:
    import httpx
    from serving_fixtures import live_server

    from fastseg.segmenter import Segmenter
    from fastseg.serving import create_app

    with Segmenter(built) as seg, live_server(create_app(seg)) as url:
        info = httpx.get(url + "/info").json()
        page = httpx.get(url + "/").text
        script = httpx.get(url + "/static/app.js").text
    assert info["weights"] == REFERENCE_WEIGHTS and info["weightsNote"] == REFERENCE_NOTE
    assert 'id="weights-note"' in page and "info.weightsNote" in script


def test_info_has_no_note_for_an_ordinary_model(tmp_path: Path) -> None:
    import httpx
    from serving_fixtures import live_server

    from fastseg.segmenter import Segmenter
    from fastseg.serving import create_app

    with Segmenter(colour_model_dir(tmp_path / "m")) as seg, live_server(create_app(seg)) as url:
        info = httpx.get(url + "/info").json()
    assert info["weights"] is None and info["weightsNote"] is None


@pytest.mark.slow
@pytest.mark.paddle
def test_real_reference_build_is_labelled(home: Path, reference_tarball: Any) -> None:
    """The real architecture (cached build from the reference_tarball fixture), converted and labelled."""
    model_dir, report = build_reference_model(NAME, builder=lambda name, cache: reference_tarball(name))
    assert report is not None and report.verification["min_argmax_agreement"] >= 0.999
    meta = read_meta(model_dir)
    assert meta.provenance["weights"] == REFERENCE_WEIGHTS and meta.model_name == NAME and meta.num_classes == 19
    result = CliRunner().invoke(main, ["predict", "--model", NAME, "--weights", "reference", "--no-json",
                                       "--save_path", str(home / "out")])
    assert result.exit_code == 0 and REFERENCE_NOTE in result.stdout


# ----------------------------------------------------------------------------- one vocabulary at every entry point
def test_segmenter_takes_weights_reference_and_labels_results(built: Path, home: Path) -> None:
    from fastseg.segmenter import Segmenter

    with Segmenter(NAME, weights="reference") as seg:
        result = next(iter(seg.predict(np.zeros((8, 8, 3), np.uint8))))
    assert seg.model_dir == built and result.weights == REFERENCE_WEIGHTS


def test_segmenter_refuses_reference_for_a_directory_and_unknown_weights(built: Path) -> None:
    from fastseg.errors import InputError
    from fastseg.segmenter import Segmenter

    with pytest.raises(InputError, match=r"is a model directory: its weights are the ones it holds.*zoo model"):
        Segmenter(built, weights="reference")
    with pytest.raises(InputError, match=r"weights must be one of 'official', 'reference', got 'random'"):
        Segmenter(NAME, weights="random")  # type: ignore[arg-type]


def test_pipeline_yaml_and_create_pipeline_take_weights(built: Path, tmp_path: Path) -> None:
    from fastseg.errors import InputError
    from fastseg.pipeline import create_pipeline

    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"pipeline_name: semantic_segmentation\nSubModules:\n  SemanticSegmentation:\n"
                   f"    model_name: {NAME}\n    weights: reference\n")
    with create_pipeline(cfg) as seg:
        assert seg.model_dir == built
    with create_pipeline("semantic_segmentation", weights="reference") as seg:
        assert seg.model_dir == built
    cfg.write_text(cfg.read_text().replace("weights: reference", "weights: random"))
    with pytest.raises(InputError, match="Pipeline weights must be official or reference, got 'random'"):
        create_pipeline(cfg)


def test_predict_pipeline_with_weights_reference_works_offline(built: Path, tmp_path: Path) -> None:
    """No circle: --pipeline plus --weights reference runs the pipeline's model_name's reference build."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--pipeline", "semantic_segmentation", "--weights", "reference",
                                       "--no-json", "--save_path", str(out)])
    assert result.exit_code == 0, result.output
    assert f"with {NAME} [{REFERENCE_NOTE}] on cpu" in result.stdout and (out / "demo_street_res.png").is_file()


def test_eval_weights_reference_labels_table_summary_and_json(built: Path, tmp_path: Path) -> None:
    import cv2

    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    cv2.imwrite(str(data / "images" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(data / "labels" / "a.png"), np.zeros((4, 4), np.uint8))
    (data / "val_list.txt").write_text("images/a.png labels/a.png\n")
    result = CliRunner().invoke(main, ["eval", "--model", NAME, "--weights", "reference", "--dataset", str(data),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert f"{NAME} [{REFERENCE_NOTE}]: per-class metrics" in " ".join(result.stdout.split())
    assert f"{NAME} [{REFERENCE_NOTE}] (ort) on 1 image(s)" in result.stdout
    saved = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert saved["weights"] == REFERENCE_WEIGHTS and saved["weights_note"] == REFERENCE_NOTE


def test_tune_and_quantize_take_a_zoo_name_and_weights(built: Path, tmp_path: Path) -> None:
    from fastseg.cli.options import model_dir_for

    assert model_dir_for(NAME, "reference") == built
    assert model_dir_for(str(built), "official") == built
    for command in (["tune"], ["quantize", "--calib", str(tmp_path), "-o", str(tmp_path / "q")]):
        result = CliRunner().invoke(main, [command[0], str(built), "--weights", "reference", *command[1:]])
        assert result.exit_code == 2 and "--weights reference builds a zoo model: give MODEL NAME" in result.output


def test_every_weights_option_offers_the_same_choices() -> None:
    from fastseg.reference import WEIGHTS

    for name in ("predict", "convert", "serve", "eval", "tune", "quantize", "bench"):
        command = main.commands[name]  # type: ignore[attr-defined]
        option = next(p for p in command.params if p.name == "weights")
        assert tuple(option.type.choices) == WEIGHTS, name


def test_ray_ships_the_reference_build_for_weights_reference(built: Path) -> None:
    """Ray's segment()/build_serve_app() pass weights= to ModelFiles.pack, which resolves it here."""
    from fastseg.ray.cluster import ModelFiles

    package = ModelFiles.pack(NAME, weights="reference")
    assert package.name == f"{NAME} [{REFERENCE_NOTE}]" and "model.onnx" in package.files
