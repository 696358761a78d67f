"""Sliding windows through the entry points: `fastseg predict`, the published protocol, serving."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import random_conv_model_dir

from fastseg.cli import main
from fastseg.errors import InputError
from fastseg.model_dir import read_meta, write_meta
from fastseg.results import colorize
from fastseg.engines.ort import RuntimeOptions
from fastseg.segmenter import Segmenter
from fastseg.slide import protocol_kwargs
from fastseg.zoo import load_zoo

OPTS = RuntimeOptions(intra_op_threads=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_conv_model_dir(tmp_path_factory.mktemp("models") / "randconv")


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "imgs" / "noise.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    return path


def labels_of(model_dir: Path, image: Path, home: Path, **kwargs: object) -> np.ndarray:
    with Segmenter(model_dir, options=OPTS, home=home, **kwargs) as seg:  # type: ignore[arg-type]
        return next(seg.predict(str(image))).pred[0]


def test_predict_slide_flags(model_dir: Path, image_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSEG_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", "--input", str(image_path), "--model", str(model_dir), "--save_path", str(out),
               "--slide", "16x16", "--slide-stride", "8x12", "--batch_size", "4"],
    )
    assert result.exit_code == 0, result.output
    expected = labels_of(model_dir, image_path, tmp_path / "home", slide=(16, 16), slide_stride=(8, 12))
    assert not np.array_equal(expected, labels_of(model_dir, image_path, tmp_path / "home"))
    saved = json.loads((out / "noise_res.json").read_text())
    assert np.array_equal(np.asarray(saved["pred"])[0], expected)
    png = cv2.imread(str(out / "noise_res.png"))
    assert np.array_equal(png, colorize(expected, None, bgr=True))  # PaddleX's pseudo-colour palette, as without slide


def test_predict_refuses_gaps_and_bad_sizes(model_dir: Path, image_path: Path, tmp_path: Path) -> None:
    args = ["predict", "--input", str(image_path), "--model", str(model_dir), "--save_path", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*args, "--slide", "16x16", "--slide-stride", "17x8"])
    assert result.exit_code == 2 and "larger than the window" in result.output
    result = CliRunner().invoke(main, [*args, "--slide", "16"])
    assert result.exit_code == 2 and "HxW" in result.output


def test_large_label_maps_skip_json_unless_asked(
    model_dir: Path, image_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fastseg.cli.predict.LARGE_JSON_PIXELS", 100)  # the 40x50 test image counts as "large"
    out = tmp_path / "out"
    args = ["predict", "--input", str(image_path), "--model", str(model_dir), "--save_path", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "noise_res.png").is_file() and not (out / "noise_res.json").exists()
    assert "pass --json" in result.output
    assert CliRunner().invoke(main, [*args, "--json"]).exit_code == 0
    assert (out / "noise_res.json").is_file()


def test_published_protocol(model_dir: Path, tmp_path: Path) -> None:
    assert protocol_kwargs(model_dir, "paddlex") == {}
    with pytest.raises(InputError, match="No published protocol"):
        protocol_kwargs(model_dir, "published")
    assert protocol_kwargs("SegFormer-B2", "published") == {
        "target_size": None, "slide": (1024, 1024), "slide_stride": (768, 768)}
    assert protocol_kwargs("PP-LiteSeg-T", "published")["target_size"] == (1024, 512)
    named = tmp_path / "named"  # a converted dir of a zoo model: its fastseg.json names it
    named.mkdir()
    (named / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    meta = read_meta(model_dir)
    write_meta(named, type(meta)(**{**meta.__dict__, "model_name": "SeaFormer_tiny"}))
    assert protocol_kwargs(named, "published")["target_size"] == (2048, 512)
    for spec in load_zoo().models.values():  # every zoo entry cites the PaddleSeg config it was read from
        assert spec.protocol is not None
        if spec.family == "MaskFormer":  # read from PaddleX's own config
            assert spec.protocol.config == f"paddlex/repo_apis/PaddleSeg_api/configs/{spec.name}.yaml"
            assert protocol_kwargs(spec.name, "published") == {"target_size": None, "slide": None, "slide_stride": None}
            continue
        assert spec.protocol.config.startswith("configs/") and spec.protocol.config.endswith(".yml")


def test_serving_slide_config_and_pixel_limit(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastseg.serving import ServingConfig, ServingConfigError, create_app, load_serving_config
    from tests.serving_fixtures import live_server, png_bytes

    yaml_path = tmp_path / "serve.yaml"
    yaml_path.write_text("Serving:\n  slide: [16, 16]\n  slide_stride: [8, 8]\n  max_pixels: 100\n  slide_max_pixels: 5000\n")
    config = load_serving_config(yaml_path)
    assert (config.slide, config.slide_stride) == ((16, 16), (8, 8))
    yaml_path.write_text("Serving:\n  slide: [16, 16]\n  slide_stride: [32, 8]\n")
    with pytest.raises(ServingConfigError, match="stride <= the window"):
        load_serving_config(yaml_path)
    yaml_path.write_text("Serving:\n  slide: 16\n")
    with pytest.raises(ServingConfigError, match=r"\[height, width\]"):
        load_serving_config(yaml_path)

    img = np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8)  # 1200 px > max_pixels
    body = {"image": base64.b64encode(png_bytes(img)).decode(), "visualize": False}
    with Segmenter(model_dir, options=OPTS, home=tmp_path) as plain:
        with live_server(create_app(plain, config)) as url:
            resp = httpx.post(url + "/semantic-segmentation", json=body, timeout=30)
            assert resp.status_code == 422 and "over this server's limit of 100" in resp.text
    with Segmenter(model_dir, options=OPTS, home=tmp_path, slide=config.slide, slide_stride=config.slide_stride) as seg:
        expected = next(seg.predict(img)).pred[0]
        with live_server(create_app(seg, config)) as url:
            resp = httpx.post(url + "/semantic-segmentation", json=body, timeout=30)
            assert resp.status_code == 200, resp.text
            labels = np.asarray(resp.json()["result"]["labelMap"]).reshape(30, 40)
            assert np.array_equal(labels, expected)
            big = np.zeros((80, 80, 3), np.uint8)  # 6400 px > slide_max_pixels
            resp = httpx.post(url + "/semantic-segmentation", json={"image": base64.b64encode(png_bytes(big)).decode()}, timeout=30)
            assert resp.status_code == 422 and "5000" in resp.text


def test_predict_protocol_published_applies_the_zoo_settings(
    model_dir: Path, image_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTSEG_HOME", str(tmp_path / "home"))
    named = tmp_path / "PP-LiteSeg-T"  # a converted zoo model: protocol = resize to 1024x512 (keep ratio)
    named.mkdir()
    (named / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    meta = read_meta(model_dir)
    write_meta(named, type(meta)(**{**meta.__dict__, "model_name": "PP-LiteSeg-T"}))
    out = tmp_path / "out"
    args = ["predict", "--input", str(image_path), "--model", str(named), "--save_path", str(out)]
    assert CliRunner().invoke(main, [*args, "--protocol", "published"]).exit_code == 0
    saved = np.asarray(json.loads((out / "noise_res.json").read_text())["pred"])[0]
    assert np.array_equal(saved, labels_of(named, image_path, tmp_path / "home", target_size=(1024, 512)))
    assert not np.array_equal(saved, labels_of(named, image_path, tmp_path / "home"))


def test_slide_runs_the_graph_logits_and_refuses_the_banded_head(tmp_path: Path) -> None:
    from fastseg.errors import InputError
    from fastseg.segmenter import Segmenter
    from tiny_models import colour_model_dir

    model = colour_model_dir(tmp_path / "colour")
    with pytest.raises(InputError, match="head='banded' cannot be combined with slide"):
        Segmenter(model, slide=(8, 8), head="banded")
    with Segmenter(model, slide=(8, 8), head="auto") as seg:
        assert seg.head == "graph"
