from __future__ import annotations

import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.errors import UnknownModelError
from fastseg.zoo import cache_home, load_zoo


def test_zoo_has_the_20_paddlex_models_with_published_figures() -> None:
    zoo = load_zoo()
    assert len(zoo.models) == 20
    spec = zoo.get("PP-LiteSeg-T")
    assert (spec.published.miou, spec.published.gpu_ms, spec.published.cpu_ms, spec.published.size_mb) == (
        73.10, 7.68, 138.68, 28.5)
    assert spec.dataset.num_classes == 19 and len(spec.dataset.class_names) == 19
    assert zoo.get("SeaFormer_large").dataset.num_classes == 150
    assert len(zoo.get("SeaFormer_large").dataset.palette) == 150
    assert spec.inference_urls[0].endswith("/paddle3.0.0/PP-LiteSeg-T_infer.tar")
    assert spec.inference_urls[1].endswith("/paddle3.0b2/PP-LiteSeg-T_infer.tar")
    assert zoo.get("SegFormer-B0").published.latency_note is not None
    assert zoo.get("Deeplabv3-R50").published.latency_note is None
    # PaddleX's doc publishes MaskFormer's mIoU only (latency and size cells are blank)
    tiny, small = zoo.get("MaskFormer_tiny"), zoo.get("MaskFormer_small")
    assert (tiny.published.miou, small.published.miou) == (46.69, 49.70)
    assert (tiny.published.gpu_ms, tiny.published.cpu_ms, tiny.published.size_mb) == (None, None, None)
    assert tiny.dataset.num_classes == 150 and tiny.family == "MaskFormer"
    assert tiny.protocol is not None and tiny.protocol.describe() == "resize 512x512 exactly"
    assert tiny.protocol.segmenter_kwargs() == {"target_size": None, "slide": None, "slide_stride": None}
    assert tiny.inference_urls == (
        "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0/MaskFormer_tiny_infer.tar",)


def test_palette_is_paddleseg_color_map() -> None:
    pal = load_zoo().datasets["Cityscapes"].palette
    assert pal[:4] == ((128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128))


@pytest.mark.parametrize("typo, expected", [("PP-LiteSeg-t", "PP-LiteSeg-T"), ("segformer_b0", "SegFormer-B0"),
                                            ("SeaFormer-tiny", "SeaFormer_tiny")])
def test_unknown_model_suggests_nearest(typo: str, expected: str) -> None:
    with pytest.raises(UnknownModelError, match=expected):
        load_zoo().get(typo)


def test_cache_home_env_override(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert cache_home({"FASTSEG_HOME": str(tmp_path)}) == tmp_path
    assert cache_home({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "fastseg"


def test_models_command_prints_20_rows() -> None:
    out = CliRunner().invoke(main, ["models", "--format", "json"])
    assert out.exit_code == 0, out.output
    import json

    rows = json.loads(out.output)
    assert [r["name"] for r in rows][:2] == ["Deeplabv3_Plus-R50", "Deeplabv3_Plus-R101"]
    assert len(rows) == 20
    assert rows[-1]["name"] == "MaskFormer_small" and rows[-1]["cpu_ms"] is None
