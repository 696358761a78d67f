"""Edits of a PIR ``inference.json`` program as plain JSON (no paddle import needed).

Two edits make every model convertible with dynamic H and W and with any head:

* ``make_adaptive_inputs_static``: paddle2onnx refuses adaptive average pooling on a dynamic
  input ("Adaptive only support static input shape"). Declaring only the pools' *input*
  values static lets it convert (to fixed-kernel AveragePool nodes that ``adaptive_pool.py``
  then replaces by exact dynamic subgraphs); every other shape stays computed at run time.
* ``strip_program_head``: removes the trailing argmax / cast / softmax so the program fetches the
  float logits [N, C, H, W]; the requested head is appended to the ONNX graph afterwards.

Program layout (PIR serialisation v3): ``program.regions[0].blocks[0].ops``, each op
``{"#": "<dialect>.<name>", "A": attrs, "I": [{"%": id}], "O": [{"%": id, "TT": type}]}``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from fastseg.errors import ConversionError

Program = dict[str, Any]

#: Ops after the logits that a head may consist of (PaddleX: argmax; PaddleSeg: softmax/argmax).
_HEAD_OPS = ("argmax", "cast", "softmax")


@dataclass(frozen=True)
class AdaptivePool:
    """One adaptive average pool: its ordinal among pool2d ops and its output size (kh, kw)."""

    ordinal: int
    output_hw: tuple[int, int]

    @property
    def onnx_output(self) -> str:
        """The tensor name paddle2onnx 2.x gives the pool's output (``p2o.pd_op.pool2d.<i>.0``)."""
        return f"p2o.pd_op.pool2d.{self.ordinal}.0"


@dataclass(frozen=True)
class HeadInfo:
    """What ``strip_program_head`` removed: op names in program order (e.g. ``("argmax",)``)."""

    removed: tuple[str, ...]

    @property
    def source_output(self) -> str:
        """The source model's own output kind: labels, probs or logits."""
        if "argmax" in self.removed:
            return "labels"
        if "softmax" in self.removed:
            return "probs"
        return "logits"


