"""Evaluation protocols: every selection method on the test states, as flat rows.

Input: per-stream test ``States`` (dict stream -> States, the same videos in the same
order) and :class:`Method` s (baselines, and learned agents loaded from checkpoints, each
agent belonging to the stream its checkpoint was trained on). Output: one flat dict per
(split, stream, protocol, method, m, ...) — see :data:`ROW_FIELDS` — accuracies as fractions.
A method whose selection raises or scores NaN (:class:`evaluate.methods.MethodFailed`) gets
failed rows instead: the same keys, no metrics, ``failed`` = the cause.

Protocols (:data:`PROTOCOLS`, in report order): each a function below decorated
``@register_protocol`` (evaluate/protocol_registry.py), its docstring saying what it gives.
Every ``accuracy_vs_m`` row carries its paired comparisons (:mod:`evaluate.pairing`): with
uniform, random and max_response on the head, and, for an agent, with its own classifier on
uniform-m and on every position and with its paper's no-selection partner (agents/papers.py).
Every row names its ``classifier`` ("head" or "own:<agent>") and its training ``seed`` (a
method with several seeds also gets ``seed = "mean"`` rows: mean ± std over the seeds).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from agents.base import States
from data.errors import InputError
from data.record import Record
from evaluate import dsn_protocol, keys, metrics, pairing, select_classify
from evaluate.metrics import correct, score_metrics  # noqa: F401 (the protocols' scoring, re-exported)
from evaluate.compute import (CONVENTION, CostModel, fuse_gflops, selector_gflops, selector_needs,
                              selector_observer, selector_seen)
from evaluate.methods import (Method, MethodFailed, SelectionSummary, agent_label, baseline_method, build_methods,
                              same_classifier_method, select_in_blocks)
from evaluate.pairing import TSN_WEIGHTS, summarize_seeds
from evaluate.protocol_registry import get_protocol, protocol_names, protocol_record, register_protocol

log = logging.getLogger(__name__)

DEFAULT_MS = (4, 8, 12, 16, 20, 25)
DEFAULT_ALPHAS = (0.0, 0.1, 0.2, 0.3)
TATTN_WEIGHTS = (("rgb", 1 / 3), ("flow", 2 / 3))
ROW_FIELDS = ("split", "protocol", "method", "classifier", "consensus", "seed", "stream", "m", "mode", "alpha",
              "fusion_weights", "top1", "top5", "mean_class", "map", "gflops_full", "gflops_deployable",
              "seconds_full", "seconds_deployable", "fraction_kept", "vs_uniform_diff", "ci_lo", "ci_hi", "mcnemar_p", "learned", "num_videos")


@dataclass(frozen=True)
class ProtocolConfig:
    """ms: frame budgets; alphas: weights of dropped frames; fusion: stream weight sets
    (pairs, so the config stays hashable); bootstrap: resamples of the paired CI."""

    ms: tuple = DEFAULT_MS
    alphas: tuple = DEFAULT_ALPHAS
    fusion: tuple = (TSN_WEIGHTS, TATTN_WEIGHTS)
    before_softmax: bool = True
    protocols: tuple = ()          # () = every one of PROTOCOLS, in its order
    bootstrap: int = 2000
    seed: int = 0
    flop_videos: int = 2          # videos the agent FLOP count runs on (then averaged)
    device: str = "cpu"           # where selections run (methods.select_in_blocks); results come back to the CPU

    def __post_init__(self):
        object.__setattr__(self, "protocols", tuple(self.protocols) or PROTOCOLS)
        unknown = set(self.protocols) - set(PROTOCOLS)
        if unknown:
            raise InputError(f"unknown protocols {sorted(unknown)}; available: {', '.join(PROTOCOLS)}")
        if not self.ms or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.ms):
            raise InputError(f"ms must be positive integers, got {self.ms!r}")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise InputError(f"alphas must lie in [0, 1], got {self.alphas!r}")


def weights_label(weights) -> str:
    """'rgb:flow = 1:1.5' — how fusion weights are named in rows and reports."""
    names, values = zip(*weights)
    return f"{':'.join(names)} = {':'.join(f'{v:.3g}' for v in values)}"


class ProtocolRun:
    """Selections, scores and costs of one split, cached by (method, stream, m, mode, alpha).

    Per video it keeps, for each selection, a :class:`SelectionSummary` (class scores and
    counts) and, for each (method, stream) whose selector scores with ``score`` alone, that
    score (T·K float32, reused across budgets, modes and alphas: ``_scores``)."""

    def __init__(self, states: dict, methods, cfg: ProtocolConfig, costs: CostModel | None, split: str,
                 bar=None, clusters=None):
        first = next(iter(states.values()))
        self.states, self.methods, self.cfg, self.costs, self.split = states, methods, cfg, costs, str(split)
        # untrimmed truth (evaluate/keys.py): (V, T) key mask, (V, G) source-clip memberships
        self.key = None if first.key is None else first.key.cpu().numpy()
        self.clusters = clusters
        self.bar, self.protocol = bar, ""
        self.V, self.T, self.K = first.shape[:3]
        self.labels = first.labels.cpu().numpy()
        self.multilabel = bool(first.multilabel)
        self._baselines: dict = {}       # (name, consensus) -> Method: the paired tests' references
        self.uniform = self.baseline("uniform")
        self._sel, self._agent_flops, self._refs, self._scores = {}, {}, {}, {}
        self.failed: dict = {}       # method uid -> MethodFailed, the cause of all its rows

    def baseline(self, name: str, rule: str = "logit_mean") -> Method:
        """The head baseline ``name`` (uniform, random, max_response, oracle) under consensus
        ``rule``, as the paired tests use it (GUIDE §5: trivial baselines beside every agent)."""
        if (name, rule) not in self._baselines:
            self._baselines[name, rule] = baseline_method(name, list(self.states), rule, seed=self.cfg.seed)
        return self._baselines[name, rule]

    def reference(self, method: Method, which: str) -> Method:
        """``method``'s same-classifier baseline (same_uniform, same_all), built once."""
        key = (method.uid, which)
        if key not in self._refs:
            self._refs[key] = same_classifier_method(method, which)
        return self._refs[key]

    def correct_of(self, scores: np.ndarray) -> np.ndarray:
        """(V,) bool top-1 correctness of (V, C) scores on these videos."""
        return correct(scores, self.labels, self.multilabel)

    def show(self, method: "Method", stream: str) -> None:
        """Name the split, protocol, method and stream being evaluated on the progress bar."""
        if self.bar is not None and not self.bar.disable:
            self.bar.set_postfix_str(f"{self.split} · {self.protocol} · {method.label} ({stream})", refresh=False)
            self.bar.update(0)      # redraws at most every mininterval

    def ms(self, method: Method) -> list:
        return [None] if method.variable_m else sorted({min(m, self.T) for m in self.cfg.ms})

    def selection(self, method: Method, stream: str, m, mode="frame", alpha=0.0, *,
                  frame_scores: bool = False) -> SelectionSummary:
        """The method's selection on ``stream`` at (m, mode, alpha), summarised per video
        (class scores, counts and kept positions: what the rows need; ``frame_scores``: also
        the (V, T) crop mean of its scores, for the diagnostics), selected once and cached. The
        (V, T, K) mask and scores are not kept: memory grows by O(V·(C + T)) a selection."""
        key = (method.uid, stream, m, mode, alpha)
        have = self._sel.get(key)
        if method.uid in self.failed:            # one cause for all of a method's rows
            raise self.failed[method.uid]
        if have is None or (frame_scores and have.frame_scores is None):
            try:
                self._sel[key] = self._select(method, stream, m, mode, alpha, frame_scores)
            except MethodFailed as err:
                self.failed[method.uid] = err
                raise
            except Exception as err:   # noqa: BLE001 - a method that raises fails its rows, not the report
                log.warning("%s: its selection raised", method.uid, exc_info=True)
                self.failed[method.uid] = MethodFailed(f"{method.label}: its selection raised "
                                                       f"{type(err).__name__}: {err}")
                raise self.failed[method.uid] from err
        return self._sel[key]

    def _select(self, method: Method, stream: str, m, mode: str, alpha: float, frame_scores: bool):
        sel, kw = method.selectors[stream], {"mode": mode, "alpha": alpha, "device": self.cfg.device,
                                             "summary": True, "frame_scores": frame_scores}
        if stream == "fused":
            return select_in_blocks(sel, self.states["rgb"], m, flow=self.states["flow"], **kw)
        return select_in_blocks(sel, self.input(method, stream), m,
                                scores=self._scores.setdefault((method.uid, stream), {}), **kw)

    def input(self, method: Method, stream: str) -> States:
        """The states ``method`` reads on ``stream``: its own (its observer) or the shared."""
        return method.inputs.get(stream, self.states[stream])

    def scores(self, method, stream, m, mode="frame", alpha=0.0, weights=None) -> np.ndarray:
        """(V, C) float64 video scores; stream "fused" with ``weights`` fuses rgb and flow."""
        if weights is None:
            return self.selection(method, stream, m, mode, alpha).video_scores.double().cpu().numpy()
        per = {s: self.scores(method, s, m, mode, alpha) for s, _ in weights}
        return metrics.fuse_scores(per, dict(weights), before_softmax=self.cfg.before_softmax)

    def kept(self, method, streams, m, mode) -> tuple[float, float, float]:
        """Mean kept positions, cells and the fraction kept over the given streams."""
        sels = [self.selection(method, s, m, mode) for s in streams]
        pos = float(np.mean([x.positions.float().mean() for x in sels]))
        cells = float(np.mean([x.cells.float().mean() for x in sels]))
        return pos, cells, (pos / self.T if mode == "frame" else cells / (self.T * self.K))

    def agent_gflops(self, method: Method, stream: str, m, mode: str) -> float:
        """GFLOPs per video of the method's real select path at budget m (compute.selector_gflops)."""
        key = (method.uid, stream, m, mode)
        if key not in self._agent_flops:
            sel, n = method.selectors[stream], min(self.cfg.flop_videos, self.V)
            idx = np.arange(n)
            if not method.learned:
                self._agent_flops[key] = 0.0
            elif stream == "fused":
                self._agent_flops[key] = selector_gflops(sel, self.states["rgb"].subset(idx), m, mode=mode,
                                                         flow=self.states["flow"].subset(idx))
            else:
                self._agent_flops[key] = selector_gflops(sel, self.input(method, stream).subset(idx), m, mode=mode)
        return self._agent_flops[key]


