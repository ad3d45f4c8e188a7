"""The one training template of every learned agent (``Agent.fit`` runs :func:`fit`) and of
the classes' head (agents/head.py: ``HeadRun``).

The template owns everything a training run does besides the agent's own step: the epoch
loop and its progress bar, the stages (each with its optimizer), the learning-rate
schedule, one history row per epoch (``epoch``, ``lr``, ``seconds``, ``stage`` when there
are several, the validation metrics), the JSONL log, the per-epoch atomic checkpoint, the
resume from it (weights, optimizer, epochs done, RNG states including the loop's own
generator, the agent's checkpointed extras) and the seeds: a fresh run seeds torch's global
RNG and the loop's generator with the agent's seed.

An agent fills in its pieces (defaults in :class:`agents.base.Agent`):

- ``make_optimizer(stage) -> Optimizer`` — required;
- ``train_epoch(ctx, epoch) -> dict`` — required: one pass over ``ctx.train`` with
  ``ctx.optimizer`` and ``ctx.generator`` (every random draw of the loop comes from it or
  from torch's global RNG); returns the epoch's metrics;
- ``prepare(ctx)`` — check inputs, precompute tensors (keep them on ``ctx`` as attributes),
  put checkpointed objects (``state_dict``/``load_state_dict``) in ``ctx.state[name]``;
- ``stages() -> ((name, epochs), ...)`` — default one stage, ``("train", config.epochs)``;
- ``lr_at(epoch) -> float | None`` — the schedule (None: the optimizer's own lr);
- ``start_fresh(ctx)`` — once, when the run does not resume (e.g. DSN's head init);
- ``validate(ctx, epoch) -> dict`` — validation metrics when ``fit`` got ``val``;
- ``check_states(states, what)`` — refuse inputs that do not fit (default: (D, C) as built);
- ``fit_inputs`` — names of extra keyword inputs ``fit`` accepts (rtsae's ``flow``),
  found in ``ctx.inputs``.

Resume: a checkpoint at ``checkpoint_path`` is continued when it is a resumable checkpoint
of the same agent, config (only ``epochs`` may change), seed, shapes and store
(agents/checkpoint.check_resumable); every epoch it is rewritten atomically, so a run killed
at any point and started again ends with the weights and history of an uninterrupted run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agents.checkpoint import append_jsonl, restore_weights
from agents.states import States
from agents.checkpoint import BASE_KEYS, check_resumable, read_checkpoint
from data.errors import InputError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TrainContext:
    """What one ``fit`` call trains with. An agent's ``prepare`` may add its own attributes
    (precomputed inputs); ``optimizer`` and ``stage`` are set by the template."""

    train: States
    device: Any
    generator: torch.Generator            # CPU generator seeded with the agent's seed
    val: States | None = None
    progress: bool = False
    inputs: dict = field(default_factory=dict)      # extra fit inputs named in Agent.fit_inputs
    state: dict = field(default_factory=dict)       # name -> checkpointed object (state_dict)
    optimizer: torch.optim.Optimizer | None = None
    stage: str | None = None


def fit(agent, train: States, *, device="cpu", log_path=None, checkpoint_path=None, progress=False,
        val: States | None = None, **inputs) -> list[dict]:
    """Train ``agent`` on ``train`` for ``agent.total_epochs()`` epochs (resuming the
    checkpoint at ``checkpoint_path`` when there is one); returns ``agent.history``."""
    unknown = sorted(set(inputs) - set(agent.fit_inputs))
    if unknown:
        raise TypeError(f"{agent.name}.fit() got unexpected inputs {', '.join(unknown)}")
    agent.check_states(train, "training")
    if val is not None:
        agent.check_states(val, "validation")
    agent.module.to(device)
    ctx = TrainContext(train=train, device=device, generator=torch.Generator().manual_seed(agent.seed),
                       val=val, progress=progress, inputs=dict(inputs))
    agent.prepare(ctx)
    start = resume(agent, ctx, checkpoint_path)
    if start == 0:
        # A fresh run is a function of (seed, config, data) only, whatever ran before it;
        # a resumed one continues the checkpoint's RNG states instead.
        torch.manual_seed(agent.seed)
        agent.start_fresh(ctx)
    total = agent.total_epochs()
    for epoch in tqdm(range(start, total), desc=agent.name, disable=not progress, initial=start, total=total):
        row = _run_epoch(agent, ctx, epoch)
        end_epoch(agent, ctx, row, log_path=log_path, checkpoint_path=checkpoint_path)
    agent.module.eval()
    return agent.history


def stage_of(agent, epoch: int) -> str:
    """The stage 0-based ``epoch`` belongs to (the last stage for epochs past the end)."""
    stages = agent.stages()
    for name, epochs in stages:
        if epoch < epochs:
            return name
        epoch -= epochs
    return stages[-1][0]


def _run_epoch(agent, ctx: TrainContext, epoch: int) -> dict:
    """One epoch: its stage's optimizer (a new one when the stage changes), the scheduled
    lr, the agent's pass, the template's columns and the validation metrics."""
    t0 = time.perf_counter()
    stage = stage_of(agent, epoch)
    if stage != ctx.stage:
        ctx.optimizer, ctx.stage = agent.make_optimizer(stage), stage
    lr = agent.lr_at(epoch)
    if lr is not None:
        set_lr(ctx.optimizer, lr)
    agent.module.train()
    row = dict(agent.train_epoch(ctx, epoch))
    row.update(epoch=epoch + 1, lr=ctx.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
    if len(agent.stages()) > 1:
        row["stage"] = stage
    if ctx.val is not None:
        row.update(agent.validate(ctx, epoch))
    return row


def end_epoch(agent, ctx: TrainContext, row: dict, *, log_path=None, checkpoint_path=None) -> None:
    """History, one JSONL row, and the resumable training state (optimizer, epochs done,
    RNG, the agent's ``ctx.state`` objects, the stage of a multi-stage agent), saved
    atomically at ``checkpoint_path``. The state stays on the agent, so the finished
    checkpoint a caller saves afterwards is resumable (and extendable) too."""
    agent.history.append(row)
    append_jsonl(log_path, row)
    extras = {name: obj.state_dict() for name, obj in ctx.state.items()}
    if len(agent.stages()) > 1:
        extras["stage"] = ctx.stage
    agent.training_state = dict(optimizer=ctx.optimizer.state_dict(), epoch=int(row["epoch"]),
                                rng=get_rng_state(ctx.generator), **extras)
    if checkpoint_path is not None:
        agent.save(checkpoint_path, **agent.training_state)


def load_training(agent, path, *, map_location="cpu") -> dict | None:
    """The checkpoint at ``path`` (None when there is none), read as data by the one reader
    (agents/checkpoint.read_checkpoint) and checked resumable by ``agent`` before anything
    loads; then the agent's weights, history and training state are loaded from it."""
    if path is None or not Path(path).exists():
        return None
    ck = read_checkpoint(path, map_location=map_location)
    check_resumable(agent, ck, path)
    restore_weights(agent, ck, path)
    agent.training_state = {k: v for k, v in ck.items() if k not in BASE_KEYS}
    return ck


def resume(agent, ctx: TrainContext, path) -> int:
    """Epochs already done by the checkpoint at ``path`` (0 when there is none); restores
    the weights, history, the optimizer of the stage it stopped in, the RNG states (torch's
    and ``ctx.generator``) and every ``ctx.state`` object."""
    ck = load_training(agent, path)
    if ck is None:
        return 0
    done = int(ck["epoch"])
    ctx.stage = stage_of(agent, max(done - 1, 0))
    ctx.optimizer = agent.make_optimizer(ctx.stage)
    # lr_scale is a function of the config and the data, not training state: keep today's
    # (a checkpoint written before a group had one would otherwise drop it)
    scales = [g.get("lr_scale") for g in ctx.optimizer.param_groups]
    ctx.optimizer.load_state_dict(ck["optimizer"])
    for group, scale in zip(ctx.optimizer.param_groups, scales):
        if scale is not None:
            group["lr_scale"] = scale
    set_rng_state(ck["rng"], ctx.generator)
    for name, obj in ctx.state.items():
        if name not in ck:
            raise InputError(f"{path} has no {name!r} state to resume {agent.name} from; use another --out")
        obj.load_state_dict(ck[name])
    log.info("resuming %s from %s after %d epochs", agent.name, path, done)
    return done


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the scheduled ``lr`` on every group, times the group's ``lr_scale`` (1 when it
    has none): an agent's per-group scales (tattn's width rule, dsn's head) survive the
    schedule."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def mean_rows(rows: list[dict], weights=None) -> dict:
    """The per-key mean of the per-batch metric dicts ``rows`` (weighted by ``weights``,
    e.g. the batch sizes, when given)."""
    w = [1.0] * len(rows) if weights is None else [float(x) for x in weights]
    total = sum(w)
    return {k: sum(wi * r[k] for wi, r in zip(w, rows)) / total for k in rows[0]}


def get_rng_state(generator: torch.Generator | None = None) -> dict:
    """Everything random a training loop draws from: torch's global CPU (and CUDA) RNG and
    the loop's own generator. A resumed run restores it to repeat the same draws."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore :func:`get_rng_state`'s states (on the CPU, wherever the checkpoint was mapped)."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())
