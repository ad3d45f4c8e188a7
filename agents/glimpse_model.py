"""Paper 001's glimpse network, its configuration and its loss terms, used by agents/glimpse.py.

Holds :class:`GlimpseConfig` (every default and departure, with what was measured), eq. 7's
reward, the attention penalty in its two forms, the LSTM with its location policy
(:class:`_GlimpseNet`) and :func:`classifier_gain`, the temporal score. The agent
(training loop, scores, selection) is in agents/glimpse.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from agents.options import check_ranges
from data.errors import InputError

PENALTIES = ("focus", "doubly_stochastic")


@dataclass(frozen=True)
class GlimpseConfig:
    """Defaults are paper 001's settings (§III.B) where it gives them.

    001 §III.B gives the network ("3-layer LSTM models, where the dimensionality of the LSTM
    hidden state, cell state, and the hidden layer were set to 512"), "weight decay to
    10−5, use dropout of 0.5, and take Adam Optimization algorithm for 10 epoches", on
    HMDB-51's 3,570 training videos (or ActivityNet's ~13,900). It names no learning rate,
    batch size, number of episodes (K of eq. 6) or η: those are ours, each below.

    - ``lr`` 1e-3: 001 runs on Keras/Theano (§III.B) and names Adam without a rate; 1e-3
      is Adam's (and Keras's) default.
    - ``batch_size`` 32 videos per Adam step (Keras's ``fit`` default; 001 gives none).
      On 240 videos that is 80 updates in 10 epochs (001's HMDB: ~1,100), but more
      updates from smaller batches did not learn more, measured at full defaults on
      planted 4×4 maps (benchmarks/dsn_glimpse_planted.py's data: 240 train / 120 test
      videos, D = 64, 3 key positions of 25; data and agent seed s), top-1 at m = 4:
      seed 0: batch 32 0.217, batch 8 (300 updates) 0.208 (uniform 0.042, max_response
      0.075); seed 1: batch 32 0.158, batch 8 0.058 (uniform 0.033, max_response 0.058).
      At 8 the cross-entropy stays at ln 8 for the first ~150 updates (5 epochs) and
      training top-1 rises only in epochs 9–10, as at 32: what limits learning here is
      passes over the videos, not Adam steps, and a batch of 8 × ``episodes`` rollouts
      only adds gradient noise. At hidden 128 (tests/test_agent_contract.py's data, D = 32,
      240 test videos, seed 0; uniform 0.058) batch 32 / 8 / 4 / 2 reach 0.108 / 0.142 /
      0.146 / 0.129, all below the issue's bar. CPU cost per video is the same (one epoch at full width,
      one core: 0.16 CPU-s a video at 32, 0.15 at 8). Nor do more passes: on
      benchmarks/planted.py's world (D = 64, 240/240 videos, seed 0; uniform-4 0.054,
      bar 0.204) 001's ~1,100 HMDB updates (batch 8 × 37 epochs, 1,416 s on one core) take
      the cross-entropy from ln 8 to 0.19 and training top-1 to 0.96 but test top-1 to 0.196
      over all positions and 0.146 at m = 4 (10 epochs at 32: 0.121 / 0.121): a 3-layer
      512-cell LSTM memorises 240 videos; the policy looks at the evidence cell 46 % of the
      time (1/16 by chance) and its max-probability score puts 0.125 keys in the top 4
      (chance 0.12). λ = 0.1 instead of 1 (10 epochs): cross-entropy still ln 8, 0.100.
    - ``episodes`` 4 and ``eta`` 0.5: not given (K and η of eqs. 6–7).

    What 240 videos lack is videos, not spatial search (planted world as above, seed 0,
    defaults, 240 test videos): with every cell of every map set to the evidence cell (the
    location cannot be wrong) test top-1 over all positions is 0.133, and 0.142 when the
    rollout steps on the 3 key positions only (training 0.41); one LSTM layer: 0.213 / 0.200
    (training 0.77); hidden 64, one layer: keys only 0.021, below chance (0.125): 001's
    per-step cross-entropy first teaches "not the prototypes I keep seeing" (22 of 25
    positions mislead), which rules the true class out when only keys are shown. With more
    videos of the same generator, real maps: 960 training videos, m = 4 0.204 (all 0.225,
    training 0.25); 3,570 (HMDB51's training split, the scale 001 set these defaults for;
    ``python -m benchmarks.planted --agents glimpse --train 3570``, through ``framesel
    train``, 4,367 s on one core): m = 4 **0.304** against uniform 0.037 and max_response
    0.067, issue 11's bar (0.188) met; cross-entropy 2.07 -> 1.34, training top-1 0.50.

    The temporal score (:meth:`GlimpseAgent.score`) is the classifier gain of each step, not
    the policy's confidence: on that 3,570-video checkpoint the confidence put 0.138 keys in
    its top 4 (chance 0.12) and m = 4 scored 0.304 where all 25 positions give 0.471; the
    gain, read offline from the same checkpoint, 0.417 at m = 4; retrained with it as the
    score (same seed, through ``framesel``), 0.421 (its confidence: 0.300). On tests/test_glimpse.py's
    small network (hidden 64, one layer, 512 training videos) top-1 at m = 1..5 by gain /
    by confidence: 0.699 / 0.609, 0.770 / 0.676, 0.781 / 0.727, 0.805 / 0.762, 0.805 / 0.773.
    """

    hidden: int = 512              # LSTM hidden/cell and classifier hidden size
    layers: int = 3                # 3-layer LSTM
    dropout: float = 0.5
    weight_decay: float = 1e-5     # γ
    lr: float = 1e-3               # Adam (the paper names Adam, not its lr: Adam's default)
    epochs: int = 10
    batch_size: int = 32           # videos per Adam step (not given in the paper: docstring)
    episodes: int = 4              # sampled attention sequences per video (K in eq. 6)
    eta: float = 0.5               # η of eq. 7 (not given: TP and FP weighed equally)
    reward_pos: float = 1.0        # R₊ per true positive
    reward_neg: float = -1.0       # R₋ per false positive
    # λ of the attention regularisation (001 gives no value; [11] uses 1) and its form:
    # "focus" (001: "focus on one region in time", λ·mean_t (1 − Σ_i π²)) or [11]'s
    # "doubly_stochastic" λ Σ_i (1 − Σ_t π_{t,i})², which spreads the glimpses over the cells.
    # Measured at these defaults on planted 4×4 maps (240 train videos, 3 key positions of
    # 25; benchmarks/dsn_glimpse_planted.py, seed 0): focus 0.81 and top-1 0.22 at m = 4
    # (uniform 0.04, max_response 0.08); doubly_stochastic: focus 0.08 (1/16 = uniform
    # attention), top-1 0.10.
    attention_penalty: float = 1.0
    penalty: str = "focus"
    # what a checkpoint written before a field existed was trained with (load_agent)
    BEFORE_THE_FIELD: ClassVar[dict] = {"penalty": "doubly_stochastic"}
    DERIVED: ClassVar[tuple] = ("map_h", "map_w", "map_dim")   # set from the store (for_states)
    reinforce_weight: float = 1.0  # weight of the REINFORCE surrogate in the total loss
    map_h: int = 7                 # the cube is map_h × map_w × map_dim: GoogLeNet's 7×7×1024;
    map_w: int = 7                 # GlimpseAgent.for_states sets them from the store
    map_dim: int = 0               # 0: the feature size D

    def __post_init__(self):
        check_ranges("glimpse", self, at_least_one=("hidden", "layers", "epochs", "batch_size", "episodes",
                                                    "map_h", "map_w"),
                     non_negative=("weight_decay", "attention_penalty", "reinforce_weight", "map_dim"),
                     positive=("lr",), unit=("eta",), unit_open=("dropout",))
        if self.penalty not in PENALTIES:
            raise InputError(f"glimpse penalty must be one of {PENALTIES}, not {self.penalty!r}")


def glimpse_reward(scores: torch.Tensor, labels: torch.Tensor, multilabel: bool, cfg: GlimpseConfig) -> torch.Tensor:
    """Eq. 7, r = η N₊ R₊ + (1 − η) N₋ R₋. Single-label: the argmax class is the one
    prediction (N₊ = 1 if right, else N₋ = 1); multi-label: every class with score > 0
    (sigmoid > 0.5) is a prediction, N₊ / N₋ count those in / not in the label set.
    scores: (B, C) float logits; labels: (B,) int64 or (B, C) multi-hot -> (B,) float32."""
    if multilabel:
        pred = scores > 0
        pos = labels > 0.5
        n_pos = (pred & pos).sum(1).float()
        n_neg = (pred & ~pos).sum(1).float()
    else:
        n_pos = (scores.argmax(1) == labels).float()
        n_neg = 1.0 - n_pos
    return cfg.eta * n_pos * cfg.reward_pos + (1 - cfg.eta) * n_neg * cfg.reward_neg


def attention_penalty(probs: torch.Tensor, form: str = "focus") -> torch.Tensor:
    """The attention regularisation per sequence (module docstring).

    ``focus`` (001): mean_t (1 − Σ_i π_{t,i}²), in [0, 1 − 1/n], 0 iff every step looks at
    one cell; ``doubly_stochastic`` ([11]): Σ_i (1 − Σ_t π_{t,i})², 0 iff every cell gets
    one glimpse's worth of attention over the T steps.
    probs: (B, T, n) attention probabilities -> (B,).
    """
    if form == "focus":
        return (1.0 - probs.pow(2).sum(-1)).mean(1)
    if form == "doubly_stochastic":
        return (1.0 - probs.sum(1)).pow(2).sum(1)
    raise InputError(f"glimpse penalty must be one of {PENALTIES}, not {form!r}")


def attention_focus(probs: torch.Tensor) -> torch.Tensor:
    """Mean over steps of max_i π_{t,i}: how sharply the policy looks at one cell.
    probs: (B, T, n) -> (B,) in [1/n, 1]."""
    return probs.amax(-1).mean(1)


class _GlimpseNet(nn.Module):
    def __init__(self, cfg: GlimpseConfig, d: int, cells: int, num_classes: int):
        super().__init__()
        self.cells = cells
        self.lstm = nn.LSTM(d, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        # Location policy f_att(X_{t,i}, h_{t−1}) = v·tanh(W_x X_{t,i} + W_h h_{t−1}) (the
        # hard attention of the paper's [7], Xu et al.), a softmax over the h·w slices.
        self.att_x = nn.Linear(d, cfg.hidden)
        self.att_h = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.att_v = nn.Linear(cfg.hidden, 1)
        self.head = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, num_classes))

    def rollout(self, maps: torch.Tensor, *, sample: bool, g: torch.Generator | None = None,
                keep: torch.Tensor | None = None, soft: bool = False):
        """Run the attention over B sequences of cubes.

        maps: (B, T, n, d) float32; keep: (B, T) bool or None — at positions not kept the
        LSTM does not step (its state is held), so the prediction comes from kept positions
        only. ``soft``: the LSTM reads the expectation Σ_i π_{t,i} X_{t,i} over every slice
        (001's "baseline attention" [11], differentiable; ``sample`` is then ignored and the
        chosen cell is the argmax) instead of the chosen slice. -> policy logits (B, T, n),
        chosen cells (B, T) int64, class scores (B, T, C) after each step (held at dropped
        positions).
        """
        B, T, n, d = maps.shape
        L = self.lstm.num_layers
        h = maps.new_zeros(L, B, self.lstm.hidden_size)
        c = torch.zeros_like(h)
        ax = self.att_x(maps)                                                # (B, T, n, A)
        pol, locs, outs = [], [], []
        rows = torch.arange(B, device=maps.device)
        for t in range(T):
            logits = self.att_v(torch.tanh(ax[:, t] + self.att_h(h[-1])[:, None])).squeeze(-1)
            if sample and not soft:
                u = torch.multinomial(torch.softmax(logits.detach(), -1).cpu(), 1, generator=g)
                loc = u.squeeze(1).to(maps.device)
            else:
                loc = logits.argmax(-1)
            # Hard: the chosen slice only, no gradient reaches the location choice; soft: the
            # expectation over the slices, differentiable in π.
            x = torch.einsum("bn,bnd->bd", torch.softmax(logits, -1), maps[:, t]) if soft else maps[rows, t, loc]
            _, (h2, c2) = self.lstm(x[:, None], (h, c))
            if keep is not None:
                k = keep[:, t].view(1, B, 1)
                h2, c2 = torch.where(k, h2, h), torch.where(k, c2, c)
            h, c = h2, c2
            pol.append(logits)
            locs.append(loc)
            outs.append(self.head(h[-1]))
        return torch.stack(pol, 1), torch.stack(locs, 1), torch.stack(outs, 1)

    def prior(self) -> torch.Tensor:
        """Class scores (C,) before any step (the LSTM's zero state)."""
        return self.head(self.att_v.weight.new_zeros(self.lstm.hidden_size))


def step_cross_entropy(outs: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """The cross-entropy of every step's class scores, averaged over steps and sequences
    (001 §II.C sums it over t; the mean keeps its ratio to a penalty also averaged over t).
    outs: (B, T, C) logits; y: (B,) int64 or (B, C) multi-hot (binary, summed over classes)."""
    T = outs.shape[1]
    if multilabel:
        return nn.functional.binary_cross_entropy_with_logits(
            outs, y[:, None].expand(-1, T, -1), reduction="none").sum(-1).mean()
    return nn.functional.cross_entropy(outs.reshape(-1, outs.shape[-1]), y.repeat_interleave(T))


def classifier_gain(outs: torch.Tensor, prior: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-step gain of the final answer: log p_t(ŷ) − log p_{t−1}(ŷ), with p_t the
    classifier after step t (p_{−1} from ``prior``) and ŷ the class the rollout ends on
    (multi-label: the sum over its top class and every class it ends positive on).
    A dropped position (state held) gains 0. outs: (B, T, C), prior: (C,) -> (B, T)."""
    B, _, C = outs.shape
    seq = torch.cat([prior.expand(B, 1, C), outs], 1)
    if multilabel:
        logp = nn.functional.logsigmoid(seq)
        final = seq[:, -1]
        chosen = (final > 0) | (torch.arange(C, device=outs.device) == final.argmax(1, keepdim=True))
        per = (logp * chosen[:, None].float()).sum(-1)
    else:
        logp = torch.log_softmax(seq, -1)
        per = logp.gather(2, seq[:, -1].argmax(1).view(B, 1, 1).expand(B, seq.shape[1], 1)).squeeze(-1)
    return per[:, 1:] - per[:, :-1]
