"""The evaluated methods: baselines, learned agents grouped over training seeds, and the
baselines that share an agent's classifier (GUIDE §4: a comparison is fair only when both
sides use the same classifier).

- An agent's **classifier** is ``"head"`` when it predicts from the head's per-frame logits
  (``as``, DSN-f) and ``"own:<agent>"`` when it predicts with a network of its own (``tattn``,
  ``glimpse``, ``rtsae``, alternating ``dsn``: ``own_classifier`` on the agent).
- Its **same-classifier baselines** run its own prediction hook,
  ``agent.video_scores(states, keep, alpha)``, on a mask it did not choose: the evenly
  spaced m positions (``same_uniform``, TSN's uniform-m) and every position (``same_all``,
  no selection). For a head agent these are the head on uniform-m / all positions with the
  agent's own consensus (eq. 3's mean of probabilities for ``as``).
- A **partner** is a separately trained no-selection model of the same paper (the agent
  class's ``partner_for(config)``, agents/papers.py: ``tattn`` → ``tattn_noatt``, ``rtsae``
  → ``rtsae_nogate``, ``glimpse`` → ``glimpse_soft``, alternating ``dsn`` →
  ``dsn_nosampler``): paired when both are evaluated, seed with seed when they can.
- **Seeds**: checkpoints with the same label, stream and config that differ only in their
  training seed are one method, evaluated per seed (``Method.seed``); the rows then carry
  mean ± std over the seeds (:func:`evaluate.pairing.summarize_seeds`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from agents.base import Selection, Selector, States, consensus_of, selector_class, selector_names
from agents.checkpoint import training_identity
from data.errors import InputError
from data.identity import differences
from data.store_rows import prefetch

# Bytes of float32 states a selector sees at once in evaluate (select_in_blocks): memory
# holds two blocks (the one selected and the one read ahead), not the split's states.
BLOCK_BYTES = 256 * 2 ** 20
SAME_CLASSIFIER = ("same_uniform", "same_all")


class MethodFailed(InputError):
    """A method's selection raised, or gave NaN frame scores or non-finite class scores (its
    weights hold NaN: a diverged training run). Its rows become failed rows naming this
    cause (:mod:`evaluate.protocols`); the other methods' rows and the report are written."""


def check_selection(selector, sel: Selection) -> None:
    """MethodFailed unless ``sel``'s frame scores hold no NaN (-inf ranks, as a mask does)
    and its (V, C) class scores are finite."""
    nan = torch.isnan(sel.scores.float()).flatten(1).any(1)
    bad = ~torch.isfinite(sel.video_scores.float()).all(1)
    if nan.any() or bad.any():
        what = [f"NaN frame scores in {int(nan.sum())}" if nan.any() else "",
                f"non-finite class scores in {int(bad.sum())}" if bad.any() else ""]
        raise MethodFailed(f"{selector.name}: non-finite scores ({' and '.join(w for w in what if w)} of "
                           f"{len(nan)} videos): its weights hold NaN or inf (a diverged training run? its "
                           "training log shows when the loss became nan)")


@dataclass(eq=False)
class Method:
    """One evaluated method. ``selectors``: stream -> Selector ("fused" for an agent that
    reads both streams itself, e.g. rtsae with two_stream). ``inputs``: stream -> the States
    this method reads there instead of the shared ones (an agent with its own observer
    stream, :func:`evaluate.run.attach_observers`); a stream not in it reads the shared.
    ``seed``: the training seed of one of several seeds of a learned method, else None;
    ``partner``: the method this one is paired with as its paper's baseline (or None)."""

    label: str
    selectors: dict
    learned: bool = False
    variable_m: bool = False
    config: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    seed: int | None = None
    partner: "Method | None" = None
    note: str | None = None

    @property
    def name(self) -> str:
        return next(iter(self.selectors.values())).name

    @property
    def uid(self) -> str:
        """Unique within a run: the label, and the seed when the method has several."""
        return self.label if self.seed is None else f"{self.label}@seed{self.seed}"

    @property
    def classifier(self) -> str:
        """"head" or "own:<agent>" — what the method's predictions come from."""
        return classifier_name(next(iter(self.selectors.values()))) if self.learned else "head"

    @property
    def consensus(self) -> str:
        """The rule its predictions follow (agents.base.consensus_of): logit_mean, prob_mean
        or own:<agent>."""
        return consensus_of(next(iter(self.selectors.values())))

    @property
    def head_consensus(self) -> str:
        """The rule of the head baselines this method is compared with: its own head rule, or
        the head's TSN logit mean for a method with its own classifier."""
        rule = self.consensus
        return "logit_mean" if rule.startswith("own:") else rule


