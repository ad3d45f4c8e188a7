"""DSN's network and the arithmetic of its sections (paper 003; the agent, its training and
the mapping of the paper's clips onto T cached positions are in :mod:`agents.dsn`):
the observation network, the M x N section cut (§IV-B), the within-section pick, the
reward of eq. 6, the Gumbel argmax used for sampling and the least-squares head start.

Shapes: V videos, T positions, D feature size, C classes; M sections of N candidates."""
from __future__ import annotations

import torch
from torch import nn

from data.errors import InputError

class DSNModule(nn.Module):
    """Observation network (per position, shared) and, for ``alternate``, the class head."""

    def __init__(self, obs_dim: int, hidden: int, feature_dim: int, num_classes: int, with_head: bool):
        super().__init__()
        self.observer = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.head = nn.Linear(feature_dim, num_classes) if with_head else None

    def observe(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (B, T, K, D') -> (B, T) float32 policy logits, averaged over crops (a clip is
        kept or dropped with all its crops)."""
        return self.observer(obs).squeeze(-1).mean(-1)


def section_positions(T: int, M: int, N: int, jitter: torch.Tensor | None = None) -> torch.Tensor:
    """The M·N candidate positions of the training scheme M : N (§III-A).

    [0, T) is cut into M·N equal segments; segment s gives ⌊(s + u)·T/(M·N)⌋ with u the
    jitter in [0, 1) (training) or 0.5 (``jitter=None``, the centre). jitter: (..., M·N)
    float. Returns (..., M, N) int64; section m holds segments m·N … m·N + N − 1.
    """
    S = M * N
    if S > T:
        raise InputError(f"dsn scheme {M} : {N} needs {S} positions, the states have T={T}")
    u = torch.full((S,), 0.5, dtype=torch.float64) if jitter is None else jitter.double()
    seg = torch.arange(S, dtype=torch.float64, device=u.device)
    pos = torch.floor((seg + u) * T / S).long().clamp_(0, T - 1)
    return pos.reshape(*pos.shape[:-1], M, N)


def clip_scheme(T: int, M: int, N: int) -> tuple[int, int]:
    """(M, N') the test sectioning of a budget of M clips (one per section) out of T
    positions, N clips per section as in training: N' = N when M·N <= T, else the most that
    fit without overlap, T // M (>= 1; 1 is uniform sampling). InputError when M > T."""
    if M < 1 or M > T:
        raise InputError(f"dsn cannot keep {M} clips (one per section) out of T={T} positions")
    return M, min(N, T // M)


def section_pick(cand: torch.Tensor, pos: torch.Tensor, T: int) -> torch.Tensor:
    """Per-position scores of a sectioned choice: softmax of ``cand`` within each section,
    +1 on each section's argmax (ties: the first candidate), 0 at non-candidates.

    cand: (B, M, N) float candidate logits; pos: (M, N) int64 distinct positions in [0, T)
    -> (B, T) float32 in [0, 2]. Top-M of the result is exactly the M section winners (each
    >= 1 + 1/N, every other position < 1).
    """
    B = cand.shape[0]
    probs = torch.softmax(cand.float(), dim=-1)
    win = torch.zeros_like(probs).scatter_(-1, probs.argmax(-1, keepdim=True), 1.0)
    out = torch.zeros(B, T, dtype=torch.float32, device=cand.device)
    return out.scatter_(1, pos.reshape(1, -1).expand(B, -1).to(cand.device), (probs + win).reshape(B, -1))


def dsn_reward(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 6 for every candidate position: the classifier's softmax score of the true class
    when its prediction is right, else −γ.

    logits: (B, T, C) float (crops already averaged); labels: (B,) int64 -> (B, T) float32.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    y = labels.long()[:, None, None].expand(*probs.shape[:2], 1)
    right = probs.argmax(-1) == y.squeeze(-1)
    return torch.where(right, probs.gather(-1, y).squeeze(-1), torch.full_like(right, -gamma, dtype=probs.dtype))


def gumbel_argmax(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw from softmax(logits) along the last dim (Gumbel-max). Uniforms come from the
    CPU ``generator`` so runs repeat whatever the device. (..., n) -> (...) int64."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
    return (logits.detach().double() + g).argmax(-1)


def fit_linear_head(features: torch.Tensor, logits: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares W, b with features·Wᵀ + b ≈ logits over every (video, position, crop).

    The normal equations are accumulated over mini-batches of videos, so memory is O(D²)
    whatever V is; a tiny ridge keeps them solvable. features (V, T, K, D), logits
    (V, T, K, C) -> W (C, D) float32, b (C,) float32.
    """
    D, C = features.shape[-1], logits.shape[-1]
    xtx = torch.zeros(D + 1, D + 1, dtype=torch.float64)
    xty = torch.zeros(D + 1, C, dtype=torch.float64)
    for i in range(0, features.shape[0], batch):
        x = features[i:i + batch].reshape(-1, D).double().cpu()
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
        xtx += x.T @ x
        xty += x.T @ logits[i:i + batch].reshape(-1, C).double().cpu()
    ridge = 1e-6 * xtx.diagonal().mean().clamp_min(1e-12)
    sol = torch.linalg.solve(xtx + ridge * torch.eye(D + 1, dtype=xtx.dtype), xty)
    return sol[:D].T.float().contiguous(), sol[D].float().contiguous()



def top1(video_scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of (V, C) scores against (V,) int labels."""
    return float((video_scores.argmax(-1).cpu() == labels.cpu().long()).float().mean())
