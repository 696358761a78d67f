"""converters/reference_models.py: PaddleX-identical tarballs of random-weight models."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from converters.reference_models import REFERENCE_NAMES, build_reference, natural_images
from fastseg.reference import REFERENCE_MARKER
from fastseg.zoo import load_zoo

pytestmark = [pytest.mark.slow, pytest.mark.paddle]
SMALL_MODELS = ["PP-LiteSeg-T", "SegFormer-B0"]
ODD_SIZE = (97, 211)


def test_reference_names_are_the_zoo() -> None:
    assert REFERENCE_NAMES == tuple(load_zoo().models)


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="SegFormer-B0"):
        build_reference("SegFormer-B9", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_legacy_pp_liteseg_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="legacy"):
        build_reference("PP-LiteSeg-T", tmp_path, legacy=True)
    assert not (tmp_path / "PP-LiteSeg-T_infer.tar").exists()


def _members(tarball: Path) -> set[str]:
    with tarfile.open(tarball) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def _extract(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / tarball.name.removesuffix(".tar")


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_tarball_layout_and_inference_yml(
    name: str, reference_tarball: Callable[..., Path], tmp_path: Path
) -> None:
    tarball = reference_tarball(name)
    assert tarball.name == f"{name}_infer.tar"
    folder = f"{name}_infer"
    assert _members(tarball) == {
        f"{folder}/inference.json",
        f"{folder}/inference.pdiparams",
        f"{folder}/inference.yml",
        f"{folder}/{REFERENCE_MARKER}",  # labels any conversion of it as a reference build
    }
    extracted = _extract(tarball, tmp_path)
    assert "random weights" in (extracted / REFERENCE_MARKER).read_text()
    config = yaml.safe_load((extracted / "inference.yml").read_text())
    assert config["Global"] == {"model_name": name}
    deploy = config["Deploy"]
    assert deploy["transforms"] == [{"type": "Normalize"}]
    assert deploy["output_op"] == "argmax"
    assert deploy["output_dtype"] == "int32"
    assert deploy["input_shape"] == [None, 3, None, None]
    assert deploy["params"] == "inference.pdiparams"


def _paddle_labels(folder: Path, batch_nchw: np.ndarray) -> np.ndarray:
    from paddle import inference

    model = folder / "inference.json"
    if not model.exists():
        model = folder / "inference.pdmodel"
    config = inference.Config(str(model), str(folder / "inference.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(1)
    predictor = inference.create_predictor(config)
    assert predictor.get_input_names() == ["x"]
    handle = predictor.get_input_handle("x")
    handle.reshape(list(batch_nchw.shape))
    handle.copy_from_cpu(batch_nchw)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_paddle_inference_gives_int32_label_maps_at_an_odd_size(
    name: str, reference_tarball: Callable[..., Path], tmp_path: Path
) -> None:
    folder = _extract(reference_tarball(name), tmp_path)
    labels = _paddle_labels(folder, natural_images(2, *ODD_SIZE, seed=3))
    assert labels.dtype == np.int32
    assert labels.shape == (2, *ODD_SIZE)
    assert labels.min() >= 0 and labels.max() < 19
    assert np.unique(labels).size >= 3, "random weights collapsed to too few classes"


def test_legacy_export_is_a_program_desc(
    reference_tarball: Callable[..., Path], tmp_path: Path
) -> None:
    tarball = reference_tarball("SegFormer-B0", legacy=True)
    assert "SegFormer-B0_infer/inference.pdmodel" in _members(tarball)
    assert "SegFormer-B0_infer/inference.json" not in _members(tarball)
    labels = _paddle_labels(_extract(tarball, tmp_path), natural_images(1, *ODD_SIZE, seed=3))
    assert labels.dtype == np.int32 and labels.shape == (1, *ODD_SIZE)
    assert np.unique(labels).size >= 3


# paddle warns (category Warning) when PaddleSeg calls paddle.max the torch way.
@pytest.mark.filterwarnings(r"ignore:\s*Non compatible API")
def test_pp_liteseg_logits_are_sane() -> None:
    """PaddleSeg's default init gives PP-LiteSeg logits ~1e-9; ours must be O(1..100)."""
    pytest.importorskip("paddleseg")
    from converters.reference_models import build_model, logits_summary

    model = build_model("PP-LiteSeg-T", seed=0)
    # images the calibration never saw: one BN fed by a global pool used to give 1e3 here
    for seed in (5, 6, 7):
        low, high, classes = logits_summary(model, seed=seed, size=ODD_SIZE)
        assert np.isfinite([low, high]).all()
        assert 3.0 < max(abs(low), abs(high)) < 300.0
        assert classes >= 3


def test_builds_are_deterministic(reference_tarball: Callable[..., Path], tmp_path: Path) -> None:
    cached = reference_tarball("PP-LiteSeg-T")
    again = build_reference("PP-LiteSeg-T", tmp_path)
    with tarfile.open(cached) as a, tarfile.open(again) as b:
        params = "PP-LiteSeg-T_infer/inference.pdiparams"
        assert a.extractfile(params).read() == b.extractfile(params).read()  # type: ignore[union-attr]


def test_residual_branches_are_damped_at_their_last_batchnorm() -> None:
    """ResNet_vd and HRNet blocks: the BN closing each residual branch is scaled, no other."""
    pytest.importorskip("paddleseg")
    from paddleseg.models.backbones import hrnet, resnet_vd

    from converters.reference_models import damp_residual_branches

    blocks = [
        (resnet_vd.BottleneckBlock(8, 2, stride=1, shortcut=False), "conv2"),
        (resnet_vd.BasicBlock(4, 4, stride=1, shortcut=True), "conv1"),
        (hrnet.BottleneckBlock(8, 2, has_se=False, downsample=True), "conv3"),
        (hrnet.BasicBlock(4, 4), "conv2"),
    ]
    for block, last in blocks:
        before = {name: p.numpy().copy() for name, p in block.named_parameters()}
        assert damp_residual_branches(block, 0.25) == 1
        for name, param in block.named_parameters():
            scaled = name.startswith(f"{last}._batch_norm.") and name.rsplit(".", 1)[1] in ("weight", "bias")
            expected = before[name] * (0.25 if scaled else 1.0)
            np.testing.assert_allclose(param.numpy(), expected, rtol=1e-6, err_msg=name)


def test_maskformer_inference_yml_is_paddlex_fixed_512_export() -> None:
    """PaddleX exports MaskFormer with input_shape [1, 3, 512, 512] and its val transforms."""
    from converters.reference_models import inference_yml

    deploy = inference_yml("MaskFormer_tiny", legacy=False)["Deploy"]
    assert deploy["input_shape"] == [1, 3, 512, 512]
    assert deploy["transforms"] == [
        {"type": "Resize", "target_size": [512, 512], "keep_ratio": False, "interp": "LINEAR"},
        {"type": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    ]
    assert (deploy["output_op"], deploy["output_dtype"]) == ("argmax", "int32")
