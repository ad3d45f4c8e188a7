"""Report writer: ``results.json``, ``report.md`` and a self-contained ``report.html``.

``write_report(out_dir, rows, meta, extras)``: ``rows`` from :mod:`evaluate.protocols`,
``meta`` (command, config, seeds, versions, store identity, and optionally ``compute`` from
``CostModel.describe()``, the key :func:`evaluate.run.run_evaluate` writes), ``extras`` from
:func:`evaluate.diagnostics.collect_diagnostics` (or None).

The report leads with the answer (:mod:`evaluate.answer`): per stream, each agent against
the baselines that share its classifier and the head's uniform, max_response and oracle,
with CIs and the verdict (Holm over the m × stream family, held across training seeds);
then the plots (:mod:`evaluate.plots`, PNGs embedded as base64 so the file opens anywhere);
then the notes, the full row dump and the run's details.
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
from pathlib import Path

from data.errors import InputError
from data.jsonable import plain
from evaluate import dsn_protocol, keys
from evaluate.answer import LEGEND, answer_tables, detail_tables, findings
from evaluate.verdicts import SIGNIFICANCE, fmt as _fmt, stream_order, summary_split, verdict_family, verdicts
from evaluate.compute import CONVENTION
from evaluate.plots import matrix, sections as plot_sections
from evaluate.published import LABEL as PUBLISHED_LABEL, published_points

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("method", "classifier", "consensus", "seed", "num_seeds", "stream", "m", "mode", "alpha", "fusion_weights",
                 "top1", "top1_std", "top5", "mean_class", "map", "gflops_full", "gflops_deployable",
                 "seconds_full", "seconds_deployable",
                 "fraction_kept", "vs_same_uniform_diff", "vs_same_uniform_p", "vs_same_all_diff",
                 "vs_same_all_p", "vs_uniform_diff", "ci_lo", "ci_hi", "mcnemar_p", "vs_random_diff",
                 "vs_random_p", "vs_max_response_diff", "vs_max_response_p", "vs_oracle_top1", "partner",
                 "vs_partner_diff", "vs_partner_p", "budget_note", "note")
_SKIP = set(TABLE_COLUMNS) | {"split", "protocol", "learned", "num_videos", "flops_convention", "uniform_m",
                              "head_consensus", "trained_m", "equals_uniform",
                              "num_splits", "seeds"}


# ----------------------------------------------------------------------------- tables

def _select(rows, protocol, split):
    return [r for r in rows if r["protocol"] == protocol and r["split"] == split]


def _columns(rows) -> list[str]:
    """The row-dump columns with any value: the standard ones, then protocol fields (the
    references' CIs and top-1s stay in results.json)."""
    cols = [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)]
    extra = sorted(k for k in {k for r in rows for k in r} - _SKIP
                   if not k.endswith(("_std", "_ci_lo", "_ci_hi", "_top1")) and any(r.get(k) is not None for r in rows))
    return cols + extra


def _md_table(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header, body) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in body)
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>"


def _tables(rows, split):
    """(title, header, body) of the full dump: pivots of accuracy vs m, then each protocol flat."""
    out = []
    acc = _select(rows, "accuracy_vs_m", split)
    for stream in sorted({r["stream"] for r in acc}, key=stream_order):
        mat = matrix(acc, stream)
        ms = sorted({m for d in mat.values() for m in d}, key=lambda m: (m is None, m or 0))
        out.append((f"Top-1 vs m, stream {stream} (split {split})",
                    ["method"] + [f"m={_fmt(m) if m is not None else 'var'}" for m in ms],
                    [[meth] + [mat[meth].get(m) for m in ms] for meth in sorted(mat)]))
    out.extend(dsn_protocol.report_tables(rows, split))
    for protocol in ("accuracy_vs_m", "frame_vs_region", "alpha", "state_ablation", "dsn_mn", "fusion", "select_classify"):
        sel = _select(rows, protocol, split)
        if sel:
            cols = _columns(sel)
            out.append((f"Protocol {protocol} (split {split})", cols, [[r.get(c) for c in cols] for r in sel]))
    return out


# ----------------------------------------------------------------------------- writer

