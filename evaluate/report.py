"""Report writer: ``results.json``, ``report.md`` and a self-contained ``report.html``.

``write_report(out_dir, rows, meta, extras)``: ``rows`` from :mod:`evaluate.protocols`,
``meta`` (command, config, seeds, versions, store identity, and optionally ``compute`` from
``CostModel.describe()``, the key :func:`evaluate.run.run_evaluate` writes), ``extras`` from :func:`evaluate.protocols.collect_diagnostics`
(or None). Plots are matplotlib (Agg) PNGs embedded as base64 in the HTML, so the file
opens anywhere; sections whose inputs are missing are skipped with a note saying why.

Every report names the fusion weights and the FLOPs convention, keeps the trivial
baselines beside the agents, and says in words when an agent does not beat uniform or
random (paired bootstrap CI and McNemar p from the rows).
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data.errors import InputError  # noqa: E402
from evaluate import dsn_protocol  # noqa: E402
from evaluate.compute import CONVENTION  # noqa: E402
from evaluate.published import LABEL as PUBLISHED_LABEL, published_points  # noqa: E402

log = logging.getLogger(__name__)

SIGNIFICANCE = 0.05
TABLE_COLUMNS = ("method", "stream", "m", "mode", "alpha", "fusion_weights", "top1", "top5", "mean_class",
                 "map", "gflops_full", "gflops_deployable", "fraction_kept", "vs_uniform_diff", "ci_lo",
                 "ci_hi", "mcnemar_p", "vs_random_diff", "vs_random_p")


# ----------------------------------------------------------------------------- helpers

def _jsonable(x):
    """Plain JSON values: numpy scalars/arrays to Python, NaN/inf to null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _summary_split(rows) -> str:
    """Show the mean over splits when there are several, else the only split."""
    splits = {r["split"] for r in rows}
    return "mean" if "mean" in splits else sorted(splits)[0]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- verdicts

def verdicts(rows) -> list[str]:
    """One sentence per learned method and stream: does it beat uniform and random?"""
    split = _summary_split(rows)
    per_split = [r for r in rows if r["split"] != "mean" and r["protocol"] == "accuracy_vs_m" and r["learned"]]
    out = []
    for key in sorted({(r["method"], r["stream"]) for r in per_split}):
        mine = [r for r in per_split if (r["method"], r["stream"]) == key]
        out.append(_verdict(key, mine, split))
    return out


def _verdict(key, rows, split) -> str:
    method, stream = key
    parts = []
    for ref, diff_k, p_k in (("uniform", "vs_uniform_diff", "mcnemar_p"), ("random", "vs_random_diff", "vs_random_p")):
        wins = [r for r in rows if r.get(diff_k) is not None and r[diff_k] > 0 and r[p_k] < SIGNIFICANCE]
        losses = [r for r in rows if r.get(diff_k) is not None and r[diff_k] < 0 and r[p_k] < SIGNIFICANCE]
        ms = lambda rs: ", ".join(f"{r['split']}/m={_fmt(r['m'])}" for r in rs)  # noqa: E731
        if wins:
            parts.append(f"beats {ref} significantly (McNemar p < {SIGNIFICANCE}) at {ms(wins)}")
        else:
            parts.append(f"does NOT beat {ref} at any m (no significant paired gain)")
        if losses:
            parts.append(f"is significantly worse than {ref} at {ms(losses)}")
    best = max(rows, key=lambda r: r["vs_uniform_diff"] if r.get("vs_uniform_diff") is not None else -1)
    detail = ""
    if best.get("vs_uniform_diff") is not None:
        detail = (f" Largest difference to uniform: {best['vs_uniform_diff'] * 100:+.1f} points at split "
                  f"{best['split']}, m={_fmt(best['m'])} (95% CI [{best['ci_lo'] * 100:+.1f}, "
                  f"{best['ci_hi'] * 100:+.1f}], McNemar p={best['mcnemar_p']:.3g}).")
    return f"**{method}** on {stream}: " + "; ".join(parts) + "." + detail


# ----------------------------------------------------------------------------- tables

def _select(rows, protocol, split):
    return [r for r in rows if r["protocol"] == protocol and r["split"] == split]


def _columns(rows) -> list[str]:
    """The table columns with any value: the standard ones, top1_std, then protocol fields."""
    cols = [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)]
    skip = set(TABLE_COLUMNS) | {"split", "protocol", "learned", "num_videos", "flops_convention", "uniform_m",
                                 "vs_random_ci_lo", "vs_random_ci_hi", "num_splits"}
    extra = sorted(k for k in {k for r in rows for k in r} - skip
                   if not k.endswith("_std") and any(r.get(k) is not None for r in rows))
    stds = [c for c in ("top1_std",) if any(r.get(c) is not None for r in rows)]
    return cols + stds + extra


