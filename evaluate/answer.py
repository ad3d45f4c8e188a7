"""The answer a report leads with: per stream, each agent against the baselines that share
its classifier and against the head's uniform, max_response and oracle, with CIs and a
verdict corrected for the m × stream family and held across training seeds.

The rule (``holds``): for one method and one reference, the family is every paired test of
that method against that reference in ``accuracy_vs_m`` (every split, stream and m) of one
training seed; Holm's step-down adjustment (:func:`evaluate.stats.holm`) is applied within
it. A gain (or a loss) at a (split, stream, m) counts only when it is significant after Holm
at level :data:`SIGNIFICANCE` in the same direction for **every** seed the method was trained
with (an intersection-union test, so no further correction over seeds is needed).
"""
from __future__ import annotations

from evaluate.pairing import ref_fields
from evaluate.stats import holm

SIGNIFICANCE = 0.05
VERDICT_REFS = ("same_uniform", "uniform", "random", "partner")
REF_WORDS = {"same_uniform": "its own classifier on uniform-m", "uniform": "uniform", "random": "random",
             "max_response": "max_response", "same_all": "its own classifier on all positions"}


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def summary_split(rows) -> str:
    """Show the mean over splits when there are several, else the only split."""
    splits = {r["split"] for r in rows}
    return "mean" if "mean" in splits else sorted(splits)[0]


def stream_order(stream: str) -> tuple:
    """rgb, flow, fused, then any other stream by name."""
    return ({"rgb": 0, "flow": 1, "fused": 2}.get(stream, 3), stream)


def _tested(rows) -> list[dict]:
    """Per-split, per-seed accuracy_vs_m rows of learned methods: the tests the rule counts."""
    return [r for r in rows if r["split"] != "mean" and r.get("seed") != "mean"
            and r["protocol"] == "accuracy_vs_m" and r["learned"]]


def holds(rows, method: str, ref: str) -> dict:
    """Cells where ``method`` beats / loses to ``ref`` under the rule of the module docstring.

    Returns {"wins": {(split, stream, m): max Holm-adjusted p over seeds}, "losses": {...},
    "family": tests per seed (the largest), "seeds": number of seeds}."""
    f_diff, _, _, f_p = ref_fields(ref)
    mine = [r for r in _tested(rows) if r["method"] == method and r.get(f_p) is not None]
    by_seed: dict = {}
    for r in mine:
        by_seed.setdefault(r.get("seed"), []).append(r)
    signs: dict = {}          # cell -> [(sign, adjusted p) per seed]
    for seed_rows in by_seed.values():
        for r, p in zip(seed_rows, holm([r[f_p] for r in seed_rows])):
            sign = 0 if p >= SIGNIFICANCE or r[f_diff] == 0 else (1 if r[f_diff] > 0 else -1)
            signs.setdefault((r["split"], r["stream"], r["m"]), []).append((sign, float(p)))
    n_seeds = len(by_seed)
    out = {"wins": {}, "losses": {}, "seeds": n_seeds,
           "family": max((len(v) for v in by_seed.values()), default=0)}
    for cell, got in signs.items():
        if len(got) == n_seeds and all(s == 1 for s, _ in got):
            out["wins"][cell] = max(p for _, p in got)
        elif len(got) == n_seeds and all(s == -1 for s, _ in got):
            out["losses"][cell] = max(p for _, p in got)
    return out


def _cells(cells, streams_shown) -> str:
    many_splits = len({c[0] for c in cells}) > 1
    return ", ".join((f"{c[0]}/" if many_splits else "") + (f"{c[1]} " if streams_shown else "") + f"m={_fmt(c[2])}"
                     for c in sorted(cells, key=lambda c: (c[0], c[1], c[2] is None, c[2] or 0)))


def verdicts(rows) -> list[str]:
    """One sentence per learned method and stream: does it beat the baseline that shares its
    classifier, uniform, random (and its partner), under the rule of the module docstring?"""
    tested = _tested(rows)
    out = []
    keys = sorted({(r["method"], r["stream"]) for r in tested}, key=lambda k: (k[0], stream_order(k[1])))
    for method, stream in keys:
        mine = [r for r in tested if (r["method"], r["stream"]) == (method, stream)]
        partner = next((r.get("partner") for r in mine if r.get("partner")), None)
        parts = []
        for ref in VERDICT_REFS:
            if ref == "partner" and partner is None:
                continue
            h = holds(rows, method, ref)
            own = f"its classifier ({mine[0].get('classifier', 'head')})"
            name = partner if ref == "partner" else REF_WORDS[ref].replace("its own classifier", own)
            wins = [c for c in h["wins"] if c[1] == stream]
            losses = [c for c in h["losses"] if c[1] == stream]
            if wins:
                parts.append(f"beats {name} significantly at {_cells(wins, False)}")
            else:
                parts.append(f"does NOT beat {name} at any m (no significant paired gain)")
            if losses:
                parts.append(f"is significantly worse than {name} at {_cells(losses, False)}")
        h = holds(rows, method, "uniform")
        seeds = f"{h['seeds']} training seeds, every one" if h["seeds"] > 1 else "1 training seed"
        out.append(f"**{method}** on {stream} (classifier {mine[0].get('classifier', 'head')}): " + "; ".join(parts)
                   + f". Holm-corrected over its {h['family']} m × stream tests per reference, {seeds}.")
    return out


