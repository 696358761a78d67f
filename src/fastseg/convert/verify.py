"""Parity of the ONNX model with Paddle Inference on the same inputs.

Inputs are the user's images (each at its own size) or deterministic synthetic images at the
requested sizes plus one batch of 2. Figures per input: argmax agreement between the final
ONNX model (its own head) and the argmax of Paddle's logits, and max |logit diff| between the
ONNX logits graph and the Paddle program with its head stripped (``pir_program.strip_program_head``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from fastseg.convert import child
from fastseg.errors import ConversionError, InputError
from fastseg.model_dir import PreprocessSpec
from fastseg.processing import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from fastseg.convert.sources import PaddleSource

MAX_IMAGES = 16


def _normalise(rgb_hwc: npt.NDArray[np.uint8], pre: PreprocessSpec) -> npt.NDArray[np.float32]:
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    x = (rgb_hwc.astype(np.float32) * np.float32(pre.scale) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def synthetic_image(height: int, width: int, seed: int) -> npt.NDArray[np.uint8]:
    """A deterministic image with smooth structure and edges (RGB uint8 HWC), not white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
    image: npt.NDArray[np.uint8] = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    return image


def verify_image_files(images_dir: Path) -> list[Path]:
    """The images of ``images_dir`` a verification runs on (at most ``MAX_IMAGES``, by name)."""
    return sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_IMAGES]


def verify_input_names(images_dir: Path | None, sizes: Sequence[tuple[int, int]]) -> set[str]:
    """The names a verification records its inputs under (the batch-of-2 input aside): what a
    cached conversion must have been verified on to stand for this one."""
    if images_dir is not None:
        return {f.name for f in verify_image_files(images_dir)} if Path(images_dir).is_dir() else set()
    return {f"synthetic_{h}x{w}" for h, w in sizes}


