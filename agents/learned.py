"""Imports every learned agent module so that each registers itself (see base._load_all)."""
import importlib

AGENT_MODULES = ("as_agent", "dsn", "tattn", "rtsae", "glimpse")

for _name in AGENT_MODULES:
    try:
        importlib.import_module(f"agents.{_name}")
    except ModuleNotFoundError as err:  # TEMPORARY while the agents are written in parallel
        if err.name != f"agents.{_name}":
            raise
