"""The 3x3 and 5x5 median filters of TV-L1 (OpenCV's ``medianBlur`` on float flow) as
min/max sorting networks: exactly the median, without sorting every window.

A comparator network whose middle wire holds the median of every input is exact on any
values (each min/max returns one of its inputs, so the output is an element of the
window, and the 0-1 principle extends the proof from 0/1 inputs to all). The networks are
Devillard's (N. Devillard, "Fast median search: an ANSI C implementation", 1998):
``opt_med9`` (19 exchanges, from J. L. Smith, XCELL 23) and ``opt_med25`` (99 exchanges,
from Graphics Gems); ``tests/test_flow_median.py`` proves both on every 0/1 input (2^9 and
2^25 of them) and compares the filter with ``torch.median`` over an unfold and with
``cv2.medianBlur``.

Why: ``torch.median`` over a (B, H, W, 25) unfold copies 25 values per pixel and sorts
them; the network reads 25 shifted views and does ~2 x 99 element-wise min/max, which
``torch.compile`` can fuse into few kernels (tvl1-torch compiles it with its step when
``compile=true``; its GPU speed is measured by benchmarks/gpu_check.sh, not yet on a GPU).
On this project's CPU a side-by-side check gave the same values 3.1x faster than the
unfold (benchmarks/README.md, the cost section). Exchanges whose
outputs never reach the median are dropped (``_plan``: 5x5 computes 87 mins and 87 maxes
for its 99 exchanges, 3x3 15 and 15 for 19).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MEDIAN_NETWORKS", "median_filter"]

# (a, b): after the exchange wire a holds min(a, b) and wire b max(a, b); the median is
# on the middle wire (4 of 9, 12 of 25). Wires are the window's values in row-major order
# (any order would do: the median does not depend on it).
_MED9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8),
         (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))
_MED25 = ((0, 1), (3, 4), (2, 4), (2, 3), (6, 7), (5, 7), (5, 6), (9, 10), (8, 10), (8, 9), (12, 13),
          (11, 13), (11, 12), (15, 16), (14, 16), (14, 15), (18, 19), (17, 19), (17, 18), (21, 22),
          (20, 22), (20, 21), (23, 24), (2, 5), (3, 6), (0, 6), (0, 3), (4, 7), (1, 7), (1, 4),
          (11, 14), (8, 14), (8, 11), (12, 15), (9, 15), (9, 12), (13, 16), (10, 16), (10, 13),
          (20, 23), (17, 23), (17, 20), (21, 24), (18, 24), (18, 21), (19, 22), (8, 17), (9, 18),
          (0, 18), (0, 9), (10, 19), (1, 19), (1, 10), (11, 20), (2, 20), (2, 11), (12, 21), (3, 21),
          (3, 12), (13, 22), (4, 22), (4, 13), (14, 23), (5, 23), (5, 14), (15, 24), (6, 24), (6, 15),
          (7, 16), (7, 19), (13, 21), (15, 23), (7, 13), (7, 15), (1, 9), (3, 11), (5, 17), (11, 17),
          (9, 17), (4, 10), (6, 12), (7, 14), (4, 6), (4, 7), (12, 14), (10, 14), (6, 7), (10, 12),
          (6, 10), (6, 17), (12, 17), (7, 17), (7, 10), (12, 18), (7, 12), (10, 18), (12, 20),
          (10, 20), (10, 12))
MEDIAN_NETWORKS = {3: _MED9, 5: _MED25}   # window side -> exchanges


def _plan(k: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The exchanges of the k x k network that reach the median: (a, b, need_min,
    need_max), found backwards from the middle wire (dead outputs dropped)."""
    live, out = {k * k // 2}, []
    for a, b in reversed(MEDIAN_NETWORKS[k]):
        need_min, need_max = a in live, b in live
        if need_min or need_max:
            out.append((a, b, need_min, need_max))
            live |= {a, b}
    return tuple(reversed(out))


_PLANS = {k: _plan(k) for k in MEDIAN_NETWORKS}


def median_filter(u: torch.Tensor, k: int) -> torch.Tensor:
    """cv2.medianBlur(k) of (B, H, W) float tensors (k = 3 or 5), replicated borders, same
    dtype and device; exactly the window medians (ties and all)."""
    r = k // 2
    h, w = u.shape[1:]
    p = F.pad(u[:, None], (r, r, r, r), mode="replicate")[:, 0]
    wires = [p[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]
    for a, b, need_min, need_max in _PLANS[k]:
        lo = torch.minimum(wires[a], wires[b]) if need_min else None
        hi = torch.maximum(wires[a], wires[b]) if need_max else None
        wires[a], wires[b] = lo, hi
    return wires[k * k // 2]
