"""Reference builds of PaddleX's 20 segmentation architectures with random but sane weights.

Each model is built from PaddleSeg's own code (PyPI ``paddleseg`` 2.8.0; SeaFormer from
``converters/seaformer.py``) with the configuration of PaddleX's training config
(``paddlex/repo_apis/PaddleSeg_api/configs/<NAME>.yaml``), given random weights whose
activations stay O(1) (He-initialised convolutions, randomised then recalibrated BatchNorm
statistics), and exported exactly as PaddleX exports it (PaddleSeg ``core/export.py``):

* the network wrapped so that ``paddle.argmax(logit, axis=1, dtype='int32')`` is appended
  (PaddleSeg ``deploy/export.py`` ``WrappedModel``: no keepdim, so the output is [N, H, W]);
* input spec ``InputSpec([None, 3, None, None], 'float32')`` traced with ``paddle.jit.to_static``
  and saved with ``paddle.jit.save`` under the prefix ``inference`` (PIR ``inference.json`` with
  paddlepaddle 3.x; ``legacy=True`` gives the ProgramDesc ``inference.pdmodel``);
* ``inference.yml`` with the same keys PaddleSeg's export writes (``Deploy.model``,
  ``Deploy.params``, ``Deploy.transforms`` = the config's val transforms, ``input_shape``,
  ``output_op: argmax``, ``output_dtype: int32``; ``Global.model_name``);
* packed as ``<NAME>_infer.tar`` holding the folder ``<NAME>_infer/``, as PaddleX's official
  tarballs are, plus ``fastseg.reference.REFERENCE_MARKER``, a short text file that says the
  weights are random: any conversion of the tarball is then labelled as a reference build.

The weights are random: the models are for parity tests of converters, never for accuracy.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import yaml

from converters.maskformer import (
    MASKFORMER_INPUT_SHAPE,
    MASKFORMER_NAMES,
    maskformer_inference_yml,
    scale_mask_heads,
)
from fastseg.reference import REFERENCE_MARKER

if TYPE_CHECKING:
    import paddle

CITYSCAPES_CLASSES = 19
ADE20K_CLASSES = 150
# PaddleSeg's Normalize defaults (mean 0.5, std 0.5 on [0, 1] pixels); every PaddleX seg config
# writes a bare ``- type: Normalize``, so the official inference.yml carries no mean/std either.
NORMALIZE_MEAN = (0.5, 0.5, 0.5)
NORMALIZE_STD = (0.5, 0.5, 0.5)
CALIBRATION_SIZE = (128, 256)
CALIBRATION_BATCH = 2
CALIBRATION_PASSES = 3
# BN running variances are raised to at least this fraction of their layer's mean variance.
VARIANCE_FLOOR = 0.2
# median over images of the 99th percentile of |logit| after scale_classifier: a trained
# model's order.
LOGIT_TARGET = 15.0
# Residual-branch strength of the ResNet/HRNet references (see damp_residual_branches).
RESIDUAL_BRANCH_SCALE = 0.2
# Bump when a build changes its weights or export: ensure_reference caches per version.
REFERENCE_VERSION = 6
LEGACY_ENV = "FLAGS_enable_pir_api"
REPO_ROOT = Path(__file__).resolve().parents[1]
# paddlepaddle 3.2.2's legacy (non-PIR) dy2static calls PIR-only _C_ops for some Python
# constructs and functions ("must be Value, but got Variable"): PP-LiteSeg's UAFM fails on
# ``and`` (logical_and) and F.sigmoid, SeaFormer's attention on paddle.matmul. The PIR export
# of these models works. Measured legacy exports that work: SegFormer-B0, Deeplabv3-R50.
LEGACY_UNSUPPORTED = {
    **dict.fromkeys(
        ("PP-LiteSeg-T", "PP-LiteSeg-B"),
        "UAFM's shape check and sigmoid need PIR-only ops when traced",
    ),
    **dict.fromkeys(
        ("SeaFormer_tiny", "SeaFormer_small", "SeaFormer_base", "SeaFormer_large"),
        "SeaAttention's paddle.matmul needs a PIR-only op when traced",
    ),
}


@dataclass(frozen=True)
class Architecture:
    """How to build one PaddleX model: a builder taking ``num_classes``, and its class count."""

    name: str
    num_classes: int
    build: Callable[[int], "paddle.nn.Layer"]


def _deeplab(*, plus: bool, depth: int) -> Callable[[int], "paddle.nn.Layer"]:
    def build(num_classes: int) -> "paddle.nn.Layer":
        from paddleseg.models import DeepLabV3, DeepLabV3P
        from paddleseg.models.backbones import ResNet50_vd, ResNet101_vd

        backbone_fn = ResNet50_vd if depth == 50 else ResNet101_vd
        # PaddleX Deeplabv3*-R*.yaml: output stride 8, multi-grid [1, 2, 4], ASPP [1, 12, 24, 36].
        backbone = backbone_fn(output_stride=8, multi_grid=(1, 2, 4))
        if plus:
            return DeepLabV3P(
                num_classes=num_classes,
                backbone=backbone,
                backbone_indices=(0, 3),
                aspp_ratios=(1, 12, 24, 36),
                aspp_out_channels=256,
                align_corners=False,
            )
        return DeepLabV3(
            num_classes=num_classes,
            backbone=backbone,
            backbone_indices=(3,),
            aspp_ratios=(1, 12, 24, 36),
            aspp_out_channels=256,
            align_corners=False,
        )

    return build


def _ocrnet(width: int) -> Callable[[int], "paddle.nn.Layer"]:
    def build(num_classes: int) -> "paddle.nn.Layer":
        from paddleseg.models import OCRNet
        from paddleseg.models.backbones import HRNet_W18, HRNet_W48

        backbone = HRNet_W18() if width == 18 else HRNet_W48()
        # PaddleX OCRNet_HRNet-W*.yaml: backbone_indices [0], other arguments default.
        return OCRNet(num_classes=num_classes, backbone=backbone, backbone_indices=[0])

    return build


def _pp_liteseg(stdc: int) -> Callable[[int], "paddle.nn.Layer"]:
    def build(num_classes: int) -> "paddle.nn.Layer":
        from paddleseg.models import PPLiteSeg
        from paddleseg.models.backbones import STDC1, STDC2

        if stdc == 1:
            # PaddleX PP-LiteSeg-T.yaml: STDC1, arm_out_chs [32, 64, 128], seg_head [32, 64, 64].
            return PPLiteSeg(
                num_classes=num_classes,
                backbone=STDC1(),
                arm_out_chs=[32, 64, 128],
                seg_head_inter_chs=[32, 64, 64],
            )
        # PaddleX PP-LiteSeg-B.yaml: STDC2 with PPLiteSeg's defaults ([64, 96, 128], [64, 64, 64]).
        return PPLiteSeg(num_classes=num_classes, backbone=STDC2())

    return build


def _segformer(variant: int) -> Callable[[int], "paddle.nn.Layer"]:
    def build(num_classes: int) -> "paddle.nn.Layer":
        from paddleseg.models import SegFormer
        from paddleseg.models.backbones import mix_transformer

        backbone = getattr(mix_transformer, f"MixVisionTransformer_B{variant}")()
        # PaddleX SegFormer-B*.yaml: embedding_dim 256 for B0/B1, 768 for B2..B5.
        embedding_dim = 256 if variant <= 1 else 768
        return SegFormer(num_classes=num_classes, backbone=backbone, embedding_dim=embedding_dim)

    return build


def _maskformer(size: str) -> Callable[[int], "paddle.nn.Layer"]:
    def build(num_classes: int) -> "paddle.nn.Layer":
        from converters.maskformer import maskformer

        return maskformer(size, num_classes)

    return build


def _seaformer(size: str) -> Callable[[int], "paddle.nn.Layer"]:
    def build(num_classes: int) -> "paddle.nn.Layer":
        from converters.seaformer import seaformer_seg

        return seaformer_seg(size, num_classes=num_classes)

    return build


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("Deeplabv3_Plus-R50", CITYSCAPES_CLASSES, _deeplab(plus=True, depth=50)),
        Architecture("Deeplabv3_Plus-R101", CITYSCAPES_CLASSES, _deeplab(plus=True, depth=101)),
        Architecture("Deeplabv3-R50", CITYSCAPES_CLASSES, _deeplab(plus=False, depth=50)),
        Architecture("Deeplabv3-R101", CITYSCAPES_CLASSES, _deeplab(plus=False, depth=101)),
        Architecture("OCRNet_HRNet-W18", CITYSCAPES_CLASSES, _ocrnet(18)),
        Architecture("OCRNet_HRNet-W48", CITYSCAPES_CLASSES, _ocrnet(48)),
        Architecture("PP-LiteSeg-T", CITYSCAPES_CLASSES, _pp_liteseg(1)),
        Architecture("PP-LiteSeg-B", CITYSCAPES_CLASSES, _pp_liteseg(2)),
        *(
            Architecture(f"SegFormer-B{i}", CITYSCAPES_CLASSES, _segformer(i))
            for i in range(6)
        ),
        *(
            Architecture(f"SeaFormer_{s}", ADE20K_CLASSES, _seaformer(s))
            for s in ("tiny", "small", "base", "large")
        ),
        *(
            Architecture(f"MaskFormer_{s}", ADE20K_CLASSES, _maskformer(s))
            for s in ("tiny", "small")
        ),
    )
}
REFERENCE_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)


@dataclass(frozen=True)
class BuildReport:
    """What one build produced, for the CLI line and for tests."""

    name: str
    tarball: Path
    seconds: float
    logit_min: float
    logit_max: float
    argmax_classes: int


def natural_images(
    count: int, height: int, width: int, *, seed: int
) -> npt.NDArray[np.float32]:
    """Photo-like RGB images, NCHW float32 already normalised like PaddleSeg's Normalize.

    Each image mixes blobs at several scales (the regions of a photograph, so different areas
    of the label map go to different classes) with per-pixel noise (texture and sensor noise),
    stretched per channel to the full [0, 255] range, as real images are.
    """
    import cv2

    rng = np.random.default_rng(seed)
    images = np.zeros((count, height, width, 3), np.float32)
    for i in range(count):
        for scale, weight in ((4, 0.5), (16, 1.0), (64, 1.0)):
            coarse = rng.random((max(2, height // scale), max(2, width // scale), 3))
            images[i] += weight * cv2.resize(
                coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
            )
        images[i] += rng.normal(0.0, 0.1, (height, width, 3)).astype(np.float32)
        # per-channel percentile stretch: the contrast of a photograph (pixel std ~0.25)
        low = np.percentile(images[i], 3, axis=(0, 1))
        high = np.percentile(images[i], 97, axis=(0, 1))
        images[i] = np.clip((images[i] - low) / (high - low + 1e-6), 0.0, 1.0)
    pixels = np.round(images * 255.0) / 255.0  # what decoding a uint8 image gives
    mean = np.asarray(NORMALIZE_MEAN, np.float32)
    std = np.asarray(NORMALIZE_STD, np.float32)
    normalised = (pixels.astype(np.float32) - mean) / std
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))


def randomise_weights(model: "paddle.nn.Layer", *, seed: int) -> None:
    """Give ``model`` sane random weights: He (fan-out) convs, small Linear, BN near identity."""
    from paddle import nn

    rng = np.random.default_rng(seed)

    def assign(param: "paddle.Tensor", value: npt.NDArray[Any]) -> None:
        param.set_value(value.astype(np.float32).reshape(param.shape))

    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose)):
            weight = layer.weight
            out_ch, in_per_group, kh, kw = weight.shape
            groups = layer._groups or 1
            fan_out = out_ch * kh * kw / groups
            assign(weight, rng.normal(0.0, math.sqrt(2.0 / fan_out), weight.shape))
            if layer.bias is not None:
                assign(layer.bias, np.zeros(layer.bias.shape))
        elif isinstance(layer, nn.Linear):
            assign(
                layer.weight,
                np.clip(rng.normal(0.0, 0.02, layer.weight.shape), -0.04, 0.04),
            )
            if layer.bias is not None:
                assign(layer.bias, np.zeros(layer.bias.shape))
        elif isinstance(layer, (nn.BatchNorm2D, nn.BatchNorm, nn.SyncBatchNorm)):
            channels = layer.weight.shape[0]
            assign(layer.weight, rng.uniform(0.7, 1.3, channels))
            assign(layer.bias, rng.normal(0.0, 0.2, channels))
        elif isinstance(layer, nn.LayerNorm) and layer.weight is not None:
            channels = layer.weight.shape[0]
            assign(layer.weight, rng.uniform(0.8, 1.2, channels))
            assign(layer.bias, rng.normal(0.0, 0.05, channels))


# The last BatchNorm of each residual branch: (backbone module, block class) -> its conv-BN.
_RESIDUAL_LAST_CONV_BN = {
    ("resnet_vd", "BottleneckBlock"): "conv2",
    ("resnet_vd", "BasicBlock"): "conv1",
    ("hrnet", "BottleneckBlock"): "conv3",
    ("hrnet", "BasicBlock"): "conv2",
}


def damp_residual_branches(model: "paddle.nn.Layer", scale: float) -> int:
    """Scale the last BatchNorm's gamma and beta of every ResNet/HRNet residual branch.

    A trained residual network's branches add small corrections to their identity path (the
    "zero-gamma" initialisation of Goyal et al. 2017 starts them at 0). At full random strength
    (build v4) the dilated ResNets and HRNet-W48 left pixels within float32 noise of a tie:
    99.93-99.99% raw argmax agreement with Paddle, max |logit diff| up to 3.8e-3. Damped to 0.2
    (build v5) all six agree 100% at the CI sizes with max |logit diff| <= 2.9e-4. Returns how
    many branches were damped.
    """
    damped = 0
    for layer in model.sublayers(include_self=True):
        key = (type(layer).__module__.rsplit(".", 1)[-1], type(layer).__name__)
        attr = _RESIDUAL_LAST_CONV_BN.get(key)
        if attr is None:
            continue
        norm = getattr(layer, attr)._batch_norm
        norm.weight.set_value(norm.weight * scale)
        norm.bias.set_value(norm.bias * scale)
        damped += 1
    return damped


def recalibrate_batchnorm(model: "paddle.nn.Layer", *, seed: int) -> None:
    """Set every BatchNorm's running mean/var to statistics measured on photo-like images.

    Train-mode passes over different images with momentum k/(k+1) at pass k make the running
    statistics the average of the per-batch statistics. A variance floor (a fraction of the
    layer's mean variance) guards channels that barely vary on the calibration images, e.g.
    BNs after a global pooling that see one value per image: their tiny variance would
    otherwise blow up the activations of any other image by orders of magnitude.
    """
    import paddle
    from paddle import nn

    norms = [
        layer
        for layer in model.sublayers()
        if isinstance(layer, (nn.BatchNorm2D, nn.BatchNorm, nn.SyncBatchNorm))
    ]
    if not norms:
        return
    model.train()
    with paddle.no_grad():
        for k in range(CALIBRATION_PASSES):
            for norm in norms:
                norm._momentum = k / (k + 1)
            images = natural_images(CALIBRATION_BATCH, *CALIBRATION_SIZE, seed=seed + 1 + k)
            model(paddle.to_tensor(images))
        for norm in norms:
            norm._momentum = 0.9
            var = norm._variance
            floor = VARIANCE_FLOOR * float(var.mean()) + 1e-5
            var.set_value(paddle.clip(var, min=floor))
    model.eval()


def build_model(name: str, *, seed: int = 0) -> "paddle.nn.Layer":
    """Build ``name`` in eval mode with sane random weights (deterministic for a seed)."""
    import paddle

    arch = _architecture(name)
    paddle.seed(seed)
    model = arch.build(arch.num_classes)
    randomise_weights(model, seed=seed)
    damp_residual_branches(model, RESIDUAL_BRANCH_SCALE)
    recalibrate_batchnorm(model, seed=seed)
    if name in MASKFORMER_NAMES:
        images = natural_images(1, *CALIBRATION_SIZE, seed=seed + CALIBRATION_PASSES + 1)
        scale_mask_heads(model, images)
    else:
        scale_classifier(model, arch.num_classes, seed=seed)
    model.eval()
    return model


def scale_classifier(model: "paddle.nn.Layer", num_classes: int, *, seed: int) -> None:
    """Scale the class-logit convolutions so a typical image's logits peak near LOGIT_TARGET.

    Deep residual stacks grow activations with depth (ResNet-101 logits reach ~1e3 otherwise);
    logits of a trained model's order keep float32 parity figures comparable across models.
    "Typical" is the median over images of the 99th percentile of |logit|: the magnitude of
    a random network's logits varies several-fold between images (global-pooling branches
    add a per-image offset), so one image's maximum would be a poor yardstick. Only
    convolutions with ``num_classes`` outputs are scaled (for OCRNet that includes the
    auxiliary soft-region head, which merely sharpens or flattens its random attention).
    """
    import paddle
    from paddle import nn

    heads = [
        layer for layer in model.sublayers()
        if isinstance(layer, nn.Conv2D) and layer.weight.shape[0] == num_classes
    ]
    images = paddle.to_tensor(
        natural_images(2 * CALIBRATION_BATCH, *CALIBRATION_SIZE, seed=seed + CALIBRATION_PASSES + 1)
    )
    model.eval()
    for _ in range(3):  # OCRNet's logits are not linear in its auxiliary head: iterate
        with paddle.no_grad():
            logits = paddle.abs(model(images)[0]).numpy()
        typical = float(np.median(np.percentile(logits.reshape(len(logits), -1), 99, axis=1)))
        factor = LOGIT_TARGET / max(typical, 1e-12)
        if abs(factor - 1.0) < 0.1:
            break
        for layer in heads:
            layer.weight.set_value(layer.weight * factor)
            if layer.bias is not None:
                layer.bias.set_value(layer.bias * factor)


def logits_summary(
    model: "paddle.nn.Layer", *, seed: int = 0, size: tuple[int, int] = CALIBRATION_SIZE
) -> tuple[float, float, int]:
    """Min/max logit and number of argmax classes on one natural-ish image of ``size``."""
    import paddle

    image = natural_images(1, *size, seed=seed + 2)
    with paddle.no_grad():
        logits = model(paddle.to_tensor(image))[0].numpy()
    classes = int(np.unique(logits.argmax(axis=1)).size)
    return float(logits.min()), float(logits.max()), classes


def inference_yml(name: str, *, legacy: bool) -> dict[str, Any]:
    """The inference.yml PaddleSeg's export writes for a PaddleX model (core/export.py)."""
    del legacy  # PaddleSeg writes 'inference.pdmodel' whatever format jit.save produced.
    if name in MASKFORMER_NAMES:
        return maskformer_inference_yml(name)
    return {
        "Deploy": {
            "model": "inference.pdmodel",
            "params": "inference.pdiparams",
            "transforms": [{"type": "Normalize"}],
            "input_shape": [None, 3, None, None],
            "output_op": "argmax",
            "output_dtype": "int32",
        },
        "Global": {"model_name": name},
    }


