"""kill -9 at each moment of ``fastseg quantize`` and ``fastseg tune``: the output is the whole old
model or the whole new one, ONNX Runtime's own temp files (``ort.quant.*``, ``pre.quant.*``) sit
in fastseg's temp root rather than loose in $TMPDIR, and the next run leaves no temporary file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny_models import colour_model_dir, photo_dir

import fastseg
from fastseg.tempdirs import KILL_POINT_ENV

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL points and renameat2 are Linux"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("ml_dtypes") is None, reason="int8 needs the [quantize] extra"),
]

SRC = str(Path(fastseg.__file__).resolve().parents[1])
QUANTIZE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fastseg.precision.quantize import quantize_model

    model, calib, out, tag = (Path(a) for a in sys.argv[1:5])
    quantize_model(model, calib, out, min_agreement=0, augment=False, force=True, register=False)
    (out / "tag").write_text(str(tag))  # which run wrote it (beside a whole model dir)
    """
)


def _run(script: Path, args: list[str], tmp: Path, kill_at: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "TMPDIR": str(tmp)}
    env.pop(KILL_POINT_ENV, None)
    if kill_at:
        env[KILL_POINT_ENV] = kill_at
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, timeout=120).returncode


def _leftovers(tmp: Path) -> list[str]:
    """Every entry under $TMPDIR, fastseg's root expanded one level (ORT's dirs would show at the top)."""
    names: list[str] = []
    for entry in sorted(tmp.iterdir()):
        names.append(entry.name)
        if entry.name.startswith("fastseg-"):
            names += [f"{entry.name}/{sub.name}" for sub in sorted(entry.iterdir())]
    return names


@pytest.mark.parametrize("kill_at", ["quant-calibrating", "staged", "swapped"])
def test_kill_9_during_quantize_leaves_a_whole_model_and_the_next_run_no_temp_file(tmp_path: Path, kill_at: str) -> None:
    model = colour_model_dir(tmp_path / "fp32")
    calib = photo_dir(tmp_path / "calib", 3)
    work, tmp = tmp_path / "models", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    script = tmp_path / "quantize.py"
    script.write_text(QUANTIZE, encoding="utf-8")
    out = work / "int8"
    args = [str(model), str(calib), str(out)]
    assert _run(script, [*args, "old"], tmp) == 0 and (out / "tag").read_text() == "old"
    assert _run(script, [*args, "new"], tmp, kill_at=kill_at) == -9
    # the output is whole: the old model until the swap, the new one (not yet tagged) after it
    assert sorted(p.name for p in out.iterdir()) == (["fastseg.json", "model.onnx", "tag"] if kill_at != "swapped" else ["fastseg.json", "model.onnx"])
    assert json.loads((out / "fastseg.json").read_text())["precision"] == "int8"
    left = _leftovers(tmp)
    if kill_at == "quant-calibrating":  # ORT's scratch is inside fastseg's, named by the killed pid
        quant = [n for n in left if n.startswith(f"fastseg-{os.getuid()}/quant-")]
        assert len(quant) == 1 and any(p.name.startswith("ort.quant.") for p in (tmp / quant[0]).iterdir())
    assert not [n for n in left if n.startswith(("ort.quant.", "pre.quant.", "tmp"))]
    assert _run(script, [*args, "next"], tmp) == 0 and (out / "tag").read_text() == "next"
    assert _leftovers(tmp) == [f"fastseg-{os.getuid()}"]  # the next run swept what the killed one left
    assert sorted(p.name for p in work.iterdir()) == ["int8"]
