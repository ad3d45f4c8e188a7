"""Two stores compared array for array (resume, merge and device tests, the GPU check):
what differs, leaving out the execution facts (measured seconds) that no two runs share."""
from __future__ import annotations

import numpy as np

from data.layout import TIMING_NODES


def compare_stores(a, b, *, atol: float = 0.0, ignore=TIMING_NODES) -> list[str]:
    """Differences between two stores, array for array (empty list = equal), leaving out the
    arrays named in ``ignore`` (by default the measured seconds: how long a video took is
    not what the store holds)."""
    diffs = []
    names_a, names_b = set(a.array_names()) - set(ignore), set(b.array_names()) - set(ignore)
    if names_a != names_b:
        diffs.append(f"arrays differ: only in a {sorted(names_a - names_b)}, only in b {sorted(names_b - names_a)}")
    for name in sorted(names_a & names_b):
        x, y = a._read_all(name), b._read_all(name)
        if x.shape != y.shape:
            diffs.append(f"{name}: shape {x.shape} vs {y.shape}")
        elif x.dtype.kind in "fc":
            if not np.allclose(x, y, atol=atol, rtol=0, equal_nan=True):
                diffs.append(f"{name}: max abs difference {np.nanmax(np.abs(x.astype(np.float64) - y)):.3g}")
        elif not np.array_equal(x.astype(object) if x.dtype.kind in "OTU" else x,
                                y.astype(object) if y.dtype.kind in "OTU" else y):
            diffs.append(f"{name}: values differ")
    return diffs
