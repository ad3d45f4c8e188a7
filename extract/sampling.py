"""TSN segment sampling of T positions, each with a flow stack of L frame pairs.

A position p is a decoded frame: the RGB stream sees frame p, the flow stream sees the L
flow fields between frames p, p+1, ..., p+L (n decoded frames give n-1 flow fields).

Rules (TSN, Wang et al. 2016, adapted so both streams share the positions):

* The valid start range is 0 .. n-L-1 (V = n-L starts), so every stack lies inside the
  video; the RGB stream therefore never sees the last L frames of a long video.
* The range is cut into T equal (real-valued) segments of length V/T. Test mode takes the
  centre of each, ``int(tick/2 + tick*t)`` with tick = V/T, written exactly as TSN's test
  indices (identical to them for every n tested); train mode a uniform random point in
  each, ``floor(u_t*tick + tick*t)``, u_t ~ U[0, 1). Positions are sorted.
* A video with fewer valid starts than T repeats positions (floor of the segment points).
* A video too short for one stack (n < L+1) spreads the positions over all n frames and
  clamps each stack at the last frame, i.e. **repeats the last frame**: the pairs past the
  end are (n-1, n-1), zero motion. Repeating the last real pair instead (what TSN's image
  loader does) would invent motion that is not there and cannot be written as a list of
  consecutive frames. ``n == 1`` gives frame 0 everywhere and an all-zero flow stack.

``Sampling.handling`` records what was done, in words, so the store can keep it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.errors import InputError
from data.segments import segment_points


@dataclass(frozen=True)
class Sampling:
    """frame_index: (T,) int32, the decoded frame for RGB and the start of each flow stack.
    flow_index: (T, L+1) int32, frames whose consecutive pairs form each flow stack.
    handling: "" or a short description of what was done for a short video."""

    frame_index: np.ndarray
    flow_index: np.ndarray
    handling: str


def _check(num_frames, T, L):
    for name, value, low in (("num_frames", num_frames, 1), ("T", T, 1), ("L", L, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")


def _describe(num_frames: int, T: int, L: int, positions: np.ndarray, clamped: int) -> str:
    notes = []
    if num_frames == 1:
        notes.append("single frame: every position is frame 0")
    distinct = len(np.unique(positions))
    if distinct < T:
        notes.append(f"video shorter than T: positions repeat ({distinct} distinct of {T})")
    if clamped:
        notes.append(f"clamped flow stack at end: {clamped} of {T} positions "
                     f"({num_frames} frames < L+1={L + 1}; last frame repeated, "
                     f"zero-motion pairs)")
    return "; ".join(notes)


def tsn_positions(num_frames: int, T: int, L: int, *, train: bool = False,
                  rng=None) -> Sampling:
    """TSN positions for a video of ``num_frames`` decoded frames.

    T: number of positions; L: flow pairs per stack (0 for RGB only). Test mode
    (``train=False``) is deterministic; train mode draws from ``rng`` (a
    numpy Generator or a seed; None means fresh entropy). Raises InputError for bad input.
    """
    _check(num_frames, T, L)
    n, T, L = int(num_frames), int(T), int(L)
    generator = np.random.default_rng(rng) if train else None
    span = n - L if n >= L + 1 else n  # valid starts; all frames when no stack fits
    positions = segment_points(span, T, train, generator)
    stacks = np.minimum(positions[:, None] + np.arange(L + 1), n - 1)
    clamped = int(np.count_nonzero(positions + L > n - 1))
    handling = _describe(n, T, L, positions, clamped)
    return Sampling(frame_index=positions.astype(np.int32),
                    flow_index=stacks.astype(np.int32), handling=handling)