# ----------------------------------------------------------------------------- table

ANSWER_HEADER = ("agent", "classifier", "seeds", "m", "top-1", "no selection (same classifier)",
                 "same classifier, uniform-m", "Δ vs same-classifier uniform-m [95% CI]", "uniform",
                 "Δ vs uniform [95% CI]", "max_response", "oracle", "verdict")


def _pm(row, key) -> str:
    v, sd = row.get(key), row.get(f"{key}_std")
    if v is None:
        return "–"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _delta(row, ref) -> str:
    f_diff, f_lo, f_hi, _ = ref_fields(ref)
    if row.get(f_diff) is None:
        return "–"
    ci = f" [{row[f_lo]:+.3f}, {row[f_hi]:+.3f}]" if row.get(f_lo) is not None else ""
    return f"{row[f_diff]:+.3f}{ci}"


def _shown(rows, split) -> list[dict]:
    """accuracy_vs_m rows of ``split`` one per (method, stream, m): a method's seed mean when
    it has several seeds, else its only row."""
    acc = [r for r in rows if r["protocol"] == "accuracy_vs_m" and r["split"] == split]
    multi = {r["method"] for r in acc if r.get("seed") == "mean"}
    return [r for r in acc if (r.get("seed") == "mean") == (r["method"] in multi)]


def _cell_verdict(held, method, cell, partner, splits) -> str:
    """Words for one (split, stream, m) cell; split "mean" needs the result in every split."""
    words = []
    for ref, short in (("same_uniform", "same-classifier uniform-m"), ("uniform", "uniform"), ("partner", partner)):
        if ref == "partner" and partner is None:
            continue
        h = held(method, ref)
        where = splits if cell[0] == "mean" else [cell[0]]
        if all((s, *cell[1:]) in h["wins"] for s in where):
            words.append(f"beats {short}")
        elif all((s, *cell[1:]) in h["losses"] for s in where):
            words.append(f"worse than {short}")
    return "; ".join(words) or "no significant difference"


def answer_tables(rows) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, body) per stream: every agent (best first: highest mean top-1 over its
    budgets; the best marked) at each m, against its same-classifier baselines and the
    head's uniform, max_response and oracle at the same m; strings, ready to print."""
    split = summary_split(rows)
    shown = _shown(rows, split)
    splits = sorted({r["split"] for r in _tested(rows)})
    memo: dict = {}

    def held(method, ref):
        if (method, ref) not in memo:
            memo[method, ref] = holds(rows, method, ref)
        return memo[method, ref]

    oracle = {(r["stream"], r["m"]): r for r in shown if r["method"] == "oracle"}
    out = []
    for stream in sorted({r["stream"] for r in shown if r["learned"]}, key=stream_order):
        agents = [r for r in shown if r["learned"] and r["stream"] == stream]
        mean_top1 = {m: sum(r["top1"] for r in agents if r["method"] == m) / sum(r["method"] == m for r in agents)
                     for m in {r["method"] for r in agents}}
        order = sorted(mean_top1, key=lambda m: (-mean_top1[m], m))
        body = []
        for rank, method in enumerate(order):
            for r in sorted((r for r in agents if r["method"] == method), key=lambda r: (r["m"] is None, r["m"] or 0)):
                partner = r.get("partner")
                orc = oracle.get((stream, r["m"] if r["m"] is not None else round(r.get("uniform_m") or 0)))
                seeds = r.get("num_seeds") or 1
                best = rank == 0 and not any(b[0].startswith(method) for b in body)
                body.append([method + (" (best)" if best else ""), r.get("classifier", "head"), str(seeds),
                             _fmt(r["m"]) if r["m"] is not None else f"var ({_fmt(r.get('uniform_m'))})",
                             _pm(r, "top1"), _pm(r, "vs_same_all_top1"), _pm(r, "vs_same_uniform_top1"),
                             _delta(r, "same_uniform"), _pm(r, "vs_uniform_top1"), _delta(r, "uniform"),
                             _pm(r, "vs_max_response_top1"), _pm(orc, "top1") if orc else "–",
                             _cell_verdict(held, method, (split, stream, r["m"]), partner, splits)
                             + (f" (vs {partner}: {_delta(r, 'partner')})" if partner else "")])
        out.append((f"Answer: stream {stream} (split {split})", list(ANSWER_HEADER), body))
    return out


__all__ = ["SIGNIFICANCE", "answer_tables", "holds", "summary_split", "verdicts"]
