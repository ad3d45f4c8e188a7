"""The contract every registered learned agent keeps (issue 11 item 6), one matrix over
``selector_names(learned=True)``: a new agent is covered the moment it registers.

(a) it learns on planted states (agents/synthetic.py: 3 key positions of 25 carry the class,
    the rest mislead): top-1 at m = 4 >= uniform-4 + 0.15 and > max_response-4 (the
    issue's bar; ``tattn_noatt``, the no-selection baseline, must instead learn its
    classifier); (b) a run killed after an epoch and started again equals a straight run
    (weights and history); (c) the checkpoint alone rebuilds it (same scores, same
    predictions); (d) the same seed gives the same weights, another seed other weights.

(b)–(d) run every agent shrunk by :data:`SHRINK` (sizes and epochs only, applied to the
config fields an agent has). (a) runs at the papers' defaults only with
``FRAMESEL_FULL_DEFAULTS=1``: measured on one core (2-core machine shared with other jobs,
load ~8), one epoch on 240 planted videos (D = 64) takes dsn 4.7 s (×70 epochs), as 2.6 s
(×45), tattn 21 s (×30), rtsae 4.9 s + 15.9 s (×10 + ×30), glimpse 73 s (×10): 2 to 12
minutes an agent. The suite runs (a) at :data:`SMALLER`: the defaults with only the networks
narrower (measured there, same machine, load ~4: tattn 18 s, tattn_noatt 14 s, rtsae 54 s,
glimpse 26 s); dsn runs at its full defaults (~17 s on D = 32), as at its defaults for the
first 4 of its 45 epochs (all at the paper's first lr: top-1 0.392 against the bar's 0.208,
6.6 s; all 45 took 62-98 s and reach more, run with ``FRAMESEL_FULL_DEFAULTS=1``). The agents
in :data:`OPEN` do not reach the bar yet: their cases are strict expected failures.
"""
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from agents.base import load_agent, selector_class, selector_names
from agents.synthetic import planted_states
from data.errors import InputError

TORCH_THREADS = 1  # small tensors (tests/conftest.py: _torch_threads)

AGENTS = selector_names(learned=True)

# Sizes and epochs for the mechanics cases, applied to whichever fields an agent's Config has.
SHRINK = {"epochs": 3, "pretrain_epochs": 1, "hidden": 4, "layers": 1, "iterations": 2, "test_last": 1,
          "batch_size": 8, "pretrain_batch_size": 8, "episodes": 2, "proj_dim": 4, "gate_dim": 2,
          "fusion_dim": 4, "classifier_hidden": 4, "m": 2}

# The learning case's settings: the defaults, only the networks narrower where the defaults
# take over a minute (width keeps the update rule and sets the cost of an update; it does
# change capacity: dsn at hidden 64 reached 0.200 under the old test protocol; tattn at ε 1e-4
# reaches 0.387 at hidden 64, 0.192 at its 512 with plain Adadelta, 0.237 with base_width 64). Epochs
# (as aside: its first 4, as tests/test_as_agent.py runs it), lr, batch, optimizer, layers and loss
# weights stay the papers'.
SMALLER = {"as": {"epochs": 4}, "dsn": {},    # as: its first 4 epochs (module docstring; at hidden 64: 0.062)
           "tattn": {"hidden": 64}, "tattn_noatt": {"hidden": 64},
           "glimpse": {"hidden": 32}, "glimpse_soft": {"hidden": 32},
           "rtsae_nogate": {"fusion_dim": 64, "classifier_hidden": 64},
           "rtsae": {"hidden": 32, "proj_dim": 32, "gate_dim": 8, "fusion_dim": 64, "classifier_hidden": 64,
                     "phi": 0.2}}   # at 004's phi 0.8 a network this narrow shuts every gate (RTSAEConfig)
FULL = os.environ.get("FRAMESEL_FULL_DEFAULTS") == "1"
# the papers' no-selection partners (agents/papers.py): they must learn their classifier
NO_SELECTION = {n for n in AGENTS if getattr(selector_class(n), "partner_of", "")}
PER_FRAME = {"dsn_nosampler"}       # of those, the one that averages per-frame class scores


def _cls(name):
    return selector_class(name)


def _build(name, config, states, seed=0):
    cls = _cls(name)
    if hasattr(cls, "for_states"):           # agents whose shape follows the states (glimpse's cube)
        return cls.for_states(config, states, seed=seed)
    _, _, _, D, C = states.shape
    return cls(config, num_classes=C, feature_dim=D, seed=seed)


def _shrunk(name, **changes):
    Config = _cls(name).Config
    fields = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in {**SHRINK, **changes}.items() if k in fields})


