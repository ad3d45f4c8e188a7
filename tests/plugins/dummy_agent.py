"""A whole agent in one file, outside framesel's packages: registered through
FRAMESEL_PLUGINS (data/plugins.py), it trains, is evaluated and keeps the agent contract
(tests/test_plugins.py). Not a paper's method: a linear scorer over each cell's features,
trained so that the softmax-weighted mean of the head's per-frame logits predicts the class
(attention pooling over positions); at test time the top-m positions by score are kept and
the head's logits of those predict, as for every head-reading agent."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agents.base import Agent, register


@dataclass(frozen=True)
class DummyConfig:
    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 32


@register("dummy_attend")
class DummyAttend(Agent):
    Config = DummyConfig
    departures = ("not a paper's method: a test plugin (tests/plugins/dummy_agent.py)",)

    def build(self) -> nn.Module:
        return nn.Linear(self.feature_dim, 1)

    def score(self, states) -> torch.Tensor:
        dev = next(self.module.parameters()).device
        return self.module(states.features.to(dev).float()).squeeze(-1)          # (V, T, K)

    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.config.lr)

    def train_epoch(self, ctx, epoch: int) -> dict:
        train, dev = ctx.train, ctx.device
        losses, right = [], 0
        for idx in torch.randperm(train.shape[0], generator=ctx.generator).split(self.config.batch_size):
            feats = train.features[idx].to(dev).float()                          # (B, T, K, D)
            logits = train.logits[idx].to(dev).float().mean(2)                   # (B, T, C)
            labels = train.labels[idx].to(dev).long()
            weights = torch.softmax(self.module(feats).squeeze(-1).mean(2), dim=1)   # (B, T)
            pooled = (weights[..., None] * logits).sum(1)
            loss = nn.functional.cross_entropy(pooled, labels)
            ctx.optimizer.zero_grad()
            loss.backward()
            ctx.optimizer.step()
            losses.append(loss.item())
            right += int((pooled.argmax(1) == labels).sum())
        return {"loss": sum(losses) / len(losses), "train_top1": right / train.shape[0]}
