"""The full untrimmed run's numbers as benchmarks/README.md tables and a small JSON (issue 27).

Reads OUT/report/results.json and OUT/timings.json of ``python benchmarks/untrimmed.py --out
OUT`` and prints, per stream and budget m: top-1 and key precision of uniform, the key oracle,
the label oracle, random, the shortcut baselines (cut, motion) and every agent and partner
(means over seeds); each agent against uniform and against its partner: the seed-mean
difference, the seeds-and-videos interval, the interval over shared source clips
(evaluate/stats.shared_clip_variance) and its p, and the Holm-adjusted p of the report's one family (evaluate/verdicts.py) with its verdict.

    python benchmarks/untrimmed_summary.py --run /tmp/untrimmed-full [--json benchmarks/results/untrimmed_full.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BASELINES = ("uniform", "random", "key_oracle", "oracle", "cut", "motion")
TSN = "rgb:flow = 1:1.5"          # the fused rows shown: TSN's weights (protocol fusion)


def mean_rows(rows) -> dict:
    """(method, stream, m) -> the seed-mean row of a learned method or the one row of a baseline
    (split 'test', protocol accuracy_vs_m; fused: protocol fusion at TSN's 1 : 1.5)."""
    out = {}
    for r in rows:
        fused = r["stream"] == "fused" and r["protocol"] == "fusion" and r.get("fusion_weights") == TSN
        if r["split"] != "test" or not (r["protocol"] == "accuracy_vs_m" or fused) or r.get("failed"):
            continue
        if r.get("seed") is None or r.get("seed") == "mean":
            out[(r["method"], r["stream"], r["m"])] = r
    return out


def _f(v, nd=3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def versus(r, ref: str, cell) -> dict:
    """One agent row against ``ref`` (uniform or partner)."""
    diff, lo, hi = ("vs_uniform_diff", "ci_lo", "ci_hi") if ref == "uniform" else \
        (f"vs_{ref}_diff", f"vs_{ref}_ci_lo", f"vs_{ref}_ci_hi")
    won = bool(cell and cell["sign"] > 0 and cell["adjusted"] < 0.05)
    lost = bool(cell and cell["sign"] < 0 and cell["adjusted"] < 0.05)
    cl_lo, cl_hi = r.get(f"vs_{ref}_cluster_ci_lo"), r.get(f"vs_{ref}_cluster_ci_hi")
    return {"diff": r.get(diff), "ci": [r.get(lo), r.get(hi)], "cluster_ci": [cl_lo, cl_hi],
            "cluster_p": r.get(f"vs_{ref}_cluster_p"),
            "holm_p": None if cell is None else cell["adjusted"], "max_seed_p": None if cell is None else cell["p"],
            "verdict": "win" if won else "loss" if lost else "no difference",
            "cluster_excludes_0": bool(cl_lo is not None and (cl_lo > 0 or cl_hi < 0))}


def summarize(run: Path) -> dict:
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    from evaluate.verdicts import verdict_family

    res = json.loads((run / "report" / "results.json").read_text())
    timings = json.loads((run / "timings.json").read_text()) if (run / "timings.json").exists() else {}
    rows, meta = res["rows"], res["meta"]
    family = verdict_family(rows)
    table = mean_rows(rows)
    agents = sorted({k[0] for k, r in table.items() if r.get("learned")})
    out = {"wall_seconds": timings.get("seconds"), "total_seconds": timings.get("total_seconds"),
           "store_settings": timings.get("store_settings"), "truth": meta.get("truth"),
           "family_size": family["size"], "seeds": family["seeds"], "cells": []}
    for (method, stream, m), r in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][2] if kv[0][2] is not None else 99, kv[0][0])):
        if method not in BASELINES and method not in agents:
            continue
        cell = {"method": method, "stream": stream, "m": m, "top1": r.get("top1"), "top1_std": r.get("top1_std"),
                "key_precision": r.get("key_precision"), "key_recall": r.get("key_recall"),
                "fraction_kept": r.get("fraction_kept"), "learned": bool(r.get("learned")),
                "consensus": r.get("consensus"), "partner": r.get("partner")}
        if not r.get("learned") and method != "uniform" and r.get("vs_uniform_diff") is not None:
            cell["vs_uniform"] = {"diff": r["vs_uniform_diff"], "ci": [r.get("ci_lo"), r.get("ci_hi")],
                                  "mcnemar_p": r.get("mcnemar_p"), "cluster_p": r.get("vs_uniform_cluster_p"),
                                  "cluster_ci": [r.get("vs_uniform_cluster_ci_lo"), r.get("vs_uniform_cluster_ci_hi")],
                                  "holm_p": None, "verdict": "baseline (not in the verdict family)"}
        if r.get("learned"):
            for ref in ("uniform", "partner"):
                c = family["cells"].get((method, ref, "test", stream, m))
                if r.get(f"vs_{ref}_diff") is not None or ref == "uniform":
                    cell[f"vs_{ref}"] = versus(r, ref, c)
        out["cells"].append(cell)
    return out


