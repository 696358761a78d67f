"""A BenchReport as display rows, a rich table, Markdown, a PNG chart, and the files written together.

rich and matplotlib are imported inside the functions that need them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastseg.bench.report import SYNTHETIC_IMAGE, BackendResult, BenchReport, Stats
from fastseg.errors import MissingDependencyError
from fastseg.files import write_bytes_atomic


def _fmt_ms(stats: Stats | None) -> str:
    return "-" if stats is None else f"{stats.median:.1f}"


def _fmt_ratio(value: float | str | None) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.2f}x"


def gflops_column(report: BenchReport) -> str:
    """The GFLOP/s column's label, naming the engine it was achieved on ("engine": each row's own)."""
    engines = sorted({e for e in (m.engine() for m in report.models if m.stage("fastseg", "infer")) if e})
    return f"{engines[0] if len(engines) == 1 else 'engine'} GFLOP/s (% peak)"


def table_rows(report: BenchReport) -> list[dict[str, str]]:
    """One row of display strings per model (shared by the terminal table and Markdown)."""
    peak = float(report.config["peak_gflops"])
    gflops_col = gflops_column(report)
    rows = []
    for m in report.models:
        fs = m.backends.get("fastseg")
        e2e = m.stage("fastseg", "e2e")
        achieved = m.achieved_gflops()
        paddle, paddlex, paddlex_bf16 = m.backends.get("paddle"), m.backends.get("paddlex"), m.backends.get("paddlex-bf16")
        rows.append(
            {
                "Model": m.name,
                "Weights": m.weights + (" (unverified)" if m.note.startswith("unverified") else ""),
                "Engine": m.engine() or "-",
                "GFLOPs": "-" if m.gflops is None else (f"{m.gflops:.1f}" if m.gflops >= 1 else f"{m.gflops:.4f}"),
                "pre ms": _fmt_ms(m.stage("fastseg", "pre")),
                "infer ms": _fmt_ms(m.stage("fastseg", "infer")),
                "post ms": _fmt_ms(m.stage("fastseg", "post")),
                "e2e ms": _fmt_ms(e2e) if fs is None or fs.status == "ok" else fs.status,
                "e2e p90/min": "-" if e2e is None else f"{e2e.p90:.1f}/{e2e.min:.1f}",
                "img/s": "-" if fs is None or fs.images_per_s is None else f"{fs.images_per_s:.2f}",
                gflops_col: "-" if achieved is None else f"{achieved:.1f} ({100 * achieved / peak:.0f}%)",
                "RSS MB": "-" if fs is None or fs.peak_rss_mb is None else f"{fs.peak_rss_mb:.0f}",
                "Paddle infer ms": "-" if paddle is None else (_fmt_ms(paddle.stats.get("infer")) if paddle.status == "ok" else paddle.status),
                "fastseg/Paddle": "-" if paddle is None else _fmt_ratio(m.ratio("paddle")),
                "PaddleX e2e ms": _fmt_peer(paddlex),
                "fastseg/PaddleX": "-" if paddlex is None else _fmt_ratio(m.ratio("paddlex")),
                **({} if paddlex_bf16 is None else {
                    "PaddleX bf16 e2e ms": _fmt_peer(paddlex_bf16),
                    "fastseg/PaddleX bf16": _fmt_ratio(m.ratio("paddlex-bf16")),
                }),
                "published T4 ms": _fmt_pub(m.published.get("gpu_ms"), m.published.get("latency_note")),
                "published Xeon ms": _fmt_pub(m.published.get("cpu_ms"), m.published.get("latency_note")),
                "published mIoU": "-" if m.published.get("miou") is None else f"{m.published['miou']:.2f}",
            }
        )
    return rows


def _fmt_peer(peer: BackendResult | None) -> str:
    """A PaddleX cell: its end-to-end median and the run mode that ran, e.g. "4315.0 (paddle)"."""
    if peer is None:
        return "-"
    if peer.status != "ok":
        return peer.status
    ms = _fmt_ms(peer.stats.get("e2e"))
    return ms if not peer.run_mode else f"{ms} ({peer.run_mode})"


def _fmt_pub(value: Any, note: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}" + ("*" if note else "")


def conditions_text(report: BenchReport) -> str:
    """The line that says under which conditions the numbers were taken."""
    c, mach = report.config, report.machine
    h, w = c["size"]
    windows = ""
    if c.get("slide") or c.get("slide_stride") or c.get("protocol", "paddlex") != "paddlex":
        windows = (
            f"fastseg rows: protocol {c.get('protocol', 'paddlex')}"
            + (f", slide {c.get('slide')} step {c.get('slide_stride') or c.get('slide')}" if c.get("slide") else "")
            + " (Paddle/PaddleX rows: whole image); "
        )
    return (
        f"{mach.get('cpu')} ({mach.get('logical_cores')} logical cores), device {c['device']}, "
        f"{c['threads']} threads, batch {c['batch']}, image {w}x{h} (WxH, {c.get('image', SYNTHETIC_IMAGE)}), "
        f"engine {c.get('engine', 'ort')}, "
        f"{_precision(c)}"
        f"{windows}{c['runs']} runs after {c['warmup']} warm-up; medians in ms. fastseg/Paddle compares inference, "
        f"fastseg/PaddleX end to end (file in, label map out); < 1 means fastseg is faster. "
        f"GFLOPs: Conv/ConvTranspose/MatMul/Gemm, 1 MAC = 2 FLOPs; % peak of {c['peak_gflops']:.0f} GFLOP/s "
        f"({c.get('peak_source', 'given')})."
    )


def _precision(config: Mapping[str, Any]) -> str:
    """The caption's precision ("fp32, ", "int8, "); empty when it is per row (auto)."""
    precision = config.get("precision") or ("fp32" if config.get("engine", "ort") in ("ort", "openvino") else "")
    return f"{precision}, " if precision else ""


