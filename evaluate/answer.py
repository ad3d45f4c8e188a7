"""The answer a report leads with, read in 30 seconds: per stream one table (method × m, the
best marked, each agent's paired verdict against the baseline that shares its classifier,
with its CI), one paragraph of findings; then, as details, each agent against every
reference (:func:`detail_tables`). Verdicts follow :mod:`evaluate.verdicts` (one Holm
correction over the report's whole family, held across training seeds).
"""
from __future__ import annotations

from evaluate.pairing import ref_fields
from evaluate.verdicts import fmt, fmt_m, holds, stream_order, summary_split, tested, verdict_family

LEGEND = ("Cells: top-1 (± std over training seeds) · Δ against the agent's own classifier on the evenly "
          "spaced m positions, with its 95% interval · ▲ / ▼ significantly better / worse after Holm over the "
          "report's {size} verdict tests, in every training seed · ★ the best agent at that m · "
          "† trained for another budget (the number follows) · =U kept exactly uniform-m's positions in every "
          "video. Reference rows are the head's baselines under the consensus rule named beside them "
          "(each agent's Δ and verdict use its own rule); 'oracle (label)' cheats with the true class.")


def shown_rows(rows, split) -> list[dict]:
    """accuracy_vs_m rows of ``split`` one per (method, stream, m): a method's seed mean when
    it has several seeds, else its only row."""
    acc = [r for r in rows if r["protocol"] == "accuracy_vs_m" and r["split"] == split and not r.get("failed")]
    multi = {r["method"] for r in acc if r.get("seed") == "mean"}
    return [r for r in acc if (r.get("seed") == "mean") == (r["method"] in multi)]


def _pm(row, key) -> str:
    v, sd = (row or {}).get(key), (row or {}).get(f"{key}_std")
    if v is None:
        return "–"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _delta(row, ref) -> str:
    f_diff, f_lo, f_hi, _ = ref_fields(ref)
    if row.get(f_diff) is None:
        return "–"
    ci = f" [{row[f_lo]:+.3f}, {row[f_hi]:+.3f}]" if row.get(f_lo) is not None else ""
    return f"{row[f_diff]:+.3f}{ci}"


class _Held:
    """holds() of every (method, reference), computed once from one family."""

    def __init__(self, rows, family):
        self.rows, self.family, self.memo = rows, family, {}
        self.splits = sorted({r["split"] for r in tested(rows)})

    def __call__(self, method, ref) -> dict:
        if (method, ref) not in self.memo:
            self.memo[method, ref] = holds(self.rows, method, ref, self.family)
        return self.memo[method, ref]

    def sign(self, method, ref, cell) -> int:
        """+1 / -1 when ``method`` beats / loses to ``ref`` at cell (split, stream, m); split
        "mean" needs it in every split."""
        h = self(method, ref)
        where = self.splits if cell[0] == "mean" else [cell[0]]
        if where and all((s, *cell[1:]) in h["wins"] for s in where):
            return 1
        if where and all((s, *cell[1:]) in h["losses"] for s in where):
            return -1
        return 0


def _agent_cell(r, held, split, best) -> str:
    cell = _pm(r, "top1")
    if r["m"] is None:
        cell += f" (keeps {fmt(r.get('uniform_m'))})"
    cell += f" · Δ {_delta(r, 'same_uniform')}"
    sign = held.sign(r["method"], "same_uniform", (split, r["stream"], r["m"]))
    marks = ({1: " ▲", -1: " ▼"}.get(sign, "") + (" ★" if best else "")
             + (f" †{r['trained_m']}" if r.get("trained_m") is not None else "")
             + (" =U" if r.get("equals_uniform") else ""))
    return cell + marks


REFERENCE_ROWS = (("uniform", "uniform"), ("max_response", "max_response"), ("oracle", "oracle (label)"))


