"""Paired comparisons of a row with its references, and the mean over training seeds.

References of a row at budget m (a variable-m row: at its mean number of kept positions,
rounded, ``uniform_m``), all on the same test videos:

- on the head: ``uniform`` (fields ``vs_uniform_diff``, ``ci_lo``, ``ci_hi``,
  ``mcnemar_p``), ``random``, ``max_response`` and the label ``oracle`` (``vs_<ref>_diff``,
  ``_ci_lo``, ``_ci_hi``, ``_p``), each under the method's own consensus rule
  (``head_consensus``: ``as`` averages probabilities, so its uniform does too; an agent with
  its own classifier is compared with the head's TSN logit mean); a two-stream agent is
  compared with them TSN-fused (1 : 1.5);
- for a learned method, on its own classifier (:mod:`evaluate.methods`): ``same_uniform``
  (uniform-m) and ``same_all`` (every position, no selection);
- ``partner``: its paper's separately trained no-selection model at the same m (``tattn``
  vs ``tattn_noatt``), named in the row's ``partner`` field.

Each reference also leaves its top-1 (``vs_<ref>_top1``), so a row alone shows both sides.
Paired statistics: :func:`evaluate.stats.bootstrap_ci` of the accuracy difference and
:func:`evaluate.stats.mcnemar`'s p.

Seeds (:func:`summarize_seeds`): a method evaluated with several training seeds gets, per
row group, a row with ``seed = "mean"``: metrics and differences as mean ± std (ddof 1)
over the seeds, and each difference's 95% interval from :func:`evaluate.stats.seeds_videos_ci`
(seed and video variance, a t quantile with Welch–Satterthwaite's degrees of freedom: the
two-level bootstrap it replaced covered ~90 % at 3 seeds, benchmarks/seed_coverage.py); its
p-values are null — whether a gain holds is decided on the per-seed tests
(:mod:`evaluate.verdicts`).
"""
from __future__ import annotations

import math

import numpy as np

from evaluate import keys, metrics, stats

HEAD_REFERENCES = ("uniform", "random", "max_response", "oracle")
REFERENCES = HEAD_REFERENCES + ("same_uniform", "same_all", "partner")
TSN_WEIGHTS = (("rgb", 1.0), ("flow", 1.5))


def ref_fields(ref: str) -> tuple[str, str, str, str]:
    """(diff, ci_lo, ci_hi, p) field names of reference ``ref`` in a row."""
    if ref == "uniform":
        return "vs_uniform_diff", "ci_lo", "ci_hi", "mcnemar_p"
    return f"vs_{ref}_diff", f"vs_{ref}_ci_lo", f"vs_{ref}_ci_hi", f"vs_{ref}_p"


def compare(run, method, scores, stream, m, mode, weights, frac) -> dict:
    """The paired fields of one row (see the module docstring) and, under ``_paired``, the
    per-video correctness ``{"self": (V,) bool, ref: (V,) bool}`` the seed mean needs."""
    head_w = weights if weights or stream != "fused" else TSN_WEIGHTS
    m_ref = m if m is not None else max(1, min(run.T, round(frac * run.T)))
    a = run.correct_of(scores)
    out, paired = {"uniform_m": m_ref}, {"self": a}
    rule = method.head_consensus      # the head baselines under the method's own consensus rule
    out["head_consensus"] = rule
    refs = [(r, run.baseline(r, rule), head_w) for r in HEAD_REFERENCES if r != method.name]
    if method.learned:
        refs += [(r, run.reference(method, r), weights) for r in ("same_uniform", "same_all")]
        partner = method.partner
        if partner is not None and _has(partner, stream, weights):
            out["partner"] = partner.label
            refs.append(("partner", partner, weights if stream != "fused" or "fused" not in partner.selectors
                         else None))
    for ref, ref_method, w in refs:
        ref_scores = run.scores(ref_method, stream, m_ref, mode, 0.0, w)
        b = run.correct_of(ref_scores)
        diff, lo, hi = stats.bootstrap_ci(a, b, n=run.cfg.bootstrap, seed=run.cfg.seed)
        f_diff, f_lo, f_hi, f_p = ref_fields(ref)
        out.update({f_diff: diff, f_lo: lo, f_hi: hi, f_p: stats.mcnemar(a, b)[1],
                    f"vs_{ref}_top1": metrics.top_k_accuracy(ref_scores, run.labels, 1)
                    if not run.multilabel else float(b.mean())})
        if run.clusters is not None:
            out.update(keys.cluster_fields(ref, a, b, run.clusters))
        paired[ref] = b
    out["_paired"] = paired
    return out


def _has(method, stream, weights) -> bool:
    if stream != "fused":
        return stream in method.selectors
    return "fused" in method.selectors or (weights is not None and {"rgb", "flow"} <= set(method.selectors))


# ----------------------------------------------------------------------------- seeds

SEED_GROUP_KEYS = ("split", "protocol", "method", "stream", "m", "mode", "alpha", "fusion_weights", "state", "mn")
SEED_MEAN_KEYS = ("top1", "top5", "mean_class", "map", "fraction_kept", "gflops_full", "gflops_deployable",
                  "seconds_full", "seconds_deployable",
                  "uniform_m") + tuple(f"vs_{r}_top1" for r in REFERENCES) + keys.KEY_COLUMNS


def summarize_seeds(rows: list[dict], *, clusters=None) -> list[dict]:
    """``rows`` of one split plus a ``seed = "mean"`` row per group of rows of one method that
    differ only in their seed (two or more seeds); every row's ``_paired`` is dropped.
    ``clusters``: (V, G) source-clip memberships: the means also get shared-clip intervals."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("seed") is not None:
            groups.setdefault(tuple(r.get(k) for k in SEED_GROUP_KEYS), []).append(r)
    means = [_seed_mean(g, clusters) for g in groups.values() if len({r["seed"] for r in g}) > 1]
    for r in rows:
        r.pop("_paired", None)
    return rows + means


def _seed_mean(group: list[dict], clusters=None) -> dict:
    row = {**{k: v for k, v in group[0].items() if k != "_paired"}, "seed": "mean", "num_seeds": len(group),
           "seeds": sorted(r["seed"] for r in group)}
    for k in SEED_MEAN_KEYS + tuple(ref_fields(r)[0] for r in REFERENCES):
        _mean_std(row, k, [r.get(k) for r in group])
    for ref in REFERENCES:
        f_diff, f_lo, f_hi, f_p = ref_fields(ref)
        pairs = [r.get("_paired") or {} for r in group]
        row[f_p] = None
        if row.get(f_diff) is None or not all(ref in p for p in pairs):
            row[f_lo] = row[f_hi] = None
            continue
        a = np.stack([p["self"] for p in pairs])
        b = np.stack([p[ref] for p in pairs])
        _, row[f_lo], row[f_hi] = stats.seeds_videos_ci(a, b)
        if clusters is not None:
            row.update(keys.cluster_fields(ref, a, b, clusters))
    return row


def _mean_std(row: dict, key: str, vals) -> None:
    if any(v is None for v in vals):       # absent (or null) in some seed: no mean
        if key in row:
            row[key] = None
        return
    mean, std = metrics.mean_std(vals)
    row[key], row[f"{key}_std"] = mean, (None if math.isnan(std) else std)


__all__ = ["HEAD_REFERENCES", "REFERENCES", "compare", "ref_fields", "summarize_seeds"]
