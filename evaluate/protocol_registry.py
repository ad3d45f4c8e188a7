"""The evaluation protocols' registry: each entry one :class:`Protocol` (its name, its rows
function, the paper's table or figure it reproduces, the ``ProtocolConfig`` options it
reads, what a run must hold for it to give rows), filled by ``@register_protocol`` in
:mod:`evaluate.protocols`, in report order. A leaf module: it imports nothing of
``evaluate``, so the protocols' module and the CLI read it without a circle.

Add a protocol: one function ``fn(run)`` yielding rows, decorated ``@register_protocol``,
in ``evaluate/protocols.py``; ``evaluate --protocols``, ``ProtocolConfig`` and ``framesel
protocols`` read the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from data.errors import UnknownNameError
from data.record import Record, first_sentence

__all__ = ["Protocol", "get_protocol", "protocol_names", "protocol_record", "register_protocol"]


@dataclass(frozen=True)
class Protocol:
    """A registered protocol. ``rows(run)`` yields its flat rows for one split's run;
    ``source``: the paper's table or figure; ``reads``: the ``ProtocolConfig`` fields that shape its
    rows (every protocol's paired tests also read ``bootstrap`` and ``seed``); ``needs``: what the run must hold for rows ("" always gives rows)."""

    name: str
    rows: Callable[[object], Iterable[dict]]
    source: str
    reads: tuple[str, ...] = ()
    needs: str = ""


_PROTOCOLS: dict[str, Protocol] = {}
NO_COST = "none of its own: each row prices its method (evaluate/compute.py)"


def register_protocol(name: str, *, source: str, reads: tuple[str, ...] = (), needs: str = ""):
    """Decorator registering ``fn(run)`` as protocol ``name`` (the fields of :class:`Protocol`);
    a name registered twice raises ValueError."""
    def deco(fn):
        if name in _PROTOCOLS:
            raise ValueError(f"protocol {name!r} is already registered")
        _PROTOCOLS[name] = Protocol(name, fn, source, tuple(reads), needs)
        return fn
    return deco


def protocol_names() -> tuple[str, ...]:
    """The registered protocols' names in registration order: the report's order."""
    return tuple(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    try:
        return _PROTOCOLS[name]
    except KeyError:
        raise UnknownNameError("protocol", name, _PROTOCOLS) from None


def protocol_record(name: str, defaults: dict) -> Record:
    """The record (data/record.py) of protocol ``name``: what it is (its function's docstring),
    the options it reads with their defaults (``defaults``: ProtocolConfig's, by field), no
    cost of its own (its rows carry each method's, evaluate/compute.py), and what it needs."""
    p = get_protocol(name)
    options = {f: defaults[f] for f in p.reads}
    return Record(kind="protocol", name=name, summary=first_sentence(p.rows.__doc__), options=options, cost=NO_COST,
                  abilities={"source": p.source, "needs": p.needs or "nothing: always gives rows"})
