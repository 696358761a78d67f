"""RuntimeOptions' memory switches (memory pattern, CPU arena) reach ONNX Runtime and keep labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import random_conv_model

from fastseg.errors import DeviceError
from fastseg.engines.ort import RuntimeOptions, create_session, session_options


@pytest.fixture(scope="module")
def labels_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_conv_model(tmp_path_factory.mktemp("onnx") / "labels.onnx", kind="labels")


def test_defaults_turn_the_memory_pattern_off_and_keep_the_arena() -> None:
    so = session_options(RuntimeOptions())
    assert (so.enable_mem_pattern, so.enable_cpu_mem_arena) == (False, True)


def test_the_live_session_stops_spinning_when_its_run_returns(labels_onnx: Path) -> None:
    """Spinning intra-op threads took the cores from the next image's decoding (docs/engines.md)."""
    with create_session(labels_onnx, "cpu", RuntimeOptions(intra_op_threads=2)) as sess:
        live = sess._ort.get_session_options()
        assert live.get_session_config_entry("session.force_spinning_stop") == "1"


@pytest.mark.parametrize("pattern", [True, False])
@pytest.mark.parametrize("arena", [True, False])
def test_flags_reach_the_live_session(labels_onnx: Path, pattern: bool, arena: bool) -> None:
    opts = RuntimeOptions(intra_op_threads=1, enable_mem_pattern=pattern, enable_cpu_mem_arena=arena)
    batch = np.random.default_rng(0).standard_normal((2, 3, 24, 40)).astype(np.float32)
    with create_session(labels_onnx, "cpu", opts) as sess:
        live = sess._ort.get_session_options()
        assert (live.enable_mem_pattern, live.enable_cpu_mem_arena) == (pattern, arena)
        got = [sess.run(batch).copy() for _ in range(2)]  # 2nd run of a shape uses the pattern
    with create_session(labels_onnx, "cpu", RuntimeOptions(intra_op_threads=1)) as ref:
        expected = ref.run(batch)
    assert got[0].shape == (2, 24, 40)
    assert np.array_equal(got[0], expected) and np.array_equal(got[1], expected)


@pytest.mark.parametrize("field", ["enable_mem_pattern", "enable_cpu_mem_arena"])
@pytest.mark.parametrize("bad", ["false", 0, None])
def test_non_bool_is_rejected_naming_the_field(field: str, bad: object) -> None:
    with pytest.raises(DeviceError, match=f"{field} must be True or False"):
        RuntimeOptions(**{field: bad})  # type: ignore[arg-type]
