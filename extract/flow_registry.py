"""The flow algorithms' registry: each entry one :class:`Algorithm` (name, defaults, the
pair function, parameter rules, cost model, abilities), filled by ``@register_flow`` in
:mod:`extract.flow_algorithms`. Add an algorithm: one function there (or in a file of its
own imported by ``extract/flow.py``, or outside framesel named in ``FRAMESEL_PLUGINS``:
data/plugins.py) decorated with ``@register_flow``; the CLI's choices, the store's record
and the report's cost read the registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from data.errors import UnknownNameError
from data.plugins import load_plugins
from data.record import Record, first_sentence
from extract.flow_cost import FlowCost

__all__ = ["Algorithm", "PairFn", "flow_algorithms", "flow_record", "get_algorithm", "opencv_version", "register_flow"]

PairFn = Callable[[np.ndarray, np.ndarray, dict], np.ndarray]


@dataclass(frozen=True)
class Algorithm:
    """A registered flow algorithm.

    ``defaults()`` returns every parameter with its default (name -> int/float/bool/str);
    ``compute(prev, next, params)`` maps two (N, H, W) uint8 arrays to (N, H, W, 2) float32;
    ``describe(params)`` returns the effective parameters to record (defaults to ``params``);
    ``rules`` maps each parameter to its allowed range (:mod:`extract.flow_params`);
    ``tensors``: ``compute`` takes and returns torch tensors on their device (a GPU algorithm
    reads frames where the device stage holds them), not numpy arrays;
    ``cost``: what a field costs (:class:`extract.flow_cost.FlowCost`, priced from the
    effective parameters); ``reports``: ``compute`` returns ``(flow, run)``, ``run`` being
    what the cost model reads of the run (tvl1-torch: its iterations), else the flow alone.
    """

    name: str
    defaults: Callable[[], dict]
    compute: PairFn
    cost: FlowCost
    describe: Callable[[dict], dict] | None = None
    rules: dict = field(default_factory=dict)
    tensors: bool = False
    reports: bool = False


_ALGORITHMS: dict[str, Algorithm] = {}


def register_flow(name: str, defaults: Callable[[], dict], *, cost: FlowCost, describe=None, rules=None,
                  tensors=False, reports=False):
    """Decorator registering ``fn(prev, next, params)`` as flow algorithm ``name`` (the
    arguments as the fields of :class:`Algorithm`; every algorithm has a cost model)."""

    def deco(fn: PairFn) -> PairFn:
        if name in _ALGORITHMS:
            raise ValueError(f"flow algorithm {name!r} is already registered")
        if not isinstance(cost, FlowCost):
            raise ValueError(f"flow algorithm {name!r} needs a cost model (extract.flow_cost.FlowCost)")
        _ALGORITHMS[name] = Algorithm(name, defaults, fn, cost, describe, dict(rules or {}), tensors, reports)
        return fn

    return deco


def flow_algorithms() -> list[str]:
    """Names of the registered flow algorithms (FRAMESEL_PLUGINS' among them), sorted."""
    load_plugins()
    return sorted(_ALGORITHMS)


def opencv_version() -> str:
    """The OpenCV version that computes the flow (recorded in the store's attrs)."""
    return cv2.__version__


def get_algorithm(name: str) -> Algorithm:
    if name not in _ALGORITHMS:
        load_plugins()
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise UnknownNameError("flow algorithm", name, _ALGORITHMS) from None


def flow_record(name: str) -> Record:
    """The record (data/record.py) of flow algorithm ``name``: what it is (its pair function's
    docstring), its parameters with their defaults, its cost model's label at those defaults
    and what it declares (tensors in and out, iterations reported, tunable parameters)."""
    alg = get_algorithm(name)
    defaults = alg.defaults()
    kind, how = alg.cost.label(defaults)
    return Record(kind="flow", name=name, summary=first_sentence(alg.compute.__doc__), options=defaults,
                  cost=f"{kind}: {how}", abilities={"tensors": alg.tensors, "reports_iterations": alg.reports,
                                                   "checked_parameters": sorted(alg.rules)})
