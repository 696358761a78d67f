"""`fastseg predict` and `fastseg get-config` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

from fastseg.cli import main
from fastseg.pipeline_config import load_pipeline_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    red = np.zeros((10, 14, 3), np.uint8)
    red[..., 2] = 255
    cv2.imwrite(str(root / "red.png"), red)
    cv2.imwrite(str(root / "sub" / "blue.png"), np.full((8, 6, 3), (255, 0, 0), np.uint8))
    return root


def test_predict_directory(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["predict", "--input", str(image_dir), "--model", str(model_dir), "--device", "cpu",
         "--save_path", str(out), "--batch_size", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "2 image(s)" in result.stdout and "ms/image" in result.stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["red_res.json", "red_res.png", "sub/blue_res.json", "sub/blue_res.png"]  # the tree mirrored
    red = json.loads((out / "red_res.json").read_text())
    assert red["input_path"] == str(image_dir / "red.png")
    assert np.all(np.array(red["pred"]) == 0) and np.array(red["pred"]).shape == (1, 10, 14)
    assert cv2.imread(str(out / "sub" / "blue_res.png")).shape == (8, 6, 3)


def test_predict_overlay_target_size_and_no_json(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ov"
    result = CliRunner().invoke(
        main,
        ["predict", "--input", str(image_dir / "red.png"), "--model", str(model_dir), "--save_path", str(out),
         "--overlay", "--target_size", "8,4", "--no-json"],
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["red_res.png"]
    ov = cv2.imread(str(out / "red_res.png"))
    red_bgr = np.array([0, 0, 255], np.float64)
    colour_bgr = np.array([0, 0, 128], np.float64)  # PaddleX palette for label 0, as BGR
    np.testing.assert_allclose(ov[0, 0], 0.6 * red_bgr + 0.4 * colour_bgr, atol=1)


def test_predict_with_pipeline(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(
        f"pipeline_name: semantic_segmentation\nSubModules:\n  SemanticSegmentation:\n"
        f"    model_name: PP-LiteSeg-T\n    model_dir: {model_dir}\n    batch_size: 2\n    target_size: null\n"
    )
    out = tmp_path / "p"
    result = CliRunner().invoke(main, ["predict", "--input", str(image_dir), "--pipeline", str(cfg), "--save_path", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "red_res.png").is_file()
    both = CliRunner().invoke(
        main, ["predict", "--input", str(image_dir), "--pipeline", str(cfg), "--model", str(model_dir)]
    )
    assert both.exit_code == 2 and "not both" in both.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "/no/such.png"], "does not exist"),
        (["--input", ".", "--model", "PP-LiteSeg-X"], "Did you mean 'PP-LiteSeg-T'"),
        (["--input", ".", "--device", "tpu"], "Accepted"),
        (["--input", ".", "--target_size", "a,b"], "W,H"),
    ],
)
def test_predict_errors_are_one_line(model_dir: Path, args: list[str], message: str) -> None:
    full = ["predict", *args] if "--model" in args else ["predict", "--model", str(model_dir), *args]
    result = CliRunner().invoke(main, full)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_get_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["get-config", "semantic_segmentation", "--save_path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = tmp_path / "semantic_segmentation.yaml"
    assert str(written) in result.stdout
    assert load_pipeline_config(written)["model_name"] == "PP-LiteSeg-T"
    bad = CliRunner().invoke(main, ["get-config", "OCR", "--save_path", str(tmp_path)])
    assert bad.exit_code == 2 and "Unknown pipeline" in bad.output


def test_save_path_that_is_a_file_is_a_one_line_error(model_dir: Path, image_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(
        main, ["predict", "--input", str(image_dir), "--model", str(model_dir), "--save_path", str(blocker / "out")]
    )
    assert result.exit_code == 2 and result.output.startswith("Error: "), result.output
    assert "Traceback" not in result.output and blocker.read_text() == "not a directory"


@pytest.mark.parametrize("url", ["http://[x]/", "http://[::1", "http://a]b/", "http://a b/"])
def test_malformed_url_input_is_a_listed_failure(model_dir: Path, tmp_path: Path, url: str) -> None:
    """A URL that urllib cannot parse (ValueError) or http.client refuses (InvalidURL) is one
    failure line and exit 1, like an unreadable file; no traceback, no connection attempted."""
    result = CliRunner().invoke(main, ["predict", "--input", url, "--model", str(model_dir), "--save_path", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert f"  {url}: Cannot download image {url}: " in result.output  # the failure list: source, then reason
    assert "Traceback" not in result.output


def test_one_image_does_not_load_the_compiled_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``predict`` on one image keeps numba unloaded (~1 s per process, more than it saves on one
    image): neither the tail's pass nor the PNG unfilter loads; a directory loads both."""
    import fastseg.head.plan as plan
    import fastseg.segmenter as segmenter
    from head_models import tail_model_dir

    loads: list[str] = []
    monkeypatch.setattr(plan, "warm_up", lambda: loads.append("tail"))
    monkeypatch.setattr(segmenter, "preload_png_kernels", lambda: loads.append("png"))
    model = tail_model_dir(tmp_path / "model", classes=8)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"im{i}.png"), np.random.default_rng(i).integers(0, 256, (30, 41, 3), dtype=np.uint8))
    one = CliRunner().invoke(main, ["predict", "--input", str(images / "im0.png"), "--model", str(model),
                                    "--save_path", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    assert loads == [] and (tmp_path / "one" / "im0_res.png").is_file()
    many = CliRunner().invoke(main, ["predict", "--input", str(images), "--model", str(model), "--save_path", str(tmp_path / "many")])
    assert many.exit_code == 0, many.output
    assert sorted(loads) == ["png", "tail"]
    one_labels = cv2.imread(str(tmp_path / "one" / "im0_res.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(one_labels, cv2.imread(str(tmp_path / "many" / "im0_res.png"), cv2.IMREAD_UNCHANGED))
