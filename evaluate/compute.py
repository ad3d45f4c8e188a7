"""Compute accounting: GFLOPs per video of what really runs (GUIDE §4, §5 "count honestly").

Convention: **FLOPs, not MACs** — one multiply-accumulate is 2 FLOPs, the convention of
``torch.utils.flop_counter.FlopCounterMode`` (which counts matrix products and convolutions
only; element-wise ops are not counted). Every output carries :data:`CONVENTION`; GMACs are
GFLOPs / 2 for the backbone and agent terms.

Terms of one video (T positions, K crops, L flow fields per stack):

- backbone: ``gflops_per_frame`` (store attrs ``backbone[stream]``, counted at extraction
  with FlopCounterMode, head included) × the crops it actually sees;
- flow: GFLOPs per flow field × the fields computed (T·L for a full pass, kept positions·L
  when deploying); see :func:`tvl1_gflops_per_pair` — an **estimate** from the algorithm's
  parameters and the frame size, not a count;
- agent: FlopCounterMode on the selector's real ``select`` at the row's budget and mode
  (:func:`selector_gflops`): every forward pass it makes (tattn re-runs its model on the
  kept cells, rtsae runs its gate, fusion and classifier, an agent's own classifier), not
  ``score`` alone; plus the analytic count of ``nn.LSTM`` layers, which FlopCounterMode
  does not see on CPU (the fused ``aten._lstm`` op has no FLOP formula: it reports 0).
  Baselines count 0 (no matrix product);
- observer (dsn with a cheap stream): that stream's backbone on the cells it sees (dsn under
  003's test scheme: its M·N candidates of each crop, :func:`selector_seen`), and the flow of
  those stacks when the observer is the flow stream, in both views.

Two views (:meth:`CostModel.video_gflops`):

- ``full``: selection after a full pass (000): backbone on all T·K cells, the flow for all
  T stacks when the stream (or the method) needs flow, plus the agent (and its observer);
- ``deployable``: what a deployed selector must run (003): by the method's need —
  ``none`` (uniform, random, fixed_order, constant: decided without looking) → backbone
  and flow on the kept cells only; ``motion`` → flow on all T stacks, backbone on the kept;
  ``observer`` (dsn with a cheap observer stream, the one its checkpoint recorded:
  :func:`selector_observer`) → observer backbone (and, for a flow observer, flow) on the
  seen cells + agent + backbone (and flow) on the kept; ``full`` (max_response, entropy,
  oracle and every agent that reads full-pass states: as, tattn, rtsae, glimpse) →
  deployable = full, by construction; a dsn reading the features themselves computes them
  on its M·N candidates only (deployable = the stream on the seen positions).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from data.errors import InputError

log = logging.getLogger(__name__)

CONVENTION = "GFLOPs per video; FLOPs = 2 x MACs (torch.utils.flop_counter convention)"
NEEDS = ("none", "motion", "observer", "full")
# What a baseline must compute before it can choose (module docstring). Selectors may
# declare ``needs`` themselves; anything unknown defaults to "full" (never undercount).
BASELINE_NEEDS = {"uniform": "none", "random": "none", "fixed_order": "none", "constant": "none",
                  "motion": "motion", "max_response": "full", "entropy": "full", "oracle": "full"}

# TV-L1 per-pixel FLOP counts, read off OpenCV's tvl1flow.cpp loops (one float add, mul,
# div or sqrt = 1 FLOP; comparisons, medians and memory moves = 0):
TVL1_INNER = 54   # estimateV 10, 2 divergences 6, estimateU 10, 2 forward gradients 4, dual update 24
TVL1_WARP = 160   # flow map 2, three bicubic remaps (16 taps + weights) 150, gradient/rho 8
TVL1_SCALE = 40   # centred gradient 4, pyramid down-sampling of both frames 16, flow up-sampling 20
# Farneback per-pixel counts (rough): polynomial expansion of both frames (poly_n taps,
# separable, 6 coefficients) and per iteration the matrix update, Gaussian window blur of 5
# channels (winsize taps, separable) and the flow solve.
FARNEBACK_ITER_FIXED = 50


def tvl1_gflops_per_pair(params: dict, frame_size) -> float:
    """Estimated GFLOPs of one TV-L1 flow field between two frames of ``frame_size`` (w, h).

    Formula (an **estimate**, the upper bound without early stopping)::

        FLOPs = sum_{s < nscales} N * q^(2 s) * (TVL1_SCALE + warps * (TVL1_WARP
                + outer_iterations * inner_iterations * TVL1_INNER))

    N = w·h, q = scale_step. OpenCV stops the inner loop once the squared update falls below
    epsilon²·N, so a large epsilon runs fewer iterations than this (GUIDE §7: epsilon 0.05 is
    ~10× faster than the default 0.01). With OpenCV's defaults at 340×256 this gives ~17.7
    GFLOPs; 1.56 s single-threaded (GUIDE §7) is ~11 GFLOP/s, plausible for SIMD code, so the
    default run is close to the bound.
    """
    w, h = (int(v) for v in frame_size)
    try:
        q, scales = float(params["scale_step"]), int(params["nscales"])
        warps, inner, outer = int(params["warps"]), int(params["inner_iterations"]), int(params["outer_iterations"])
    except KeyError as err:
        raise InputError(f"TV-L1 parameters lack {err}; the store's flow attrs should record every parameter") from err
    per_px = TVL1_SCALE + warps * (TVL1_WARP + outer * inner * TVL1_INNER)
    area = sum(q ** (2 * s) for s in range(scales))
    return w * h * area * per_px / 1e9


def farneback_gflops_per_pair(params: dict, frame_size) -> float:
    """Estimated GFLOPs of one Farneback field (a rough estimate, see the constants)."""
    w, h = (int(v) for v in frame_size)
    n, win, iters = int(params["poly_n"]), int(params["winsize"]), int(params["iterations"])
    levels, q = int(params["levels"]), float(params["pyr_scale"])
    poly = 2 * 2 * (2 * n + 1) * 6           # two frames, separable, 6 coefficients
    per_iter = 5 * 2 * 2 * win + FARNEBACK_ITER_FIXED
    area = sum(q ** (2 * s) for s in range(levels))   # OpenCV: levels counts the initial image
    return w * h * area * (poly + iters * per_iter) / 1e9


FLOW_ESTIMATORS = {"tvl1": tvl1_gflops_per_pair, "farneback": farneback_gflops_per_pair}


def flow_gflops_per_pair(flow_attrs: dict | None, frame_size) -> float | None:
    """GFLOPs per flow field from the store's ``flow`` attrs; None when there is no flow
    or no estimate for the algorithm (logged: the report then says flow is not counted)."""
    if not flow_attrs:
        return None
    algo = flow_attrs.get("algorithm")
    if algo not in FLOW_ESTIMATORS:
        log.warning("no FLOP estimate for flow algorithm %r: flow cost is not counted", algo)
        return None
    return FLOW_ESTIMATORS[algo](flow_attrs.get("params", {}), frame_size)


# ----------------------------------------------------------------------------- agents

def _lstm_flops(module: nn.LSTM, x: torch.Tensor) -> int:
    """Matrix-product FLOPs of an nn.LSTM forward on ``x`` (B, S, I) or (S, B, I), packed
    sequences excluded: per step, layer and direction 2·4H·(I_l + H)."""
    if not isinstance(x, torch.Tensor):
        raise InputError("LSTM FLOP count needs a padded tensor input, not a PackedSequence")
    steps = x.shape[1] if module.batch_first else x.shape[0]
    batch = x.numel() // (steps * x.shape[-1])
    H, dirs = module.hidden_size, 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        inp = module.input_size if layer == 0 else H * dirs
        total += 2 * 4 * H * (inp + H) * steps * batch * dirs
    return total


def count_gflops(fn, modules=()) -> float:
    """GFLOPs of calling ``fn()``: FlopCounterMode plus the LSTM layers inside ``modules``."""
    extra = [0]
    hooks = [m.register_forward_hook(lambda mod, args, out: extra.__setitem__(0, extra[0] + _lstm_flops(mod, args[0])))
             for root in modules for m in root.modules() if isinstance(m, nn.LSTM)]
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            fn()
    finally:
        for h in hooks:
            h.remove()
    return (counter.get_total_flops() + extra[0]) / 1e9


def selector_gflops(selector, states, m: int | None = None, *, mode: str = "frame", **kwargs) -> float:
    """GFLOPs per video of ``selector.select(states, m, mode=mode)`` — everything the method
    runs to choose and predict at that budget — averaged over the videos of ``states``
    (pass one or a few). kwargs go to ``select`` (e.g. ``flow=`` for rtsae)."""
    module = getattr(selector, "module", None)
    V = states.shape[0]
    run = lambda: selector.select(states, m, mode=mode, **kwargs)  # noqa: E731
    return count_gflops(run, [module] if module is not None else []) / V


def selector_observer(selector) -> str | None:
    """The cheap stream ``selector`` observes, as its checkpoint's store identity records it
    (``framesel train --observer``); None when it was trained without one."""
    return (getattr(selector, "store_identity", None) or {}).get("observer") or None


def selector_seen(selector, T: int, m: int | None) -> int | None:
    """Positions ``selector`` looks at before choosing m of T: dsn's M·N candidates under
    003's test scheme (``clip_scheme``); None (all T) for every other method."""
    scheme = getattr(selector, "clip_scheme", None)
    if scheme is None:
        return None
    M, N = scheme(T, m)
    return M * N