def _notes(rows, meta) -> list[str]:
    fusion = sorted({r["fusion_weights"] for r in rows if r.get("fusion_weights")})
    notes = [f"Compute: {CONVENTION}. 'full' = selection after a full pass (backbone + flow on all T·K, plus the "
             "agent); 'deployable' = what a deployed selector runs (agents that read full-pass states: = full).",
             "Fusion weights (scores before softmax): " + ("; ".join(fusion) if fusion else
                                                          "no fusion rows (a single stream was evaluated)"),
             "Accuracies are fractions. Paired tests (bootstrap 95% CI of the accuracy difference, McNemar p) at "
             "the same m on the same videos: against uniform, random and max_response on the head, and for an "
             "agent against its own classifier on uniform-m and on every position (and against its paper's "
             "separately trained no-selection partner, e.g. tattn against tattn_noatt); each row names its "
             "classifier (head, or own:<agent>)."]
    notes += [f"FAILED: {f['method']} ({f['stream']}, split {f['split']}"
              + (f", seed {f['seed']}" if f.get("seed") is not None else "")
              + f"): {f['cause']}; its {f['rows']} rows are left out" for f in meta.get("failed") or []]
    costs = meta.get("compute")
    if costs and costs.get("note"):
        notes.append(f"Compute {costs['note']}; the GFLOPs columns are empty.")
    elif costs:
        notes += _compute_notes(costs)
    return notes


def _compute_notes(costs: dict) -> list[str]:
    """The compute note: the flow's GFLOPs and what they are (counted, estimated, upper
    bound or not recorded), the backbones', and the measured seconds per stage."""
    its = costs.get("flow_iterations_per_field")
    notes = [f"Flow cost ({costs.get('flow_algorithm')}): {_fmt(costs.get('flow_gflops_per_pair'))} GFLOPs per "
             f"field, {_fmt(costs.get('flow_fields_per_video'))} fields per video"
             + (f", {_fmt(its)} primal-dual iterations per field" if its is not None else "")
             + f" — {costs.get('flow_note')}. Backbone GFLOPs/frame (counted): "
             f"{costs.get('backbone_gflops_per_frame')}."]
    sec = costs.get("seconds")
    if not sec:
        notes.append("Measured seconds: not recorded (a store made before seconds per stage were recorded); "
                     "seconds_full / seconds_deployable are empty.")
        return notes
    stages = ", ".join(f"{k} {_fmt(v)}" for k, v in sec["per_video"].items())
    notes.append(f"Measured seconds per video (extraction, mean of {costs.get('videos')} evaluated videos): {stages}. "
                 f"seconds_full / seconds_deployable = {costs.get('seconds_note')}; per unit: flow "
                 f"{_fmt(sec.get('flow_field'))} s per field, backbone s per crop {_fmt_map(sec.get('backbone'))}; "
                 "flow_cost (pricing the flow) is accounting overhead and in neither.")
    return notes


def _fmt_map(d) -> str:
    return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in (d or {}).items()) + "}"


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


RULE = (f"How to read: Δ = agent top-1 − reference top-1 on the same test videos, with its paired 95% interval "
        f"(one seed: a paired bootstrap over videos; several: mean ± std over seeds and an interval holding both "
        f"the seed and the video variance). A verdict counts a gain only when McNemar's p, Holm-corrected once over "
        f"every verdict test of the report, is below {SIGNIFICANCE} for every training seed (with --truth, the larger "
        f"of McNemar's and the shared-clip test's p: composites that share source clips are not independent). "
        f"'no selection' and "
        f"'uniform-m' with the same classifier are the agent's own prediction on every position and on the "
        f"evenly spaced m positions; uniform, max_response and oracle use the head's logits under the agent's "
        f"consensus rule.")