def ops_of(program: Program) -> list[dict[str, Any]]:
    try:
        ops: list[dict[str, Any]] = program["program"]["regions"][0]["blocks"][0]["ops"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ConversionError(f"Unsupported PIR program layout ({exc!r}); expected PIR serialisation v3.") from exc
    return ops


def op_name(op: dict[str, Any]) -> str:
    """``"1.pool2d"`` -> ``"pool2d"``."""
    return str(op.get("#", "")).split(".", 1)[-1]


def _attrs(op: dict[str, Any]) -> dict[str, Any]:
    return {a["N"]: a["AT"].get("D") for a in op.get("A", []) if isinstance(a, dict) and "N" in a}


def _outputs(op: dict[str, Any]) -> list[dict[str, Any]]:
    outs = op.get("O", [])
    if isinstance(outs, dict):
        outs = [outs]
    return [o for o in outs if isinstance(o, dict) and "%" in o]


def _inputs(op: dict[str, Any]) -> list[int]:
    return [int(i["%"]) for i in op.get("I", []) if isinstance(i, dict) and "%" in i]


def _value_types(ops: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(o["%"]): o for op in ops for o in _outputs(op)}


def _producers(ops: list[dict[str, Any]]) -> dict[int, int]:
    return {int(o["%"]): idx for idx, op in enumerate(ops) for o in _outputs(op)}


def has_op(program: Program, name: str) -> bool:
    return any(op_name(op) == name for op in ops_of(program))


def adaptive_pools(program: Program) -> list[AdaptivePool]:
    """Every adaptive *average* pool2d, with its ordinal among all pool2d ops."""
    pools: list[AdaptivePool] = []
    ordinal = 0
    for op in ops_of(program):
        if op_name(op) != "pool2d":
            continue
        a = _attrs(op)
        if a.get("adaptive") and a.get("pooling_type") == "avg" and not a.get("global_pooling"):
            dims = _outputs(op)[0]["TT"]["D"][1]
            if len(dims) != 4 or dims[2] < 1 or dims[3] < 1:
                raise ConversionError(f"Adaptive pool #{ordinal} has an unexpected output shape {dims}.")
            pools.append(AdaptivePool(ordinal=ordinal, output_hw=(int(dims[2]), int(dims[3]))))
        elif a.get("adaptive"):
            raise ConversionError(
                f"Adaptive {a.get('pooling_type')} pooling (pool2d #{ordinal}) is not supported by fastseg "
                "convert (only adaptive average pooling is rewritten); please report the model."
            )
        ordinal += 1
    return pools


def make_adaptive_inputs_static(program: Program) -> Program:
    """A copy where each adaptive pool's input value has static H and W.

    The size is 4 x lcm of the pools' output sizes so paddle2onnx finds an integer kernel; its
    value does not matter because those pools are replaced afterwards. Batch stays dynamic.
    """
    out = copy.deepcopy(program)
    ops = ops_of(out)
    types = _value_types(ops)
    per_value: dict[int, list[tuple[int, int]]] = {}
    for op in ops:
        if op_name(op) == "pool2d" and _attrs(op).get("adaptive"):
            dims = _outputs(op)[0]["TT"]["D"][1]
            per_value.setdefault(_inputs(op)[0], []).append((int(dims[2]), int(dims[3])))
    for value, sizes in per_value.items():
        if all(s == (1, 1) for s in sizes):
            continue  # paddle2onnx exports these as GlobalAveragePool, exact at any size
        dims = types[value]["TT"]["D"][1]
        lcm_h = math.lcm(*(s[0] for s in sizes))
        lcm_w = math.lcm(*(s[1] for s in sizes))
        dims[2], dims[3] = 4 * lcm_h, 4 * lcm_w
    return out


def strip_program_head(program: Program) -> tuple[Program, HeadInfo]:
    """A copy that fetches the float logits: trailing argmax/cast/softmax ops are removed.

    Raises:
        ConversionError: the program has no single fetch op.
    """
    out = copy.deepcopy(program)
    ops = ops_of(out)
    fetches = [op for op in ops if op_name(op) in ("fetch", "shadow_output")]
    if len(fetches) != 1:
        raise ConversionError(f"Expected one fetched output in the Paddle program, found {len(fetches)}.")
    fetch = fetches[0]
    producers = _producers(ops)
    value = _inputs(fetch)[0]
    removed: list[int] = []
    while value in producers and op_name(ops[producers[value]]) in _HEAD_OPS:
        idx = producers[value]
        removed.append(idx)
        value = _inputs(ops[idx])[0]
    if not removed:
        return out, HeadInfo(removed=())
    fetch["I"][0]["%"] = value
    types = _value_types(ops)
    for o in _outputs(fetch):
        o["TT"] = copy.deepcopy(types[value]["TT"])
    drop = set(removed)
    # constants (axis of argmax) that only the removed ops used
    uses: dict[int, int] = {}
    for idx, op in enumerate(ops):
        if idx not in drop:
            for v in _inputs(op):
                uses[v] = uses.get(v, 0) + 1
    for idx in removed:
        for v in _inputs(ops[idx])[1:]:
            p = producers.get(v)
            if p is not None and uses.get(v, 0) == 0 and op_name(ops[p]) in ("full", "full_int_array"):
                drop.add(p)
    names = tuple(op_name(ops[i]) for i in sorted(removed))
    ops[:] = [op for idx, op in enumerate(ops) if idx not in drop]
    return out, HeadInfo(removed=names)


def input_name(program: Program) -> str:
    """The name of the program's single image input (``feed``/``data`` op)."""
    for op in ops_of(program):
        if op_name(op) in ("feed", "data"):
            name = _attrs(op).get("name")
            if name:
                return str(name)
    return "x"


def static_input_shape(program: Program) -> tuple[int | None, tuple[int, int] | None]:
    """The image input's static batch and (H, W) from its ``data`` op (None where dynamic).

    PaddleX exports some models with a fixed ``input_shape`` (MaskFormer: [1, 3, 512, 512]);
    their graphs bake that size into reshapes, so the ONNX model accepts nothing else.
    """
    for op in ops_of(program):
        if op_name(op) in ("feed", "data"):
            shape = _attrs(op).get("shape")
            if not isinstance(shape, list) or len(shape) != 4:
                return None, None
            batch = int(shape[0]) if int(shape[0]) > 0 else None
            h, w = int(shape[2]), int(shape[3])
            return batch, ((h, w) if h > 0 and w > 0 else None)
    return None, None


def check_fixed_hw(
    static_hw: tuple[int, int] | None, fixed_hw: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The input size to freeze: the program's own static (H, W) if it has one, else ``fixed_hw``.

    Raises:
        ConversionError: ``fixed_hw`` asks for another size than the program's static one.
    """
    if static_hw is None:
        return fixed_hw
    if fixed_hw is not None and tuple(fixed_hw) != static_hw:
        raise ConversionError(
            f"This model was exported with a fixed input of {static_hw[0]}x{static_hw[1]} (HxW); "
            f"--fixed-shape {fixed_hw[0]}x{fixed_hw[1]} cannot change it. Omit --fixed-shape."
        )
    return static_hw
