"""MaskFormer_tiny / MaskFormer_small reference builds, configured and exported as PaddleX does.

PaddleX's configs (``paddlex/repo_apis/PaddleSeg_api/configs/MaskFormer_{tiny,small}.yaml``,
not shipped in the 3.7.2 wheel; read from the PaddleX repository): ``MaskFormer`` with
``SwinTransformer_{tiny,small}_patch4_window7_224_maskformer``, 150 classes; val transforms
``Resize target_size [512, 512], keep_ratio False, interp LINEAR`` then ImageNet ``Normalize``.
PaddleX's module config (``paddlex/configs/modules/semantic_segmentation/MaskFormer_*.yaml``,
in the wheel) exports with ``input_shape: [1, 3, 512, 512]`` ("export the model with fixed
input shape"), so the official graph's input is fixed [1, 3, 512, 512] and every image is
resized to 512x512 by the inference.yml Resize, then the label map is resized back (nearest).

In eval mode PaddleSeg's ``MaskFormer.forward`` returns ``einsum('qc,qhw->chw',
softmax(class)[..., :-1], sigmoid(masks))`` upsampled to the input size: [1, 150, H, W]
scores, to which the export appends ``argmax(axis=1, dtype=int32)``. (It keeps only the last
image of a batch, which is why the export is batch 1.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import paddle

MASKFORMER_INPUT_SHAPE = [1, 3, 512, 512]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Spread of the random class logits and mask logits (std over queries/pixels): a trained
# model's order, so the class x mask combination has clear winners rather than float ties.
CLASS_LOGIT_STD = 6.0
MASK_LOGIT_STD = 1.0
MASKFORMER_NAMES = ("MaskFormer_tiny", "MaskFormer_small")


def maskformer(size: str, num_classes: int) -> "paddle.nn.Layer":
    """PaddleSeg's MaskFormer with the Swin backbone of PaddleX's ``MaskFormer_<size>``."""
    from paddleseg.models import MaskFormer
    from paddleseg.models.backbones import swin_transformer

    backbone_cls = getattr(swin_transformer, f"SwinTransformer_{size}_patch4_window7_224_maskformer")
    return MaskFormer(num_classes=num_classes, backbone=backbone_cls())


def scale_mask_heads(model: "paddle.nn.Layer", images: Any) -> tuple[float, float]:
    """Give the class and mask heads a trained model's spread; returns the stds before scaling.

    ``scale_classifier`` looks for class convolutions, which MaskFormer has not: its classes
    come from ``class_embed`` (Linear, 151 outputs) and its masks from ``mask_embed``'s last
    Linear dotted with the pixel decoder's features. With random weights every query's class
    logits and mask embedding were nearly the same (a shared component), and the pixel
    features share a large mean vector, so one class won every pixel. Measured on ``images``:
    the biases subtract the across-query means (queries then differ), the mask embeddings are
    made orthogonal to the mean pixel feature (masks then vary over the image), and both
    heads are scaled to a trained model's spread (they are linear in these weights).
    """
    import paddle

    predictor = model.seghead.predictor
    last = predictor.mask_embed.layers[-1]
    captured: list[Any] = []
    hook = last.register_forward_post_hook(lambda _layer, _inp, out: captured.append(out.numpy()))
    model.eval()
    with paddle.no_grad():
        features = model.backbone(paddle.to_tensor(images))
        mask_features = model.seghead.pixel_decoder(features)[0].numpy()
        out = model.seghead(features)
        hook.remove()
        embed = captured[-1][-1, 0]  # last decoder layer, image 0: [queries, mask_dim]
        logits = out["pred_logits"].numpy()[0]  # [queries, classes + 1]
        predictor.class_embed.bias.set_value(
            paddle.to_tensor(predictor.class_embed.bias.numpy() - logits.mean(axis=0))
        )
        mean = mask_features.mean(axis=(0, 2, 3))
        unit = mean / max(float(np.linalg.norm(mean)), 1e-12)
        project = np.eye(unit.size, dtype=np.float32) - np.outer(unit, unit).astype(np.float32)
        # Paddle's Linear is x @ W + b with W [in, out]: centre and project the output side.
        last.weight.set_value(paddle.to_tensor(last.weight.numpy() @ project))
        last.bias.set_value(paddle.to_tensor((last.bias.numpy() - embed.mean(axis=0)) @ project))
        out = model.seghead(features)
    class_std = float(np.std(out["pred_logits"].numpy()))
    mask_std = float(np.std(out["pred_masks"].numpy()))
    for layer, factor in (
        (predictor.class_embed, CLASS_LOGIT_STD / max(class_std, 1e-12)),
        (last, MASK_LOGIT_STD / max(mask_std, 1e-12)),
    ):
        layer.weight.set_value(layer.weight * factor)
        if layer.bias is not None:
            layer.bias.set_value(layer.bias * factor)
    return class_std, mask_std


def maskformer_inference_yml(name: str) -> dict[str, Any]:
    """The inference.yml PaddleSeg's export writes for PaddleX's MaskFormer (fixed 512x512)."""
    return {
        "Deploy": {
            "model": "inference.pdmodel",
            "params": "inference.pdiparams",
            "transforms": [
                {"type": "Resize", "target_size": [512, 512], "keep_ratio": False, "interp": "LINEAR"},
                {"type": "Normalize", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            ],
            "input_shape": list(MASKFORMER_INPUT_SHAPE),
            "output_op": "argmax",
            "output_dtype": "int32",
        },
        "Global": {"model_name": name},
    }
