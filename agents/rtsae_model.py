"""Paper 004's RTSAE network and its unsupervised loss (eq. 12), used by agents/rtsae.py.

Holds the configuration, the sparse random projection (eqs. 17–18), p-ψ (eq. 7), the aLSTM
encoder with its attention gate (eqs. 1–6), the decoder, the F-Net fusion (eqs. 15–16), the
gated sequence classifier (eqs. 13–14), eq. 12 (:func:`rtsae_loss`) and §5.1.1 B's temporal
augmentation. The agent (training stages, selection) is in agents/rtsae.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.options import check_ranges
from data.errors import InputError

OPTIMIZERS = ("adadelta", "sgd", "adam")


@dataclass(frozen=True)
class RTSAEConfig:
    """Defaults are paper 004's settings where it gives them (section in brackets).

    Decisions and departures from 004, each measured (benchmarks/rtsae_terms.py, its section
    in benchmarks/README.md; planted states, 3 key positions of 25):

    - R is eq. 18 as printed: "r(i, j) = √3 × {−1 with probability 1/6, 0 with probability
      2/3, 1 with probability 1/6}", x_f = R(x_s + x_t)/(2 x_max) (eq. 17). 004 has no 1/√k
      (k = ``proj_dim``); it says R satisfies "the Johnson–Lindenstrauss lemma [2], which
      theoretically guarantees its Restricted Isometry Property (RIP) that reserves the
      metric distance of data samples", an isometry only R/√k gives (E‖Rx‖² = k‖x‖²). We
      keep the printed R: eq. 12's balance does not rest on R's scale here (reconstruction
      is measured in units of the sequence's energy, see :func:`rtsae_loss`), and R/√k makes
      the aLSTM's input √k times smaller, after which the gate learns less in fine-tuning
      (hidden 32, 128 planted videos, 4 + 20 epochs, CE-only stage 3: top-1 0.34 with R/√k,
      0.56 with R; at the benchmark's small-network defaults R/√k shuts every gate, top-1
      0.115 against 0.573);
    - eq. 12 is taken per step (÷ T) in units that do not grow with the feature or hidden
      size: reconstruction over every step in units of the sequence's energy (004 sums over
      the attention steps, under which all-closed is a trivial minimum), ‖o_t‖_1 ÷ H,
      ‖O‖_* ÷ √H, and μ's term as the gate-weighted mean over steps of log(1 + ‖Δh‖²/spread)
      with each step paired with the moment that follows it (004: a sum over consecutive
      moments). As a sum it rewards every extra open step, so the encoder buys open gates
      by making h vary (raw ‖Δh‖², Adam in stage 2: every gate open); and with the sum the
      full default network's stage 2 shut every gate and the model ended at gated 0.721 vs
      no-gate 0.742. As a mean it chooses which steps open: stage 2 keeps 0.53 of them;
    - stage 3 keeps ϕ‖ā‖_1 (``joint_sparsity``). 004 §4.3: "we jointly carry out two tasks
      in one model employing the idea of multi-task training"; in stage 3 "the decoder of
      the RTSAE is removed", so there is no reconstruction, and eq. 12's other terms are
      dropped too (kept in trials, they opened or shut every gate). Full default network,
      240 planted videos: with it 0.06 of the positions stay open and the gated top-1 is
      0.833 against the same network's 0.338 with every gate open; without it (stage 3 the
      cross-entropy alone, as 004 writes it) every gate reopens and both are 0.938. Small
      networks (hidden 32) at 004's ϕ = 0.8 keep 0.04 (top-1 0.573 vs 0.208); ϕ = 0.2
      suits them (0.18 kept, 0.833 vs 0.333);
    - fine-tuning uses Adam at lr 1e-2 (004: "learning rate is fixed as 10−3", 35K
      iterations, optimizer not named): at 30 epochs of a few hundred planted videos
      SGD-momentum or Adam at 1e-3 learn nothing (top-1 0.09–0.17, chance 0.125);
    - stage 2 (Adadelta, 004's ρ, ε) on a few hundred videos barely trains the decoder
      (reconstruction 0.96–0.99 of the energy after 10 epochs), so on temporally independent
      positions its gate is set by ϕ against μ, not by what reconstructs the sequence;
    - temporal augmentation (§5.1.1 B: "We randomly insert the same frames from the current
      video or confusing frames from other examples to the original sequences") overwrites
      ``aug_frames`` positions instead of inserting them, so T stays fixed, and also shifts
      every training sequence circularly by a random offset (``aug_shift``), which 004 does
      not: the end of a video may then precede its start. ``aug_shift=false`` is 004's way;
      the default stays on because every number in this docstring and benchmarks/README.md
      was measured with it. On planted states, whose positions are independent draws, it
      changes nothing beyond seed noise (tests/test_rtsae.py's small network, ϕ 0.2, 128 +
      128 videos, T = 12, seeds 0/1/2: gated top-1 0.555/0.422/0.711 with the shift,
      0.609/0.680/0.414 without; no-gate 0.234/0.180/0.367 and 0.242/0.227/0.156); on real
      videos, whose order matters, it is untested;
    - one stream by default (``two_stream`` false: a store may hold one); 004's results
      (Tables 3–5) are the two-stream RTSAE-DSCNN, eqs. 15–17, which ``two_stream=true``
      trains on rgb with the store's flow (evaluate's "fused" rows).

    Every departure is also in ``RTSAEAgent.departures``, which the report lists. The partner
    ``rtsae_nogate`` (agents/rtsae_nogate.py) is this network's recognition part trained
    without the RTSAE.
    """

    proj_dim: int = 128            # sparse random projection size [§4.2.3]
    hidden: int = 128              # aLSTM units per layer, "rt1 rt2: 128 128" [Table 1]
    layers: int = 2                # double-layer RTSAE [§5.1.1 A, Table 2]
    gate_dim: int = 32             # size of W_a o_t + b_a before the norm (eq. 6; not given)
    sigma_init: float = 2.98       # p-ψ's σ at start, the value drawn in Fig. 4
    gate_init: float = 0.6         # ā at start through b_a (init not given in the paper)
    mu: float = 0.5                # keyframe dissimilarity weight (eq. 12)
    tau: float = 0.02              # nuclear norm ‖O‖_* weight (eq. 12)
    lam: float = 0.05              # Σ_t ‖o_t‖_1 weight (eq. 12)
    phi: float = 0.8               # ‖ā‖_1 weight (eq. 12)
    gate_threshold: float = 0.5    # binary mapping at test (eq. 14)
    joint_sparsity: bool = True    # stage 3 keeps eq. 12's ϕ‖ā‖_1 (joint multi-task, §4.3)
    two_stream: bool = False       # fuse a second (flow) stream, eqs. 15–17
    fusion_dim: int = 1024         # F-Net width, fc7 1024 [Table 1]
    classifier_hidden: int = 256   # sequence classifier LSTM (size not given in the paper)
    pretrain_epochs: int = 10      # stage 2 (unsupervised)
    epochs: int = 30               # stage 3 (fine-tuning)
    pretrain_batch_size: int = 32  # [§4.3]
    batch_size: int = 16           # fine-tuning batch [§4.3]
    pretrain_optimizer: str = "adadelta"
    pretrain_lr: float = 1.0       # Adadelta's own step scale (ρ 0.95, ε 1e-6) [§4.3]
    optimizer: str = "adam"        # fine-tuning (004 names none for it; see the module docstring)
    lr: float = 1e-2               # fine-tuning; 004 fixes 1e-3 over 35K iterations [§4.3]
    momentum: float = 0.9
    aug_fraction: float = 0.8      # share of sequences that get inserted frames [§5.1.1 B]
    aug_frames: int = 2            # inserted frames per augmented sequence
    aug_other: float = 0.5         # chance an inserted frame comes from another video
    aug_shift: bool = True         # random circular temporal shift of every sequence
    projection_seed: int = 0       # R of eq. 18 is fixed by this seed (stored in checkpoints)

    def __post_init__(self):
        for name in ("pretrain_optimizer", "optimizer"):
            if getattr(self, name) not in OPTIMIZERS:
                raise InputError(f"{name} must be one of {OPTIMIZERS}, not {getattr(self, name)!r}")
        if not 0.0 < self.gate_init < 1.0:
            raise InputError(f"gate_init must be in (0, 1), not {self.gate_init}")
        if not 0.0 < self.gate_threshold < 1.0:
            raise InputError(f"gate_threshold must be in (0, 1), not {self.gate_threshold}")
        check_ranges("rtsae", self,
                     at_least_one=("proj_dim", "hidden", "layers", "gate_dim", "fusion_dim", "classifier_hidden",
                                   "epochs", "batch_size", "pretrain_batch_size"),
                     non_negative=("pretrain_epochs", "mu", "tau", "lam", "phi", "aug_frames", "projection_seed"),
                     positive=("sigma_init", "pretrain_lr", "lr"), unit=("aug_fraction", "aug_other"),
                     unit_open=("momentum",))


def sparse_projection(out_dim: int, in_dim: int, seed: int) -> torch.Tensor:
    """R of eq. 18, exactly as 004 §4.2.3 writes it: "r(i, j) = √3 × {−1 with probability
    1/6, 0 with probability 2/3, 1 with probability 1/6}" — no 1/√out_dim factor (the paper
    gives none; sklearn's SparseRandomProjection has one). The JL/RIP property the paper
    cites ("reserves the metric distance of data samples") holds up to that global factor:
    E‖Rx‖² = out_dim·‖x‖². Why the printed R is kept: :class:`RTSAEConfig`'s docstring.
    -> (out_dim, in_dim) float32, fixed by ``seed``."""
    g = np.random.default_rng(seed)
    r = g.choice(np.array([-1.0, 0.0, 1.0]), size=(out_dim, in_dim), p=[1 / 6, 2 / 3, 1 / 6])
    return torch.from_numpy((r * math.sqrt(3.0)).astype(np.float32))


def p_psi(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Parameterised radial basis activation, eq. 7: 1 − exp(−x²/σ). (...) -> (...)."""
    return 1.0 - torch.exp(-x.pow(2) / sigma)