def _matrix(rows, stream):
    """method -> {m: top1} for one stream (accuracy-vs-m pivot)."""
    table: dict[str, dict] = {}
    for r in rows:
        if r["stream"] == stream and r["mode"] == "frame" and not r.get("fusion_weights"):
            table.setdefault(r["method"], {})[r["m"]] = r["top1"]
    return table


def _md_table(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header, body) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"


def _tables(rows, split):
    """(title, header, body) of every table: pivots of accuracy vs m, then each protocol flat."""
    out = []
    acc = _select(rows, "accuracy_vs_m", split)
    for stream in sorted({r["stream"] for r in acc}):
        mat = _matrix(acc, stream)
        ms = sorted({m for d in mat.values() for m in d}, key=lambda m: (m is None, m or 0))
        out.append((f"Top-1 vs m, stream {stream} (split {split})", ["method"] + [f"m={_fmt(m)}" for m in ms],
                    [[meth] + [mat[meth].get(m) for m in ms] for meth in sorted(mat)]))
    out.extend(dsn_protocol.report_tables(rows, split))
    for protocol in ("accuracy_vs_m", "frame_vs_region", "alpha", "state_ablation", "dsn_mn", "fusion"):
        sel = _select(rows, protocol, split)
        if sel:
            cols = _columns(sel)
            out.append((f"Protocol {protocol} (split {split})", cols, [[r.get(c) for c in cols] for r in sel]))
    return out


# ----------------------------------------------------------------------------- plots

