"""``tattn``: soft temporal attention (paper 002, Liu, Tian, Wang, ICIP) and its baseline.

A stacked LSTM iterates ``iterations`` times over the *whole* feature sequence of a video.
At iteration t the relevance of position i is e_i^t = tanh(w_aᵀh_{t−1} + u_aᵀv_i + b_a)
(eq. 5, h_{t−1} the top layer's previous state), the weights α^t = softmax_i(e^t) (eq. 6),
the LSTM input the weighted sum x_t = Σ_i α_i^t v_i (eq. 4), and every iteration predicts
ŷ_t = softmax(W_y h_t + b_y) (eq. 7). Training minimises Σ_t CE(y, ŷ_t) + γ‖θ‖² (eq. 8) by
back-propagation with Adadelta (§3.2). The video prediction averages ŷ_t over the last
``test_last`` iterations (§3.2: the last 10 of 30).

``tattn_noatt`` is the paper's no-attention baseline (§3.3): x_t = (1/T) Σ_i v_i at every
iteration, the same LSTM and classifier.

Crops: each of the K crops is its own sequence (batch V·K); the video prediction averages
the crops' class probabilities (TSN's crop averaging). Selection on top of the soft attention:

- ``score`` = α averaged over the iterations, per (position, crop);
- ``select(m=None)``: the agent's own prediction, attention over every position;
- ``select(m)``: the model runs again with its attention restricted to the kept cells (e_i
  of dropped cells set to −∞, so α renormalises over the m kept positions; the baseline
  averages the kept features instead): the prediction a deployment that only computes the
  features of the kept positions would make. Crops left with no kept cell (region mode) do
  not vote. ``video_scores`` = log of the averaged probabilities (logit space: softmax of it
  gives the probabilities back). ``alpha`` (000's weight of dropped frames) does not apply
  to a soft-attention model and is ignored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from agents.base import Agent, Selection, States, register, top_m_mask
from agents.options import check_ranges
from agents.papers import NoSelection
from agents.training import mean_rows
from data.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TAttnConfig:
    """Defaults from §3.2: two stacked LSTM layers of 512 cells, 30 iterations (the paper's
    30-step samples), the last 10 averaged at test, Adadelta. Not stated in the paper, our
    choices: Adadelta's ρ 0.95 and lr 1.0 (Zeiler's, [22]) and ε, weight_decay (γ of eq. 8),
    dropout 0.5 on the non-recurrent connections (the cited LSTM implementation, Zaremba et
    al. [17]), epochs, batch_size (videos per step). 002 names only "Adadelta [22]"; ε is
    1e-4, not Zeiler's 1e-6 (issue 11, below).

    ε sets Adadelta's step size (its first steps are ~√ε per weight, later ones grow from
    there). At 1e-6 the attention did not learn the planted store's 3 key positions of 25
    (240 train videos, D = 32, hidden 64, agent seeds 0/1/2; α mass on the key positions,
    uniform 0.12; top-1 at m = 4; tattn_noatt at m = 4; training s at load ~3):

    =====  ==================  ==================  ==================  ============
    ε      α mass on keys      tattn m = 4         tattn_noatt m = 4   tattn s
    1e-6   0.198/0.168/0.204   0.225/0.179/0.233   0.225/0.179/0.171   20/17/30
    1e-4   0.315/0.158/0.399   0.387/0.229/0.833   0.221/0.196/0.213   17/28/29
    =====  ==================  ==================  ==================  ============

    (all positions, tattn: 0.392/0.371/0.438 -> 0.412/0.392/0.496; tattn_noatt 0.346/0.333/
    0.346 -> 0.308/0.342/0.329). Seed 1 still fails at this width: learning the attention is
    a race with the LSTM memorising the training videos through the uniform-ish mixture.
    Measured on seed 0 at ε 1e-6 and not the cause (α mass, m = 4): the update count (batch
    16 or 8: 0.185/0.192, 0.197/0.217), dropout (0: 0.209/0.175; 0.8: 0.185/0.200),
    weight_decay (1e-3, 1e-2: ~0.20), the attention's init (w_a = 0: 0.198), gradient
    clipping at 5 ([17]): 0.211/0.146, no gradient through h_{t-1} in eq. 5: 0.194.

    ``base_width`` (ours, not 002's): Adadelta moves every weight by about the same step
    (~√ε at first), so a unit with 512 inputs has its pre-activation moved ~8× as far per
    update as one with 64. At 002's 512 cells that diverged: on the planted bench's store
    (D = 64, 240 train videos, seed 0) the summed loss rose from 66.7 to 88.9 in 3 epochs,
    then sat at 62.4 = 30·ln 8 (chance) for the rest, u_a frozen. So each weight matrix's
    lr is scaled by min(1, base_width / fan_in) (the μP rule for adaptive optimisers,
    Yang et al. 2021, Tensor Programs V), biases unscaled; ``base_width=0`` is plain
    Adadelta. Measured at the full defaults on that store (α mass on the keys, uniform
    0.12; top-1 at m = 4 on the 240 test videos; bar 0.204 = uniform-4 0.054 + 0.15;
    max_response-4 0.083; one core, idle machine):

    ==============  ===================  ===================  =====================
    base_width      α mass, seeds 0/1/2  m = 4, seeds 0/1/2   all positions, seed 0
    0 (plain)       0.14 (seed 0)        0.175 / – / –        0.229
    64              0.112/0.179/0.396    0.237/0.225/0.858    0.350
    ==============  ===================  ===================  =====================

    (plain, seed 0: the 0.175 is benchmarks/planted.py's CLI run, 0.217 a rerun with its own
    batch order; ε 1e-6 plain: m = 4 0.204, training top-1 0.59; ε 1e-6 at batch 8: 0.146,
    training top-1 0.91 — memorised; attention lr ×10 at ε 1e-6: 0.225.) With base_width 64
    the loss falls steadily (62.4 → 29.6 by epoch 30, training top-1 0.62). tattn_noatt
    at base_width 64, seed 0: m = 4 0.271, all positions 0.738: on seeds 0 and 1 the
    attention beats the head's baselines but not its own no-attention baseline at m = 4
    (the report pairs them). At hidden ≤ 64 on D ≤ 64 every fan-in is ≤ 64: the rule is a
    no-op there (the table above)."""

    hidden: int = 512
    layers: int = 2
    iterations: int = 30
    test_last: int = 10
    dropout: float = 0.5
    lr: float = 1.0
    rho: float = 0.95
    eps: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 30
    batch_size: int = 64
    base_width: int = 64       # weight lr × min(1, base_width / fan_in); 0: plain Adadelta
    # what a checkpoint written before a field existed was trained with (load_agent)
    BEFORE_THE_FIELD: ClassVar[dict] = {"base_width": 0}

    def __post_init__(self):
        check_ranges("tattn", self, at_least_one=("hidden", "layers", "iterations", "test_last", "epochs",
                                                  "batch_size"),
                     non_negative=("weight_decay", "base_width"), positive=("lr", "eps"), unit_open=("rho",))
        if self.test_last > self.iterations:
            raise InputError(f"tattn test_last={self.test_last} exceeds iterations={self.iterations}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"tattn dropout must be in [0, 1), not {self.dropout}")


def attention_weights(h_prev: torch.Tensor, u: torch.Tensor, w_a: nn.Linear,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eqs. 5–6: α_i = softmax_i(tanh(w_aᵀh + u_i)), u_i = u_aᵀv_i + b_a precomputed.

    h_prev (B, H), u (B, T), mask (B, T) bool (False = not observed) -> α (B, T) float32.
    """
    e = torch.tanh(w_a(h_prev) + u)
    if mask is not None:
        e = e.masked_fill(~mask, float("-inf"))
    return torch.softmax(e, dim=-1)


def width_scaled_groups(module: nn.Module, lr: float, base_width: int) -> list[dict]:
    """Optimizer parameter groups: every weight matrix (dim 2, fan_in = shape[1]) at lr ×
    min(1, base_width / fan_in), everything else at lr (TAttnConfig.base_width); the
    factor is each group's ``lr_scale``, which the training template's ``set_lr`` keeps."""
    groups = []
    for p in module.parameters():
        scale = min(1.0, base_width / p.shape[1]) if base_width and p.dim() == 2 else 1.0
        groups.append({"params": [p], "lr": lr * scale, "lr_scale": scale})
    return groups


def tattn_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 8 without the decay term (that is the optimiser's weight decay): the negative
    log-likelihood summed over the iterations, averaged over the batch.

    logits (B, I, C) float, labels (B,) int64 -> () float.
    """
    B, I, C = logits.shape
    nll = nn.functional.cross_entropy(logits.reshape(B * I, C), labels.repeat_interleave(I), reduction="none")
    return nll.reshape(B, I).sum(1).mean()


class TAttnModule(nn.Module):
    """Stacked LSTM cells iterating over (attention-)weighted sums of the features."""

    def __init__(self, feature_dim: int, num_classes: int, cfg: TAttnConfig, attention: bool):
        super().__init__()
        H, self.attention, self.iterations = cfg.hidden, attention, cfg.iterations
        self.cells = nn.ModuleList([nn.LSTMCell(feature_dim if i == 0 else H, H) for i in range(cfg.layers)])
        self.w_a = nn.Linear(H, 1, bias=False)
        self.u_a = nn.Linear(feature_dim, 1)          # its bias is b_a
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(H, num_classes)   # W_y, b_y

    def forward(self, v: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """v (B, T, D) float32, mask (B, T) bool or None (every row needs one True) ->
        logits (B, I, C) of every iteration, α (B, I, T) float32 the weights used."""
        B, T, _ = v.shape
        state = [(v.new_zeros(B, c.hidden_size), v.new_zeros(B, c.hidden_size)) for c in self.cells]
        if self.attention:
            u = self.u_a(v).squeeze(-1)                                          # (B, T)
        else:   # the baseline: the (masked) mean of the features, the same every iteration
            w = torch.ones(B, T, device=v.device) if mask is None else mask.float()
            mean_w = w / w.sum(1, keepdim=True)
        logits, alphas = [], []
        for _ in range(self.iterations):
            a = attention_weights(state[-1][0], u, self.w_a, mask) if self.attention else mean_w
            inp = torch.einsum("bt,btd->bd", a, v)                               # eq. 4
            for i, cell in enumerate(self.cells):
                state[i] = cell(self.drop(inp), state[i])                        # eq. 3
                inp = state[i][0]
            logits.append(self.classifier(self.drop(inp)))                       # eq. 7
            alphas.append(a)
        return torch.stack(logits, 1), torch.stack(alphas, 1)


@register("tattn")
class TAttn(Agent):
    """Temporal attention agent; see the module docstring."""

    Config = TAttnConfig
    attention = True
    partner = "tattn_noatt"      # 002 §3.3, Table 1: the same LSTM fed the plain mean of the features
    departures = (
        "Adadelta's ε is 1e-4, not Zeiler's 1e-6 (002 §3.2 names only \"Adadelta [22]\"): at 1e-6 the "
        "attention did not learn planted key positions (TAttnConfig); ρ 0.95, lr 1.0, weight decay (γ of "
        "eq. 8), dropout 0.5, epochs and batch size are not given in 002 and are ours",
        "each weight matrix's learning rate is scaled by min(1, base_width / fan_in) (μP for adaptive "
        "optimisers, not in 002 §3.2): at 002's 512 cells plain Adadelta diverged to chance",
        "every crop is its own sequence and the video averages the crops' probabilities (TSN's crop "
        "averaging; 002 §3.2 tests 30-step samples of one view)",
        "framesel selects frames by the iteration-averaged attention α and re-runs the model on the m kept "
        "positions (attention renormalised over them); 002 attends softly and selects none",
    )

    def build(self) -> nn.Module:
        return TAttnModule(self.feature_dim, self.num_classes, self.config, self.attention)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run every crop as its own sequence.

        feats (B, T, K, D), mask (B, T, K) bool or None -> per-crop class probabilities
        (B, K, C) averaged over the last ``test_last`` iterations, and α averaged over the
        iterations (B, T, K) float32. A crop whose mask is all False is run unmasked (its
        result is not used by :meth:`_predict`) so that no softmax sees only −∞.
        """
        B, T, K, D = feats.shape
        v = feats.float().permute(0, 2, 1, 3).reshape(B * K, T, D)
        mk = None
        if mask is not None:
            mk = mask.permute(0, 2, 1).reshape(B * K, T)
            mk = mk | ~mk.any(1, keepdim=True)
        logits, alpha = self.module(v, mk)
        probs = torch.softmax(logits[:, -self.config.test_last:], -1).mean(1)
        return probs.reshape(B, K, -1), alpha.mean(1).reshape(B, K, T).permute(0, 2, 1)

    def _predict(self, states: States, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, C) log of the crop-averaged probabilities and (V, T, K) α, in mini-batches of
        videos on the module's device; ``keep`` (V, T, K) bool restricts what the model sees."""
        self.module.eval()
        scores, alphas, dev, bs = [], [], self.device, self.config.batch_size
        with torch.no_grad():
            for i in range(0, states.features.shape[0], bs):
                mask = None if keep is None else keep[i:i + bs].to(dev)
                probs, alpha = self._forward(states.features[i:i + bs].to(dev), mask)
                vote = torch.ones(probs.shape[:2], device=dev) if mask is None else mask.any(1).float()
                p = (probs * vote[..., None]).sum(1) / vote.sum(1, keepdim=True).clamp_min(1.0)
                scores.append(torch.log(p.clamp_min(1e-12)))
                alphas.append(alpha)
        out = states.features.device
        return torch.cat(scores).to(out), torch.cat(alphas).to(out)

    def score(self, states: States) -> torch.Tensor:
        """(V, T, K) float32 attention weights averaged over the iterations (each crop's
        weights sum to 1 over T)."""
        return self._predict(states, None)[1]

    def _keep(self, scores: torch.Tensor, m: int | None, mode: str) -> torch.Tensor:
        return top_m_mask(scores, m, mode)

    reads_logits = False     # features only (the head's logits are never read)
    own_classifier = True    # predicts with its LSTM's W_y, not the head (evaluate pairs it with itself)

    def video_scores(self, states: States, keep: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
        """(V, C) float32: the model's own prediction seeing only the kept cells (all kept:
        its prediction over every position), as :meth:`select` makes it; α does not apply."""
        return self._predict(states, None if bool(keep.all()) else keep)[0].float()

    def select(self, states: States, m: int | None, *, mode: str = "frame", alpha: float = 0.0) -> Selection:
        """m=None: the agent's own prediction over every position; m: top-m cells by α, the
        model re-run seeing only those (attention renormalised over them)."""
        video_scores, scores = self._predict(states, None)
        keep = top_m_mask(scores, m, mode)
        if not bool(keep.all()):
            video_scores = self._predict(states, keep)[0]
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, video_scores.float(), per.long(), mode)

    # -- training -------------------------------------------------------------------
    def _step(self, feats: torch.Tensor, labels: torch.Tensor, opt) -> dict:
        """One back-propagation step on B videos × K crops. feats (B, T, K, D), labels (B,)."""
        B, T, K, D = feats.shape
        v = feats.float().permute(0, 2, 1, 3).reshape(B * K, T, D)
        logits, alpha = self.module(v)
        y = labels.repeat_interleave(K)
        loss = tattn_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        alpha = alpha.detach()
        ent = -(alpha * torch.log(alpha.clamp_min(1e-12))).sum(-1)           # (B·K, I) nats
        pred = torch.softmax(logits[:, -self.config.test_last:].detach(), -1).mean(1).argmax(-1)
        return {"loss": float(loss.detach()), "entropy": float(ent.mean()),
                "fraction_kept": float(ent.exp().mean()) / T,
                "train_top1": float((pred == y).float().mean())}

    # -- the training template's hooks (agents/training.py) ------------------------------
    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        """Adadelta (§3.2), each weight matrix's lr scaled by min(1, base_width / fan_in)."""
        cfg = self.config
        return torch.optim.Adadelta(width_scaled_groups(self.module, cfg.lr, cfg.base_width), lr=cfg.lr,
                                    rho=cfg.rho, eps=cfg.eps, weight_decay=cfg.weight_decay)

    def prepare(self, ctx) -> None:
        if ctx.train.multilabel:
            raise InputError(f"{self.name} is trained with single-label cross-entropy (eq. 8)")

    def train_epoch(self, ctx, epoch: int) -> dict:
        """Adadelta on eq. 8 over mini-batches of videos. Row: loss, entropy (of α, nats),
        fraction_kept (= perplexity of α / T: the share of positions the soft attention
        effectively uses), train_top1; ``val_top1`` is the agent's own prediction."""
        train, dev = ctx.train, ctx.device
        V = train.features.shape[0]
        return mean_rows([self._step(train.features[idx].to(dev), train.labels[idx].to(dev).long(), ctx.optimizer)
                          for idx in torch.randperm(V, generator=ctx.generator).split(self.config.batch_size)])


@register("tattn_noatt")
class TAttnNoAtt(NoSelection, TAttn):
    """The paper's no-attention baseline (§3.3): x_t = mean of the features every iteration;
    tattn's partner (agents/papers.py), trained by ``framesel train --agent tattn`` too.

    Its weights are uniform (score = 1/T everywhere), so ``select(m)`` keeps m evenly spaced
    positions (TSN) and the model averages those; region mode keeps all crops of them.
    """

    attention = False
    partner_of = "tattn"
    departures = TAttn.departures[:3] + (
        "at a budget m it averages TSN's m evenly spaced positions (002 §3.3's baseline averages all)",)
