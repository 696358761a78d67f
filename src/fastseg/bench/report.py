"""Benchmark data: latency statistics, the run's configuration and its results, and their JSON.

``BenchReport.to_json`` writes bench.json (raw samples included); ``report_from_json`` reads it back,
so a report can be re-rendered without re-running. Standard library and numpy only (see __init__).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np


BACKENDS: tuple[str, ...] = ("fastseg", "paddle", "paddlex", "paddlex-bf16")
AGAINST: tuple[str, ...] = ("paddle", "paddlex", "paddlex-bf16")
"""The peers: Paddle Inference (MKLDNN, inference only), PaddleX's predictor end to end in its
own default CPU run mode per model (``mkldnn``, or ``paddle`` for models on its oneDNN blocklist:
fastseg.bench.paddlex_mode) and asked for ``mkldnn_bf16`` (its best CPU mode on bf16 hardware;
PaddleX runs blocklisted models in ``paddle`` instead; Paddle computes fp32 on a CPU without
AVX-512). Each row records the mode that ran."""
STAGES: tuple[str, ...] = ("pre", "infer", "post", "e2e")


# 2 cores x 2 FMA units x 8 fp32 lanes (AVX2) x 2 FLOPs per FMA x ~2.45 GHz.
DEFAULT_PEAK_GFLOPS = 157.0
NOT_INSTALLED = "not installed"
REFERENCE_WEIGHTS_LABEL = "reference weights"  # the Weights column (provenance: fastseg.reference.REFERENCE_WEIGHTS)
OFFICIAL_WEIGHTS_LABEL = "official weights"


@dataclass(frozen=True)
class Stats:
    """Summary of latency samples in milliseconds."""

    median: float
    p90: float
    min: float
    mean: float
    n: int


def summarize(samples_ms: Sequence[float]) -> Stats:
    """Median, 90th percentile (linear interpolation, numpy's default), min and mean.

    Raises:
        ValueError: on an empty sample list (a bug in the caller, never user input).
    """
    if len(samples_ms) == 0:
        raise ValueError("no samples to summarise")
    arr = np.asarray(samples_ms, dtype=np.float64)
    return Stats(
        median=float(np.median(arr)),
        p90=float(np.percentile(arr, 90)),
        min=float(arr.min()),
        mean=float(arr.mean()),
        n=int(arr.size),
    )


SYNTHETIC_IMAGE = "synthetic (OpenCV PNG)"
"""The bench image when no ``--image`` is given (and in reports written before it was recorded)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``size`` is (height, width) of the image fed to every backend.

    ``engine`` is what the fastseg worker asks ``Segmenter`` for ("ort", "openvino", "auto",
    ...); the engine that actually ran is recorded per row in ``BackendResult.engine``.
    """

    size: tuple[int, int] = (1024, 2048)
    batch: int = 1
    runs: int = 10
    warmup: int = 2
    threads: int = 2
    device: str = "cpu"
    engine: str = "ort"
    against: tuple[str, ...] = ()
    peak_gflops: float = DEFAULT_PEAK_GFLOPS
    peak_source: str = "given"
    precision: str | None = None  # what the rows run (fp32, int8); None: fp32 for ort/openvino, per row for auto
    paddle_python: str | None = None
    paddlex_python: str | None = None
    ort_options: Mapping[str, Any] = field(default_factory=dict)
    worker_timeout_s: float = 3600.0
    slide: str | None = None
    slide_stride: str | None = None
    protocol: str = "paddlex"
    image: str = SYNTHETIC_IMAGE
    """What every backend decodes (``models.write_bench_image``): ``pre`` depends on the file's encoding."""


@dataclass(frozen=True)
class BackendResult:
    """One backend on one model. ``status`` is "ok", "not installed", "not applicable" or "failed".

    ``engine``: the inference engine the fastseg worker reports it ran (None for Paddle/PaddleX).
    ``run_mode``: PaddleX's run mode that ran ("paddle", "mkldnn", "paddle (mkldnn_bf16 refused: ...)",
    "mkldnn_bf16 (ran fp32: ...)" where Paddle turns bf16 off on this CPU).
    """

    backend: str
    status: str
    stats: Mapping[str, Stats] = field(default_factory=dict)
    samples_ms: Mapping[str, list[float]] = field(default_factory=dict)
    images_per_s: float | None = None
    peak_rss_mb: float | None = None
    load_ms: float | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    detail: str = ""
    engine: str | None = None
    run_mode: str | None = None


@dataclass(frozen=True)
class ModelResult:
    """All backends on one model, plus its cost and PaddleX's published figures."""

    name: str
    weights: str
    gflops: float | None
    backends: Mapping[str, BackendResult]
    published: Mapping[str, Any]
    note: str = ""

    def stage(self, backend: str, stage: str) -> Stats | None:
        res = self.backends.get(backend)
        return None if res is None or res.status != "ok" else res.stats.get(stage)

    def engine(self) -> str | None:
        """The engine fastseg's worker reported it ran, or None when it did not run."""
        res = self.backends.get("fastseg")
        return None if res is None else res.engine

    def achieved_gflops(self) -> float | None:
        """GFLOP/s of fastseg's inference stage on the engine that ran it (per image; batch divided out)."""
        infer = self.stage("fastseg", "infer")
        if self.gflops is None or infer is None or infer.median <= 0:
            return None
        batch = int(self.published.get("batch", 1))
        return self.gflops * batch / (infer.median / 1000.0)

    def ratio(self, against: str) -> float | str | None:
        """fastseg / other: inference medians against Paddle, end to end against PaddleX.

        A string ("not installed", "failed", ...) when the other side has no number.
        """
        stage = "infer" if against == "paddle" else "e2e"
        other = self.backends.get(against)
        if other is None:
            return None
        if other.status != "ok":
            return other.status
        mine, theirs = self.stage("fastseg", stage), other.stats.get(stage)
        if mine is None or theirs is None or theirs.median <= 0:
            return None
        return mine.median / theirs.median


@dataclass(frozen=True)
class BenchReport:
    """A whole run: machine, versions, configuration and one ModelResult per model."""

    machine: Mapping[str, Any]
    versions: Mapping[str, str]
    config: Mapping[str, Any]
    models: list[ModelResult]
    published_conditions: Mapping[str, str]

    def with_peak_at_least_rows(self) -> BenchReport:
        """This report with its peak raised to the fastest row's GFLOP/s when a row beats it.

        A theoretical peak takes a VM's nominal clock (``cpu MHz``), which turbo exceeds: a bf16
        Deeplabv3-R101 ran at 107% of it on an AMD EPYC (Zen 5) reporting 2.6 GHz. The clock that
        row proves is a floor on the real one, so no "% peak" is ever above 100%, and the source
        says so.
        """
        peak = float(self.config["peak_gflops"])
        best, name = max(((m.achieved_gflops() or 0.0, m.name) for m in self.models), default=(0.0, ""))
        if best <= peak:
            return self
        source = (f"{self.config.get('peak_source', 'given')}; raised to {best:.0f} GFLOP/s, what {name}'s row proves "
                  f"(the nominal clock understates this CPU's turbo)")
        return replace(self, config={**self.config, "peak_gflops": best, "peak_source": source})

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for m, mres in zip(out["models"], self.models):
            m["achieved_gflops_per_s"] = mres.achieved_gflops()
            achieved = mres.achieved_gflops()
            m["peak_fraction"] = None if achieved is None else achieved / float(self.config["peak_gflops"])
            m["ratios"] = {a: mres.ratio(a) for a in AGAINST}
        return out


def report_from_json(raw: Mapping[str, Any]) -> BenchReport:
    """Rebuild a ``BenchReport`` from ``bench.json`` (to re-render tables/charts without re-running)."""
    models = []
    for m in raw["models"]:
        backends = {}
        for name, b in m["backends"].items():
            fields = {k: v for k, v in b.items() if k in BackendResult.__dataclass_fields__}
            fields["stats"] = {k: Stats(**v) for k, v in b.get("stats", {}).items()}
            backends[name] = BackendResult(**fields)
        models.append(
            ModelResult(name=m["name"], weights=m["weights"], gflops=m["gflops"], backends=backends,
                        published=m["published"], note=m.get("note", ""))
        )
    return BenchReport(machine=raw["machine"], versions=raw["versions"], config=raw["config"], models=models,
                       published_conditions=raw.get("published_conditions", {}))
