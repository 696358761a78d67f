"""fastseg.head: the banded Resize->ArgMax head gives exactly the graph's labels, and any tail
it cannot reproduce runs the graph's own head."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from fastseg.errors import InputError
from fastseg.head import TailResize, head_cache_dir, prepare_head, resize_argmax
from fastseg.head import fused as fused_module
from fastseg.head.fused import row_filler
from fastseg.head.banded import _CellPlan
from fastseg.head.interp import linear_axis, size_scale
from fastseg.segmenter import Segmenter
from head_models import tail_model, tail_model_dir

SHAPES = [(1, 3, 37, 53), (2, 3, 64, 96), (1, 3, 5, 131)]


def _session(path: Path | bytes) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), so, providers=["CPUExecutionProvider"])


def _graph_vs_banded(model: Path, home: Path, shapes: list[tuple[int, int, int, int]], **head_kw: Any) -> None:
    head = prepare_head(model, head="banded", home=home, **head_kw)
    assert head.banded and head.model_path != model
    full, body = _session(model), _session(head.model_path)
    rng = np.random.default_rng(1)
    for shape in shapes:
        x = (rng.standard_normal(shape) * 2).astype(np.float32)
        want = full.run(None, {"x": x})[0]
        got = head.finish(body.run(None, {"x": x})[0], x.shape)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


VARIANTS = {
    "half_pixel": {},
    "pytorch_half_pixel": {"coordinate_mode": "pytorch_half_pixel"},
    "align_corners": {"coordinate_mode": "align_corners"},
    "asymmetric": {"coordinate_mode": "asymmetric"},
    "scales": {"size_from": "scales", "stride": 3},
    "cast_int32": {"cast": TensorProto.INT32},
    "keepdims_last_index": {"keepdims": 1, "select_last_index": 1},
    "nearest": {"mode": "nearest", "coordinate_mode": "asymmetric"},
    "nearest_half_pixel": {"mode": "nearest"},
    "identity_between": {"between": "Identity"},
    "size_casts": {"size_casts": True},
    "qdq_input": {"qdq_input": True},  # an int8 QDQ graph: Shape reads the dequantized input
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_banded_head_equals_graph(variant: str, tmp_path: Path) -> None:
    model = tail_model(tmp_path / "m.onnx", **VARIANTS[variant])
    _graph_vs_banded(model, tmp_path / "home", SHAPES)


def test_band_height_and_threads_do_not_change_labels(tmp_path: Path) -> None:
    model = tail_model(tmp_path / "m.onnx", classes=64)
    for rows, threads in ((1, 3), (7, 2), (1000, 1)):
        _graph_vs_banded(model, tmp_path / "home", [(1, 3, 45, 77)], band_rows=rows, threads=threads)


def _resize_argmax_graph(mode: str, coord: str, select_last: int = 0) -> Any:
    """ORT's own Resize -> ArgMax on given logits, the reference for resize_argmax."""
    logits = helper.make_tensor_value_info("L", TensorProto.FLOAT, ["N", "C", "h", "w"])
    sizes = helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])
    out = helper.make_tensor_value_info("A", TensorProto.INT64, None)
    nodes = [
        helper.make_node("Resize", ["L", "", "", "sizes"], ["R"], mode=mode, coordinate_transformation_mode=coord),
        helper.make_node("ArgMax", ["R"], ["A"], axis=1, keepdims=0, select_last_index=select_last),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [logits, sizes], [out]), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _session(model.SerializeToString())


