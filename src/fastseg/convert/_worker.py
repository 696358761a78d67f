"""Subprocess entry point for everything that imports paddle / paddle2onnx.

paddle2onnx aborts the whole process (SIGABRT) when it cannot convert, and Paddle prints
megabytes of logs; running it here, in a child process started by ``child.py``, turns a
crash into a ``ConversionError`` with the stderr tail and keeps the parent clean.

Usage: ``python -m fastseg.convert._worker REQUEST.json`` where the request is one of
``{"cmd": "to_pir", ...}``, ``{"cmd": "export", ...}``, ``{"cmd": "predict", ...}``.
Not a public interface.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _to_pir(req: dict[str, Any]) -> None:
    """Translate a legacy ProgramDesc (``.pdmodel``) to a PIR ``inference.json`` + params."""
    import paddle
    from paddle2onnx.convert import load_parameter, save_program

    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    model = Path(req["model_file"])
    params = Path(req["params_file"])
    with paddle.pir_utils.OldIrGuard():
        program, _, _ = paddle.static.load_inference_model(
            str(model.parent),
            exe,
            model_filename=model.name,
            params_filename=params.name,
        )
    pir_program = paddle.pir.translate_to_pir(program.desc)  # type: ignore[attr-defined]
    load_parameter(pir_program)
    save_program(pir_program, str(Path(req["out_prefix"])))


def _export(req: dict[str, Any]) -> None:
    """paddle2onnx without its optimiser (polygraphy pip-installs at run time and leaks files)."""
    import paddle2onnx

    paddle2onnx.export(
        req["model_file"],
        req["params_file"],
        req["save_file"],
        opset_version=int(req["opset"]),
        auto_upgrade_opset=False,
        enable_onnx_checker=True,
        optimize_tool="None",
        verbose=False,
    )


def _predict(req: dict[str, Any]) -> None:
    """Paddle Inference (CPU, native kernels) on every input of ``inputs_npz``, per program.

    MKLDNN (oneDNN) is disabled: in paddlepaddle 3.2.2 a oneDNN predictor that first ran at
    one size gives wrong outputs at the next size (PP-LiteSeg-T: 256x512 then 97x211, 0.3% of
    pixels flipped, max logit error 2.7e-3 on logits of 0.7; a fresh predictor matches ONNX to
    1e-6), and building a oneDNN predictor takes ~13 s on DeepLabV3+ versus ~1 s without.
    Without oneDNN one predictor serves every size, and fresh oneDNN and native outputs agree to
    1e-6 (measured), so the reference is the same function.
    """
    import numpy as np
    import paddle.inference as pi

    inputs = np.load(req["inputs_npz"])
    results: dict[str, Any] = {}
    for p_idx, prog in enumerate(req["programs"]):
        config = pi.Config(prog["model_file"], prog["params_file"])
        config.disable_gpu()
        config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(int(req.get("threads", 2)))
        config.disable_glog_info()
        predictor = pi.create_predictor(config)
        in_handle = predictor.get_input_handle(predictor.get_input_names()[0])
        out_handle = predictor.get_output_handle(predictor.get_output_names()[0])
        for key in sorted(inputs.files):
            in_handle.copy_from_cpu(np.ascontiguousarray(inputs[key]))
            predictor.run()
            results[f"{p_idx}:{key}"] = out_handle.copy_to_cpu()
    np.savez(req["outputs_npz"], **results)


def die_with_parent() -> None:
    """Make sure this child never outlives the converting parent (``kill -9`` of it included).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. Then, everywhere: exit now when the parent is
    already gone (it died before the prctl call).
    """
    parent = int(os.environ.get("FASTSEG_CONVERT_PARENT_PID", "0") or 0)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    if parent and os.getppid() != parent:
        os._exit(1)


def main(argv: list[str]) -> int:
    die_with_parent()
    req = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    os.chdir(req["workdir"])  # paddle2onnx and Paddle drop temp files in the cwd
    {"to_pir": _to_pir, "export": _export, "predict": _predict}[req["cmd"]](req)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
