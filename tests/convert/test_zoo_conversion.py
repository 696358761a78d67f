"""CI matrix: every zoo architecture (random-weight PaddleX-identical reference tarball)
converts with dynamic H and W and agrees with Paddle Inference at two sizes, one odd.
MaskFormer is exported by PaddleX with a fixed [1, 3, 512, 512] input: it converts fixed and
is verified at 512x512, the only size it accepts (its inference.yml resizes every image)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest

from fastseg.convert import convert_model
from fastseg.reference import is_reference
from fastseg.zoo import load_zoo

pytestmark = [pytest.mark.paddle, pytest.mark.slow]
pytest.importorskip("paddle2onnx", reason="conversion needs paddle2onnx (the [convert] extra)")

# Small sizes keep 20 conversions in CI budget; 97x211 is odd on both axes, so adaptive-pool
# bins overlap and every stride-2 layer rounds.
PARITY_SIZES = [(128, 256), (97, 211)]
MIN_AGREEMENT = 0.9999
# Every input of every model is held to 99.99% raw argmax agreement. The ResNet/HRNet
# references damp their residual branches (converters/reference_models.py
# damp_residual_branches) as trained networks' are; at full random strength those deep stacks
# left near-tied pixels (99.93-99.99% raw agreement in reference build v4) within float32 noise.


@pytest.mark.parametrize("name", load_zoo().names())
def test_zoo_model_converts_with_dynamic_shapes(
    name: str, reference_tarball: Callable[..., Path], tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    report = convert_model(
        reference_tarball(name), tmp_path / name, verify_sizes=PARITY_SIZES, threshold=MIN_AGREEMENT
    )
    fixed = name.startswith("MaskFormer")
    record_property("convert_seconds", round(report.seconds, 1))
    record_property("onnx_mb", round(report.onnx_bytes / 1e6, 1))
    record_property("timings_s", report.meta.provenance["timings_s"])
    record_property("figures", report.verification["inputs"])
    spec = load_zoo().get(name)
    meta = report.meta
    assert report.model_name == name and report.paddle_format == "pir" and report.opset == 17
    assert meta.dynamic_hw is not fixed and meta.num_classes == spec.dataset.num_classes
    assert meta.class_names == spec.dataset.class_names
    assert is_reference(meta), "the tarball's REFERENCE_MARKER labels a conversion by hand as a reference build"
    figures = report.verification["inputs"]
    if fixed:
        assert meta.fixed_hw == (512, 512) and meta.provenance["source_input_shape"] == [1, 3, 512, 512]
        assert set(figures) == {"synthetic_512x512"}
    else:
        assert set(figures) == {"synthetic_128x256", "synthetic_97x211", "synthetic_batch2_128x256"}
    for key, fig in figures.items():
        assert fig["argmax_agreement"] >= MIN_AGREEMENT, (key, fig)
    shape = ort.InferenceSession(str(tmp_path / name / "model.onnx"), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert shape == [1, 3, 512, 512] if fixed else isinstance(shape[2], str) and isinstance(shape[3], str), shape
    if name.startswith("PP-LiteSeg"):
        assert meta.provenance["adaptive_pools_rewritten"] == [[1, 1], [2, 2], [4, 4]]
    # MaskFormer's shape-only If/sequence ops (Swin's attention masks) are constants once the input
    # is frozen (fastseg.convert.static_fold), so OpenVINO can read the graph; dynamic graphs are untouched
    fold = meta.provenance["static_fold"]
    if fixed:
        assert fold["control_flow_ops_before"] and fold["control_flow_ops_after"] == {}, fold
        assert fold["constants_folded"] > 0 and "match" in fold["check"], fold
        if importlib.util.find_spec("openvino") is not None:
            from fastseg.offline import import_openvino_quietly

            import_openvino_quietly().Core().read_model(str(tmp_path / name / "model.onnx"))
    else:
        assert fold["constants_folded"] == 0, fold
    # SegFormer's decoder fuse conv is folded into its projections (fastseg.convert.decoder_fold); no other model matches
    assert meta.provenance["decoder_fuse_convs_folded"] == (1 if name.startswith("SegFormer") else 0)


def test_legacy_format_reference(reference_tarball: Callable[..., Path], tmp_path: Path) -> None:
    report = convert_model(
        reference_tarball("SegFormer-B0", legacy=True), tmp_path / "m", verify_sizes=PARITY_SIZES, threshold=MIN_AGREEMENT
    )
    assert report.paddle_format == "legacy" and report.meta.dynamic_hw
    assert report.verification["min_argmax_agreement"] >= MIN_AGREEMENT
