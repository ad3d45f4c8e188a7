"""Imports every learned agent module so that each registers itself (see base._load_all)."""
from agents import as_agent, dsn, glimpse, rtsae, tattn  # noqa: F401

AGENT_MODULES = ("as_agent", "dsn", "tattn", "rtsae", "glimpse")
