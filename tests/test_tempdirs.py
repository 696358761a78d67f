"""fastseg.tempdirs: one temp root, dirs named by owner pid, swept when their owner is gone (never
a live run's), and an output directory replaced crash-safely: a child process doing the replace
is SIGKILLed at each point of it, and the target is always the whole old or whole new model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny_models import colour_model_dir

import fastseg
from fastseg import tempdirs
from fastseg.tempdirs import KILL_POINT_ENV, ScratchDir, new_scratch_dir, staged_dir, sweep_stale, temp_root

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="flock, renameat2 and SIGKILL points are Linux")

SRC = str(Path(fastseg.__file__).resolve().parents[1])

# Replace argv[1] (a model dir) with a copy of the model in argv[2] whose fastseg.json says
# argv[3], through convert's own writer; argv[4] == "fallback" disables the atomic exchange.
REPLACER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from pathlib import Path

    import onnx
    from fastseg import tempdirs
    from fastseg.convert.target import write_atomically
    from fastseg.model_dir import read_meta

    if sys.argv[4] == "fallback":
        tempdirs._exchange = lambda a, b: False
    source = Path(sys.argv[2])
    meta = replace(read_meta(source), model_name=sys.argv[3])
    write_atomically(Path(sys.argv[1]), onnx.load(str(source / "model.onnx")), meta)
    """
)


@pytest.fixture()
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR (so the temp root) inside tmp_path, here and in children."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    return tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _replace(target: Path, source: Path, name: str, *, kill_at: str | None = None, fallback: bool = False) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    env.pop(KILL_POINT_ENV, None)
    if kill_at:
        env[KILL_POINT_ENV] = kill_at
    script = target.parent / "replacer.py"
    script.write_text(REPLACER, encoding="utf-8")
    args = [sys.executable, str(script), str(target), str(source), name, "fallback" if fallback else "exchange"]
    return subprocess.run(args, env=env, capture_output=True, timeout=60).returncode


def _model_name(target: Path) -> str:
    from fastseg.model_dir import read_meta

    assert sorted(p.name for p in target.iterdir()) == ["fastseg.json", "model.onnx"]
    return read_meta(target).model_name


def test_scratch_dir_lives_under_the_root_named_by_pid_and_is_removed(tmpdir_env: Path) -> None:
    root = temp_root()
    assert root == tmpdir_env / f"fastseg-{os.getuid()}" and root.stat().st_mode & 0o777 == 0o700
    with new_scratch_dir("convert") as path:
        assert path.parent == root and path.name.startswith(f"convert-{os.getpid()}-")
        (path / "f").write_bytes(b"x")
    assert not path.exists()
    with pytest.raises(RuntimeError), new_scratch_dir("convert") as path:
        raise RuntimeError("boom")
    assert list(root.iterdir()) == []


def test_sweep_removes_dead_owners_dirs_only(tmpdir_env: Path) -> None:
    root = temp_root()
    dead = root / f"model-{_dead_pid()}-0123456789ab"
    (dead / "sub").mkdir(parents=True)
    foreign = root / "notes-1-0123456789ab.txt"  # not a name fastseg makes a dir under
    foreign.write_text("x")
    live = ScratchDir(root, f"model-{os.getpid()}-ba9876543210")  # this live run's
    locked_dead = root / f"model-{_dead_pid()}-aaaaaaaaaaaa"  # dead pid, but its lock is held
    locked_dead.mkdir()
    holder = tempdirs._lock(locked_dead)
    try:
        assert sweep_stale() == [dead]
        assert sorted(p.name for p in root.iterdir()) == sorted([foreign.name, live.path.name, locked_dead.name])
    finally:
        os.close(holder)
        live.close()
    assert sweep_stale() == [locked_dead]


def test_temp_root_refuses_a_link(tmpdir_env: Path, tmp_path: Path) -> None:
    from fastseg.errors import FastSegError

    (tmp_path / "elsewhere").mkdir()
    (tmpdir_env / f"fastseg-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FastSegError, match="not a directory owned by this user; remove it or set TMPDIR"):
        temp_root()


def test_staged_dir_error_leaves_the_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(target) as new:
        (new / "a").write_text("new")
        raise RuntimeError("boom")
    assert (target / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_dir(target) as new:
        (new / "b").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert target.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    ("kill_at", "fallback", "expected"),
    [
        ("staged", False, "old"),  # new dir complete, not swapped yet
        ("swapped", False, "new"),  # swapped, the old one not yet removed
        ("staged", True, "old"),
        ("fallback-moved-old", True, "old"),  # no exchange: old moved aside, new not yet in place
    ],
)
def test_kill_9_during_replace_leaves_a_whole_model_and_the_next_run_sweeps(
    tmp_path: Path, kill_at: str, fallback: bool, expected: str
) -> None:
    source = colour_model_dir(tmp_path / "source")
    work = tmp_path / "models"
    work.mkdir()
    target = work / "out"
    assert _replace(target, source, "old") == 0 and _model_name(target) == "old"
    assert _replace(target, source, "new", kill_at=kill_at, fallback=fallback) == -9
    stages = [p for p in work.iterdir() if p.name.startswith(".fastseg-")]
    assert len(stages) == 1  # what the killed run left
    if target.exists():
        assert _model_name(target) == expected
    else:  # only in the fallback's gap: the old model waits, whole, in the stage dir
        assert (kill_at, expected) == ("fallback-moved-old", "old")
        assert _model_name(stages[0] / "old") == "old"
        assert sweep_stale(work) == stages  # what the next run does first
        assert _model_name(target) == "old"
    assert _replace(target, source, "next") == 0
    assert _model_name(target) == "next"
    assert sorted(p.name for p in work.iterdir()) == ["out", "replacer.py"]
