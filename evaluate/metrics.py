"""Classification metrics: pure, input-checked functions of score arrays (GUIDE §6.9).

Shapes: N videos, C classes. ``scores`` are (N, C) real numbers (logits, probabilities,
anything where larger means more likely); ``labels`` are (N,) integer class indices in
[0, C); multi-label ``targets`` are (N, C) with entries 0/1.

Ties: when a video's true class ties with others at the top-k boundary, it counts as the
*expected* hit under random tie-breaking (e.g. 1/3 for a three-way tie for top-1). An
argsort-based count would give an all-constant scorer 0 % or 100 % depending on the sort
order; this gives it chance, k/C, which is what a trivial baseline should score. Without
ties (any real-valued model output) this equals the usual count exactly.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from data.errors import InputError


# ----------------------------------------------------------------------------- checks

def _check_scores(scores, name: str = "scores") -> np.ndarray:
    """(N, C) finite float64 copy of ``scores``."""
    arr = np.asarray(scores)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty (N, C) array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{name} hold NaN or infinite values in {bad} of {arr.shape[0]} rows")
    return arr


def _check_labels(labels, num: int, num_classes: int) -> np.ndarray:
    """(N,) int64 labels in [0, C)."""
    arr = np.asarray(labels)
    if arr.shape != (num,):
        raise InputError(f"labels must have shape ({num},) to match the scores, got {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= num_classes:
        raise InputError(f"labels must lie in [0, {num_classes - 1}], got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def _check_k(k, num_classes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_classes:
        raise InputError(f"k must be an integer in [1, {num_classes}] (the number of classes), got {k!r}")
    return int(k)


# ----------------------------------------------------------------------------- single-label

def topk_hits(scores, labels, k: int = 1) -> np.ndarray:
    """(N,) float64 in [0, 1]: whether each video's label is among its top-k scores.

    A tie at the boundary gives the expected hit under random tie-breaking (module doc).
    """
    s = _check_scores(scores)
    y = _check_labels(labels, s.shape[0], s.shape[1])
    k = _check_k(k, s.shape[1])
    true = s[np.arange(len(y)), y][:, None]
    above = (s > true).sum(axis=1)  # classes certainly ranked before the label
    tied = (s == true).sum(axis=1)  # including the label itself
    return np.clip((k - above) / tied, 0.0, 1.0)


def top_k_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction (not %) of videos whose label is in the top-k of (N, C) ``scores``."""
    return float(topk_hits(scores, labels, k).mean())


