"""Compute accounting: GFLOPs per video of what really runs (GUIDE §4, §5 "count honestly").

Convention: **FLOPs, not MACs** — one multiply-accumulate is 2 FLOPs, the convention of
``torch.utils.flop_counter.FlopCounterMode`` (which counts matrix products and convolutions
only; element-wise ops are not counted). Every output carries :data:`CONVENTION`; GMACs are
GFLOPs / 2 for the backbone and agent terms.

Terms of one video (T positions, K crops, L flow fields per stack):

- backbone: ``gflops_per_frame`` (store attrs ``backbone[stream]``, counted at extraction
  with FlopCounterMode, head included) × the crops it actually sees;
- flow: GFLOPs per flow field × the fields computed. Per field is what the extraction
  recorded (``cost/flow_gflops`` / ``cost/flow_fields`` of the evaluated videos, priced by the
  flow algorithm's registry entry and labelled there: counted, estimated or upper bound,
  root attr ``cost``); a store made before that record has "not recorded" and counts 0.
  Fields: min(stacks·L, the fields the extraction computed per video) — a full pass computed
  each distinct pair once (fewer than T·L when stacks overlap), a deployed pass its kept
  stacks' L fields each, never more than the full pass;
- agent: FlopCounterMode on the selector's real ``select`` at the row's budget and mode
  (:func:`selector_gflops`): every forward pass it makes (tattn re-runs its model on the
  kept cells, rtsae runs its gate, fusion and classifier, an agent's own classifier), not
  ``score`` alone; plus the analytic count of ``nn.LSTM`` layers, which FlopCounterMode
  does not see on CPU (the fused ``aten._lstm`` op has no FLOP formula: it reports 0).
  Baselines count 0 (no matrix product);
- observer (dsn with a cheap stream): that stream's backbone on the cells it sees (dsn under
  003's test scheme: its M·N candidates of each crop, :func:`selector_seen`), and the flow of
  those stacks when the observer is the flow stream, in both views.

Seconds (:meth:`CostModel.video_seconds`, ``seconds_full`` / ``seconds_deployable`` of a row):
**measured per-unit seconds × units**, from the extraction's ``cost/seconds`` of the evaluated
videos: decode (always the whole video) + flow seconds per computed field × the view's fields
+ each backbone's seconds per crop × the view's crops (an observer stream's too). A
deployable pass was not itself timed; an agent's own selection time is not included (its
GFLOPs are); a store without the record, or without seconds for a stream a view needs, has
none (None). Fusion shares decode and flow, as it shares the flow's GFLOPs.

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

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from data.errors import InputError

log = logging.getLogger(__name__)

NOT_RECORDED = "not recorded"
SECONDS_CONVENTION = ("measured per-unit seconds x units: the extraction's wall seconds per video and stage, "
                      "per computed flow field and per backbone crop, times what the view computes (a "
                      "deployable pass was not itself timed; selection time not included)")
_SHARED = ("flow", "observer", "decode")   # computed once per video when streams are fused
CONVENTION = "GFLOPs per video; FLOPs = 2 x MACs (torch.utils.flop_counter convention)"
NEEDS = ("none", "motion", "observer", "full")

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
    """What ``selector`` must compute before choosing (its declared ``Selector.needs``,
    "full" by default: never undercount): one of :data:`NEEDS`."""
    need = selector.needs
    if need not in NEEDS:
        raise InputError(f"selector {getattr(selector, 'name', selector)!r} declares needs={need!r}; "
                         f"valid: {', '.join(NEEDS)}")
    return need


# ----------------------------------------------------------------------------- per video

@dataclass(frozen=True)
class CostModel:
    """Per-video cost terms of one store's evaluated videos. ``backbone``: stream -> GFLOPs
    per crop forward; ``flow_pair``: GFLOPs per flow field (None: not recorded);
    ``flow_fields``: distinct fields the extraction computed per video (None: not recorded,
    the views then count T·L); ``flow_kind``/``flow_how``: what the flow numbers are;
    ``seconds``: measured per-unit seconds {"decode", "flow_field", "flow_cost", "backbone":
    {stream: per crop}, "per_video": {stage: mean}} or None; ``observer``: the cheap stream's
    name (DSN), whose backbone cost is in ``backbone``."""

    T: int
    crops: int
    flow_stack: int
    backbone: dict = field(default_factory=dict)
    flow_pair: float | None = None
    flow_algorithm: str | None = None
    observer: str | None = None
    flow_fields: float | None = None
    flow_kind: str = NOT_RECORDED
    flow_how: str = ""
    flow_iterations: float | None = None
    seconds: dict | None = None
    videos: int = 0

    @classmethod
    def from_attrs(cls, attrs: dict, *, observer: str | None = None) -> "CostModel":
        """From a store's root attrs (``Store.attrs``) alone: backbones, no per-video record."""
        bb = attrs.get("backbone") or {}
        backbone = {s: float(d["gflops_per_frame"]) for s, d in bb.items()
                    if d and d.get("gflops_per_frame") is not None}
        return cls(T=int(attrs["T"]), crops=int(attrs.get("crops", 1)), flow_stack=int(attrs.get("flow_stack", 5) or 0),
                   backbone=backbone, flow_algorithm=(attrs.get("flow") or {}).get("algorithm"), observer=observer)

    @classmethod
    def from_store(cls, store, rows=None, *, observer: str | None = None) -> "CostModel":
        """From a store and its per-video ``cost/*`` record of ``rows`` (done videos; None:
        every done one): flow GFLOPs and seconds are the evaluated videos'. A store made
        before the record opens as :meth:`from_attrs` ("not recorded")."""
        base = cls.from_attrs(store.attrs, observer=observer)
        stages = store.attrs.get("cost_stages")
        rows = store.done() if rows is None else np.asarray(rows, np.int64)
        if not stages or not store.has("cost/seconds") or not len(rows):
            return base
        rec = {n: store.read_rows(f"cost/{n}", rows).astype(np.float64)
               for n in ("seconds", "flow_gflops", "flow_fields", "flow_iterations")}
        label = (store.attrs.get("cost") or {}).get("flow_gflops") or {}
        fields = rec["flow_fields"].sum()
        its = rec["flow_iterations"][np.isfinite(rec["flow_iterations"])]
        flow = base.flow_algorithm is not None and fields > 0
        return dataclasses.replace(
            base, flow_pair=rec["flow_gflops"].sum() / fields if flow else None,
            flow_fields=rec["flow_fields"].mean() if flow else None, flow_kind=label.get("kind", NOT_RECORDED),
            flow_how=label.get("how", ""), flow_iterations=float(its.mean()) if len(its) else None,
            seconds=_unit_seconds(rec["seconds"], list(stages), fields, len(rows) * base.T * base.crops),
            videos=len(rows))

    def _stream(self, stream: str) -> float:
        if stream not in self.backbone:
            raise InputError(f"no backbone cost for stream {stream!r}; known: {', '.join(sorted(self.backbone))}")
        return self.backbone[stream]

    def _fields(self, stacks: float) -> float:
        """Flow fields computed for ``stacks`` stacks (module docstring)."""
        fields = stacks * self.flow_stack
        return fields if self.flow_fields is None else min(fields, self.flow_fields)

    def fields_for(self, stacks: float) -> float:
        """Flow fields computed for ``stacks`` stacks: L each, at most what extraction computed."""
        return self._fields(stacks)

    def pass_gflops(self, stream: str, positions: float, cells: float) -> dict:
        """Backbone on ``cells`` crops (+ flow on ``positions`` stacks for the flow stream)."""
        flow = self._price_flow(positions, self.flow_pair) if stream == "flow" else 0.0
        return {"backbone": self._stream(stream) * cells, "flow": flow}

    def _price_flow(self, stacks: float, per_field: float | None) -> float:
        return 0.0 if per_field is None or not stacks else self._fields(stacks) * per_field

    def _units(self, stream: str, need: str, positions: float, cells: float, seen) -> dict:
        """What each view computes: {view: {"cells" of ``stream``, flow "stacks",
        "observer_cells"}} (see :meth:`video_gflops`)."""
        if need not in NEEDS:
            raise InputError(f"need must be one of {NEEDS}, not {need!r}")
        T, K = self.T, self.crops
        seen = T if seen is None else min(float(seen), T)
        observed = need == "observer" and self.observer in self.backbone
        everything = need == "full" or (need == "observer" and not observed)
        kept = (seen, seen * K) if everything else (positions, cells)
        views = {}
        for view, (pos, cel) in (("full", (T, T * K)), ("deployable", kept)):
            stacks = pos if stream == "flow" else 0.0
            # motion is the mean magnitude of every stack; a flow observer sees every stack it
            # looks at (the kept stacks of a flow stream are among them, computed once)
            if need == "motion":
                stacks = T
            elif observed and self.observer == "flow":
                stacks = max(stacks, seen)
            views[view] = {"cells": cel, "stacks": stacks, "observer_cells": seen * K if observed else 0.0}
        return views

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
        parts = {}
        for view, u in self._units(stream, need, positions, cells, seen).items():
            parts[view] = {"backbone": self._stream(stream) * u["cells"],
                           "flow": self._price_flow(u["stacks"], self.flow_pair),
                           "observer": self._stream(self.observer) * u["observer_cells"] if u["observer_cells"] else 0.0,
                           "agent": agent}
        return _result(parts, self.flow_pair is not None)

    def video_seconds(self, stream: str, need: str, *, positions: float, cells: float,
                      seen: float | None = None) -> dict | None:
        """Both views in measured seconds (:data:`SECONDS_CONVENTION`), arguments as
        :meth:`video_gflops`: {"full", "deployable", "parts": {view: {decode, backbone, flow,
        observer}}}; None when the store did not record what a view needs."""
        sec = self.seconds
        if sec is None:
            return None
        parts = {}
        for view, u in self._units(stream, need, positions, cells, seen).items():
            crops = {stream: u["cells"], self.observer: u["observer_cells"]}
            if any(n and s not in sec["backbone"] for s, n in crops.items()) or (u["stacks"] and sec["flow_field"] is None):
                return None
            parts[view] = {"decode": sec["decode"], "backbone": sec["backbone"][stream] * u["cells"],
                           "flow": self._price_flow(u["stacks"], sec["flow_field"]),
                           "observer": sec["backbone"][self.observer] * u["observer_cells"] if u["observer_cells"] else 0.0}
        return _result(parts, self.flow_pair is not None)

    def describe(self) -> dict:
        """What the report prints about the accounting."""
        return {"convention": CONVENTION, "T": self.T, "crops": self.crops, "flow_stack": self.flow_stack,
                "backbone_gflops_per_frame": dict(self.backbone), "flow_algorithm": self.flow_algorithm,
                "flow_gflops_per_pair": self.flow_pair, "flow_kind": self.flow_kind, "flow_how": self.flow_how,
                "flow_fields_per_video": self.flow_fields, "flow_iterations_per_field": self.flow_iterations,
                "flow_note": (f"{self.flow_kind}: {self.flow_how}" if self.flow_pair is not None else
                              "flow cost not recorded (no flow, or a store made before the flow cost was "
                              "recorded per video): not counted"),
                "seconds": self.seconds, "seconds_note": SECONDS_CONVENTION if self.seconds else NOT_RECORDED,
                "videos": self.videos, "observer": self.observer}