# ----------------------------------------------------------------------------- rows

def _row(run: ProtocolRun, protocol, method: Method, stream, m, mode="frame", alpha=0.0, weights=None,
         compare=True, **extra) -> dict:
    """One result row; a failed row (``failed``: the cause, no metrics) when a method it
    needs failed (MethodFailed)."""
    ident = {"split": run.split, "protocol": protocol, "method": method.label, "classifier": method.classifier,
             "seed": method.seed, "stream": stream, "m": m, "mode": mode, "alpha": alpha,
             "fusion_weights": weights_label(weights) if weights else None, "learned": method.learned,
             "num_videos": run.V}
    pair = stream == "fused" and weights is not None
    run.show(method, stream)
    try:
        scores = run.scores(method, stream, m, mode, alpha, weights)
        _, _, frac = run.kept(method, ("rgb", "flow") if pair else (stream,), m, mode)
        row = {**ident, "consensus": method.consensus, **score_metrics(scores, run.labels, run.multilabel),
               **_gflops(run, method, stream, m, mode, pair), "fraction_kept": frac,
               "flops_convention": CONVENTION, "vs_uniform_diff": None, "ci_lo": None, "ci_hi": None,
               "mcnemar_p": None, **extra}
        row.update(keys.key_fields(run, method, stream, m, mode, pair))
        if method.note:
            row["note"] = method.note
        if method.learned:
            row.update(budget_marks(run, method, stream, m, mode, weights))
        if compare and method.name not in ("uniform", "random"):
            row.update(pairing.compare(run, method, scores, stream, m, mode, weights, frac))
    except MethodFailed as err:
        return {**ident, "failed": str(err), **extra}
    return row


