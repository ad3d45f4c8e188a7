"""The ``dsn_mn`` protocol: 003's test protocol for every dsn checkpoint, as flat rows.

003 tests with M sections × N clips, N as in training, keeping one clip per section
(:meth:`agents.dsn.DSN.select`); so "number of clips" is the number of test sections M.

- Fig. 4 (accuracy vs number of clips): every dsn checkpoint at M = 1 … 10 test sections
  ("We set N = 3 and vary M from 1 to 10 for testing"), next to the methods Fig. 4 compares
  it with at the same number of clips — random, uniform, max_response over all positions
  (head logits), and max_response restricted to the same M × N candidates, one per section
  ("sample M clips from M × N according to maximum score during testing", §V-C), labelled
  ``max_response[M:N]``. Rows: ``fig4=True``.
- Table II (training scheme M : N at the paper's test M = 3, "In testing, the N is the same
  as training and M is set to 3"): the rows at m = 3 carry ``table2=True``; evaluate several
  checkpoints trained with different M : N and those rows are the grid, one per ``mn``.
- the paper's trimmed test setting (M = ``test_sections``, 4 : N, Table VII) carries
  ``paper_test=True``.

A budget of M clips needs M·N candidate positions; M > T // N cannot be met with N clips per
section without overlap, so those M are left out of the rows (logged, and named in every
dsn row's ``unmet_m``) instead of being run with fewer candidates. Every row names its
training scheme ``mn`` (dsn rows) and the test scheme ``test_mn`` it ran.
"""
from __future__ import annotations

import logging

from agents.base import Selection, Selector, States, aggregate, top_m_mask
from agents.dsn import section_pick, section_positions, clip_scheme

log = logging.getLogger(__name__)

FIG4_MS = tuple(range(1, 11))     # 003 Fig. 4: M from 1 to 10
TABLE2_TEST_M = 3                 # 003 Table II: "M is set to 3"


class SectionedMaxResponse(Selector):
    """003's max-response baseline under the DSN test scheme: of each section's N
    candidates (segment centres, as DSN's) keep the one whose max softmax probability over
    classes is highest; predict with the cached logits. Not registered: it exists for the
    ``dsn_mn`` rows, where N comes from the dsn checkpoint."""

    name = "max_response_sectioned"

    def __init__(self, clips_per_section: int):
        self.clips_per_section = clips_per_section

    def select(self, states: States, m: int, *, mode: str = "frame", alpha: float = 0.0) -> Selection:
        """m sections of N candidates (fewer when m·N > T: :func:`agents.dsn.clip_scheme`)."""
        V, T, K, _, _ = states.shape
        M, N = clip_scheme(T, m, self.clips_per_section)
        pos = section_positions(T, M, N).to(states.logits.device)
        conf = states.probs.max(-1).values.float().mean(2)                          # (V, T) crop mean
        # section_pick takes logits; log-confidences keep the argmax and the ranking
        scores = section_pick(conf[:, pos.reshape(-1)].clamp_min(1e-30).log().reshape(V, M, N), pos, T)
        scores = scores[:, :, None].expand(V, T, K).contiguous()
        keep = top_m_mask(scores, M, mode)
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(scores, keep, aggregate(states.logits, keep, alpha), per.long(), mode)


def _is_dsn(method) -> bool:
    return method.learned and method.name == "dsn"


def feasible_ms(T: int, N: int, ms=FIG4_MS) -> tuple[list[int], list[int]]:
    """(met, unmet): the budgets of ``ms`` whose m·N candidates fit in T, and the rest."""
    return [m for m in ms if m * N <= T], [m for m in ms if m * N > T]


def dsn_mn_rows(run, row, method_cls):
    """The protocol's rows for one split. ``run``: evaluate.protocols.ProtocolRun; ``row``: its
    row builder ``row(run, protocol, method, stream, m, **extra)``; ``method_cls``: its
    Method class (passed in so this module does not import protocols)."""
    done: set = set()
    for method in (x for x in run.methods if _is_dsn(x)):
        c = method.config
        N, mn = int(c.get("clips_per_section")), f"{c.get('sections')}:{c.get('clips_per_section')}"
        paper_m = int(c.get("test_sections"))
        met, unmet = feasible_ms(run.T, N, sorted(set(FIG4_MS) | {TABLE2_TEST_M, paper_m}))
        if unmet:
            log.info("dsn_mn: %s cannot test M=%s with N=%d clips per section on T=%d positions",
                     method.label, unmet, N, run.T)
        refs = _references(run, N, method_cls)
        for stream in (s for s in method.selectors if s in run.states):
            for m in met:
                tags = dict(test_mn=f"{m}:{N}", fig4=m in FIG4_MS, table2=m == TABLE2_TEST_M,
                            paper_test=m == paper_m)
                yield row(run, "dsn_mn", method, stream, m, mn=mn, dsn_mode=c.get("mode"),
                          test_sections=paper_m, unmet_m=unmet, **tags)
                for ref in refs:
                    if (ref.label, stream, m) not in done:
                        done.add((ref.label, stream, m))
                        yield row(run, "dsn_mn", ref, stream, m, compare=ref.label not in ("uniform", "random"),
                                  test_mn=f"{m}:{N}" if isinstance(ref.selectors[stream], SectionedMaxResponse)
                                  else None, **{k: v for k, v in tags.items() if k != "test_mn"})


def _references(run, N: int, method_cls) -> list:
    """The methods Fig. 4 sets next to DSN: random, uniform, max_response, max_response[·:N]."""
    streams = list(run.states)
    return [run.baseline("random"), run.baseline("uniform"), run.baseline("max_response"),
            method_cls(f"max_response[M:{N}]", {s: SectionedMaxResponse(N) for s in streams})]


def report_tables(rows, split) -> list[tuple[str, list, list]]:
    """(title, header, body) of the report's 003 tables from the ``dsn_mn`` rows of one
    split: per stream, Fig. 4 (top-1 of every method by number of clips M) and Table II
    (each dsn checkpoint's training M : N at test M = 3). Empty without dsn_mn rows."""
    sel = [r for r in rows if r["protocol"] == "dsn_mn" and r["split"] == split]
    out = []
    for stream in sorted({r["stream"] for r in sel}):
        here = [r for r in sel if r["stream"] == stream]
        ms = sorted({r["m"] for r in here if r.get("fig4")})
        curve: dict[str, dict] = {}
        for r in here:
            curve.setdefault(r["method"], {})[r["m"]] = r["top1"]
        out.append((f"003 Fig. 4: top-1 vs number of clips M (M sections × N candidates), stream {stream} "
                    f"(split {split})", ["method"] + [f"M={m}" for m in ms],
                    [[meth] + [d.get(m) for m in ms] for meth, d in sorted(curve.items())]))
        grid = [r for r in here if r.get("table2") and r.get("mn")]
        if grid:
            out.append((f"003 Table II: training M:N at test M = {TABLE2_TEST_M}, stream {stream} (split {split})",
                        ["method", "training M:N", "test M:N", "top1", "top5"],
                        [[r["method"], r["mn"], r["test_mn"], r["top1"], r["top5"]]
                         for r in sorted(grid, key=lambda r: r["method"])]))
    return out


__all__ = ["FIG4_MS", "TABLE2_TEST_M", "SectionedMaxResponse", "dsn_mn_rows", "feasible_ms", "report_tables"]