def max_normalise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 15: divide each feature vector by its maximum. The paper's features are ReLU
    outputs; for signed features we divide by the largest magnitude so signs are kept.
    (..., D) -> (..., D)."""
    return x / x.abs().amax(dim=-1, keepdim=True).clamp_min(eps)


class _ALSTMLayer(nn.Module):
    """LSTM with peephole connections, eqs. 1–5; returns hidden states and output gates."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.lin = nn.Linear(in_dim + hidden, 4 * hidden)
        self.peep = nn.Parameter(torch.zeros(3, hidden))   # W_ci, W_cf, W_co (diagonal)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, in) -> h (B, T, H), o (B, T, H) output-gate vectors (eq. 4)."""
        B, T, _ = x.shape
        h = x.new_zeros(B, self.hidden)
        c = x.new_zeros(B, self.hidden)
        hs, os_ = [], []
        for t in range(T):
            zi, zf, zc, zo = self.lin(torch.cat([x[:, t], h], dim=1)).chunk(4, dim=1)
            i = torch.sigmoid(zi + self.peep[0] * c)                 # eq. 1
            f = torch.sigmoid(zf + self.peep[1] * c)                 # eq. 2
            c = f * c + i * torch.tanh(zc)                           # eq. 3
            o = torch.sigmoid(zo + self.peep[2] * c)                 # eq. 4 (peeps at c_t)
            h = o * torch.tanh(c)                                    # eq. 5
            hs.append(h)
            os_.append(o)
        return torch.stack(hs, 1), torch.stack(os_, 1)


