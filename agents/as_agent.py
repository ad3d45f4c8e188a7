"""The ``as`` agent: attention-aware sampling by deep RL (Dong, Zhang, Tan, AAAI 2019; paper 000).

A BiLSTM topped with an FC layer and a sigmoid reads the states s_t = (s_t^f, s_t^r)
(feature, softmax prediction of the fixed classifier CL) of each crop's sequence of T
positions and emits a keep probability p_t^a per position (000 "Agent"). Training samples
a_t ~ Bernoulli(p_t^a) (eq. 1) for N episodes per video, rewards each episode with eqs. 2–4
computed from the fixed classifier's predictions, and follows REINFORCE with a per-video
moving-average baseline (eqs. 7–8, Algorithm 1) plus L_sampling (eq. 9). At test time the
p_t^a are importance scores and the base ``select`` keeps the top m (Algorithm 2; α of
eq. 10 is ``select``'s ``alpha``). The video-level prediction p¹ is eq. 3's: the mean of the
kept cells' softmax probabilities (the sigmoids on a multi-label store), not of their
logits; ``Selection.video_scores`` holds it in logit space, log p¹ (multi-label: logit p¹),
so softmax (sigmoid) of the scores gives p¹ back and every ranking is p¹'s.

Selection modes (000 Table 3): ``frame`` — one action per position, shared by its crops
(p_t^a = mean over crops of the per-crop outputs); ``region`` — one action per
(position, crop).

Training follows Algorithm 1: one Adam update per training video (``batch_size`` 1, the
default), vectorised inside the update — the video's K crops go through the BiLSTM as K
sequences and all N episodes are sampled, rewarded and back-propagated at once — and
sequential over videos. ``batch_size`` B > 1 averages B videos' gradients per update, a
departure (see :class:`ASConfig`); ``benchmarks/agents.py`` times both against a literal
per-video Algorithm 1. ``train --seeds N --together`` runs N seeds' Algorithm 1 side by side
in one batched network (:class:`StackedASNet`, agents/together.py): the same per-video
updates of each seed, to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from agents.base import MODES, Agent, States, aggregate, register, top_m_mask
from agents.options import check_ranges
from agents.together import StackedParameters, stacked_linear, stacked_lstm
from agents.rl import MovingAverageBaseline, bernoulli_entropy, bernoulli_log_prob, multistep_lr, reinforce_loss
from data.errors import InputError

STATE_KINDS = ("both", "features", "predictions")
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class ASConfig:
    """Defaults are 000's settings where the paper gives them.

    Paper: Adam, lr 1e-5 ×0.1 after epochs 20 and 40, 45 epochs, weight decay 1e-5, β = 0.1,
    Ω = 10, m = 12 of T = 25 (best in Table 3), state (s^f, s^r) (Table 2), and one update
    per video (Algorithm 1 lines 2–13: ``batch_size`` 1, the default).
    Not in the paper (our choices): ``hidden`` (BiLSTM size per direction), ``episodes`` N
    (the paper never states N; 8), ``baseline_momentum`` of the moving average b, ``proj``
    (optional linear projection of the state before the BiLSTM, 0 = none).

    The baseline b of eq. 8 is "the moving average of rewards experienced so far for each
    video", updated at Algorithm 1 line 13, after line 12's step; 000 never says what b is
    before a video's first update, so that update uses b = 0 (R itself, in {−Ω, −1, 0, 1, Ω}):
    a video's first update is unbaselined. Line 13 then sets b to that visit's mean reward,
    and every later visit moves it by ``baseline_momentum`` (agents/rl.py
    :class:`MovingAverageBaseline`). A departure only where 000 is silent; listed in the
    report (``ASAgent.departures``).

    ``precision`` ``bfloat16`` (not the paper's; ours, for speed) runs the BiLSTM's matmuls
    under bf16 autocast, in training and at test time, with the keep probabilities, rewards,
    losses and Adam in float32; ``benchmarks/stream.py`` measures its speed and whether it
    changes what the agent learns beyond seed noise.

    ``batch_size`` B > 1 is a departure, for throughput: the gradient of B videos is
    averaged into one Adam step, and Adam's step does not grow with B, so at the same lr an
    epoch takes B× fewer steps of about the same size. Measured (``framesel`` 2026-12-02) on
    planted states — 240 train / 240 test videos of one ``planted_states(V=480, T=25,
    n_key=3)`` call, 45 epochs, agent seeds 0/1/2 — top-1 at m = 4 (uniform 0.054,
    max_response 0.083, oracle 1.0) and top-5 key precision (chance 3/25 = 0.12):

    - B = 1, lr 1e-5 (default, Algorithm 1): top-1 0.375/0.450/0.542, precision 0.34/0.39/0.44;
    - B = 32, lr 1e-5 (the old default): top-1 0.308/0.287/0.279, precision 0.27/0.27/0.31;
      after 4 epochs 0.175, below the bar that B = 1 clears by then
      (``tests/test_as_agent.py::test_learns_at_the_papers_defaults_on_planted_states``);
    - B = 32, lr 3.2e-4 (lr × B): top-1 0.754/0.767/0.754, precision 0.55/0.55/0.55.

    So lr × B is not equivalent to per-video updates: on a few hundred videos it learns more
    (each step follows a 32-video gradient, far less noisy than one video's 8 episodes); the
    paper's lr is sized for UCF101's 9,537 videos × 20
    epochs ≈ 190k per-video steps before its first decay, where 240 videos give 4,800. Use
    ``--set batch_size=32 --set lr=3.2e-4`` knowingly, as a departure; the default stays
    the paper's. ``benchmarks/agents.py`` gives the throughput of each.
    """

    hidden: int = 256
    state: str = "both"
    mode: str = "frame"
    m: int = 12
    beta: float = 0.1
    omega: float = 10.0
    episodes: int = 8
    lr: float = 1e-5
    lr_milestones: tuple = (20, 40)
    lr_gamma: float = 0.1
    weight_decay: float = 1e-5
    epochs: int = 45
    batch_size: int = 1
    baseline_momentum: float = 0.9
    proj: int = 0
    precision: str = "float32"

    def __post_init__(self):
        if self.state not in STATE_KINDS:
            raise InputError(f"as state must be one of {STATE_KINDS}, not {self.state!r}")
        if self.mode not in MODES:
            raise InputError(f"as mode must be one of {MODES}, not {self.mode!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"as precision must be one of {PRECISIONS}, not {self.precision!r}")
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        check_ranges("as", self, at_least_one=("m", "episodes", "epochs", "batch_size", "hidden"),
                     non_negative=("proj", "beta", "omega", "weight_decay", "lr_milestones"),
                     positive=("lr", "lr_gamma"), unit_open=("baseline_momentum",))


class ASNet(nn.Module):
    """(S, T, F) float32 states of S sequences -> (S, T) float32 keep probabilities p_t^a."""

    def __init__(self, in_dim: int, hidden: int, proj: int = 0):
        super().__init__()
        self.proj = nn.Linear(in_dim, proj) if proj else nn.Identity()
        self.lstm = nn.LSTM(proj or in_dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.proj(x))               # (S, T, 2H): [h_t^f ; h_t^b]
        return torch.sigmoid(self.fc(h).squeeze(-1).float())  # p_t^a = σ(W h_t), float32 under autocast too


class StackedASNet(nn.Module):
    """N seeds' :class:`ASNet` as one batched network (agents/together.py):
    (N, S, T, F) -> (N, S, T) keep probabilities, each seed's sequences through its own weights."""

    def __init__(self, nets: list[ASNet], proj: bool):
        super().__init__()
        self.params, self.proj = StackedParameters(nets), proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = stacked_linear(x, self.params, "proj.") if self.proj else x
        h = torch.cat([stacked_lstm(x, self.params, "lstm."), stacked_lstm(x, self.params, "lstm.", reverse=True)], -1)
        return torch.sigmoid(stacked_linear(h, self.params, "fc.").squeeze(-1).float())


# -- the reward (eqs. 2–4) -------------------------------------------------------------
def _true_prob(p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p_c: (..., C) probs, labels (...) int64 or (..., C) multi-hot -> (...). Multi-label:
    mean prob of the true classes."""
    if labels.dim() == p.dim():
        y = labels.to(p.dtype)
        return (p * y).sum(-1) / y.sum(-1).clamp_min(1.0)
    shape = torch.broadcast_shapes(p.shape[:-1], labels.shape)
    return p.expand(*shape, p.shape[-1]).gather(-1, labels.long().expand(shape).unsqueeze(-1)).squeeze(-1)


def _top1_correct(p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    top = p.argmax(dim=-1)
    if labels.dim() == p.dim():   # multi-label: the top-1 class is one of the true ones
        shape = torch.broadcast_shapes(top.shape, labels.shape[:-1])
        y = labels.expand(*shape, labels.shape[-1])
        return y.gather(-1, top.expand(shape).unsqueeze(-1)).squeeze(-1) > 0
    return top == labels.long()


def as_reward(p0: torch.Tensor, p1: torch.Tensor, labels: torch.Tensor, omega: float = 10.0) -> torch.Tensor:
    """R of 000 eq. 4: +Ω when the top-1 turns from wrong (p⁰) to right (p¹), −Ω when it turns
    from right to wrong, otherwise r0 = sgn(p¹_c − p⁰_c) (eq. 2; 0 when unchanged).

    p0, p1: (..., C) float video-level probabilities (broadcastable); labels: (...) int64
    class ids or (..., C) multi-hot (p_c is then the mean over the true classes) -> (...) float32.
    """
    r0 = torch.sign(_true_prob(p1, labels) - _true_prob(p0, labels))
    ok0, ok1 = _top1_correct(p0, labels), _top1_correct(p1, labels)
    out = torch.where(~ok0 & ok1, torch.full_like(r0, omega), r0)
    return torch.where(ok0 & ~ok1, torch.full_like(r0, -omega), out).float()


def episode_predictions(probs: torch.Tensor, actions: torch.Tensor):
    """p⁰ and p¹ of 000 eq. 3 for N episodes at once.

    probs: (B, T, K, C) per-frame softmax s_t^r; actions: (N, B, T) float {0,1} (frame mode:
    one per position, all its crops) or (N, B, T, K) (region mode). Returns p0 (B, C) — mean
    over every cell — and p1 (N, B, C) — mean over the kept cells; an episode that keeps
    nothing gets p1 = p0 (no selection = no change, reward 0 unless Ω applies — it cannot).
    """
    B, T, K, C = probs.shape
    p0 = probs.mean(dim=(1, 2))
    a = actions if actions.dim() == 4 else actions.unsqueeze(-1).expand(*actions.shape, K)
    kept = a.sum(dim=(2, 3))                                          # (N, B)
    p1 = torch.einsum("nbtk,btkc->nbc", a, probs) / kept.clamp_min(1.0)[..., None]
    p1 = torch.where((kept > 0)[..., None], p1, p0.expand_as(p1))
    return p0, p1


def sampling_loss(p: torch.Tensor, m: int, beta: float = 0.1) -> torch.Tensor:
    """L_sampling of 000 eq. 9: β·|(1/T) Σ_t p_t^a − m/T|, averaged over videos.

    p: (B, T) or (B, T, K) keep probabilities (crops averaged in) -> () float.
    """
    T = p.shape[1]
    return beta * (p.flatten(1).mean(1) - m / T).abs().mean()


def state_input(features: torch.Tensor, logits: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, T, K, D) features, (B, T, K, C) logits -> (B·K, T, F) sequences per crop, F = D + C
    for ``both`` (s^f ; softmax s^r), D for ``features``, C for ``predictions``."""
    parts = []
    if kind in ("both", "features"):
        parts.append(features.float())
    if kind in ("both", "predictions"):
        parts.append(torch.softmax(logits.float(), dim=-1))
    x = torch.cat(parts, dim=-1)
    B, T, K, F = x.shape
    return x.permute(0, 2, 1, 3).reshape(B * K, T, F)


@register("as")
class ASAgent(Agent):
    """Attention-aware sampling agent (000). See the module docstring."""

    Config = ASConfig
    streams_training = True
    # eq. 3: p¹ is the (α-weighted, eq. 10) mean of the per-frame probabilities over the kept
    # cells (Algorithm 2 line 6); video scores are log p¹ (multi-label: logit p¹)
    consensus = "prob_mean"

    def trained_budget(self) -> int:
        """L_sampling (eq. 9) trains the policy towards keeping m of the T positions."""
        return int(self.config.m)

    departures = (
        "the moving-average baseline b (eq. 8, Algorithm 1 line 13) is 0 at a video's first update: 000 "
        "does not say how b starts and updates it after the step (line 12), so the first visit's update "
        "is unbaselined; later visits use that video's moving average (momentum 0.9, ours)",
        "000 does not state the number of episodes N (8 here), the BiLSTM's size (256 a direction) or b's "
        "momentum (0.9): ours",
        "on a multi-label store the reward's p_c (eqs. 2–4) is the mean probability of the true classes "
        "and a top-1 is right when it is one of them (000 is single-label)",
    )

    def build(self) -> nn.Module:
        c = self.config
        in_dim = {"both": self.feature_dim + self.num_classes, "features": self.feature_dim,
                  "predictions": self.num_classes}[c.state]
        return ASNet(in_dim, c.hidden, c.proj)

    def _keep_probs(self, features, logits, stack=None) -> torch.Tensor:
        """(B, T, K, D), (B, T, K, C) on the module's device -> (B, T, K) p^a per crop; with
        ``stack``, B = seeds × videos, seed-major, each seed's videos through its own net."""
        B, T, K = features.shape[:3]
        x = state_input(features, logits, self.config.state)          # (B·K, T, F)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bfloat16"):
            p = self.module(x) if stack is None else stack(x.view(stack.params.seeds, -1, T, x.shape[-1]))
        return p.reshape(B, K, T).permute(0, 2, 1)

    def score(self, states: States, batch_size: int = 256) -> torch.Tensor:
        """(V, T, K) float32 keep probabilities p_t^a (Algorithm 2 line 3), on the states' device."""
        device = next(self.module.parameters()).device
        self.module.eval()
        out = []
        with torch.no_grad():
            for s in range(0, states.shape[0], batch_size):
                f = states.features[s:s + batch_size].to(device)
                out.append(self._keep_probs(f, states.logits[s:s + batch_size].to(device)).float())
        V, T, K, _, _ = states.shape
        scores = torch.cat(out) if out else torch.zeros(0, T, K)
        return scores.to(states.logits.device)

    # -- training -------------------------------------------------------------------------
    def _step(self, batches, opt, gens, baselines, device, stack=None) -> dict:
        """One update of Algorithm 1 (lines 3–13): ``batches`` holds one (idx, States) per
        seed — the training videos idx (B,) and their states; B = 1 is the paper's per-video
        update; all N episodes and K crops at once. One seed (``self.module``), or several
        through ``stack`` (agents/together.py), each with its generator ``gens[s]`` and
        baselines ``baselines[s]``. Returns the step's diagnostics per seed as (seeds,)
        detached tensors (means over its B videos), so that a per-video loop never waits on
        a device sync for them."""
        c, N = self.config, len(batches)
        f = torch.cat([b.features.to(device) for _, b in batches])      # (N·B, T, K, D), seed-major
        lg = torch.cat([b.logits.to(device) for _, b in batches])
        labels = torch.cat([b.labels.to(device) for _, b in batches])
        p = self._keep_probs(f, lg, stack)                               # (N·B, T, K), line 6
        pa = p.mean(dim=2) if c.mode == "frame" else p                   # policy per action
        per = (c.episodes, pa.shape[0] // N, *pa.shape[1:])
        u = torch.cat([torch.rand(per, generator=g) for g in gens], dim=1).to(device)
        a = (u < pa.detach()).float()                                    # (E, N·B, T[, K]) eq. 1, line 8
        probs = torch.softmax(lg.float(), dim=-1)
        p0, p1 = episode_predictions(probs, a)                           # lines 5, 9
        R = as_reward(p0.unsqueeze(0), p1, labels.unsqueeze(0), c.omega)  # (E, N·B), line 10
        logp = bernoulli_log_prob(pa.unsqueeze(0), a).flatten(2).sum(-1)  # Σ_t log π(a_t|h_t)
        b = torch.cat([bl(i.to(bl.values.device)).to(device) for bl, (i, _) in zip(baselines, batches)])
        l_rl, l_samp = reinforce_loss(logp, R, b), sampling_loss(pa, c.m, c.beta)   # eqs. 8, 9
        loss = (l_rl + l_samp) * N           # the sum of the seeds' own mean losses
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()                                                       # line 12
        for s, (bl, (i, _)) in enumerate(zip(baselines, batches)):       # line 13
            bl.update(i.to(bl.values.device), R.mean(0).view(N, -1)[s])
        return self._diagnostics(p.detach(), pa.detach(), a, R, logp.detach() * (R - b).detach(), lg, labels, N)

    def _diagnostics(self, p, pa, a, R, weighted_logp, lg, labels, N) -> dict:
        """_step's terms, each a (N,) tensor of per-seed means (videos seed-major)."""
        c = self.config

        def seed_mean(x, dim=0):
            return x.movedim(dim, 0).reshape(N, -1).float().mean(1)
        with torch.no_grad():
            hit = _top1_correct(aggregate(lg.float(), top_m_mask(p, c.m, c.mode)), labels)
            l_samp = c.beta * (pa.flatten(1).mean(1) - c.m / pa.shape[1]).abs()
            return {"loss": seed_mean(-weighted_logp, 1) + seed_mean(l_samp), "l_sampling": seed_mean(l_samp),
                    "reward": seed_mean(R, 1), "stimulation": seed_mean(R == c.omega, 1),
                    "punishment": seed_mean(R == -c.omega, 1), "entropy": seed_mean(bernoulli_entropy(pa)),
                    "fraction_kept": seed_mean(a, 1), "mean_keep_prob": seed_mean(pa),
                    "train_top1_at_m": seed_mean(hit)}

    def _epoch(self, ctxs, opt, epoch, stack=None) -> list[dict]:
        """One pass over the training videos in a fresh random order per seed (one
        TrainContext per seed), ``batch_size`` videos per update (1: Algorithm 1). Returns
        each seed's epoch means of :meth:`_step`'s diagnostics and its mean baseline b."""
        V, B = ctxs[0].train.shape[0], self.config.batch_size
        orders = [c.train.batches(torch.randperm(V, generator=c.generator), B, device=c.device) for c in ctxs]
        gens, baselines = [c.generator for c in ctxs], [c.state["baseline"] for c in ctxs]
        sums: dict[str, torch.Tensor] = {}
        (self.module if stack is None else stack).train()
        for batches in tqdm(zip(*orders), desc=f"as epoch {epoch + 1}", total=-(-V // B),
                            disable=not ctxs[0].progress, leave=False):
            for k, v in self._step(batches, opt, gens, baselines, ctxs[0].device, stack).items():
                sums[k] = sums.get(k, 0.0) + v * len(batches[0][0])       # weight: the step's videos
        return [dict({k: float(v[s]) / V for k, v in sums.items()}, baseline=float(bl.values.mean()))
                for s, bl in enumerate(baselines)]

    # -- the training template's hooks (agents/training.py) ------------------------------
    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def lr_at(self, epoch: int) -> float:
        c = self.config
        return multistep_lr(c.lr, epoch, c.lr_milestones, c.lr_gamma)

    def prepare(self, ctx) -> None:
        """The per-video moving-average baselines b (Algorithm 1), checkpointed as ``baseline``."""
        ctx.state["baseline"] = MovingAverageBaseline(ctx.train.shape[0], self.config.baseline_momentum)

    def train_epoch(self, ctx, epoch: int) -> dict:
        """Algorithm 1 over the training videos; the row adds the mean baseline b."""
        return self._epoch([ctx], ctx.optimizer, epoch)[0]

    # -- several seeds in one batched pass (agents/together.py) --------------------------
    trains_seeds_together = True

    def stack(self, agents: list["ASAgent"]) -> "StackedASNet":
        return StackedASNet([a.module for a in agents], bool(self.config.proj))

    def train_epoch_together(self, stack, ctxs, optimizer, epoch: int) -> list[dict]:
        """:meth:`train_epoch` for every seed at once: one row per seed."""
        return self._epoch(ctxs, optimizer, epoch, stack)

    def validate(self, ctx, epoch: int) -> dict:
        """Top-1 at the config's m, in its mode (Algorithm 2)."""
        c, val = self.config, ctx.val
        sel = self.select(val.to(ctx.device), c.m, mode=c.mode)
        return {"val_top1_at_m": float(_top1_correct(sel.video_scores.cpu(), val.labels.cpu()).float().mean())}
