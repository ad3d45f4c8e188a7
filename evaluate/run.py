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
from agents.train_stage import check_agent_matches
from data import __version__
from data.errors import InputError, StoreError
from data.jsonable import plain
from data.lists import read_list
from data.store import open_store
from data.store_rows import StoreRows
from data.progress import show_progress
from data.space import write_error
from evaluate import keys
from evaluate.compute import CostModel, selector_observer
from evaluate.diagnostics import collect_diagnostics
from evaluate.protocols import TATTN_WEIGHTS, TSN_WEIGHTS, ProtocolConfig, build_methods
from evaluate.splits import evaluate_splits
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
    load: str = "auto"        # memory | stream | auto: where the test states live (data/store_rows.py)
    quiet: bool = False       # no progress bar (it is off too when the CI environment variable is set)
    per_video: bool = False   # also write per_video.csv: select_classify's kept frames, class, score per video
    command: str = ""
    truth: str | None = None  # segment truth of the test videos (untrimmed composites): evaluate/keys.py


def run_evaluate(cfg: EvaluateConfig) -> dict:
    """Run the protocols on each test list (one split each) and write the report directory.
    Returns the written paths and ``failed``: the methods whose rows failed
    (:func:`failures`; also in the report and results.json's ``meta.failed``)."""
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
        baselines = pick_baselines(cfg.baselines, store, truth=cfg.truth is not None)
        maps = any(a.needs_feature_maps for a in agents)
        splits, first, costs, evaluated, clusters, truths = {}, None, {}, [], {}, {}
        for name, list_path in zip(split_names(cfg.test_lists), cfg.test_lists):
            rows = rows_for_list(store, read_list(list_path))
            states = {s: load_states(store, s, rows, feature_maps=maps, load=cfg.load) for s in streams}
            if cfg.truth is not None:
                truths[name] = keys.load_truth(store, rows, cfg.truth)
                states, clusters[name] = keys.with_key(states, truths[name]["key"]), truths[name]["members"]
            methods = attach_observers(store, rows, states, build_methods(baselines, agents, streams))
            splits[name] = (states, methods)
            # the split's videos' cost record; each agent's observer: protocols._gflops. None
            # (GFLOPs left empty) when a stream's backbone cost is unknown (imported features)
            costs[name] = known_costs(CostModel.from_store(store, rows), streams)
            first, evaluated = first or (states, rows), evaluated + [rows]
        result_rows = evaluate_splits(splits, config=cfg.protocol, costs=costs,
                                      progress=show_progress(cfg.quiet), clusters=clusters or None)
        per_video = per_video_rows(result_rows, store)
        states, rows = first
        thumbs = StoreRows(store, "thumbnails", rows, dtype=np.uint8) if store.has("thumbnails") else None
        extras = collect_diagnostics(states, next(iter(splits.values()))[1], m=diagnostic_m(cfg.protocol.ms, store.T),
                                     sample=cfg.sample_videos, thumbnails=thumbs, classes=store.attrs.get("classes"))
        everything = CostModel.from_store(store, np.unique(np.concatenate(evaluated)))
        meta = _meta(cfg, store, agents, known_costs(everything, streams, warn=False), streams)
        if truths:
            meta["truth"] = {name: keys.truth_meta(t, splits[name][0]) for name, t in truths.items()}
    failed = failures(result_rows)
    try:
        paths = write_report(cfg.out, [r for r in result_rows if "failed" not in r], {**meta, "failed": failed}, extras)
        if cfg.per_video:
            paths["per_video"] = write_per_video(Path(cfg.out) / "per_video.csv", per_video)
    except StoreError:
        raise
    except OSError as err:        # a full disk: name the report, not only "No space left on device"
        raise StoreError(write_error(err, f"writing the report to {cfg.out}")
                         + "; the results were computed but not written: make room and run the same "
                           "command again") from err
    return {**paths, "failed": failed}


def failures(rows) -> list[dict]:
    """One entry per (split, method, seed, stream) whose rows failed (a method whose selection
    raised or scored NaN: evaluate.methods.MethodFailed), with the cause and the row count."""
    out: dict = {}
    for r in rows:
        if "failed" in r:
            key = (r["split"], r["method"], r["seed"], r["stream"])
            entry = out.setdefault(key, {"split": r["split"], "method": r["method"], "seed": r["seed"],
                                         "stream": r["stream"], "cause": r["failed"], "rows": 0})
            entry["rows"] += 1
    return list(out.values())