def _plot_accuracy_vs_m(rows, split):
    acc = [r for r in _select(rows, "accuracy_vs_m", split) if r["m"] is not None]
    streams = sorted({r["stream"] for r in acc})
    if not streams:
        return None
    fig, axes = plt.subplots(1, len(streams) + 1, figsize=(5.5 * (len(streams) + 1), 4.2), squeeze=False)
    for ax, stream in zip(axes[0], streams):
        for meth, d in sorted(_matrix(acc, stream).items()):
            ms = sorted(d)
            learned = any(r["learned"] for r in acc if r["method"] == meth)
            ax.plot(ms, [d[m] for m in ms], marker="o", lw=2.2 if learned else 1.2, ls="-" if learned else "--", label=meth)
        ax.set(title=f"ours: {stream} (split {split})", xlabel="m (positions kept)", ylabel="top-1 (fraction)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    pts = published_points(paper="000", source="Table 3")
    for meth in sorted({p["method"] for p in pts}):
        mp = [p for p in pts if p["method"] == meth]
        ax.plot([p["m"] for p in mp], [p["value"] for p in mp], marker="s", label=meth)
    ax.set(title=f"000 Table 3, HMDB51 split1\n({PUBLISHED_LABEL})", xlabel="m", ylabel="top-1 (fraction)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _plot_accuracy_vs_gflops(rows, split):
    acc = [r for r in _select(rows, "accuracy_vs_m", split) if r.get("gflops_deployable") is not None]
    if not acc:
        return None
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (meth, stream) in sorted({(r["method"], r["stream"]) for r in acc}):
        rs = sorted((r for r in acc if (r["method"], r["stream"]) == (meth, stream)), key=lambda r: r["gflops_deployable"])
        ax.plot([r["gflops_deployable"] for r in rs], [r["top1"] for r in rs], marker="o", label=f"{meth} ({stream})")
    ax.set(xscale="log", title=f"ours: top-1 vs deployable GFLOPs/video (split {split})",
           xlabel="GFLOPs per video (FLOPs = 2 MACs)", ylabel="top-1 (fraction)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    for p in published_points(with_gflops=True):
        axp.scatter(p["gflops"], p["value"], marker="s")
        axp.annotate(f"{p['method']} {p['backbone']} {p['dataset']}", (p["gflops"], p["value"]), fontsize=6)
    axp.set(xscale="log", title=f"003 Tables III-IV ({PUBLISHED_LABEL})", xlabel="GFLOPs per video (as printed)",
            ylabel="top-1 / mAP (fraction)")
    axp.grid(alpha=0.3)
    return fig


def _plot_per_class(extras):
    items = extras.get("per_class") or []
    if not items:
        return None
    fig, axes = plt.subplots(len(items), 1, figsize=(10, 2.6 * len(items)), squeeze=False)
    classes = extras.get("classes")
    for ax, it in zip(axes[:, 0], items):
        gain = np.asarray(it["acc"], float) - np.asarray(it["uniform"], float)
        x = np.arange(len(gain))
        ax.bar(x, np.nan_to_num(gain), color=["tab:green" if g > 0 else "tab:red" for g in np.nan_to_num(gain)])
        ax.axhline(0, color="k", lw=0.8)
        ax.set(title=f"per-class top-1 gain over uniform: {it['method']} at m={_fmt(it['m'])}", ylabel="gain")
        if classes is not None and len(classes) <= 40:
            ax.set_xticks(x, classes, rotation=60, fontsize=6)
    return fig


def _plot_policy(extras):
    scores, frac = extras.get("scores") or {}, extras.get("fraction_kept") or {}
    if not scores:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for key, s in scores.items():
        s = np.asarray(s, float)
        lo, hi = np.nanmin(s), np.nanmax(s)
        a1.hist((s - lo) / (hi - lo) if hi > lo else s * 0, bins=30, histtype="step", label=key)
    a1.set(title="selection scores (min-max scaled per method)", xlabel="score", ylabel="positions")
    a1.legend(fontsize=6)
    keys = list(frac)
    a2.boxplot([np.asarray(frac[k], float) for k in keys], orientation="horizontal")
    a2.set_yticks(range(1, len(keys) + 1), keys, fontsize=6)
    a2.set(title=f"fraction of positions kept per video (m={extras.get('m')})", xlabel="fraction kept")
    return fig


def _plot_histories(extras):
    hist = {k: h for k, h in (extras.get("histories") or {}).items() if h}
    if not hist:
        return None
    keys = ("reward", "entropy", "fraction_kept")
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, k in zip(axes, keys):
        for name, h in hist.items():
            ys = [row.get(k) for row in h]
            if any(y is not None for y in ys):
                ax.plot(range(1, len(ys) + 1), [np.nan if y is None else y for y in ys], marker=".", label=name)
        ax.set(title=f"training {k} per epoch", xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig


def _plot_thumbnails(extras):
    thumbs, imp = extras.get("thumbnails"), extras.get("importance") or {}
    learned = [k for k in imp if k in (extras.get("histories") or {})] or list(imp)
    if thumbs is None or not learned:
        return None
    key = learned[0]
    thumbs, scores = np.asarray(thumbs), np.asarray(imp[key], float)
    n = len(thumbs)
    fig, axes = plt.subplots(n, 5, figsize=(14, 2.9 * n), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 2.5]})
    for i in range(n):
        order = np.argsort(-scores[i], kind="stable")
        picks = [("top", order[0]), ("top", order[1 % len(order)]), ("bottom", order[-2]), ("bottom", order[-1])]
        for j, (tag, t) in enumerate(picks):
            axes[i, j].imshow(thumbs[i, t])
            axes[i, j].set_title(f"{tag} t={t}", fontsize=7)
            axes[i, j].axis("off")
        for k in learned if len(learned) < len(imp) else imp:   # the agents (all methods if none)
            s = np.asarray(imp[k][i], float)
            span = s.max() - s.min()
            axes[i, 4].plot((s - s.min()) / span if span > 0 else s * 0, lw=2 if k == key else 1, label=k)
        axes[i, 4].set(title=f"video {extras['sample_videos'][i]}: importance (min-max scaled)", xlabel="position")
        axes[i, 4].legend(fontsize=5)
    fig.suptitle(f"highest- and lowest-scored positions by {key}")
    return fig


# ----------------------------------------------------------------------------- writer

def _sections(rows, extras, split):
    """(title, figure or None, note when skipped) of every plot section, in order."""
    ex = extras or {}
    no_ex = "no diagnostics were collected (extras missing)"
    specs = [
        ("Accuracy vs m", lambda: _plot_accuracy_vs_m(rows, split), "no accuracy_vs_m rows with a fixed m"),
        ("Accuracy vs GFLOPs", lambda: _plot_accuracy_vs_gflops(rows, split), "no GFLOPs in the rows (no cost model)"),
        ("Per-class gains over uniform", lambda: _plot_per_class(ex),
         no_ex if not ex else "no learned agent, or multi-label data"),
        ("Policy diagnostics", lambda: _plot_policy(ex), no_ex),
        ("Training curves", lambda: _plot_histories(ex), no_ex if not ex else "no agent carries a training history"),
        ("Top- and bottom-scored positions", lambda: _plot_thumbnails(ex),
         no_ex if not ex else "the store has no thumbnails (extract with thumbnails to see frames)"),
    ]
    out = []
    for title, make, note in specs:
        fig = make()
        out.append((title, None if fig is None else _png(fig), None if fig is not None else note))
    return out


def _notes(rows, meta) -> list[str]:
    fusion = sorted({r["fusion_weights"] for r in rows if r.get("fusion_weights")})
    notes = [f"Compute: {CONVENTION}. 'full' = selection after a full pass (backbone + flow on all T·K, plus the "
             "agent); 'deployable' = what a deployed selector runs (agents that read full-pass states: = full).",
             "Fusion weights (scores before softmax): " + ("; ".join(fusion) if fusion else
                                                          "no fusion rows (a single stream was evaluated)"),
             "Accuracies are fractions. Paired tests: bootstrap 95% CI of the accuracy difference and McNemar p, "
             "against uniform and random at the same m on the same videos."]
    costs = meta.get("compute")
    if costs:
        notes.append(f"Flow cost: {costs.get('flow_note')} ({_fmt(costs.get('flow_gflops_per_pair'))} GFLOPs per "
                     f"field, {costs.get('flow_algorithm')}). Backbone GFLOPs/frame: {costs.get('backbone_gflops_per_frame')}.")
    return notes


def check_report_dir(out_dir) -> Path:
    """``out_dir`` as a Path, or an InputError when it cannot become the report directory: it
    is an existing non-directory, or one of its parents is, or the nearest existing one is
    not writable (a read-only file system, permissions)."""
    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                where = "exists and is not a directory" if p == out else f"is beneath {p}, which is not a directory"
                raise InputError(f"report directory {out} {where}; name a (new) directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise InputError(f"report directory {out}: cannot write in {p} (read-only file system or "
                                 "no permission)")
            break
    return out


def write_report(out_dir, rows, meta: dict, extras: dict | None = None) -> dict:
    """Write results.json, report.md and report.html under ``out_dir``; returns their paths."""
    if not rows:
        raise InputError("no result rows to report")
    out = check_report_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = _summary_split(rows)
    meta = {**meta, "flops_convention": CONVENTION,
            "fusion_weights": sorted({r["fusion_weights"] for r in rows if r.get("fusion_weights")})}
    (out / "results.json").write_text(json.dumps(_jsonable({"meta": meta, "rows": rows}), indent=1, allow_nan=False))
    words, notes, tables = verdicts(rows), _notes(rows, meta), _tables(rows, split)
    sections = _sections(rows, extras, split)
    (out / "report.md").write_text(_markdown(meta, words, notes, tables, sections))
    (out / "report.html").write_text(_html(meta, words, notes, tables, sections))
    return {"json": out / "results.json", "md": out / "report.md", "html": out / "report.html"}


def _meta_lines(meta) -> list[tuple[str, str]]:
    keys = ("command", "store", "seeds", "versions", "config")
    return [(k, json.dumps(_jsonable(meta[k]), sort_keys=True)) for k in keys if meta.get(k) is not None]


def _published_table():
    pts = published_points()
    header = ["paper", "source", "dataset", "backbone", "method", "m", "metric", "value", "gflops"]
    return header, [[p[h] for h in header] for p in pts]


def _markdown(meta, words, notes, tables, sections) -> str:
    md = ["# framesel evaluation report", ""]
    md += [f"- **{k}**: `{v}`" for k, v in _meta_lines(meta)] + [""]
    md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Do the agents beat the trivial baselines?", ""]
    md += [f"- {w}" for w in words] or ["- no learned agent was evaluated: baselines only."]
    md.append("")
    for title, header, body in tables:
        md += [f"## {title}", "", _md_table(header, body), ""]
    md += ["## Plots", ""]
    md += [f"- {t}: " + (f"skipped — {note}" if note else "in report.html") for t, _, note in sections] + [""]
    header, body = _published_table()
    md += [f"## Published points ({PUBLISHED_LABEL})", "", _md_table(header, body), ""]
    return "\n".join(md)


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px;"
        "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "img{max-width:100%;display:block;margin:0.5em 0}.note{color:#a60}")


def _html(meta, words, notes, tables, sections) -> str:
    import re
    bold = lambda s: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(s))  # noqa: E731
    h = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>framesel report</title><style>{_CSS}</style>"
         "</head><body><h1>framesel evaluation report</h1><ul>"]
    h += [f"<li><b>{html.escape(k)}</b>: <code>{html.escape(v)}</code></li>" for k, v in _meta_lines(meta)]
    h += ["</ul><h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    h += ["<h2>Do the agents beat the trivial baselines?</h2><ul>"]
    h += [f"<li>{bold(w)}</li>" for w in words] or ["<li>no learned agent was evaluated: baselines only.</li>"]
    h.append("</ul>")
    for title, png, note in sections:
        h.append(f"<h2>{html.escape(title)}</h2>")
        h.append(f"<p class='note'>Skipped: {html.escape(note)}</p>" if note else
                 f"<img class='plot' alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    for title, header, body in tables:
        h += [f"<h2>{html.escape(title)}</h2>", _html_table(header, body)]
    header, body = _published_table()
    h += [f"<h2>Published points ({html.escape(PUBLISHED_LABEL)})</h2>", _html_table(header, body), "</body></html>"]
    return "\n".join(h)
