"""ONNX graph surgery at load time: a logits view of a converted model.

Sliding-window inference (``fastseg.slide``) sums **logits** over overlapping windows, as
PaddleSeg's ``slide_inference`` does, but most converted model directories end in the
``labels`` head (ArgMax + Cast inside the graph, what PaddleX exports). Rather than asking
users to re-convert, ``logits_model`` removes the trailing head and caches the result in
fastseg's cache directory; the user's model directory is never written to.

Heads removed (the converter's own ``convert.heads`` and PaddleSeg exports):

* ``labels``: ``ArgMax(axis=1, keepdims=0)``, optionally followed by ``Cast``; or
  ``ArgMax(axis=3, keepdims=0)`` over channels-last scores (MaskFormer's rewritten tail), whose
  scores are transposed back to NCHW;
* ``probs``: ``Softmax(axis=1)``. Averaging softmax outputs is not what PaddleSeg's
  ``slide_inference`` averages (its model returns logits), so probs models are slid on logits too;
* ``logits``: nothing to do, the model is used as is.

Imports errors only from fastseg (onnx is imported lazily: it is only needed when sliding).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastseg.errors import MissingDependencyError, ModelDirError
from fastseg.files import write_bytes_atomic

LOGITS_CACHE_DIR = "logits"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a base dependency
        raise MissingDependencyError(
            "Sliding-window inference needs the onnx package to read the model graph: pip install onnx"
        ) from exc
    return onnx


def strip_head(model: Any) -> tuple[Any, tuple[str, ...]]:
    """Remove a trailing ArgMax(+Cast) or Softmax over the class axis from ``model`` (an onnx.ModelProto, edited in place).

    Returns:
        The model and the op types removed (``()`` when the output is already logits).

    Raises:
        ModelDirError: the graph has several outputs, or its output comes from an op that is
            neither a logits tensor nor one of the heads above.
    """
    onnx = _onnx()
    graph = model.graph
    if len(graph.output) != 1:
        raise ModelDirError(f"Expected a model with one output, found {len(graph.output)}; re-convert with --head logits.")
    producers = {out: node for node in graph.node for out in node.output}
    name = graph.output[0].name
    removed: list[Any] = []
    node = producers.get(name)
    if node is not None and node.op_type == "Cast":
        cast_input = producers.get(node.input[0])
        if cast_input is not None and cast_input.op_type == "ArgMax":
            removed.append(node)
            node = cast_input
    channels_last = False
    if node is not None and node.op_type in ("ArgMax", "Softmax"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        axis = int(attrs.get("axis", 0 if node.op_type == "ArgMax" else -1))
        # labels [N,H,W] from ArgMax(axis=3) read channels-last [N,H,W,C] scores (convert/mask_tail.py)
        channels_last = node.op_type == "ArgMax" and axis == 3 and int(attrs.get("keepdims", 1)) == 0
        if axis != 1 and not channels_last:
            raise ModelDirError(
                f"The model ends in {node.op_type}(axis={axis}), not over the class axis 1; "
                "re-convert it with 'fastseg convert ... --head logits' to slide windows."
            )
        removed.append(node)
    elif removed:  # a Cast whose input is not an ArgMax
        removed.clear()
    if not removed:
        elem = graph.output[0].type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            raise ModelDirError(
                f"The model's output {name!r} is not float logits and does not end in ArgMax/Softmax; "
                "re-convert it with 'fastseg convert ... --head logits' to slide windows."
            )
        return model, ()
    logits = removed[-1].input[0]
    for dead in removed:
        graph.node.remove(dead)
    if channels_last:
        graph.node.append(onnx.helper.make_node("Transpose", [logits], ["strip_head/logits_nchw"], name="strip_head/nchw", perm=[0, 3, 1, 2]))
        logits = "strip_head/logits_nchw"
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, ["N", "C", "H", "W"]))
    return model, tuple(n.op_type for n in reversed(removed))


def logits_model(onnx_path: Path, cache_dir: Path) -> Path:
    """The path of a logits-output version of ``onnx_path`` (itself when it already outputs logits).

    The stripped copy is written once to ``cache_dir/logits/<key>.onnx``, keyed by the source
    file's absolute path, size and modification time, so a re-converted model gets a new copy.

    Raises:
        ModelDirError: the model cannot be read or has no recognisable head (see ``strip_head``).
    """
    onnx = _onnx()
    onnx_path = Path(onnx_path).resolve()
    stat = onnx_path.stat()
    key = hashlib.sha256(f"{onnx_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    target = Path(cache_dir) / LOGITS_CACHE_DIR / f"{onnx_path.parent.name}-{key}.onnx"
    if target.is_file():
        return target
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelDirError(f"Cannot read {str(onnx_path)!r} as ONNX ({exc}); re-convert the model.") from exc
    model, removed = strip_head(model)
    if not removed:
        return onnx_path
    write_bytes_atomic(target, model.SerializeToString())
    return target
