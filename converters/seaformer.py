# Copyright (c) 2023 PaddlePaddle Authors. All Rights Reserved.
# Copyright (c) 2026 the fastseg authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#    http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""SeaFormer (Wan et al., "SeaFormer: Squeeze-enhanced Axial Transformer for Mobile Semantic
Segmentation", ICLR 2023, arXiv:2301.13156) for the reference builds.

PyPI ``paddleseg`` 2.8.0 has no SeaFormer, so this is a port of PaddleSeg's own implementation
(PaddlePaddle/PaddleSeg ``paddleseg/models/backbones/seaformer.py`` @c0768c69 and
``paddleseg/models/seaformer_seg.py``, Apache-2.0), which PaddleX trains and exports, with the
same layer and parameter names, so the exported graph has the same operators. Per-size
configurations are PaddleSeg's ``SeaFormer_tiny/small/base/large`` backbones and the heads of
PaddleX's ``SeaFormer_<size>.yaml``. Inference only: drop-path and dropout are identities.
"""

from __future__ import annotations

from dataclasses import dataclass

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddleseg.models import layers


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # rounding down must not lose more than 10%
        new_v += divisor
    return new_v


class Mlp(nn.Layer):
    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Layer]):
        super().__init__()
        self.fc1 = layers.ConvBN(in_features, hidden_features, 1, bias_attr=False)
        self.dwconv = nn.Conv2D(
            hidden_features, hidden_features, 3, 1, 1, bias_attr=True, groups=hidden_features
        )
        self.act = act_layer()
        self.fc2 = layers.ConvBN(hidden_features, in_features, 1, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class InvertedResidual(nn.Layer):
    def __init__(
        self, inp: int, oup: int, ks: int, stride: int, expand_ratio: int,
        activations: type[nn.Layer],
    ):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        modules: list[nn.Layer] = []
        if expand_ratio != 1:
            modules.append(layers.ConvBN(inp, hidden_dim, 1, bias_attr=False))
            modules.append(activations())
        modules.extend([
            layers.ConvBN(hidden_dim, hidden_dim, ks, stride=stride, padding=ks // 2,
                          groups=hidden_dim, bias_attr=False),
            activations(),
            layers.ConvBN(hidden_dim, oup, 1, bias_attr=False),
        ])
        self.conv = nn.Sequential(*modules)
        self.out_channels = oup

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class StackedMV2Block(nn.Layer):
    def __init__(
        self, in_channels: int, cfgs: list[list[int]], stem: bool, inp_channel: int,
        activation: type[nn.Layer] = nn.ReLU,
    ):
        super().__init__()
        self.stem = stem
        if stem:
            self.stem_block = nn.Sequential(
                layers.ConvBN(in_channels, inp_channel, 3, stride=2, padding=1, bias_attr=False),
                activation(),
            )
        self.layers: list[str] = []
        for i, (k, t, c, s) in enumerate(cfgs):
            output_channel = _make_divisible(c, 8)
            layer = InvertedResidual(inp_channel, output_channel, ks=k, stride=s,
                                     expand_ratio=t, activations=activation)
            self.add_sublayer(f"layer{i + 1}", layer)
            inp_channel = output_channel
            self.layers.append(f"layer{i + 1}")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.stem:
            x = self.stem_block(x)
        for name in self.layers:
            x = getattr(self, name)(x)
        return x


class SqueezeAxialPositionalEmbedding(nn.Layer):
    def __init__(self, dim: int, shape: int):
        super().__init__()
        self.pos_embed = self.create_parameter(
            shape=[1, dim, shape], dtype="float32",
            default_initializer=nn.initializer.Normal(),
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        B, C, N = x.shape
        return x + F.interpolate(
            self.pos_embed, size=[N], mode="linear", align_corners=False, data_format="NCW"
        )


class SeaAttention(nn.Layer):
    def __init__(
        self, dim: int, key_dim: int, num_heads: int, attn_ratio: float,
        activation: type[nn.Layer],
    ):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.nh_kd = key_dim * num_heads
        self.dh = int(attn_ratio * key_dim) * num_heads

        self.to_q = layers.ConvBN(dim, self.nh_kd, 1, bias_attr=False)
        self.to_k = layers.ConvBN(dim, self.nh_kd, 1, bias_attr=False)
        self.to_v = layers.ConvBN(dim, self.dh, 1, bias_attr=False)
        self.proj = nn.Sequential(activation(), layers.ConvBN(self.dh, dim, 1, bias_attr=False))
        self.proj_encode_row = nn.Sequential(
            activation(), layers.ConvBN(self.dh, self.dh, 1, bias_attr=False))
        self.pos_emb_rowq = SqueezeAxialPositionalEmbedding(self.nh_kd, 16)
        self.pos_emb_rowk = SqueezeAxialPositionalEmbedding(self.nh_kd, 16)
        self.proj_encode_column = nn.Sequential(
            activation(), layers.ConvBN(self.dh, self.dh, 1, bias_attr=False))
        self.pos_emb_columnq = SqueezeAxialPositionalEmbedding(self.nh_kd, 16)
        self.pos_emb_columnk = SqueezeAxialPositionalEmbedding(self.nh_kd, 16)
        self.dwconv = layers.ConvBN(2 * self.dh, 2 * self.dh, 3, stride=1, padding=1,
                                    dilation=1, groups=2 * self.dh, bias_attr=False)
        self.act = activation()
        self.pwconv = layers.ConvBN(2 * self.dh, dim, 1, bias_attr=False)
        self.sigmoid = nn.Hardsigmoid()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        B, C, H, W = x.shape
        q = self.to_q(x)
        k = self.to_k(x)
        v = self.to_v(x)

        # detail enhancement
        qkv = paddle.concat([q, k, v], axis=1)
        qkv = self.pwconv(self.act(self.dwconv(qkv)))

        # squeeze axial attention: rows
        qrow = self.pos_emb_rowq(q.mean(-1)).reshape(
            [B, self.num_heads, -1, H]).transpose([0, 1, 3, 2])
        krow = self.pos_emb_rowk(k.mean(-1)).reshape([B, self.num_heads, -1, H])
        vrow = v.mean(-1).reshape([B, self.num_heads, -1, H]).transpose([0, 1, 3, 2])
        attn_row = F.softmax(paddle.matmul(qrow, krow) * self.scale, axis=-1)
        xx_row = paddle.matmul(attn_row, vrow)  # B nH H C
        xx_row = self.proj_encode_row(
            xx_row.transpose([0, 1, 3, 2]).reshape([B, self.dh, H, 1]))

        # columns
        qcolumn = self.pos_emb_columnq(q.mean(-2)).reshape(
            [B, self.num_heads, -1, W]).transpose([0, 1, 3, 2])
        kcolumn = self.pos_emb_columnk(k.mean(-2)).reshape([B, self.num_heads, -1, W])
        vcolumn = v.mean(-2).reshape([B, self.num_heads, -1, W]).transpose([0, 1, 3, 2])
        attn_column = F.softmax(paddle.matmul(qcolumn, kcolumn) * self.scale, axis=-1)
        xx_column = paddle.matmul(attn_column, vcolumn)  # B nH W C
        xx_column = self.proj_encode_column(
            xx_column.transpose([0, 1, 3, 2]).reshape([B, self.dh, 1, W]))

        xx = v.add(xx_row.add(xx_column))
        xx = self.proj(xx)
        return self.sigmoid(xx) * qkv


class Block(nn.Layer):
    def __init__(self, dim: int, key_dim: int, num_heads: int, mlp_ratio: float,
                 attn_ratio: float, act_layer: type[nn.Layer]):
        super().__init__()
        self.attn = SeaAttention(dim, key_dim=key_dim, num_heads=num_heads,
                                 attn_ratio=attn_ratio, activation=act_layer)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)

    def forward(self, x1: paddle.Tensor) -> paddle.Tensor:
        x1 = x1 + self.attn(x1)
        return x1 + self.mlp(x1)


class BasicLayer(nn.Layer):
    def __init__(self, block_num: int, embedding_dim: int, key_dim: int, num_heads: int,
                 mlp_ratio: float, attn_ratio: float, act_layer: type[nn.Layer]):
        super().__init__()
        self.transformer_blocks = nn.LayerList([
            Block(embedding_dim, key_dim, num_heads, mlp_ratio, attn_ratio, act_layer)
            for _ in range(block_num)
        ])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


@dataclass(frozen=True)
class SeaFormerConfig:
    """One size: PaddleSeg's backbone arguments plus the head of PaddleX's config."""

    cfgs: tuple[tuple[tuple[int, int, int, int], ...], ...]
    channels: tuple[int, ...]
    emb_dims: tuple[int, ...]
    key_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: int
    mlp_ratios: tuple[int, ...]
    feat_channels: tuple[int, ...]
    head_channels: int
    head_embed_dims: tuple[int, ...]
    in_index: tuple[int, ...]


CONFIGS: dict[str, SeaFormerConfig] = {
    "tiny": SeaFormerConfig(
        cfgs=(((3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)),
              ((5, 3, 32, 2), (5, 3, 32, 1)), ((3, 3, 64, 2), (3, 3, 64, 1)),
              ((5, 3, 128, 2),), ((3, 6, 160, 2),)),
        channels=(16, 16, 32, 64, 128, 160), emb_dims=(128, 160), key_dims=(16, 24),
        depths=(2, 2), num_heads=4, mlp_ratios=(2, 4), feat_channels=(32, 128, 160),
        head_channels=96, head_embed_dims=(64, 96), in_index=(0, 1, 2),
    ),
    "small": SeaFormerConfig(
        cfgs=(((3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1)),
              ((5, 3, 48, 2), (5, 3, 48, 1)), ((3, 3, 96, 2), (3, 3, 96, 1)),
              ((5, 4, 160, 2),), ((3, 6, 192, 2),)),
        channels=(16, 24, 48, 96, 160, 192), emb_dims=(160, 192), key_dims=(16, 24),
        depths=(3, 3), num_heads=6, mlp_ratios=(2, 4), feat_channels=(48, 160, 192),
        head_channels=128, head_embed_dims=(96, 128), in_index=(0, 1, 2),
    ),
    "base": SeaFormerConfig(
        cfgs=(((3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1)),
              ((5, 3, 64, 2), (5, 3, 64, 1)), ((3, 3, 128, 2), (3, 3, 128, 1)),
              ((5, 4, 192, 2),), ((3, 6, 256, 2),)),
        channels=(16, 32, 64, 128, 192, 256), emb_dims=(192, 256), key_dims=(16, 24),
        depths=(4, 4), num_heads=8, mlp_ratios=(2, 4), feat_channels=(64, 192, 256),
        head_channels=160, head_embed_dims=(128, 160), in_index=(0, 1, 2),
    ),
    "large": SeaFormerConfig(
        cfgs=(((3, 3, 32, 1), (3, 4, 64, 2), (3, 4, 64, 1)),
              ((5, 4, 128, 2), (5, 4, 128, 1)), ((3, 4, 192, 2), (3, 4, 192, 1)),
              ((5, 4, 256, 2),), ((3, 6, 320, 2),)),
        channels=(32, 64, 128, 192, 256, 320), emb_dims=(192, 256, 320),
        key_dims=(16, 20, 24), depths=(3, 3, 3), num_heads=8, mlp_ratios=(2, 4, 6),
        feat_channels=(128, 192, 256, 320),
        head_channels=192, head_embed_dims=(128, 160, 192), in_index=(0, 1, 2, 3),
    ),
}


class SeaFormer(nn.Layer):
    """The backbone: MobileNetV2 stages, the last ones followed by SeaFormer blocks."""

    def __init__(self, config: SeaFormerConfig, in_channels: int = 3,
                 attn_ratios: float = 2, act_layer: type[nn.Layer] = nn.ReLU6):
        super().__init__()
        self.cfgs = config.cfgs
        self.depths = config.depths
        self.feat_channels = list(config.feat_channels)
        for i, cfg in enumerate(config.cfgs):
            smb = StackedMV2Block(in_channels, [list(c) for c in cfg], stem=i == 0,
                                  inp_channel=config.channels[i])
            setattr(self, f"smb{i + 1}", smb)
        for i, depth in enumerate(config.depths):
            trans = BasicLayer(depth, config.emb_dims[i], config.key_dims[i],
                               config.num_heads, config.mlp_ratios[i], attn_ratios, act_layer)
            setattr(self, f"trans{i + 1}", trans)

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        outputs = []
        num_smb_stage = len(self.cfgs)
        num_trans_stage = len(self.depths)
        for i in range(num_smb_stage):
            x = getattr(self, f"smb{i + 1}")(x)
            if i == 1:  # the 1/8 shared feature
                outputs.append(x)
            if num_trans_stage + i >= num_smb_stage:
                x = getattr(self, f"trans{i + num_trans_stage - num_smb_stage + 1}")(x)
                outputs.append(x)
        return outputs


class FusionBlock(nn.Layer):
    def __init__(self, inp: int, oup: int, embed_dim: int):
        super().__init__()
        self.local_embedding = layers.ConvBN(inp, embed_dim, kernel_size=1, bias_attr=False)
        self.global_act = layers.ConvBN(oup, embed_dim, kernel_size=1, bias_attr=False)
        self.act = nn.Hardsigmoid()

    def forward(self, x_l: paddle.Tensor, x_g: paddle.Tensor) -> paddle.Tensor:
        B, C, H, W = x_l.shape
        local_feat = self.local_embedding(x_l)
        sig_act = F.interpolate(self.act(self.global_act(x_g)), size=[H, W],
                                mode="bilinear", align_corners=False)
        return local_feat * sig_act


class SeaFormerSeg(nn.Layer):
    """PaddleSeg's SeaFormerSeg with input_transform 'multiple_select' and a depthwise fuse."""

    def __init__(self, backbone: SeaFormer, config: SeaFormerConfig, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.in_index = list(config.in_index)
        self.embed_dims = list(config.head_embed_dims)
        in_channels = backbone.feat_channels
        head = config.head_channels
        self.linear_fuse = layers.ConvBNReLU(head, head, 1, stride=1, groups=head,
                                             bias_attr=False)
        self.cls_seg = nn.Conv2D(head, num_classes, kernel_size=1)
        for i, dim in enumerate(self.embed_dims):
            fuse = FusionBlock(in_channels[0] if i == 0 else self.embed_dims[i - 1],
                               in_channels[i + 1], embed_dim=dim)
            setattr(self, f"fuse{i + 1}", fuse)

    def forward(self, inputs: paddle.Tensor) -> list[paddle.Tensor]:
        B, C, H, W = inputs.shape
        feats = self.backbone(inputs)
        xx = [feats[i] for i in self.in_index]
        x_detail = xx[0]
        for i in range(len(self.embed_dims)):
            x_detail = getattr(self, f"fuse{i + 1}")(x_detail, xx[i + 1])
        x = self.cls_seg(self.linear_fuse(x_detail))
        return [F.interpolate(x, size=[H, W], mode="bilinear", align_corners=False)]


def seaformer_seg(size: str, *, num_classes: int = 150) -> SeaFormerSeg:
    """PaddleX's ``SeaFormer_<size>`` (tiny, small, base, large) with ``num_classes`` outputs."""
    try:
        config = CONFIGS[size]
    except KeyError:
        raise KeyError(f"unknown SeaFormer size {size!r}; known: {', '.join(CONFIGS)}") from None
    return SeaFormerSeg(SeaFormer(config), config, num_classes)
