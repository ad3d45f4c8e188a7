"""The light stage's two library calls behind ``framesel head`` and ``framesel train``."""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from agents.base import Agent, load_agent, selector_class
from agents.cache import load_states, rows_for_list
from agents.head import HeadConfig, apply_head, train_head
from data.errors import InputError
from data.lists import read_list
from data.store import open_store

log = logging.getLogger(__name__)


def _quiet(quiet: bool) -> bool:
    return quiet or bool(os.environ.get("CI"))


@dataclass(frozen=True)
class HeadStageConfig:
    store: str
    train_list: str
    streams: tuple[str, ...] = ()          # () = every stream of the store
    head: HeadConfig = field(default_factory=HeadConfig)
    device: str = "cpu"
    quiet: bool = False
    command: str = ""


def run_head(cfg: HeadStageConfig) -> dict:
    """Train the classifier CL per stream on the training videos' cached features, then write
    per-frame logits (V, T, K, C) for every done video with their provenance. Returns
    {stream: provenance}."""
    videos = read_list(cfg.train_list)
    out = {}
    with open_store(cfg.store, "a") as store:
        C = len(store.attrs.get("classes", []))
        if len(videos.classes) != C:
            raise InputError(f"{cfg.train_list} has {len(videos.classes)} classes, the store {C}")
        rows = rows_for_list(store, videos)
        multilabel = bool(store.attrs.get("multilabel"))
        for stream in cfg.streams or tuple(store.streams):
            feats = store.read_rows(f"{stream}/features", rows)               # (V, T, K, D) float16
            head, prov = train_head(feats, store.labels[rows], C, cfg.head, multilabel=multilabel,
                                    device=cfg.device, progress=not _quiet(cfg.quiet),
                                    train_list_sha256=videos.sha256)
            prov.update(by="framesel head", stream=stream, train_list=str(cfg.train_list),
                        command=cfg.command, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            prov.pop("history", None)
            _write_logits(store, stream, head, prov, cfg.device)
            _save_head(store, stream, head)
            out[stream] = prov
    return out


def _write_logits(store, stream, head, prov, device, chunk=256) -> None:
    done = store.done()
    for start in range(0, len(done), chunk):
        rows = done[start:start + chunk]
        logits = apply_head(head, store.read_rows(f"{stream}/features", rows), device=device)
        store.add_logits(stream, logits, prov, indices=rows)


def _save_head(store, stream, head) -> None:
    """Keep the head's weights inside the store, so its logits can be recomputed and checked."""
    for name, value in head.state_dict().items():
        arr = value.detach().cpu().numpy().astype(np.float32)
        key = f"heads/{stream}/{name}"
        store._create_array(key, arr.shape, "float32", arr.shape or (1,))
        store._write_all(key, arr)


@dataclass(frozen=True)
class TrainStageConfig:
    store: str
    agent: str
    train_list: str
    out: str
    stream: str = "rgb"
    observer: str | None = None             # a cheap stream for dsn's observation network
    overrides: tuple[tuple[str, object], ...] = ()   # agent Config fields, e.g. (("epochs", 5),)
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False
    command: str = ""


def run_train(cfg: TrainStageConfig) -> Agent:
    """Train one agent on the cached states of the training videos and save its checkpoint
    (which alone rebuilds it); a checkpoint already at ``out`` is resumed."""
    cls = selector_class(cfg.agent)
    if not cls.learned:
        raise InputError(f"{cfg.agent!r} is a baseline: it has nothing to train")
    valid = {f.name for f in dataclasses.fields(cls.Config)}
    bad = [k for k, _ in cfg.overrides if k not in valid]
    if bad:
        raise InputError(f"{cfg.agent} has no option {', '.join(bad)}; options: {', '.join(sorted(valid))}")
    videos = read_list(cfg.train_list)
    with open_store(cfg.store) as store:
        rows = rows_for_list(store, videos)
        states = load_states(store, cfg.stream, rows, observer=cfg.observer,
                             feature_maps=getattr(cls, "needs_feature_maps", False))
        identity = dict(store.identity(), stream=cfg.stream, observer=cfg.observer,
                        train_list=str(cfg.train_list), train_list_sha256=videos.sha256)
    config = cls.Config(**dict(cfg.overrides))
    _, _, _, D, C = states.shape
    if hasattr(cls, "for_states"):      # agents whose shape depends on the states (glimpse's cube)
        agent = cls.for_states(config, states, seed=cfg.seed)
    else:
        agent = cls(config, num_classes=C, feature_dim=D, seed=cfg.seed)
    agent.store_identity = identity
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    agent.fit(states, device=cfg.device, log_path=out.with_suffix(".jsonl"), checkpoint_path=out,
              progress=not _quiet(cfg.quiet))
    agent.save(out, command=cfg.command, finished=True)
    return agent


def check_agent_matches(agent: Agent, store) -> None:
    """An agent trained on another store (other backbone, settings or schema) is refused."""
    mine = agent.store_identity or {}
    theirs = store.identity()
    for key in ("schema", "config_sha256"):
        if mine.get(key) != theirs.get(key):
            raise InputError(f"agent {agent.name} was trained on a store with {key} {mine.get(key)!r}, "
                             f"{store.path} has {theirs.get(key)!r}")


__all__ = ["HeadStageConfig", "run_head", "TrainStageConfig", "run_train", "check_agent_matches", "load_agent"]
