"""The ``cost`` section of benchmarks/extract.py (issue 25): what recording the cost of flow
costs, and what the records say, side by side in one run.

- ``counting``: tvl1-torch's solver with its iteration count (``return_iterations=True``, what
  extraction runs) against the same solver without it, on the same fight pairs, alternating
  A/B ``--cost-reps`` times, at the fight settings (epsilon 0.05) and OpenCV's defaults;
- ``records``: run_extraction over fight clips at the fight settings (T=10, L=3, 1 crop) with
  OpenCV's TV-L1 at epsilon 0.05 and 0.01 (alternating), tvl1-torch, DIS and Farneback; per
  store the mean of its ``cost/*`` rows: seconds of flow and of pricing it (OpenCV TV-L1's
  torch-port sample: the overhead of the estimate), GFLOPs and iterations per field, and
  what the GFLOPs are (counted, estimated, upper bound).
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.extract_gpu import _extract, fight_clips, write_list
from benchmarks.flow import load_pairs
from data.store import open_store
from extract.flow import FlowConfig
from extract.flow_torch import TVL1Params, tvl1_batch

EPSILONS = {"fight (epsilon 0.05)": 0.05, "OpenCV defaults (epsilon 0.01)": 0.01}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _solve(prev, nxt, prm, count: bool, device) -> float:
    _sync(device)
    t = time.perf_counter()
    out = tvl1_batch(prev, nxt, prm, return_iterations=count)
    _sync(device)
    assert isinstance(out, tuple) == count
    return time.perf_counter() - t


def counting_section(args, device: torch.device) -> None:
    """Seconds per batch of tvl1-torch with and without counting, alternating."""
    batch = 64 if device.type == "cuda" else 2 if args.quick else 4
    prev, nxt = (torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in load_pairs(batch))
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)     # a shared CPU: OpenMP's spinning threads would dominate
    print(f"tvl1-torch on {device} ({torch.get_num_threads()} torch thread(s)), batch {batch} fight pairs "
          f"(340x256), eager; A/B alternating {args.cost_reps}x: counted = return_iterations=True "
          f"(what extraction runs); load average {os.getloadavg()[0]:.1f}")
    try:
        _counting_rows(args, device, prev, nxt)
    finally:
        torch.set_num_threads(threads)


def _counting_rows(args, device, prev, nxt) -> None:
    print(f"{'settings':32s} {'counted s':>22s} {'uncounted s':>22s} {'median ratio':>13s}")
    for name, eps in EPSILONS.items():
        prm = TVL1Params(epsilon=eps)
        _solve(prev[:1], nxt[:1], TVL1Params(nscales=1, warps=1), False, device)   # warm-up
        times = {True: [], False: []}
        for r in range(args.cost_reps):
            for count in ((True, False) if r % 2 == 0 else (False, True)):
                times[count].append(_solve(prev, nxt, prm, count, device))
        ratio = statistics.median(times[True]) / statistics.median(times[False])
        fmt = lambda ts: " ".join(f"{t:.2f}" for t in ts)   # noqa: E731
        print(f"{name:32s} {fmt(times[True]):>22s} {fmt(times[False]):>22s} {ratio:13.3f}")
        _counting_op(prev, nxt, prm, device, statistics.median(times[False]))


def _counting_op(prev, nxt, prm, device, solver_s: float) -> None:
    """What counting adds, timed by itself (robust where the A/B is noise): the solver's one
    extra op per primal-dual step, ``ran += active`` on (B,) tensors, times the steps the
    batch ran (per level and warp, its slowest pair's)."""
    _, its = tvl1_batch(prev, nxt, prm, return_iterations=True)
    steps = int(its.max(0).values.sum())
    ran = torch.zeros(len(prev), dtype=torch.int32, device=device)
    active = torch.ones(len(prev), dtype=torch.bool, device=device)
    n = 20000
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        ran += active
    _sync(device)
    op = (time.perf_counter() - t) / n
    print(f"{'':32s} counting op {op * 1e6:.1f} us x {steps} steps = {op * steps * 1e3:.1f} ms "
          f"= {100 * op * steps / solver_s:.2f} % of the uncounted solver's median")


def _records(store_path: Path) -> dict:
    with open_store(store_path) as s:
        done, stages = s.done(), s.attrs["cost_stages"]
        sec = dict(zip(stages, s.read_rows("cost/seconds", done).mean(0)))
        fields = s.read_rows("cost/flow_fields", done).astype(np.float64)
        its = s.read_rows("cost/flow_iterations", done)
        return {"videos": len(done), "flow_s": sec["flow"], "cost_s": sec["flow_cost"],
                "per_field_s": s.read_rows("cost/seconds", done)[:, stages.index("flow")].sum() / fields.sum(),
                "gflops": s.read_rows("cost/flow_gflops", done).sum() / fields.sum(),
                "its": float(np.nanmean(its)) if np.isfinite(its).any() else None,
                "kind": s.attrs["cost"]["flow_gflops"]["kind"], "other_s": sum(sec.values()) - sec["flow"]
                - sec["flow_cost"]}


def records_section(args, device: torch.device, tmp: Path) -> None:
    """Per store at the fight settings: the cost record's means per video and field."""
    from benchmarks.fight import SETTINGS

    clips = fight_clips(args.cost_clips)
    lst = write_list(clips, tmp / "cost.txt")
    torch_dev = (("device", str(device)),)
    runs = [("tvl1 eps 0.05", FlowConfig("tvl1", params=(("epsilon", 0.05),))),
            ("tvl1 eps 0.01", FlowConfig("tvl1", params=(("epsilon", 0.01),)))] * args.cost_rounds
    runs += [("tvl1-torch eps 0.05", FlowConfig("tvl1-torch", params=(("epsilon", 0.05), *torch_dev))),
             ("dis (medium)", FlowConfig("dis")), ("farneback", FlowConfig("farneback"))]
    print(f"run_extraction, {len(clips)} fight clips, T=10, L=3, 1 crop, rgb+flow, {device}, sequential "
          f"(the two TV-L1 epsilons alternate; load average {os.getloadavg()[0]:.1f}); means per video of the "
          "cost/* rows:")
    print(f"{'flow':20s} {'wall s':>7s} {'flow s':>7s} {'pricing s':>9s} {'pricing %':>9s} {'s/field':>8s} "
          f"{'GFLOPs/field':>12s} {'iter/field':>10s} {'other s':>7s}  kind")
    for k, (name, cfg) in enumerate(runs):
        out = tmp / f"cost-{k}.zarr"
        t = time.perf_counter()
        summary = _extract(lst, out, replace(SETTINGS, flow=cfg, feature_maps=False), device, 1, False)
        wall = (time.perf_counter() - t) / max(summary.total, 1)
        r = _records(out)
        its = f"{r['its']:10.0f}" if r["its"] is not None else f"{'-':>10s}"
        print(f"{name:20s} {wall:7.2f} {r['flow_s']:7.2f} {r['cost_s']:9.2f} {100 * r['cost_s'] / r['flow_s']:8.1f}% "
              f"{r['per_field_s']:8.3f} {r['gflops']:12.3f} {its} {r['other_s']:7.2f}  {r['kind']}", flush=True)
    print("(pricing: the flow_cost stage; for OpenCV's TV-L1 the torch port counting 1 sampled pair per "
          "video; % of the flow stage. other: decode and both backbones)")


def cost_section(args, device: torch.device, tmp: Path) -> None:
    counting_section(args, device)
    print()
    records_section(args, device, tmp)