def baseline_method(name: str, streams, rule: str = "logit_mean", *, seed: int = 0) -> Method:
    """Baseline ``name`` on ``streams`` under consensus ``rule``; labelled ``name`` under the
    head's default (logit_mean), ``name@rule`` under another (each row names its rule)."""
    def make():
        sel = selector_class(name)(**({"seed": seed} if name == "random" else {}))
        sel.consensus = rule
        return sel
    cls = selector_class(name)
    return Method(name if rule == "logit_mean" else f"{name}@{rule}", {s: make() for s in streams}, False,
                  cls.variable_m)


def classifier_name(selector) -> str:
    """"own:<name>" for a selector with its own classifier (``own_classifier``), else "head"."""
    return f"own:{selector.name}" if selector.own_classifier else "head"


class SameClassifier(Selector):
    """An agent's own prediction (its ``video_scores`` hook) on uniform-m, or on every
    position (``all_positions``): the baseline that shares its classifier."""

    learned = False

    def __init__(self, agent, all_positions: bool):
        self.agent, self.all_positions, self.name = agent, all_positions, agent.name

    def select(self, states, m, *, mode="frame", alpha=0.0, flow=None) -> Selection:
        keep = selector_class("uniform")().select(states, None if self.all_positions else m, mode=mode).keep
        with torch.no_grad():
            extra = {} if flow is None else {"flow": flow}
            scores = self.agent.video_scores(states, keep, alpha, **extra).float()
        per = keep.any(dim=2).sum(1) if mode == "frame" else keep.sum(dim=(1, 2))
        return Selection(keep.float(), keep, scores, per.long(), mode)


def same_classifier_method(method: Method, which: str) -> Method:
    """The ``same_uniform`` or ``same_all`` baseline of a learned method, on its streams and
    reading the same inputs (its observer)."""
    if which not in SAME_CLASSIFIER:
        raise InputError(f"unknown same-classifier baseline {which!r}; available: {', '.join(SAME_CLASSIFIER)}")
    sels = {s: SameClassifier(a, which == "same_all") for s, a in method.selectors.items()}
    return Method(f"{method.uid}:{which}", sels, False, False, method.config, method.inputs)


def agent_label(agent) -> str:
    """Row label of an agent (``Agent.label``: ``as[state=features]``, ``dsn-f[1:3]``, …)."""
    return agent.label()


def _config(agent) -> dict:
    return dataclasses.asdict(agent.config) if dataclasses.is_dataclass(agent.config) else {}


def _agent_stream(agent, streams) -> str:
    stream = "fused" if _config(agent).get("two_stream") else agent.store_identity.get("stream")
    if stream is None:
        if len(streams) != 1:
            raise InputError(f"agent {agent.name!r} does not record its stream and the states have "
                             f"{streams}; retrain it, or evaluate one stream")
        stream = streams[0]
    if stream != "fused" and stream not in streams:
        raise InputError(f"agent {agent.name!r} was trained on stream {stream!r}; states have {streams}")
    return stream


