"""Resizing frames for a backbone before its crops are cut.

Frames are decoded at the store's frame size (TSN's 340x256), which is what flow is computed
on and what the classic 224 px networks crop from. A backbone is fed differently when

- its weights come with their own preprocessing: the image towers resize the short side to
  the processor's ``shortest_edge`` (CLIP 224, DINOv2 256, SigLIP its input size) and crop
  the input size from that (extract/backbones/towers.py); or
- its input exceeds the frame (EfficientNet-Lite2's 260 px from 256 px high frames): the
  short side is resized to the input size, so the crops fit (issue 26.2).

The rule (:func:`plan_resize`) keeps the aspect ratio as Hugging Face's image processors
and torchvision's ``Resize(int)`` do: the short side becomes R, the long side
``int(R · long / short)`` (340x256 → 297x224 at R = 224, 345x260 at 260). The store's 1, 3
or 10 crops are then cut from the resized frame (centre, thirds, corners + centre and their
flips: extract/crops.py). RGB frames are resized with PIL, the filter the weights name
(bicubic for every family here), so they equal the image processors' PIL path pixel for
pixel. Flow fields (only a classic network's flow stream can need it) are interpolated
bilinearly as images, their values unchanged, as TSN's pipelines resize flow JPEGs.
SigLIP's own processor squashes the whole frame to a square; framesel keeps the aspect ratio
and crops instead, so that the store's crops exist for it too (a documented departure).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data.errors import InputError

# PIL's filter codes (PIL.Image.Resampling), which image processors record as ``resample``
RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


@dataclass(frozen=True)
class Resize:
    """Frames of ``frame`` (w, h) become ``size`` (w, h), short side ``short_side``."""

    short_side: int
    frame: tuple[int, int]
    size: tuple[int, int]
    resample: str
    reason: str

    def record(self) -> dict:
        """What the store records (attrs ``backbone[stream]["resize"]``)."""
        return {"short_side": self.short_side, "from": list(self.frame), "to": list(self.size),
                "resample": self.resample, "library": "PIL" if self.resample != "bilinear-flow" else "torch",
                "reason": self.reason, "rule": "short side to R, long side int(R * long / short), then the crops"}


def resized_size(frame: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(w, h) of a ``frame`` (w, h) whose short side becomes ``short_side`` (aspect kept, the
    long side truncated as Hugging Face's ``get_resize_output_image_size`` does)."""
    w, h = (int(v) for v in frame)
    if w <= h:
        return short_side, int(short_side * h / w)
    return int(short_side * w / h), short_side


def plan_resize(spec, frame: tuple[int, int], stream: str = "rgb") -> Resize | None:
    """How ``stream``'s frames of size ``frame`` (w, h) are resized for the weights ``spec``
    (a WeightSpec): to ``spec.resize`` when the weights say so, else to the input size when
    the crop exceeds the frame; None when the frame is used as decoded.

    Raises InputError (before any video) when the weights' short side is smaller than their
    crop, or a resample filter is unknown.
    """
    w, h = (int(v) for v in frame)
    size = int(spec.input_size)
    target, reason = spec.resize, "the weights' own preprocessing"
    if target is None and size > min(w, h):
        target, reason = size, f"the {size} px input exceeds the {w}x{h} frame"
    if target is None:
        return None
    if target < size:
        raise InputError(f"{spec.name}: its preprocessing resizes the short side to {target} px, smaller "
                         f"than its {size} px crop")
    if spec.resample not in RESAMPLE:
        raise InputError(f"{spec.name}: unknown resample filter {spec.resample!r}; known: {', '.join(RESAMPLE)}")
    if target == min(w, h):
        return None
    resample = spec.resample if stream == "rgb" else "bilinear-flow"
    return Resize(int(target), (w, h), resized_size((w, h), int(target)), resample, reason)


def resize_frames(frames: np.ndarray, resize: Resize) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, h, w, 3) uint8 with PIL's ``resize.resample`` filter
    (the pixels Hugging Face's PIL image processors compute)."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames to resize must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    w, h = resize.size
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(frame).resize((w, h), resample=RESAMPLE[resize.resample]))
    return out


def resize_flow(stacks: torch.Tensor, resize: Resize) -> torch.Tensor:
    """(P, L, H, W, 2) float flow on any device -> (P, L, h, w, 2), bilinear (half-pixel
    centres, no antialiasing), values unchanged: the field resized as an image."""
    if stacks.ndim != 5 or stacks.shape[-1] != 2 or not stacks.is_floating_point():
        raise InputError(f"flow to resize must be (P, L, H, W, 2) float, got {tuple(stacks.shape)} {stacks.dtype}")
    p, stack, h, w, _ = stacks.shape
    x = stacks.permute(0, 1, 4, 2, 3).reshape(p * stack, 2, h, w)
    nw, nh = resize.size
    y = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    return y.reshape(p, stack, 2, nh, nw).permute(0, 1, 3, 4, 2).contiguous()
