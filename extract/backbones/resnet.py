"""ResNet-18/34/50/101/152 in plain torch, with torchvision's module names.

torchvision from PyPI does not import beside the CPU torch wheel framesel pins, so the
architecture is written here (He et al. 2016, torchvision's "v1.5": the stride of a
bottleneck sits on its 3x3 conv, as in mmaction2's ``style='pytorch'``). The module names
are torchvision's (``conv1``, ``bn1``, ``layerX.Y.convN``/``bnN``, ``downsample.{0,1}``,
``fc``), so torchvision files load as they are and the other layouts are renamed to them
(checkpoints.py). No package ships ResNet video weights: these backbones need the user's
``--checkpoint`` (mmaction2 TSN, TSN-pytorch or torchvision files); the flow stem takes the
checkpoint's 2L channels, or the cross-modality init of an RGB checkpoint's.
"""
from __future__ import annotations

from torch import Tensor, nn

from data.errors import InputError
from extract.backbones.checkpoints import load_strict, user_weights
from extract.backbones.spec import Backbone, NetBackbone, register_backbone

INPUT_SIZE = 224


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, width * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


class ResNet(nn.Module):
    """torchvision's ResNet body: stem, four stages, and an ``fc`` of ``num_classes`` (none at 0)."""

    def __init__(self, depth: int, in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        block, counts = DEPTHS[depth]
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for i, n in enumerate(counts):
            width = 64 * 2 ** i
            layers = [block(cin, width, 1 if i == 0 else 2)]
            cin = width * block.expansion
            layers += [block(cin, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = cin
        self.fc = nn.Linear(cin, num_classes) if num_classes else None

    def feature_maps(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_resnet(depth: int, in_channels: int, checkpoint: str | None) -> Backbone:
    """ResNet-``depth`` from the user's checkpoint (any layout checkpoints.py reads)."""
    arch = f"resnet{depth}"
    if checkpoint is None:
        raise InputError(f"{arch} ships no weights (no package carries video ResNet weights): pass your own, "
                         f"e.g. --backbone {arch} --checkpoint rgb=tsn_r50_rgb.pth --checkpoint flow=tsn_r50_flow.pth")
    feature_dim = DEPTHS[depth][0].expansion * 512
    state, spec = user_weights(checkpoint, family="resnet", arch=arch, in_channels=in_channels,
                               stem_key="conv1.weight", head_key="fc", feature_dim=feature_dim,
                               input_size=INPUT_SIZE)
    net = ResNet(depth, in_channels, spec.num_classes)
    load_strict(net, state, checkpoint)
    return NetBackbone(net, spec, in_channels)


def _register(depth: int) -> None:
    def build(in_channels: int, checkpoint: str | None) -> Backbone:
        return build_resnet(depth, in_channels, checkpoint)
    build.__doc__ = f"ResNet-{depth} (torchvision names, 224 px), from the user's --checkpoint."
    register_backbone(f"resnet{depth}")(build)


for _depth in DEPTHS:
    _register(_depth)
