"""``framesel evaluate``: every protocol on a store and a set of agent checkpoints → a report."""
from __future__ import annotations

import dataclasses
import logging
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from agents.base import load_agent, selector_names
from agents.from_store import head_logits_ok, load_states, rows_for_list
from agents.papers import departures_of
from agents.stage import check_agent_matches
from data import __version__
from data.errors import InputError
from data.lists import read_list
from data.store import open_store
from data.stream import StoreRows
from data.progress import show_progress
from evaluate import keys
from evaluate.compute import CostModel, selector_observer
from evaluate.diagnostics import collect_diagnostics
from evaluate.protocols import (TATTN_WEIGHTS, TSN_WEIGHTS, ProtocolConfig, build_methods,
                                 evaluate_splits)
from evaluate.report import check_report_dir, write_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    store: str
    test_lists: tuple[str, ...]
    out: str
    agents: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()          # () = every registered baseline
    streams: tuple[str, ...] = ()            # () = every stream with dataset logits
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    sample_videos: int = 4
    clamp_m: bool = False     # budgets above T are evaluated as T (and said so); else refused
    load: str = "auto"        # memory | stream | auto: where the test states live (data/stream.py)
    quiet: bool = False       # no progress bar (it is off too when the CI environment variable is set)
    command: str = ""
    truth: str | None = None  # segment truth of the test videos (untrimmed composites): evaluate/keys.py


def run_evaluate(cfg: EvaluateConfig) -> dict:
    """Run the protocols on each test list (one split each) and write the report directory.
    Returns the written paths."""
    check_report_dir(cfg.out)      # before any work: a bad --out would lose it all at the end
    agents = [load_agent(p) for p in cfg.agents]
    with open_store(cfg.store) as store:
        for agent, path in zip(agents, cfg.agents):
            try:
                check_agent_matches(agent, store)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None
        streams = check_streams(cfg.streams, store)
        check_fusion(cfg.protocol.fusion, streams, store.streams)
        cfg = dataclasses.replace(cfg, protocol=dataclasses.replace(
            cfg.protocol, ms=fit_budgets(cfg.protocol.ms, store.T, clamp=cfg.clamp_m)))
        baselines = choose_baselines(cfg.baselines, truth=cfg.truth is not None)
        maps = any(getattr(a, "needs_feature_maps", False) for a in agents)
        splits, first, costs, evaluated, clusters, truths = {}, None, {}, [], {}, {}
        for list_path in cfg.test_lists:
            rows = rows_for_list(store, read_list(list_path))
            states = {s: load_states(store, s, rows, feature_maps=maps, load=cfg.load) for s in streams}
            name = Path(list_path).stem
            if cfg.truth is not None:
                truths[name] = keys.load_truth(store, rows, cfg.truth)
                states, clusters[name] = keys.with_key(states, truths[name]["key"]), truths[name]["members"]
            methods = attach_observers(store, rows, states, build_methods(baselines, agents, streams))
            splits[name] = (states, methods)
            # the split's videos' cost record; each agent's observer: protocols._gflops
            costs[name] = CostModel.from_store(store, rows)
            first, evaluated = first or (states, rows), evaluated + [rows]
        result_rows = evaluate_splits(splits, config=cfg.protocol, costs=costs,
                                      progress=show_progress(cfg.quiet), clusters=clusters or None)
        states, rows = first
        thumbs = StoreRows(store, "thumbnails", rows, dtype=np.uint8) if store.has("thumbnails") else None
        extras = collect_diagnostics(states, next(iter(splits.values()))[1], m=diagnostic_m(cfg.protocol.ms, store.T),
                                     sample=cfg.sample_videos, thumbnails=thumbs, classes=store.attrs.get("classes"))
        meta = _meta(cfg, store, agents, CostModel.from_store(store, np.unique(np.concatenate(evaluated))), streams)
        if truths:
            meta["truth"] = {name: keys.truth_meta(t, splits[name][0]) for name, t in truths.items()}
    return write_report(cfg.out, result_rows, meta, extras)


def choose_baselines(named, *, truth: bool) -> tuple[str, ...]:
    """The baselines to run: those ``named``, or every registered one; without a truth file
    those that need the key mask (``key_oracle``) are left out of the default and refused
    when named."""
    from agents.base import selector_class

    if not named:
        return tuple(b for b in selector_names(learned=False) if truth or not getattr(selector_class(b), "needs_key",
                                                                                      False))
    needy = [b for b in named if getattr(selector_class(b), "needs_key", False)]
    if needy and not truth:
        raise InputError(f"--baselines {','.join(named)}: {', '.join(needy)} needs the segment truth: add --truth FILE")
    return tuple(named)