def build_methods(baselines, agents, streams) -> list[Method]:
    """Methods from baseline names or instances (run on every stream) and loaded agents.

    An agent's stream is ``agent.store_identity["stream"]`` (or the only stream). Agents with
    the same label on rgb and flow form one method, so they are fused as a pair. Agents of
    one label, stream, config and training identity (the training list and the features and
    logits they read: agents.checkpoint.training_identity) that differ in ``seed`` are that
    method's seeds; another config or training identity (or the same seed twice) is another
    method, ``label#2``, whose ``note`` says what differs.
    """
    streams = list(streams)
    out = [Method(b.name, {s: b for s in streams}, False, b.variable_m)
           for b in (selector_class(x)() if isinstance(x, str) else x for x in baselines)]
    by_key: dict[tuple, Method] = {}          # (label, seed) -> Method
    kinds: dict[tuple, tuple] = {}            # (label, stream) -> (config, identity) its seeds share
    for agent in agents:
        cfg, stream, seed = _config(agent), _agent_stream(agent, streams), getattr(agent, "seed", None)
        kind = (cfg, _seed_identity(agent))
        base = label = agent_label(agent)
        n, note = 2, None
        while (label, stream) in kinds and (kinds[label, stream] != kind or stream in
                                            getattr(by_key.get((label, seed)), "selectors", {})):
            note = note or _what_differs(kinds[label, stream], kind, base)
            label, n = f"{base}#{n}", n + 1
        kinds.setdefault((label, stream), kind)
        meth = by_key.setdefault((label, seed), Method(label, {}, True, agent.variable_m, cfg, seed=seed))
        meth.selectors[stream] = agent
        meth.note = meth.note or note
    learned = list(by_key.values())
    rules = sorted({m.head_consensus for m in learned} - {"logit_mean"})
    registered = set(selector_names(learned=False))
    out += [baseline_method(m.name, streams, rule) for rule in rules for m in list(out) if m.name in registered]
    seeds = {}
    for m in learned:
        seeds.setdefault(m.label, set()).add(m.seed)
    for m in learned:
        if len(seeds[m.label]) < 2:
            m.seed = None          # one seed: rows are the method's own, no seed mean
    _pair_partners(learned)
    return out + learned


def _seed_identity(agent) -> dict:
    """What the seeds of one method must share besides the config: the training identity
    without the stream (rgb and flow checkpoints of one label are fused as a pair)."""
    ident = training_identity(getattr(agent, "store_identity", None) or {})
    ident.pop("stream", None)
    if isinstance(ident.get("logits"), dict):    # each stream's own logits: compared per stream
        ident["logits"] = None
    return ident


def _what_differs(first: tuple, other: tuple, label: str) -> str:
    """The note of a checkpoint kept apart from ``label``'s seeds: what differs."""
    if first[0] != other[0]:
        keys = sorted(k for k in set(first[0]) | set(other[0]) if first[0].get(k) != other[0].get(k))
        return f"not averaged with {label}: another config ({', '.join(keys)})"
    diff = differences(first[1], other[1])
    return (f"not averaged with {label}: trained on " + "; ".join(diff)) if diff else \
        f"not averaged with {label}: the same seed twice"

def partner_name(method: Method) -> str | None:
    """The registered name of a learned method's partner (its agent class's ``partner_for``
    of its config), or None (also for a learned selector outside the Agent class tree)."""
    agent = next(iter(method.selectors.values()))
    partner_for = getattr(type(agent), "partner_for", None)
    return partner_for(agent.config) if method.learned and partner_for is not None else None


def _pair_partners(methods: list[Method]) -> None:
    """Give each agent with a partner (:func:`partner_name`) the partner method sharing a
    stream with it (rows on a stream the partner lacks carry no partner comparison): the one
    of the same seed if there is one, else the first."""
    for meth in methods:
        want = partner_name(meth)
        cands = [p for p in methods if p.name == want and set(meth.selectors) & set(p.selectors)]
        if cands:
            meth.partner = next((p for p in cands if p.seed == meth.seed), cands[0])


@dataclass(frozen=True)
class SelectionSummary:
    """What evaluate keeps of a :class:`Selection` (:func:`summarize`): per video, never per cell.

    video_scores: (V, C) float32 class scores, as the selection's; positions: (V,) int32
    positions with any crop kept; cells: (V,) int32 cells kept; num_kept: (V,) int64, the
    selection's own count; kept: (V, T) bool, the positions with any crop kept (budget marks,
    key precision); frame_scores: (V, T) float32 importance as the crop mean of the
    selection's scores, or None unless asked for (the report's diagnostics)."""

    video_scores: torch.Tensor
    positions: torch.Tensor
    cells: torch.Tensor
    num_kept: torch.Tensor
    mode: str = "frame"
    frame_scores: torch.Tensor | None = None
    kept: torch.Tensor | None = None


def summarize(sel: Selection, frame_scores: bool = False) -> SelectionSummary:
    """The per-video summary of ``sel`` on the CPU: its (V, T, K) mask and scores reduced to
    counts (and, with ``frame_scores``, to (V, T) crop means). Each value is computed per
    video, so summaries of blocks concatenate to the summary of the whole."""
    keep = sel.keep
    kept = keep.any(2)
    return SelectionSummary(sel.video_scores.cpu(), kept.sum(1).int().cpu(), keep.sum((1, 2)).int().cpu(),
                            sel.num_kept.cpu(), sel.mode,
                            sel.scores.float().mean(2).cpu() if frame_scores else None, kept.cpu())


