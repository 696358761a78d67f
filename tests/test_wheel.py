"""The installable package must work from a wheel, not only from the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0 and "No module named build" in proc.stderr:
        pytest.skip("the 'build' package is not installed (pip install -e '.[dev]')")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (whl,) = out.glob("fastseg_ort-*.whl")
    return whl


def test_wheel_ships_zoo_and_console_script(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastseg/model_zoo.yaml" in names
    assert "fastseg/py.typed" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fastseg = fastseg.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    assert not any(n.startswith(("tests/", "converters/", "benchmarks/")) for n in names)


def test_cli_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "FASTSEG_HOME": str(tmp_path / "home")}
    code = "import fastseg, sys; print(fastseg.__file__); from fastseg.cli import main; sys.argv=['fastseg']+sys.argv[1:]; main()"
    where = subprocess.run([sys.executable, "-c", "import fastseg; print(fastseg.__file__)"], env=env,
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(target))
    helped = subprocess.run([sys.executable, "-c", code, "--help"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0 and "models" in helped.stdout
    listed = subprocess.run([sys.executable, "-c", code, "models", "--format", "json"], env=env,
                            capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout.split("\n", 1)[1])
    assert len(rows) == 20


def test_wheel_ships_the_demo_image_and_says_where_reference_builds_come_from(wheel: Path, tmp_path: Path) -> None:
    """From a wheel: predict's default input is inside the package; --weights reference, which
    needs converters/ (not in the wheel), says how to get it in one line."""
    names = zipfile.ZipFile(wheel).namelist()
    assert {"fastseg/data/demo_street.jpg", "fastseg/data/NOTICE.md"} <= set(names)
    from tiny_models import colour_model_dir

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "FASTSEG_HOME": str(tmp_path / "home")}
    code = "import sys; from fastseg.cli import main; sys.argv=['fastseg']+sys.argv[1:]; main()"
    model = colour_model_dir(tmp_path / "tiny")
    ran = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(model), "--save_path", "out"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    res = json.loads((tmp_path / "out" / "demo_street_res.json").read_text())
    assert res["input_path"] == str(target / "fastseg" / "data" / "demo_street.jpg")
    ref = subprocess.run([sys.executable, "-c", code, "predict", "--weights", "reference"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert ref.returncode == 2 and ref.stderr.count("\n") <= 2, ref.stderr
    assert "converters/ is not in the wheel" in ref.stderr and "scripts/setup.sh" in ref.stderr
