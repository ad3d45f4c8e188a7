"""Spatial crops of frames and flow fields: centre, TSN three-crop and TSN ten-crop.

A crop is a box ``(x0, y0, flip)`` of side ``size`` whose top-left corner is (x0, y0) in pixel
columns/rows; ``flip`` mirrors the crop horizontally. Mirroring a flow field also negates its
x component (TSN inverts the x-flow image of flipped crops), so motion stays consistent.
"""

from __future__ import annotations

import numpy as np
import torch

from data.errors import InputError
from extract.arrays import as_tensor

CROP_COUNTS = (1, 3, 10)

Box = tuple[int, int, bool]


def crop_boxes(width: int, height: int, size: int = 224, num_crops: int = 1) -> list[Box]:
    """Boxes for the standard test-time crops of a ``width`` x ``height`` frame.

    - 1: the centre crop.
    - 3: three crops along the longer side (left/centre/right for landscape frames,
      top/centre/bottom for portrait), centred on the shorter side.
    - 10: the four corners and the centre, then the same five flipped (TSN / mmaction2
      TenCrop order). Corners are the true corners (TSN's ``4 * ((W - size) // 4)`` equals
      ``W - size`` for 340x256).

    Offsets round down: the centre of 340x256 at 224 is (58, 16).

    Raises:
        InputError: ``num_crops`` not in (1, 3, 10), or a crop larger than the frame.
    """
    for name, value in (("width", width), ("height", height), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if num_crops not in CROP_COUNTS:
        raise InputError(f"num_crops must be one of {CROP_COUNTS}, got {num_crops!r}")
    if size > width or size > height:
        raise InputError(f"crop {size}x{size} is larger than the frame {width}x{height}")
    free_x, free_y = width - size, height - size
    cx, cy = free_x // 2, free_y // 2
    if num_crops == 1:
        return [(cx, cy, False)]
    if num_crops == 3:
        if width >= height:
            return [(0, cy, False), (cx, cy, False), (free_x, cy, False)]
        return [(cx, 0, False), (cx, cy, False), (cx, free_y, False)]
    five = [(0, 0), (free_x, 0), (0, free_y), (free_x, free_y), (cx, cy)]
    return [(x, y, False) for x, y in five] + [(x, y, True) for x, y in five]


def _check_boxes(boxes: list[Box], width: int, height: int, size: int) -> None:
    if not boxes:
        raise InputError("no crop boxes given")
    for x0, y0, _ in boxes:
        if x0 < 0 or y0 < 0 or x0 + size > width or y0 + size > height:
            raise InputError(f"crop box ({x0}, {y0}) of size {size} leaves the "
                             f"{width}x{height} frame")


def crop_frames(frames, boxes: list[Box], size: int):
    """(P, H, W, C) frames -> (P, K, size, size, C) crops of the same dtype (K = len(boxes)).

    ``frames`` is a numpy array or a torch tensor on any device; the crops are of the same
    kind (and device).

    Raises:
        InputError: frames not 4-D, or a box outside the frame.
    """
    t, back = as_tensor(frames)
    if t.ndim != 4:
        raise InputError(f"frames must be (P, H, W, C), got shape {tuple(t.shape)}")
    _check_boxes(boxes, t.shape[2], t.shape[1], size)
    out = t.new_empty((t.shape[0], len(boxes), size, size, t.shape[3]))
    for k, (x0, y0, flip) in enumerate(boxes):
        crop = t[:, y0:y0 + size, x0:x0 + size]
        out[:, k] = crop.flip(2) if flip else crop
    return back(out)


def crop_flow(flow, boxes: list[Box], size: int):
    """(P, L, H, W, 2) flow stacks -> (P, K, L, size, size, 2) crops; flipped crops negate x.

    Channel 0 is the horizontal (x) displacement, channel 1 the vertical (y) one. ``flow`` is
    a numpy array or a torch tensor on any device; the crops are of the same kind.

    Raises:
        InputError: flow not (P, L, H, W, 2), a non-float or non-signed dtype, or a box
            outside the frame.
    """
    t, back = as_tensor(flow)
    if t.ndim != 5 or t.shape[-1] != 2:
        raise InputError(f"flow must be (P, L, H, W, 2), got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or (t.is_signed() and t.dtype != torch.bool)):
        # Negating unsigned (quantised) flow would wrap around instead of mirroring.
        raise InputError(f"flow must be a signed or float dtype to negate, got {flow.dtype}")
    _check_boxes(boxes, t.shape[3], t.shape[2], size)
    p, stack = t.shape[:2]
    out = t.new_empty((p, len(boxes), stack, size, size, 2))
    for k, (x0, y0, flip) in enumerate(boxes):
        crop = t[:, :, y0:y0 + size, x0:x0 + size]
        if flip:
            crop = crop.flip(3)
            out[:, k, ..., 0] = -crop[..., 0]
            out[:, k, ..., 1] = crop[..., 1]
        else:
            out[:, k] = crop
    return back(out)
