"""The ``glimpse`` agent: REINFORCE visual attention over a K×K×D feature cube (paper 001).

At every position t a policy picks one of the h·w cells of the stored feature map
(``States.feature_maps``, (V, T, K, h, w, d)): it "generates a weighted distribution l_{t,i}
to match the relevant feature slice X_{t,i}" (Fig. 1), here softmax_i of
v·tanh(W_x X_{t,i} + W_h h_{t−1}), the hard attention of the paper's [7] (Xu et al.). The
chosen cell's slice X_{t,l_t} alone — "the sum of feature slices at the attended location
instead of taking expectation over all the slices" (§II.C, eq. 3) — is the LSTM's input. A
tanh hidden layer and a linear layer give class scores (§II.C).

Training (§II.C): the location is sampled from the policy; it carries
no gradient, so the policy learns by REINFORCE (eqs. 4–6) from the reward of eq. 7 given at
the last step, r = η N₊ R₊ + (1 − η) N₋ R₋ (true / false positive predictions), with the
mean reward of the video's other episodes as baseline. The classifier and LSTM learn by
back-propagation of the cross-entropy at every step plus the attention regularisation,
and weight decay γ = 1e-5. 001 keeps the "doubly stochastic penalty" of the soft-attention
model it extends (its [11]) but states its purpose as the opposite of that penalty's: it
"forces the model to focus on one region in time", where [11]'s form asks every cell to be
looked at once over the sequence; the equation itself is lost in our copy of 001.
[11]'s form λ Σ_i (1 − Σ_t π_{t,i})² rewards spreading the T glimpses over the cells (with
the evidence in one cell of 16, looking there at all T = 25 steps costs (1 − 25)² + 15 =
591), so we take 001's stated aim: ``penalty="focus"`` is λ·mean_t (1 − Σ_i π_{t,i}²), zero
exactly when the policy of every step is one cell (Σ_i π² = 1) — the impurity of the
location policy. Both terms of 001's loss sum over t, so the cross-entropy and the penalty
are both averaged over t here (their ratio is the paper's). [11]'s form stays available
(``penalty="doubly_stochastic"``, summed over cells as [11] writes it). At test the
location is the policy's argmax (no Monte-Carlo averaging). 001 attends to cells and selects no
frames; framesel's temporal :meth:`score` is ours: the gain in log-probability of the class
the greedy rollout over all positions ends on, step by step (:func:`classifier_gain`) — how
much position t moved the agent's own classifier towards its answer. Our first score, the
policy's max cell probability max_i π_{t,i} (:meth:`policy_confidence`), finds keys at
chance (GlimpseConfig: 0.138 of its top 4, chance 0.12).

The configuration (every default and departure, measured), the network, eq. 7 and the
penalty are in agents/glimpse_model.py.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from agents.base import Agent, Selection, States, register, top_m_mask
from agents.glimpse_model import (GlimpseConfig, _GlimpseNet, attention_focus, attention_penalty,
                                  classifier_gain, glimpse_reward, step_cross_entropy)
from agents.rl import categorical_entropy, categorical_log_prob, reinforce_loss, step_and_tally
from data.errors import InputError

log = logging.getLogger(__name__)


def _cubes(states: States) -> torch.Tensor:
    """(V, T, K, h, w, d) -> (V·K, T, h·w, d) float32: one sequence per (video, crop)."""
    if states.feature_maps is None:
        raise InputError("the glimpse agent needs spatial feature maps (<stream>/feature_maps in "
                         "the store); this store has none: re-extract with feature maps kept")
    V, T, K, h, w, d = states.feature_maps.shape
    return states.feature_maps.float().permute(0, 2, 1, 3, 4, 5).reshape(V * K, T, h * w, d)


@register("glimpse")
class GlimpseAgent(Agent):
    """Paper 001's hard spatial attention over a ``map_h × map_w × map_dim`` cube per position."""

    Config = GlimpseConfig
    needs_feature_maps = True     # the store must hold <stream>/feature_maps (extract --feature-maps)
    soft = False                  # the LSTM reads the glimpsed slice (True: the soft partner's expectation)
    partner = "glimpse_soft"      # 001 Tables I–II's "baseline attention model [11]" on this network
    departures = (
        "the attention regularisation is λ·mean_t (1 − Σ_i π_{t,i}²) (penalty=\"focus\"): 001 §II.C keeps "
        "[11]'s \"doubly stochastic penalty\" but states the aim \"to focus on one region in time\", which "
        "[11]'s form works against, and the equation is lost in our copy; the cross-entropy and the "
        "penalty are averaged over t where 001 sums both (their ratio kept)",
        "one glimpse (one cell) per position: 001 Fig. 1 takes \"m times jumping glimpse\" per time-step, "
        "a number it does not fix; at test the location is the policy's argmax",
        "framesel selects frames by each step's gain of the agent's own classifier; 001 attends to cells "
        "and selects no frames (§II.C)",
        "001 §III.B names Adam, weight decay, dropout and 10 epochs but no learning rate, batch size, "
        "episodes (K of eq. 6) or η (eq. 7): 1e-3, 32, 4 and 0.5 are ours, as is the REINFORCE "
        "baseline (the mean reward of the video's other episodes)",
        "the cube is the store's feature maps of a frozen backbone (001 §III.B: GoogLeNet's 7×7×1024, "
        "30 frames at a fixed fps)",
    )

    @property
    def map_shape(self) -> tuple[int, int, int]:
        cfg = self.config
        return cfg.map_h, cfg.map_w, cfg.map_dim or self.feature_dim

    @classmethod
    def for_states(cls, config: GlimpseConfig, states: States, seed: int = 0) -> "GlimpseAgent":
        """An agent whose config's cube shape matches ``states``' feature maps."""
        _cubes(states)
        _, _, _, h, w, d = states.feature_maps.shape
        return cls(dataclasses.replace(config, map_h=h, map_w=w, map_dim=d),
                   num_classes=states.logits.shape[-1], feature_dim=states.features.shape[-1], seed=seed)

    def build(self) -> nn.Module:
        h, w, d = self.map_shape
        return _GlimpseNet(self.config, d, h * w, self.num_classes)

    def _check(self, states: States) -> torch.Tensor:
        cubes = _cubes(states)
        shape = tuple(states.feature_maps.shape[3:])
        if shape != self.map_shape:
            raise InputError(f"glimpse was built for {self.map_shape} feature maps, got {shape}")
        return cubes

    def _device(self) -> torch.device:
        return self.module.att_v.weight.device

    # -- test time ----------------------------------------------------------------------
    def _run(self, states: States, keep: torch.Tensor | None, chunk: int = 512):
        """Greedy (argmax-location) rollouts of every (video, crop) sequence. keep: (V, T, K)
        bool or None -> max cell probability (V, T, K), classifier gain (V, T, K) (see
        :meth:`score`), final class scores (V, C) (crop mean)."""
        cubes = self._check(states)
        V, T, K = states.feature_maps.shape[:3]
        keep_s = None if keep is None else keep.permute(0, 2, 1).reshape(V * K, T)
        dev, conf, gain, final = self._device(), [], [], []
        self.module.eval()
        with torch.no_grad():
            for i in range(0, V * K, chunk):
                ks = None if keep_s is None else keep_s[i:i + chunk].to(dev)
                pol, _, outs = self.module.rollout(cubes[i:i + chunk].to(dev), sample=False, keep=ks, soft=self.soft)
                conf.append(torch.softmax(pol, -1).amax(-1).cpu())
                gain.append(classifier_gain(outs, self.module.prior(), states.multilabel).cpu())
                final.append(outs[:, -1].cpu())
        per_step = lambda xs: torch.cat(xs).reshape(V, K, T).permute(0, 2, 1).contiguous()  # noqa: E731
        return per_step(conf), per_step(gain), torch.cat(final).reshape(V, K, -1).mean(1)

    def score(self, states: States) -> torch.Tensor:
        """(V, T, K) float32: how much position t moves the agent's own classifier towards
        its final answer, in the greedy rollout over all positions — the gain in
        log-probability of the final class at step t (:func:`classifier_gain`). 001 selects
        no frames; the policy's confidence (:meth:`policy_confidence`) was our first score and
        finds keys at chance (module docstring)."""
        return self._run(states, None)[1]

    def policy_confidence(self, states: States) -> torch.Tensor:
        """(V, T, K) float32 in (0, 1]: max_i π_{t,i}, the policy's probability of the cell
        it looks at under the greedy rollout over all positions (001's focus)."""
        return self._run(states, None)[0]

    def locations(self, states: States) -> torch.Tensor:
        """(V, T, K) int64 cell index (row-major in h×w) looked at by the greedy rollout."""
        cubes = self._check(states)
        V, T, K = states.feature_maps.shape[:3]
        self.module.eval()
        with torch.no_grad():
            _, locs, _ = self.module.rollout(cubes.to(self._device()), sample=False, soft=self.soft)
        return locs.cpu().reshape(V, K, T).permute(0, 2, 1).contiguous()

    def select(self, states: States, m: int | None, *, mode: str = "frame", alpha: float = 0.0) -> Selection:
        """Keep the top m positions by :meth:`score`, then predict with the agent's own
        classifier from a greedy rollout that steps only on the kept positions (dropped
        ones are skipped, so α does not apply). ``video_scores``: crop mean of the logits."""
        scores = self.score(states)
        keep = top_m_mask(scores, m, mode)
        video_scores = self.video_scores(states, keep, alpha)
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, video_scores, per.long(), mode)

    reads_logits = False     # features only (the head's logits are never read)
    own_classifier = True    # predicts with its own tanh + linear classifier (evaluate pairs it with itself)

    def video_scores(self, states: States, keep: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
        """(V, C) float32: the agent's own classifier after a greedy rollout over the kept
        positions only, as :meth:`select` predicts; α does not apply."""
        return self._run(states, keep)[2]

    # -- training -----------------------------------------------------------------------
    def _batch_loss(self, cubes, y, multilabel: bool, g: torch.Generator) -> dict[str, torch.Tensor]:
        """cubes: (E·B, T, n, d) — E episodes of B sequences, episode-major; y: (E·B,) or
        (E·B, C). Returns the total loss and its parts (per-sequence means)."""
        cfg, E = self.config, self.config.episodes
        pol, locs, outs = self.module.rollout(cubes, sample=True, g=g)
        ce = step_cross_entropy(outs, y, multilabel)
        reward = glimpse_reward(outs[:, -1].detach(), y, multilabel, cfg).view(E, -1)     # (E, B)
        # Baseline: mean reward of the same sequence's other episodes (0 with one episode).
        base = (reward.sum(0, keepdim=True) - reward) / (E - 1) if E > 1 else torch.zeros_like(reward)
        logp = categorical_log_prob(pol, locs).sum(1).view(E, -1)                         # (E, B)
        rl = reinforce_loss(logp, reward, base)
        probs = torch.softmax(pol, -1)
        pen = attention_penalty(probs, cfg.penalty).mean()
        loss = ce + cfg.attention_penalty * pen + cfg.reinforce_weight * rl
        hit = ((outs[:, -1] > 0) == (y > 0.5)).all(1) if multilabel else outs[:, -1].argmax(1) == y
        return {"loss": loss, "ce": ce.detach(), "reinforce": rl.detach(), "penalty": pen.detach(),
                "reward": reward.mean(), "entropy": categorical_entropy(pol.detach()).mean(),
                "focus": attention_focus(probs.detach()).mean(),
                "train_top1": hit.float().mean()}

    def _epoch(self, cubes: torch.Tensor, labels: torch.Tensor, K: int, multilabel: bool, opt, g, device) -> dict:
        V = labels.shape[0]
        E, bs = getattr(self.config, "episodes", 1), self.config.batch_size   # the soft partner: one
        sums: dict[str, float] = {}
        perm, n, updates = torch.randperm(V, generator=g), 0, 0
        self.module.train()
        for i in range(0, V, bs):
            seq = (perm[i:i + bs, None] * K + torch.arange(K)).reshape(-1)      # (B,) sequences
            x = cubes[seq].to(device).repeat(E, 1, 1, 1)                        # (E·B, T, n, d)
            y = labels[seq // K].to(device)
            y = y.repeat(E, 1) if multilabel else y.repeat(E)
            terms = self._batch_loss(x, y, multilabel, g)
            step_and_tally(opt, terms, sums, len(seq))
            n, updates = n + len(seq), updates + 1
        return {**{key: val / n for key, val in sums.items()}, "updates": updates}

    # -- the training template's hooks (agents/training.py) ------------------------------
    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        """Adam with weight decay γ (§II.C)."""
        return torch.optim.Adam(self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def prepare(self, ctx) -> None:
        ctx.cubes = self._check(ctx.train)
        if ctx.val is not None:
            self._check(ctx.val)
        ctx.labels = ctx.train.labels.float() if ctx.train.multilabel else ctx.train.labels.long()

    def train_epoch(self, ctx, epoch: int) -> dict:
        """REINFORCE for the policy, back-propagation for LSTM and classifier (§II.C), over
        mini-batches of videos × episodes × crops. ``updates`` counts the epoch's Adam
        steps; ``fraction_kept`` is the share of the cube's cells read per position
        (1/(h·w)): every position is glimpsed once."""
        K = ctx.train.feature_maps.shape[2]
        row = self._epoch(ctx.cubes, ctx.labels, K, ctx.train.multilabel, ctx.optimizer, ctx.generator, ctx.device)
        return dict(row, fraction_kept=1.0 / (self.map_shape[0] * self.map_shape[1]))
