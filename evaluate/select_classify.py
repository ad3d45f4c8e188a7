"""Protocol ``select_classify``: select on one stream, classify every stream at those positions.

What ``framesel predict`` does on new videos, here on cached ones (issue 28), so the two
can be compared video by video. For a method and its **selection stream** s (an agent's own
stream, reading its observer when it has one; a baseline: each stream in turn):

1. **Select** on the centre crop of s only (the cheap pass of ``predict`` computes nothing
   else): ``selector.select`` on the (V, T, 1, ·) centre-crop states, m positions kept;
   ``kept`` is (V, T) bool. With K = 1 this is the method's ordinary selection.
2. **Classify** every stream at the kept positions, all K crops: a stream the method has a
   selector on is scored by that selector's ``video_scores`` (its consensus rule, its own
   classifier if it has one); any other stream by the head under the method's
   ``head_consensus`` (:func:`agents.base.consensus_scores`).
3. **Fuse** the streams' scores before softmax with evaluate's default weights (TSN's
   rgb : flow = 1 : 1.5, :data:`evaluate.pairing.TSN_WEIGHTS`, restricted to the streams
   present); the predicted class is the fused argmax, its ``score`` the fused softmax
   (sigmoid for multi-label) probability of that class.

Departure from the ``fusion`` protocol: there each stream keeps its own selection; here one
selection serves every stream, as it must when the other streams are computed only where
it kept. Costs (:func:`path_costs`): ``full`` is every stream at every cell with all T·L
flow fields; ``deployable`` is what ``predict`` computes — the observed stream's centre crop
at all T positions, every stream's K crops at the kept positions (the observed stream's
again when K > 1), the kept stacks' flow fields and the agent — priced by the store's
:class:`evaluate.compute.CostModel` (GFLOPs and measured seconds per unit);
``benchmarks/predict.py`` measures the seconds for real.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from agents.base import States, consensus_scores
from data.layout import CENTRE_CROP
from evaluate import metrics, stats
from evaluate.compute import selector_observer
from evaluate.methods import MethodFailed, check_selection
from evaluate.pairing import TSN_WEIGHTS

PROTOCOL = "select_classify"
BLOCK_VIDEOS = 64          # videos read and scored at once (streamed states are read per block)


def selection_streams(method, streams) -> list[str]:
    """The streams ``method`` selects on here: a learned method's own (not a two-stream
    "fused" agent: it reads both streams everywhere), a baseline's every stream."""
    return [s for s in method.selectors if s in streams]


def centre_only(states: States) -> States:
    """(V, T, K, ·) in-memory states -> (V, T, 1, ·): the centre crop (data.layout.CENTRE_CROP).
    States of another crop count (an imported store: no extraction crop order to name a
    centre) are returned whole: the selection then sees every crop (row ``observed_crop`` "all")."""
    K = states.features.shape[2]
    if K == 1 or K not in CENTRE_CROP:
        return states
    c = [CENTRE_CROP[K]]
    pick = lambda x: None if x is None else x[:, :, c]  # noqa: E731
    return dataclasses.replace(states, features=pick(states.features), logits=pick(states.logits),
                               observer=pick(states.observer), feature_maps=pick(states.feature_maps))


def kept_positions(selector, observed: States, m) -> torch.Tensor:
    """(V, T) bool: the positions ``selector`` keeps at budget m, seeing only the centre crop
    of ``observed`` (its stream's states, with its observer). MethodFailed when its scores are
    not finite (a diverged agent: evaluate fails its rows, predict its videos)."""
    with torch.no_grad():
        sel = selector.select(centre_only(observed), m)
    check_selection(selector, sel)
    return sel.keep.any(2).cpu()


def fusion_weights(streams, weights=TSN_WEIGHTS) -> dict:
    """{stream: weight} of ``weights`` for the ``streams`` present (one stream alone: weight 1)."""
    present = {s: w for s, w in weights if s in streams}
    return present or {s: 1.0 for s in streams}


