"""Flow parameters: the type and the allowed range of each, checked in one place.

OpenCV takes nonsense without a word (TV-L1 with ``epsilon=-1`` or ``lambda=0`` runs and
returns garbage or zeros, ``theta=0`` gives NaN), so every algorithm registered in
:mod:`extract.flow` declares a :class:`Rule` per parameter and :func:`resolve` refuses a
value outside it before any video is decoded, naming the parameter, the value and the range.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from data.errors import InputError


@dataclass(frozen=True)
class Rule:
    """An allowed range: ``text`` is what the user reads, ``test(value) -> bool`` decides."""

    text: str
    test: Callable[[object], bool]


POSITIVE = Rule("> 0", lambda v: v > 0)
NON_NEGATIVE = Rule(">= 0", lambda v: v >= 0)
AT_LEAST_1 = Rule(">= 1", lambda v: v >= 1)
FRACTION = Rule("in (0, 1)", lambda v: 0 < v < 1)
ANY_BOOL = Rule("true or false", lambda v: True)
TORCH_DEVICE = Rule("auto, cpu, cuda or cuda:N",
                    lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None)


def one_of(*values) -> Rule:
    return Rule("one of " + ", ".join(map(str, values)), lambda v: v in values)


def coerce(name: str, value, default):
    """Cast a user value to the type of the default; InputError when it does not fit.
    Floats must be finite (JSON's ``NaN``/``Infinity`` parse, and would run)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, (bool, np.bool_)) or value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            if math.isfinite(value):
                return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise InputError(f"flow parameter {name!r} must be a {'finite ' if kind is float else ''}"
                     f"{kind.__name__}, got {value!r}")


def resolve(algorithm: str, defaults: dict, rules: Mapping[str, Rule], overrides) -> tuple:
    """Merge user overrides into the defaults -> sorted ((name, value), ...).

    Unknown names, values of the wrong type and values outside the parameter's rule are an
    InputError naming the algorithm, the parameter, the value and what is allowed.
    """
    try:
        items = dict(overrides)
    except (TypeError, ValueError):
        raise InputError(f"flow params must be (name, value) pairs, got {overrides!r}") from None
    unknown = sorted(set(items) - set(defaults))
    if unknown:
        raise InputError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for flow algorithm "
            f"{algorithm!r}; valid: {', '.join(sorted(defaults))}"
        )
    merged = dict(defaults)
    for key, value in items.items():
        merged[key] = coerce(key, value, defaults[key])
        rule = rules.get(key)
        if rule is not None and not rule.test(merged[key]):
            raise InputError(f"flow parameter {key!r} of {algorithm!r} must be {rule.text}, "
                             f"got {value!r}")
    return tuple(sorted(merged.items()))


# The rules of each registered algorithm (names as in extract.flow's defaults). Median
# filtering: OpenCV's float median takes 3 or 5 only (7 and 2 fail its assertion), 0/1 = off.
TVL1 = {"tau": POSITIVE, "lambda": POSITIVE, "theta": POSITIVE, "nscales": AT_LEAST_1,
        "warps": AT_LEAST_1, "epsilon": POSITIVE, "inner_iterations": AT_LEAST_1,
        "outer_iterations": AT_LEAST_1, "scale_step": FRACTION, "gamma": NON_NEGATIVE,
        "median_filtering": one_of(0, 1, 3, 5)}
# the torch port implements gamma == 0 only (OpenCV's default)
TVL1_TORCH = {**TVL1, "gamma": one_of(0.0), "device": TORCH_DEVICE, "batch_size": AT_LEAST_1,
              "compile": ANY_BOOL}
TVL1_CUDA = {k: TVL1[k] for k in ("tau", "lambda", "theta", "nscales", "warps", "epsilon",
                                  "scale_step", "gamma")}
TVL1_CUDA.update(iterations=AT_LEAST_1, device_id=NON_NEGATIVE)
# flags: 0 or OPTFLOW_FARNEBACK_GAUSSIAN (256); OPTFLOW_USE_INITIAL_FLOW (4) would read the
# uninitialised output as a start, since no flow is ever passed in
FARNEBACK = {"pyr_scale": FRACTION, "levels": NON_NEGATIVE, "winsize": AT_LEAST_1,
             "iterations": AT_LEAST_1, "poly_n": AT_LEAST_1, "poly_sigma": POSITIVE,
             "flags": one_of(0, 256)}
