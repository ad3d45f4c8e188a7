"""The light stage's second call, behind ``framesel train``: train an agent (its seeds, its
paper's partner) on a store's states and save its checkpoint with the identity of what it
was trained on; and the check that an agent fits the store it is evaluated on."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from agents.base import Agent, load_agent, selector_class, selector_names, write_jsonl
from agents.from_store import load_states, rows_for_list
from agents.checkpoint import check_resumable, read_checkpoint
from agents.options import make_config
from agents.papers import partner_overrides
from agents.batched_seeds import fit_together
from agents.training import load_training
from data.errors import InputError, StoreError
from data.identity import backbone_files, features_identity, require_same, store_logits_identity
from data.lists import read_list
from data.lock import exclusive, lock_file
from data.store import open_store
from data.progress import show_progress

log = logging.getLogger(__name__)


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
    load: str = "auto"                      # memory | stream | auto (data/store_rows.py)
    quiet: bool = False
    command: str = ""


def seed_checkpoint(out, seed: int, seeds: int) -> Path:
    """Where seed ``seed`` of a ``--seeds`` run saves: ``OUT-seedS.pt`` beside ``--out`` (its
    log ``OUT-seedS.jsonl``), or ``--out`` itself when one seed is trained (the default)."""
    out = Path(out)
    return out if seeds == 1 else out.with_name(f"{out.stem}-seed{seed}{out.suffix}")


def partner_checkpoint(out, partner: str) -> Path:
    """Where the partner ``partner`` of the agent trained to ``out`` saves: ``OUT.partner-
    NAME.pt`` beside it (its seeds, :func:`seed_checkpoint` of that: ``OUT.partner-NAME-seedS.pt``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partner-{partner}{out.suffix}")


def partner_config(cfg: TrainStageConfig) -> TrainStageConfig | None:
    """The train config of the agent's partner (agents/papers.py), or None when it has none:
    the same store, list, stream, seed and device, the ``--set`` items its Config also has,
    no observer (it chooses nothing), its checkpoint :func:`partner_checkpoint`."""
    cls = selector_class(cfg.agent)
    name = cls.partner_for(make_config(cls.Config, cfg.overrides, owner=cfg.agent)) if cls.learned else None
    if name is None:
        return None
    return dataclasses.replace(cfg, agent=name, out=str(partner_checkpoint(cfg.out, name)), observer=None,
                               overrides=partner_overrides(name, cfg.overrides))


def train_outputs(cfg: TrainStageConfig, seeds: int = 1, partner: bool = True) -> list[Path]:
    """The checkpoints :func:`run_train_seeds` writes: the agent's seeds, then its partner's."""
    cfgs = [cfg] + ([p] if partner and (p := partner_config(cfg)) is not None else [])
    return [seed_checkpoint(c.out, s, seeds) for c in cfgs for s in range(cfg.seed, cfg.seed + seeds)]


def run_train_seeds(cfg: TrainStageConfig, seeds: int = 1, together: bool = False,
                    partner: bool = True) -> list[Agent]:
    """Train ``seeds`` agents, seeds ``cfg.seed`` … ``cfg.seed + seeds - 1``, each with its
    own checkpoint (:func:`seed_checkpoint`; each resumes as :func:`run_train` does), then,
    with ``partner``, the agent's partner (its paper's no-selection model, agents/papers.py)
    at each of those seeds (:func:`partner_config`). ``framesel evaluate`` treats
    checkpoints that differ only in seed as one method, and pairs each with its partner.
    Every returned agent's ``checkpoint_path`` says where it is saved.

    ``together``: train the seeds in one batched pass (agents/batched_seeds.py; agents with
    ``trains_seeds_together``) instead of one after another. Off by default: on a CPU it is
    slower (0.83x at UCF101 10-crop shapes, benchmarks/stream.py) and it has not been
    measured on a GPU, where it is meant to pay."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"--seeds must be a positive integer, got {seeds!r}")
    cls = selector_class(cfg.agent)
    if together and not cls.trains_seeds_together:
        raise InputError(f"--together: {cfg.agent} trains its seeds one after another (agents that "
                         f"train seeds together: {', '.join(_capable('trains_seeds_together'))})")
    partner_cfg = partner_config(cfg) if partner else None      # before any training: bad --set fails first
    per_seed = [dataclasses.replace(cfg, seed=s, out=str(seed_checkpoint(cfg.out, s, seeds)))
                for s in range(cfg.seed, cfg.seed + seeds)]
    agents = _train_together(cls, per_seed) if together and seeds > 1 else [run_train(c) for c in per_seed]
    if partner_cfg is not None:
        agents += [run_train(dataclasses.replace(partner_cfg, seed=c.seed, out=str(seed_checkpoint(partner_cfg.out,
                                                                                                   c.seed, seeds))))
                   for c in per_seed]
    return agents


def run_train(cfg: TrainStageConfig) -> Agent:
    """Train one agent on the cached states of the training videos and save its checkpoint
    (which alone rebuilds it). A checkpoint already at ``out`` is resumed, or extended when
    only ``epochs`` grew; a finished one of the same config is left as it is (the command is
    idempotent). Sets ``agent.epochs_before``: the epochs the checkpoint had already done."""
    cls = selector_class(cfg.agent)
    if not cls.learned:
        raise InputError(f"{cfg.agent!r} is a baseline: it has nothing to train")
    config = make_config(cls.Config, cfg.overrides, owner=cfg.agent)   # before any data loads
    with checkpoint_lock(Path(cfg.out)):
        existing = _existing_checkpoint(Path(cfg.out))
        with _training_inputs(cls, config, cfg) as (states, flow, identity):
            # inside the store's `with`: streamed states read from it while the agent trains
            return _train_states(cls, config, cfg, states, flow, identity, existing)


def checkpoint_lock(out: Path):
    """Hold ``out`` (an agent checkpoint) for one training run: a second ``framesel train``
    on it (which would resume it too and overwrite its saves) stops at once with a
    StoreError naming the holder (:func:`data.lock.exclusive`, extraction's shard lock)."""
    def busy(holder: str, path: Path) -> str:
        return (f"{out}: being trained by {holder} (lock {path}); a second run would overwrite its "
                "checkpoint: wait for it or stop it")
    return exclusive(lock_file(out), beside=f"--out {out}", busy=busy)


def _train_together(cls, cfgs: list[TrainStageConfig]) -> list[Agent]:
    """run_train for each of ``cfgs`` (one per seed), the seeds trained in one batched pass
    (agents/batched_seeds.py) when their checkpoints allow (none, or all at one epoch); apart
    otherwise. Finished seeds are left as they are."""
    config = make_config(cls.Config, cfgs[0].overrides, owner=cfgs[0].agent)
    with contextlib.ExitStack() as held:
        for c in cfgs:
            held.enter_context(checkpoint_lock(Path(c.out)))
        return _train_together_locked(cls, config, cfgs)


def _train_together_locked(cls, config, cfgs: list[TrainStageConfig]) -> list[Agent]:
    existing = [_existing_checkpoint(Path(c.out)) for c in cfgs]
    with _training_inputs(cls, config, cfgs[0]) as (states, flow, identity):
        agents = [_new_agent(cls, config, c, states, identity, ck) for c, ck in zip(cfgs, existing)]
        todo = [i for i, a in enumerate(agents) if not a.finished]
        if not todo:
            return agents
        if len({agents[i].epochs_before for i in todo}) > 1:
            log.info("the seeds' checkpoints are at different epochs: training them one after another")
            return [a if a.finished else _train_states(cls, config, c, states, flow, identity, ck)
                    for a, c, ck in zip(agents, cfgs, existing)]
        logs = [_start_log(Path(cfgs[i].out), existing[i]) for i in todo]
        fit_together([agents[i] for i in todo], states, device=cfgs[0].device, log_paths=logs,
                     checkpoint_paths=[Path(cfgs[i].out) for i in todo], progress=show_progress(cfgs[0].quiet))
        for i in todo:
            agents[i].save(cfgs[i].out, command=cfgs[i].command, finished=True)
    return agents


@contextlib.contextmanager
def _training_inputs(cls, config, cfg: TrainStageConfig):
    """(states, flow states or None, store identity) of the training list, the store open
    while they are used (streamed states read from it)."""
    videos = read_list(cfg.train_list)
    with open_store(cfg.store) as store:
        rows = rows_for_list(store, videos)
        load = _training_load(cls, cfg.load)
        states = load_states(store, cfg.stream, rows, observer=cfg.observer,
                             feature_maps=cls.needs_feature_maps, load=load)
        second = _second_stream(config, cfg.stream, store)
        flow = None if second is None else load_states(store, second, rows, load=load)
        read = [cfg.stream] + ([second] if second is not None else [])
        identity = dict(store.identity(), stream=cfg.stream, observer=cfg.observer,
                        train_list=str(cfg.train_list), train_list_sha256=videos.sha256,
                        features=features_identity(store.attrs), backbone_files=backbone_files(store.attrs),
                        logits=store_logits_identity(store, read))
        if second is not None:
            identity["second_stream"] = second
        yield states, flow, identity


def _new_agent(cls, config, cfg: TrainStageConfig, states, identity: dict, existing) -> Agent:
    """The agent ``cfg`` trains, checked against the checkpoint ``existing`` at its --out
    (config, seed, store) before any weights load. Sets ``epochs_before`` and ``finished``
    (the checkpoint is done: its weights and history are loaded, its log rewritten)."""
    _, _, _, D, C = states.shape
    if hasattr(cls, "for_states"):      # agents whose shape depends on the states (glimpse's cube)
        agent = cls.for_states(config, states, seed=cfg.seed)
    else:
        agent = cls(config, num_classes=C, feature_dim=D, seed=cfg.seed)
    agent.store_identity = identity
    agent.epochs_before, agent.finished, agent.checkpoint_path = 0, False, Path(cfg.out)
    if existing is not None:
        out = Path(cfg.out)
        check_resumable(agent, existing, out)
        agent.epochs_before = int(existing["epoch"])
        if existing.get("finished") and agent.epochs_before == agent.total_epochs():
            load_training(agent, out)
            write_jsonl(out.with_suffix(".jsonl"), agent.history)
            log.info("%s is already trained for %d epochs; nothing to do", out, agent.epochs_before)
            agent.finished = True
    return agent


def _start_log(out: Path, existing) -> Path:
    """The training log beside ``out``: a fresh run starts it empty; a resumed one restarts
    it from the checkpoint's history, so rows of an epoch killed after its checkpoint go."""
    _make_parent(out)
    log_path = out.with_suffix(".jsonl")
    write_jsonl(log_path, existing["history"] if existing is not None else [])
    return log_path


def _train_states(cls, config, cfg: TrainStageConfig, states, flow, identity: dict, existing) -> Agent:
    """run_train's agent on the loaded ``states`` (and ``flow``): built, resumed or left as
    it is when finished, trained and saved."""
    agent = _new_agent(cls, config, cfg, states, identity, existing)
    if agent.finished:
        return agent
    out = Path(cfg.out)
    log_path = _start_log(out, existing)
    agent.fit(states, device=cfg.device, log_path=log_path, checkpoint_path=out,
              progress=show_progress(cfg.quiet), **({} if flow is None else {"flow": flow}))
    agent.save(out, command=cfg.command, finished=True)
    return agent


def _training_load(cls, load: str) -> str:
    """``load`` for an agent whose epochs read mini-batches (``streams_training``); the
    others read all their states at once: ``stream`` is refused, ``auto`` holds them."""
    if cls.streams_training or load == "memory":
        return load
    if load == "stream":
        raise InputError(f"--load stream: {cls.name} reads all of its training states at once; "
                         f"use --load memory (agents that stream: {', '.join(_capable('streams_training'))})")
    return "memory"


def _capable(flag: str) -> list[str]:
    """The agents whose class sets ``flag`` (streams_training, trains_seeds_together)."""
    return [n for n in selector_names(learned=True) if getattr(selector_class(n), flag, False)]


def _second_stream(config, stream: str, store) -> str | None:
    """The stream a two-stream agent (rtsae ``two_stream=True``, 004 eqs. 15–17) fuses with
    ``stream``: the store's flow, with rgb as the first, the pairing ``framesel evaluate``
    feeds it (its "fused" rows read rgb and flow). None for single-stream agents."""
    if not getattr(config, "two_stream", False):
        return None
    if stream != "rgb":
        raise InputError(f"--set two_stream=true fuses --stream rgb with the store's flow stream; "
                         f"got --stream {stream}")
    if not store.has("flow/features"):
        raise InputError(f"--set two_stream=true needs a flow stream; {store.path} has only "
                         f"{', '.join(store.streams)}")
    return "flow"


def _existing_checkpoint(out: Path) -> dict | None:
    """The checkpoint at ``out``, None when nothing is there; anything else at ``out`` (a
    text file, a directory, another torch file) is refused and left untouched."""
    if not out.exists():
        return None
    try:
        return read_checkpoint(out)
    except InputError as err:
        raise InputError(f"--out {out} exists and is not an agent checkpoint train can resume "
                         f"({err}); it is left untouched: choose another --out") from None


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the directory of --out {out}: {err.strerror or err}") from None


def check_agent_matches(agent: Agent, store) -> None:
    """Refuse an agent for another class count or feature size, one trained on features that
    mean something else (other backbone weights, settings or schema: data/identity.py), and,
    for an agent that reads the per-frame logits, one trained against other logits (a re-run
    `framesel head`); every message names both sides."""
    mine = agent.store_identity or {}
    classes = len(store.attrs.get("classes", []))
    if classes and agent.num_classes != classes:
        raise InputError(f"agent {agent.name} predicts {agent.num_classes} classes, {store.path} has {classes}")
    stream = mine.get("stream")
    if stream and store.has(f"{stream}/features"):
        D = store.shape(f"{stream}/features")[-1]
        if agent.feature_dim != D:
            raise InputError(f"agent {agent.name} reads {stream} features of size {agent.feature_dim}, "
                             f"{store.path} has {D}")
    theirs = dict(store.identity(), features=features_identity(store.attrs))
    if "features" in mine:
        files = mine.get("backbone_files") or {}
        now = backbone_files(store.attrs)
        named = "; ".join(f"{s}: trained on {files.get(s)}, {store.path} has {now.get(s)}"
                          for s in sorted(set(files) | set(now)) if files.get(s) != now.get(s))
        require_same(mine["features"], theirs["features"],
                     what=f"agent {agent.name} was trained on features that mean something else than "
                          f"{store.path}'s: they" + (f" ({named})" if named else ""),
                     fix="evaluate it on a store made with the same weights and settings, or retrain it")
    else:                                      # checkpoints from before the features identity
        for key in ("schema", "config_sha256"):
            if mine.get(key) != theirs.get(key):
                raise InputError(f"agent {agent.name} was trained on a store with {key} {mine.get(key)!r}, "
                                 f"{store.path} has {theirs.get(key)!r}")
    if agent.reads_logits and mine.get("logits"):
        now = store_logits_identity(store, list(mine["logits"]))
        require_same(mine["logits"], now,
                     what=f"agent {agent.name} was trained against per-frame logits that {store.path} no "
                          "longer holds (`framesel head` was re-run?): recorded vs the store's",
                     fix="retrain the agent on the store's current logits, or restore the head it was trained against")


__all__ = ["TrainStageConfig", "run_train", "run_train_seeds", "seed_checkpoint", "partner_checkpoint", "partner_config",
           "train_outputs", "check_agent_matches", "load_agent"]
