"""Conversion under faults (issue 13, hardening 7), with a fake Paddle child instead of a real
conversion: SIGTERM, kill -9 and Ctrl-C of ``fastseg convert`` kill the child and leave no
scratch dir behind (kill -9: the next conversion sweeps it); a full disk is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import fastseg
from fastseg.convert import child
from fastseg.errors import ConversionError
from fastseg.tempdirs import sweep_stale

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals, /proc and PR_SET_PDEATHSIG are Linux")

FAKE_WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from fastseg.convert._worker import die_with_parent

    die_with_parent()
    req = json.loads(Path(sys.argv[1]).read_text())
    (Path(req["workdir"]) / "child.pid").write_text(str(os.getpid()))
    if req["cmd"] == "sleep":
        for _ in range(300):  # 30 s at most
            time.sleep(0.1)
    elif req["cmd"] == "enospc":
        for i in range(40):
            print(f"[paddle2onnx] log line {i}", file=sys.stderr)
        print("OSError: [Errno 28] No space left on device: '/tmp/x/raw.onnx'", file=sys.stderr)
        sys.exit(1)
    """
)

# A `fastseg convert --from SRC -o OUT` whose source-opening step runs the fake child for 30 s.
PARENT = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path

    # As at a terminal: a process started in the background of a non-interactive shell (how CI
    # runners may start the suite) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt; the test is about what Ctrl-C does, so give it Ctrl-C's handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from fastseg.cli import main
    from fastseg.convert import child, pipeline

    child.WORKER = Path(sys.argv[1])
    child.require_convert_deps = lambda: None
    pipeline.open_source = lambda source, scratch: child.run_paddle_worker("sleep", scratch / "work", what="fake step")
    main(["convert", "--from", sys.argv[2], "-o", sys.argv[3]])
    """
)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture()
def fake_worker(tmp_path: Path) -> Path:
    path = tmp_path / "fake_worker.py"
    path.write_text(FAKE_WORKER, encoding="utf-8")
    return path


@contextmanager
def converting(tmp_path: Path, fake_worker: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """Start the fake conversion with TMPDIR=tmp_path/tmp; yield (parent, child pid, fastseg's temp root)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    root = tmp / f"fastseg-{os.getuid()}"
    parent_script = tmp_path / "parent.py"
    parent_script.write_text(PARENT, encoding="utf-8")
    (tmp_path / "src").mkdir()
    src = str(Path(fastseg.__file__).resolve().parents[1])  # this checkout's fastseg, also in the child
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(parent_script), str(fake_worker), str(tmp_path / "src"), str(tmp_path / "out")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        started = _wait(lambda: any(root.glob("convert-*/work/child.pid")) or proc.poll() is not None, 30)
        assert started and proc.poll() is None, proc.communicate(timeout=5)
        child = int(next(root.glob("convert-*/work/child.pid")).read_text())
        assert _running(child)
        assert [p.name for p in tmp.iterdir()] == [root.name]  # every temp dir lives under the root
        yield proc, child, root
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_sigterm_kills_the_child_and_removes_the_scratch_dir(tmp_path: Path, fake_worker: Path) -> None:
    with converting(tmp_path, fake_worker) as (proc, child, tmp):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert _wait(lambda: not _running(child), 2)
        assert list(tmp.iterdir()) == []
        assert not (tmp_path / "out").exists()


def test_ctrl_c_says_aborted_and_cleans_up(tmp_path: Path, fake_worker: Path) -> None:
    with converting(tmp_path, fake_worker) as (proc, child, tmp):
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to its foreground group
        out = proc.communicate(timeout=10)[0].decode()
        assert proc.returncode == 1
        assert out.strip() == "Aborted!", out
        assert _wait(lambda: not _running(child), 2)
        assert list(tmp.iterdir()) == []


def test_kill_9_child_dies_and_next_convert_sweeps_the_scratch_dir(tmp_path: Path, fake_worker: Path) -> None:
    with converting(tmp_path, fake_worker) as (proc, child, tmp):
        proc.kill()
        proc.wait(timeout=10)
        assert _wait(lambda: not _running(child), 2), "the Paddle child outlived its parent"
        (left,) = tmp.glob("convert-*")
        live = tmp / f"convert-{os.getpid()}-0123456789ab"  # a running conversion's dir is kept
        live.mkdir()
        assert sweep_stale(tmp) == [left]
        assert sorted(p.name for p in tmp.iterdir()) == [live.name]


def test_full_disk_is_one_line(tmp_path: Path, fake_worker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child, "WORKER", fake_worker)
    monkeypatch.setenv("PYTHONPATH", str(Path(fastseg.__file__).resolve().parents[1]))
    with pytest.raises(ConversionError) as info:
        child.run_paddle_worker("enospc", tmp_path / "work", what="paddle2onnx")
    message = str(info.value)
    assert message == (
        f"paddle2onnx ran out of disk space in {tmp_path} (No space left on device): free some space, "
        "or point TMPDIR at a larger disk."
    )
