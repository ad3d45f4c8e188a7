"""dsn under 003's test protocol and glimpse's attention penalty, at their defaults, on
planted states (agents/synthetic.py: 3 key positions of 25 carry the class, the rest mislead).

- ``dsn``: Fig. 4-style top-1 by number of clips M (M sections × 3 candidates) for dsn and
  the references (random, uniform, max_response, max_response over the same candidates),
  plus the ceiling of the protocol: a key candidate kept in every section that has one.
- ``glimpse``: focus (mean max_i π_{t,i} on the test videos) and top-1 at m = 4 with the
  default penalty (001's focus) and with [11]'s doubly stochastic one; 4×4 maps. At the
  defaults (3-layer LSTM of 512) one run takes ~6 CPU-minutes::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.dsn_glimpse_planted dsn|glimpse [--seed 0]

(as a module from the repository root: run as a script, benchmarks/agents.py would shadow
the ``agents`` package).
"""
from __future__ import annotations

import argparse
import json

import torch

from agents.base import aggregate, selector_class, top_m_mask
from agents.dsn import DSN, DSNConfig, section_pick, section_positions
from agents.glimpse import GlimpseAgent, GlimpseConfig
from agents.synthetic import planted_states
from evaluate.dsn_protocol import SectionedMaxResponse

TRAIN, TEST, T, D, C = 240, 240, 25, 64, 8


def _acc(scores, labels) -> float:
    return round(float((scores.argmax(1) == labels).float().mean()), 3)


def _references(test, m) -> dict:
    out = {b: _acc(selector_class(b)().select(test, m).video_scores, test.labels)
           for b in ("random", "uniform", "max_response")}
    out["max_response[M:3]"] = _acc(SectionedMaxResponse(3).select(test, m).video_scores, test.labels)
    return out


def dsn(seed: int) -> None:
    st = planted_states(V=TRAIN + TEST, T=T, K=1, D=D, C=C, n_key=3, seed=seed)
    train, test, keys = st.subset(range(TRAIN)), st.subset(range(TRAIN, TRAIN + TEST)), st.key_mask[TRAIN:]
    agents = {}
    for mode in ("alternate", "fixed"):
        agents[mode] = DSN(DSNConfig(mode=mode), num_classes=C, feature_dim=D, seed=seed)
        agents[mode].fit(train)
    for m in range(1, T // 3 + 1):
        pos = section_positions(T, m, 3)
        best = section_pick(keys[:, pos].float().reshape(-1, m, 3) * 10, pos, T)[..., None]
        row = {"M": m, **{f"dsn[{k}]": _acc(a.select(test, m).video_scores, test.labels) for k, a in agents.items()},
               **_references(test, m), "ceiling": _acc(aggregate(test.logits, top_m_mask(best, m)), test.labels)}
        print(json.dumps(row), flush=True)


def glimpse(seed: int) -> None:
    st = planted_states(V=TRAIN + TEST // 2, T=T, K=1, D=D, C=C, n_key=3, seed=seed, with_maps=True, map_size=4)
    train, test = st.subset(range(TRAIN)), st.subset(range(TRAIN, TRAIN + TEST // 2))
    for penalty in ("focus", "doubly_stochastic"):
        agent = GlimpseAgent.for_states(GlimpseConfig(penalty=penalty), train, seed=seed)
        agent.fit(train)
        row = {"penalty": penalty, "focus": round(float(agent.score(test).mean()), 3),
               "glimpse@4": _acc(agent.select(test, 4).video_scores, test.labels), **_references(test, 4),
               "train_top1_by_epoch": [round(r["train_top1"], 3) for r in agent.history]}
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("dsn", "glimpse"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    (dsn if args.what == "dsn" else glimpse)(args.seed)


if __name__ == "__main__":
    main()
