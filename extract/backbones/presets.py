"""Preprocessing presets: how a weight family wants its RGB pixels and its flow.

A network only works on inputs scaled the way it was trained, and a wrong flow scaling
silently ruins the flow stream (issue 12). Every family in the peers' model zoos writes its
inputs one way:

================  ==========================================  ==============================
preset            RGB                                          flow (q: 0..255 from ±bound)
================  ==========================================  ==============================
``framesel``      RGB in [-1, 1] (EfficientNet-Lite)           f / bound (q / 127.5 − 1, unrounded)
``mmaction2``     RGB 0..255, mean (123.675, 116.28, 103.53),  (q − 128) / 128
                  std (58.395, 57.12, 57.375)
``tsn_pytorch``   RGB 0..1, ImageNet mean/std                  (q / 255 − 0.5) / 0.226
``caffe_bgr``     BGR 0..255 minus (104, 117, 128), std 1      q − 128
``imagenet``      RGB 0..1, ImageNet mean/std (torchvision,    as tsn_pytorch
                  DINOv2)
``clip``          RGB 0..1, OpenAI CLIP's mean/std             (image towers take no flow)
                  (0.4815, 0.4578, 0.4082) / (0.2686, 0.2613,
                  0.2758)
``siglip``        RGB in [-1, 1] (SigLIP: mean = std = 0.5)    (image towers take no flow)
================  ==========================================  ==============================

Means and stds are stored on the [0, 1] pixel scale whatever the family's own units
(mmaction2's 123.675 is 123.675 / 255 here): ``x = (pixel / 255 − mean) / std``, which is
the same number. Flow is quantised as TSN's JPEG flow was (dense_flow: q = (f + b) · 255 /
2b, clipped to [0, 255], rounded) for every family trained on such images; ``framesel``'s
own preset keeps the float flow (no rounding), as framesel has always extracted it.
Channels are interleaved x1, y1, x2, y2, … for every family.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from data.errors import InputError
from extract.arrays import as_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)       # OpenAI CLIP (open_clip's OPENAI_DATASET_MEAN)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preset:
    """One family's input scaling. RGB: ``(pixel / 255 − mean) / std`` per channel, in BGR
    order when ``bgr``. Flow: ``q · flow_scale + flow_shift`` with q ∈ [0, 255] the flow
    mapped linearly from [−bound, bound], rounded to integers when ``flow_quantise``."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool
    flow_scale: float
    flow_shift: float
    flow_quantise: bool

    def record(self) -> dict:
        """The preset as the store records it (framesel info shows it)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("framesel", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), False, 1 / 127.5, -1.0, False),
    Preset("mmaction2", (123.675 / 255, 116.28 / 255, 103.53 / 255), (58.395 / 255, 57.12 / 255, 57.375 / 255),
           False, 1 / 128, -1.0, True),
    Preset("tsn_pytorch", IMAGENET_MEAN, IMAGENET_STD, False, 1 / (255 * 0.226), -0.5 / 0.226, True),
    Preset("caffe_bgr", (104 / 255, 117 / 255, 128 / 255), (1 / 255, 1 / 255, 1 / 255), True, 1.0, -128.0, True),
    Preset("imagenet", IMAGENET_MEAN, IMAGENET_STD, False, 1 / (255 * 0.226), -0.5 / 0.226, True),
    Preset("clip", CLIP_MEAN, CLIP_STD, False, 1 / 127.5, -1.0, False),
    Preset("siglip", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), False, 1 / 127.5, -1.0, False),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; InputError listing the known ones otherwise."""
    if name not in PRESETS:
        raise InputError(f"unknown preprocessing preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def preprocess_rgb(crops_uint8, spec) -> Tensor:
    """(N, S, S, 3) uint8 RGB crops (numpy, or a tensor on any device) -> (N, 3, S, S)
    float32 on the same device, scaled by ``spec.preset`` (channels reversed to BGR first
    when the preset says so).

    The result is channels_last in memory (a permuted view of the NHWC input, then scaled),
    which is the layout the backbones run fastest in.
    """
    x = as_tensor(crops_uint8)[0]
    size, p = spec.input_size, spec.preset
    if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (size, size, 3):
        raise InputError(f"RGB crops must be (N, {size}, {size}, 3) uint8, got {tuple(x.shape)} {x.dtype}")
    if p.bgr:
        x = x.flip(-1)
    t = x.permute(0, 3, 1, 2).float()
    # Fold /255, -mean and /std into one multiply-add per channel.
    scale = torch.tensor([1.0 / (255.0 * s) for s in p.std], device=t.device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(p.mean, p.std)], device=t.device).view(1, 3, 1, 1)
    return t.mul_(scale).add_(shift)


def preprocess_flow(crops_flow, bound: float, preset: Preset | None = None) -> Tensor:
    """(N, L, S, S, 2) flow in pixels (or uint8 levels), numpy or a tensor on any device ->
    (N, 2L, S, S) float32 network input on the same device, scaled by ``preset`` (framesel's own, f / bound in [−1, 1], when None). Channels are
    ordered x1, y1, x2, y2, … as in TSN.

    Float flow is clipped to ±bound; u = f / bound is the level q = 127.5 (u + 1), rounded
    when the preset quantises; uint8 input is taken as levels already (TSN's JPEG flow).
    """
    p = preset or PRESETS["framesel"]
    x = as_tensor(crops_flow)[0]
    if x.ndim != 5 or x.shape[-1] != 2:
        raise InputError(f"flow crops must be (N, L, S, S, 2), got {tuple(x.shape)}")
    if not bound > 0:
        raise InputError(f"flow bound must be positive, got {bound!r}")
    if x.dtype == torch.uint8:
        t = x.float().mul_(p.flow_scale).add_(p.flow_shift)
    elif not x.is_floating_point():
        raise InputError(f"flow crops must be float or uint8, got {x.dtype}")
    else:
        t = x.float().clamp(-bound, bound).div_(bound)
        if p.flow_quantise:
            t = t.add_(1.0).mul_(127.5).round_().mul_(p.flow_scale).add_(p.flow_shift)
        else:   # q · scale + shift without the rounding: exactly f / bound for framesel's own
            t = t.mul_(127.5 * p.flow_scale).add_(127.5 * p.flow_scale + p.flow_shift)
    n, stack, h, w, _ = t.shape
    # (N, L, S, S, 2) -> (N, S, S, L, 2) -> (N, S, S, 2L): channel 2l is x_l, 2l+1 is y_l.
    t = t.permute(0, 2, 3, 1, 4).reshape(n, h, w, 2 * stack)
    return t.permute(0, 3, 1, 2)
