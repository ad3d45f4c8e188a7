"""``dsn``: Dynamic Sampling Networks (paper 003, Zheng, Liu, Lu, Wang).

Section based selection on cached states: a video's positions are cut into M sections; a
light observation network scores each candidate position and a softmax over the N
candidates of a section gives the policy P^m (eq. 3). Training samples one position per
section from P^m (a contextual N-armed bandit), rewards it by eq. 6 and updates the observer
by REINFORCE with the greedy baseline R(B^m) (eq. 11). Test keeps the argmax of every
section (eq. 4 averages the kept positions' class scores).

Two training schemes (§IV-A, Table I):

- ``mode="fixed"`` (DSN-f): the classifier is fixed — the per-frame logits in the states.
- ``mode="alternate"`` (DSN, Algorithm 1): a linear classification head on the features is
  fine-tuned (cross-entropy + λ‖Φ‖², eq. 5) on the positions the sampler picks, alternating
  with the sampler's REINFORCE step; rewards and predictions then come from that head. The
  paper warns that a classifier trained from scratch gives almost only negative rewards
  early on and that pre-training it helps (§IV-A, "Discussion on end-to-end training"), so
  the head starts as the least-squares fit reproducing the cached per-frame logits
  (``head_init="lstsq"``; ``"scratch"`` for a random start).

Mapping the paper's clips onto T cached positions (scheme M : N, §IV-B):

- training: [0, T) is cut into M·N equal segments (TSN), one jittered position per segment,
  the N consecutive segments forming a section (M = ``sections``, N = ``clips_per_section``;
  the paper's trimmed-video scheme 1 : 3);
- test (:meth:`DSN.select`, :func:`clip_scheme`): the same cut with the segment centres,
  M' sections × N clips with N as in training ("The N is consistent whether in training or
  testing"): the observer sees only those M'·N candidates and keeps the argmax of each
  section, so a budget of m clips is M' = m sections (003 Fig. 4: "We set N = 3 and vary M
  from 1 to 10"; "The sampling module keeps M clips"). ``m=None`` is the paper's trimmed
  test M = ``test_sections`` (4 : 3, Table VII). A budget whose m·N candidates do not fit
  in T (m > T // N) cannot hold N clips per section without overlap: the sections then
  hold N' = T // m < N candidates each (N' = 1 is uniform sampling) — :func:`clip_scheme`
  says which, and the ``dsn_mn`` protocol reports the test M : N of every row.

:meth:`DSN.score` is the within-section softmax probability of each candidate, +1 on each
section's argmax, and 0 at positions that are no candidate (never observed).

Eq. 3 concatenates the N clips' features before the fc; we apply one shared fc per position
(the concatenated fc with tied blocks) so any M : N works; the softmax across the section
still compares the candidates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from agents.base import Agent, Selection, States, aggregate, register, top_m_mask
from agents.options import check_ranges
from agents.rl import categorical_entropy, categorical_log_prob, multistep_lr, reinforce_loss
from agents.dsn_model import (DSNModule, clip_scheme, dsn_reward, fit_linear_head,  # noqa: F401
                              gumbel_argmax, section_pick, section_positions, top1)
from agents.training import mean_rows
from data.errors import InputError

log = logging.getLogger(__name__)

MODES = ("fixed", "alternate")
OBSERVE = ("observer", "features")
HEAD_INIT = ("lstsq", "scratch")


@dataclass(frozen=True)
class DSNConfig:
    """Defaults: the paper's trimmed-video R3D-18 settings (§IV-B, §V-B) where it gives them.

    The paper's update (§V-B, eq. 8): "SGD with momentum 0.9", "the initial learning rate is
    set to 0.001, which is reduced at 45, 60 epochs by a factor of 10 and stops at 70
    epochs", "the batch size is 128 for ResNet3D-18", the REINFORCE gradient a mean "using
    all samples in a mini-batch", one sampled clip per section per video (Algorithm 1, §III-B).

    Departure — batch_size is a ceiling (``min_steps_per_epoch``): those settings were set
    for UCF101 / HMDB51 split 1 (9,537 / 3,570 training videos: 75 / 28 updates an epoch,
    5,200 / 1,960 in all). At 128 a set of 240 videos gets 2 an epoch, 140 in all, and the
    observer (here trained from scratch, where the paper fine-tunes a Kinetics-pretrained
    ResNet2D-18) barely moves: on planted states (240 train / 240 test videos, T = 25, 3 key
    positions, data seed 0, agent seeds 0–2) it kept a key candidate in 49–87 % of the test
    sections that had one, top-1 at m = 4 0.09–0.20 (uniform 0.05–0.06). So a step takes
    ``min(batch_size, V // min_steps_per_epoch)`` videos (>= 1): never fewer updates an
    epoch than the paper's smallest trimmed set (HMDB51, 28). From 3,584 videos on this is
    the paper's batch of 128 (UCF101 and larger unchanged, HMDB51 127); on 240 it is 8 (30
    updates an epoch, 2,100 in all, the lr and schedule the paper's): the key candidate is
    kept in 93–95 % of those sections, top-1 at m = 4 0.18–0.25 (ceiling 0.258). 0 turns
    it off. The alternate scheme's head, pre-trained (lstsq) as the paper's classifier is,
    keeps the paper's step per video: its lr is scaled by B / batch_size (without it the
    2,100 steps drag its accuracy on key clips from 1.00 to 0.48 on those states). There
    ``alternate`` is bounded by that head, not by the observer: keeping a key clip in every
    section that has one, its lstsq head scores 0.217 / 0.225 (D = 32 / 64) where the cached
    logits score 0.267 / 0.258 (the planted logits carry noise the features do not).

    gamma: the −γ of eq. 6; the paper never states its value, 1.0 is our choice.
    weight_decay: λ of eq. 5 (on the head only); not stated in the paper, TSN's 5e-4.
    hidden: width of the observation network standing in for ResNet2D-18 on cached features.
    episodes: sampled selections per video per step (paper: one).
    """

    mode: str = "alternate"
    sections: int = 1                 # M in training (trimmed 1 : 3)
    clips_per_section: int = 3        # N
    test_sections: int = 4            # M at test for m=None (trimmed 4 : N, §IV-B, Table VII)
    gamma: float = 1.0
    observe: str = "observer"         # states.observer when present, else the features
    observer_dim: int = 0             # D' of the observer stream; 0 = feature_dim
    hidden: int = 256
    head_init: str = "lstsq"
    lr: float = 1e-3                  # SGD, momentum 0.9, ×0.1 at epochs 45 and 60, 70 epochs
    momentum: float = 0.9
    milestones: tuple = (45, 60)
    lr_decay: float = 0.1
    epochs: int = 70
    batch_size: int = 128             # the paper's for R3D-18; at most this many videos a step
    min_steps_per_epoch: int = 28     # HMDB51 split 1 at 128 (3,570 / 128); 0 = always batch_size
    weight_decay: float = 5e-4
    episodes: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"dsn mode must be one of {MODES}, not {self.mode!r}")
        if self.observe not in OBSERVE:
            raise InputError(f"dsn observe must be one of {OBSERVE}, not {self.observe!r}")
        if self.head_init not in HEAD_INIT:
            raise InputError(f"dsn head_init must be one of {HEAD_INIT}, not {self.head_init!r}")
        object.__setattr__(self, "milestones", tuple(self.milestones))
        check_ranges("dsn", self, at_least_one=("sections", "clips_per_section", "test_sections", "epochs",
                                                "batch_size", "episodes", "hidden"),
                     non_negative=("observer_dim", "min_steps_per_epoch", "gamma", "weight_decay", "milestones"),
                     positive=("lr", "lr_decay"), unit_open=("momentum",))


@register("dsn")
class DSN(Agent):
    """Dynamic Sampling Network; see the module docstring. ``select(states, m)`` keeps the
    observer's argmax of each of m sections of N candidates (m=None: ``test_sections``)."""

    Config = DSNConfig
    partner = "dsn_nosampler"    # 003 Table I's baseline classifier, here alternating DSN's head

    def label(self) -> str:
        """``dsn[M:N]`` (alternating) or ``dsn-f[M:N]`` (fixed head): M:N trained sections and clips."""
        return f"{'dsn-f' if self.config.mode == 'fixed' else 'dsn'}[{self.config.sections}:{self.config.clips_per_section}]"

    @property
    def needs(self) -> str:
        """A cheap stream when it observes one (``observe = "observer"``), else everything."""
        return "observer" if self.config.observe == "observer" else "full"
    departures = (
        "the observation network is a 2-layer MLP on the cached features (or a cheap observer stream) "
        "trained from scratch, standing in for 003 §V-B's Kinetics-pretrained ResNet2D-18; eq. 3's fc "
        "over the N concatenated clips is one fc shared by every position (tied blocks), so any M : N works",
        "a step takes min(batch_size, V // min_steps_per_epoch) videos (003 §V-B: 128 for ResNet3D-18): on "
        "a few hundred videos 128 gives 2 updates an epoch and the observer barely moves (DSNConfig)",
        "alternating DSN's classification module is a linear head on the frozen backbone's features, "
        "started as the least-squares fit of the cached logits (003 §IV-A fine-tunes the pretrained "
        "R3D-18), its lr scaled by the step's share of batch_size to keep the paper's step per video",
        "γ of eq. 6 (1.0) and λ of eq. 5 (TSN's 5e-4) are not given in 003 and are ours",
    )

    @classmethod
    def partner_for(cls, config) -> str | None:
        """DSN-f predicts with the head (its baselines are the head's): no partner."""
        return cls.partner if config.mode == "alternate" else None

    def trained_budget(self) -> int:
        """DSN trains with M sections, one clip each: a budget of M clips (§IV-B)."""
        return int(self.config.sections)

    def build(self) -> nn.Module:
        obs_dim = self.config.observer_dim or self.feature_dim
        return DSNModule(obs_dim, self.config.hidden, self.feature_dim, self.num_classes,
                         with_head=self.config.mode == "alternate")

    # -- inputs ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _observed(self, states: States) -> torch.Tensor:
        """(V, T, K, D') what the observation network reads (``config.observe``)."""
        obs = states.observer if self.config.observe == "observer" and states.observer is not None \
            else states.features
        want = self.module.observer[0].in_features
        if obs.shape[-1] != want:
            raise InputError(f"dsn observation network expects {want}-D inputs, the states give "
                             f"{obs.shape[-1]} (set DSNConfig.observer_dim / observe)")
        return obs

    def _class_logits(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, T, K, D), (B, T, K, C) -> (B, T, K, C) the classifier's per-cell logits: the
        cached ones (DSN-f) or the fine-tuned head's (alternate)."""
        return logits.float() if self.module.head is None else self.module.head(feats.float())

    def _batched(self, states: States, fn) -> torch.Tensor:
        """Apply fn(obs, feats, logits) on the module's device to mini-batches of videos and
        concatenate along V, back on the states' device."""
        out, dev, obs = [], self.device, self._observed(states)
        for i in range(0, obs.shape[0], self.config.batch_size):
            sl = slice(i, i + self.config.batch_size)
            out.append(fn(obs[sl].to(dev).float(), states.features[sl].to(dev), states.logits[sl].to(dev)))
        return torch.cat(out).to(states.features.device)

    # -- test -----------------------------------------------------------------------
    def clip_scheme(self, T: int, m: int | None) -> tuple[int, int]:
        """(M, N) at test for a budget of m clips (None: ``test_sections``); see :func:`clip_scheme`."""
        M = self.config.test_sections if m is None else m
        return clip_scheme(T, M, self.config.clips_per_section)

    def score(self, states: States, m: int | None = None) -> torch.Tensor:
        """(V, T, K) float32 under the test scheme of budget m (module docstring): the
        observer runs on the M·N segment centres only; within-section softmax probability
        + 1 on each section's argmax there, 0 elsewhere."""
        V, T, K, _, _ = states.shape
        M, N = self.clip_scheme(T, m)
        pos = section_positions(T, M, N).to(self.device)                                # (M, N)
        flat = pos.reshape(-1)
        self.module.eval()
        with torch.no_grad():
            s = self._batched(states, lambda o, f, lg: section_pick(
                self.module.observe(o[:, flat]).reshape(-1, M, N), pos, T))
        return s[:, :, None].expand(V, T, K).contiguous()

    def video_scores(self, states: States, keep: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
        """(V, C) eq. 4 from the kept cells (keep: (V, T, K) bool) with DSN's own classifier:
        the mean of the cached logits (DSN-f) or of the fine-tuned head's (alternate)."""
        with torch.no_grad():
            logits = states.logits if self.module.head is None else \
                self._batched(states, lambda o, f, lg: self._class_logits(f, lg))
            return aggregate(logits.float(), keep.to(logits.device), alpha)

    def select(self, states: States, m: int | None, *, mode: str = "frame", alpha: float = 0.0) -> Selection:
        """Budget m clips = m sections × N candidates (``clip_scheme``), the observer's argmax
        of each (m=None: ``test_sections``); region mode keeps the winners' every crop."""
        scores = self.score(states, m)
        M, _ = self.clip_scheme(states.shape[1], m)
        keep = top_m_mask(scores, M, mode)
        video_scores = self.video_scores(states, keep, alpha)
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, video_scores, per.long(), mode)

    @property
    def own_classifier(self) -> bool:
        """True for ``alternate`` (it fine-tunes its own head), False for DSN-f (the head's logits)."""
        return self.module.head is not None

    # -- training -------------------------------------------------------------------
    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        """SGD with momentum (§V-B); λ of eq. 5 decays the head only."""
        groups = [{"params": self.module.observer.parameters(), "weight_decay": 0.0}]
        if self.module.head is not None:
            groups.append({"params": self.module.head.parameters(), "weight_decay": self.config.weight_decay})
        return torch.optim.SGD(groups, lr=self.config.lr, momentum=self.config.momentum)

    def _step(self, obs, feats, logits, labels, opt, gen) -> dict:
        """One Algorithm 1 iteration on a mini-batch of B videos × E episodes.

        obs (B, T, K, D'), feats (B, T, K, D), logits (B, T, K, C), labels (B,) int64.
        """
        cfg, (B, T) = self.config, obs.shape[:2]
        M, N, E = cfg.sections, cfg.clips_per_section, cfg.episodes
        jitter = torch.rand(B, E, M * N, generator=gen, dtype=torch.float64)
        pos = section_positions(T, M, N, jitter).to(obs.device)                     # (B, E, M, N)
        cand = self.module.observe(obs).gather(1, pos.reshape(B, -1)).reshape(B, E, M, N)
        act, greedy = gumbel_argmax(cand, gen), cand.detach().argmax(-1)            # (B, E, M)
        chosen = pos.gather(-1, act[..., None]).squeeze(-1)
        best = pos.gather(-1, greedy[..., None]).squeeze(-1)
        head_loss = torch.zeros((), device=obs.device)
        if self.module.head is not None:
            head_loss = self._head_step(feats, chosen, labels, opt)
        with torch.no_grad():   # eq. 6 for every position, from the (just updated) classifier
            table = dsn_reward(self._class_logits(feats, logits).mean(2), labels, cfg.gamma)
        r_a = table.gather(1, chosen.reshape(B, -1)).reshape(B, E, M)
        r_b = table.gather(1, best.reshape(B, -1)).reshape(B, E, M)
        # Eq. 11: (R(A^m) − R(B^m)) ∇ log p(a^m), every section its own bandit.
        loss = reinforce_loss(categorical_log_prob(cand, act).reshape(1, -1), r_a.reshape(1, -1), r_b.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach()) + float(head_loss.detach()), "head_loss": float(head_loss.detach()),
                "reward": float(r_a.mean()), "reward_greedy": float(r_b.mean()),
                "entropy": float(categorical_entropy(cand.detach()).mean()),
                "agreement": float((act == greedy).float().mean())}

    def _head_step(self, feats, chosen, labels, opt) -> torch.Tensor:
        """Eq. 5 (Algorithm 1 line 8), the sampler fixed: one step of the head on the
        cross-entropy of the mean over the chosen positions (eq. 4) of its logits.
        feats (B, T, K, D), chosen (B, E, M) int64 positions, labels (B,) -> the loss, detached."""
        B, E = chosen.shape[:2]
        cl = self.module.head(feats.float()).mean(2)                                  # (B, T, C)
        C = cl.shape[-1]
        H = cl.gather(1, chosen.reshape(B, -1, 1).expand(-1, -1, C)).reshape(B, E, -1, C).mean(2)
        loss = nn.functional.cross_entropy(H.reshape(B * E, C), labels.repeat_interleave(E))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    # -- the training template's hooks (agents/training.py) ------------------------------
    def lr_at(self, epoch: int) -> float:
        cfg = self.config
        return multistep_lr(cfg.lr, epoch, cfg.milestones, cfg.lr_decay)

    def prepare(self, ctx) -> None:
        if ctx.train.multilabel:
            raise InputError("dsn's reward (eq. 6) needs single-label states")
        ctx.observed = self._observed(ctx.train)

    def start_fresh(self, ctx) -> None:
        """The alternate scheme's head starts as the least-squares fit of the cached logits."""
        if self.module.head is not None and self.config.head_init == "lstsq":
            w, b = fit_linear_head(ctx.train.features, ctx.train.logits, self.config.batch_size)
            with torch.no_grad():
                self.module.head.weight.copy_(w)
                self.module.head.bias.copy_(b)

    def train_batch(self, V: int) -> int:
        """Videos per step on V training videos: ``batch_size``, or fewer so that an epoch
        makes at least ``min_steps_per_epoch`` updates (DSNConfig)."""
        cfg = self.config
        if cfg.min_steps_per_epoch == 0:
            return cfg.batch_size
        return max(1, min(cfg.batch_size, V // cfg.min_steps_per_epoch))

    def train_epoch(self, ctx, epoch: int) -> dict:
        """Algorithm 1 over mini-batches of videos. Row: loss, reward = mean R(A),
        reward_greedy = mean R(B), entropy of P^m, agreement of sample and argmax,
        fraction_kept = M/T."""
        cfg, train, dev = self.config, ctx.train, ctx.device
        V, T = train.shape[:2]
        B = self.train_batch(V)
        if self.module.head is not None:    # the pre-trained head keeps the paper's step per video
            head = ctx.optimizer.param_groups[1]
            head["lr_scale"] = B / cfg.batch_size
            head["lr"] = ctx.optimizer.param_groups[0]["lr"] * head["lr_scale"]
        rows = [self._step(ctx.observed[idx].to(dev).float(), train.features[idx].to(dev),
                           train.logits[idx].to(dev), train.labels[idx].to(dev).long(), ctx.optimizer, ctx.generator)
                for idx in torch.randperm(V, generator=ctx.generator).split(B)]
        return dict(mean_rows(rows), fraction_kept=cfg.sections / T)
