"""Evaluate the little shape computation that feeds a Resize's ``sizes``/``scales``.

Exporters compute the output size from shapes: ``Concat(Slice(Shape(logits), 0, 2),
Slice(Shape(x), 2, 4))`` and the like. ``tail.size_program`` stores those nodes as JSON;
``evaluate_sizes`` runs them in numpy with the two shapes known at run time (the graph
input's and the logits'), with ONNX semantics for the handful of ops exporters use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

INPUT = "@input"  # the graph input (its shape only)
LOGITS = "@logits"  # the Resize's input (its shape only)

_Array = npt.NDArray[Any]


def _shape(ins: list[_Array], a: dict[str, Any]) -> _Array:
    shape = ins[0]
    rank = shape.size
    start = a.get("start", 0)
    end = a.get("end", rank)
    return shape[slice(start, end)]


def _slice(ins: list[_Array], a: dict[str, Any]) -> _Array:
    data = ins[0]
    starts, ends = ins[1].tolist(), ins[2].tolist()
    axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[ax] = slice(s, e, st)  # Python clamps like ONNX for these int64 bounds
    return data[tuple(index)]


def _squeeze(ins: list[_Array], a: dict[str, Any]) -> _Array:
    axes = ins[1].tolist() if len(ins) > 1 and ins[1] is not None else a.get("axes")
    return np.squeeze(ins[0], axis=None if axes is None else tuple(axes))


def _unsqueeze(ins: list[_Array], a: dict[str, Any]) -> _Array:
    axes = ins[1].tolist() if len(ins) > 1 and ins[1] is not None else a["axes"]
    out = ins[0]
    rank = out.ndim + len(axes)
    for ax in sorted(x % rank for x in axes):
        out = np.expand_dims(out, ax)
    return out


def _reshape(ins: list[_Array], a: dict[str, Any]) -> _Array:
    shape = [d if d != 0 or a.get("allowzero", 0) else ins[0].shape[i] for i, d in enumerate(ins[1].tolist())]
    return ins[0].reshape(shape)


# ONNX TensorProto element types -> numpy (those a shape computation can use); no onnx import,
# so a cached record runs without the onnx package.
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _cast(ins: list[_Array], a: dict[str, Any]) -> _Array:
    return ins[0].astype(ONNX_DTYPES[a["to"]])


def _div(ins: list[_Array], a: dict[str, Any]) -> _Array:
    x, y = ins
    if np.issubdtype(x.dtype, np.integer):
        return (np.trunc(x / y)).astype(x.dtype)  # C integer division
    return x / y


_OPS: dict[str, Callable[[list[_Array], dict[str, Any]], _Array]] = {
    "Shape": _shape,
    "Identity": lambda ins, a: ins[0],
    "Cast": _cast,
    "Slice": _slice,
    "Concat": lambda ins, a: np.concatenate([np.atleast_1d(i) for i in ins], axis=a.get("axis", 0)),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Reshape": _reshape,
    "Gather": lambda ins, a: np.take(ins[0], ins[1], axis=a.get("axis", 0)),
    "Add": lambda ins, a: ins[0] + ins[1],
    "Sub": lambda ins, a: ins[0] - ins[1],
    "Mul": lambda ins, a: ins[0] * ins[1],
    "Div": _div,
    "Floor": lambda ins, a: np.floor(ins[0]),
    "Ceil": lambda ins, a: np.ceil(ins[0]),
    "Max": lambda ins, a: np.maximum.reduce(ins),
    "Min": lambda ins, a: np.minimum.reduce(ins),
}
SIZE_OPS = frozenset(_OPS) | {"Constant"}


def decode(encoded: dict[str, Any]) -> _Array:
    """A constant stored by ``tail._encode``."""
    return np.array(encoded["data"], dtype=encoded["dtype"]).reshape(encoded["shape"])


def evaluate_sizes(
    program: dict[str, Any], input_shape: tuple[int, ...], logits_shape: tuple[int, ...]
) -> tuple[_Array | None, _Array | None]:
    """The Resize's (scales, sizes) for these shapes; an empty or absent one is None."""
    values: dict[str, _Array] = {k: decode(v) for k, v in program["constants"].items()}
    values[INPUT] = np.array(input_shape, dtype=np.int64)
    values[LOGITS] = np.array(logits_shape, dtype=np.int64)
    for node in program["nodes"]:
        ins = [values[i] if i else None for i in node["inputs"]]
        out = _OPS[node["op"]](ins, node["attrs"])  # type: ignore[arg-type]
        values[node["outputs"][0]] = np.asarray(out)

    def get(name: str) -> _Array | None:
        if not name:
            return None
        value = values[name]
        return None if value.size == 0 else value

    return get(program["scales"]), get(program["sizes"])