def published_text(report: BenchReport) -> str:
    pc = report.published_conditions
    return (
        "published = PaddleX's own figures on other hardware, never a ratio to ours: "
        f"T4: {pc.get('gpu_ms', '?')}; Xeon: {pc.get('cpu_ms', '?')}. * measured by PaddleX on sliced inputs."
    )


# Short terminal headers for table_rows' keys (the Markdown keeps the long ones).
_SHORT = {
    "Weights": "weights", "Engine": "engine", "GFLOPs": "GFLOPs", "pre ms": "pre", "infer ms": "infer", "post ms": "post",
    "e2e ms": "e2e", "e2e p90/min": "e2e p90/min", "img/s": "img/s",
    "RSS MB": "RSS MB", "Paddle infer ms": "Paddle infer", "fastseg/Paddle": "/Paddle",
    "PaddleX e2e ms": "PaddleX e2e", "fastseg/PaddleX": "/PaddleX", "published T4 ms": "pub. T4",
    "published Xeon ms": "pub. Xeon", "published mIoU": "pub. mIoU",
}


_LEFT = ("Model", "Weights", "Engine")  # text columns; the rest are numbers, right-aligned


def render_table(report: BenchReport, *, title: str = "fastseg bench (ms, medians)") -> Any:
    """A ``rich.table.Table`` of ``table_rows`` (rich is imported here, not at module import)."""
    from rich.table import Table

    rows = table_rows(report)
    table = Table(title=title, caption=conditions_text(report), caption_justify="left")
    for col in (rows[0] if rows else {"Model": ""}):
        table.add_column(
            _SHORT.get(col, col).replace("(% peak)", "(%pk)"),
            justify="left" if col in _LEFT else "right",
            no_wrap=col in ("Model", "Weights"),
        )
    for row in rows:
        table.add_row(*row.values())  # weights spelled out: "reference weights" is never shortened
    return table


def not_measured(report: BenchReport) -> list[str]:
    """``model/backend: status (why)`` for every cell the table shows as not measured."""
    return [f"{m.name}/{b.backend}: {b.status} ({b.detail})" for m in report.models for b in m.backends.values()
            if b.status != "ok"]