def per_class_accuracy(scores, labels, num_classes: int | None = None, *, k: int = 1) -> np.ndarray:
    """(C,) float64 top-k accuracy of each class's videos; NaN for classes with none.

    ``num_classes`` defaults to C of ``scores``; if given, it must agree.
    """
    s = _check_scores(scores)
    if num_classes is not None and num_classes != s.shape[1]:
        raise InputError(f"num_classes={num_classes} but scores have {s.shape[1]} columns")
    hits = topk_hits(s, labels, k)
    y = np.asarray(labels).astype(np.int64)
    count = np.bincount(y, minlength=s.shape[1])
    total = np.bincount(y, weights=hits, minlength=s.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mean_class_accuracy(scores, labels, *, k: int = 1) -> float:
    """Mean of :func:`per_class_accuracy` over the classes present in ``labels`` (fraction).

    This is scikit-learn's ``balanced_accuracy_score`` for k=1.
    """
    return float(np.nanmean(per_class_accuracy(scores, labels, k=k)))


def confusion_matrix(scores, labels, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted (argmax) class.

    A tie for the maximum goes to the lowest class index (counts must be whole).
    """
    s = _check_scores(scores)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes != s.shape[1]:
        raise InputError(f"num_classes={num_classes!r} but scores have {s.shape[1]} columns")
    y = _check_labels(labels, s.shape[0], num_classes)
    pred = s.argmax(axis=1)
    flat = np.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


# ----------------------------------------------------------------------------- multi-label

def _check_targets(targets, shape) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != shape:
        raise InputError(f"targets must have the scores' shape {shape}, got {t.shape}")
    if not (t.dtype == bool or np.issubdtype(t.dtype, np.number)) or not np.isin(t, (0, 1)).all():
        raise InputError("targets must be 0/1 (multi-hot)")
    return t.astype(bool)


def average_precision_per_class(scores, targets) -> np.ndarray:
    """(C,) float64 average precision of each class; NaN for classes without a positive.

    AP = sum over score thresholds of (R_n - R_{n-1}) * P_n, without interpolation, with
    tied scores forming one threshold (scikit-learn's ``average_precision_score``).
    """
    s = _check_scores(scores)
    t = _check_targets(targets, s.shape)
    return np.array([_average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])])


def _average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """AP of one (N,) score column against (N,) bool truth."""
    num_pos = int(positive.sum())
    if num_pos == 0:
        return math.nan
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order]
    # last index of each run of equal scores: one threshold per distinct value
    ends = np.r_[np.flatnonzero(np.diff(score) != 0), len(score) - 1]
    tp = np.cumsum(positive)[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(np.r_[0, tp]) / num_pos
    return float((recall_gain * precision).sum())


def mean_average_precision(scores, targets) -> float:
    """Mean AP over the classes with at least one positive in ``targets`` (fraction)."""
    ap = average_precision_per_class(scores, targets)
    if np.isnan(ap).all():
        raise InputError("no class has a positive target: mAP is undefined")
    return float(np.nanmean(ap))


# ----------------------------------------------------------------------------- fusion, splits

def softmax(scores) -> np.ndarray:
    """(N, C) float64 row-wise softmax, shifted by the row maximum for stability."""
    s = _check_scores(scores)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fuse_scores(streams: Mapping[str, np.ndarray], weights: Mapping[str, float], *,
                before_softmax: bool = True) -> np.ndarray:
    """Weighted late fusion of per-stream (N, C) scores into (N, C) float64.

    TSN fuses raw scores before softmax with RGB:flow = 1:1.5 (the default mode); with
    ``before_softmax=False`` softmax probabilities are averaged instead. The weights are
    normalised to sum to 1, so 1:1.5 and 0.4:0.6 give the same array and the fused
    probabilities stay a distribution. Every stream needs a weight and vice versa.
    """
    if not streams:
        raise InputError("no streams to fuse")
    if set(streams) != set(weights):
        raise InputError(f"streams {sorted(streams)} and weights {sorted(weights)} must name the same streams")
    w = {name: float(weights[name]) for name in streams}
    if any(not math.isfinite(v) or v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise InputError(f"weights must be finite, non-negative and not all zero, got {w}")
    arrays = {name: _check_scores(s, f"scores of stream {name!r}") for name, s in streams.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"streams must have one shape, got {shapes}")
    total = sum(w.values())
    fused = np.zeros(next(iter(shapes.values())))
    for name, a in arrays.items():
        fused += (w[name] / total) * (a if before_softmax else softmax(a))
    return fused


def mean_std(values, *, ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation of per-split results, e.g. three split accuracies.

    ``ddof=1`` by default (the sample std): the splits are a sample of possible splits and
    the report asks how much a result varies between them; numpy's default ddof=0 would
    understate that by sqrt(2/3) for three splits. A single value gives std NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise InputError("mean_std needs at least one value")
    if not np.isfinite(v).all():
        raise InputError(f"mean_std got a non-finite value: {v.tolist()}")
    if ddof not in (0, 1):
        raise InputError(f"ddof must be 0 or 1, got {ddof!r}")
    std = float(v.std(ddof=ddof)) if v.size > ddof else math.nan
    return float(v.mean()), std


# ----------------------------------------------------------------------------- key positions (untrimmed)

def _check_masks(kept, key, positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V, T) bool kept and key, (V,) bool positive (default: videos with a key position)."""
    k, y = np.asarray(kept), np.asarray(key)
    if k.ndim != 2 or k.shape != y.shape or k.size == 0:
        raise InputError(f"kept and key must be non-empty (V, T) masks of one shape, got {k.shape} and {y.shape}")
    for name, x in (("kept", k), ("key", y)):
        if not (x.dtype == bool or np.issubdtype(x.dtype, np.number)) or not np.isin(x, (0, 1)).all():
            raise InputError(f"{name} must be a boolean (V, T) mask")
    k, y = k.astype(bool), y.astype(bool)
    pos = y.any(1) if positive is None else np.asarray(positive)
    if pos.shape != (k.shape[0],) or not np.isin(pos, (0, 1)).all():
        raise InputError(f"positive must be a (V,) = ({k.shape[0]},) boolean mask, got shape {pos.shape}")
    pos = pos.astype(bool)
    if not pos.any():
        raise InputError("no positive video: key precision and recall are undefined")
    return k, y, pos


def key_precision(kept, key, positive=None) -> float:
    """Mean over positive videos of the share of their kept positions that are key.

    kept: (V, T) bool positions a method kept; key: (V, T) bool positions inside a target
    segment; positive: (V,) bool videos to average over (default: those with a key position).
    A positive video that kept nothing counts 0. Chance level: :func:`key_fraction`."""
    k, y, pos = _check_masks(kept, key, positive)
    hits, n = (k & y)[pos].sum(1), k[pos].sum(1)
    return float(np.where(n > 0, hits / np.maximum(n, 1), 0.0).mean())


def key_recall(kept, key, positive=None) -> float:
    """Mean over positive videos with a key position of the share of their key positions kept
    (shapes as :func:`key_precision`); positives without one are left out (nothing to find)."""
    k, y, pos = _check_masks(kept, key, positive)
    pos = pos & y.any(1)
    if not pos.any():
        raise InputError("no positive video has a key position: key recall is undefined")
    return float(((k & y)[pos].sum(1) / y[pos].sum(1)).mean())


def key_fraction(key, positive=None) -> float:
    """Mean over positive videos of the share of their positions that are key: the expected
    key precision of positions drawn at random (the chance level). key: (V, T) bool."""
    _, y, pos = _check_masks(np.asarray(key), key, positive)
    return float(y[pos].mean(1).mean())


def position_auc(score, inside) -> float:
    """ROC AUC of a per-position ``score`` separating positions ``inside`` target segments
    from the rest (scikit-learn's roc_auc_score; ties count half). score: any shape of
    finite floats, e.g. (V, T) the head's target-class margin; inside: bool, same shape."""
    from sklearn.metrics import roc_auc_score

    s, y = np.asarray(score, np.float64).ravel(), np.asarray(inside).ravel()
    if s.shape != y.shape or not np.isin(y, (0, 1)).all():
        raise InputError(f"score and inside must be of one shape, inside boolean; got {np.shape(score)} "
                         f"and {np.shape(inside)}")
    if not np.isfinite(s).all():
        raise InputError("score holds NaN or infinite values")
    if y.all() or not y.any():
        raise InputError("position_auc needs positions both inside and outside target segments")
    return float(roc_auc_score(y.astype(bool), s))


# ----------------------------------------------------------------------------- a row's scores

def score_metrics(scores: np.ndarray, labels: np.ndarray, multilabel: bool) -> dict:
    """top1, top5, mean_class, map (fractions) of (V, C) video scores."""
    C = scores.shape[1]
    if multilabel:
        truth = np.asarray(labels) > 0
        order = np.argsort(-scores, axis=1, kind="stable")
        hit = lambda k: float(np.take_along_axis(truth, order[:, :k], 1).any(1).mean())  # noqa: E731
        return {"top1": hit(1), "top5": hit(min(5, C)), "mean_class": None,
                "map": mean_average_precision(scores, truth.astype(np.uint8))}
    return {"top1": top_k_accuracy(scores, labels, 1), "top5": top_k_accuracy(scores, labels, min(5, C)),
            "mean_class": mean_class_accuracy(scores, labels), "map": None}


def correct(scores: np.ndarray, labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """(V,) bool per-video top-1 correctness for the paired tests. A tie for the top counts
    as wrong (a bool cannot hold the 1/n expected hit the accuracy uses)."""
    if multilabel:
        return (np.asarray(labels) > 0)[np.arange(len(scores)), scores.argmax(1)]
    return topk_hits(scores, labels, 1) >= 1.0
