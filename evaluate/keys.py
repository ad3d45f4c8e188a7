"""Untrimmed videos in evaluate (``framesel evaluate --truth FILE``): the key mask of each
test video, the source clips it shares with others, the key columns of each row and the
report's truth facts.

- **Key mask** (V, T) bool: positions inside a segment of the video's class
  (data/truth.py; inside = the position's ``frame_index``, its RGB frame and the first frame
  of its flow stack). It becomes ``States.key``: the ``key_oracle`` baseline reads it.
- **Positives** for the key columns: the videos with at least one key position (a positive
  whose target segments fall between positions has nothing to find; the meta counts them).
- **Row columns**: ``key_precision`` (share of the kept positions that are key, mean over
  positives) and ``key_recall``; a fused pair's kept positions are those kept on either
  stream. Chance level: the meta's ``key_fraction``.
- **Clusters**: (V, G) source-clip memberships; every paired difference also gets an
  interval and a p-value robust to the clips videos share (evaluate/stats.seeds_videos_test
  with ``members``: videos sharing a clip may be dependent, the rest independent),
  ``vs_<ref>_cluster_ci_lo``/``_hi``/``_p``, in the rows and the seed means. The verdicts
  (evaluate/verdicts.py) then need both this p and McNemar's below the line.
- **Head AUC**: per stream (and TSN-fused 1 : 1.5), the ROC AUC of each position's
  target-class margin (crop-mean logit of the target class minus the best other class)
  inside vs outside key positions, over every position of every test video; below ~0.8 the
  head barely tells the action's frames from the rest.
"""
from __future__ import annotations

import numpy as np
import torch

from data.errors import InputError
from data.store_rows import is_streamed
from data.truth import key_mask, memberships, read_truth
from evaluate import metrics, stats

KEY_COLUMNS = ("key_precision", "key_recall")
TSN_FUSION = (("rgb", 1.0), ("flow", 1.5))


def load_truth(store, rows, path) -> dict:
    """The truth of the store's ``rows``: ``key`` (V, T) bool, ``members`` (V, G) int32,
    ``sources`` (G,) clip names, ``file`` and ``sha256``. InputError when the truth does
    not fit the store (a video without an entry, another frame count, an index outside)."""
    truth = read_truth(path)
    paths = [store.paths[i] for i in rows]
    key = key_mask(truth, paths, store.labels[rows], store.attrs.get("classes", []),
                   store.read_rows("frame_index", rows), store.read_rows("videos/num_frames", rows))
    members, sources = memberships(truth, paths)
    return {"key": key, "members": members, "sources": sources, "file": str(path), "sha256": truth.sha256}


def with_key(states: dict, key: np.ndarray) -> dict:
    """stream -> States with ``key`` set (the same (V, T) mask on every stream)."""
    import dataclasses

    return {s: dataclasses.replace(st, key=torch.from_numpy(np.asarray(key, bool))) for s, st in states.items()}


def key_fields(run, method, stream, m, mode, pair: bool) -> dict:
    """``key_precision`` and ``key_recall`` of one row (module docstring); {} without truth."""
    if run.key is None:
        return {}
    positive = run.key.any(1)
    if not positive.any():
        return dict.fromkeys(KEY_COLUMNS)
    streams = ("rgb", "flow") if pair else (stream,)
    kept = np.zeros_like(run.key)
    for s in streams:
        kept |= run.selection(method, s, m, mode).kept.numpy()
    return {"key_precision": metrics.key_precision(kept, run.key, positive),
            "key_recall": metrics.key_recall(kept, run.key, positive)}


def cluster_fields(ref: str, a, b, members) -> dict:
    """``vs_<ref>_cluster_ci_lo``/``_hi``/``_p`` of per-video correctness a, b ((N,) or (S, N))
    with the videos' (N, G) source-clip ``members``."""
    _, lo, hi, p = stats.seeds_videos_test(a, b, members=members)
    return {f"vs_{ref}_cluster_ci_lo": lo, f"vs_{ref}_cluster_ci_hi": hi, f"vs_{ref}_cluster_p": p}


def _frame_logits(st) -> np.ndarray:
    """(V, T, C) float64 crop-mean per-frame logits of States ``st``."""
    x = st.logits.numpy(np.arange(len(st.logits))) if is_streamed(st.logits) else st.logits.cpu().numpy()
    return np.asarray(x, np.float64).mean(axis=2)


