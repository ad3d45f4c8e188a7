"""The ``rtsae`` agent: Recurrent Temporal Sparse Autoencoder (paper 004).

An attention-LSTM encoder (aLSTM, eqs. 1–7) reads a 128-D sparse random projection of each
position's features (eqs. 17–18) and opens a scalar attention gate ā_t = p-ψ(‖W_a o_t + b_a‖),
p-ψ(x) = 1 − exp(−x²/σ) with σ learned. Training has the paper's two stages that concern
cached features (stage 1, the backbone, is upstream of the store):

- stage 2, unsupervised (``pretrain_epochs``): a decoder reconstructs the sequence from the
  gated code ā_t·h_t; loss eq. 12 (agents/rtsae_model.py :func:`rtsae_loss`), Adadelta
  (ρ 0.95, ε 1e-6);
- stage 3, fine-tuning (``epochs``): the decoder is dropped, the per-stream max-normalised
  features (eq. 15) are fused with a learned weight w_f (eq. 16), gated by ā_t (eq. 13) and
  read by a sequence classifier LSTM; cross-entropy through the whole model plus eq. 12's
  ϕ‖ā‖_1 (004 §4.3's joint multi-task training; ``joint_sparsity``).

Temporal augmentation (§5.1.1 B) is applied in both stages. At test the gate is binarised at
0.5 (eq. 14) and the classifier skips closed positions, so ``variable_m = True``: with
``m=None`` the agent keeps the positions whose gate is open; with an m, the top m by gate.
The keyframe fraction in the history (``fraction_kept``) and in evaluate is that of the
trained gate, which stage 3's loss sets: ϕ‖ā‖_1 against the cross-entropy.

Two streams: pass the flow stream's States as ``flow=`` to ``fit``/``score``/``select`` with
``Config(two_stream=True)``; ``framesel train --set two_stream=true`` does it with the store's
flow (agents/stage.py), and evaluate's "fused" rows feed it rgb and flow.

The network, eq. 12 and the augmentation are in agents/rtsae_model.py; every departure from
004 is listed, with what was measured, in :class:`RTSAEConfig`'s docstring.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from agents.base import Agent, Selection, States, register, top_m_mask
from agents.rl import bernoulli_entropy, step_and_tally
from agents.rtsae_model import (RTSAEConfig, _RTSAENet, max_normalise, next_open, nuclear_norm,  # noqa: F401
                                p_psi, rtsae_loss, sparse_projection, temporal_augment)
from data.errors import InputError

log = logging.getLogger(__name__)


def _sequences(states: States | None) -> torch.Tensor | None:
    """(V, T, K, D) -> (V·K, T, D): each crop of each video is its own sequence."""
    if states is None:
        return None
    V, T, K, D = states.features.shape
    return states.features.float().permute(0, 2, 1, 3).reshape(V * K, T, D)


def classification_terms(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> dict[str, torch.Tensor]:
    """Stage 3's cross-entropy ``ce`` of logits (B, C) against labels (B,) int64 (or (B, C)
    multi-hot, binary cross-entropy) and the batch's ``train_top1`` (detached)."""
    ce = (nn.functional.binary_cross_entropy_with_logits(logits, y) if multilabel
          else nn.functional.cross_entropy(logits, y))
    hit = (logits.argmax(1) == y) if not multilabel else ((logits > 0) == (y > 0.5)).all(1)
    return {"ce": ce, "train_top1": hit.float().mean().detach()}


