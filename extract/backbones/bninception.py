"""BN-Inception (Ioffe & Szegedy 2015) in plain torch, as TSN's caffe-converted model.

The network is Inception-v2 with batch normalisation after every convolution. TSN (Wang et
al. 2016) trained its two streams from the caffe model; its PyTorch port (TSN-pytorch's
``tf_model_zoo/bninception/bn_inception.yaml``) and Cadene's pretrained-models.pytorch
(``pretrainedmodels/models/bninception.py``) converted it with the caffe layer names, which
this module keeps: ``conv1_7x7_s2``/``conv1_7x7_s2_bn``, ``conv2_3x3_reduce``, ``conv2_3x3``,
then per block ``inception_<id>_{1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3_1,
double_3x3_2, pool_proj}``, each with its ``_bn``; the classifier is ``fc`` (Cadene's
``last_linear`` and TSN's ``new_fc`` are renamed to it by checkpoints.py). So the
``bn_inception_*.pth`` files researchers hold load as they are.

As in caffe: every convolution has a bias; conv -> BN (eps 1e-5, momentum 0.1) -> ReLU;
pools round up (``ceil_mode=True``); the branches concatenate in the order 1x1, 3x3,
double 3x3, pool. Blocks 3c and 4e are the stride-2 reductions (no 1x1 branch; their pool
branch is a bare 3x3/2 max pool); 5b's pool branch is a 3x3/1 max pool, the others a 3x3/1
average pool counting the padding. At 224 px the last map is (1024, 7, 7); its global
average is the 1024-d feature.

Input: BGR 0..255 minus (104, 117, 128), std 1 (the ``caffe_bgr`` preset, which
checkpoints.detect_layout picks for these layouts); flow is its JPEG levels q − 128. No
package ships BN-Inception video weights: the backbone needs the user's ``--checkpoint``
(caffe-converted, TSN-pytorch or mmaction2 files); the flow stem takes the checkpoint's 2L
channels, or the cross-modality init of an RGB checkpoint's.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from data.errors import InputError
from extract.backbones.checkpoints import load_strict, user_weights
from extract.backbones.spec import Backbone, NetBackbone, register_backbone

INPUT_SIZE = 224
FEATURE_DIM = 1024
BN_EPS, BN_MOMENTUM = 1e-5, 0.1    # caffe's BN as both conversions build it (torch's defaults)


class Block(NamedTuple):
    """One inception block: its output widths per branch (a reduction block has no 1x1
    branch and no pool projection: ``c1x1 == proj == 0``, and its 3x3 convs stride 2)."""

    name: str
    c1x1: int
    c3x3: tuple[int, int]       # (3x3_reduce, 3x3)
    double: tuple[int, int]     # (double_3x3_reduce, double_3x3_1 and _2)
    pool: str                   # "avg" (3x3/1), "max" (3x3/1) or "reduce" (3x3/2 max)
    proj: int

    @property
    def reduces(self) -> bool:
        return self.pool == "reduce"


BLOCKS = (
    Block("3a", 64, (64, 64), (64, 96), "avg", 32),
    Block("3b", 64, (64, 96), (64, 96), "avg", 64),
    Block("3c", 0, (128, 160), (64, 96), "reduce", 0),
    Block("4a", 224, (64, 96), (96, 128), "avg", 128),
    Block("4b", 192, (96, 128), (96, 128), "avg", 128),
    Block("4c", 160, (128, 160), (128, 160), "avg", 128),
    Block("4d", 96, (128, 192), (160, 192), "avg", 128),
    Block("4e", 0, (128, 192), (192, 256), "reduce", 0),
    Block("5a", 352, (192, 320), (160, 224), "avg", 128),
    Block("5b", 352, (192, 320), (192, 224), "max", 128),
)


def _pool(kind: str) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=True)
    if kind == "max":
        return nn.MaxPool2d(3, 1, 1, ceil_mode=True)
    return nn.MaxPool2d(3, 2, ceil_mode=True)


class BNInception(nn.Module):
    """The caffe-named network: stem, blocks 3a–5b, and an ``fc`` of ``num_classes`` (none at 0).

    Layers are registered flat under their caffe names (``self.inception_3a_1x1``, …), so
    the state_dict keys are the converted checkpoints'; :data:`BLOCKS` drives the forward.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        self._conv("conv1_7x7_s2", in_channels, 64, 7, 2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self._conv("conv2_3x3_reduce", 64, 64, 1)
        self._conv("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        cin = 192
        for block in BLOCKS:
            cin = self._block(block, cin)
        assert cin == FEATURE_DIM
        self.feature_dim = FEATURE_DIM
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None

    def _conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1) -> int:
        """Register ``name`` (conv with bias, 'same' padding) and ``name_bn``; -> cout."""
        setattr(self, name, nn.Conv2d(cin, cout, k, stride, k // 2, bias=True))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM))
        return cout

    def _block(self, b: Block, cin: int) -> int:
        """Register block ``b``'s layers on a ``cin``-channel input; -> its output channels."""
        p, stride = f"inception_{b.name}", 2 if b.reduces else 1
        cout = self._conv(f"{p}_1x1", cin, b.c1x1, 1) if b.c1x1 else 0
        self._conv(f"{p}_3x3_reduce", cin, b.c3x3[0], 1)
        cout += self._conv(f"{p}_3x3", b.c3x3[0], b.c3x3[1], 3, stride)
        self._conv(f"{p}_double_3x3_reduce", cin, b.double[0], 1)
        self._conv(f"{p}_double_3x3_1", b.double[0], b.double[1], 3)
        cout += self._conv(f"{p}_double_3x3_2", b.double[1], b.double[1], 3, stride)
        setattr(self, f"{p}_pool", _pool(b.pool))
        return cout + (self._conv(f"{p}_pool_proj", cin, b.proj, 1) if b.proj else cin)

    def _cbr(self, name: str, x: Tensor) -> Tensor:
        """conv ``name`` -> its BN -> ReLU (in place on the BN output, as caffe's)."""
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)), inplace=True)

    def _inception(self, b: Block, x: Tensor) -> Tensor:
        p = f"inception_{b.name}"
        branches = [self._cbr(f"{p}_1x1", x)] if b.c1x1 else []
        branches.append(self._cbr(f"{p}_3x3", self._cbr(f"{p}_3x3_reduce", x)))
        y = self._cbr(f"{p}_double_3x3_1", self._cbr(f"{p}_double_3x3_reduce", x))
        branches.append(self._cbr(f"{p}_double_3x3_2", y))
        y = getattr(self, f"{p}_pool")(x)
        branches.append(self._cbr(f"{p}_pool_proj", y) if b.proj else y)
        return torch.cat(branches, 1)

    def feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, 224, 224) -> (B, 1024, 7, 7): inception_5b's output."""
        x = self.pool1_3x3_s2(self._cbr("conv1_7x7_s2", x))
        x = self.pool2_3x3_s2(self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x)))
        for block in BLOCKS:
            x = self._inception(block, x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, 224, 224) -> (B, C) logits; the (B, 1024) features without a head."""
        feats = self.feature_maps(x).mean(dim=(2, 3))
        return feats if self.fc is None else self.fc(feats)


@register_backbone("bninception")
def build_bninception(in_channels: int, checkpoint: str | None) -> Backbone:
    """BN-Inception (caffe names, 224 px), from the user's --checkpoint (any layout checkpoints.py reads)."""
    if checkpoint is None:
        raise InputError("bninception ships no weights (no package carries BN-Inception video weights): pass "
                         "your own, e.g. --backbone bninception --checkpoint rgb=tsn_bn_inception_rgb.pth "
                         "--checkpoint flow=tsn_bn_inception_flow.pth")
    state, spec = user_weights(checkpoint, family="bninception", arch="bninception", in_channels=in_channels,
                               stem_key="conv1_7x7_s2.weight", head_key="fc", feature_dim=FEATURE_DIM,
                               input_size=INPUT_SIZE)
    net = BNInception(in_channels, spec.num_classes)
    load_strict(net, state, checkpoint)
    return NetBackbone(net, spec, in_channels)