def write_report(out_dir, rows, meta: dict, extras: dict | None = None) -> dict:
    """Write results.json, report.md and report.html under ``out_dir``; returns their paths."""
    if not rows:
        raise InputError("no result rows to report")
    out = check_report_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = summary_split(rows)
    family = verdict_family(rows)
    classes = meta.get("classes") or []
    chance = 1.0 / len(classes) if classes else None
    meta = {**meta, "flops_convention": CONVENTION,
            "fusion_weights": sorted({r["fusion_weights"] for r in rows if r.get("fusion_weights")}),
            "correction": {"method": "Holm", "level": SIGNIFICANCE, "family_size": family["size"],
                           "family": "every accuracy_vs_m test of a learned method against same_uniform, "
                                     "uniform, random and its partner, over splits, streams and budgets; a "
                                     "cell's p is the largest over the method's training seeds (with --truth, of McNemar's "
                                     "and the shared-clip test's)",
                           "seeds": family["seeds"]},
            "chance_top1": chance}
    (out / "results.json").write_text(json.dumps(plain({"meta": meta, "rows": rows}), indent=1, allow_nan=False))
    doc = {"answer": answer_tables(rows, family), "legend": LEGEND.format(size=family["size"]),
           "findings": findings(rows, family, chance), "details": detail_tables(rows, family),
           "words": verdicts(rows, family), "sections": plot_sections(rows, extras, split),
           "notes": _notes(rows, meta), "tables": _tables(rows, split), "meta": _meta_lines(meta),
           "published": _published_table(), "departures": meta.get("departures") or {},
           "keys": keys.truth_section(rows, meta)}
    (out / "report.md").write_text(_markdown(doc))
    (out / "report.html").write_text(_html(doc))
    return {"json": out / "results.json", "md": out / "report.md", "html": out / "report.html"}


def _meta_lines(meta) -> list[tuple[str, str]]:
    names = ("command", "store", "seeds", "versions", "config", "truth")
    return [(k, json.dumps(plain(meta[k]), sort_keys=True)) for k in names if meta.get(k) is not None]


def _published_table():
    pts = published_points()
    header = ["paper", "source", "dataset", "backbone", "method", "m", "metric", "value", "gflops"]
    return header, [[p[h] for h in header] for p in pts]


NO_AGENT = "no learned agent was evaluated: baselines only."
KEYS_TITLE = "Key positions (segment truth)"


def _markdown(doc) -> str:
    md = ["# framesel evaluation report", "", "## The answer", ""]
    for title, header, body in doc["answer"]:
        md += [f"### {title}", "", _md_table(header, body), ""]
    md += [doc["legend"], "", "### Findings", "", doc["findings"], ""]
    md += ["## Details", "", RULE, ""]
    for title, header, body in doc["details"]:
        md += [f"### {title}", "", _md_table(header, body), ""]
    md += ["### Verdicts", ""] + ([f"- {w}" for w in doc["words"]] or [f"- {NO_AGENT}"]) + [""]
    if doc.get("keys"):
        lines, header, body = doc["keys"]
        md += [f"## {KEYS_TITLE}", ""] + [f"- {x}" for x in lines] + ["", _md_table(header, body), ""]
    md += ["## Plots", ""]
    md += [f"- {t}: " + (f"skipped — {note}" if note else "in report.html") for t, _, note in doc["sections"]] + [""]
    md += ["## Notes", ""] + [f"- {n}" for n in doc["notes"]] + [""]
    md += departures_markdown(doc["departures"])
    md += ["## Full results", ""]
    for title, header, body in doc["tables"]:
        md += [f"### {title}", "", _md_table(header, body), ""]
    header, body = doc["published"]
    md += [f"## Published points ({PUBLISHED_LABEL})", "", _md_table(header, body), ""]
    md += ["## Run details", ""] + [f"- **{k}**: `{v}`" for k, v in doc["meta"]] + [""]
    return "\n".join(md)


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse;font-size:12px;"
        "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "table.answer td{white-space:nowrap}table.answer{font-size:13px}"
        "table.detail td:last-child{text-align:left;white-space:normal;min-width:16em}"
        "td.win{background:#e3f6e3}td.loss{background:#fbe3e3}td.best{font-weight:bold}"
        "tr.ref td{color:#555;background:#fafafa}p.findings{max-width:1100px;font-size:15px}"
        "p.rule,p.legend{max-width:1100px;color:#333}img{max-width:100%;display:block;margin:0.5em 0}.note{color:#a60}"
        "code{font-size:11px;word-break:break-all}div.wide{overflow-x:auto;max-width:100%}"
        "tr.group td{border-top:2px solid #888}")