def _states(name, V=16, T=6, seed=0, **kw):
    maps = getattr(_cls(name), "needs_feature_maps", False)
    return planted_states(V=V, T=T, K=1, D=8, C=4, n_key=2, seed=seed, with_maps=maps, map_size=2, **kw)


def _weights(agent):
    return {k: v.clone() for k, v in agent.module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


class _Killed(Exception):
    pass


# -- (b) resume after a kill equals a straight run -----------------------------------------
@pytest.mark.parametrize("kill_after", [1, 2])
@pytest.mark.parametrize("name", AGENTS)
def test_resume_after_a_kill_equals_a_straight_run(name, kill_after, tmp_path, monkeypatch):
    """Killed right after epoch ``kill_after``'s checkpoint (for rtsae epoch 1 is the end of
    its unsupervised stage: the resume must start the next stage's optimizer)."""
    st, cfg = _states(name), _shrunk(name)
    straight = _build(name, cfg, st, seed=5)
    straight.fit(st, val=st)
    ck = tmp_path / "run.pt"
    cls, save = _cls(name), _cls(name).save

    def save_then_die(self, path, **extra):
        save(self, path, **extra)
        if extra.get("epoch") == kill_after:
            raise _Killed
    monkeypatch.setattr(cls, "save", save_then_die)
    with pytest.raises(_Killed):
        _build(name, cfg, st, seed=5).fit(st, val=st, checkpoint_path=ck)
    monkeypatch.setattr(cls, "save", save)
    torch.manual_seed(1234)                    # whatever ran in between: the checkpoint's RNG wins
    resumed = _build(name, cfg, st, seed=5)
    resumed.fit(st, val=st, checkpoint_path=ck)
    total = straight.total_epochs()
    assert [r["epoch"] for r in resumed.history] == list(range(1, total + 1))
    assert _same(_weights(resumed), _weights(straight))
    assert _strip(resumed.history) == _strip(straight.history)


# -- (c) the checkpoint alone rebuilds the agent ---------------------------------------------
@pytest.mark.parametrize("name", AGENTS)
def test_the_checkpoint_alone_rebuilds_the_agent(name, tmp_path):
    st, test = _states(name), _states(name, seed=1)
    agent = _build(name, _shrunk(name), st, seed=3)
    agent.fit(st, checkpoint_path=tmp_path / "a.pt")
    back = load_agent(tmp_path / "a.pt")
    assert type(back) is type(agent) and back.config == agent.config and back.seed == 3
    assert back.history == agent.history and _same(_weights(back), _weights(agent))
    assert torch.equal(back.score(test), agent.score(test))
    for m in (None, 2):
        a, b = agent.select(test, m), back.select(test, m)
        assert torch.equal(a.keep, b.keep) and torch.equal(a.video_scores, b.video_scores)


# -- (d) seeds --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", AGENTS)
def test_same_seed_same_weights_other_seed_other_weights(name):
    st, cfg = _states(name), _shrunk(name, epochs=2)
    runs = {}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        agent = _build(name, cfg, st, seed=seed)
        torch.manual_seed(100 + len(runs))     # the global RNG before fit must not matter
        agent.fit(st)
        runs[key] = (_weights(agent), _strip(agent.history))
    assert _same(runs["a"][0], runs["b"][0]) and runs["a"][1] == runs["b"][1]
    assert not _same(runs["a"][0], runs["c"][0])


# -- (a) learning on planted states -----------------------------------------------------------
def _top1(sel, states) -> float:
    return float((sel.video_scores.argmax(1).cpu() == states.labels.cpu()).float().mean())


def _learn(name, overrides):
    """Train on 240 planted videos, test on 240 others (one planted world); returns the
    accuracies at m = 4 of the agent, uniform, max_response, and the agent over all positions."""
    maps = getattr(_cls(name), "needs_feature_maps", False)
    st = planted_states(V=480, T=25, K=1, D=32, C=8, n_key=3, seed=0, with_maps=maps, map_size=4)
    train, test = st.subset(np.arange(240)), st.subset(np.arange(240, 480))
    config = dataclasses.replace(_cls(name).Config(), **overrides)
    agent = _build(name, config, train, seed=0)
    agent.fit(train)
    acc = {n: _top1(selector_class(n)().select(test, 4), test) for n in ("uniform", "max_response")}
    acc.update(agent=_top1(agent.select(test, 4), test), agent_all=_top1(agent.select(test, None), test))
    if name in NO_SELECTION:    # its own network on the key positions alone
        keys = st.key_mask[240:, :, None].expand(test.features.shape[:3])
        with torch.no_grad():
            acc["agent_keys"] = float((agent.video_scores(test, keys).argmax(1) == test.labels).float().mean())
    print(name, overrides, {k: round(v, 3) for k, v in acc.items()})
    return acc


def _assert_learns(name, acc):
    if name in NO_SELECTION:     # no selection to learn: its classifier must beat chance (1/8) clearly
        # over every position; a per-frame classifier on the keys, since averaging every planted
        # position is wrong by construction (the head's own dense accuracy)
        assert acc["agent_keys" if name in PER_FRAME else "agent_all"] >= 1 / 8 + 0.15, acc
        return
    assert acc["agent"] >= acc["uniform"] + 0.15, acc
    assert acc["agent"] > acc["max_response"], acc


# Agents that do NOT yet reach the bar here (issue 11 stays open for them). Strict: the day
# one passes, this test fails until its entry goes. Measured 2026-12-02 (seed 0):
OPEN = {
    # alternate dsn's own lstsq head caps it: with a key candidate kept in every section that
    # has one it scores 0.204-0.217 at D = 32 (0.183 reached; the observer hits 95 % of keys;
    # at D = 64 it passes on 3 of 3 seeds, 0.213-0.225)
    "dsn": "dsn (alternate) 0.183 at m = 4 vs bar 0.208: its own head caps it at D = 32",
    # glimpse at hidden 32: 0.108 (bar 0.208); no batch size (32, 8, 4, 2) fixes it; at its
    # full width it passes on seed 0 (0.217) but not seed 1 (0.158) on D = 64 maps
    "glimpse": "glimpse 0.108 at m = 4 vs bar 0.208: under-trained in 001's 10 epochs on 240 videos",
    # its soft partner likewise (measured 2026-12: 0.108 over all positions, on the keys alone
    # too, bar 0.275); on 512 videos at hidden 64, one layer, lr 1e-2 it learns (tests/test_glimpse.py)
    "glimpse_soft": "glimpse_soft 0.108 over all positions vs bar 0.275: under-trained as glimpse is",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=OPEN[n], strict=True))
                                  if n in OPEN else n for n in AGENTS])
