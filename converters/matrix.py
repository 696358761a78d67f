"""The zoo conversion matrix: every reference architecture through ``fastseg.convert``.

For each model: build (or reuse) its reference tarball, convert it with verification against
Paddle Inference at the given sizes, and record format, opset, convert seconds, ONNX size,
argmax agreement per size and the max |logit diff|. Prints a Markdown table and writes JSON.

    python -m converters.matrix --models all --sizes 512x1024,357x521,97x211 \\
        --references ~/.cache/fastseg-ref --json matrix.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from converters.reference_models import REFERENCE_NAMES, ensure_reference
from fastseg.files import write_text_atomic
from fastseg.slide import parse_hw

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((512, 1024), (357, 521), (97, 211))
PASS_AGREEMENT = 0.9999


@dataclass(frozen=True)
class MatrixRow:
    """One model's conversion figures (``error`` set, figures empty, when it failed)."""

    name: str
    paddle_format: str | None = None
    opset: int | None = None
    convert_seconds: float | None = None
    onnx_mb: float | None = None
    agreement: dict[str, float] = field(default_factory=dict)
    max_abs_logit_diff: float | None = None
    max_abs_logit: float | None = None
    build_seconds: float | None = None
    disagreeing_pixels: int | None = None
    max_margin_at_disagreement: float | None = None
    median_margin: float | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.agreement) and (
            min(self.agreement.values()) >= PASS_AGREEMENT
        )


def convert_row(
    name: str,
    *,
    references: Path,
    work: Path,
    sizes: Sequence[tuple[int, int]],
    legacy: bool = False,
    opset: int | None = None,
) -> MatrixRow:
    """Build/reuse ``name``'s reference and convert it with verification at ``sizes``."""
    from fastseg.convert import convert_model
    from fastseg.errors import FastSegError

    start = time.perf_counter()
    tarball = ensure_reference(name, references, legacy=legacy)
    build_seconds = time.perf_counter() - start
    try:
        # a tiny threshold: record the figures even when agreement is low; the table flags it.
        report = convert_model(
            tarball,
            work / name,
            head="labels",
            opset=opset,
            verify=True,
            verify_sizes=list(sizes),
            threshold=1e-9,
            force=True,
        )
    except FastSegError as exc:
        return MatrixRow(name, build_seconds=build_seconds, error=str(exc).splitlines()[0])
    inputs: dict[str, dict[str, Any]] = report.verification.get("inputs", {})
    agreement = {
        key.removeprefix("synthetic_"): float(value["argmax_agreement"])
        for key, value in inputs.items()
    }
    return MatrixRow(
        name=name,
        paddle_format=report.paddle_format,
        opset=report.opset,
        convert_seconds=report.seconds,
        onnx_mb=report.onnx_bytes / 1e6,
        agreement=agreement,
        max_abs_logit_diff=report.verification.get("max_abs_logit_diff"),
        max_abs_logit=max((float(v["max_abs_logit"]) for v in inputs.values()), default=None),
        build_seconds=build_seconds,
        disagreeing_pixels=sum(int(v.get("disagreeing_pixels", 0)) for v in inputs.values()),
        max_margin_at_disagreement=max(
            (float(v["max_top2_margin_at_disagreements"]) for v in inputs.values()
             if "max_top2_margin_at_disagreements" in v), default=None),
        median_margin=min((float(v["median_top2_margin"]) for v in inputs.values()
                           if "median_top2_margin" in v), default=None),
    )


def markdown(rows: Sequence[MatrixRow], sizes: Sequence[tuple[int, int]]) -> str:
    """The matrix as a Markdown table (agreement in %, one column per verified input)."""
    keys = [f"{h}x{w}" for h, w in sizes] + ([f"batch2_{sizes[0][0]}x{sizes[0][1]}"] if sizes else [])
    header = ["model", "format", "opset", "convert s", "ONNX MB", *(f"agree {k}" for k in keys),
              "max logit diff", "max logit", "disagreeing px", "their max top-2 margin", "median margin", "ok"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r.error is not None:
            cells = [r.name, "", "", "", "", *("" for _ in keys), "", "", "", "", "", f"FAIL: {r.error}"]
        else:
            cells = [
                r.name, r.paddle_format or "", str(r.opset), f"{r.convert_seconds:.1f}",
                f"{r.onnx_mb:.1f}",
                *(f"{100 * r.agreement[k]:.3f}" if k in r.agreement else "-" for k in keys),
                f"{r.max_abs_logit_diff:.2e}", f"{r.max_abs_logit:.1f}",
                str(r.disagreeing_pixels),
                "-" if r.max_margin_at_disagreement is None else f"{r.max_margin_at_disagreement:.1e}",
                "-" if r.median_margin is None else f"{r.median_margin:.2f}",
                "yes" if r.passed else "NO",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[MatrixRow], sizes: Sequence[tuple[int, int]]) -> None:
    """The rows so far, with sizes and machine, written atomically."""
    payload = {
        "sizes": [list(s) for s in sizes],
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "rows": [asdict(r) | {"passed": r.passed} for r in rows],
    }
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    return [parse_hw(part, name="--sizes") for part in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="'all' or comma-separated names")
    parser.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in DEFAULT_SIZES),
                        help="verification sizes HxW,HxW,...")
    parser.add_argument("--references", type=Path, required=True,
                        help="cache folder for reference tarballs (built when missing)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for converted models (default: a temp dir, deleted)")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--legacy", action="store_true", help="legacy .pdmodel references")
    parser.add_argument("--opset", type=int, default=None, help="default: per family")
    args = parser.parse_args(argv)
    names = list(REFERENCE_NAMES) if args.models == "all" else [
        n.strip() for n in args.models.split(",") if n.strip()
    ]
    unknown = [n for n in names if n not in REFERENCE_NAMES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(REFERENCE_NAMES)}")
    sizes = _parse_sizes(args.sizes)
    rows: list[MatrixRow] = []
    with tempfile.TemporaryDirectory(prefix="fastseg-matrix-") as tmp:
        work = args.work or Path(tmp)
        for name in names:
            row = convert_row(name, references=args.references, work=work, sizes=sizes,
                              legacy=args.legacy, opset=args.opset)
            rows.append(row)
            print(f"{name}: {'ok' if row.passed else 'FAIL'} "
                  f"({row.convert_seconds or 0:.1f} s)", file=sys.stderr, flush=True)
            if args.json is not None:  # after every row: a long matrix keeps what it measured
                write_json(args.json, rows, sizes)
    print(markdown(rows, sizes))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
