"""``rtsae_nogate``: rtsae's partner, the recognition network without the RTSAE (paper 004).

004 measures the RTSAE against the same recognition model trained without it: Table 3's
"Vanilla ARCH (average sampling)" 83.7 % against "Vanilla ARCH+RTSAE (2 layers RTSAE)"
89.1 % on UCF101 ("We can see that the RTSAE effectively improves the Vanilla ARCH in
recognition performance", §5.1.2), and §5.1.3 on LRCN [17]: "The architecture in [17] is
similar with our method; however, there is no keyframe selection in this method". Its own
RTSAE-DSCNN has no such row, so the partner is that model's recognition network alone: the
F-Net fusion (eqs. 15–16) and the sequence classifier of eq. 13 reading every position
(gate 1 everywhere), trained separately by stage 3's cross-entropy alone — no encoder, no
gate, no eq. 12, so no stage 2 — with the same temporal augmentation (§5.1.1 B), optimizer
and sizes as rtsae, at 004's learning rate (:class:`RTSAENoGateConfig`: rtsae's defaults
minus the gate's; rtsae's own lr of 1e-2 leaves this network near chance).

This is not "the gated network forced to read every position" (evaluate's ``same_all`` of
rtsae, 004 Fig. 13's inverse analysis): that network was trained to read a few positions.
At a budget m it reads TSN's m evenly spaced positions (agents/papers.py :class:`NoSelection`).
Two streams as rtsae: ``two_stream=True`` fuses the flow stream given as ``flow=``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agents.base import register
from agents.options import check_ranges
from agents.papers import NoSelection
from agents.rtsae import RTSAEAgent, classification_terms
from agents.rtsae_model import OPTIMIZERS, _Recogniser
from data.errors import InputError


@dataclass(frozen=True)
class RTSAENoGateConfig:
    """rtsae's defaults (:class:`agents.rtsae_model.RTSAEConfig`, each field's meaning and
    source there) for the fields its recognition network and stage 3 use; the encoder's,
    the gate's, eq. 12's and stage 2's fields have no meaning here and are absent, so
    ``framesel train --agent rtsae --set phi=...`` leaves the partner as it is.

    One default differs from rtsae's: ``lr`` is 004 §4.3's 1e-3 ("learning rate is fixed as
    10−3"), not rtsae's departure to 1e-2, which this network does not learn at. Measured on
    benchmarks/rtsae_terms.py --full's planted states (240 + 240 videos, D = 64, 3 key
    positions of 25, seed 0, every other default): at 1e-2 the cross-entropy falls from 2.24
    to 1.60 in 30 epochs, training top-1 0.44, test top-1 0.242; at 1e-3 it falls to 0.05,
    training top-1 1.00, test top-1 0.896 (rtsae at its defaults there: 0.833 gated)."""

    fusion_dim: int = 1024         # F-Net width, fc7 1024 [004 Table 1]
    classifier_hidden: int = 256   # sequence classifier LSTM (size not given in 004)
    two_stream: bool = False       # fuse a second (flow) stream, eqs. 15–17
    epochs: int = 30               # stage 3 (fine-tuning)
    batch_size: int = 16           # fine-tuning batch [004 §4.3]
    optimizer: str = "adam"        # as rtsae's stage 3 (004 names none)
    lr: float = 1e-3               # 004 §4.3's (rtsae departs to 1e-2; docstring)
    momentum: float = 0.9
    aug_fraction: float = 0.8      # temporal augmentation [004 §5.1.1 B], as rtsae
    aug_frames: int = 2
    aug_other: float = 0.5
    aug_shift: bool = True

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        check_ranges("rtsae_nogate", self, at_least_one=("fusion_dim", "classifier_hidden", "epochs", "batch_size"),
                     non_negative=("aug_frames",), positive=("lr",), unit=("aug_fraction", "aug_other"),
                     unit_open=("momentum",))


class _NoGateNet(_Recogniser):
    """F-Net and sequence classifier only (agents/rtsae_model.py :class:`_Recogniser`)."""

    def __init__(self, cfg: RTSAENoGateConfig, feature_dim: int, num_classes: int):
        super().__init__()
        self._add_recogniser(cfg, feature_dim, num_classes)


@register("rtsae_nogate")
class RTSAENoGate(NoSelection, RTSAEAgent):
    """rtsae's recognition network trained and tested without the RTSAE; see the module docstring."""

    Config = RTSAENoGateConfig
    partner_of = "rtsae"
    departures = (
        "004 trains no gate-free RTSAE-DSCNN: this partner is its recognition network (F-Net, eqs. 15–16, "
        "and the sequence classifier, eq. 13, gate 1 everywhere) trained alone by stage 3's cross-entropy, "
        "as Table 3 sets Vanilla ARCH (average sampling) against Vanilla ARCH+RTSAE (§5.1.2)",
        "at a budget m it reads TSN's m evenly spaced positions (Table 3's \"average sampling\"), all of "
        "them with no budget",
        "stage 3's optimizer is Adam (004 §4.3 names none), at 004's lr 1e-3 (rtsae's 1e-2 leaves this "
        "network near chance: RTSAENoGateConfig)",
    ) + RTSAEAgent.departures[3:6] + (
        "the backbone is frozen (cached features) where 004 §4.3 fine-tunes the DSCNN",)

    def build(self) -> nn.Module:
        return _NoGateNet(self.config, self.feature_dim, self.num_classes)

    def stages(self) -> tuple[tuple[str, int], ...]:
        """Stage 3 only: without an encoder there is nothing for stage 2 to train."""
        return (("finetune", self.config.epochs),)

    def _batch_loss(self, xs, xt, y, stage: str, multilabel: bool) -> dict[str, torch.Tensor]:
        z = self.module.fuse(xs, xt)
        terms = classification_terms(self.module.classify(z, z.new_ones(z.shape[:2])), y, multilabel)
        terms["loss"] = terms["ce"]
        return terms

    def train_epoch(self, ctx, epoch: int) -> dict:
        """One epoch of stage 3; the row adds the fusion weight w_f and fraction_kept 1."""
        row = self._epoch(ctx.train, ctx.inputs.get("flow"), ctx.stage, ctx.optimizer, ctx.generator, ctx.device)
        return dict(row, w_f=float(self.module.wf.detach()), fraction_kept=1.0)
