"""Shared fixtures. Real material lives in ../shared/data (never copied here)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: it holds the real PP-HumanSeg model and real images."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test material absent: {SHARED_DATA} (see README, 'Real test material')")
    return SHARED_DATA
