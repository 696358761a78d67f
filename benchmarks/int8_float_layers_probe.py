"""Does keeping the layers that move labels float rescue an int8 model its gate refused?

    python benchmarks/int8_float_layers_probe.py FP32_DIR INT8_DIR --calib DIR \
        [--also DIR] [--steps 1,2,4,8,16,32,64,96,128,all]

INT8_DIR is ``fastseg quantize FP32_DIR --calib DIR --min-agreement 0 -o INT8_DIR`` (the same
``--calib``, so the calibration / held-out split below is quantize's: every 4th image held out).
Each quantized node (a node fed by a DequantizeLinear, Shape and Slice aside) is made float on
its own: its inputs bypass their Q/DQ pairs (float weights from ``quant_pre_process``'s graph,
the one the QDQ graph was made from, and the Relu/Clip the quantizer folded into a Q's range
put back). Nodes are ranked by how much that alone lowers the logits' mean squared error
against fp32 on the *calibration* images, so the held-out images stay out of the choice; then
the top K are kept float together and label agreement with fp32 is reported on the calibration
images, the held-out ones and ``--also`` (photos outside the model's domain). ONNX Runtime, 2
threads, labels at the network's output size (quantize's gate compares at source size, so its
figures differ slightly). Accuracy only: keeping a node float also costs speed, not measured here.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _producers(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def _topological(model: Any) -> Any:
    import onnx

    ready = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise onnx.checker.ValidationError("the edited graph has a cycle or a missing input")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def keep_float(qdq: Any, float_model: Any, names: set[str]) -> Any:
    """``qdq`` with the nodes in ``names`` computing in float (see the module docstring)."""
    import onnx

    model = copy.deepcopy(qdq)
    made = _producers(model)
    original = _producers(float_model)
    float_weights = {i.name: i for i in float_model.graph.initializer}
    weights = {i.name for i in model.graph.initializer}
    for node in [n for n in model.graph.node if n.name in names]:
        for k, name in enumerate(node.input):
            dq = made.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = dq.input[0]
            if source in weights:  # a weight or bias: the float tensor of the graph it was quantized from
                float_name = source.removesuffix("_quantized") if source.removesuffix("_quantized") in float_weights else name
                if float_name not in weights:
                    model.graph.initializer.append(float_weights[float_name])
                    weights.add(float_name)
                if float_name == name:  # ORT names a bias's DequantizeLinear output after the float bias
                    dq.output[0] = f"{name}__dequantized"
                node.input[k] = float_name
                continue
            q = made.get(source)
            if q is None or q.op_type != "QuantizeLinear":
                continue
            tensor = q.input[0]
            before, now = original.get(tensor), made.get(tensor)
            if before is not None and (now is None or now.op_type != before.op_type):  # folded into Q's range
                restored = onnx.NodeProto()
                restored.CopyFrom(before)
                restored.name = f"{before.name}__float_for_{node.name}"
                restored.input[0], restored.output[0] = tensor, f"{tensor}__float_for_{node.name}"
                for extra in list(restored.input)[1:]:
                    if extra in float_weights and extra not in weights:
                        model.graph.initializer.append(float_weights[extra])
                        weights.add(extra)
                model.graph.node.append(restored)
                tensor = restored.output[0]
            node.input[k] = tensor
    outputs = {o.name for o in model.graph.output}
    while True:  # drop the Q/DQ nodes nothing reads any more
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    read = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return _topological(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32_dir", type=Path)
    parser.add_argument("int8_dir", type=Path)
    parser.add_argument("--calib", type=Path, required=True, help="the --calib folder INT8_DIR was quantized with")
    parser.add_argument("--also", type=Path, help="more held-out photos, e.g. outside the model's domain")
    parser.add_argument("--steps", default="1,2,4,8,16,32,64,96,128,all")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import shape_inference

    from fastseg.model_dir import read_meta
    from fastseg.precision.gate import image_files, load_for_gate, split_images
    from fastseg.processing import preprocess_batch

    meta = read_meta(args.fp32_dir)
    ort.set_default_logger_severity(3)  # quant_pre_process's optimiser warns per unused initializer
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        shape_inference.quant_pre_process(str(args.fp32_dir / "model.onnx"), str(pre), skip_symbolic_shape=True)
        float_model = onnx.load(str(pre))
    qdq = onnx.load(str(args.int8_dir / "model.onnx"))
    for i, node in enumerate(qdq.graph.node):
        node.name = node.name or f"{node.op_type}__{i}"

    def with_logits(model: Any) -> Any:
        model = copy.deepcopy(model)
        argmax = next(n for n in model.graph.node if n.op_type == "ArgMax")
        model.graph.output.append(onnx.helper.make_tensor_value_info(argmax.input[0], onnx.TensorProto.FLOAT, None))
        return model

    options = ort.SessionOptions()
    options.log_severity_level, options.intra_op_num_threads = 3, 2

    def session(model: Any) -> Any:
        return ort.InferenceSession(with_logits(model).SerializeToString(), options, providers=["CPUExecutionProvider"])

    calib, held = split_images(image_files(args.calib), None)
    sets = {"calibration": calib, "held-out": held, **({"also": image_files(args.also)} if args.also else {})}
    inputs = {k: [preprocess_batch([load_for_gate(p, meta, 1024)], meta.preprocess, resize=meta.preprocess.resize)
                  for p in paths] for k, paths in sets.items()}

    def run(sess: Any, key: str) -> list[tuple[Any, Any]]:
        return [tuple(sess.run(None, {meta.input_name: x})[:2]) for x in inputs[key]]

    reference = {k: run(session(float_model), k) for k in sets}

    def agreement(sess: Any, key: str) -> str:
        pairs = [(got[0], ref[0]) for got, ref in zip(run(sess, key), reference[key])]
        per = [100.0 * float(np.mean(a == b)) for a, b in pairs]
        pooled = 100.0 * sum(float(np.sum(a == b)) for a, b in pairs) / sum(b.size for _, b in pairs)
        return f"{key} {pooled:.2f}% (worst {min(per):.2f}%)"

    def logit_mse(sess: Any) -> float:
        return float(np.mean([np.mean((got[1] - ref[1]) ** 2) for got, ref in zip(run(sess, "calibration"), reference["calibration"])]))

    made = _producers(qdq)
    candidates = [n.name for n in qdq.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Shape", "Slice")
                  and any(made.get(i) is not None and made[i].op_type == "DequantizeLinear" for i in n.input)]
    base = session(qdq)
    base_mse = logit_mse(base)
    print(f"{len(candidates)} quantized nodes; int8: " + "; ".join(agreement(base, k) for k in sets), flush=True)
    gain = sorted(((base_mse - logit_mse(session(keep_float(qdq, float_model, {c})))) / base_mse, c) for c in candidates)
    ranked = [name for _, name in reversed(gain)]
    print("most label-moving alone (logit MSE removed): " + ", ".join(f"{n} {g:.1%}" for g, n in reversed(gain[-8:])))
    for step in args.steps.split(","):
        k = len(ranked) if step == "all" else int(step)
        sess = session(keep_float(qdq, float_model, set(ranked[:k])))
        print(f"{k:4d} of {len(ranked)} float: " + "; ".join(agreement(sess, key) for key in sets), flush=True)


if __name__ == "__main__":
    sys.exit(main())