def markdown(s: dict) -> str:
    lines = []
    for stream in ("rgb", "flow", "fused"):
        cells = [c for c in s["cells"] if c["stream"] == stream]
        if not cells:
            continue
        lines += [f"\n**{stream}**\n", "| method | m | top-1 | key precision | vs uniform (seeds×videos CI; "
                  "cluster CI) | Holm p | vs partner (cluster CI) | Holm p |", "|---|---|---|---|---|---|---|---|"]
        for c in cells:
            vu, vp = c.get("vs_uniform"), c.get("vs_partner")
            u = "" if not vu else (f"{_f(vu['diff'])} [{_f(vu['ci'][0])}, {_f(vu['ci'][1])}]; "
                                    f"[{_f(vu['cluster_ci'][0])}, {_f(vu['cluster_ci'][1])}]")
            p = "" if not vp else f"{_f(vp['diff'])} [{_f(vp['cluster_ci'][0])}, {_f(vp['cluster_ci'][1])}]"
            lines.append(f"| {c['method']} | {c['m']} | {_f(c['top1'])} | {_f(c['key_precision'])} | {u} | "
                         f"{'' if not vu else _f(vu['holm_p'], 3) + ' ' + vu['verdict']} | {p} | "
                         f"{'' if not vp else _f(vp['holm_p'], 3) + ' ' + vp['verdict']} |")
    return "\n".join(lines)


ORDER = ("uniform", "random", "key_oracle", "oracle", "cut", "motion")


def wide_table(s: dict) -> str:
    """benchmarks/README.md's one table: per m and method, top-1 and key precision on every
    stream, and the rgb difference from uniform with both intervals and the shared-clip p."""
    by = {(c["method"], c["stream"], c["m"]): c for c in s["cells"]}
    methods = sorted({c["method"] for c in s["cells"]}, key=lambda m: (ORDER.index(m) if m in ORDER else 9, m))
    ms = sorted({c["m"] for c in s["cells"] if c["m"] is not None}) + [None]
    lines = ["| method | m | top-1 rgb | flow | fused | key precision rgb | flow | fused | vs uniform, rgb: diff "
             "[seeds×videos] [shared clips] p |", "|---|---|---|---|---|---|---|---|---|"]
    for m in ms:
        for method in methods:
            cells = [by.get((method, st, m)) for st in ("rgb", "flow", "fused")]
            if not any(cells):
                continue
            v = (cells[0] or {}).get("vs_uniform")
            vs = "" if not v else (f"{v['diff']:+.3f} [{_f(v['ci'][0])}, {_f(v['ci'][1])}] "
                                   f"[{_f(v['cluster_ci'][0])}, {_f(v['cluster_ci'][1])}] {_f(v.get('cluster_p'))}")
            top = " | ".join(_f(c and c["top1"]) for c in cells)
            key = " | ".join(_f(c and c["key_precision"]) for c in cells)
            name = "oracle (label)" if method == "oracle" else method
            lines.append(f"| {name} | {'var' if m is None else m} | {top} | {key} | {vs} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--json", default=None, help="write the summary here")
    args = ap.parse_args(argv)
    s = summarize(Path(args.run))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(s, indent=1, default=str))
    print(json.dumps({k: s[k] for k in ("wall_seconds", "total_seconds", "family_size", "seeds")}, default=str))
    print(json.dumps((s.get("truth") or {}).get("test", {}).get("head_auc")))
    print(markdown(s))
    print("\n" + wide_table(s))
    return s


if __name__ == "__main__":
    main()
