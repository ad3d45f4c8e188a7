"""TSN segment sampling of T positions with flow stacks of L pairs.

A position p is the RGB frame p and the start of its flow stack: frames p … p+L give the
L consecutive pairs (n decoded frames give n − 1 flow fields). Valid starts are
0 … n−1−L, so every stack lies inside the video. At test time the T positions are the
centres of T equal segments of that range (TSN's rule, deterministic); in training each
position is drawn uniformly inside its segment.

Short videos are handled, never refused, and the handling is reported:
- n − 1 < L (fewer flow fields than a stack needs): stacks are clamped at the last frame,
  so their last pairs repeat the last frame and carry zero motion;
- fewer valid starts than T: positions repeat (several segments share a frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.errors import InputError


@dataclass(frozen=True)
class Sampling:
    frame_index: np.ndarray   # (T,) int32: RGB frame of each position = start of its flow stack
    flow_index: np.ndarray    # (T, L+1) int32: frames whose consecutive pairs form the stack
    handling: str             # "" or what was done for a short video


def tsn_positions(num_frames: int, T: int, L: int, *, train: bool = False, rng=None) -> Sampling:
    """T positions over ``num_frames`` decoded frames (see the module docstring)."""
    if num_frames < 1:
        raise InputError(f"cannot sample a video of {num_frames} frames")
    if T < 1 or L < 0:
        raise InputError(f"T must be >= 1 and L >= 0, got T={T}, L={L}")
    n = int(num_frames)
    valid = max(n - L, 1)                     # number of valid stack starts
    seg = valid / T
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        start = np.floor(seg * np.arange(T) + rng.random(T) * seg)
    else:
        start = np.floor(seg * np.arange(T) + seg / 2)
    frame_index = np.clip(start, 0, valid - 1).astype(np.int32)
    flow_index = np.minimum(frame_index[:, None] + np.arange(L + 1)[None, :], n - 1).astype(np.int32)
    notes = []
    if n - 1 < L:
        notes.append(f"video of {n} frames is shorter than a flow stack of {L} pairs: "
                     f"stacks clamped at the last frame ({L - (n - 1)} zero-motion pairs each)")
    repeats = T - len(np.unique(frame_index))
    if repeats:
        notes.append(f"only {valid} valid positions for T={T}: {repeats} positions repeat")
    return Sampling(frame_index, flow_index, "; ".join(notes))
