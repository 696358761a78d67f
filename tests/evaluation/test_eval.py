"""`fastseg eval` / `fastseg.evaluation`: PaddleSeg's metric, datasets, reports, the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from tiny_models import colour_model_dir

from fastseg.cli import main
from fastseg.errors import InputError, ModelDirError
from fastseg.evaluation import compare, evaluate, evaluate_labels, load_dataset
from fastseg.evaluation.datasets import read_label

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR


# ----------------------------------------------------------------------------- the metric
def _paddleseg_areas(
    pairs: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]], num_classes: int, ignore_index: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """paddleseg.utils.metrics.calculate_area, line for line in numpy, summed over the set
    (calculate_area itself fails on paddle 3.2.2: it concatenates 0-d sums)."""
    inter = np.zeros(num_classes, np.int64)
    pred_a = np.zeros(num_classes, np.int64)
    label_a = np.zeros(num_classes, np.int64)
    for pred, label in pairs:
        mask = label != ignore_index
        for i in range(num_classes):
            pred_i = np.logical_and(pred == i, mask)
            label_i = label == i
            pred_a[i] += pred_i.sum()
            label_a[i] += label_i.sum()
            inter[i] += np.logical_and(pred_i, label_i).sum()
    return inter, pred_a, label_a


def _random_pairs(num_classes: int, seed: int = 0) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for h, w in ((37, 53), (64, 64), (20, 90)):
        label = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
        pred = np.where(rng.random((h, w)) < 0.6, label, rng.integers(0, num_classes, (h, w))).astype(np.int32)
        label[rng.random((h, w)) < 0.1] = 255  # ignored
        label[rng.random((h, w)) < 0.02] = num_classes + 3  # an id the model does not have
        pairs.append((pred, label))
    return pairs


def test_metrics_match_paddleseg() -> None:
    paddle = pytest.importorskip("paddle")
    ps = pytest.importorskip("paddleseg.utils.metrics")
    num_classes = 7
    pairs = _random_pairs(num_classes)
    pairs[0][0][0, :5] = num_classes  # a prediction outside the classes (PaddleSeg: counted nowhere)
    inter, pred_a, label_a = _paddleseg_areas(pairs, num_classes, 255)
    ours = evaluate_labels(pairs, num_classes)
    np.testing.assert_array_equal(ours.intersect, inter)
    np.testing.assert_array_equal(ours.pred_area, pred_a)
    np.testing.assert_array_equal(ours.label_area, label_a)
    t = [paddle.to_tensor(a) for a in (inter, pred_a, label_a)]
    class_iou, miou = ps.mean_iou(*t)
    class_acc, acc = ps.accuracy(t[0], t[1])
    _, _, class_recall = ps.class_measurement(*t)
    class_dice, mdice = ps.dice(*t)
    kappa = ps.kappa(*t)
    assert ours.miou == pytest.approx(miou, abs=1e-6)
    assert ours.acc == pytest.approx(acc, abs=1e-6)
    assert ours.kappa == pytest.approx(kappa, abs=1e-6)
    assert ours.dice == pytest.approx(mdice, abs=1e-6)
    np.testing.assert_allclose(ours.class_iou, class_iou, atol=1e-6)
    np.testing.assert_allclose(ours.class_acc, class_acc, atol=1e-6)
    np.testing.assert_allclose(ours.class_recall, class_recall, atol=1e-6)
    np.testing.assert_allclose(ours.class_dice, class_dice, atol=1e-6)
    assert ours.unknown_label_pixels == sum(int((lb == num_classes + 3).sum()) for _, lb in pairs)


@pytest.mark.parametrize("label_dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("pred_dtype", [np.uint8, np.int32, np.int64])
def test_dtypes_and_ignore_index_inside_the_classes(label_dtype: type, pred_dtype: type) -> None:
    """Every dtype path (uint8 lookup table, generic) gives PaddleSeg's areas, also when
    ignore_index is a class id (PaddleSeg then still counts it in the label area)."""
    for ignore in (255, 2):
        pairs = [(p.astype(pred_dtype), lb.astype(label_dtype)) for p, lb in _random_pairs(5, seed=3)]
        inter, pred_a, label_a = _paddleseg_areas(pairs, 5, ignore)
        ours = evaluate_labels(pairs, 5, ignore_index=ignore)
        np.testing.assert_array_equal(ours.intersect, inter)
        np.testing.assert_array_equal(ours.pred_area, pred_a)
        np.testing.assert_array_equal(ours.label_area, label_a)


def test_ignore_index_pixels_do_not_count() -> None:
    label = np.array([[0, 0, 1, 255], [1, 1, 255, 255]], np.uint8)
    good = np.array([[0, 0, 1, 1], [1, 1, 0, 1]], np.int32)
    m = evaluate_labels([(good, label)], 2)
    assert m.miou == 1.0 and m.acc == 1.0 and m.kappa == 1.0
    assert m.pred_area.tolist() == [2, 3] and m.label_area.tolist() == [2, 3]
    other = evaluate_labels([(good, label)], 2, ignore_index=0)  # now 0 is ignored and 255 is a foreign id
    assert other.unknown_label_pixels == 3 and other.intersect.tolist() == [0, 3]


def test_class_absent_from_prediction_and_label_counts_as_zero() -> None:
    """PaddleSeg: a zero union gives IoU 0 and still enters the mean (the Cityscapes scripts
    give NaN and skip it: 1.0 here instead of 2/3)."""
    label = np.array([[0, 0, 1, 1]], np.uint8)
    m = evaluate_labels([(label.astype(np.int32), label)], 3)
    assert m.class_iou.tolist() == [1.0, 1.0, 0.0]
    assert m.miou == pytest.approx(2 / 3)
    assert m.class_acc.tolist() == [1.0, 1.0, 0.0] and m.class_dice.tolist() == [1.0, 1.0, 0.0]
    assert m.to_json()["class_iou"] == [1.0, 1.0, 0.0]


def test_mismatched_sizes_and_bad_input() -> None:
    with pytest.raises(InputError, match=r"pair 0: prediction \(2, 3\) and label \(3, 2\)"):
        evaluate_labels([(np.zeros((2, 3), np.int32), np.zeros((3, 2), np.uint8))], 2)
    with pytest.raises(InputError, match="integer class ids"):
        evaluate_labels([(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))], 2)
    with pytest.raises(InputError, match="No pixel to evaluate"):
        evaluate_labels([(np.zeros((2, 2), np.int32), np.full((2, 2), 255, np.uint8))], 2)
    with pytest.raises(InputError, match="No pixel to evaluate"):
        evaluate_labels([], 2)


def test_compare_gives_candidate_minus_baseline() -> None:
    label = np.array([[0, 0, 1, 1]], np.uint8)
    perfect = evaluate_labels([(label.astype(np.int32), label)], 2)
    worse = evaluate_labels([(np.array([[0, 0, 0, 1]], np.int32), label)], 2)
    delta = compare(worse, perfect)
    assert delta.miou == pytest.approx(worse.miou - 1.0) and delta.acc == pytest.approx(-0.25)
    np.testing.assert_allclose(delta.class_iou, worse.class_iou - 1.0)
    with pytest.raises(InputError, match="2 and 3 classes"):
        compare(perfect, evaluate_labels([(label.astype(np.int32), label)], 3))


# ----------------------------------------------------------------------------- datasets
def _write(path: Path, image: npt.NDArray[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _tiny_dataset(root: Path) -> Path:
    """Two images whose colour-model predictions are known (red 0, green 1, blue 2).

    a.png 4x8: left red, right green; label: left 0, cols 4-5 1, cols 6-7 2, row 0 ignored.
    b.png 4x4: blue; label 2. Counted: class 0 I=12 P=12 L=12; class 1 I=6 P=12 L=6;
    class 2 I=16 P=16 L=22 -> IoU 1, 0.5, 8/11; Acc 34/40.
    """
    a = np.zeros((4, 8, 3), np.uint8)
    a[:, :4], a[:, 4:] = RED, GREEN
    la = np.zeros((4, 8), np.uint8)
    la[:, 4:6], la[:, 6:], la[0] = 1, 2, 255
    _write(root / "images" / "a.png", a)
    _write(root / "labels" / "a.png", la)
    _write(root / "images" / "b.png", np.full((4, 4, 3), BLUE, np.uint8))
    _write(root / "labels" / "b.png", np.full((4, 4), 2, np.uint8))
    (root / "val_list.txt").write_text("images/a.png labels/a.png\n\nimages/b.png labels/b.png\n")
    return root


EXPECTED_IOU = [1.0, 0.5, 8 / 11]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def test_list_file_errors_name_the_line(tmp_path: Path) -> None:
    root = _tiny_dataset(tmp_path / "ds")
    (root / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(InputError, match="empty.txt lists no images"):
        load_dataset(root, val_list="empty.txt")
    (root / "bad.txt").write_text("images/a.png labels/a.png\nimages/b.png\n")
    with pytest.raises(InputError, match=r"bad.txt, line 2: expected 'image_path label_path'.*1 field"):
        load_dataset(root, val_list="bad.txt")
    (root / "missing.txt").write_text("images/a.png labels/a.png\nimages/a.png labels/zzz.png\n")
    with pytest.raises(InputError, match=r"missing.txt, line 2: label .*zzz.png does not exist"):
        load_dataset(root, val_list="missing.txt")
    with pytest.raises(InputError, match="not a dataset fastseg knows"):
        load_dataset(tmp_path)


def test_cityscapes_layout(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    _write(root / "leftImg8bit" / "val" / "x" / "x_0_leftImg8bit.png", np.zeros((2, 2, 3), np.uint8))
    _write(root / "gtFine" / "val" / "x" / "x_0_gtFine_labelTrainIds.png", np.zeros((2, 2), np.uint8))
    data = load_dataset(root)
    assert data.layout == "cityscapes" and [s.label.name for s in data.samples] == ["x_0_gtFine_labelTrainIds.png"]
    _write(root / "leftImg8bit" / "val" / "x" / "x_1_leftImg8bit.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match="x_1_gtFine_labelTrainIds.png"):
        load_dataset(root)


def test_labels_read_as_paddleseg_does(tmp_path: Path) -> None:
    from PIL import Image

    pal = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 0, 0, 128] + [224] * (3 * 252))
    pal.save(tmp_path / "p.png")
    assert read_label(tmp_path / "p.png").tolist() == [[0, 1], [2, 255]]  # indices, not colours
    _write(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match="not a single-channel map"):
        read_label(tmp_path / "rgb.png")


def test_shared_cityscapes_list_and_layout_agree(shared_data: Path) -> None:
    """The real frames: val_list.txt and the Cityscapes layout find the same two pairs."""
    from fastseg.evaluation.datasets import cityscapes_samples

    root = shared_data / "images" / "cityscapes"
    from_list = load_dataset(root)
    assert from_list.layout == "list" and len(from_list) == 2
    assert sorted(cityscapes_samples(root), key=str) == sorted(from_list.samples, key=str)
    assert read_label(from_list.samples[0].label).shape == (1024, 2048)


# ----------------------------------------------------------------------------- end to end
def test_fastseg_eval_command_exact_miou(model_dir: Path, tmp_path: Path) -> None:
    root = _tiny_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["eval", "--model", str(model_dir), "--dataset", str(root), "--out", str(out), "--batch_size", "2"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "eval.json").read_text())
    assert data["class_iou"] == pytest.approx(EXPECTED_IOU)
    assert data["miou"] == pytest.approx(sum(EXPECTED_IOU) / 3)
    assert data["acc"] == pytest.approx(34 / 40)
    assert data["class_acc"] == pytest.approx([1.0, 0.5, 1.0])
    assert data["num_images"] == 2 and data["engine"] == "ort" and data["model"] == "tiny-colour"
    assert data["dataset"] == str(root) and data["confusion"] == [[12, 0, 0], [0, 6, 0], [0, 6, 16]]
    assert {"kappa", "dice"} <= set(data)
    png = cv2.imread(str(out / "confusion.png"))
    assert png is not None and png.shape[0] > 200
    assert "red" in result.stdout and "blue" in result.stdout
    assert f"mIoU {sum(EXPECTED_IOU) / 3:.4f}" in result.stdout


def test_eval_label_size_mismatch_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    root = _tiny_dataset(tmp_path / "ds")
    _write(root / "labels" / "b.png", np.full((5, 4), 2, np.uint8))
    result = CliRunner().invoke(main, ["eval", "--model", str(model_dir), "--dataset", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "b.png is 4x5 but image" in result.output and "4x4 (WxH)" in result.output
    assert not (tmp_path / "o" / "eval.json").exists()


def test_evaluate_with_a_built_segmenter_and_against_another_model(model_dir: Path, tmp_path: Path) -> None:
    from fastseg.segmenter import Segmenter

    root = _tiny_dataset(tmp_path / "ds")
    twin = colour_model_dir(tmp_path / "twin", name="twin")
    with Segmenter(model_dir) as seg:
        report = evaluate(seg, root, against=twin)
        assert seg.session is not None  # the caller's segmenter is left open
    assert report.metrics.class_iou.tolist() == pytest.approx(EXPECTED_IOU) and report.engine == "ort"
    assert report.against is not None and report.against.name == "twin"
    assert report.against.label_agreement == 1.0 and report.against.delta.miou == 0.0
    assert report.files == {}


def test_against_paddle_without_a_source_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("paddle")
    root = _tiny_dataset(tmp_path / "ds")
    with pytest.raises(ModelDirError, match="provenance names 'tests/tiny_models.py'.*not an available Paddle model"):
        evaluate(model_dir, root, against="paddle")


def test_without_pillow_and_matplotlib(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grey labels still read (OpenCV) and eval.json is still written; the PNG is skipped."""
    import sys

    root = _tiny_dataset(tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert read_label(root / "labels" / "a.png")[1].tolist() == [0, 0, 0, 0, 1, 1, 2, 2]
    result = CliRunner().invoke(main, ["eval", "--model", str(model_dir), "--dataset", str(root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "confusion.png skipped" in result.stdout and not (tmp_path / "o" / "confusion.png").exists()
    assert json.loads((tmp_path / "o" / "eval.json").read_text())["miou"] == pytest.approx(sum(EXPECTED_IOU) / 3)


def test_the_engine_option_reaches_the_segmenter_and_the_report(model_dir: Path, tmp_path: Path) -> None:
    root = _tiny_dataset(tmp_path / "ds")
    assert evaluate(model_dir, root, engine="ort").engine == "ort"
    pytest.importorskip("openvino", reason="the OpenVINO engine needs the [openvino] extra")
    report = evaluate(model_dir, root, engine="openvino")
    assert report.engine == "openvino" and report.metrics.miou == evaluate(model_dir, root).metrics.miou


@pytest.mark.slow
@pytest.mark.paddle
def test_against_paddle_on_a_converted_reference_model(reference_tarball: Any, tmp_path: Path) -> None:
    """The happy path: PP-LiteSeg-T (reference build) converted, then evaluated with its source
    Paddle model on two images of odd sizes: same labels, same metrics."""
    from fastseg.convert import convert_model

    tar = reference_tarball("PP-LiteSeg-T")
    model = convert_model(tar, tmp_path / "model", model_name="PP-LiteSeg-T", verify=False).output_dir
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    lines = []
    for i, (h, w) in enumerate(((97, 211), (128, 160))):
        _write(root / f"img{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _write(root / f"lab{i}.png", rng.integers(0, 19, (h, w), dtype=np.uint8))
        lines.append(f"img{i}.png lab{i}.png")
    (root / "val_list.txt").write_text("\n".join(lines) + "\n")
    report = evaluate(model, root, against="paddle", out_dir=tmp_path / "out")
    a = report.against
    assert a is not None and a.engine == "paddle-inference" and a.name == str(tar.resolve())
    assert a.metrics.num_images == 2 and a.label_agreement > 0.999
    assert abs(a.delta.miou) < 1e-3
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())["against"]
    assert saved["label_agreement"] == a.label_agreement and "delta" in saved


def test_eval_slides_windows_and_refuses_an_unknown_protocol(model_dir: Path, tmp_path: Path) -> None:
    """The colour model is per pixel, so windows must give the whole-image metrics exactly."""
    root = _tiny_dataset(tmp_path / "ds")
    args = ["eval", "--model", str(model_dir), "--dataset", str(root)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "w"), "--slide", "4x4", "--slide-stride", "3x3"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "w" / "eval.json").read_text())
    assert data["class_iou"] == pytest.approx(EXPECTED_IOU)
    bad = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "p"), "--protocol", "published"])
    assert bad.exit_code == 2 and "No published protocol for 'tiny-colour'" in bad.output


def test_against_a_zoo_name_uses_the_evaluated_models_weights(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """eval --model NAME --weights reference --against OTHER: OTHER is built from reference weights
    too (it asked for a download before); a directory keeps the weights it holds."""
    import contextlib

    import fastseg.segmenter
    from fastseg.evaluation import runner

    asked: list[tuple[str, str]] = []

    class Stop(Exception):
        pass

    class Fake:
        def __init__(self, model: Any, **kwargs: Any) -> None:
            asked.append((str(model), kwargs["weights"]))
            raise Stop

    monkeypatch.setattr(fastseg.segmenter, "Segmenter", Fake)
    with contextlib.ExitStack() as stack:
        for against in ("PP-LiteSeg-B", str(model_dir)):
            with pytest.raises(Stop):
                runner._against(against, object(), "cpu", 1, stack, "reference")  # type: ignore[arg-type]
    assert asked == [("PP-LiteSeg-B", "reference"), (str(model_dir), "official")]