def budget_marks(run: ProtocolRun, method: Method, stream: str, m, mode: str, weights) -> dict:
    """Rows whose budget is not the method's own (issue 25 item 5): ``trained_m``, the budget
    the agent trained for (as's m, dsn's M) when it is another than the row's, and
    ``equals_uniform`` when its kept positions are uniform-m's in every video (dsn at m >= 13
    of 25 takes every section's only candidate); ``budget_note`` says both in words."""
    sel = next(iter(method.selectors.values()))
    trained = sel.trained_budget() if hasattr(sel, "trained_budget") else None
    out = {"trained_m": trained if trained is not None and m is not None and trained != m else None,
           "equals_uniform": None}
    if m is not None and m < run.T and mode == "frame" and weights is None and stream in run.states:
        mine, uni = run.selection(method, stream, m, mode).kept, run.selection(run.uniform, stream, m, mode).kept
        out["equals_uniform"] = bool(torch.equal(mine, uni))
    notes = ([f"trained at m = {out['trained_m']}"] if out["trained_m"] is not None else []) \
        + (["= uniform"] if out["equals_uniform"] else [])
    out["budget_note"] = ", ".join(notes) or None
    return out


def _gflops(run: ProtocolRun, method: Method, stream: str, m, mode: str, pair: bool) -> dict:
    """GFLOPs and measured seconds per video of one row (compute.CostModel: seconds None
    where the store recorded none): one stream, a fused pair (each stream's own selection),
    or a two-stream agent (one selection, both streams' backbones)."""
    if run.costs is None:
        return {"gflops_full": None, "gflops_deployable": None, "seconds_full": None, "seconds_deployable": None}
    if pair:
        parts = [("rgb", "rgb"), ("flow", "flow")]      # (cost of stream, selection of stream)
    elif stream == "fused":
        parts = [("rgb", "fused"), ("flow", "fused")]
    else:
        parts = [(stream, stream)]
    per, secs = [], []
    for i, (cost_stream, sel_stream) in enumerate(parts):
        pos, cells, _ = run.kept(method, [sel_stream], m, mode)
        agent = run.agent_gflops(method, sel_stream, m, mode) if (sel_stream != "fused" or i == 0) else 0.0
        sel = method.selectors[sel_stream]
        # each agent's own observer stream (none: a dsn without one reads the full pass)
        costs = dataclasses.replace(run.costs, observer=selector_observer(sel)) if method.learned else run.costs
        units = {"positions": pos, "cells": cells, "seen": selector_seen(sel, run.T, m)}
        per.append(costs.video_gflops(cost_stream, selector_needs(sel), agent=agent, **units))
        secs.append(costs.video_seconds(cost_stream, selector_needs(sel), **units))
    c = fuse_gflops(per)
    t = fuse_gflops(secs) if all(secs) else {"full": None, "deployable": None}
    return {"gflops_full": c["full"], "gflops_deployable": c["deployable"], "seconds_full": t["full"],
            "seconds_deployable": t["deployable"]}


