"""A researcher's own agents, flow algorithms and backbones, each one file, without editing
framesel: ``FRAMESEL_PLUGINS`` names them, and every registry imports them the first time it
is asked for a name (agents/registry.py, extract/flow_registry.py, extract/backbones/spec.py).

    FRAMESEL_PLUGINS=/path/my_flow.py,my_package.my_agent framesel extract --help

Each entry is a ``.py`` file or an importable module name; its import registers what it
defines with the usual decorators (``@register`` for a selector, ``@register_flow``,
``@register_backbone``), and from then on it is a name like the built-in ones: the CLI's
choices, ``framesel train --agent``, the store's record and the report's cost read the
registries. A plugin is code the user chose to run, as a ``--config`` is not: framesel never
imports anything a store, list or checkpoint names.

A file that is missing or fails to import is an InputError naming it and the cause.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from data.errors import InputError

ENV = "FRAMESEL_PLUGINS"
_loaded: dict[str, object] = {}


def plugin_entries() -> list[str]:
    """The entries of ``FRAMESEL_PLUGINS`` (comma- or os.pathsep-separated), in order."""
    raw = os.environ.get(ENV, "")
    return [e.strip() for part in raw.split(",") for e in part.split(os.pathsep) if e.strip()]


def _import(entry: str):
    if entry.endswith(".py"):
        path = Path(entry).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"{ENV}: plugin file {path} not found")
        name = f"framesel_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    return importlib.import_module(entry)


def load_plugins() -> list[str]:
    """Import every plugin of ``FRAMESEL_PLUGINS`` not imported yet; returns the entries loaded
    so far. An entry that fails is an InputError naming it (and is tried again next call)."""
    for entry in plugin_entries():
        if entry in _loaded:
            continue
        _loaded[entry] = None          # a plugin importing a registry asks again: no recursion
        try:
            _loaded[entry] = _import(entry)
        except InputError:
            _loaded.pop(entry, None)
            raise
        except Exception as err:       # its own code failed: name the plugin and the cause
            _loaded.pop(entry, None)
            raise InputError(f"{ENV}: plugin {entry} failed to import: {type(err).__name__}: {err}") from err
    return list(_loaded)


__all__ = ["ENV", "load_plugins", "plugin_entries"]