def target_margin(logits: np.ndarray, key: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(margin, where): (V, T) target-class margin and the (V, T) bool positions it is
    defined on. The target is the class of the videos with key positions when they share
    one (every position of every video counts); else each such video's own class (only
    those videos count)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError("the head's key AUC needs single-label videos")
    classes = np.unique(labels[key.any(1)])
    target = np.full(len(labels), classes[0]) if len(classes) == 1 else labels
    where = np.ones_like(key) if len(classes) == 1 else np.repeat(key.any(1)[:, None], key.shape[1], 1)
    own = np.take_along_axis(logits, target[:, None, None].repeat(logits.shape[1], 1), 2)[..., 0]
    others = logits.copy()
    np.put_along_axis(others, target[:, None, None].repeat(logits.shape[1], 1), -np.inf, 2)
    return own - others.max(axis=2), where


def head_auc(states: dict, key: np.ndarray) -> dict:
    """stream -> AUC of the target-class margin inside vs outside key positions (and
    ``fused``, TSN 1 : 1.5 on the logits, when rgb and flow are there)."""
    first = next(iter(states.values()))
    labels = first.labels.cpu().numpy()
    logits = {s: _frame_logits(st) for s, st in states.items()}
    if {"rgb", "flow"} <= set(logits):
        logits["fused"] = sum(w * logits[s] for s, w in TSN_FUSION) / sum(w for _, w in TSN_FUSION)
    out = {}
    for s, x in logits.items():
        margin, where = target_margin(x, key, labels)
        inside = key[where]
        out[s] = metrics.position_auc(margin[where], inside) if inside.any() and not inside.all() else None
    return out


def truth_meta(truth: dict, states: dict) -> dict:
    """The report's truth facts for one split: file, sha256, positives, the key fraction
    (chance level of key precision), source clips and their reuse, the head's AUC."""
    key = truth["key"]
    positive = key.any(1)
    labels = next(iter(states.values())).labels.cpu().numpy()
    reuse = truth["members"].sum(0)
    return {"file": truth["file"], "sha256": truth["sha256"], "num_videos": int(len(key)),
            "positives_with_key": int(positive.sum()),
            "videos_without_key": int((~positive).sum()),
            "labelled_classes": {int(c): int((labels == c).sum()) for c in np.unique(labels)},
            "key_fraction": metrics.key_fraction(key, positive) if positive.any() else None,
            "num_source_clips": int(len(truth["sources"])),
            "reuse": {s: int(c) for s, c in zip(truth["sources"], reuse)},
            "reuse_range": [int(reuse.min()), int(reuse.max())], "head_auc": head_auc(states, key),
            "intervals": "shared-clip-robust t intervals and p-values (evaluate/stats.seeds_videos_test with the "
                         "source-clip memberships) in the vs_<ref>_cluster_ci_lo/_hi/_p fields; ci_lo/ci_hi "
                         "stay the paired video bootstrap (seed means: the seeds-and-videos t interval)"}


def truth_section(rows: list[dict], meta: dict) -> tuple[list[str], list[str], list[list]] | None:
    """The report's "Key positions" section: (lines, header, body), or None without truth.
    Lines: per split the key fraction (chance level of key precision), positives, reuse and
    the head's AUC; the table: accuracy_vs_m rows of each method (seed means where there
    are several seeds) with key precision and recall and the difference from uniform with
    both intervals (videos independent; videos sharing a clip dependent)."""
    truth = meta.get("truth")
    if not truth:
        return None
    lines = []
    for split, t in truth.items():
        auc = ", ".join(f"{s} {v:.3f}" if v is not None else f"{s} -" for s, v in t["head_auc"].items())
        lines.append(f"split {split}: {t['positives_with_key']} of {t['num_videos']} videos have key positions; "
                     f"key fraction (chance level of key precision) {t['key_fraction']:.3f}; "
                     f"{t['num_source_clips']} source clips, each in {t['reuse_range'][0]}-{t['reuse_range'][1]} "
                     f"videos; head AUC of the target margin inside vs outside key positions: {auc}")
    header = ["split", "stream", "method", "seed", "m", "top1", "key_precision", "key_recall", "vs_uniform_diff",
              "video CI", "cluster CI"]
    body = []
    for r in rows:
        if r.get("protocol") != "accuracy_vs_m" or r.get("key_precision") is None or r.get("split") == "mean":
            continue
        if r.get("seed") not in (None, "mean"):
            continue
        ci = lambda lo, hi: None if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"  # noqa: E731
        body.append([r["split"], r["stream"], r["method"], r.get("seed"), r["m"], r["top1"], r["key_precision"],
                     r["key_recall"], r.get("vs_uniform_diff"), ci(r.get("ci_lo"), r.get("ci_hi")),
                     ci(r.get("vs_uniform_cluster_ci_lo"), r.get("vs_uniform_cluster_ci_hi"))])
    return lines, header, body


__all__ = ["KEY_COLUMNS", "cluster_fields", "head_auc", "key_fields", "load_truth", "target_margin", "truth_meta",
           "truth_section", "with_key"]