def attach_observers(store, rows, states: dict, methods) -> list:
    """Give every agent the observer stream its checkpoint recorded (``store_identity
    ["observer"]``, ``framesel train --observer``) and no other: the shared ``states`` carry
    none, so an agent trained without one never reads another agent's. Each observer's
    features of ``rows`` are read once. Returns ``methods`` (their ``inputs`` filled)."""
    read: dict = {}
    for method in methods:
        for stream, sel in method.selectors.items():
            observer = selector_observer(sel) if method.learned and stream in states else None
            if observer is None:
                continue
            if not store.has(f"{observer}/features"):
                raise InputError(f"agent {sel.name} observes stream {observer!r}, which {store.path} lacks "
                                 f"(its streams: {', '.join(store.streams)})")
            if observer not in read:
                view = StoreRows(store, f"{observer}/features", rows)
                read[observer] = view if states[stream].streamed else view.materialise()
            method.inputs[stream] = dataclasses.replace(states[stream], observer=read[observer])
    return methods


def check_streams(wanted, store) -> tuple[str, ...]:
    """The streams to evaluate: ``wanted`` (each must be in the store with logits over its
    classes), or () = every such stream."""
    ready = tuple(s for s in store.streams if head_logits_ok(store, s))
    for s in wanted:
        if s not in store.streams:
            raise InputError(f"--streams {','.join(wanted)}: {store.path} has no stream {s!r} "
                             f"(its streams: {', '.join(store.streams)})")
        if s not in ready:
            raise InputError(f"--streams {','.join(wanted)}: stream {s!r} of {store.path} has no per-frame "
                             "logits over its classes yet; run `framesel head STORE --train LIST` first")
    if not (wanted or ready):
        raise InputError(f"{store.path} has no per-frame logits over its classes yet; "
                         "run `framesel head STORE --train LIST` first")
    return tuple(wanted) or ready


def check_fusion(fusion, streams, store_streams) -> None:
    """Explicit fusion weights must name evaluated streams. The default weight sets (rgb and
    flow) are simply skipped by the fusion protocol when the states lack one of them."""
    for weights in fusion:
        if weights in (TSN_WEIGHTS, TATTN_WEIGHTS):
            continue
        for name, _ in weights:
            if name in streams:
                continue
            where = ("the store's streams" if name not in store_streams else "the evaluated streams (--streams)")
            typed = ",".join(f"{n}={w:g}" for n, w in weights)
            raise InputError(f"--fusion {typed}: no stream {name!r} among {where}: "
                             f"{', '.join(streams if name in store_streams else store_streams)}")


def fit_budgets(ms, T: int, *, clamp: bool) -> tuple[int, ...]:
    """The frame budgets to evaluate with T positions per video. m = T keeps all; an m > T
    is an InputError naming T, unless ``clamp`` (the default budgets): then it is evaluated
    as T and a warning says which budgets run."""
    over = sorted({m for m in ms if m > T})
    if not over:
        return tuple(ms)
    if not clamp:
        raise InputError(f"--m {','.join(map(str, over))}: more than the store's T = {T} positions per video; "
                         f"a budget m must be at most {T} (m = {T} keeps all)")
    fitted = tuple(sorted({min(m, T) for m in ms}))
    log.warning("the store has T = %d positions per video: evaluating m = %s (m = %d keeps all)",
                T, ",".join(map(str, fitted)), T)
    return fitted


def diagnostic_m(ms, T: int) -> int:
    """The budget the diagnostics show: the evaluated m nearest half the positions (000's
    m = 12 of 25); keeping all T would make every per-class gain zero."""
    candidates = [m for m in ms if m < T] or [max(1, T // 2)]
    return min(candidates, key=lambda m: (abs(m - T / 2), m))


def _meta(cfg: EvaluateConfig, store, agents, costs: CostModel, streams) -> dict:
    import cv2

    return {
        "command": cfg.command,
        "config": json_ready(dataclasses.asdict(cfg)),
        "seeds": {"protocol": cfg.protocol.seed, **{p: a.seed for p, a in zip(cfg.agents, agents)}},
        "agents": {p: {"name": a.name, "config": json_ready(dataclasses.asdict(a.config)),
                       "store": a.store_identity, "epochs": len(a.history)} for p, a in zip(cfg.agents, agents)},
        "versions": {"framesel": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "opencv": cv2.__version__, "python": platform.python_version()},
        "store": store.identity(), "store_settings": store.attrs.get("settings"),
        "extraction_versions": store.attrs.get("versions"),
        "logits_provenance": {s: {k: v for k, v in p.items() if k != "history"}
                              for s, p in store.logits_provenance().items()},
        "streams": list(streams), "classes": store.attrs.get("classes"),
        "compute": costs.describe(),
        "departures": agent_departures(agents),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def agent_departures(agents) -> dict[str, list[str]]:
    """{agent name: where it departs from its paper} for the evaluated agents (agents/papers.py
    :func:`departures_of`: its class's list and its checkpoints' non-default settings), each
    line once per name in first-seen order: the report's "Departures from the papers"."""
    out: dict[str, list[str]] = {}
    for agent in agents:
        lines = out.setdefault(agent.name, [])
        lines += [d for d in departures_of(agent) if d not in lines]
    return out


def json_ready(x):
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return x
