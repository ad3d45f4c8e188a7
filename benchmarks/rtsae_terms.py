"""How each weight of eq. 12 (φ, μ, τ, λ) moves rtsae's keyframe fraction (paper 004).

Trains ``rtsae`` on planted states (agents/synthetic.py: 3 key positions of 25 carry the
class) at the defaults and at a few values of each weight, one at a time, and prints per
setting the keyframe fraction (share of test positions whose binary gate, eq. 14, is open:
the gate the loss trained), the fine-tuned model's top-1 with its open gates, and the same
network's no-gate top-1 (gate = 1 everywhere). Two more rows at the defaults: last
session's stage 3 (``joint_sparsity=false``: cross-entropy alone) and R scaled by 1/√k
(the issue's reading of eq. 18). Small network so the table takes a few minutes on one
core; ``--full`` instead trains the full default network once on 240 + 240 videos, D = 64::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.rtsae_terms [--epochs 6] [--pretrain-epochs 4]
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.rtsae_terms --full [--full-rows rtsae_nogate]
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.rtsae_terms --store S --stream rgb --train L --test L [--truth F]

``--store`` runs the same grid on a real store's features (e.g. ``framesel demo``'s or the untrimmed
composites', whose ``--truth`` gives key recall: the share of target-segment positions kept): planted
positions are independent draws, so no position helps reconstruct another and stage 2's
unsupervised gate has nothing to choose; consecutive positions of a real video do. Without
``--truth`` key recall is unknown (``nan``).

(as a module from the repository root: run as a script, benchmarks/agents.py would shadow
the ``agents`` package).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np
import torch

if not __package__:
    raise SystemExit("run as a module from the repository root: python -m benchmarks.rtsae_terms")

from agents.rtsae import RTSAEAgent, RTSAEConfig  # noqa: E402
from agents.synthetic import planted_states  # noqa: E402

GRID = {"phi": (0.0, 0.2, 0.8, 2.0), "mu": (0.0, 0.5, 2.0), "tau": (0.0, 0.02, 0.2), "lam": (0.0, 0.05, 0.5)}
SMALL = dict(proj_dim=32, hidden=32, gate_dim=8, fusion_dim=64, classifier_hidden=32)


def measure(cfg: RTSAEConfig, train, test, seed=0, scaled_r=False) -> dict:
    """Train one agent; keyframe fraction after stage 2 and after stage 3, top-1 gated and no-gate.
    ``scaled_r``: R/√k instead of eq. 18's R."""
    torch.manual_seed(seed)
    agent = RTSAEAgent(cfg, num_classes=int(train.labels.max()) + 1, feature_dim=train.features.shape[-1], seed=seed)
    if scaled_r:
        agent.module.proj /= math.sqrt(cfg.proj_dim)
    agent.fit(train)
    pre = [r for r in agent.history if r["stage"] == "pretrain"]
    sel = agent.select(test, None)
    ones = torch.ones(test.features.shape[:3])
    top1 = float((sel.video_scores.argmax(1) == test.labels).float().mean())
    nogate = float((agent.predict(test, ones).argmax(1) == test.labels).float().mean())
    open_ = agent.score(test) > cfg.gate_threshold
    key_mask = getattr(test, "key_mask", None)
    key = None if key_mask is None else key_mask[..., None].expand_as(open_)
    return {"pre_frac": pre[-1]["fraction_kept"] if pre else float("nan"),
            "frac": float(open_.float().mean()),
            "key_recall": float("nan") if key is None else float((open_ & key).sum() / key.sum()),
            "top1": top1, "nogate": nogate}


HEADER = ("| weight | value | keyframes after stage 2 | keyframes (test) | key recall | top-1 gated "
          "| top-1 no-gate | s |\n|---|---|---|---|---|---|---|---|")


def row(name, value, r, seconds) -> str:
    return (f"| {name} | {value} | {r['pre_frac']:.2f} | {r['frac']:.2f} | {r['key_recall']:.2f} "
            f"| {r['top1']:.3f} | {r['nogate']:.3f} | {seconds:.0f} |")


def split(V, D):
    """V train and V test videos from ONE planted call (T = 25, 3 key positions)."""
    st = planted_states(V=2 * V, T=25, K=1, D=D, C=8, n_key=3, seed=0)
    train, test = st.subset(np.arange(V)), st.subset(np.arange(V, 2 * V))
    test.key_mask = st.key_mask[V:]
    return train, test


