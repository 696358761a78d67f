"""converters/matrix.py: table and pass/fail logic (the conversions are tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converters.matrix import MatrixRow, main, markdown

SIZES = [(128, 256), (97, 211)]


def _row(name: str, low: float) -> MatrixRow:
    return MatrixRow(
        name=name, paddle_format="pir", opset=17, convert_seconds=12.34, onnx_mb=15.2,
        agreement={"128x256": 1.0, "97x211": low, "batch2_128x256": 1.0},
        max_abs_logit_diff=2.96e-5, max_abs_logit=16.3,
        disagreeing_pixels=0 if low == 1.0 else 3, max_margin_at_disagreement=None if low == 1.0 else 4.2e-5,
        median_margin=2.5,
    )


def test_rows_pass_only_at_99_99_percent_everywhere() -> None:
    assert _row("A", 0.99995).passed
    assert not _row("B", 0.9998).passed
    assert not MatrixRow("C", error="boom").passed
    assert not MatrixRow("D").passed  # no figures is not a pass


def test_markdown_has_one_column_per_size_and_flags_failures() -> None:
    table = markdown([_row("SegFormer-B0", 1.0), _row("PP-LiteSeg-T", 0.968),
                      MatrixRow("X", error="Conversion failed: why")], SIZES)
    lines = table.splitlines()
    assert lines[0] == (
        "| model | format | opset | convert s | ONNX MB | agree 128x256 | agree 97x211 | "
        "agree batch2_128x256 | max logit diff | max logit | disagreeing px | their max top-2 margin | "
        "median margin | ok |"
    )
    assert lines[2] == (
        "| SegFormer-B0 | pir | 17 | 12.3 | 15.2 | 100.000 | 100.000 | 100.000 | 2.96e-05 "
        "| 16.3 | 0 | - | 2.50 | yes |"
    )
    assert "| 96.800 |" in lines[3] and lines[3].endswith("| 3 | 4.2e-05 | 2.50 | NO |")
    assert lines[4].endswith("FAIL: Conversion failed: why |")


def test_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--models", "SegFormer-B9", "--references", "/nonexistent"])
    assert exc.value.code == 2
    assert "SegFormer-B9" in capsys.readouterr().err


def test_json_is_written_after_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import converters.matrix as matrix

    seen: list[int] = []

    def fake_row(name: str, **_: object) -> MatrixRow:
        if (tmp_path / "m.json").exists():
            seen.append(len(json.loads((tmp_path / "m.json").read_text())["rows"]))
        return _row(name, 1.0)

    monkeypatch.setattr(matrix, "convert_row", fake_row)
    code = main(["--models", "SegFormer-B0,PP-LiteSeg-T", "--references", str(tmp_path), "--json", str(tmp_path / "m.json")])
    assert code == 0 and seen == [1]
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["SegFormer-B0", "PP-LiteSeg-T"] and rows[0]["median_margin"] == 2.5