def export_model(model: "paddle.nn.Layer", folder: Path, *, name: str, legacy: bool) -> None:
    """Trace ``model`` with argmax appended and save it under ``folder/inference*`` like PaddleX."""
    import paddle

    pir = _pir_enabled()
    if pir == legacy:
        raise RuntimeError(
            f"asked for {'legacy' if legacy else 'PIR'} export but this process has "
            f"{LEGACY_ENV}={pir}; run in a process started with {LEGACY_ENV}="
            f"{0 if legacy else 1} (build_reference does this for you)"
        )
    from paddleseg.deploy.export import WrappedModel

    if legacy and name in LEGACY_UNSUPPORTED:
        raise RuntimeError(
            f"{name} cannot be exported in the legacy format with paddlepaddle "
            f"{paddle.__version__}: {LEGACY_UNSUPPORTED[name]}; build it without legacy=True"
        )
    # PaddleSeg's own export wrapper: argmax(axis=1, dtype=int32), no keepdim -> [N, H, W].
    wrapped = WrappedModel(model, "argmax")
    wrapped.eval()
    # PaddleX exports MaskFormer with its config's fixed input_shape (converters/maskformer.py).
    shape = MASKFORMER_INPUT_SHAPE if name in MASKFORMER_NAMES else [None, 3, None, None]
    spec = [paddle.static.InputSpec(shape=shape, dtype="float32", name="x")]
    static = paddle.jit.to_static(wrapped, input_spec=spec, full_graph=True)
    paddle.jit.save(static, str(folder / "inference"))
    with open(folder / "inference.yml", "w", encoding="utf-8") as f:
        yaml.dump(inference_yml(name, legacy=legacy), f)