def classify_kept(method, states: dict, kept: torch.Tensor, weights=TSN_WEIGHTS,
                  before_softmax: bool = True) -> tuple[np.ndarray, dict]:
    """(V, C) float64 fused scores of every stream at the ``kept`` (V, T) positions, and the
    per-stream (V, C) scores. ``states``: stream -> in-memory States (the method's inputs:
    its observer where it has one); see the module docstring for which classifier scores
    which stream."""
    per = {}
    for stream, st in states.items():
        keep = kept[:, :, None].expand(*st.features.shape[:3]).to(st.logits.device)
        sel = method.selectors.get(stream)
        with torch.no_grad():
            if sel is not None:
                scores = sel.video_scores(st, keep, 0.0)
            else:
                scores = consensus_scores(method.head_consensus, st.logits, keep, 0.0, st.multilabel)
        per[stream] = scores.double().cpu().numpy()
    w = fusion_weights(per, weights)
    fused = metrics.fuse_scores({s: per[s] for s in w}, w, before_softmax=before_softmax)
    return fused, per


def decide(fused: np.ndarray, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(V,) int predicted class (fused argmax) and (V,) float its probability: the fused
    scores' softmax (single-label) or sigmoid (multi-label) at that class."""
    fused = np.asarray(fused, np.float64)
    pred = fused.argmax(1)
    top = fused[np.arange(len(fused)), pred]
    if multilabel:
        return pred, 1.0 / (1.0 + np.exp(-top))
    shifted = fused - fused.max(1, keepdims=True)
    return pred, np.exp(top - fused.max(1)) / np.exp(shifted).sum(1)


def _outcome(run, method, stream: str, m) -> dict:
    """fused (V, C), kept (V, T) bool of ``method`` selecting on ``stream`` at budget m over
    the run's videos, a block of videos at a time."""
    fused, kept = [], []
    streams = list(run.states)
    for start in range(0, run.V, BLOCK_VIDEOS):
        idx = np.arange(start, min(run.V, start + BLOCK_VIDEOS))
        block = {s: run.input(method, s).subset(idx) for s in streams}
        k = kept_positions(method.selectors[stream], block[stream], m)
        fused.append(classify_kept(method, block, k, before_softmax=run.cfg.before_softmax)[0])
        kept.append(k)
    return {"fused": np.concatenate(fused), "kept": torch.cat(kept).numpy()}


def select_classify_rows(run, score_metrics, weights_label):
    """The protocol's rows over ``run`` (evaluate.protocols' run of one split; ``score_metrics``
    and ``weights_label`` are that module's, passed in to keep the import one-way): one per
    method, selection stream and m; each with its paired comparison with uniform under the
    same protocol and, under ``_per_video``, every video's kept positions, class and score."""
    label = weights_label(tuple(fusion_weights(run.states).items()))     # 'rgb:flow = 1:1.5' as fusion's rows
    uniform: dict = {}                      # (stream, m) -> uniform's outcome, the paired reference

    def reference(stream, m):
        if (stream, m) not in uniform:
            uniform[stream, m] = _outcome(run, run.uniform, stream, m)
        return uniform[stream, m]

    for method in run.methods:
        for stream in selection_streams(method, run.states):
            for m in run.ms(method):
                run.show(method, stream)
                plain = method.label == "uniform" and not method.learned
                try:
                    out = reference(stream, m) if plain else _outcome(run, method, stream, m)
                    ref = None if plain else reference(stream, m if m is not None else run.T)
                except MethodFailed as err:        # its rows fail, the report goes on
                    yield {"split": run.split, "protocol": PROTOCOL, "method": method.label, "seed": method.seed,
                           "stream": stream, "m": m, "failed": str(err)}
                    continue
                yield _row(run, method, stream, m, out, ref, label, score_metrics)


def _row(run, method, stream, m, out, ref, label, score_metrics) -> dict:
    """One row (evaluate.protocols.ROW_FIELDS and ``observed_crop``) of an outcome; ``ref``:
    uniform's outcome at the same stream and m (None for uniform itself)."""
    fused, kept = out["fused"], out["kept"]
    pred, score = decide(fused, run.multilabel)
    positions = float(kept.sum(1).mean())
    row = {"split": run.split, "protocol": PROTOCOL, "method": method.label, "classifier": method.classifier,
           "consensus": method.consensus, "seed": method.seed, "stream": stream, "m": m, "mode": "frame",
           "alpha": 0.0, "fusion_weights": label, **score_metrics(fused, run.labels, run.multilabel),
           **path_costs(run, method, stream, m, positions), "fraction_kept": positions / run.T,
           "learned": method.learned, "num_videos": run.V,
           "observed_crop": "centre" if run.K in CENTRE_CROP else "all",
           "vs_uniform_diff": None, "ci_lo": None, "ci_hi": None, "mcnemar_p": None}
    if ref is not None:
        a, b = run.correct_of(fused), run.correct_of(ref["fused"])
        diff, lo, hi = stats.bootstrap_ci(a, b, n=run.cfg.bootstrap, seed=run.cfg.seed)
        row.update(vs_uniform_diff=diff, ci_lo=lo, ci_hi=hi, mcnemar_p=stats.mcnemar(a, b)[1])
    ids = np.asarray(next(iter(run.states.values())).video_ids)
    row["_per_video"] = [{"row": int(ids[v]), "positions": np.flatnonzero(kept[v]).tolist(),
                          "predicted": int(pred[v]), "score": float(score[v])} for v in range(run.V)]
    return row


def path_costs(run, method, stream: str, m, kept: float) -> dict:
    """gflops_/seconds_ full and deployable per video of this protocol (module docstring);
    None where the store recorded no costs. ``kept``: mean positions kept."""
    out = dict.fromkeys(("gflops_full", "gflops_deployable", "seconds_full", "seconds_deployable"))
    c = run.costs
    if c is None:
        return out
    T, K, streams = run.T, run.K, list(run.states)
    observed = selector_observer(method.selectors[stream]) if method.learned else None
    observed = observed if observed in c.backbone else stream
    # (stream, flow stacks, backbone cells) of each view; the observed stream's flow stacks, if
    # it is flow, are the cheap pass's T
    full = [(s, T if s == "flow" else 0, T * K) for s in streams]
    centre = K in CENTRE_CROP            # else the selection observed every crop (centre_only)
    cheap = [(observed, T if observed == "flow" else 0, T if centre else T * K)]
    # K > 1: the observed stream's K crops again at the kept positions (predict recomputes
    # their centre crop with them: at m = T this path costs T crops more than full)
    dear = [(s, kept if s == "flow" and observed != "flow" else 0, kept * K) for s in streams
            if s != observed or (K > 1 and centre)]
    agent = run.agent_gflops(method, stream, m, "frame") if method.learned else 0.0
    priced = lambda units: sum(sum(c.pass_gflops(s, st, ce).values()) for s, st, ce in units)  # noqa: E731
    out["gflops_full"], out["gflops_deployable"] = priced(full), priced(cheap + dear) + agent
    sec = c.seconds
    if sec is not None and all(s in sec["backbone"] for s in streams):
        timed = lambda units: sec["decode"] + sum(  # noqa: E731
            sec["backbone"][s] * ce + (c.fields_for(st) * sec["flow_field"] if st and sec["flow_field"] else 0.0)
            for s, st, ce in units)
        out["seconds_full"], out["seconds_deployable"] = timed(full), timed(cheap + dear)
    return out


__all__ = ["path_costs", "PROTOCOL", "centre_only", "classify_kept", "decide", "fusion_weights", "kept_positions",
           "select_classify_rows", "selection_streams"]