def selector_needs(selector) -> str:
    """What ``selector`` must compute before choosing: one of :data:`NEEDS`."""
    need = getattr(selector, "needs", None)
    if need is None:
        name = getattr(selector, "name", "")
        if name == "dsn":
            cfg = getattr(selector, "config", None)
            need = "observer" if getattr(cfg, "observe", "") == "observer" else "full"
        else:
            need = BASELINE_NEEDS.get(name, "full")
    if need not in NEEDS:
        raise InputError(f"selector {getattr(selector, 'name', selector)!r} declares needs={need!r}; "
                         f"valid: {', '.join(NEEDS)}")
    return need


# ----------------------------------------------------------------------------- per video

@dataclass(frozen=True)
class CostModel:
    """Per-video cost terms of one store. ``backbone``: stream -> GFLOPs per crop forward;
    ``flow_pair``: GFLOPs per flow field (None: not estimated); ``observer``: the cheap
    stream's name (DSN), whose backbone cost is in ``backbone``."""

    T: int
    crops: int
    flow_stack: int
    backbone: dict = field(default_factory=dict)
    flow_pair: float | None = None
    flow_algorithm: str | None = None
    observer: str | None = None

    @classmethod
    def from_attrs(cls, attrs: dict, *, observer: str | None = None) -> "CostModel":
        """From a store's root attrs (``Store.attrs``)."""
        bb = attrs.get("backbone") or {}
        backbone = {s: float(d["gflops_per_frame"]) for s, d in bb.items()
                    if d and d.get("gflops_per_frame") is not None}
        size = attrs.get("frame_size") or (340, 256)
        flow = attrs.get("flow")
        return cls(T=int(attrs["T"]), crops=int(attrs.get("crops", 1)), flow_stack=int(attrs.get("flow_stack", 5) or 0),
                   backbone=backbone, flow_pair=flow_gflops_per_pair(flow, size),
                   flow_algorithm=(flow or {}).get("algorithm"), observer=observer)

    def _stream(self, stream: str) -> float:
        if stream not in self.backbone:
            raise InputError(f"no backbone cost for stream {stream!r}; known: {', '.join(sorted(self.backbone))}")
        return self.backbone[stream]

    def _flow(self, stacks: float) -> float:
        return 0.0 if self.flow_pair is None else stacks * self.flow_stack * self.flow_pair

    def pass_gflops(self, stream: str, positions: float, cells: float) -> dict:
        """Backbone on ``cells`` crops (+ flow on ``positions`` stacks for the flow stream)."""
        flow = self._flow(positions) if stream == "flow" else 0.0
        return {"backbone": self._stream(stream) * cells, "flow": flow}

    def video_gflops(self, stream: str, need: str, *, positions: float, cells: float,
                     agent: float = 0.0, seen: float | None = None) -> dict:
        """Both views for one stream of one video: ``positions`` kept (mean, for flow) and
        ``cells`` kept (mean position·crop cells the backbone must see); ``seen``: positions
        the method looks at before it chooses (None: all T; dsn: its M·N candidates,
        :func:`selector_seen`).

        Returns {"full", "deployable" (GFLOPs), "parts": {view: {backbone, flow, observer,
        agent}}, "flow_counted", "deployable_is_full"}. An ``observer`` need counts the
        observer stream (and its flow, when it is ``flow``) on the seen positions in both
        views: the agent reads it. A ``full`` need computes the stream on the seen positions
        to choose, the kept ones among them.
        """
        if need not in NEEDS:
            raise InputError(f"need must be one of {NEEDS}, not {need!r}")
        T, K = self.T, self.crops
        seen = T if seen is None else min(float(seen), T)
        observed = need == "observer" and self.observer in self.backbone
        full = {**self.pass_gflops(stream, T, T * K), "observer": 0.0, "agent": agent}
        if need == "full" or (need == "observer" and not observed):
            deploy = {**self.pass_gflops(stream, seen, seen * K), "observer": 0.0, "agent": agent}
        else:
            deploy = {**self.pass_gflops(stream, positions, cells), "observer": 0.0, "agent": agent}
        for view in (full, deploy):
            # motion is the mean magnitude of every stack; a flow observer sees every stack it
            # looks at (the kept stacks of a flow stream are among them, computed once)
            if need == "motion":
                view["flow"] = self._flow(T)
            elif observed and self.observer == "flow":
                view["flow"] = max(view["flow"], self._flow(seen))
            if observed:                      # the observer's backbone on every cell it sees
                view["observer"] = self._stream(self.observer) * seen * K
        return _result({"full": full, "deployable": deploy}, self.flow_pair is not None)

    def describe(self) -> dict:
        """What the report prints about the accounting."""
        return {"convention": CONVENTION, "T": self.T, "crops": self.crops, "flow_stack": self.flow_stack,
                "backbone_gflops_per_frame": dict(self.backbone), "flow_algorithm": self.flow_algorithm,
                "flow_gflops_per_pair": self.flow_pair,
                "flow_note": "estimate from the algorithm's parameters and frame size (upper bound "
                             "without early stopping), not a count" if self.flow_pair is not None
                else "flow cost not counted (no flow, or no estimate for the algorithm)",
                "observer": self.observer}


def _result(parts: dict, flow_counted: bool) -> dict:
    total = {view: float(sum(p.values())) for view, p in parts.items()}
    return {**total, "parts": parts, "flow_counted": flow_counted,
            "deployable_is_full": total["deployable"] == total["full"]}


def fuse_gflops(costs: list[dict]) -> dict:
    """Cost of running several streams' selections on one video (two-stream fusion).

    Backbones and agents add up; the flow and the observer are computed once per video and
    shared, so their largest need counts (all T stacks when any stream needs them all).
    """
    if not costs:
        raise InputError("no stream costs to fuse")
    parts = {}
    for view in ("full", "deployable"):
        ps = [c["parts"][view] for c in costs]
        parts[view] = {"backbone": sum(p["backbone"] for p in ps), "agent": sum(p["agent"] for p in ps),
                       "flow": max(p["flow"] for p in ps), "observer": max(p["observer"] for p in ps)}
    return _result(parts, all(c["flow_counted"] for c in costs))
