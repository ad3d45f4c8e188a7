"""``dsn_nosampler``: alternating dsn's partner, its classifier trained without the sampler
(paper 003).

003 Table I measures DSN against "Baseline (random)" and "Baseline (uniform)": "They use the
same clip-level classifier, randomly sample M clips and uniformly sample M clips from the
whole video in the test phase"; "The clip-level classifiers of the baseline methods are
trained by randomly sampled frames. When M > 1, we average the predictions of all clips to
get the final predictions and train the baseline" (§V-C). In 003 that classifier is also
DSN's starting point and DSN-f's fixed one. framesel's DSN-f predicts with the head of
``framesel head``, which every head row already shares; alternating DSN fine-tunes a linear
head of its own (eq. 5, from the least-squares fit of the cached logits), so its partner is
that head trained the baseline's way: the same start, eq. 5's cross-entropy of the mean of
M clips, the same SGD, schedule, epochs and batches, with each section's clip drawn at random
(one of its N jittered candidates: a random clip of the section) instead of by the
observation network. At a budget m it reads TSN's m evenly spaced positions — Table I's
"Baseline (uniform)" — and with no budget every position (Table I's "Dense sampling").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agents.base import register
from agents.dsn import DSN, HEAD_INIT, section_positions
from agents.options import check_ranges
from agents.papers import NoSelection
from agents.training import mean_rows
from data.errors import InputError


@dataclass(frozen=True)
class DSNNoSamplerConfig:
    """Alternating dsn's defaults (:class:`agents.dsn.DSNConfig`, each field's source there)
    for the fields its head's training uses; the observation network's and the reward's
    (observe, observer_dim, hidden, gamma, test_sections, mode) are absent."""

    sections: int = 1                 # M clips per video in training (trimmed 1 : 3)
    clips_per_section: int = 3        # N: the clip of a section is one of N jittered candidates
    head_init: str = "lstsq"
    lr: float = 1e-3                  # SGD, momentum 0.9, ×0.1 at epochs 45 and 60, 70 epochs
    momentum: float = 0.9
    milestones: tuple = (45, 60)
    lr_decay: float = 0.1
    epochs: int = 70
    batch_size: int = 128
    min_steps_per_epoch: int = 28
    weight_decay: float = 5e-4
    episodes: int = 1                 # random draws of the M clips per video per step

    def __post_init__(self):
        if self.head_init not in HEAD_INIT:
            raise InputError(f"dsn_nosampler head_init must be one of {HEAD_INIT}, not {self.head_init!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        check_ranges("dsn_nosampler", self, at_least_one=("sections", "clips_per_section", "epochs", "batch_size",
                                                          "episodes"),
                     non_negative=("min_steps_per_epoch", "weight_decay", "milestones"),
                     positive=("lr", "lr_decay"), unit_open=("momentum",))


class _HeadOnly(nn.Module):
    """The linear classification head alone (no observation network)."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.head = nn.Linear(feature_dim, num_classes)


@register("dsn_nosampler")
class DSNNoSampler(NoSelection, DSN):
    """Alternating dsn's head trained on random clips; see the module docstring."""

    Config = DSNNoSamplerConfig
    partner_of = "dsn"
    departures = (
        "003's baseline classifier is \"trained by randomly sampled frames\" (§V-C, Table I) and DSN starts "
        "from it; here DSN-f's is the head of `framesel head` (every head row's), and alternating DSN's "
        "partner is its own linear head from the same least-squares start, trained by eq. 5 on random clips "
        "for DSN's epochs and schedule, tested on uniform-m (Table I's \"Baseline (uniform)\")",
    ) + DSN.departures[1:]

    def build(self) -> nn.Module:
        return _HeadOnly(self.feature_dim, self.num_classes)

    def _observed(self, states):
        """No observation network: the features stand in where dsn's helpers expect one."""
        return states.features

    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        """SGD with momentum (003 §V-B), λ of eq. 5 on the head."""
        return torch.optim.SGD(self.module.parameters(), lr=self.config.lr, momentum=self.config.momentum,
                               weight_decay=self.config.weight_decay)

    def train_epoch(self, ctx, epoch: int) -> dict:
        """Eq. 5 over mini-batches of videos, M random clips each; the head's lr scaled by
        the step's share of batch_size as alternating dsn's is. Row: loss, train_top1 (of the
        M-clip mean), fraction_kept = M/T."""
        cfg, train, dev = self.config, ctx.train, ctx.device
        V, T = train.shape[:2]
        B = self.train_batch(V)
        group = ctx.optimizer.param_groups[0]
        group["lr_scale"] = B / cfg.batch_size
        group["lr"] = self.lr_at(epoch) * group["lr_scale"]
        rows = [self._random_step(train.features[idx].to(dev), train.labels[idx].to(dev).long(), ctx.optimizer,
                                  ctx.generator)
                for idx in torch.randperm(V, generator=ctx.generator).split(B)]
        return dict(mean_rows(rows), fraction_kept=cfg.sections / T)

    def _random_step(self, feats, labels, opt, gen) -> dict:
        """One eq. 5 step on B videos × E episodes of M random clips. feats (B, T, K, D)."""
        cfg, (B, T) = self.config, feats.shape[:2]
        M, N, E = cfg.sections, cfg.clips_per_section, cfg.episodes
        pos = section_positions(T, M, N, torch.rand(B, E, M * N, generator=gen, dtype=torch.float64))
        pick = torch.randint(N, (B, E, M, 1), generator=gen)
        chosen = pos.gather(-1, pick).squeeze(-1).to(feats.device)                    # (B, E, M)
        loss = self._head_step(feats, chosen, labels, opt)
        with torch.no_grad():
            cl = self.module.head(feats.float()).mean(2)                              # (B, T, C)
            pred = cl.gather(1, chosen[:, 0, :, None].expand(-1, -1, cl.shape[-1])).mean(1).argmax(-1)
        return {"loss": float(loss), "train_top1": float((pred == labels).float().mean())}
