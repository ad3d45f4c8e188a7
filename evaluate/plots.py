"""The report's plots: matplotlib (Agg) figures as base64 PNGs, each section skipped with a
note saying why when its inputs are missing. Inputs: result rows (:mod:`evaluate.protocols`)
and the diagnostics (:func:`evaluate.diagnostics.collect_diagnostics`)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")   # headless; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluate.answer import shown_rows  # noqa: E402
from evaluate.verdicts import fmt, stream_order  # noqa: E402
from evaluate.published import LABEL as PUBLISHED_LABEL, published_points  # noqa: E402


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _matrix(rows, stream):
    """method -> {m: top1} for one stream (accuracy-vs-m pivot); a method with several seeds
    shows its seed mean."""
    table: dict[str, dict] = {}
    multi = {r["method"] for r in rows if r.get("seed") == "mean"}
    for r in rows:
        if r["stream"] == stream and r["mode"] == "frame" and not r.get("fusion_weights") \
                and (r.get("seed") == "mean") == (r["method"] in multi):
            table.setdefault(r["method"], {})[r["m"]] = r["top1"]
    return table


def _plot_accuracy_vs_m(rows, split):
    acc = [r for r in shown_rows(rows, split) if r["m"] is not None]
    streams = sorted({r["stream"] for r in acc}, key=stream_order)
    if not streams:
        return None
    fig, axes = plt.subplots(1, len(streams) + 1, figsize=(7.0 * len(streams) + 5.5, 4.2), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": [1.3] * len(streams) + [1.0]})
    for ax, stream in zip(axes[0], streams):
        for meth, d in sorted(_matrix(acc, stream).items()):
            ms = sorted(d)
            learned = any(r["learned"] for r in acc if r["method"] == meth)
            ax.plot(ms, [d[m] for m in ms], marker="o", lw=2.2 if learned else 1.2, ls="-" if learned else "--", label=meth)
        ax.set(title=f"ours: {stream} (split {split})", xlabel="m (positions kept)", ylabel="top-1 (fraction)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))     # outside: never over the lines
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
    acc = [r for r in shown_rows(rows, split) if r.get("gflops_deployable") is not None]
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
    fig, axes = plt.subplots(len(items), 1, figsize=(10, 2.6 * len(items)), squeeze=False, layout="constrained")
    classes = extras.get("classes")
    for ax, it in zip(axes[:, 0], items):
        gain = np.asarray(it["acc"], float) - np.asarray(it["uniform"], float)
        x = np.arange(len(gain))
        ax.bar(x, np.nan_to_num(gain), color=["tab:green" if g > 0 else "tab:red" for g in np.nan_to_num(gain)])
        ax.axhline(0, color="k", lw=0.8)
        ax.set(title=f"per-class top-1 gain over its classifier ({it.get('classifier', 'head')}) on uniform-m: "
                     f"{it['method']} at m={fmt(it['m']) if it['m'] is not None else 'its own'}", ylabel="gain")
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
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, f"no agent logs {k}", ha="center", va="center", transform=ax.transAxes)
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


def sections(rows, extras, split):
    """(title, figure or None, note when skipped) of every plot section, in order."""
    ex = extras or {}
    no_ex = "no diagnostics were collected (extras missing)"
    specs = [
        ("Accuracy vs m", lambda: _plot_accuracy_vs_m(rows, split), "no accuracy_vs_m rows with a fixed m"),
        ("Accuracy vs GFLOPs", lambda: _plot_accuracy_vs_gflops(rows, split), "no GFLOPs in the rows (no cost model)"),
        ("Per-class gains over the same classifier on uniform-m", lambda: _plot_per_class(ex),
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