def _concat(parts: list):
    """One Selection or SelectionSummary of consecutive blocks' ones (tensors joined along V)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return dataclasses.replace(first, **{f.name: torch.cat([getattr(p, f.name) for p in parts])
                                         for f in dataclasses.fields(first)
                                         if isinstance(getattr(first, f.name), torch.Tensor)})


def select_in_blocks(selector, states: States, m, *, mode: str = "frame", alpha: float = 0.0,
                     flow: States | None = None, block: int | None = None, scores: dict | None = None,
                     device="cpu", summary: bool = False, frame_scores: bool = False):
    """``selector.select`` over consecutive blocks of videos (``block``, default: those that
    fill :data:`BLOCK_BYTES`), concatenated: each block's states are read (streamed) or
    sliced when its turn comes, the next one read ahead on a background thread, and a block
    leaves unread the features its selector will not read. Every selector decides per video
    (random's draw is keyed by the video's row), so blocks bound memory and change no result.
    ``scores``: a dict kept by the caller across budgets for a selector that scores with
    :meth:`Selector.score` alone (the base ``select``): each block is scored once, later
    budgets reuse it. ``flow``: rtsae's second stream. ``device``: where the selection runs
    (``evaluate --device cuda``): each block and the selector's network go there for the
    call, the selection comes back to the CPU (so the protocols and reports never see it).
    ``summary``: return each block's :func:`summarize` (with ``frame_scores``), joined: a
    :class:`SelectionSummary` of O(V·C) memory instead of the (V, T, K) mask and scores."""
    V, T, K, D, C = states.shape
    block = block or max(1, BLOCK_BYTES // (4 * T * K * (D + C)))
    reuse = scores is not None and flow is None and type(selector).select is Selector.select
    parts = [np.arange(s, min(V, s + block)) for s in range(0, V, block)]
    scored = reuse and all((b, block) in scores for b in range(len(parts)))
    views = ("features", "feature_maps", "observer") if scored or not reads_features(selector) else ()
    on = lambda x: None if x is None else x.to(device, keep_views=True)  # noqa: E731
    read = lambda idx: (on(states.subset(idx, views=views)),  # noqa: E731
                        on(None if flow is None else flow.subset(idx, views=views)))
    out = []
    with on_device(selector, device):
        for b, (part, part_flow) in enumerate(prefetch(read, parts, depth=1 if states.streamed else 0)):
            if reuse and (b, block) in scores:
                sel = selector.select_scored(part, scores[(b, block)].to(device), m, mode=mode, alpha=alpha)
            else:
                sel = selector.select(part, m, mode=mode, alpha=alpha, **({} if part_flow is None
                                                                          else {"flow": part_flow}))
                if reuse:
                    scores[(b, block)] = sel.scores.cpu()
            check_selection(selector, sel)
            out.append(summarize(sel, frame_scores) if summary else sel.cpu())
    return _concat(out)


@contextlib.contextmanager
def on_device(selector, device):
    """The network of ``selector`` (a learned agent's, or the agent a same-classifier
    baseline wraps) on ``device`` for the ``with`` block, back where it was after."""
    module = getattr(selector, "module", None) or getattr(getattr(selector, "agent", None), "module", None)
    if module is None or torch.device(device).type == "cpu":
        yield
        return
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield
    finally:
        module.to(home)


def reads_features(selector) -> bool:
    """Whether ``selector`` reads the features: every learned agent and its same-classifier
    baselines, and a baseline that says so (``uses_features``: ``cut``); the head's other
    baselines read logits (and motion) only."""
    return bool(selector.learned or selector.uses_features) \
        or isinstance(selector, SameClassifier)


__all__ = ["BLOCK_BYTES", "Method", "MethodFailed", "SAME_CLASSIFIER", "SameClassifier", "SelectionSummary", "agent_label",
           "build_methods", "check_selection", "classifier_name", "on_device", "partner_name", "reads_features", "same_classifier_method",
           "select_in_blocks", "summarize"]
