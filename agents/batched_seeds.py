"""Several training seeds of one agent in one batched pass (``framesel train --seeds N --together``).

N seeds of an agent differ only in their initial weights and their random draws; their
networks have the same shapes. Stacking each parameter over a leading seed axis turns N
small networks into one batched one: a forward pass is one batched matmul per layer
instead of N, and one optimizer step updates every seed. It is meant for GPUs, where one
video's update is a few tiny kernels (latency, not arithmetic), and has not been measured on
one yet; on a CPU the arithmetic is the cost, and this plain-torch LSTM is slower than
``nn.LSTM``'s fused kernel (``benchmarks/stream.py``: 0.83x of separate runs on 2 cores at
UCF101 10-crop shapes), so ``--together`` is off by default.

It is exact up to float rounding, because nothing mixes the seeds:

- each seed keeps its own generator (its video order, its episodes' draws) and its own
  per-video state (``as``' moving-average baselines);
- the loss is the sum of the seeds' losses, so each seed's parameters get its own gradient;
- the optimizer is elementwise (Adam, AdamW, SGD), so one step over stacked parameters is N
  independent steps; its state is stacked from, and split back into, the N optimizers.

Every epoch the stacked weights and optimizer state are split back into the N agents and
each saves its own checkpoint, the same file a separate run writes: a killed run resumes
(together or apart), and ``framesel evaluate`` reads the seeds as it reads separate ones.

An agent opts in with ``trains_seeds_together = True`` and two hooks: ``stack(agents)``
(the batched module, built by :class:`StackedParameters` from the N modules) and
``train_epoch_together(stack, ctxs, optimizer, epoch) -> [row per seed]``. Its training
must draw only from each ``ctx.generator`` (not torch's global RNG). ``as`` is the one.
"""
from __future__ import annotations

import time

import torch
from torch import nn
from tqdm import tqdm

from agents.training import TrainContext, end_epoch, resume, set_lr, stage_of
from data.errors import InputError

ELEMENTWISE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class StackedParameters(nn.Module):
    """The parameters of N modules of one architecture, each stacked to (N, *shape), in the
    modules' own parameter order (so optimizer states map one to one)."""

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.names = [name for name, _ in modules[0].named_parameters()]
        self.seeds = len(modules)
        self.values = nn.ParameterList(
            nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in modules]).clone())
            for n in self.names)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[self.names.index(name)]

    def split_into(self, modules: list[nn.Module]) -> None:
        """Copy seed s's slice of every parameter into ``modules[s]``."""
        with torch.no_grad():
            for s, m in enumerate(modules):
                own = dict(m.named_parameters())
                for name, value in zip(self.names, self.values):
                    own[name].copy_(value[s])


