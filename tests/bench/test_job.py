"""fastseg.bench.job: one ``fastseg bench`` run from parsed options (checks before work, failed
rows, warnings through the UI, the files written) without Paddle or a real model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastseg.bench import job
from fastseg.bench.report import AGAINST
from fastseg.errors import InputError, ModelDirError, UnknownModelError


class RecordingUI:
    """A ``BenchUI`` that keeps what the run told its user."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def warn(self, message: str) -> None:
        self.lines.append(f"warn: {message}")

    @contextmanager
    def status(self, message: str) -> Iterator[Callable[[str], None]]:
        self.lines.append(f"status: {message}")
        yield lambda text: self.lines.append(f"update: {text}")

    @contextmanager
    def progress(self, total: int) -> Iterator[Callable[[str], None]]:
        self.lines.append(f"progress: {total}")
        yield lambda label: self.lines.append(f"step: {label}")


def test_bad_peer_or_model_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match="--against 'tensorrt': choose from paddle, paddlex, paddlex-bf16"):
        job.run_job(job.BenchRequest(size=(32, 48), out_dir=out, against=("tensorrt",)), RecordingUI())
    with pytest.raises(UnknownModelError, match="NoSuchNet"):
        job.run_job(job.BenchRequest(size=(32, 48), out_dir=out, models="PP-LiteSeg-T,NoSuchNet"), RecordingUI())
    assert not out.exists()


@pytest.mark.parametrize(("engine", "precision"), [("openvino-bf16", "bf16"), ("openvino-int8-bf16", "int8-bf16")])
def test_bf16_on_a_cpu_without_it_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, precision: str
) -> None:
    from fastseg.cli import main
    from fastseg.engines import cpu

    monkeypatch.setenv("FASTSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))  # an AMD Zen 1-3
    built: list[str] = []
    monkeypatch.setattr(job, "prepare_models", lambda names, *_: built.extend(names))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", "--engine", engine, "--models", "PP-LiteSeg-T,SegFormer-B0",
                                       "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"Error: {precision} needs a CPU with AMX or AVX512-BF16")
    assert "this CPU has neither (its precision flags: avx2)" in result.output
    assert built == [] and not out.exists() and not (tmp_path / "home").exists()


def test_the_console_says_why_a_row_was_not_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastseg.cli import main

    monkeypatch.setenv("FASTSEG_HOME", str(tmp_path / "home"))

    def broken(name: str, **_: object) -> object:
        raise RuntimeError(f"{name} [exploded]")

    monkeypatch.setattr(job, "resolve_model", broken)
    result = CliRunner().invoke(main, ["bench", "--size", "32x48", "--runs", "1", "--warmup", "0", "--weights", "reference",
                                       "--reference-dir", str(tmp_path / "refs"), "--peak-gflops", "100",
                                       "--out", str(tmp_path / "out")], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "Not measured: PP-LiteSeg-T/fastseg: failed (preparing: RuntimeError: PP-LiteSeg-T [exploded])" in result.output


def test_missing_prebuilt_reference_names_the_command_that_builds_it(tmp_path: Path) -> None:
    builder = job.reference_builder(tmp_path)
    assert builder is not None
    with pytest.raises(ModelDirError, match=r"python -m converters.reference_models --models SegFormer-B0 --out"):
        builder("SegFormer-B0", tmp_path / "cache")


def test_a_model_that_fails_to_prepare_is_a_failed_row_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTSEG_HOME", str(tmp_path / "home"))

    def broken(name: str, **_: object) -> object:
        raise RuntimeError(f"{name} exploded")

    monkeypatch.setattr(job, "resolve_model", broken)
    ui = RecordingUI()
    request = job.BenchRequest(size=(32, 48), out_dir=tmp_path / "out", weights="reference",
                               reference_dir=tmp_path / "refs", peak_gflops=100.0, runs=1, warmup=0)
    outcome = job.run_job(request, ui)
    (model,) = outcome.report.models
    assert model.name == "PP-LiteSeg-T" and {b.status for b in model.backends.values()} == {"failed"}
    assert "warn: PP-LiteSeg-T: could not prepare (RuntimeError: PP-LiteSeg-T exploded); row marked failed." in ui.lines
    assert "progress: 1" in ui.lines
    written = json.loads(outcome.paths["json"].read_text())
    assert written["config"]["peak_source"] == "given with --peak-gflops"
    assert (tmp_path / "out" / "bench_48x32.png").is_file()


def test_against_help_names_every_peer() -> None:
    from fastseg.cli import main

    result = CliRunner().invoke(main, ["bench", "--help"], terminal_width=400)
    for peer in AGAINST:
        assert f"{peer} (" in result.output