def streams_of(method: Method, run: ProtocolRun) -> list[str]:
    return [s for s in method.selectors if s == "fused" or s in run.states]


@register_protocol("accuracy_vs_m", source="000 Table 3, 003 Fig. 4", reads=("ms",))
def _accuracy_vs_m(run: ProtocolRun):
    """Every method on every stream at each m, capped at T (a method that chooses how many it
    keeps, ``variable_m``, once with m = None)."""
    for method in run.methods:
        for stream in streams_of(method, run):
            for m in run.ms(method):
                yield _row(run, "accuracy_vs_m", method, stream, m)


@register_protocol("frame_vs_region", source="000 Table 3", reads=("ms",), needs="K > 1 crops")
def _frame_vs_region(run: ProtocolRun):
    """Frame- and region-based selection over the K crops, for every fixed-m method."""
    if run.K < 2:
        log.info("frame_vs_region skipped: the states have K=1 crop")
        return
    for method in (x for x in run.methods if not x.variable_m):
        for stream in streams_of(method, run):
            for m in run.ms(method):
                for mode in ("frame", "region"):
                    yield _row(run, "frame_vs_region", method, stream, m, mode)


@register_protocol("alpha", source="000 Table 4", reads=("ms", "alphas"))
def _alpha(run: ProtocolRun):
    """Dropped frames weighted by alpha, for the learned agents and uniform."""
    for method in [run.uniform] + [x for x in run.methods if x.learned]:
        for stream in streams_of(method, run):
            for m in run.ms(method):
                for a in run.cfg.alphas:
                    yield _row(run, "alpha", method, stream, m, alpha=float(a), compare=method.learned)


