"""MaskFormer's semantic tail, computed channels-last, and its mask einsum on the last decoder layer only.

PaddleSeg's ``MaskFormer`` (eval) upsamples every query's mask logits to the input size
(bilinear), and ``semantic_inference`` combines them with the class probabilities:
``einsum('qc,qhw->chw', softmax(cls)[:, :-1], sigmoid(masks))``; the export then resizes the
scores to the input size again (the same size: an identity) and PaddleX's head takes
``argmax`` over the class axis. In NCHW ONNX Runtime spends about a third of the network on
that tail at 512x512 (profile in docs/bench.md): the 150 x 512 x 512 einsum, an ArgMax over
the strided class axis and the identity resize. The same values, channels-last::

    masks [1, Q, h, w] -> Transpose [1, h, w, Q] -> Resize (same mode, to [1, H, W, Q])
      -> Sigmoid -> MatMul with P [Q, C] -> [1, H, W, C] -> ArgMax(axis=3) -> labels

Each pixel's bilinear weights, its sigmoid and its dot products over the Q queries are the
ones the NCHW graph computes (only the order of a sum's terms can differ, float rounding); the
dropped resize maps a size to itself. Class probabilities below float32's smallest normal
(softmax underflow, 1.2e-38) are set to 0 first: subnormal operands made the 150-class product
~40x slower on this Xeon (2.5 s instead of 60 ms), and they move a score by < 1e-36, so only a
pixel that no query claims at all (every score that small) could change its label. Likewise the mask einsum ``lbqc,bchw->lbqhw`` runs for all
L decoder layers though only the last is kept (``[-1:]``): the slice moves onto its query
embeddings. The converter verifies the rewritten graph against Paddle like every conversion.

The pattern is matched exactly (equations, op types, the batch slices, equal resize targets);
anything else is left as it is. The old tail's nodes stay in the graph (the verification reads
its scores) and ``drop_dead_nodes`` removes them before the model is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fastseg.convert.decoder_fold import GraphIndex, drop_dead_nodes, node_attr

_SEMANTIC_EQUATION = "qc,qhw->chw"
_MASK_EQUATION = "lbqc,bchw->lbqhw"
_PASS_THROUGH = ("Identity", "Squeeze", "Unsqueeze", "Slice")
_INT_MAX = 2**31 - 1  # paddle2onnx's open end


@dataclass(frozen=True)
class TailRewrite:
    """What ``rewrite_mask_tail`` changed (recorded in the model's provenance)."""

    semantic_tail_channels_last: bool
    mask_einsums_sliced: int

    @property
    def changed(self) -> bool:
        return self.semantic_tail_channels_last or self.mask_einsums_sliced > 0

    def provenance(self) -> dict[str, Any]:
        return {"semantic_tail_channels_last": self.semantic_tail_channels_last,
                "mask_einsums_sliced_to_last_layer": self.mask_einsums_sliced}


def _equation(node: Any) -> str:
    value = node_attr(node, "equation", b"")
    return (value.decode() if isinstance(value, bytes) else str(value)).replace(" ", "")


def _one_item_slice(g: GraphIndex, node: Any, *, last_only: bool = False) -> bool:
    """``node`` is a Slice keeping one item of axis 0: ``[k:k+1]`` or ``[-1:]`` (``last_only``: ``[-1:]`` only)."""
    if node.op_type != "Slice" or len(node.input) < 4:
        return False
    starts, ends, axes = (g.const(node.input[i]) for i in (1, 2, 3))
    steps = g.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.array([1])
    if starts is None or ends is None or axes is None or steps is None:
        return False
    if axes.tolist() != [0] or steps.tolist() != [1] or starts.size != 1 or ends.size != 1:
        return False
    start, end = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
    return (start == -1 and end >= _INT_MAX) or (not last_only and 0 <= start and end == start + 1)


def _target_hw(g: GraphIndex, resize: Any) -> tuple[int, ...] | None:
    """The constant (H, W) a Resize's ``sizes`` input ends in (``Concat(shape[:2], [H, W])``)."""
    if len(resize.input) < 4 or not resize.input[3]:
        return None
    sizes = g.const(resize.input[3])
    if sizes is not None:
        return tuple(int(v) for v in sizes.reshape(-1)[-2:])
    concat = g.producer.get(resize.input[3])
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    hw = g.const(concat.input[1])
    return None if hw is None or hw.size != 2 else tuple(int(v) for v in hw.reshape(-1))


def _slice_mask_einsums(model: Any) -> int:
    """Move the ``[-1:]`` slice of every ``lbqc,bchw->lbqhw`` einsum onto its layer input; the count."""
    from onnx import helper, numpy_helper

    g = GraphIndex(model.graph)
    count = 0
    for einsum in [n for n in model.graph.node if n.op_type == "Einsum" and _equation(n) == _MASK_EQUATION]:
        users = g.consumers.get(einsum.output[0], [])
        slices = [u for u in users if u.op_type != "Shape"]
        if einsum.output[0] in g.outputs or len(slices) != 1 or not _one_item_slice(g, slices[0], last_only=True):
            continue
        cut = slices[0]
        sliced = f"{einsum.input[0]}.last_layer"
        bounds = [f"{sliced}/{k}" for k in ("starts", "ends", "axes")]  # own copies: the cut's may come later
        model.graph.initializer.extend(
            numpy_helper.from_array(np.array(v, np.int64), k) for k, v in zip(bounds, ([-1], [_INT_MAX], [0]))
        )
        node = helper.make_node("Slice", [einsum.input[0], *bounds], [sliced], name=f"{einsum.name}.last_layer")
        model.graph.node.insert(list(model.graph.node).index(einsum), node)
        einsum.input[0] = sliced  # [1, b, q, c]: the later [-1:] slice keeps its one item
        stale = [v for v in model.graph.value_info if v.name == einsum.output[0]]  # its L changed to 1
        for info in stale:
            model.graph.value_info.remove(info)
        count += 1
    return count


def _semantic_plan(g: GraphIndex, argmax: Any) -> tuple[Any, Any, Any] | None:
    """(semantic einsum, mask Resize, the Slice choosing the image) feeding ``argmax``, or None."""
    if node_attr(argmax, "axis", 0) != 1 or node_attr(argmax, "keepdims", 1) != 0:
        return None
    node = g.producer.get(argmax.input[0])
    identity_resizes: list[Any] = []
    while node is not None and node.op_type in (*_PASS_THROUGH, "Resize"):
        if node.op_type == "Resize":
            identity_resizes.append(node)
        elif node.op_type == "Slice" and not _one_item_slice(g, node):
            return None
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Einsum" or _equation(node) != _SEMANTIC_EQUATION:
        return None
    einsum = node
    node = g.producer.get(einsum.input[1])
    while node is not None and node.op_type == "Identity":
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Sigmoid":
        return None
    node = g.producer.get(node.input[0])
    image: list[Any] = []  # the Slice choosing the image whose masks are combined
    while node is not None and node.op_type in ("Squeeze", "Identity", "Slice"):
        if node.op_type == "Slice":
            if not _one_item_slice(g, node):
                return None
            image.append(node)
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Resize" or node_attr(node, "mode", b"nearest") != b"linear" or len(image) != 1:
        return None
    mask_resize, hw = node, _target_hw(g, node)
    if hw is None or len(identity_resizes) > 1 or any(_target_hw(g, r) != hw for r in identity_resizes):
        return None  # the later resize must map the einsum's H x W to itself
    return einsum, mask_resize, image[0]


def _rewrite_semantic(model: Any) -> bool:
    """Recompute the labels of the first matching ArgMax head channels-last; True when done."""
    from onnx import helper, numpy_helper

    g = GraphIndex(model.graph)
    for argmax in [n for n in model.graph.node if n.op_type == "ArgMax"]:
        plan = _semantic_plan(g, argmax)
        if plan is None:
            continue
        einsum, resize, image = plan
        p = f"{argmax.name}.channels_last"
        consts: dict[str, Any] = {f"{p}/one": np.array([1], np.int64), f"{p}/hwq": np.array([2, 3, 1], np.int64),
                                  f"{p}/tiny": np.array(np.finfo(np.float32).tiny, np.float32),
                                  f"{p}/zero": np.array(0.0, np.float32)}
        bounds = [f"{p}/image_{k}" for k in ("starts", "ends", "axes")]  # the image Slice's, copied: they come later
        for k, name in zip(bounds, image.input[1:4]):
            consts[k] = np.asarray(g.const(name), np.int64)
        model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        mode = {a.name: helper.get_attribute_value(a) for a in resize.attribute}
        nodes = [
            helper.make_node("Slice", [resize.input[0], *bounds], [f"{p}/masks"], name=f"{p}/image"),
            helper.make_node("Transpose", [f"{p}/masks"], [f"{p}/masks_nhwc"], name=f"{p}/to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Gather", [resize.input[3], f"{p}/hwq"], [f"{p}/hwq_size"], name=f"{p}/size", axis=0),
            helper.make_node("Concat", [f"{p}/one", f"{p}/hwq_size"], [f"{p}/sizes"], name=f"{p}/sizes", axis=0),
            helper.make_node("Resize", [f"{p}/masks_nhwc", "", "", f"{p}/sizes"], [f"{p}/up"], name=f"{p}/resize", **mode),
            helper.make_node("Sigmoid", [f"{p}/up"], [f"{p}/prob"], name=f"{p}/sigmoid"),
            helper.make_node("Less", [einsum.input[0], f"{p}/tiny"], [f"{p}/subnormal"], name=f"{p}/subnormal"),
            helper.make_node("Where", [f"{p}/subnormal", f"{p}/zero", einsum.input[0]], [f"{p}/classes"], name=f"{p}/daz"),
            helper.make_node("MatMul", [f"{p}/prob", f"{p}/classes"], [f"{p}/scores"], name=f"{p}/combine"),
            helper.make_node("ArgMax", [f"{p}/scores"], [f"{p}/argmax"], name=f"{p}/argmax", axis=3, keepdims=0),
        ]
        for user in g.consumers.get(argmax.output[0], []):
            user.input[:] = [f"{p}/argmax" if i == argmax.output[0] else i for i in user.input]
        for out in model.graph.output:
            if out.name == argmax.output[0]:  # an ArgMax that is itself the output: keep the name
                nodes[-1].output[0] = argmax.output[0]
                argmax.output[0] = f"{argmax.output[0]}.nchw"
        at = list(model.graph.node).index(argmax)
        for offset, node in enumerate(nodes):
            model.graph.node.insert(at + offset, node)
        return True
    return False


def rewrite_mask_tail(model: Any, *, labels: bool = True) -> tuple[Any, TailRewrite]:
    """Rewrite ``model`` (edited in place) where it has MaskFormer's tail; the old tail stays until
    ``drop_dead_nodes``. ``labels``: the model ends in the labels head (else only the mask einsum
    is sliced: a logits or probs head outputs the NCHW scores). Returns the model and what changed."""
    sliced = _slice_mask_einsums(model)
    return model, TailRewrite(labels and _rewrite_semantic(model), sliced)


__all__ = ["TailRewrite", "drop_dead_nodes", "rewrite_mask_tail"]