def _answer_html(header, body) -> str:
    """The answer table: a cell green when the agent beats its reference (▲), red when worse
    (▼), bold when it is the best agent at that m (★); reference rows greyed."""
    def td(v):
        cls = " ".join(c for c, mark in (("win", "▲"), ("loss", "▼"), ("best", "★")) if mark in v)
        return f"<td class='{cls}'>{html.escape(v)}</td>" if cls else f"<td>{html.escape(v)}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join(("<tr class='ref'>" if row[2] == "–" else "<tr>") + "".join(td(v) for v in row) + "</tr>"
                  for row in body)
    return f"<div class='wide'><table class='answer'><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>"


def _detail_html(header, body) -> str:
    """A details table, its verdict cells coloured (green: beats, red: worse)."""
    def td(v, last):
        cls = "" if not last else (" class='loss'" if "worse" in v else " class='win'" if v.startswith("beats") else "")
        return f"<td{cls}>{html.escape(v)}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join(("<tr class='group'>" if i and row[0] != body[i - 1][0] else "<tr>")
                  + "".join(td(v, j == len(row) - 1) for j, v in enumerate(row)) + "</tr>"
                  for i, row in enumerate(body))
    return f"<div class='wide'><table class='detail'><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>"


def _html(doc) -> str:
    bold = lambda s: re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(s))  # noqa: E731
    h = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>framesel report</title><style>{_CSS}</style>"
         "</head><body><h1>framesel evaluation report</h1><h2>The answer</h2>"]
    for title, header, body in doc["answer"]:
        h += [f"<h3>{html.escape(title)}</h3>", _answer_html(header, body)]
    h += [f"<p class='legend'>{html.escape(doc['legend'])}</p>", "<h3>Findings</h3>",
          f"<p class='findings'>{html.escape(doc['findings'])}</p>",
          "<h2>Details</h2>", f"<p class='rule'>{html.escape(RULE)}</p>"]
    for title, header, body in doc["details"]:
        h += [f"<h3>{html.escape(title)}</h3>", _detail_html(header, body)]
    h += ["<h3>Verdicts</h3><ul>"] + ([f"<li>{bold(w)}</li>" for w in doc["words"]] or [f"<li>{NO_AGENT}</li>"])
    h.append("</ul>")
    if doc.get("keys"):
        lines, header, body = doc["keys"]
        h += [f"<h2>{KEYS_TITLE}</h2><ul>"] + [f"<li>{html.escape(x)}</li>" for x in lines] + ["</ul>"]
        h.append(_html_table(header, body))
    h.append("<h2>Plots</h2>")
    for title, png, note in doc["sections"]:
        h.append(f"<h3>{html.escape(title)}</h3>")
        h.append(f"<p class='note'>Skipped: {html.escape(note)}</p>" if note else
                 f"<img class='plot' alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    h += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in doc["notes"]] + ["</ul>"]
    h += departures_html(doc["departures"])
    h.append("<h2>Full results</h2>")
    for title, header, body in doc["tables"]:
        h += [f"<h3>{html.escape(title)}</h3>", _html_table(header, body)]
    header, body = doc["published"]
    h += [f"<h2>Published points ({html.escape(PUBLISHED_LABEL)})</h2>", _html_table(header, body)]
    h += ["<h2>Run details</h2><ul>"]
    h += [f"<li><b>{html.escape(k)}</b>: <code>{html.escape(v)}</code></li>" for k, v in doc["meta"]]
    h.append("</ul></body></html>")
    return "\n".join(h)


# ----------------------------------------------------------------------------- departures

DEPARTURES_TITLE = "Departures from the papers"


def departures_markdown(departures: dict) -> list[str]:
    """The report's departures section (``meta["departures"]``: {agent: [lines]}, evaluate/run.py)
    as markdown lines; [] when no agent was evaluated."""
    if not departures:
        return []
    md = [f"## {DEPARTURES_TITLE}", ""]
    for agent, lines in departures.items():
        md += [f"- **{agent}**"] + [f"  - {line}" for line in lines or ["none recorded"]]
    return md + [""]


def departures_html(departures: dict) -> list[str]:
    """:func:`departures_markdown` as HTML."""
    if not departures:
        return []
    h = [f"<h2>{DEPARTURES_TITLE}</h2><ul>"]
    for agent, lines in departures.items():
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines or ["none recorded"])
        h.append(f"<li><b>{html.escape(agent)}</b><ul>{items}</ul></li>")
    return h + ["</ul>"]
