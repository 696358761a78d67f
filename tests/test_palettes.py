"""Named palettes, palette files, ``save_to_img(palette=...)`` and legend images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

from fastseg.cli import main
from fastseg.errors import InputError
from fastseg.palettes import legend_image, legend_names, load_palette, paddlex_palette, present_labels
from fastseg.results import SegResult, colorize


def test_builtin_palettes_have_their_datasets_colours_and_names() -> None:
    city = load_palette("cityscapes")
    assert len(city.colors) == 19 and city.colors[0] == (128, 64, 128) and city.colors[18] == (119, 11, 32)
    assert city.class_names[0] == "road" and len(city.class_names) == 19
    ade = load_palette("ADE20K")
    assert len(ade.colors) == 150 and ade.colors[0] == (120, 120, 120) and ade.colors[149] == (92, 0, 255)
    assert ade.class_names[2] == "sky"
    assert load_palette("paddlex").lut().tolist() == paddlex_palette().tolist()
    lut = city.lut()
    assert lut.shape == (256, 3) and lut[19].tolist() == paddlex_palette()[19].tolist()  # past 19: PaddleX's


def test_palette_files_both_forms_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([[1, 2, 3], [4, 5, 6]]))
    (tmp_path / "b.json").write_text(json.dumps({"palette": [[9, 9, 9]], "class_names": ["lane"]}))
    assert load_palette(tmp_path / "a.json").colors == ((1, 2, 3), (4, 5, 6))
    b = load_palette(str(tmp_path / "b.json"))
    assert b.colors == ((9, 9, 9),) and b.class_names == ("lane",)
    (tmp_path / "bad.json").write_text(json.dumps([[1, 2, 300]]))
    with pytest.raises(InputError, match=r"colour 0 .*0-255"):
        load_palette(tmp_path / "bad.json")
    with pytest.raises(InputError, match="Unknown palette 'viridis'.*cityscapes"):
        load_palette("viridis")


def test_save_to_img_palette_and_overlay_alpha(tmp_path: Path) -> None:
    labels = np.array([[0, 1], [2, 0]], np.int32)
    image = np.full((2, 2, 3), 200, np.uint8)
    res = SegResult(input_path="x.png", input_img=image, pred=labels[None])
    path = res.save_to_img(tmp_path, palette="cityscapes")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [244, 35, 232]
    default = cv2.imread(str(res.save_to_img(tmp_path / "d.png")))
    assert cv2.cvtColor(default, cv2.COLOR_BGR2RGB)[0, 0].tolist() == paddlex_palette()[0].tolist()  # unchanged
    full = cv2.imread(str(res.save_to_img(tmp_path / "o.png", overlay=1.0, palette=[[10, 20, 30]])))
    assert full[0, 0].tolist() == [30, 20, 10]  # alpha 1: the colour alone (BGR)
    none = cv2.imread(str(res.save_to_img(tmp_path / "n.png", overlay=0.0)))
    assert none.tolist() == image.tolist()
    assert colorize(labels, "ade20k")[1, 0].tolist() == [6, 230, 230]


def test_legend_names_and_image() -> None:
    assert legend_names(3, ("class_0", "car", "class_2"), ("road", "x", "lane")) == ["0 road", "1 car", "2 lane"]
    assert legend_names(2, ("class_0", "class_1")) == ["0", "1"]
    assert present_labels(np.array([[3, 3], [0, 7]])) == {0, 3, 7}
    lut = np.array(paddlex_palette())
    lut[5] = (10, 200, 30)
    img = legend_image([1, 5], ["0", "1 road", "2", "3", "4", "5 lane"], lut)
    assert img.ndim == 3 and img.shape[0] >= 2 * 20
    swatch = img[4 + 22 + 22 // 2, 4 + 22 // 4]  # inside the second row's swatch
    assert swatch.tolist() == [30, 200, 10]  # BGR of the label-5 colour


def test_cli_images_palette_and_legend(tmp_path: Path) -> None:
    model = colour_model_dir(tmp_path / "m")
    img = np.zeros((6, 8, 3), np.uint8)
    img[:, :4] = (0, 0, 255)  # red -> 0
    img[:, 4:] = (255, 0, 0)  # blue -> 2
    cv2.imwrite(str(tmp_path / "p.png"), img)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", "--input", str(tmp_path / "p.png"), "--model", str(model),
                                       "--save_path", str(out), "--no-json", "--palette", "cityscapes", "--legend"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["p_res.png", "p_res_legend.png"]
    rgb = cv2.cvtColor(cv2.imread(str(out / "p_res.png")), cv2.COLOR_BGR2RGB)
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 7].tolist() == [70, 70, 70]
    legend = cv2.imread(str(out / "p_res_legend.png"))
    assert legend.shape[0] == 2 * 22 + 8  # two classes present: red (0) and blue (2)
    bad = CliRunner().invoke(main, ["predict", "--input", str(tmp_path / "p.png"), "--model", str(model),
                                    "--save_path", str(out), "--palette", "nope"])
    assert bad.exit_code == 2 and "Unknown palette 'nope'" in bad.output
