"""One registry entry as one record, whatever its kind: what ``framesel agents``, ``flows``,
``backbones`` and ``protocols`` list (and write with ``--json``).

Every registry (agents/registry.py, extract/flow_registry.py, extract/backbones/spec.py,
evaluate/protocol_registry.py) reads its entries into this one shape, so a reader (the CLI,
a notebook, a test over every entry) reads every kind the same way:

- ``name``: what the CLI takes (``--agent``, ``--flow``, ``--backbone``, ``--protocols``);
- ``summary``: what it is, one sentence (its docstring's first);
- ``options``: each option with its default, the papers' where a paper fixes it;
- ``cost``: its cost model in words (what a report's GFLOPs count for it; a protocol says it has
  none of its own);
- ``abilities``: what it declares it can do or needs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

KINDS = ("agent", "baseline", "flow", "backbone", "protocol")


@dataclass(frozen=True)
class Record:
    """One registered thing: its kind (one of :data:`KINDS`), name, summary, options with
    their defaults, cost model in words and declared abilities."""

    kind: str
    name: str
    summary: str
    options: dict
    cost: str
    abilities: dict

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"record kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def learned(self) -> bool:
        """An agent (trained), not a baseline; False for every other kind."""
        return self.kind == "agent"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[:end + 1]


def field_defaults(config) -> dict:
    """A dataclass's fields with their defaults (a default factory called; None: none)."""
    return {f.name: _default(f) for f in dataclasses.fields(config)}


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else None