@register("rtsae")
class RTSAEAgent(Agent):
    """Paper 004's RTSAE attention with its own gated sequence classifier."""

    Config = RTSAEConfig
    variable_m = True
    partner = "rtsae_nogate"     # 004 Table 3: the recognition network without the RTSAE
    departures = (
        "eq. 12 is taken per step in units that do not grow with the feature or hidden size, reconstructs "
        "every step (004 sums over the attention moments only, where all-shut is a trivial minimum) and "
        "takes μ's term as a gate-weighted mean over steps, not 004's sum over moments (§3.2, "
        "RTSAEConfig)",
        "stage 3 keeps eq. 12's ϕ‖ā‖_1 beside the cross-entropy (joint_sparsity; 004 §4.3 writes stage 3 "
        "as fine-tuning with the decoder removed): without it every gate reopens",
        "stage 3 uses Adam at lr 1e-2 (004 §4.3: lr 1e-3 fixed over 35K iterations, optimizer not "
        "named): at 30 epochs of a few hundred videos SGD or Adam at 1e-3 learn nothing",
        "temporal augmentation (§5.1.1 B) overwrites aug_frames positions with frames of the same or "
        "another video, keeping T fixed, where 004 inserts them",
        "temporal augmentation also shifts every training sequence circularly by a random offset "
        "(aug_shift; 004 §5.1.1 B inserts frames and shifts nothing): the end of a video may precede its "
        "start in training; --set aug_shift=false gives 004's",
        "trains on one stream by default (two_stream=false): 004's results (Tables 3–5) are the "
        "two-stream RTSAE-DSCNN, eqs. 15–17, which --set two_stream=true trains on rgb + the store's flow "
        "(evaluate's \"fused\" rows)",
        "the backbone is frozen (cached features): 004 §4.3's stage 1 trains the DSCNN and stage 3 "
        "fine-tunes it with the RTSAE; gate_dim, gate_init (b_a) and the classifier's size are not given "
        "in 004 and are ours",
        "a video whose gate opens nowhere keeps its single most attended position (ours: eq. 14 would "
        "leave it with nothing to classify)",
    )

    def build(self) -> nn.Module:
        return _RTSAENet(self.config, self.feature_dim, self.num_classes)

    # -- inputs -------------------------------------------------------------------------
    def _check(self, states: States, flow: States | None) -> None:
        D = states.features.shape[-1]
        if D != self.feature_dim:
            raise InputError(f"rtsae was built for {self.feature_dim}-D features, got {D}-D")
        if self.config.two_stream and flow is None:
            raise InputError("rtsae has two_stream=True: pass the flow stream's States as flow=")
        if not self.config.two_stream and flow is not None:
            raise InputError("a flow stream was given but rtsae has two_stream=False")
        if flow is not None and flow.features.shape != states.features.shape:
            raise InputError(f"flow features {tuple(flow.features.shape)} differ from rgb "
                             f"{tuple(states.features.shape)}; eq. 17 adds them position-wise")

    def _device(self) -> torch.device:
        return self.module.fnet.weight.device

    # -- test time ----------------------------------------------------------------------
    def score(self, states: States, flow: States | None = None, chunk: int = 1024) -> torch.Tensor:
        """Attention gate ā (eq. 6) of every (position, crop): (V, T, K) float32 in [0, 1]."""
        self._check(states, flow)
        V, T, K, _ = states.features.shape
        xs_all, xt_all = _sequences(states), _sequences(flow)
        dev, out = self._device(), []
        self.module.eval()
        with torch.no_grad():
            for i in range(0, V * K, chunk):
                xs = xs_all[i:i + chunk].to(dev)
                xt = None if xt_all is None else xt_all[i:i + chunk].to(dev)
                out.append(self.module.encode(self.module.project(xs, xt))[2].cpu())
        return torch.cat(out).reshape(V, K, T).permute(0, 2, 1).contiguous()

    def predict(self, states: States, gate: torch.Tensor, flow: States | None = None,
                chunk: int = 1024) -> torch.Tensor:
        """Class logits (V, C) of the classifier over the gated sequences, averaged over
        crops. gate: (V, T, K) float in [0, 1] (binary at test)."""
        self._check(states, flow)
        V, T, K, _ = states.features.shape
        xs_all, xt_all = _sequences(states), _sequences(flow)
        g_all = gate.float().permute(0, 2, 1).reshape(V * K, T)
        dev, out = self._device(), []
        self.module.eval()
        with torch.no_grad():
            for i in range(0, V * K, chunk):
                xs = xs_all[i:i + chunk].to(dev)
                xt = None if xt_all is None else xt_all[i:i + chunk].to(dev)
                z = self.module.fuse(xs, xt)
                out.append(self.module.classify(z, g_all[i:i + chunk].to(dev)).cpu())
        return torch.cat(out).reshape(V, K, -1).mean(1)

    def select(self, states: States, m: int | None, *, mode: str = "frame", alpha: float = 0.0,
               flow: States | None = None) -> Selection:
        """Keep the positions whose gate is open (``m=None``, eq. 14) or the top m by gate,
        and predict with the agent's classifier: kept positions get gate 1, dropped ones α
        (α = 0 skips them, as the paper does at test). A video whose gate opens nowhere
        keeps its single most attended position, so that every video predicts from
        something (``num_kept`` shows it)."""
        scores = self.score(states, flow)
        if m is None:
            thr = self.config.gate_threshold
            keep = (scores.mean(2, keepdim=True) > thr).expand_as(scores).clone() if mode == "frame" \
                else scores > thr
            empty = ~keep.flatten(1).any(1)
            keep[empty] = top_m_mask(scores[empty], 1, mode)
        else:
            keep = top_m_mask(scores, m, mode)
        gate = keep.float() + alpha * (~keep).float()
        video_scores = self.predict(states, gate, flow)
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, video_scores, per.long(), mode)

    reads_logits = False     # features only (the head's logits are never read)
    own_classifier = True    # predicts with its own gated sequence classifier (evaluate pairs it with itself)

    def video_scores(self, states: States, keep: torch.Tensor, alpha: float = 0.0,
                     flow: States | None = None) -> torch.Tensor:
        """(V, C) float32: the agent's classifier with gate 1 on the kept cells and α on the
        dropped ones, as :meth:`select` predicts (all kept: its no-gate baseline)."""
        return self.predict(states, keep.float() + alpha * (~keep).float(), flow)

    # -- training -----------------------------------------------------------------------
    def make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        cfg = self.config
        name, lr = (cfg.pretrain_optimizer, cfg.pretrain_lr) if stage == "pretrain" else (cfg.optimizer, cfg.lr)
        params = self.module.parameters()
        if name == "adadelta":
            return torch.optim.Adadelta(params, lr=lr, rho=0.95, eps=1e-6)
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum)
        return torch.optim.Adam(params, lr=lr)

    def stages(self) -> tuple[tuple[str, int], ...]:
        """Stage 2 (unsupervised, eq. 12) then stage 3 (classifier fine-tuning)."""
        return (("pretrain", self.config.pretrain_epochs), ("finetune", self.config.epochs))

    def _batch_loss(self, xs, xt, y, stage: str, multilabel: bool) -> dict[str, torch.Tensor]:
        net = self.module
        x = net.project(xs, xt)
        h, o, a = net.encode(x)
        if stage == "pretrain":
            terms = rtsae_loss(x, net.decode(h, a), h, o, a, self.config)
        else:
            # joint multi-task stage 3 (004 §4.3): eq. 12's ϕ‖ā‖_1 stays in the loss, so the
            # keyframe fraction that reaches evaluate is set by ϕ against the cross-entropy
            terms = {"l1_a": self.config.phi * a.sum(1).mean() / a.shape[1]} if self.config.joint_sparsity else {}
            terms.update(classification_terms(net.classify(net.fuse(xs, xt), a), y, multilabel))
            terms["loss"] = terms.get("l1_a", 0.0) + terms["ce"]
        terms["entropy"] = bernoulli_entropy(a).mean().detach()
        terms["fraction_kept"] = (a > self.config.gate_threshold).float().mean().detach()
        return terms

    def _epoch(self, train: States, flow: States | None, stage: str, opt, g, device) -> dict:
        """One pass over the training videos in mini-batches of videos (all their crops)."""
        V, T, K, _ = train.features.shape
        xs_all, xt_all = _sequences(train), _sequences(flow)
        y_all = train.labels.float() if train.multilabel else train.labels.long()
        bs = self.config.pretrain_batch_size if stage == "pretrain" else self.config.batch_size
        sums: dict[str, float] = {}
        perm, n = torch.randperm(V, generator=g), 0
        self.module.train()
        for i in range(0, V, bs):
            seq = (perm[i:i + bs, None] * K + torch.arange(K)).reshape(-1)     # (B,) sequences
            src_b, src_t = temporal_augment(len(seq), T, self.config, g)
            rows = seq[src_b]
            xs = xs_all[rows, src_t].to(device)
            xt = None if xt_all is None else xt_all[rows, src_t].to(device)
            terms = self._batch_loss(xs, xt, y_all[seq // K].to(device), stage, train.multilabel)
            step_and_tally(opt, terms, sums, len(seq))
            n += len(seq)
        return {key: val / n for key, val in sums.items()}

    # -- the training template's hooks (agents/training.py) ------------------------------
    fit_inputs = ("flow", "val_flow")    # the second stream of the same videos when two_stream

    def prepare(self, ctx) -> None:
        self._check(ctx.train, ctx.inputs.get("flow"))
        if ctx.val is not None:
            self._check(ctx.val, ctx.inputs.get("val_flow"))

    def train_epoch(self, ctx, epoch: int) -> dict:
        """One epoch of ``ctx.stage``; the row adds p-ψ's σ and the fusion weight w_f."""
        row = self._epoch(ctx.train, ctx.inputs.get("flow"), ctx.stage, ctx.optimizer, ctx.generator, ctx.device)
        return dict(row, sigma=float(self.module.sigma.detach()), w_f=float(self.module.wf.detach()))

    def validate(self, ctx, epoch: int) -> dict:
        """Fine-tuning only: top-1 and kept fraction with the binarised gate (eq. 14)."""
        if ctx.stage != "finetune":
            return {}
        val = ctx.val
        sel = self.select(val, None, flow=ctx.inputs.get("val_flow"))
        top1 = float("nan") if val.multilabel else \
            float((sel.video_scores.argmax(1) == val.labels.cpu()).float().mean())
        return {"val_top1": top1, "val_fraction_kept": float(sel.keep.float().mean())}