@register_protocol("state_ablation", source="000 Table 2", reads=("ms",), needs="an agent whose config has a state")
def _state_ablation(run: ProtocolRun):
    """Agents whose config has a ``state`` field, each row labelled by it."""
    for method in (x for x in run.methods if "state" in x.config):
        for stream in streams_of(method, run):
            for m in run.ms(method):
                yield _row(run, "state_ablation", method, stream, m, state=method.config["state"])


@register_protocol("dsn_mn", source="003 Fig. 4, Table II", needs="a dsn checkpoint")
def _dsn_mn(run: ProtocolRun):
    """003's test protocol for each dsn checkpoint: its M sections of N clips, at the paper's
    budgets (:mod:`evaluate.dsn_protocol`)."""
    return dsn_protocol.dsn_mn_rows(run, _row, Method)


@register_protocol("fusion", source="TSN's 1 : 1.5, 002's 1/3 : 2/3", reads=("ms", "fusion", "before_softmax"),
                   needs="both rgb and flow")
def _fusion(run: ProtocolRun):
    """Each stream alone and fused with explicit weights, for every method present on both streams."""
    if not {"rgb", "flow"} <= set(run.states):
        log.info("fusion skipped: the states do not hold both rgb and flow")
        return
    for method in (x for x in run.methods if {"rgb", "flow"} <= set(x.selectors)):
        for m in run.ms(method):
            for stream in ("rgb", "flow"):
                yield _row(run, "fusion", method, stream, m)
            for w in run.cfg.fusion:
                yield _row(run, "fusion", method, "fused", m, weights=w)


@register_protocol("select_classify", source="framesel predict", reads=("ms", "before_softmax"))
def _select_classify(run: ProtocolRun):
    """Select on one stream's centre crop, classify every stream at those positions, TSN-fused:
    what ``framesel predict`` computes (:mod:`evaluate.select_classify`)."""
    return select_classify.select_classify_rows(run, score_metrics, weights_label)


PROTOCOLS = protocol_names()


def protocol_records() -> list[Record]:
    """Every protocol's record (data/record.py), in report order, with ProtocolConfig's defaults."""
    defaults = {f.name: getattr(ProtocolConfig(), f.name) for f in dataclasses.fields(ProtocolConfig)}
    return [protocol_record(name, defaults) for name in PROTOCOLS]


def check_states(states: dict) -> None:
    """Raise InputError unless the streams hold the same videos in the same order."""
    if not states:
        raise InputError("no test states")
    ref_name, ref = next(iter(states.items()))
    for name, st in states.items():
        if not isinstance(st, States):
            raise InputError(f"states[{name!r}] is a {type(st).__name__}, not States")
        same = st.shape[:3] == ref.shape[:3] and np.array_equal(np.asarray(st.video_ids), np.asarray(ref.video_ids)) \
            and torch.equal(st.labels.cpu(), ref.labels.cpu())
        if not same:
            raise InputError(f"streams {ref_name!r} and {name!r} do not hold the same videos in the same order "
                             f"(shapes {ref.shape[:3]} vs {st.shape[:3]})")


def run_protocols(states: dict, methods, *, split="1", config: ProtocolConfig = ProtocolConfig(),
                  costs: CostModel | None = None, bar=None, clusters=None) -> list[dict]:
    """Flat result rows of every protocol in ``config.protocols`` for one split.

    states: stream -> States (V, T, K, ·); methods: :class:`Method` s (:func:`build_methods`);
    costs: per-video GFLOPs model, or None to leave the GFLOPs fields null; bar: a tqdm
    bar advanced by one per protocol (and told the method and stream at work), or None;
    clusters: (V, G) source-clip memberships of the videos (untrimmed truth, evaluate/keys.py)
    for a shared-clip interval and p of every paired difference, or None. States with a ``key`` mask
    give every row key precision and recall.
    """
    check_states(states)
    run = ProtocolRun(states, list(methods), config, costs, split, bar, clusters)
    rows = []
    for name in config.protocols:
        run.protocol = name
        rows.extend(get_protocol(name).rows(run))
        if bar is not None:
            bar.update(1)
    failed = [r for r in rows if "failed" in r]
    return summarize_seeds([r for r in rows if "failed" not in r], clusters=clusters) + failed


__all__ = ["PROTOCOLS", "ProtocolConfig", "protocol_records", "Method", "build_methods", "agent_label", "run_protocols",
           "score_metrics", "correct", "weights_label"]
