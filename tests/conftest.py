"""Shared fixtures. Real material lives in ../shared/data (never copied here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _no_files_outside_the_test_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing a test does lands in the user's home or stays in /tmp: fastseg's cache
    ($FASTSEG_HOME: converted models, logits variants, banded heads) goes to pytest's tmp dir,
    and Ray's session directories ($RAY_TMPDIR) to a short /tmp folder (its socket paths must
    stay under 107 bytes) removed at the end. A test may still set its own FASTSEG_HOME."""
    saved = {k: os.environ.get(k) for k in ("FASTSEG_HOME", "RAY_TMPDIR")}
    ray_tmp = tempfile.mkdtemp(prefix="fsray")
    os.environ["FASTSEG_HOME"] = str(tmp_path_factory.mktemp("fastseg-home"))
    os.environ["RAY_TMPDIR"] = ray_tmp
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: it holds the real PP-HumanSeg model and real images."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test material absent: {SHARED_DATA} (see README, 'Real test material')")
    return SHARED_DATA


@pytest.fixture(scope="session")
def reference_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder caching reference tarballs across test runs (pytest's cache dir); with the cache
    plugin off (``-p no:cacheprovider``) this run's temp dir, so the builds are not kept."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return tmp_path_factory.mktemp("reference-models")
    return Path(cache.mkdir("reference-models"))


@pytest.fixture(scope="session")
def reference_tarball(reference_cache: Path) -> Callable[..., Path]:
    """Factory: ``reference_tarball(name, legacy=False)`` -> a cached ``<name>_infer.tar``.

    Built once by converters/reference_models.py (random weights, PaddleX-identical export)
    and reused by every test and later runs; needs paddlepaddle + paddleseg, else skips.
    """
    pytest.importorskip("paddle", reason="reference models need paddlepaddle (the [convert] extra)")
    pytest.importorskip("paddleseg", reason="reference models need paddleseg (pip install --no-deps)")
    from converters.reference_models import ensure_reference

    def get(name: str, *, legacy: bool = False) -> Path:
        return ensure_reference(name, reference_cache, legacy=legacy)

    return get


@pytest.fixture(scope="session")
def humanseg_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real PP-HumanSegV2-Lite converted once per session (needs the [convert] extra)."""
    pytest.importorskip("paddle", reason="converting PP-HumanSegV2-Lite needs paddlepaddle (the [convert] extra)")
    from fastseg.convert import convert_model

    out = tmp_path_factory.mktemp("humanseg") / "pp_humansegv2_lite"
    convert_model(shared_data / "models" / "pp_humansegv2_lite_portrait", out)
    return out
