"""End-to-end conversion with Paddle: the real PP-HumanSegV2-Lite (legacy format, adaptive
pooling, softmax output) with dynamic shapes, heads, cache, atomic output and CLI errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.convert import ConvertReport, convert_model
from fastseg.errors import ConversionError, MissingDependencyError
from fastseg.model_dir import is_model_dir, read_meta

pytestmark = [pytest.mark.paddle, pytest.mark.slow]
pytest.importorskip("paddle", reason="conversion needs paddlepaddle (the [convert] extra)")
pytest.importorskip("paddle2onnx", reason="conversion needs paddle2onnx (the [convert] extra)")

HUMANSEG = "models/pp_humansegv2_lite_portrait"
SMALL = [(128, 256), (97, 211)]


@pytest.fixture(scope="module")
def humanseg(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> ConvertReport:
    """The real portrait model converted once, verified on the real portraits at their sizes."""
    out = tmp_path_factory.mktemp("conv") / "humanseg"
    return convert_model(shared_data / HUMANSEG, out, images_dir=shared_data / "images" / "portraits", threshold=0.9999)


def _session(model_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def test_real_humanseg_dynamic_shapes_match_paddle(humanseg: ConvertReport) -> None:
    meta = read_meta(humanseg.output_dir)
    assert humanseg.paddle_format == "legacy" and not humanseg.cache_hit
    assert meta.dynamic_hw and meta.output_kind == "labels" and meta.num_classes == 2
    assert meta.provenance["source_output"] == "probs"  # the export ends in softmax
    assert meta.provenance["adaptive_pools_rewritten"]  # the SPPM-style 2x2/4x4 pools
    assert len(meta.provenance["source_sha256"]) == 64
    assert {"paddlepaddle", "paddle2onnx", "onnx", "fastseg-ort"} <= set(meta.provenance["versions"])
    inputs = humanseg.verification["inputs"]
    assert len(inputs) == 11  # every real portrait, each at its own size
    assert len({tuple(v["shape"]) for v in inputs.values()}) >= 8
    for name, fig in inputs.items():
        assert fig["argmax_agreement"] >= 0.9999, name
        assert fig["max_abs_logit_diff"] < 1e-3 * fig["max_abs_logit"], name
    dims = _session(humanseg.output_dir).get_inputs()[0].shape
    assert isinstance(dims[2], str) and isinstance(dims[3], str)
    assert meta.verification == humanseg.verification


def test_cache_hit_and_force(humanseg: ConvertReport, shared_data: Path, tmp_path: Path) -> None:
    before = (humanseg.output_dir / "model.onnx").stat().st_mtime_ns
    again = convert_model(shared_data / HUMANSEG, humanseg.output_dir, images_dir=shared_data / "images" / "portraits")
    assert again.cache_hit and (humanseg.output_dir / "model.onnx").stat().st_mtime_ns == before
    # other images to verify on: not a cache hit, those images are verified
    import shutil

    three = sorted((shared_data / "images" / "portraits").iterdir())[:3]
    (tmp_path / "three").mkdir()
    for f in three:
        shutil.copy(f, tmp_path / "three" / f.name)
    other = convert_model(shared_data / HUMANSEG, humanseg.output_dir, images_dir=tmp_path / "three")
    assert not other.cache_hit and set(other.verification["inputs"]) == {f.name for f in three}
    assert convert_model(shared_data / HUMANSEG, humanseg.output_dir, images_dir=tmp_path / "three").cache_hit
    before = (humanseg.output_dir / "model.onnx").stat().st_mtime_ns
    forced = convert_model(shared_data / HUMANSEG, humanseg.output_dir, verify=False, force=True)
    assert not forced.cache_hit and forced.verification == {"skipped": True}
    assert (humanseg.output_dir / "model.onnx").stat().st_mtime_ns != before
    assert not [p for p in humanseg.output_dir.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("head", ["logits", "probs"])
def test_heads_expose_scores(shared_data: Path, tmp_path: Path, head: str) -> None:
    report = convert_model(shared_data / HUMANSEG, tmp_path / head, head=head, verify_sizes=SMALL, threshold=0.9999)
    assert report.meta.output_kind == head
    assert report.verification["min_argmax_agreement"] >= 0.9999
    sess = _session(report.output_dir)
    x = np.random.default_rng(0).standard_normal((1, 3, 97, 211)).astype(np.float32)
    out = sess.run(None, {"x": x})[0]
    assert out.shape == (1, 2, 97, 211) and out.dtype == np.float32
    if head == "probs":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    else:
        assert out.min() < 0 or out.max() > 1  # raw logits, not probabilities


def test_fixed_shape_option(shared_data: Path, tmp_path: Path) -> None:
    report = convert_model(shared_data / HUMANSEG, tmp_path / "fixed", fixed_hw=(144, 256), threshold=0.9999)
    assert not report.meta.dynamic_hw and report.meta.fixed_hw == (144, 256)
    assert _session(report.output_dir).get_inputs()[0].shape[2:] == [144, 256]
    assert list(report.verification["inputs"]) == ["synthetic_144x256", "synthetic_batch2_144x256"]


def test_failed_verification_writes_nothing(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastseg.convert.verify as verify

    real = verify.compare_outputs

    def worse(**kw: object) -> dict[str, object]:
        fig = real(**kw)  # type: ignore[arg-type]
        fig["min_argmax_agreement"] = 0.5
        return fig

    monkeypatch.setattr(verify, "compare_outputs", worse)
    target = tmp_path / "out" / "m"
    target.parent.mkdir()
    with pytest.raises(ConversionError, match=r"Verification failed: argmax agreement 50\.0+% < threshold") as info:
        convert_model(shared_data / HUMANSEG, target, verify_sizes=[(64, 96)])
    assert "\n" not in str(info.value)
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_paddle2onnx_crash_becomes_one_line_error(tmp_path: Path, shared_data: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pdmodel").write_bytes(b"not a program")
    (bad / "model.pdiparams").write_bytes(b"x")
    with pytest.raises(ConversionError, match="Translating the legacy .pdmodel to PIR failed") as info:
        convert_model(bad, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_paddle_names_the_extra(monkeypatch: pytest.MonkeyPatch, shared_data: Path, tmp_path: Path) -> None:
    import fastseg.convert.child as child

    real = child.importlib.util.find_spec
    monkeypatch.setattr(
        child.importlib.util, "find_spec", lambda name, *a: None if name == "paddle" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r'pip install "fastseg-ort\[convert\]"'):
        convert_model(shared_data / HUMANSEG, tmp_path / "out")
    result = CliRunner().invoke(main, ["convert", "--model-dir", str(shared_data / HUMANSEG), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "fastseg-ort[convert]" in result.output


def test_cli_convert_prints_figures_and_path(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_out"
    args = ["convert", "--model-dir", str(shared_data / HUMANSEG), "-o", str(out), "--fixed-shape", "97x211"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "synthetic_97x211" in result.output and "argmax agreement 100.0000%" in result.output
    assert result.output.rstrip().endswith(f"Model directory: {out}")
    assert is_model_dir(out)
    again = CliRunner().invoke(main, args)
    assert "Up to date" in again.output


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["convert", "PP-LiteSeg-X"], "Did you mean 'PP-LiteSeg-T'"),
        (["convert"], "Give a zoo model NAME"),
        (["convert", "--fixed-shape", "12by5", "PP-LiteSeg-T"], "use HxW"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], match: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and match in result.output


def test_cli_convert_name_downloads_lazily_and_reports_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastseg.download as download
    from fastseg.errors import DownloadError

    asked: list[str] = []

    def offline(spec: object, *, home: object = None, progress: bool = True) -> Path:
        asked.append(getattr(spec, "name", "?"))
        raise DownloadError("cannot reach the download host; download it elsewhere and use --from PATH")

    monkeypatch.setattr(download, "fetch_model_tarball", offline)
    result = CliRunner().invoke(main, ["convert", "SegFormer-B0"])
    assert asked == ["SegFormer-B0"]
    assert result.exit_code == 2 and "--from" in result.output and result.output.count("\n") == 1
