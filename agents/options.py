"""Agent options as users type them (``--set epochs=10``) and as checkpoints store them.

One place turns NAME=VALUE pairs into a frozen Config dataclass: :func:`make_config` checks
every name against the Config's fields and coerces each value to the type of the field's
default (an int field refuses 1.5 and "abc", a float field takes 1 as 1.0, a tuple field
takes a JSON list, a bool field true/false). Ranges are each Config's own business: its
``__post_init__`` calls :func:`check_ranges`, so a Config built any other way is checked too.
"""
from __future__ import annotations

import dataclasses
import math

from data.errors import InputError

_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def make_config(Config: type, items, *, owner: str):
    """``Config(**items)`` after checking names and coercing values.

    items: a mapping or (name, value) pairs; ``owner`` names whose options they are in
    messages (e.g. ``"as"``, or ``"checkpoint x.pt"``). Raises InputError naming the option,
    its value and what is allowed.
    """
    fields = {f.name: f for f in dataclasses.fields(Config)}
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    unknown = [name for name, _ in pairs if name not in fields]
    if unknown:
        raise InputError(f"{owner} has no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(sorted(fields))}")
    return Config(**{name: coerce(owner, name, value, _default(fields[name])) for name, value in pairs})


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def coerce(owner: str, name: str, value, default):
    """``value`` as the type of ``default`` (int, float, bool, str or tuple of numbers)."""
    kind = type(default)
    bad = lambda allowed: InputError(  # noqa: E731
        f"{owner} option {name}={value!r} is not {allowed} (default {default!r})")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise bad("a boolean (true or false)")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad("a finite number")
    if kind is tuple:
        if isinstance(value, (list, tuple)) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(value)
        raise bad("a list of numbers, e.g. [20, 40]")
    if kind is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    return value


def check_ranges(owner: str, cfg, *, at_least_one=(), non_negative=(), positive=(), unit=(),
                 unit_open=(), choices=None) -> None:
    """Raise InputError for the first field of ``cfg`` out of its range.

    at_least_one: integers >= 1; non_negative: >= 0; positive: > 0; unit: in [0, 1];
    unit_open: in [0, 1); choices: {field: allowed values}. For a tuple field every
    element is checked.
    """
    rules = [(at_least_one, lambda v: v >= 1, ">= 1"), (non_negative, lambda v: v >= 0, ">= 0"),
             (positive, lambda v: v > 0, "> 0"), (unit, lambda v: 0 <= v <= 1, "in [0, 1]"),
             (unit_open, lambda v: 0 <= v < 1, "in [0, 1)")]
    for names, ok, allowed in rules:
        for name in names:
            value = getattr(cfg, name)
            values = value if isinstance(value, tuple) else (value,)
            if not all(ok(v) for v in values):
                raise InputError(f"{owner} option {name}={value!r} is out of range: it must be {allowed}")
    for name, allowed in (choices or {}).items():
        if getattr(cfg, name) not in allowed:
            raise InputError(f"{owner} option {name}={getattr(cfg, name)!r} is not one of {', '.join(allowed)}")
