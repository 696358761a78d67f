"""SegResult reads like PaddleX's; pseudo-colour rendering equals PaddleX's palette."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastseg.errors import InputError
from fastseg.results import SegResult, colorize, overlay, paddlex_palette


def _paddlex_color_map_list(num_classes: int) -> list[int]:
    """PaddleX's SegResult._get_color_map_list, written out as PaddleX does (reference)."""
    num_classes += 1
    color_map = num_classes * [0, 0, 0]
    for i in range(num_classes):
        j, lab = 0, i
        while lab:
            color_map[i * 3] |= ((lab >> 0) & 1) << (7 - j)
            color_map[i * 3 + 1] |= ((lab >> 1) & 1) << (7 - j)
            color_map[i * 3 + 2] |= ((lab >> 2) & 1) << (7 - j)
            j += 1
            lab >>= 3
    return color_map[3:]


def test_palette_equals_paddlex() -> None:
    pal = paddlex_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal.flatten().tolist() == _paddlex_color_map_list(256)
    assert pal[:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]


@pytest.fixture
def labels() -> np.ndarray:
    lab = np.zeros((6, 9), np.int32)
    lab[:, 3:6] = 1
    lab[:, 6:] = 18
    return lab


def test_colorize_matches_pil_p_mode(labels: np.ndarray) -> None:
    image = pytest.importorskip("PIL.Image")
    p = image.fromarray(labels.astype(np.uint8), mode="P")
    p.putpalette(_paddlex_color_map_list(256))
    np.testing.assert_array_equal(colorize(labels), np.asarray(p.convert("RGB")))
    np.testing.assert_array_equal(colorize(labels, bgr=True), np.asarray(p.convert("RGB"))[:, :, ::-1])


def test_colorize_custom_palette_and_limits(labels: np.ndarray) -> None:
    rgb = colorize(labels, [(1, 2, 3), (4, 5, 6)])
    assert rgb[0, 0].tolist() == [1, 2, 3] and rgb[0, 4].tolist() == [4, 5, 6]
    assert rgb[0, 8].tolist() == paddlex_palette()[18].tolist()  # beyond the short palette
    with pytest.raises(InputError, match="0..255"):
        colorize(np.full((2, 2), 256, np.int32))
    with pytest.raises(InputError, match=r"\[H,W\]"):
        colorize(labels[None])


def test_overlay_blends(labels: np.ndarray) -> None:
    img = np.full((6, 9, 3), 200, np.uint8)
    out = overlay(img, labels, alpha=0.4)
    expected = cv2.addWeighted(img, 0.6, colorize(labels, bgr=True), 0.4, 0.0)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(InputError, match="differ"):
        overlay(img[:3], labels)
    with pytest.raises(InputError, match="alpha"):
        overlay(img, labels, alpha=1.5)


def _result(labels: np.ndarray, path: str | None = "/data/street_01.jpg") -> SegResult:
    img = np.full((*labels.shape, 3), 50, np.uint8)
    return SegResult(input_path=path, input_img=img, pred=labels[None].astype(np.int32))


def test_reads_like_a_paddlex_dict(labels: np.ndarray) -> None:
    res = _result(labels)
    assert list(res) == ["input_path", "page_index", "input_img", "pred"]
    assert res["input_path"] == "/data/street_01.jpg" and res["page_index"] is None
    assert res["pred"] is res.pred and res["pred"].shape == (1, 6, 9) and res["pred"].dtype == np.int32
    assert res.labels_hw.shape == (6, 9)
    assert "score" not in res and len(res) == 4
    assert res == res and res != _result(labels) and len({res, res}) == 1  # identity, no array comparison
    with pytest.raises(KeyError):
        res["score"]
    scored = SegResult(input_path=None, input_img=None, pred=res.pred, score=np.ones((1, 6, 9), np.float32))
    assert "score" in scored and scored["score"].shape == (1, 6, 9)


def test_print_elides_pred(labels: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    _result(labels).print(format_json=True, indent=4, ensure_ascii=False)
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"res": {"input_path": "/data/street_01.jpg", "page_index": None, "pred": "..."}}


def test_json_property_and_file(labels: np.ndarray, tmp_path: Path) -> None:
    res = _result(labels)
    assert res.json["res"]["pred"] == labels[None].tolist()
    assert "input_img" not in res.json["res"]
    path = res.save_to_json(tmp_path)
    assert path == tmp_path / "street_01_res.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == res.json["res"]
    assert np.array_equal(np.array(data["pred"], dtype=np.int32), res.pred)
    explicit = res.save_to_json(tmp_path / "sub" / "named.json")
    assert explicit == tmp_path / "sub" / "named.json" and json.loads(explicit.read_text()) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street_01_res.json", "sub"], "no temp files left"


def test_save_to_img_decodes_to_the_same_map(labels: np.ndarray, tmp_path: Path) -> None:
    res = _result(labels)
    path = res.save_to_img(tmp_path)
    assert path == tmp_path / "street_01_res.png"  # PNG even for a .jpg input: labels stay exact
    rgb = cv2.imread(str(path))[:, :, ::-1]
    pal = paddlex_palette().astype(np.int32)
    code = {tuple(c): i for i, c in enumerate(pal[:19].tolist())}
    decoded = np.vectorize(lambda r, g, b: code[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    np.testing.assert_array_equal(decoded, labels)
    np.testing.assert_array_equal(rgb, res.img["res"])
    ov = res.save_to_img(tmp_path / "ov.png", overlay=True)
    np.testing.assert_array_equal(cv2.imread(str(ov)), overlay(res.input_img, labels))  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ov.png", "street_01_res.png"]


def test_in_memory_result_names_and_overlay_needs_image(labels: np.ndarray, tmp_path: Path) -> None:
    res = SegResult(input_path=None, input_img=None, pred=labels[None])
    assert res.save_to_img(tmp_path).name == "result_res.png"
    with pytest.raises(InputError, match="input image"):
        res.save_to_img(tmp_path, overlay=True)


@pytest.mark.parametrize("orjson_installed", [True, False])
def test_json_with_score_same_with_or_without_orjson(
    labels: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orjson_installed: bool
) -> None:
    import sys

    if not orjson_installed:
        monkeypatch.setitem(sys.modules, "orjson", None)
    score = np.linspace(0.5, 1.0, labels.size, dtype=np.float32).reshape(1, *labels.shape)
    res = SegResult(input_path="a/b/c.png", input_img=None, pred=labels[None], score=score)
    data = json.loads(res.save_to_json(tmp_path).read_text())
    assert list(data) == ["input_path", "page_index", "pred", "score"]
    np.testing.assert_array_equal(np.array(data["pred"]), res.pred)
    np.testing.assert_allclose(np.array(data["score"], dtype=np.float32), score)
    assert (tmp_path / "c_res.json").stat().st_mode & 0o044 == 0o044, "readable by others, like a normal file"


def test_package_exports() -> None:
    import fastseg

    assert fastseg.__all__ == sorted(fastseg.__all__)
    for name in fastseg.__all__:
        assert getattr(fastseg, name) is not None
    assert fastseg.SegResult is SegResult
    from fastseg.precision.quantize import quantize_model

    assert fastseg.quantize_model is quantize_model  # `from fastseg import quantize_model`, as docs/engines.md shows
    with pytest.raises(AttributeError):
        fastseg.NoSuchThing  # noqa: B018