def _unit_seconds(seconds: np.ndarray, stages: list[str], fields: float, crops: int) -> dict:
    """Per-unit seconds from the (V, S) measured seconds of V videos: decode and flow_cost per
    video, flow per computed field (``fields`` in all), each backbone per crop (``crops``)."""
    total = dict(zip(stages, seconds.sum(0)))
    per_video = {k: v / len(seconds) for k, v in total.items()}
    return {"per_video": per_video, "decode": per_video.get("decode", 0.0),
            "flow_cost": per_video.get("flow_cost", 0.0),
            "flow_field": total["flow"] / fields if fields and "flow" in total else None,
            "backbone": {k.split(":", 1)[1]: v / crops for k, v in total.items() if k.startswith("backbone:")}}


def _result(parts: dict, flow_counted: bool) -> dict:
    total = {view: float(sum(p.values())) for view, p in parts.items()}
    return {**total, "parts": parts, "flow_counted": flow_counted,
            "deployable_is_full": total["deployable"] == total["full"]}


def fuse_gflops(costs: list[dict]) -> dict:
    """Cost of running several streams' selections on one video (two-stream fusion), in
    GFLOPs or seconds (the parts of :meth:`CostModel.video_gflops` or ``video_seconds``).

    Backbones and agents add up; the flow, the observer and the decode are computed once per
    video and shared, so their largest need counts (all T stacks when any stream needs them all).
    """
    if not costs:
        raise InputError("no stream costs to fuse")
    parts = {}
    for view in ("full", "deployable"):
        ps = [c["parts"][view] for c in costs]
        parts[view] = {k: (max if k in _SHARED else sum)(p[k] for p in ps) for k in ps[0]}
    return _result(parts, all(c["flow_counted"] for c in costs))
