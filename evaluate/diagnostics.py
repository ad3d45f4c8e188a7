"""The report's diagnostic inputs: selection scores, fraction kept, importance of sample
videos, training histories and per-class gains over the same classifier on uniform-m."""
from __future__ import annotations

import numpy as np

from evaluate import metrics
from evaluate.methods import MethodFailed
from evaluate.protocols import ProtocolConfig, ProtocolRun, streams_of, check_states


def collect_diagnostics(states: dict, methods, *, m: int = 12, sample: int = 4, thumbnails=None,
                        classes=None, seed: int = 0) -> dict:
    """Inputs of the report's diagnostic sections, at budget m (variable-m methods: None).

    Returns {"m", "classes", "scores": key -> (V·T,) float32 selection scores (crop mean),
    "fraction_kept": key -> (V,) float, "importance": key -> (n, T) scores of the sample
    videos, "histories": key -> agent.history, "per_class": [{method, m, acc (C,), uniform
    (C,) (the agent's own classifier on uniform-m), classifier}] for agents (single-label
    only), "sample_videos": (n,) rows, "thumbnails": (n, T, h, w, 3) uint8 of those videos
    or None}; key = "label (stream)"; a method with several seeds shows its first.
    ``thumbnails``: (V, T, h, w, 3) uint8 of all the test videos (an array, or the store's
    rows as a data.store_rows.StoreRows view, of which only the sample is read), or None.
    """
    check_states(states)
    run = ProtocolRun(states, list(methods), ProtocolConfig(), None, "diagnostics")
    m = min(m, run.T)
    C = next(iter(states.values())).shape[4]
    idx = np.sort(np.random.default_rng(seed).choice(run.V, size=min(sample, run.V), replace=False))
    out = {"m": m, "classes": list(classes) if classes is not None else [str(c) for c in range(C)],
           "scores": {}, "fraction_kept": {}, "importance": {}, "histories": {}, "per_class": [],
           "sample_videos": idx.tolist(),
           "thumbnails": None if thumbnails is None else np.asarray(thumbnails[idx])}
    shown = set()
    for method in run.methods:
        if method.label in shown:       # one seed of a method with several: the first
            continue
        shown.add(method.label)
        for stream in streams_of(method, run):
            try:
                _add(out, run, method, stream, None if method.variable_m else m, idx, C)
            except MethodFailed:        # its rows are failed rows naming the cause; nothing to show
                continue
    return out


def _add(out: dict, run: ProtocolRun, method, stream: str, mm, idx, C: int) -> None:
    """One method's diagnostics on ``stream`` at budget ``mm`` into ``out``."""
    key, sel = f"{method.label} ({stream})", run.selection(method, stream, mm, frame_scores=True)
    s = sel.frame_scores.numpy()
    out["scores"][key] = s.ravel()
    out["fraction_kept"][key] = sel.num_kept.cpu().numpy() / run.T
    out["importance"][key] = s[idx]
    if not method.learned:
        return
    if getattr(method.selectors[stream], "history", None):
        out["histories"][key] = list(method.selectors[stream].history)
    if not run.multilabel:
        _, _, frac = run.kept(method, [stream], mm, "frame")
        ref_m = mm if mm is not None else max(1, min(run.T, round(frac * run.T)))
        acc = metrics.per_class_accuracy(run.scores(method, stream, mm), run.labels, C)
        ref = run.scores(run.reference(method, "same_uniform"), stream, ref_m)
        uni = metrics.per_class_accuracy(ref, run.labels, C)
        out["per_class"].append({"method": key, "m": mm, "acc": acc, "uniform": uni,
                                 "classifier": method.classifier})


__all__ = ["collect_diagnostics"]
