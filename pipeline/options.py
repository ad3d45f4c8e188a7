"""Option types and callbacks of the ``framesel`` CLI that need more than click gives.

Imported by ``pipeline.cli`` at module load, so it imports nothing but click and the
standard library (``framesel info`` must not pay for torch).
"""
from __future__ import annotations

import glob
import os
import re

import click

_GLOB_CHARS = frozenset("*?[")
_STREAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def parse_checkpoint(value: str) -> tuple[str, str]:
    """``--checkpoint [STREAM=]PATH`` -> (stream, path). It splits at the first "=" when
    what precedes it is a stream name (letters, digits, _ and -: no "/" or "."), so a
    path may hold "=" (``rgb=runs/run=3/tsn.pth``); otherwise the whole value is the rgb
    stream's path. A stream name extraction does not produce is refused later, by name."""
    head, sep, tail = value.partition("=")
    if sep and _STREAM_NAME.fullmatch(head):
        return head, tail
    return "rgb", value


def checkpoints(ctx, param, values) -> tuple[tuple[str, str], ...]:
    """Callback of extract's ``--checkpoint``: each value parsed by :func:`parse_checkpoint`."""
    return tuple(parse_checkpoint(v) for v in values)


def backbones(ctx, param, values) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Callback of extract's ``--backbone``: (name for every stream, ((stream, name), ...)
    overrides of one stream each)."""
    plain = [v for v in values if "=" not in v]
    if len(plain) > 1:
        raise click.BadParameter(f"{', '.join(plain)}: one backbone for every stream, or STREAM=NAME for one")
    pairs = tuple(tuple(v.split("=", 1)) for v in values if "=" in v)
    return (plain[0] if plain else "efficientnet_lite0"), pairs


def spread_values(args, names) -> list[str]:
    """``--agents a.pt b.pt c.pt`` → ``--agents a.pt --agents b.pt --agents c.pt``: the
    plain words after an option of ``names`` (up to the next option, or ``--``) are each
    one more value of it. ``--agents=a.pt b.pt`` spreads the same way."""
    out, spreading, value_due = [], None, False
    for i, arg in enumerate(args):
        if arg == "--":
            return out + list(args[i:])
        if arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            spreading = name if name in names else None
            value_due = spreading is not None and "=" not in arg
            out.append(arg)
        elif spreading and not value_due:
            out += [spreading, arg]
        else:
            out.append(arg)
            value_due = False
    return out


class SpreadCommand(click.Command):
    """A command whose multiple-value options in ``spread`` take several values after one
    flag as users type them (``--agents a.pt b.pt``), besides the flag repeated."""

    def __init__(self, *args, spread: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.spread = tuple(spread)

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, spread_values(args, self.spread))


class AgentPaths(click.Path):
    """A path, or a glob (quoted, so the shell leaves it to us) → the sorted paths it
    matches, as a tuple; a glob that matches nothing is an error naming the pattern. A
    file whose name merely contains glob characters is taken as it is."""

    name = "path or glob"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = os.fspath(value)
        if _GLOB_CHARS & set(text) and not os.path.exists(text):
            hits = sorted(glob.glob(os.path.expanduser(text)))
            if not hits and not self.exists:      # existence not required: the pattern itself
                return (super().convert(value, param, ctx),)
            if not hits:
                self.fail(f"no file matches the pattern {text!r}", param, ctx)
            return tuple(super(AgentPaths, self).convert(h, param, ctx) for h in hits)
        return (super().convert(value, param, ctx),)


class RegistryChoice(click.Choice):
    """A click.Choice whose names a registry gives the first time they are needed (``--help``
    or parsing the option), so importing the CLI loads no registry (torch, OpenCV) and a
    name registered anywhere (FRAMESEL_PLUGINS included) is a choice. ``names``: a callable
    returning the registered names; ``extra``: choices that are not registry entries."""

    def __init__(self, names, extra=()):
        self._names, self._extra, self._cache = names, tuple(extra), None
        super().__init__((), case_sensitive=True)

    @property
    def choices(self):
        if self._cache is None:
            self._cache = tuple(self._names()) + self._extra
        return self._cache

    @choices.setter
    def choices(self, value):
        pass          # click.Choice.__init__ assigns the (empty) tuple: the registry decides


def agent_names() -> list[str]:
    """Every registered learned agent, partners included (agents/registry.py)."""
    from agents.registry import selector_names

    return selector_names(learned=True)


def flow_names() -> list[str]:
    """Every registered flow algorithm (extract/flow_registry.py)."""
    from extract.flow import flow_algorithms

    return flow_algorithms()


def flatten(ctx, param, values) -> tuple:
    """A multiple option of :class:`AgentPaths`: one flat tuple of paths, each once, in order."""
    return tuple(dict.fromkeys(p for group in values for p in group))


def int_list(ctx, param, value):
    """'4,8,12' → (4, 8, 12) (positive integers); None stays None (the default applies)."""
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r}: expected comma-separated positive integers, e.g. 4,8,12")
    return out


def fusion_weights(ctx, param, values):
    """('rgb=1,flow=1.5', ...) → ((('rgb', 1.0), ('flow', 1.5)), ...); each stream once."""
    out = []
    for v in values:
        try:
            pairs = tuple((name.strip(), float(w)) for name, w in (item.split("=") for item in v.split(",")))
        except ValueError:
            raise click.BadParameter(f"{v!r}: expected e.g. rgb=1,flow=1.5") from None
        names = [name for name, _ in pairs]
        if "" in names or len(set(names)) != len(names):
            raise click.BadParameter(f"{v!r}: name each stream once, e.g. rgb=1,flow=1.5")
        out.append(pairs)
    return tuple(out)


def slurm_extra(ctx, param, values) -> dict:
    """('account=abc', 'array-parallelism=32') → {'account': 'abc', 'array_parallelism': 32}."""
    from pipeline.config import parse_assignments

    pairs = parse_assignments(values, "--slurm-param", underscores=True)
    empty = [item for item, (name, _) in zip(values, pairs) if not name]
    if empty:
        raise click.BadParameter(f"{empty[0]!r}: expected NAME=VALUE, e.g. account=abc")
    return dict(pairs)
