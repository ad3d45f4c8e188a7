"""``glimpse_soft``: glimpse's partner, 001's "baseline attention model" on the same network.

001 compares its REINFORCE glimpses with one model of the same design: "Baseline attention"
(Table I: 41.30 % on HMDB-51, 58.90 mAP on ActivityNet, against 60.60 and 69.13) and
"Baseline attention model [11]" (Table II), the soft attention of Sharma et al. [11] that
001 extends. 001 §II.C names the difference: its input is "the sum of feature slices at the
attended location instead of taking expectation over all the slices", and its conclusion:
"our model performs better than baselines which just take soft attention mechanism through
BP". So the partner is glimpse's network (LSTM, location softmax, tanh + linear classifier)
whose LSTM reads the expectation Σ_i π_{t,i} X_{t,i} over every slice, trained by
back-propagation alone (no REINFORCE, no sampled episodes) on the per-step cross-entropy plus
[11]'s doubly stochastic penalty λ Σ_i (1 − Σ_t π_{t,i})². It selects no cell: it reads the
whole cube, and at a budget m TSN's m evenly spaced positions (agents/papers.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.base import register
from agents.glimpse import GlimpseAgent
from agents.glimpse_model import attention_focus, attention_penalty, step_cross_entropy
from agents.options import check_ranges
from agents.papers import NoSelection
from agents.rl import categorical_entropy


@dataclass(frozen=True)
class GlimpseSoftConfig:
    """glimpse's defaults (:class:`agents.glimpse_model.GlimpseConfig`: 001 §III.B's network,
    Adam, weight decay, dropout, 10 epochs; lr and batch size ours) for the fields a soft
    attention trained by back-propagation uses. ``ds_penalty`` is [11]'s λ (its own name, so
    that glimpse's ``attention_penalty``, another form, does not carry over): 1, as in [11];
    the penalty is divided by T against the cross-entropy averaged over steps, [11]'s ratio
    (it sums the cross-entropy over t)."""

    hidden: int = 512
    layers: int = 3
    dropout: float = 0.5
    weight_decay: float = 1e-5
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 32
    ds_penalty: float = 1.0
    map_h: int = 7
    map_w: int = 7
    map_dim: int = 0
    DERIVED: ClassVar[tuple] = ("map_h", "map_w", "map_dim")   # set from the store (for_states)

    def __post_init__(self):
        check_ranges("glimpse_soft", self, at_least_one=("hidden", "layers", "epochs", "batch_size", "map_h", "map_w"),
                     non_negative=("weight_decay", "ds_penalty", "map_dim"), positive=("lr",), unit_open=("dropout",))


@register("glimpse_soft")
class GlimpseSoft(NoSelection, GlimpseAgent):
    """001's soft-attention baseline on glimpse's network; see the module docstring."""

    Config = GlimpseSoftConfig
    partner_of = "glimpse"
    soft = True
    departures = (
        "001's \"baseline attention model [11]\" (Tables I–II) is Sharma et al.'s soft attention with its own "
        "settings; this partner puts it on glimpse's network and training (001 §III.B's sizes, Adam, 10 "
        "epochs; lr 1e-3 and batch 32 ours), with [11]'s doubly stochastic penalty at λ = 1",
        "at a budget m it reads TSN's m evenly spaced positions (all with no budget); 001 selects no frames",
        GlimpseAgent.departures[-1],
    )

    def _batch_loss(self, cubes, y, multilabel: bool, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Back-propagation of the per-step cross-entropy plus λ·[11]'s penalty / T.
        cubes: (B, T, n, d); y: (B,) or (B, C). Returns the loss and its parts."""
        pol, _, outs = self.module.rollout(cubes, sample=False, soft=True)
        ce = step_cross_entropy(outs, y, multilabel)
        probs = torch.softmax(pol, -1)
        pen = attention_penalty(probs, "doubly_stochastic").mean() / outs.shape[1]
        hit = ((outs[:, -1] > 0) == (y > 0.5)).all(1) if multilabel else outs[:, -1].argmax(1) == y
        return {"loss": ce + self.config.ds_penalty * pen, "ce": ce.detach(), "penalty": pen.detach(),
                "entropy": categorical_entropy(pol.detach()).mean(), "focus": attention_focus(probs.detach()).mean(),
                "train_top1": hit.float().mean()}

    def train_epoch(self, ctx, epoch: int) -> dict:
        """Back-propagation over mini-batches of videos × crops; ``fraction_kept`` 1: the soft
        attention reads every cell of every position."""
        K = ctx.train.feature_maps.shape[2]
        row = self._epoch(ctx.cubes, ctx.labels, K, ctx.train.multilabel, ctx.optimizer, ctx.generator, ctx.device)
        return dict(row, fraction_kept=1.0)