def verification_inputs(
    *,
    images_dir: Path | None,
    sizes: Sequence[tuple[int, int]],
    preprocess: PreprocessSpec,
    fixed_hw: tuple[int, int] | None = None,
    batch2: bool = True,
) -> dict[str, npt.NDArray[np.float32]]:
    """Named NCHW float32 inputs: user images at their own size, else synthetic ones.

    With ``fixed_hw`` (a fixed-shape export) user images are resized to that (height, width)
    first: the model accepts no other size. ``batch2=False`` (a fixed batch of 1) leaves out
    the batch-of-2 input.

    Raises:
        InputError: ``images_dir`` has no readable images.
    """
    inputs: dict[str, npt.NDArray[np.float32]] = {}
    if images_dir is not None:
        files = verify_image_files(images_dir)
        for f in files:
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"Cannot read image {f}; remove it from {images_dir} or fix it.")
            if fixed_hw is not None and bgr.shape[:2] != tuple(fixed_hw):
                bgr = cv2.resize(bgr, (fixed_hw[1], fixed_hw[0]), interpolation=cv2.INTER_LINEAR)
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
            inputs[f.name] = _normalise(rgb, preprocess)
        if not inputs:
            raise InputError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}.")
        return inputs
    for i, (h, w) in enumerate(sizes):
        inputs[f"synthetic_{h}x{w}"] = _normalise(synthetic_image(h, w, seed=i), preprocess)
    if sizes and batch2:
        h, w = sizes[0]
        pair = [_normalise(synthetic_image(h, w, seed=100 + j), preprocess) for j in range(2)]
        inputs[f"synthetic_batch2_{h}x{w}"] = np.concatenate(pair, axis=0)
    return inputs


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _labels_of(output: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """A label map [N, H, W] from labels ([N,H,W] or [N,1,H,W]) or scores ([N,C,H,W])."""
    if output.dtype.kind in "iu":
        return (output[:, 0] if output.ndim == 4 else output).astype(np.int64)
    return np.asarray(output.argmax(axis=1), dtype=np.int64)


def _top2_margin(scores: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Gap between the best and second-best score per row of [P, C]."""
    top2 = np.partition(scores.astype(np.float64), -2, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


def tie_figures(ref_logits: npt.NDArray[Any], mismatch: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """Where the labels disagree: how many pixels, and Paddle's top-2 logit margin there
    against the median margin of all pixels (sampled). Disagreements confined to margins near
    the float32 noise are near-ties, not conversion errors; a wrong graph disagrees at ordinary
    margins. Empty for label-only (int) references."""
    if ref_logits.ndim != 4 or ref_logits.dtype.kind != "f" or ref_logits.shape[1] < 2:
        return {}
    per_pixel = np.moveaxis(ref_logits, 1, -1)  # [N, H, W, C] view
    sample = np.moveaxis(ref_logits[:, :, ::3, ::3], 1, -1).reshape(-1, ref_logits.shape[1])
    figures: dict[str, Any] = {
        "disagreeing_pixels": int(mismatch.sum()),
        "median_top2_margin": float(np.median(_top2_margin(sample))),
    }
    if figures["disagreeing_pixels"]:
        figures["max_top2_margin_at_disagreements"] = float(_top2_margin(per_pixel[mismatch]).max())
    return figures


def compare_outputs(
    *,
    inputs: dict[str, npt.NDArray[np.float32]],
    final_model: onnx.ModelProto,
    logits_name: str,
    paddle_logits: dict[str, npt.NDArray[Any]],
) -> dict[str, Any]:
    """Run ``final_model`` (its head output plus ``logits_name`` exposed, one session) on
    ``inputs`` and compare with Paddle's logits (same keys)."""
    both = onnx.ModelProto()
    both.CopyFrom(final_model)
    if logits_name not in {o.name for o in both.graph.output}:
        both.graph.output.append(onnx.ValueInfoProto(name=logits_name))
    sess = _session(both)
    name = sess.get_inputs()[0].name
    per_input: dict[str, dict[str, Any]] = {}
    for key, x in inputs.items():
        onnx_final, onnx_logits = sess.run([both.graph.output[0].name, logits_name], {name: x})
        ref_logits = paddle_logits[key]
        if onnx_logits.shape != ref_logits.shape:
            raise ConversionError(
                f"ONNX logits shape {onnx_logits.shape} differs from Paddle's {ref_logits.shape} on {key}."
            )
        mismatch = _labels_of(onnx_final) != _labels_of(ref_logits)
        per_input[key] = {
            "shape": list(x.shape),
            "argmax_agreement": 1.0 - float(mismatch.mean()),
            "max_abs_logit_diff": float(np.abs(onnx_logits.astype(np.float64) - ref_logits).max()),
            "max_abs_logit": float(np.abs(ref_logits).max()),
            **tie_figures(ref_logits, mismatch),
        }
    return {
        "reference": "Paddle Inference (CPU)",
        "inputs": per_input,
        "min_argmax_agreement": min(v["argmax_agreement"] for v in per_input.values()),
        "max_abs_logit_diff": max(v["max_abs_logit_diff"] for v in per_input.values()),
    }


def verify_against_paddle(
    *,
    work: Path,
    src: "PaddleSource",
    logits_json: Path,
    params: Path,
    logits_model: Any,
    final_model: Any,
    preprocess: Any,
    images_dir: Path | None,
    verify_sizes: list[tuple[int, int]],
    fixed_hw: tuple[int, int] | None,
    batch2: bool,
) -> dict[str, Any]:
    """Run the logits program in Paddle Inference (a child process) and ONNX Runtime on the
    verification inputs; the figures ``compare_outputs`` returns, with both runtimes' seconds."""
    inputs = verification_inputs(
        images_dir=images_dir, sizes=verify_sizes, preprocess=preprocess, fixed_hw=fixed_hw, batch2=batch2
    )
    np.savez(work / "inputs.npz", **inputs)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    child.run_paddle_worker(
        "predict",
        work,
        what="Paddle Inference (verification)",
        inputs_npz=str(work / "inputs.npz"),
        outputs_npz=str(work / "outputs.npz"),
        # the source program minus its argmax/softmax head (labels = argmax of these logits;
        # running the untouched program too doubled the verification time for the same labels)
        programs=[{"model_file": str(logits_json), "params_file": str(params)}],
    )
    with np.load(work / "outputs.npz") as out:
        logits = {k: out[f"0:{k}"] for k in inputs}
    t1 = time.perf_counter()
    figures = compare_outputs(
        inputs=inputs,
        final_model=final_model,
        logits_name=logits_model.graph.output[0].name,
        paddle_logits=logits,
    )
    figures["seconds"] = {"paddle": round(t1 - t0, 2), "onnxruntime": round(time.perf_counter() - t1, 2)}
    return figures


def require_agreement(verification: dict[str, Any], threshold: float) -> None:
    """Refuse a conversion whose worst input agrees with Paddle below ``threshold`` (nothing is written).

    Raises:
        ConversionError: naming the worst input, its logit gap and, when measured, how close
            Paddle's own top-2 scores were at the disagreeing pixels (near-ties explain flips).
    """
    if verification["min_argmax_agreement"] >= threshold:
        return
    worst = min(verification["inputs"].items(), key=lambda kv: kv[1]["argmax_agreement"])
    ties = ""
    if "max_top2_margin_at_disagreements" in worst[1]:
        ties = (
            f"; its {worst[1]['disagreeing_pixels']} disagreeing pixels have Paddle top-2 margins "
            f"<= {worst[1]['max_top2_margin_at_disagreements']:.3g} (median margin "
            f"{worst[1]['median_top2_margin']:.3g})"
        )
    raise ConversionError(
        f"Verification failed: argmax agreement {verification['min_argmax_agreement']:.5%} < "
        f"threshold {threshold:.3%} (worst input {worst[0]}, max |logit diff| "
        f"{verification['max_abs_logit_diff']:.3g}{ties}); nothing written. Report the model, or "
        "lower --threshold if you accept it."
    )