def split_names(test_lists) -> list[str]:
    """The split name of each ``--test`` list: its file name without the suffix
    (``testlist01``); lists of one file name in different folders get as many folders as
    tell them apart (``fold1/test``, ``fold2/test``), so no split's rows replace another's.
    The same file given twice is refused."""
    seen: dict = {}
    for p in map(Path, test_lists):
        if p.resolve() in seen:
            raise InputError(f"--test {p}: given twice (also as {seen[p.resolve()]}); each --test is one split")
        seen[p.resolve()] = p
    parts = [Path(p).resolve().with_suffix("").parts for p in test_lists]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(x[-d:]) for x, d in zip(parts, depth)]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return names
        depth = [d + 1 if n in clash else d for n, d in zip(names, depth)]


def pick_baselines(wanted, store, *, truth: bool = False) -> tuple[str, ...]:
    """The baselines to run: ``wanted``, or () = every registered one. A store without a
    ``motion`` node (no flow measured: ``--flow none``, imported features) leaves the motion
    baseline out of the default set; without a truth file those that need the key mask
    (``key_oracle``) are left out of it. Asking for either is an error saying why."""
    from agents.base import selector_class

    if "motion" in wanted and not store.has("motion"):
        raise InputError(f"--baselines motion: {store.path} has no `motion` node (mean flow magnitude; "
                         "extracted with --flow none, or imported features)")
    needy = [b for b in wanted if selector_class(b).needs_key]
    if needy and not truth:
        raise InputError(f"--baselines {','.join(wanted)}: {', '.join(needy)} needs the segment truth: add --truth FILE")
    if wanted:
        return tuple(wanted)
    names = tuple(b for b in selector_names(learned=False) if truth or not selector_class(b).needs_key)
    if not store.has("motion"):
        log.info("%s has no motion node: the motion baseline is left out", store.path)
        names = tuple(n for n in names if n != "motion")
    return names


def known_costs(costs: CostModel, streams, warn: bool = True) -> CostModel | None:
    """``costs``, or None (GFLOPs left empty, the report says so) when a stream's backbone cost
    is unknown: features imported without ``--gflops-per-frame`` (logged once when ``warn``)."""
    unknown = [s for s in streams if s not in costs.backbone]
    if unknown and not warn:
        return None
    if unknown:
        log.warning("no backbone GFLOPs recorded for stream(s) %s (imported features?): compute is not counted",
                    ", ".join(unknown))
        return None
    return costs


PER_VIDEO_FIELDS = ("split", "protocol", "method", "seed", "stream", "m", "path", "predicted", "score", "kept_frames")


def per_video_rows(rows: list[dict], store) -> list[dict]:
    """Take every row's ``_per_video`` records (evaluate.select_classify) out of ``rows`` and
    return them as flat records of :data:`PER_VIDEO_FIELDS`: the video's path, its class name,
    the score and the kept positions as decoded frame indices (the store's ``frame_index``);
    the seed-mean and split-mean rows' copies are dropped."""
    out, classes, paths = [], store.attrs.get("classes") or [], None
    for row in rows:
        records = row.pop("_per_video", None)
        if not records or row.get("seed") == "mean" or row.get("split") == "mean":
            continue
        frames = store.read_rows("frame_index", [r["row"] for r in records])
        paths = paths or store.paths
        for r, fi in zip(records, frames):
            out.append({**{k: row.get(k) for k in PER_VIDEO_FIELDS[:6]}, "path": paths[r["row"]],
                        "predicted": classes[r["predicted"]] if classes else r["predicted"],
                        "score": r["score"], "kept_frames": " ".join(str(int(fi[p])) for p in r["positions"])})
    return out


def write_per_video(path: Path, records: list[dict]) -> Path:
    """per_video.csv of :func:`per_video_rows`' records."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=PER_VIDEO_FIELDS)
        writer.writeheader()
        writer.writerows(records)
    return path


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
        "config": plain(dataclasses.asdict(cfg)),
        "seeds": {"protocol": cfg.protocol.seed, **{p: a.seed for p, a in zip(cfg.agents, agents)}},
        "agents": {p: {"name": a.name, "config": plain(dataclasses.asdict(a.config)),
                       "store": a.store_identity, "epochs": len(a.history)} for p, a in zip(cfg.agents, agents)},
        "versions": {"framesel": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "opencv": cv2.__version__, "python": platform.python_version()},
        "store": store.identity(), "store_settings": store.attrs.get("settings"),
        "extraction_versions": store.attrs.get("versions"),
        "logits_provenance": {s: {k: v for k, v in p.items() if k != "history"}
                              for s, p in store.logits_provenance().items()},
        "streams": list(streams), "classes": store.attrs.get("classes"),
        "compute": costs.describe() if costs is not None else
        {"note": "not counted: the store records no backbone GFLOPs for an evaluated stream (imported features)"},
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