def test_learns_planted_states_smaller_networks(name):
    _assert_learns(name, _learn(name, SMALLER.get(name, {})))


@pytest.mark.skipif(not FULL, reason="the papers' defaults take 2-12 min an agent on one core "
                    "(module docstring); run with FRAMESEL_FULL_DEFAULTS=1")
@pytest.mark.parametrize("name", AGENTS)
def test_learns_planted_states_at_defaults(name):
    _assert_learns(name, _learn(name, {}))


# -- a checkpoint of another run is refused -----------------------------------------------------
@pytest.mark.parametrize("name", AGENTS)
def test_resume_refuses_another_seed_or_config(name, tmp_path):
    st, cfg = _states(name), _shrunk(name, epochs=1)
    ck = tmp_path / "a.pt"
    _build(name, cfg, st, seed=1).fit(st, checkpoint_path=ck)
    before = ck.read_bytes()
    other = dataclasses.replace(cfg, batch_size=cfg.batch_size + 1)
    for agent, differs in ((_build(name, cfg, st, seed=2), "seed 1 (this run: 2)"),
                           (_build(name, other, st, seed=1), "batch_size 8 (this run: 9)")):
        with pytest.raises(InputError, match=re.escape(differs)):
            agent.fit(st, checkpoint_path=ck)
    assert ck.read_bytes() == before


def test_fit_refuses_inputs_it_does_not_take():
    st = _states("as")
    agent = _build("as", _shrunk("as"), st)
    with pytest.raises(TypeError, match="flow"):
        agent.fit(st, flow=st)
    with pytest.raises(InputError, match=r"\(D, C\) = \(8, 4\) but as was built for \(8, 5\)"):
        selector_class("as")(_shrunk("as"), num_classes=5, feature_dim=8).fit(st)


# -- the registry is a leaf ---------------------------------------------------------------------------
def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_the_registry_imports_nothing_of_agents():
    loaded = _python("import sys, agents.registry; print(sorted(m for m in sys.modules if m.startswith('agents')))")
    assert loaded.strip() == "['agents', 'agents.registry']"
    assert not importlib.util.find_spec("agents.learned"), "no module exists only for its side effects"


@pytest.mark.parametrize("first", ["agents.tattn"])     # an agent module first: the order a circle breaks
def test_the_registry_does_not_depend_on_import_order(first):
    names = _python(f"import {first}\nfrom agents.registry import selector_names\n"
                    "print(selector_names(learned=True), selector_names(learned=False))")
    assert names.strip() == f"{selector_names(learned=True)} {selector_names(learned=False)}"
    assert "'rtsae'" in names and "'uniform'" in names