class _Recogniser(nn.Module):
    """The recognition network the RTSAE gates: F-Net fusion (eqs. 15–16) and the gated
    sequence classifier (eqs. 13–14). Shared by :class:`_RTSAENet` and the no-gate partner
    (agents/rtsae_nogate.py); ``cfg`` needs ``fusion_dim`` and ``classifier_hidden``."""

    def _add_recogniser(self, cfg, feature_dim: int, num_classes: int) -> None:
        self.log_wf = nn.Parameter(torch.zeros(()))                          # w_f = 1 at start
        self.fnet = nn.Linear(feature_dim, cfg.fusion_dim)
        self.cls_cell = nn.LSTMCell(cfg.fusion_dim, cfg.classifier_hidden)
        self.cls_out = nn.Linear(cfg.classifier_hidden, num_classes)

    @property
    def wf(self) -> torch.Tensor:
        return self.log_wf.exp()

    def fuse(self, xs: torch.Tensor, xt: torch.Tensor | None) -> torch.Tensor:
        """Eqs. 15–16: ReLU(F-Net(x̄_s/(1+w_f) + w_f x̄_t/(1+w_f))). (B, T, D) -> (B, T, F)."""
        z = max_normalise(xs)
        if xt is not None:
            w = self.wf
            z = z / (1 + w) + max_normalise(xt) * (w / (1 + w))
        return torch.relu(self.fnet(z))

    def classify(self, z: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Gated sequence classifier: input z_t·g_t (eq. 13) and a state update weighted by
        g_t, so a closed binary gate (test, eq. 14) skips the position entirely, as the paper
        stops computation there. z: (B, T, F), gate: (B, T) in [0, 1] -> logits (B, C)."""
        B, T, _ = z.shape
        h = z.new_zeros(B, self.cls_cell.hidden_size)
        c = torch.zeros_like(h)
        for t in range(T):
            g = gate[:, t, None]
            h2, c2 = self.cls_cell(z[:, t] * g, (h, c))
            h, c = g * h2 + (1 - g) * h, g * c2 + (1 - g) * c
        return self.cls_out(h)


class _RTSAENet(_Recogniser):
    """Encoder (stacked aLSTM + attention gate), decoder, F-Net and sequence classifier."""

    def __init__(self, cfg: RTSAEConfig, feature_dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("proj", sparse_projection(cfg.proj_dim, feature_dim, cfg.projection_seed))
        dims = [cfg.proj_dim] + [cfg.hidden] * cfg.layers
        self.encoder = nn.ModuleList(_ALSTMLayer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.gate = nn.Linear(cfg.hidden, cfg.gate_dim)                       # W_a, b_a (eq. 6)
        # Gates start half open (ā ≈ gate_init): a closed p-ψ has zero gradient (two-sided
        # suppression), so a gate that starts shut can never learn to open.
        with torch.no_grad():
            norm = math.sqrt(-cfg.sigma_init * math.log(1.0 - cfg.gate_init))
            self.gate.bias.fill_(norm / math.sqrt(cfg.gate_dim))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(cfg.sigma_init)))
        self.decoder = nn.LSTM(cfg.hidden, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.readout = nn.Linear(cfg.hidden, cfg.proj_dim)                   # k_t
        self._add_recogniser(cfg, feature_dim, num_classes)     # after the rest: seeds give the same weights

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def project(self, xs: torch.Tensor, xt: torch.Tensor | None) -> torch.Tensor:
        """Eq. 17: x_f = R (x_s + x_t) / (2 x_max); single stream: R x_s / x_max.
        x_max is the largest magnitude in the position's vectors. (B, T, D) -> (B, T, P)."""
        if xt is None:
            return max_normalise(xs) @ self.proj.T
        xmax = torch.maximum(xs.abs().amax(-1, keepdim=True), xt.abs().amax(-1, keepdim=True))
        return ((xs + xt) / (2 * xmax.clamp_min(1e-6))) @ self.proj.T

    def encode(self, x: torch.Tensor):
        """x: (B, T, P) -> h (B, T, H), o (B, T, H) top-layer output gates, ā (B, T) (eq. 6)."""
        h = x
        for layer in self.encoder:
            h, o = layer(h)
        a = p_psi(self.gate(o).norm(dim=-1), self.sigma)
        return h, o, a

    def decode(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Reconstruction k (B, T, P) from the gated code ā_t·h_t (B, T, H)."""
        out, _ = self.decoder(h * a[..., None])
        return self.readout(out)

def nuclear_norm(O: torch.Tensor) -> torch.Tensor:
    """‖O‖_* = Σ singular values (eq. 9) per sequence. O: (B, T, H) -> (B,)."""
    return torch.linalg.svdvals(O).sum(-1)


def next_open(open_: torch.Tensor) -> torch.Tensor:
    """For every position the index of the next open position after it (T if none).
    open_: (B, T) bool -> (B, T) int64."""
    B, T = open_.shape
    pos = torch.arange(T, device=open_.device).expand(B, T)
    val = torch.where(open_, pos, torch.full_like(pos, T))
    shifted = torch.cat([val[:, 1:], torch.full_like(val[:, :1], T)], dim=1)
    return torch.flip(torch.cummin(torch.flip(shifted, [1]), dim=1).values, [1])


def successor_moment(open_: torch.Tensor) -> torch.Tensor:
    """s_{i+1} for every step taken as a moment s_i: the next open step after it, or, where
    none follows, the next step (so that μ still reaches a sequence whose gates are all
    shut); the last step pairs with itself. open_: (B, T) bool -> (B, T) int64."""
    T = open_.shape[1]
    nxt = next_open(open_)
    step = (torch.arange(T, device=open_.device) + 1).clamp(max=T - 1).expand_as(nxt)
    return torch.where(nxt < T, nxt, step)


def rtsae_loss(x, k, h, o, a, cfg: RTSAEConfig) -> dict[str, torch.Tensor]:
    """Eq. 12 per time step, averaged over the batch. x, k: (B, T, P) inputs and
    reconstructions (k None: stage 3, the decoder is removed, no reconstruction term);
    h, o: (B, T, H) encoder hidden states and output gates; a: (B, T) ā.

    004: Σ_{i=1..M} [‖k_{s_i} − x_{s_i}‖² − μ log(1 + ‖h_{s_i} − h_{s_{i+1}}‖²)]
    + τ‖O‖_* + λ Σ_t ‖o_t‖_1 + ϕ‖ā‖_1, s_i the M attention moments. Each term is divided by
    T (a per-step loss) and put in units that do not grow with the feature or hidden size,
    so that the paper's weights (μ 0.5, τ 0.02, λ 0.05, ϕ 0.8) meet terms of one scale:

    - recon = Σ_t ‖k_t − x_t‖² / ē, ē = mean_t ‖x_t‖² of the sequence (not differentiated):
      reconstructing nothing costs ≈ 1 per step, as a fully open gate costs ϕ, whatever
      the feature size. Eq. 12 sums over the M attention steps only, but then the
      all-closed gate is a trivial minimum; §3.2 asks that the *original sequence* be
      reconstructed from the sparse code, so every step counts (the decoder reads ā_t·h_t);
    - dissim = −μ Σ_t w_t log(1 + ‖h_t − h_{succ(t)}‖²/s) / Σ_t w_t, w_t = ā_t (0 for the last
      step): the moments s_i relaxed as ϕ‖ā‖_1 relaxes their count — every step weighted by
      its gate and paired with the moment that would follow it (:func:`successor_moment`),
      so μ reaches shut gates too (last session only open steps carried it). A mean, not
      004's sum, so μ chooses which steps open rather than paying for more of them; ‖Δh‖²
      in units of s = mean_t ‖h_t − h̄‖² (not differentiated), so inflating h buys nothing;
    - nuclear = τ‖O‖_*/√H and l1_o = λ Σ_t ‖o_t‖_1/H: O's entries are output gates in
      (0, 1), so the raw norms grow with H (‖o_t‖_1 ≈ H/2 per step); l1_a = ϕ‖ā‖_1.
    """
    T, H = a.shape[1], o.shape[-1]
    succ = successor_moment((a > cfg.gate_threshold).detach())
    h_next = h.gather(1, succ[..., None].expand_as(h))
    pair = (torch.arange(T, device=a.device) != succ).float()
    spread = (h - h.mean(1, keepdim=True)).pow(2).sum(-1).mean(1, keepdim=True).detach().clamp_min(1e-8)
    w = a * pair
    dissim = (torch.log1p((h - h_next).pow(2).sum(-1) / spread) * w).sum(1) / w.sum(1).clamp_min(1e-6)
    terms = {}
    if k is not None:
        energy = x.pow(2).sum(-1).mean(1).detach().clamp_min(1e-8)              # (B,)
        terms["recon"] = (k - x).pow(2).sum(dim=(1, 2)).div(energy).mean() / T
    terms.update(dissim=-cfg.mu * dissim.mean(),
                 nuclear=cfg.tau * nuclear_norm(o).mean() / (T * math.sqrt(H)),
                 l1_o=cfg.lam * o.abs().sum(dim=(1, 2)).mean() / (T * H),
                 l1_a=cfg.phi * a.abs().sum(1).mean() / T)
    terms["loss"] = sum(terms.values())
    return terms


def temporal_augment(B: int, T: int, cfg: RTSAEConfig, g: torch.Generator):
    """Source indices realising §5.1.1 B's temporal augmentation for a batch of B sequences:
    a random circular shift of each sequence, then for ``aug_fraction`` of them
    ``aug_frames`` positions overwritten by a frame of the same sequence or (with chance
    ``aug_other``) of another sequence of the batch. Overwriting keeps T fixed.
    -> (src_b, src_t): (B, T) int64 each; gather ``x[src_b, src_t]``."""
    src_b = torch.arange(B)[:, None].expand(B, T).clone()
    t = torch.arange(T)[None].expand(B, T)
    shift = torch.randint(0, T, (B, 1), generator=g) if cfg.aug_shift else torch.zeros(B, 1, dtype=torch.long)
    src_t = (t + shift) % T
    n = min(cfg.aug_frames, T)
    if n == 0 or cfg.aug_fraction <= 0:
        return src_b, src_t
    chosen = torch.rand(B, generator=g) < cfg.aug_fraction                    # (B,)
    where = torch.rand(B, T, generator=g).argsort(dim=1)[:, :n]               # (B, n) distinct
    other = torch.rand(B, n, generator=g) < cfg.aug_other
    from_b = torch.where(other, torch.randint(0, B, (B, n), generator=g), torch.arange(B)[:, None])
    from_t = torch.randint(0, T, (B, n), generator=g)
    rows = torch.arange(B)[:, None].expand(B, n)[chosen]
    src_b[rows, where[chosen]] = from_b[chosen]
    src_t[rows, where[chosen]] = from_t[chosen]
    return src_b, src_t
