"""TSN's segment rule, the one place it is written: T points in [0, span), one per equal
segment, its centre (test) or a uniform random point (training). Extraction samples decoded
frames with it (extract/sampling.py); ``framesel import`` samples the rows of precomputed
per-frame features with it (data/interchange.py)."""
from __future__ import annotations

import numpy as np


def segment_points(span: int, T: int, train: bool = False, rng=None) -> np.ndarray:
    """(T,) int64 points in [0, span): one per equal segment, centre or uniform random
    (``rng``: a numpy Generator, for ``train``)."""
    tick = span / T
    offsets = rng.random(T) * tick if train else np.full(T, tick / 2.0)
    # tick * t + offset, written as TSN writes it so the float rounding (and so the
    # frames chosen at exact segment boundaries) agrees with TSN's test indices
    points = np.floor(offsets + tick * np.arange(T)).astype(np.int64)
    return np.clip(points, 0, span - 1)  # guards float round-up at the very end
