"""Which differences a report may call significant: one correction over the report's whole
family of verdicts, each verdict held across training seeds.

The family (:func:`verdict_family`): every paired test of a learned method against one of
:data:`VERDICT_REFS` in ``accuracy_vs_m`` — each (method, reference, split, stream, m) cell
is one verdict. A cell's p-value is the largest McNemar p over the method's training seeds
(an intersection-union test: "it gains" must hold for every seed, so no further correction
over seeds is needed), and its direction must agree across the seeds (else p = 1). Holm's
step-down adjustment (:func:`evaluate.stats.holm`) then runs once over every cell of the
report, so a report of 6 agents × 5 budgets × 3 streams × 4 references corrects over all of
them, and says how many. Where the test videos share source clips (``evaluate --truth``:
untrimmed composites) a seed's p is the larger of McNemar's, which takes the videos as
independent, and the shared-clip test's (``vs_<ref>_cluster_p``,
evaluate/stats.seeds_videos_test with the clips): a win must hold under both. A cell is a win (loss) when its adjusted p is below
:data:`SIGNIFICANCE` and every seed's difference is positive (negative).
"""
from __future__ import annotations

from evaluate.pairing import ref_fields
from evaluate.stats import holm

SIGNIFICANCE = 0.05
VERDICT_REFS = ("same_uniform", "uniform", "random", "partner")
REF_WORDS = {"same_uniform": "its own classifier on uniform-m", "uniform": "uniform", "random": "random",
             "max_response": "max_response", "same_all": "its own classifier on all positions"}


def fmt(v) -> str:
    """A value as reports print it: 4 significant digits, '–' for missing, yes/no."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def fmt_m(m) -> str:
    """A budget: its number, or 'var' for a method that chooses how many it keeps."""
    return "var" if m is None else fmt(m)


def summary_split(rows) -> str:
    """Show the mean over splits when there are several, else the only split."""
    splits = {r["split"] for r in rows}
    return "mean" if "mean" in splits else sorted(splits)[0]


def stream_order(stream: str) -> tuple:
    """rgb, flow, fused, then any other stream by name."""
    return ({"rgb": 0, "flow": 1, "fused": 2}.get(stream, 3), stream)


def tested(rows) -> list[dict]:
    """Per-split, per-seed accuracy_vs_m rows of learned methods: the tests verdicts count."""
    return [r for r in rows if r["split"] != "mean" and r.get("seed") != "mean"
            and r["protocol"] == "accuracy_vs_m" and r["learned"] and not r.get("failed")]


def verdict_family(rows) -> dict:
    """The report's family of verdicts (module docstring). Returns {"cells": {(method, ref,
    split, stream, m): {"p": max p over seeds, "adjusted": Holm p, "sign": +1/-1/0,
    "seeds": n}}, "size": number of cells, "seeds": {method: number of seeds}}."""
    per_cell: dict = {}
    seeds: dict = {}
    for r in tested(rows):
        seeds.setdefault(r["method"], set()).add(r.get("seed"))
        for ref in VERDICT_REFS:
            f_diff, _, _, f_p = ref_fields(ref)
            if r.get(f_p) is None or r.get(f_diff) is None:
                continue
            p = max(float(r[f_p]), float(r.get(f"vs_{ref}_cluster_p") or 0.0))
            per_cell.setdefault((r["method"], ref, r["split"], r["stream"], r["m"]), []).append((r[f_diff], p))
    keys = list(per_cell)
    raw = []
    for k in keys:
        got = per_cell[k]
        signs = {(d > 0) - (d < 0) for d, _ in got}
        complete = len(got) == len(seeds[k[0]])
        sign = signs.pop() if len(signs) == 1 and complete else 0
        raw.append((max(p for _, p in got) if sign else 1.0, sign, len(got)))
    adjusted = holm([p for p, _, _ in raw]) if raw else []
    cells = {k: {"p": p, "adjusted": float(a), "sign": s, "seeds": n} for k, (p, s, n), a in zip(keys, raw, adjusted)}
    return {"cells": cells, "size": len(cells), "seeds": {m: len(s) for m, s in seeds.items()}}


def holds(rows, method: str, ref: str, family: dict | None = None) -> dict:
    """Cells where ``method`` beats / loses to ``ref`` under the rule of the module docstring.

    Returns {"wins": {(split, stream, m): Holm-adjusted p}, "losses": {...}, "family": the
    report's number of verdict tests, "seeds": the method's number of seeds}."""
    family = family or verdict_family(rows)
    out = {"wins": {}, "losses": {}, "family": family["size"], "seeds": family["seeds"].get(method, 0)}
    for (meth, r, split, stream, m), c in family["cells"].items():
        if meth != method or r != ref or c["adjusted"] >= SIGNIFICANCE or c["sign"] == 0:
            continue
        out["wins" if c["sign"] > 0 else "losses"][(split, stream, m)] = c["adjusted"]
    return out


def _cells(cells, streams_shown) -> str:
    many_splits = len({c[0] for c in cells}) > 1
    return ", ".join((f"{c[0]}/" if many_splits else "") + (f"{c[1]} " if streams_shown else "") + f"m={fmt_m(c[2])}"
                     for c in sorted(cells, key=lambda c: (c[0], c[1], c[2] is None, c[2] or 0)))


def verdicts(rows, family: dict | None = None) -> list[str]:
    """One sentence per learned method and stream: does it beat the baseline that shares its
    classifier, uniform, random (and its partner), under the rule of the module docstring?"""
    family = family or verdict_family(rows)
    out = []
    mine_all = tested(rows)
    keys = sorted({(r["method"], r["stream"]) for r in mine_all}, key=lambda k: (k[0], stream_order(k[1])))
    for method, stream in keys:
        mine = [r for r in mine_all if (r["method"], r["stream"]) == (method, stream)]
        partner = next((r.get("partner") for r in mine if r.get("partner")), None)
        own = f"its classifier ({mine[0].get('classifier', 'head')})"
        parts = []
        for ref in VERDICT_REFS:
            if ref == "partner" and partner is None:
                continue
            h = holds(rows, method, ref, family)
            name = partner if ref == "partner" else REF_WORDS[ref].replace("its own classifier", own)
            wins = [c for c in h["wins"] if c[1] == stream]
            losses = [c for c in h["losses"] if c[1] == stream]
            parts.append(f"beats {name} significantly at {_cells(wins, False)}" if wins
                         else f"does NOT beat {name} at any m (no significant paired gain)")
            if losses:
                parts.append(f"is significantly worse than {name} at {_cells(losses, False)}")
        n = family["seeds"].get(method, 1)
        seeds = f"{n} training seeds, every one" if n > 1 else "1 training seed"
        out.append(f"**{method}** on {stream} (classifier {mine[0].get('classifier', 'head')}, consensus "
                   f"{mine[0].get('consensus', 'logit_mean')}): " + "; ".join(parts)
                   + f". Holm-corrected over the report's {family['size']} verdict tests, {seeds}.")
    return out


__all__ = ["REF_WORDS", "SIGNIFICANCE", "VERDICT_REFS", "fmt", "fmt_m", "holds", "stream_order", "summary_split",
           "tested", "verdict_family", "verdicts"]
