"""pytest-benchmark suite (not in the default test run: pyproject's testpaths is tests/).

    pytest benchmarks --benchmark-enable --benchmark-save=NAME        # record a baseline
    pytest benchmarks --benchmark-enable --benchmark-compare=NNNN     # compare with one
    pytest benchmarks -q --benchmark-disable -x                       # CI smoke: tiny inputs, seconds

With benchmarks disabled every test runs once on tiny inputs, so the suite cannot rot.
End-to-end per family needs reference builds (minutes each, then cached): --families all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastseg.slide import parse_hw

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--families",
        default="",
        help="'all' or comma-separated zoo names for the end-to-end benchmarks (builds reference models)",
    )
    parser.addoption("--bench-size", default="512x1024", help="HxW of the benchmark inputs (enabled runs)")


@pytest.fixture(scope="session")
def bench_size(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The input size: --bench-size when benchmarking, 32x64 when benchmarks are disabled (smoke)."""
    config = request.config  # pyproject's addopts disables benchmarks; --benchmark-enable wins, as in pytest-benchmark
    if config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"):
        return (32, 64)
    return parse_hw(str(request.config.getoption("--bench-size")), name="--bench-size")
