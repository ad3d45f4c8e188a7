"""Generic REINFORCE pieces shared by the RL agents (``as``, ``dsn``, ``glimpse``).

Kept small and stable on purpose: other agents import these signatures.

- :func:`bernoulli_log_prob`, :func:`bernoulli_entropy`: keep/drop policies (000 eq. 1).
- :func:`categorical_log_prob`, :func:`categorical_entropy`: pick-one-of-n policies (003, 001).
- :func:`reinforce_loss`: the surrogate whose gradient is the REINFORCE estimate with a
  baseline, -(1/N) Σ_n (R_n − b) Σ_t ∇ log π(a_t) (000 eqs. 7–8; 003 eq. 11).
- :class:`MovingAverageBaseline`: one moving-average reward b per training video
  (000 Algorithm 1 line 13), checkpointable.
- :func:`multistep_lr`: the papers' step decay (×γ at milestone epochs), for an agent's
  ``lr_at`` hook; :func:`step_and_tally`: one optimizer step and the epoch's running means.

The training loop itself (epochs, checkpoints, resume, RNG states) is agents/training.py.
"""
from __future__ import annotations

import torch

from data.errors import InputError

EPS = 1e-6


def bernoulli_log_prob(probs: torch.Tensor, actions: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """log π(a | p) = a·log p + (1−a)·log(1−p), elementwise.

    probs: (...) float in [0, 1]; actions: (...) broadcastable, {0, 1} (bool or float)
    -> (...) float, same dtype as ``probs``. Probabilities are clamped to [eps, 1−eps] so a
    saturated sigmoid never yields −inf (and NaN gradients).
    """
    p = probs.clamp(eps, 1.0 - eps)
    a = actions.to(p.dtype)
    return a * torch.log(p) + (1.0 - a) * torch.log1p(-p)


def bernoulli_entropy(probs: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """H(p) = −p·log p − (1−p)·log(1−p) in nats, elementwise. (...) -> (...)."""
    p = probs.clamp(eps, 1.0 - eps)
    return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


def categorical_log_prob(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[index] along the last dim.

    logits: (..., n) float; index: (...) int64 -> (...) float.
    """
    return torch.log_softmax(logits, dim=-1).gather(-1, index.long().unsqueeze(-1)).squeeze(-1)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) along the last dim. (..., n) -> (...)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def reinforce_loss(log_prob: torch.Tensor, rewards: torch.Tensor,
                   baseline: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Surrogate loss L = −mean_{n,v} (R_{n,v} − b_v) · log π(a_{n,v}).

    Its gradient is minus the REINFORCE estimate of ∇J (000 eq. 8, averaged over the
    videos of a mini-batch). log_prob: (N, B) float with grad — the log-probability of each
    episode's whole action sequence (sum over positions); rewards: (N, B) float; baseline:
    (B,) float or a scalar. Rewards and baseline are detached: they are constants.
    """
    if log_prob.shape != rewards.shape:
        raise InputError(f"log_prob {tuple(log_prob.shape)} and rewards {tuple(rewards.shape)} differ")
    adv = (rewards - torch.as_tensor(baseline, dtype=rewards.dtype, device=rewards.device)).detach()
    return -(adv * log_prob).mean()


class MovingAverageBaseline:
    """One exponential moving average of the reward per training video.

    b_v ← μ·b_v + (1−μ)·r̄_v after each visit, where r̄_v is the mean reward of the visit's N
    episodes; the first visit sets b_v = r̄_v (an average over nothing is no baseline). The
    update comes after the visit's step (000 Algorithm 1 lines 12–13), so that first step
    reads b_v = 0, the value of an unseen video: 000 does not say how b starts.
    ``values``: (V,) float32.
    """

    def __init__(self, num_videos: int, momentum: float = 0.9, device="cpu"):
        if not 0.0 <= momentum < 1.0:
            raise InputError(f"baseline momentum must be in [0, 1), not {momentum}")
        self.momentum = momentum
        self.values = torch.zeros(num_videos, dtype=torch.float32, device=device)
        self.seen = torch.zeros(num_videos, dtype=torch.bool, device=device)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) baselines of the videos ``idx`` (B,) int64 (0 for unseen videos)."""
        return self.values[idx]

    def update(self, idx: torch.Tensor, mean_reward: torch.Tensor) -> None:
        """idx: (B,) int64 distinct video rows; mean_reward: (B,) float this visit's r̄_v."""
        r = mean_reward.detach().to(self.values)
        old = self.values[idx]
        new = torch.where(self.seen[idx], self.momentum * old + (1.0 - self.momentum) * r, r)
        self.values[idx] = new
        self.seen[idx] = True

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "values": self.values.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["values"].shape != self.values.shape:
            raise InputError(f"baseline for {state['values'].shape[0]} videos, training set has "
                             f"{self.values.shape[0]}")
        self.momentum = state["momentum"]
        self.values = state["values"].to(self.values.device)
        self.seen = state["seen"].to(self.seen.device)


def step_and_tally(optimizer: torch.optim.Optimizer, terms: dict, sums: dict, weight: int) -> None:
    """One optimizer step on ``terms["loss"]``; adds every term x ``weight`` (the batch's
    size) to ``sums``, so that ``sums[k] / total weight`` is the epoch's mean of term k."""
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    for key, val in terms.items():
        sums[key] = sums.get(key, 0.0) + float(val.detach()) * weight


def multistep_lr(base_lr: float, epoch: int, milestones=(20, 40), gamma: float = 0.1) -> float:
    """Learning rate of 0-based ``epoch``: base_lr·γ^(number of milestones ≤ epoch).

    000: 1e-5, ×0.1 after 20 and 40 epochs → epochs 0–19 at 1e-5, 20–39 at 1e-6, 40– at 1e-7.
    """
    return base_lr * gamma ** sum(epoch >= m for m in milestones)
