"""Values made JSON: the one place numpy scalars, arrays, tuples and paths become plain
JSON values, for store attributes (:func:`attr_value`, ``json.dumps``'s ``default=``) and
for reports (:func:`plain`, recursive, non-finite floats to null)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["attr_value", "plain"]


def attr_value(obj):
    """``json.dumps(..., default=attr_value)``: a numpy scalar, array, tuple or path as a
    JSON value; anything else is a TypeError (a store records settings, not objects)."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot record {type(obj).__name__} in store attributes")


def plain(x):
    """``x`` with every dict key a string, numpy values Python ones, tuples lists, paths
    strings, and NaN or inf None (JSON has neither): what ``json.dumps(allow_nan=False)``
    writes."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