def stacked_lstm(x: torch.Tensor, p: StackedParameters, prefix: str, reverse: bool = False) -> torch.Tensor:
    """One direction of a one-layer ``nn.LSTM`` (batch_first), N seeds at once, in plain torch.

    x: (N, S, T, F) float32; ``p`` holds ``{prefix}weight_ih_l0{sfx}`` (N, 4H, F) etc. in
    nn.LSTM's layout (gates i, f, g, o) -> (N, S, T, H) hidden states."""
    sfx = "_reverse" if reverse else ""
    w_ih, w_hh = p[f"{prefix}weight_ih_l0{sfx}"], p[f"{prefix}weight_hh_l0{sfx}"]
    bias = (p[f"{prefix}bias_ih_l0{sfx}"] + p[f"{prefix}bias_hh_l0{sfx}"]).unsqueeze(1)
    N, S, T, F = x.shape
    H = w_hh.shape[-1]
    gates_x = torch.baddbmm(bias, x.reshape(N, S * T, F), w_ih.transpose(1, 2)).view(N, S, T, 4 * H)
    h, c = x.new_zeros(N, S, H), x.new_zeros(N, S, H)
    out: list = [None] * T
    w_hh_t = w_hh.transpose(1, 2)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        i, f, g, o = (gates_x[:, :, t] + torch.bmm(h, w_hh_t)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out[t] = h
    return torch.stack(out, dim=2)


def stacked_linear(x: torch.Tensor, p: StackedParameters, prefix: str) -> torch.Tensor:
    """``nn.Linear`` for N seeds: x (N, ..., in) -> (N, ..., out)."""
    w, b = p[f"{prefix}weight"], p[f"{prefix}bias"]
    N, *mid, F = x.shape
    return torch.baddbmm(b.unsqueeze(1), x.reshape(N, -1, F), w.transpose(1, 2)).view(N, *mid, -1)


# -- optimizer state: N optimizers <-> one over stacked parameters ----------------------
def stack_optimizer(optimizers: list[torch.optim.Optimizer], params: StackedParameters,
                    make) -> torch.optim.Optimizer:
    """One optimizer over ``params`` (built by ``make(parameters)``) whose state is the N
    optimizers' states stacked (their step counts agree: the seeds are at the same epoch)."""
    for opt in optimizers:
        if type(opt) not in ELEMENTWISE:
            raise InputError(f"seeds train together only with an elementwise optimizer "
                             f"({', '.join(c.__name__ for c in ELEMENTWISE)}), not {type(opt).__name__}")
    stacked = make(params.parameters())
    states = [opt.state_dict() for opt in optimizers]
    merged = {}
    for i in states[0]["state"]:
        merged[i] = {k: (torch.stack([s["state"][i][k] for s in states]) if _per_element(v) else v)
                     for k, v in states[0]["state"][i].items()}
    stacked.load_state_dict({"state": merged, "param_groups": states[0]["param_groups"]})
    return stacked


def split_optimizer(stacked: torch.optim.Optimizer, optimizers: list[torch.optim.Optimizer]) -> None:
    """Load seed s's slice of the stacked optimizer's state into ``optimizers[s]``."""
    state = stacked.state_dict()
    for s, opt in enumerate(optimizers):
        own = {i: {k: (v[s].clone() if _per_element(v) else v) for k, v in st.items()}
               for i, st in state["state"].items()}
        opt.load_state_dict({"state": own, "param_groups": state["param_groups"]})


def _per_element(value) -> bool:
    return torch.is_tensor(value) and value.dim() > 0


# -- the template -----------------------------------------------------------------------
def fit_together(agents: list, train, *, device="cpu", log_paths=(), checkpoint_paths=(), progress=False) -> None:
    """Train ``agents`` (one class and config, different seeds) together on ``train``, as
    :func:`agents.training.fit` trains each: the same epochs, schedule, history rows, JSONL
    logs and per-epoch checkpoints, resumed from ``checkpoint_paths`` when there. The
    checkpoints must be at the same epoch (a caller trains seeds apart otherwise)."""
    lead = agents[0]
    ctxs = []
    for agent, path in zip(agents, checkpoint_paths):
        agent.module.to(device)
        ctx = TrainContext(train=train, device=device, generator=torch.Generator().manual_seed(agent.seed),
                           progress=progress)
        agent.prepare(ctx)
        ctx.start = resume(agent, ctx, path)
        ctxs.append(ctx)
    start = ctxs[0].start
    if any(ctx.start != start for ctx in ctxs):
        raise InputError("seeds' checkpoints are at different epochs; train them apart")
    total, stage, stack, optimizer = lead.total_epochs(), None, None, None
    for epoch in tqdm(range(start, total), desc=f"{lead.name} x{len(agents)} seeds", disable=not progress,
                      initial=start, total=total):
        t0 = time.perf_counter()
        if stage_of(lead, epoch) != stage:
            stage = stage_of(lead, epoch)
            for agent, ctx in zip(agents, ctxs):
                if ctx.optimizer is None or ctx.stage != stage:
                    ctx.optimizer, ctx.stage = agent.make_optimizer(stage), stage
            stack = lead.stack(agents).to(device)
            optimizer = stack_optimizer([c.optimizer for c in ctxs], stack.params,
                                        lambda ps: _same_optimizer(ctxs[0].optimizer, ps))
        lr = lead.lr_at(epoch)
        if lr is not None:
            set_lr(optimizer, lr)
        rows = lead.train_epoch_together(stack, ctxs, optimizer, epoch)
        stack.params.split_into([a.module for a in agents])
        split_optimizer(optimizer, [c.optimizer for c in ctxs])
        seconds = time.perf_counter() - t0
        for agent, ctx, row, path, log_path in zip(agents, ctxs, rows, checkpoint_paths, log_paths):
            row.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=seconds)
            end_epoch(agent, ctx, row, log_path=log_path, checkpoint_path=path)
    for agent in agents:
        agent.module.eval()


def _same_optimizer(like: torch.optim.Optimizer, params) -> torch.optim.Optimizer:
    """An optimizer of ``like``'s class and hyper-parameters over ``params``."""
    group = {k: v for k, v in like.param_groups[0].items() if k != "params"}
    return type(like)(params, **{k: v for k, v in group.items() if k in like.defaults})