def render_markdown(report: BenchReport) -> str:
    """The table as GitHub Markdown, with the machine, versions and conditions."""
    rows = table_rows(report)
    lines = ["# fastseg bench", "", conditions_text(report), "", published_text(report), ""]
    if rows:
        cols = list(rows[0])
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" if c in _LEFT else "---:" for c in cols) + "|")
        lines.extend("| " + " | ".join(r[c] for c in cols) + " |" for r in rows)
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items())]
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()))
    worker_versions = sorted(
        {f"{b.backend}: " + ", ".join(f"{k} {v}" for k, v in b.versions.items()) for m in report.models for b in m.backends.values() if b.versions}
    )
    if worker_versions:
        lines.append("Workers: " + "; ".join(worker_versions))
    notes = [f"- {m.name}: {m.note}" for m in report.models if m.note]
    if notes:
        lines += ["", "Notes:", *notes]
    failures = not_measured(report)
    if failures:
        lines += ["", "Not measured:", *[f"- {f}" for f in failures]]
    return "\n".join(lines) + "\n"


def write_chart(report: BenchReport, path: Path) -> Path:
    """PNG: fastseg end-to-end latency vs published mIoU (left), stacked pre/infer/post (right).

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``bench`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("The bench chart needs matplotlib: pip install 'fastseg-ort[bench]'.") from exc
    models = [m for m in report.models if m.stage("fastseg", "e2e") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(4.5, 0.35 * len(models) + 2)))
    for m in models:
        miou = m.published.get("miou")
        if miou is None:
            continue
        e2e = m.stage("fastseg", "e2e")
        e2e_ms = e2e.median if e2e is not None else 0.0
        ax1.scatter(e2e_ms, float(miou), marker="o", color="#dd8452", label="fastseg")
        ax1.annotate(m.name, (e2e_ms, float(miou)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        px = m.backends.get("paddlex")
        px_e2e = px.stats.get("e2e") if px is not None and px.status == "ok" else None
        if px_e2e is not None:
            ax1.scatter(px_e2e.median, float(miou), marker="x", color="#4c72b0", label="PaddleX predictor")
            ax1.plot([e2e_ms, px_e2e.median], [float(miou)] * 2, color="#999999", linewidth=0.6)
    handles, labels = ax1.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax1.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax1.set_xscale("log")
    ax1.set_xlabel("end-to-end latency, ms (log scale; this machine, file in, label map out)")
    ax1.set_ylabel("published mIoU % (PaddleX)")
    ax1.set_title("Latency vs published accuracy")
    ax1.grid(True, which="both", alpha=0.3)
    names = [m.name for m in models]
    left = np.zeros(len(models))
    for stage, colour in (("pre", "#4c72b0"), ("infer", "#dd8452"), ("post", "#55a868")):
        vals = np.array([(m.stage("fastseg", stage) or Stats(0, 0, 0, 0, 0)).median for m in models])
        ax2.barh(names, vals, left=left, color=colour, label=stage)
        left += vals
    ax2.invert_yaxis()
    ax2.set_xlabel("median ms per stage")
    ax2.set_title("fastseg: pre / infer / post")
    ax2.legend(loc="lower right")
    h, w = report.config["size"]
    weights = {m.weights for m in models}
    fig.suptitle(f"fastseg bench, {w}x{h}, {report.config['threads']} threads, {report.machine.get('cpu')}"
                 + (f" ({', '.join(sorted(weights))})" if weights else ""), fontsize=10)
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, png.getvalue())  # atomic, and 0644 like every other output
    return path


def write_outputs(report: BenchReport, out_dir: Path, *, chart: bool = True) -> dict[str, Path]:
    """Write bench.json (raw samples included), bench.md and bench.png into ``out_dir``."""
    from fastseg.files import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md"}
    write_text_atomic(paths["json"], json.dumps(report.to_json(), indent=1) + "\n")
    write_text_atomic(paths["markdown"], render_markdown(report))
    if chart:
        paths["png"] = write_chart(report, out_dir / "bench.png")
    return paths
