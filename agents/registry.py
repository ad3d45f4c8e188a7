"""The registry of selectors (baselines and agents) by name: a leaf module.

It imports nothing of ``agents`` at import time, so every module may import it without an
import circle, and no module exists only for its side effects. The modules that register
selectors are named in :data:`SELECTOR_MODULES` and imported by name (importlib) the first
time the registry is asked for a name, so what is registered never depends on what the
caller happened to import first (GUIDE §6: no import-order-dependent registry).

Each registered class declares its abilities once, as class attributes of ``agents.base``'s
``Selector`` / ``Agent`` with their defaults (:data:`ABILITIES`); :func:`entry` reads them,
with its options and the papers' defaults (its ``Config``), as one record
(data/record.py, the shape every registry's entries share): what ``framesel agents`` lists.

Add a selector: decorate its class with ``@register("name")`` and, for a new module, add
the module's name to :data:`SELECTOR_MODULES` (or, outside framesel, name its file in
``FRAMESEL_PLUGINS``: data/plugins.py).
"""
from __future__ import annotations

import importlib

from data.errors import UnknownNameError
from data.plugins import load_plugins
from data.record import Record, field_defaults, first_sentence

# Every module that registers selectors, imported on first use of the registry.
SELECTOR_MODULES = ("agents.baselines", "agents.as_agent", "agents.dsn", "agents.tattn", "agents.rtsae",
                    "agents.rtsae_nogate", "agents.glimpse", "agents.glimpse_soft", "agents.dsn_nosampler")

_REGISTRY: dict[str, type] = {}
_loaded = False


def register(name: str):
    """Class decorator registering a selector (baseline or agent) under ``name``; sets
    ``cls.name``. A name registered twice raises ValueError naming the first holder."""
    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"selector {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in SELECTOR_MODULES:
            importlib.import_module(module)
        _loaded = True
    load_plugins()          # FRAMESEL_PLUGINS: a researcher's own agents (data/plugins.py)


def selector_names(*, learned: bool | None = None) -> list[str]:
    """Sorted registered names; ``learned=True`` only agents, ``False`` only baselines."""
    _load_all()
    return sorted(n for n, c in _REGISTRY.items() if learned is None or bool(c.learned) == learned)


def selector_class(name: str) -> type:
    """The class registered as ``name``; UnknownNameError listing the names otherwise."""
    _load_all()
    if name not in _REGISTRY:
        raise UnknownNameError("selector", name, _REGISTRY)
    return _REGISTRY[name]


# The declared abilities a record reads, in the order `framesel agents` shows them
# (agents/base.py: Selector's and Agent's class attributes, with their defaults and meaning).
ABILITIES = ("variable_m", "needs", "own_classifier", "needs_feature_maps", "uses_features", "needs_key",
             "reads_logits", "streams_training", "trains_seeds_together", "fit_inputs", "partner", "partner_of")


AGENT_COST = ("counted: FlopCounterMode on its real select at each row's budget and mode, every forward "
              "pass it makes, its LSTMs analytically (evaluate/compute.py: selector_gflops)")
BASELINE_COST = "0: no matrix product"


def entry(name: str) -> Record:
    """The record (data/record.py) of the selector registered as ``name``: what it is (its
    docstring's first sentence), its options with the papers' defaults (its ``Config``; empty
    for a baseline without one), its cost model and its declared abilities. UnknownNameError
    for an unknown name."""
    cls = selector_class(name)
    config = getattr(cls, "Config", None)
    abilities = {a: _declared(cls, a) for a in ABILITIES if hasattr(cls, a)}
    learned = bool(cls.learned)
    return Record(kind="agent" if learned else "baseline", name=name, summary=first_sentence(cls.__doc__),
                  options=field_defaults(config) if config else {}, cost=AGENT_COST if learned else BASELINE_COST,
                  abilities=abilities)


def _declared(cls, attribute: str):
    """A class attribute's value; one that depends on the config (a property) says so."""
    value = getattr(cls, attribute)
    if isinstance(value, property):
        return "per config: " + first_sentence(value.__doc__)
    return list(value) if isinstance(value, tuple) else value