def _pir_enabled() -> bool:
    import paddle

    return bool(paddle.base.framework.get_flags([LEGACY_ENV])[LEGACY_ENV])


def _architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(
            f"unknown reference model {name!r}; known: {', '.join(REFERENCE_NAMES)}"
        ) from None


def tarball_name(name: str) -> str:
    """``<NAME>_infer.tar``, PaddleX's official file name."""
    return f"{name}_infer.tar"


def build_in_process(name: str, out_dir: Path, *, legacy: bool, seed: int) -> BuildReport:
    """Build, export and pack ``name`` in this process (its PIR mode must match ``legacy``)."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(name, seed=seed)
    low, high, classes = logits_summary(model, seed=seed)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=out_dir) as tmp:
        folder = Path(tmp) / f"{name}_infer"
        folder.mkdir()
        export_model(model, folder, name=name, legacy=legacy)
        (folder / REFERENCE_MARKER).write_text(
            f"{name}: fastseg reference build (converters/reference_models.py, version {REFERENCE_VERSION}, seed {seed}).\n"
            "Untrained, random weights: the architecture and cost of PaddleX's model, labels meaningless.\n"
        )
        partial = Path(tmp) / tarball_name(name)
        with tarfile.open(partial, "w") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=f"{folder.name}/{path.name}")
        target = out_dir / tarball_name(name)
        os.replace(partial, target)
    return BuildReport(name, target, time.perf_counter() - start, low, high, classes)


def build_reference(name: str, out_dir: Path, *, legacy: bool = False, seed: int = 0) -> Path:
    """Build ``<out_dir>/<name>_infer.tar``; returns its path.

    Runs in a subprocess so the Paddle program mode (PIR or legacy ProgramDesc) is set before
    paddle is imported, and so this process's Paddle state is left alone. The tarball appears
    atomically (written to a temp file in ``out_dir`` then renamed).
    """
    _architecture(name)
    if legacy and name in LEGACY_UNSUPPORTED:
        raise RuntimeError(
            f"{name} cannot be exported in the legacy format: {LEGACY_UNSUPPORTED[name]}; "
            "build it without legacy=True"
        )
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _child_env(legacy=legacy)
    repo_root = str(REPO_ROOT)
    command = [
        sys.executable, "-m", "converters.reference_models", "--models", name,
        "--out", str(out_dir), "--seed", str(seed), "--in-process",
    ] + (["--legacy"] if legacy else [])
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=repo_root)
    if result.returncode != 0:
        raise RuntimeError(
            f"building reference model {name} failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
    return out_dir / tarball_name(name)


def _child_env(*, legacy: bool) -> dict[str, str]:
    """The environment for a build process: Paddle's program mode and this repo importable."""
    env = dict(os.environ)
    env[LEGACY_ENV] = "0" if legacy else "1"
    env.setdefault("GLOG_minloglevel", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def ensure_reference(name: str, cache_dir: Path, *, legacy: bool = False) -> Path:
    """The cached tarball for ``name`` (PIR or legacy), building it on a cache miss."""
    sub = Path(cache_dir) / f"v{REFERENCE_VERSION}" / ("legacy" if legacy else "pir")
    target = sub / tarball_name(name)
    if target.is_file():
        return target
    return build_reference(name, sub, legacy=legacy)


def _parse_names(text: str) -> list[str]:
    if text == "all":
        return list(REFERENCE_NAMES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        _architecture(n)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="'all' or comma-separated names")
    parser.add_argument("--out", type=Path, required=True, help="folder for <NAME>_infer.tar")
    parser.add_argument("--legacy", action="store_true", help="ProgramDesc inference.pdmodel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        names = _parse_names(args.models)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    refused = [name for name in names if args.legacy and name in LEGACY_UNSUPPORTED]
    if refused:  # up front, before any build
        parser.error(f"--legacy cannot export {', '.join(refused)}: {LEGACY_UNSUPPORTED[refused[0]]}; "
                     "build it without --legacy")
    if not args.in_process and os.environ.get(LEGACY_ENV) != ("0" if args.legacy else "1"):
        # Re-run with the Paddle program mode fixed before paddle is imported.
        return subprocess.call([sys.executable, "-m", "converters.reference_models",
                                *(argv if argv is not None else sys.argv[1:])],
                               env=_child_env(legacy=args.legacy))
    for name in names:
        report = build_in_process(name, args.out, legacy=args.legacy, seed=args.seed)
        size_mb = report.tarball.stat().st_size / 1e6
        print(
            f"{report.name:22s} {report.seconds:7.1f} s {size_mb:8.1f} MB  "
            f"logits [{report.logit_min:9.3g}, {report.logit_max:9.3g}]  "
            f"argmax classes@{CALIBRATION_SIZE[0]}x{CALIBRATION_SIZE[1]}: "
            f"{report.argmax_classes}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