def from_store(path, stream, train_list, test_list, truth=None):
    """Train and test States of ``stream`` from a real store and two lists; with ``truth`` (a
    segment truth file, data/truth.py) the test States get ``key_mask`` (V, T) bool from it."""
    from agents.from_store import load_states, rows_for_list
    from data.lists import read_list
    from data.store import open_store
    from evaluate.keys import load_truth

    with open_store(path) as store:
        rows = [rows_for_list(store, read_list(lst)) for lst in (train_list, test_list)]
        train, test = (load_states(store, stream, r, require_logits=False) for r in rows)
        if truth:
            test.key_mask = torch.from_numpy(load_truth(store, rows[1], truth)["key"])
        return train, test


def measure_partner(train, test, seed=0) -> dict:
    """rtsae's partner ``rtsae_nogate`` (agents/rtsae_nogate.py: the recognition network
    trained without the RTSAE) at its defaults: top-1 over every position in both top-1
    columns, keyframes 1 (it reads every position), key recall 1."""
    from agents.rtsae_nogate import RTSAENoGate, RTSAENoGateConfig

    agent = RTSAENoGate(RTSAENoGateConfig(), num_classes=int(train.labels.max()) + 1,
                        feature_dim=train.features.shape[-1], seed=seed)
    agent.fit(train)
    top1 = float((agent.select(test, None).video_scores.argmax(1) == test.labels).float().mean())
    return {"pre_frac": float("nan"), "frac": 1.0, "key_recall": 1.0, "top1": top1, "nogate": top1}


FULL_ROWS = ("defaults", "joint_sparsity", "rtsae_nogate")


def full(rows=FULL_ROWS) -> None:
    """The full default network (hidden 128, fusion 1024) on 240 + 240 videos, D = 64; the
    rtsae_nogate row is rtsae's separately trained partner at its defaults."""
    train, test = split(240, 64)
    print(HEADER)
    for name, cfg in (("defaults", RTSAEConfig()), ("joint_sparsity", RTSAEConfig(joint_sparsity=False)),
                      ("rtsae_nogate", None)):
        if name not in rows:
            continue
        t0 = time.perf_counter()
        r = measure_partner(train, test) if cfg is None else measure(cfg, train, test)
        print(row(name, "false" if name == "joint_sparsity" else "", r, time.perf_counter() - t0), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=192, help="train videos (as many test videos again)")
    ap.add_argument("--pretrain-epochs", type=int, default=RTSAEConfig.pretrain_epochs)
    ap.add_argument("--epochs", type=int, default=RTSAEConfig.epochs)
    ap.add_argument("--only", default="", help="comma list of weights to vary (default: all)")
    ap.add_argument("--full", action="store_true", help="the full default network, gated vs no-gate")
    ap.add_argument("--full-rows", default=",".join(FULL_ROWS), help="--full: which rows (default: all)")
    ap.add_argument("--store", help="a real store instead of planted states (with --train, --test)")
    ap.add_argument("--stream", default="rgb")
    ap.add_argument("--train", help="training list of --store's videos")
    ap.add_argument("--test", help="test list of --store's videos")
    ap.add_argument("--truth", help="--store: segment truth of the test videos (untrimmed composites): key recall")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.full:
        return full(tuple(args.full_rows.split(",")))
    if args.store:
        train, test = from_store(args.store, args.stream, args.train, args.test, args.truth)
        world = (f"{args.store} {args.stream}: {len(train.labels)} train / {len(test.labels)} test videos, "
                 f"T={train.features.shape[1]}, D={train.features.shape[-1]}")
    else:
        train, test = split(args.videos, 32)
        world = f"planted: {args.videos} train / {args.videos} test videos, T=25, 3 key positions (key share 0.12)"
    base = RTSAEConfig(**SMALL, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs)
    print(f"{world}; {args.pretrain_epochs}+{args.epochs} epochs; defaults phi {base.phi} mu {base.mu} "
          f"tau {base.tau} lam {base.lam}")
    print(HEADER)
    done = {}                                     # the defaults are one row of every weight's grid
    for name in [n for n in GRID if not args.only or n in args.only.split(",")]:
        for value in GRID[name]:
            cfg = dataclasses.replace(base, **{name: value})
            t0 = time.perf_counter()
            r = done.get(cfg) or measure(cfg, train, test)
            done[cfg] = r
            print(row(name, value, r, time.perf_counter() - t0), flush=True)
    for name, value, cfg, scaled in (("joint_sparsity", "false", dataclasses.replace(base, joint_sparsity=False), False),
                                     ("R", "R/√k", base, True)):
        t0 = time.perf_counter()
        print(row(name, value, measure(cfg, train, test, scaled_r=scaled), time.perf_counter() - t0), flush=True)


if __name__ == "__main__":
    main()