def _smooth_logits(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    """Low-frequency class fields (like a trained model's): most cells have one clear winner."""
    coarse = rng.standard_normal((1, c, h // 8 + 2, w // 8 + 2)).astype(np.float32) * 4
    ys = np.linspace(0, coarse.shape[2] - 1.001, h)
    xs = np.linspace(0, coarse.shape[3] - 1.001, w)
    rows = coarse[:, :, ys.astype(int)] * (1 - (ys % 1))[:, None] + coarse[:, :, ys.astype(int) + 1] * (ys % 1)[:, None]
    smooth = rows[..., xs.astype(int)] * (1 - xs % 1) + rows[..., xs.astype(int) + 1] * (xs % 1)
    winner = smooth.argmax(axis=1)  # regions with one confident class, contested only at borders
    smooth += 10 * (np.arange(c)[None, :, None, None] == winner[:, None])
    return np.ascontiguousarray(smooth, dtype=np.float32)


def _wait_for_the_compiled_pass() -> None:
    """A Segmenter built by an earlier test starts numba's load on a thread; until it is done
    resize_argmax answers with the numpy paths (the same labels), so a test of the compiled
    passes waits for it (in a fresh clone that load compiles the kernels: seconds)."""
    if fused_module.warm_up.cache_info().currsize:
        fused_module.warm_up().join()
    assert fused_module.ready_row_filler() is not None


def _take_path(use_fused: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``resize_argmax`` take ``use_fused``'s path: the compiled pass (loaded first), the
    compiled candidate pass (forced for any logits), or numpy's (the caller passes use_fused=False)."""
    if use_fused != "numpy":
        _wait_for_the_compiled_pass()
    if use_fused == "compiled_candidates":
        monkeypatch.setattr(fused_module, "CANDIDATES_MIN_CLASSES", 1)
        monkeypatch.setattr(fused_module, "CANDIDATE_SHARE_MAX", 1.0)


@pytest.mark.parametrize("use_fused", ["compiled", "compiled_candidates", "numpy"])
@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "pytorch_half_pixel"])
def test_resize_argmax_exact_on_smooth_noisy_and_tied_logits(coord: str, use_fused: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT's labels, from every path: the compiled pass over every class, the compiled pass
    over each span's candidate classes (chosen where few classes can win; forced here),
    and numpy's cell and dense paths."""
    _take_path(use_fused, monkeypatch)
    rng = np.random.default_rng(0)
    graph, graph_last = _resize_argmax_graph("linear", coord), _resize_argmax_graph("linear", coord, 1)
    cases = {
        "smooth": _smooth_logits(rng, 32, 32, 48),  # mostly the cell path
        "noise": rng.standard_normal((2, 48, 16, 20)).astype(np.float32),  # mostly the dense path
        "ties": rng.integers(0, 3, (1, 32, 12, 16)).astype(np.float32),  # exact ties everywhere
        "constant": np.zeros((1, 7, 5, 6), np.float32),
    }
    for name, logits in cases.items():
        n, c, h, w = logits.shape
        for out_hw in ((8 * h, 8 * w), (3 * h + 1, 5 * w - 3), (h, w), (h // 2 + 1, w // 3 + 1)):
            feed = {"L": logits, "sizes": np.array([n, c, *out_hw], np.int64)}
            for last, sess in ((False, graph), (True, graph_last)):
                spec = TailResize("linear", coord, select_last_index=last)
                got = resize_argmax(logits, out_hw, spec, threads=2, use_fused=use_fused != "numpy")
                np.testing.assert_array_equal(got, sess.run(None, feed)[0], err_msg=f"{name} {out_hw} last={last}")


@pytest.mark.parametrize("use_fused", ["compiled", "compiled_candidates", "numpy"])
def test_labels_are_written_in_the_graphs_int32_directly(use_fused: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PaddleX's graphs cast ArgMax to int32: the head writes int32 labels itself (no int64
    map and converted copy of it), equal to the int64 ones, on every path, select_last too."""
    _take_path(use_fused, monkeypatch)
    rng = np.random.default_rng(11)
    for logits in (_smooth_logits(rng, 24, 12, 20), rng.integers(0, 3, (2, 6, 9, 7)).astype(np.float32)):
        for last in (False, True):
            spec = TailResize("linear", "half_pixel", select_last_index=last)
            out_hw = (8 * logits.shape[2], 8 * logits.shape[3])
            wide = resize_argmax(logits, out_hw, spec, threads=2, use_fused=use_fused != "numpy")
            narrow = resize_argmax(logits, out_hw, spec, threads=2, use_fused=use_fused != "numpy", dtype=np.int32)
            assert wide.dtype == np.int64 and narrow.dtype == np.int32
            np.testing.assert_array_equal(narrow, wide)


def test_the_compiled_pass_is_installed_and_matches_numpy_on_a_street_sized_tail() -> None:
    """numba is a dependency, so the compiled pass is what runs; on PP-LiteSeg-like random
    logits (19 classes, 1/8 scale, near-tied everywhere) it gives numpy's labels exactly."""
    assert row_filler() is not None
    logits = np.random.default_rng(3).standard_normal((1, 19, 32, 64)).astype(np.float32)
    spec = TailResize("linear", "half_pixel")
    compiled = resize_argmax(logits, (256, 512), spec, threads=2)
    np.testing.assert_array_equal(compiled, resize_argmax(logits, (256, 512), spec, threads=2, use_fused=False))


@pytest.mark.parametrize("classes", [19, 150])
def test_the_pass_is_chosen_from_the_logits_and_both_give_numpys_labels(classes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Smooth class fields (a trained model's: one or two classes can win per cell) take the
    candidate pass at ADE20K's 150 classes, per-pixel noise (every class near the top
    everywhere) and exact ties the every-class pass; and each pass, forced, gives the numpy
    paths' labels at 19 and 150 classes, first index on exact ties included."""
    from fastseg.head import _fused_kernels as kernels

    _wait_for_the_compiled_pass()
    ran: list[str] = []
    for name in ("fill", "fill_candidates"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _k=kernel, _n=name: ran.append(_n) or _k(*a))
    rng = np.random.default_rng(5)
    spec = TailResize("linear", "half_pixel")
    cases = {"smooth": _smooth_logits(rng, classes, 24, 40), "noise": rng.standard_normal((1, classes, 24, 40)).astype(np.float32),
             "ties": rng.integers(0, 2, (1, classes, 24, 40)).astype(np.float32)}
    for name, logits in cases.items():
        want = resize_argmax(logits, (192, 320), spec, threads=2, use_fused=False)
        for forced in (None, 0.0, 1.0):  # the choice, every class, candidates
            if forced is not None:
                monkeypatch.setattr(fused_module, "CANDIDATE_SHARE_MAX", forced)
            ran.clear()
            np.testing.assert_array_equal(resize_argmax(logits, (192, 320), spec, threads=2), want, err_msg=f"{name} {forced}")
            chosen = {None: "fill_candidates" if name == "smooth" else "fill", 0.0: "fill", 1.0: "fill_candidates"}[forced]
            if forced is not None or name != "smooth" or classes == 150:  # 19 smooth classes here: share 0.26, near the line
                assert set(ran) == {chosen}, (name, forced, ran)
        monkeypatch.setattr(fused_module, "CANDIDATE_SHARE_MAX", 0.25)


def test_without_a_writable_cache_the_pass_compiles_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba raises at decoration when it has nowhere to cache (read-only install and HOME):
    the kernels are then decorated without their disk cache, and still give numpy's labels."""
    import importlib

    import numba

    from fastseg.head import _fused_kernels

    real_njit = numba.njit

    def no_locator(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'fill': no locator available for file '_fused_kernels.py'")
        return real_njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", no_locator)
    try:
        importlib.reload(_fused_kernels)
        assert not _fused_kernels.fill._cache.__class__.__name__.endswith("FunctionCache")  # NullCache
        logits = np.random.default_rng(5).standard_normal((1, 6, 9, 11)).astype(np.float32)
        spec = TailResize("linear", "half_pixel")
        got = resize_argmax(logits, (36, 44), spec)
        np.testing.assert_array_equal(got, resize_argmax(logits, (36, 44), spec, use_fused=False))
    finally:
        monkeypatch.undo()
        importlib.reload(_fused_kernels)


_CACHE_PROBE = """
import numpy as np
from fastseg.head import TailResize, resize_argmax
from fastseg.head import _fused_kernels as k
resize_argmax(np.ones((1, 3, 4, 5), np.float32), (16, 20), TailResize("linear", "half_pixel"))
print(len(k.fill.stats.cache_hits), len(k.fill.stats.cache_misses))
"""


def test_the_compiled_pass_is_loaded_from_numbas_cache_in_the_next_process(tmp_path: Path) -> None:
    """The second process finds the first one's machine code (no ~2.5 s compile per process)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [
        subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True, check=True).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == ["0", "1"]  # compiled and written
    assert runs[1] == ["1", "0"]  # loaded


def test_while_the_background_load_runs_the_numpy_paths_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Segmenter's first images do not wait for numba: until warm_up's thread is done,
    resize_argmax takes the numpy paths (same labels); direct calls use the compiled pass."""
    import threading

    from fastseg.head import fused

    assert fused.ready_row_filler() is row_filler()  # loaded, or no warm-up started: compiled
    release = threading.Event()
    loading = threading.Thread(target=release.wait, daemon=True)
    loading.start()
    monkeypatch.setattr(fused, "warm_up", functools.cache(lambda: loading))
    fused.warm_up()
    assert fused.ready_row_filler() is None
    logits = np.random.default_rng(6).standard_normal((1, 5, 6, 7)).astype(np.float32)
    spec = TailResize("linear", "half_pixel")
    np.testing.assert_array_equal(resize_argmax(logits, (24, 28), spec), resize_argmax(logits, (24, 28), spec, use_fused=False))
    release.set()
    loading.join()
    assert fused.ready_row_filler() is row_filler()


def test_a_head_prepared_without_the_compiled_pass_never_loads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compiled=False (one-shot runs): no background load starts, the numpy paths label, and
    the labels are the graph's."""
    import fastseg.head.banded as banded
    import fastseg.head.plan as plan

    def fail(*args: Any) -> None:
        raise AssertionError("the compiled pass was asked for")

    monkeypatch.setattr(plan, "warm_up", fail)
    monkeypatch.setattr(banded, "ready_row_filler", fail)
    _graph_vs_banded(tail_model(tmp_path / "m.onnx"), tmp_path / "home", SHAPES, compiled=False)


def test_non_finite_logits_take_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN/inf logit keeps the numpy paths (their exact per-pixel formula); the compiled
    pass, whose tie test needs a finite bound, is not called."""
    import fastseg.head.banded as banded

    called: list[int] = []
    real = row_filler()
    assert real is not None
    monkeypatch.setattr(banded, "ready_row_filler", lambda: lambda *a: called.append(1) or real(*a))
    logits = np.random.default_rng(4).standard_normal((1, 5, 6, 7)).astype(np.float32)
    resize_argmax(logits, (24, 28), TailResize("linear", "half_pixel"))
    assert called
    called.clear()
    logits[0, 2, 3, 3] = np.inf
    with np.errstate(invalid="ignore"):  # inf - inf in the numpy lerps (its exact formula then decides)
        want = resize_argmax(logits, (24, 28), TailResize("linear", "half_pixel"), use_fused=False)
        got = resize_argmax(logits, (24, 28), TailResize("linear", "half_pixel"))
    np.testing.assert_array_equal(got, want)
    assert not called


def test_both_paths_are_exercised() -> None:
    rng = np.random.default_rng(0)
    for logits, expect_cells in ((_smooth_logits(rng, 32, 32, 48)[0], True), (rng.standard_normal((48, 16, 20)).astype(np.float32), False)):
        c, h, w = logits.shape
        plan = _CellPlan.build(logits, linear_axis("half_pixel", 8 * h, h, size_scale(h, 8 * h)), linear_axis("half_pixel", 8 * w, w, size_scale(w, 8 * w)))
        assert ((plan.single >= 0).mean() > 0.5) == expect_cells
        assert (plan.single == -1).any()  # some cells with a few candidates


UNSUPPORTED = {
    "cubic": ({"mode": "cubic"}, "mode 'cubic'"),
    "antialias": ({"antialias": 1, "opset": 18}, "antialias"),
    "softmax_between": ({"between": "Softmax"}, "not Resize"),
}


@pytest.mark.parametrize("variant", sorted(UNSUPPORTED))
def test_unsupported_tail_runs_the_graph(variant: str, tmp_path: Path) -> None:
    kwargs, reason = UNSUPPORTED[variant]
    model = tail_model(tmp_path / "m.onnx", **kwargs)
    head = prepare_head(model, head="auto", home=tmp_path / "home")
    assert not head.banded and head.model_path == model and reason in head.reason
    x = np.random.default_rng(0).standard_normal((1, 3, 20, 28)).astype(np.float32)
    out = _session(model).run(None, {"x": x})[0]
    assert head.finish(out, x.shape) is out  # the graph's own output, untouched
    with pytest.raises(InputError, match="not possible"):
        prepare_head(model, head="banded", home=tmp_path / "home")


def test_auto_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    many = tail_model(tmp_path / "many.onnx", classes=40)
    few = tail_model(tmp_path / "few.onnx", classes=8)
    home = tmp_path / "home"
    assert prepare_head(many, home=home).banded
    assert prepare_head(few, home=home).banded  # the compiled pass beats the graph's tail from 2 classes
    assert prepare_head(few, home=home, num_classes=8).banded
    import fastseg.head.plan as plan

    monkeypatch.setattr(plan, "compiled_available", lambda: False)  # numpy only: banded from 32 classes
    assert prepare_head(few, home=home).reason == "auto: 8 classes < 32"
    assert prepare_head(few, home=home, num_classes=8).reason == "auto: 8 classes < 32"
    assert prepare_head(many, home=home).banded
    monkeypatch.undo()
    one_shot = prepare_head(many, home=home, compiled=False)  # numba not to be loaded: the numpy rule
    assert one_shot.banded and not one_shot.compiled
    assert prepare_head(few, home=home, compiled=False).reason == "auto: 8 classes < 32"
    assert not prepare_head(many, home=home, device="gpu").banded
    assert not prepare_head(many, home=home, device="openvino:GPU", engine="openvino").banded
    assert prepare_head(many, home=home, device="openvino", engine="openvino").banded  # OpenVINO's CPU target is the CPU
    assert prepare_head(many, home=home, engine="openvino").banded  # OpenVINO's body, ORT's tail semantics
    assert prepare_head(many, home=home, engine="bf16").banded
    assert prepare_head(many, home=home, engine="int8").banded  # the QDQ graph's float head
    assert prepare_head(many, home=home, engine="int8-bf16").banded
    assert "engine 'gpu' runs the graph's head" in prepare_head(many, home=home, engine="gpu").reason
    assert not prepare_head(many, home=home, output_kind="logits").banded
    assert not prepare_head(many, home=home, head="graph").banded
    with pytest.raises(InputError, match="head must be one of"):
        prepare_head(many, head="fast")


@pytest.mark.skipif(__import__("importlib").util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_with_the_banded_head_labels_as_its_graph(tmp_path: Path) -> None:
    model_dir = tail_model_dir(tmp_path / "model", classes=40)
    image = np.random.default_rng(3).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    with Segmenter(model_dir, engine="openvino", home=tmp_path / "home") as auto, \
            Segmenter(model_dir, engine="openvino", head="graph") as graph:
        assert (auto.head, graph.head, auto.engine_name) == ("banded", "graph", "openvino")
        np.testing.assert_array_equal(next(auto.predict(image)).pred, next(graph.predict(image)).pred)


def test_body_is_cached_outside_the_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "model"
    model = tail_model(model_dir / "model.onnx")
    home = tmp_path / "home"
    head = prepare_head(model, head="banded", home=home)
    cache = head_cache_dir(model, home)
    assert head.model_path == cache / "body.onnx" and cache.parent == home / "heads"
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.onnx"]
    record = json.loads((cache / "head.json").read_text())
    assert record["supported"] and record["tail"]["num_classes"] == 40
    import fastseg.head.tail as tail_module

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("analysed again despite the cache")

    monkeypatch.setattr(tail_module, "find_tail", fail)
    monkeypatch.setattr(tail_module, "cut_body", fail)
    assert prepare_head(model, head="banded", home=home).model_path == head.model_path


def test_segmenter_head_option(tmp_path: Path) -> None:
    model_dir = tail_model_dir(tmp_path / "model", classes=40)
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    with Segmenter(model_dir, home=tmp_path / "home") as auto, Segmenter(model_dir, head="graph") as graph:
        assert (auto.head, graph.head) == ("banded", "graph")
        want = next(graph.predict(image)).pred
        got = next(auto.predict(image)).pred
        batch = np.random.default_rng(1).integers(0, 256, (2, 33, 41, 3), dtype=np.uint8)  # what fastseg bench times
        np.testing.assert_array_equal(auto.infer(auto.prepare(list(batch), None)), graph.infer(graph.prepare(list(batch), None)))
    assert got.dtype == want.dtype and got.shape == (1, 45, 70)
    np.testing.assert_array_equal(got, want)


def test_without_onnx_a_cached_model_still_runs_banded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fastseg.errors import MissingDependencyError

    cached, fresh = tail_model(tmp_path / "a.onnx", size_casts=True), tail_model(tmp_path / "b.onnx", seed=1)
    home = tmp_path / "home"
    prepare_head(cached, head="banded", home=home)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    head = prepare_head(cached, head="auto", home=home)
    assert head.banded
    x = np.random.default_rng(0).standard_normal((1, 3, 29, 31)).astype(np.float32)
    np.testing.assert_array_equal(head.finish(_session(head.model_path).run(None, {"x": x})[0], x.shape),
                                  _session(cached).run(None, {"x": x})[0])
    assert "onnx is not installed" in prepare_head(fresh, head="auto", home=home).reason
    with pytest.raises(MissingDependencyError):
        prepare_head(fresh, head="banded", home=home)
