"""End to end on the real PP-HumanSegV2-Lite portrait model: convert, segment real portraits,
compare with Paddle Inference on the original model (deploy.yaml preprocessing)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastseg.results import paddlex_palette

pytestmark = [pytest.mark.slow, pytest.mark.paddle, pytest.mark.shared_data]

MODEL = "models/pp_humansegv2_lite_portrait"
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def converted(humanseg_dir: Path) -> Path:
    return humanseg_dir


@pytest.fixture(scope="module")
def portraits(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "images" / "portraits").glob("*.jpg"))


def paddle_labels(model_dir: Path, images: list[Path]) -> list[np.ndarray]:
    """Paddle Inference on the original model: deploy.yaml's Resize(256x144) + Normalize(0.5, 0.5),
    argmax of the softmax output, nearest resize back (PaddleX's SegPostProcess)."""
    inference = pytest.importorskip("paddle.inference", reason="paddlepaddle is not installed")
    config = inference.Config(str(model_dir / "model.pdmodel"), str(model_dir / "model.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    predictor = inference.create_predictor(config)
    inp = predictor.get_input_handle(predictor.get_input_names()[0])
    out = predictor.get_output_handle(predictor.get_output_names()[0])
    labels = []
    for path in images:
        bgr = cv2.imread(str(path))
        rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (256, 144), interpolation=cv2.INTER_LINEAR)
        x = ((rgb.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()
        inp.reshape(x.shape)
        inp.copy_from_cpu(x)
        predictor.run()
        probs = out.copy_to_cpu()
        lab = probs.argmax(axis=1)[0].astype(np.int32)
        labels.append(cv2.resize(lab, (bgr.shape[1], bgr.shape[0]), interpolation=cv2.INTER_NEAREST))
    return labels


def test_portraits_match_paddle_inference(converted: Path, portraits: list[Path], shared_data: Path, tmp_path: Path) -> None:
    from fastseg import Segmenter

    assert portraits, "no portraits in shared data"
    with Segmenter(converted, device="cpu", batch_size=4) as seg:
        results = list(seg.predict([str(p) for p in portraits]))
    reference = paddle_labels(shared_data / MODEL, portraits)
    person_fractions = []
    for path, res, ref in zip(portraits, results, reference):
        h, w = cv2.imread(str(path)).shape[:2]
        assert res["pred"].shape == (1, h, w), path.name
        agreement = float((res["pred"][0] == ref).mean())
        print(f"{path.name}: {h}x{w} agreement {agreement:.6f}, person {float(ref.mean()):.3f}")
        assert agreement >= MIN_AGREEMENT, f"{path.name}: {agreement:.5f} agreement with Paddle Inference"
        person_fractions.append(float(ref.mean()))
    # guards against comparing two blank maps: most portraits show a sizeable person
    assert sum(0.05 < f < 0.95 for f in person_fractions) >= len(portraits) // 2, person_fractions

    first = results[0]
    png = first.save_to_img(tmp_path)
    js = first.save_to_json(tmp_path)
    assert png.is_file() and js.is_file()
    rgb = cv2.imread(str(png))[:, :, ::-1]
    pal = paddlex_palette()
    decoded = np.full(rgb.shape[:2], -1, np.int32)
    for label in (0, 1):
        decoded[np.all(rgb == pal[label], axis=2)] = label
    np.testing.assert_array_equal(decoded, first.pred[0])
    np.testing.assert_array_equal(np.array(json.loads(js.read_text())["pred"], dtype=np.int32), first.pred)
