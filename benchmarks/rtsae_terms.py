"""How each weight of eq. 12 (φ, μ, τ, λ) moves rtsae's keyframe fraction (paper 004).

Trains ``rtsae`` on planted states (agents/synthetic.py: 3 key positions of 25 carry the
class) at the defaults and at a few values of each weight, one at a time, and prints per
setting the keyframe fraction (share of test positions whose binary gate, eq. 14, is open:
the gate the loss trained), the fine-tuned model's top-1 with its open gates, and the same
network's no-gate top-1 (gate = 1 everywhere). Small network and few epochs so the whole
table takes a couple of minutes on 2 cores::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.rtsae_terms [--epochs 6] [--pretrain-epochs 4]

(as a module from the repository root: run as a script, benchmarks/agents.py would shadow
the ``agents`` package).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

if not __package__:
    raise SystemExit("run as a module from the repository root: python -m benchmarks.rtsae_terms")

from agents.rtsae import RTSAEAgent, RTSAEConfig  # noqa: E402
from agents.synthetic import planted_states  # noqa: E402

GRID = {"phi": (0.0, 0.2, 0.8, 2.0), "mu": (0.0, 0.5, 2.0), "tau": (0.0, 0.02, 0.2), "lam": (0.0, 0.05, 0.5)}
SMALL = dict(proj_dim=32, hidden=32, gate_dim=8, fusion_dim=64, classifier_hidden=32)


def measure(cfg: RTSAEConfig, train, test, seed=0) -> dict:
    """Train one agent; keyframe fraction after stage 2 and after stage 3, top-1 gated and no-gate."""
    torch.manual_seed(seed)
    agent = RTSAEAgent(cfg, num_classes=int(train.labels.max()) + 1, feature_dim=train.features.shape[-1], seed=seed)
    agent.fit(train)
    pre = [r for r in agent.history if r["stage"] == "pretrain"]
    sel = agent.select(test, None)
    ones = torch.ones(test.features.shape[:3])
    top1 = float((sel.video_scores.argmax(1) == test.labels).float().mean())
    nogate = float((agent.predict(test, ones).argmax(1) == test.labels).float().mean())
    open_ = agent.score(test) > cfg.gate_threshold
    key = test.key_mask[..., None].expand_as(open_)
    return {"pre_frac": pre[-1]["fraction_kept"] if pre else float("nan"),
            "frac": float(open_.float().mean()),
            "key_recall": float((open_ & key).sum() / key.sum()),
            "top1": top1, "nogate": nogate}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=192, help="train videos (as many test videos again)")
    ap.add_argument("--pretrain-epochs", type=int, default=RTSAEConfig.pretrain_epochs)
    ap.add_argument("--epochs", type=int, default=RTSAEConfig.epochs)
    ap.add_argument("--only", default="", help="comma list of weights to vary (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    V = args.videos
    st = planted_states(V=2 * V, T=25, K=1, D=32, C=8, n_key=3, seed=0)
    train, test = st.subset(np.arange(V)), st.subset(np.arange(V, 2 * V))
    test.key_mask = st.key_mask[V:]
    base = RTSAEConfig(**SMALL, pretrain_epochs=args.pretrain_epochs, epochs=args.epochs)
    print(f"planted: {V} train / {V} test videos, T=25, 3 key positions (key share 0.12); "
          f"{args.pretrain_epochs}+{args.epochs} epochs; defaults phi {base.phi} mu {base.mu} "
          f"tau {base.tau} lam {base.lam}")
    print("| weight | value | keyframes after stage 2 | keyframes (test) | key recall | top-1 gated | top-1 no-gate | s |")
    print("|---|---|---|---|---|---|---|---|")
    names = [n for n in GRID if not args.only or n in args.only.split(",")]
    for name in names:
        for value in GRID[name]:
            t0 = time.perf_counter()
            r = measure(dataclasses.replace(base, **{name: value}), train, test)
            print(f"| {name} | {value} | {r['pre_frac']:.2f} | {r['frac']:.2f} | {r['key_recall']:.2f} "
                  f"| {r['top1']:.3f} | {r['nogate']:.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
