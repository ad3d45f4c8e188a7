"""What each agent owes its paper beyond its equations: its no-selection partner and its
departures.

- A **partner** is the paper's separately trained model of the same network without the
  selection (``Agent.partner`` names it, per agent class): ``tattn`` → ``tattn_noatt``
  (002 §3.3), ``rtsae`` → ``rtsae_nogate`` (004 Table 3), ``glimpse`` → ``glimpse_soft``
  (001 Tables I–II), alternating ``dsn`` → ``dsn_nosampler`` (003 Table I). ``framesel
  train --agent X`` trains X's partner in the same call (agents/train_stage.py) and ``framesel
  evaluate`` pairs the two, seed with seed (evaluate/methods.py). A partner is registered as
  an agent of its own (trainable alone), built on :class:`NoSelection`: at a budget m it
  keeps TSN's m evenly spaced positions and predicts with its own network.
- **Departures** (``Agent.departures``): where an implementation differs from its paper,
  each naming the section; :func:`departures_of` gives them, with a checkpoint's settings
  that differ from the defaults, to the report's "Departures from the papers" list.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from agents.base import Selection, States, selector_class
from agents.baselines import uniform_keep


class NoSelection:
    """Mixin (first base) for a paper's no-selection partner model: it scores every position
    alike (1/T), keeps the evenly spaced m at a budget m (all with m=None) and predicts with
    its own network's ``video_scores(states, keep, alpha, **inputs)``; ``inputs`` are the
    agent's extra streams (rtsae's ``flow``). It reads only what it keeps: no full pass."""

    def label(self) -> str:
        """Its registered name (not its agent's label: dsn_nosampler is no dsn[M:N])."""
        return self.name

    partner: ClassVar[str | None] = None     # a partner has none of its own
    partner_of: ClassVar[str] = ""           # the agent whose paper defines it
    needs: ClassVar[str] = "none"            # evaluate/compute.py: it chooses without looking
    variable_m: ClassVar[bool] = False

    @classmethod
    def partner_for(cls, config) -> None:
        return None

    def score(self, states: States, **inputs) -> torch.Tensor:
        """(V, T, K) float32, 1/T everywhere: no position is preferred."""
        V, T, K = states.features.shape[:3]
        return torch.full((V, T, K), 1.0 / T, device=states.features.device)

    def select(self, states: States, m: int | None, *, mode: str = "frame", alpha: float = 0.0,
               **inputs) -> Selection:
        """The evenly spaced m positions (every crop; m=None: all), predicted by the model."""
        scores = self.score(states)
        keep = uniform_keep(tuple(scores.shape), m, scores.device)
        with torch.no_grad():
            video_scores = self.video_scores(states, keep, alpha, **inputs).float()
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, video_scores, per.long(), mode)


def partner_overrides(partner: str, overrides) -> tuple[tuple[str, object], ...]:
    """The ``--set`` items (name, value) of an agent that the partner's Config also has: they
    apply to the partner, the others (the selection's own settings) do not."""
    fields = {f.name for f in dataclasses.fields(selector_class(partner).Config)}
    return tuple((k, v) for k, v in overrides if k in fields)


def departures_of(agent_or_name) -> list[str]:
    """Where a registered selector (by name) or a loaded agent departs from its paper: its
    class's ``departures`` and, for an agent, the config fields it was trained with that
    differ from framesel's defaults (the paper's where the paper gives them), except those
    its Config derives from the data (``Config.DERIVED``). [] for a baseline."""
    named = isinstance(agent_or_name, str)
    cls = selector_class(agent_or_name) if named else type(agent_or_name)
    out = list(getattr(cls, "departures", ()))
    config = None if named else getattr(agent_or_name, "config", None)
    if dataclasses.is_dataclass(config):
        derived = set(getattr(config, "DERIVED", ()))
        plain = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # noqa: E731
        default = plain(dataclasses.asdict(type(config)()))
        changed = [f"{k}={v!r} (default {default[k]!r})" for k, v in plain(dataclasses.asdict(config)).items()
                   if k not in derived and v != default.get(k)]
        if changed:
            out.append("trained with settings other than framesel's defaults (the paper's where it gives "
                       "them): " + ", ".join(changed))
    return out


__all__ = ["NoSelection", "departures_of", "partner_overrides"]