def answer_tables(rows, family: dict | None = None) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, body) per stream: each agent (best first: highest mean top-1 over its
    budgets) by budget m, then the head's uniform, max_response and label oracle under each
    consensus rule the agents use; strings, ready to print."""
    split = summary_split(rows)
    shown = shown_rows(rows, split)
    held = _Held(rows, family or verdict_family(rows))
    out = []
    for stream in sorted({r["stream"] for r in shown if r["learned"]}, key=stream_order):
        agents = [r for r in shown if r["learned"] and r["stream"] == stream]
        ms = sorted({r["m"] for r in agents}, key=lambda m: (m is None, m or 0))
        top = {m: max((r["top1"] for r in agents if r["m"] == m), default=None) for m in ms}
        mean = {meth: sum(r["top1"] for r in agents if r["method"] == meth) / sum(r["method"] == meth for r in agents)
                for meth in {r["method"] for r in agents}}
        body = []
        for meth in sorted(mean, key=lambda x: (-mean[x], x)):
            mine = {r["m"]: r for r in agents if r["method"] == meth}
            first = next(iter(mine.values()))
            body.append([meth, f"{first.get('classifier', 'head')}, {first.get('consensus', 'logit_mean')}",
                         str(first.get("num_seeds") or 1)]
                        + [_agent_cell(mine[m], held, split, mine[m]["top1"] == top[m] and m is not None)
                           if m in mine else "" for m in ms])
        for rule in sorted({r.get("head_consensus") or "logit_mean" for r in agents}):
            by_m = {m: next((r for r in agents if r["m"] == m and (r.get("head_consensus") or "logit_mean") == rule),
                            None) for m in ms}
            for ref, name in REFERENCE_ROWS:
                body.append([name, f"head, {rule}", "–"]
                            + [_pm({"top1": (by_m[m] or {}).get(f"vs_{ref}_top1")}, "top1") if m is not None else ""
                               for m in ms])
        out.append((f"Answer: stream {stream} (split {split})", ["method", "classifier, consensus", "seeds"]
                    + [f"m={fmt_m(m)}" for m in ms], body))
    return out


def findings(rows, family: dict | None = None, chance: float | None = None) -> str:
    """One paragraph: how many verdicts found a gain, and per stream the best agent beside
    uniform, the label oracle and the floor max(chance, random, uniform) its gain is over."""
    family = family or verdict_family(rows)
    split = summary_split(rows)
    shown = shown_rows(rows, split)
    held = _Held(rows, family)
    agents = [r for r in shown if r["learned"]]
    if not agents:
        return "No learned agent was evaluated: the report holds baselines only."
    wins = {k for k, c in family["cells"].items() if c["adjusted"] < 0.05 and c["sign"] > 0}
    losses = {k for k, c in family["cells"].items() if c["adjusted"] < 0.05 and c["sign"] < 0}
    words = [f"Of the report's {family['size']} verdict tests (Holm, every training seed), {len(wins)} find a "
             f"significant gain and {len(losses)} a significant loss."]
    for stream in sorted({r["stream"] for r in agents}, key=stream_order):
        mine = [r for r in agents if r["stream"] == stream and r["m"] is not None]
        if not mine:
            continue
        b = max(mine, key=lambda r: r["top1"])
        floor = max(v for v in (chance, b.get("vs_random_top1"), b.get("vs_uniform_top1")) if v is not None)
        sign = held.sign(b["method"], "same_uniform", (split, stream, b["m"]))
        verdict = {1: "significantly above", -1: "significantly below"}.get(sign, "not significantly different from")
        words.append(f"On {stream}, the best agent is {b['method']} at m={b['m']}: top-1 {b['top1']:.3f}, "
                     f"{b['top1'] - floor:+.3f} over the best trivial level {floor:.3f} "
                     f"(max of chance{'' if chance is None else f' {chance:.3f}'}, random, uniform), "
                     f"{verdict} its own classifier on uniform-m ({_delta(b, 'same_uniform')}); the label oracle "
                     f"reaches {fmt(b.get('vs_oracle_top1'))}.")
    if not wins:
        words.append("No agent beats any of its references at any budget: on this data, choosing frames "
                     "adds nothing measurable over evenly spaced ones.")
    return " ".join(words)


DETAIL_HEADER = ("agent", "classifier", "seeds", "m", "top-1", "no selection (same classifier)",
                 "same classifier, uniform-m", "Δ vs same-classifier uniform-m [95% CI]", "uniform",
                 "Δ vs uniform [95% CI]", "max_response", "oracle", "budget", "verdict")


def _cell_verdict(held, method, cell, partner) -> str:
    words = []
    for ref, short in (("same_uniform", "same-classifier uniform-m"), ("uniform", "uniform"), ("partner", partner)):
        if ref == "partner" and partner is None:
            continue
        sign = held.sign(method, ref, cell)
        if sign:
            words.append(f"{'beats' if sign > 0 else 'worse than'} {short}")
    return "; ".join(words) or "no significant difference"


def detail_tables(rows, family: dict | None = None) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, body) per stream: every agent at each m against every reference that
    shares its classifier and the head's uniform, max_response and label oracle (its rule)."""
    split = summary_split(rows)
    shown = shown_rows(rows, split)
    held = _Held(rows, family or verdict_family(rows))
    out = []
    for stream in sorted({r["stream"] for r in shown if r["learned"]}, key=stream_order):
        agents = sorted((r for r in shown if r["learned"] and r["stream"] == stream),
                        key=lambda r: (r["method"], r["m"] is None, r["m"] or 0))
        body = []
        for r in agents:
            partner = r.get("partner")
            body.append([r["method"], r.get("classifier", "head"), str(r.get("num_seeds") or 1),
                         fmt(r["m"]) if r["m"] is not None else f"var ({fmt(r.get('uniform_m'))})",
                         _pm(r, "top1"), _pm(r, "vs_same_all_top1"), _pm(r, "vs_same_uniform_top1"),
                         _delta(r, "same_uniform"), _pm(r, "vs_uniform_top1"), _delta(r, "uniform"),
                         _pm(r, "vs_max_response_top1"), _pm(r, "vs_oracle_top1"), r.get("budget_note") or "",
                         _cell_verdict(held, r["method"], (split, stream, r["m"]), partner)
                         + (f" (vs {partner}: {_delta(r, 'partner')})" if partner else "")])
        out.append((f"Details: stream {stream} (split {split})", list(DETAIL_HEADER), body))
    return out


__all__ = ["DETAIL_HEADER", "LEGEND", "answer_tables", "detail_tables", "findings", "shown_rows"]
