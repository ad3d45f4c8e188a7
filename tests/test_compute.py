"""Compute accounting on hand-made numbers, and FLOP counting of real torch modules."""
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from agents.base import Selector
from agents.synthetic import planted_states
from data.errors import InputError
from evaluate.compute import (CONVENTION, TVL1_INNER, TVL1_SCALE, TVL1_WARP, CostModel, count_gflops,
                              flow_gflops_per_pair, fuse_gflops, selector_gflops, selector_needs,
                              tvl1_gflops_per_pair)

# OpenCV 5.0's TV-L1 defaults (what extract.flow.tvl1_defaults reads back)
OPENCV_TVL1 = {"tau": 0.25, "lambda": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
               "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8, "gamma": 0.0,
               "median_filtering": 5}


def test_tvl1_formula_by_hand():
    p = dict(OPENCV_TVL1, nscales=1, warps=1, inner_iterations=1, outer_iterations=1)
    assert tvl1_gflops_per_pair(p, (10, 10)) == pytest.approx(100 * (TVL1_SCALE + TVL1_WARP + TVL1_INNER) / 1e9)
    p = dict(p, nscales=2, scale_step=0.5, warps=2, inner_iterations=3, outer_iterations=2)
    per_px = TVL1_SCALE + 2 * (TVL1_WARP + 6 * TVL1_INNER)
    assert tvl1_gflops_per_pair(p, (20, 10)) == pytest.approx(200 * 1.25 * per_px / 1e9)


def test_tvl1_defaults_at_tsn_size_are_about_18_gflops():
    # 87040 px * (1 + .64 + .41 + .26 + .17) * (40 + 5 * (160 + 300 * 54)) = 17.66e9
    g = tvl1_gflops_per_pair(OPENCV_TVL1, (340, 256))
    assert g == pytest.approx(340 * 256 * sum(0.64 ** s for s in range(5)) * 81840 / 1e9)
    assert 15 < g < 20
    assert tvl1_gflops_per_pair(dict(OPENCV_TVL1, epsilon=0.05), (340, 256)) == g   # upper bound ignores epsilon


def test_flow_estimate_by_algorithm():
    assert flow_gflops_per_pair(None, (340, 256)) is None
    assert flow_gflops_per_pair({"algorithm": "dis", "params": {}}, (340, 256)) is None   # not estimated
    far = flow_gflops_per_pair({"algorithm": "farneback", "params": {"pyr_scale": 0.5, "levels": 3, "winsize": 15,
                                                                     "iterations": 3, "poly_n": 5, "poly_sigma": 1.2,
                                                                     "flags": 0}}, (340, 256))
    assert 0 < far < tvl1_gflops_per_pair(OPENCV_TVL1, (340, 256)) / 10
    with pytest.raises(InputError, match="lack"):
        tvl1_gflops_per_pair({"nscales": 5}, (340, 256))


@pytest.fixture
def model():
    # T=10, K=2, L=5; rgb 1 GFLOP/crop, flow 2, a cheap observer stream 0.1; 0.5 GFLOPs per flow field
    return CostModel(T=10, crops=2, flow_stack=5, backbone={"rgb": 1.0, "flow": 2.0, "obs": 0.1},
                     flow_pair=0.5, flow_algorithm="tvl1", observer="obs")


def test_views_by_need(model):
    c = model.video_gflops("rgb", "none", positions=4, cells=8)
    assert (c["full"], c["deployable"]) == (20.0, 8.0)          # 10*2 crops vs 4*2 kept
    c = model.video_gflops("flow", "none", positions=4, cells=8)
    assert c["full"] == 2 * 20 + 10 * 5 * 0.5                    # backbone 40 + flow on all stacks 25
    assert c["deployable"] == 2 * 8 + 4 * 5 * 0.5                # 16 + flow on the kept stacks 10
    c = model.video_gflops("rgb", "motion", positions=4, cells=8)
    assert (c["full"], c["deployable"]) == (45.0, 33.0)          # motion needs flow on every stack
    c = model.video_gflops("rgb", "full", positions=4, cells=8, agent=0.25)
    assert c["full"] == c["deployable"] == 20.25 and c["deployable_is_full"]
    c = model.video_gflops("rgb", "observer", positions=4, cells=8, agent=0.25)
    assert c["full"] == pytest.approx(20.25 + 0.1 * 20)         # the agent reads the observer in a full pass too
    assert c["deployable"] == pytest.approx(8 + 0.1 * 20 + 0.25)
    assert c["parts"]["deployable"]["observer"] == pytest.approx(2.0)


def test_a_flow_observer_counts_its_flow_on_every_stack(model):
    # dsn observing the flow stream: the flow of all T stacks runs before it can choose
    flow_obs = CostModel(T=10, crops=2, flow_stack=5, backbone={"rgb": 1.0, "flow": 2.0}, flow_pair=0.5,
                         flow_algorithm="tvl1", observer="flow")
    c = flow_obs.video_gflops("rgb", "observer", positions=4, cells=8, agent=0.25)
    assert c["parts"]["deployable"] == pytest.approx({"backbone": 8.0, "flow": 25.0, "observer": 40.0, "agent": 0.25})
    assert c["parts"]["full"] == pytest.approx({"backbone": 20.0, "flow": 25.0, "observer": 40.0, "agent": 0.25})
    c = flow_obs.video_gflops("flow", "observer", positions=4, cells=8)
    assert c["parts"]["deployable"]["flow"] == 25.0             # the kept stacks are among the observed: once


def test_observer_missing_means_deployable_is_full(model):
    m = CostModel(T=10, crops=2, flow_stack=5, backbone={"rgb": 1.0})
    c = m.video_gflops("rgb", "observer", positions=4, cells=8)
    assert c["deployable"] == c["full"] == 20.0
    assert not c["flow_counted"]


def test_fusion_shares_the_flow(model):
    rgb = model.video_gflops("rgb", "motion", positions=4, cells=8)
    flow = model.video_gflops("flow", "none", positions=4, cells=8)
    fused = fuse_gflops([rgb, flow])
    assert fused["full"] == 20 + 40 + 25                         # flow counted once
    assert fused["deployable"] == 8 + 16 + 25                    # motion's full flow covers the kept stacks
    with pytest.raises(InputError):
        fuse_gflops([])


def test_bad_inputs(model):
    with pytest.raises(InputError, match="need"):
        model.video_gflops("rgb", "psychic", positions=1, cells=1)
    with pytest.raises(InputError, match="depth"):
        model.video_gflops("depth", "none", positions=1, cells=1)


def test_from_store_attrs():
    attrs = {"T": 25, "crops": 10, "flow_stack": 5, "frame_size": [340, 256],
             "backbone": {"rgb": {"gflops_per_frame": 0.8}, "flow": {"gflops_per_frame": 0.9}},
             "flow": {"algorithm": "tvl1", "params": OPENCV_TVL1}}
    m = CostModel.from_attrs(attrs)
    assert m.backbone == {"rgb": 0.8, "flow": 0.9} and m.T == 25 and m.crops == 10
    assert m.flow_pair == pytest.approx(tvl1_gflops_per_pair(OPENCV_TVL1, (340, 256)))
    d = m.describe()
    assert d["convention"] == CONVENTION and "FLOPs = 2 x MACs" in CONVENTION and "estimate" in d["flow_note"]
    # TSN 25 x 10 crops, full pass of the rgb stream: 250 forwards of 0.8 GFLOPs
    assert m.video_gflops("rgb", "full", positions=25, cells=250)["full"] == pytest.approx(200.0)


class _LinearPolicy(Selector):
    name, learned = "linear_policy", True

    def __init__(self, D):
        self.module = nn.Linear(D, 1)

    def score(self, states):
        return self.module(states.features).squeeze(-1)


class _LSTMPolicy(Selector):
    name, learned = "lstm_policy", True

    def __init__(self, D, H):
        self.module = nn.ModuleDict({"lstm": nn.LSTM(D, H, batch_first=True, bidirectional=True, num_layers=2),
                                     "fc": nn.Linear(2 * H, 1)})

    def score(self, states):
        V, T, K, D = states.features.shape
        x = states.features.permute(0, 2, 1, 3).reshape(V * K, T, D)
        h, _ = self.module["lstm"](x)
        return self.module["fc"](h).reshape(V, K, T).permute(0, 2, 1)


class _TwicePolicy(_LinearPolicy):
    """Selects like the base, then re-runs its network once more (as tattn does on the kept)."""
    name = "twice_policy"

    def select(self, states, m, *, mode="frame", alpha=0.0):
        sel = super().select(states, m, mode=mode, alpha=alpha)
        self.score(states)
        return sel


def test_agent_flops_count_the_real_select_path():
    from agents.base import selector_class

    st = planted_states(V=3, T=7, K=2, D=6, C=4)
    assert selector_gflops(_TwicePolicy(6), st, 3) == pytest.approx(2 * selector_gflops(_LinearPolicy(6), st, 3))
    # tattn at m < T re-runs its model on the kept cells: twice its score pass; m = T: once
    tattn = selector_class("tattn")
    agent = tattn(tattn.Config(hidden=8, layers=1, iterations=2, test_last=1), num_classes=4, feature_dim=6)
    once = count_gflops(lambda: agent.score(st), [agent.module]) / 3
    assert once > 0
    assert selector_gflops(agent, st, 3) == pytest.approx(2 * once)
    assert selector_gflops(agent, st, None) == pytest.approx(once)


def test_selector_flops_are_counted_per_video():
    torch.manual_seed(0)
    st = planted_states(V=3, T=7, K=2, D=6, C=4)
    # a linear layer on every cell: 2 * D FLOPs per cell (one MAC per weight), T*K cells per video
    assert selector_gflops(_LinearPolicy(6), st) * 1e9 == pytest.approx(2 * 6 * 7 * 2)


def test_lstm_flops_are_added_because_flopcounter_misses_them():
    st = planted_states(V=2, T=5, K=1, D=6, C=4)
    pol = _LSTMPolicy(6, 3)
    H, T = 3, 5
    lstm = 2 * (2 * 4 * H * (6 + H) + 2 * 4 * H * (2 * H + H)) * T      # 2 dirs, layer 1 and layer 2
    fc = 2 * (2 * H) * T
    assert selector_gflops(pol, st) * 1e9 == pytest.approx(lstm + fc)
    # what FlopCounterMode alone sees on CPU: the fc only (the fused LSTM op reports 0)
    assert count_gflops(lambda: pol.score(st)) * 1e9 == pytest.approx(fc * 2)   # 2 videos, no hooks


def test_needs_of_the_registered_baselines():
    from agents.base import selector_class
    assert selector_needs(selector_class("uniform")()) == "none"
    assert selector_needs(selector_class("random")()) == "none"
    assert selector_needs(selector_class("motion")()) == "motion"
    assert selector_needs(selector_class("max_response")()) == "full"
    assert selector_needs(selector_class("oracle")()) == "full"
    assert selector_needs(_LinearPolicy(3)) == "full"              # unknown: never undercount

    @dataclass(frozen=True)
    class Cfg:
        observe: str = "observer"

    dsn_like = _LinearPolicy(3)
    dsn_like.name, dsn_like.config = "dsn", Cfg()
    assert selector_needs(dsn_like) == "observer"
    dsn_like.config = Cfg("features")
    assert selector_needs(dsn_like) == "full"
    dsn_like.needs = "clairvoyant"
    with pytest.raises(InputError, match="clairvoyant"):
        selector_needs(dsn_like)


def test_no_nan_in_views(model):
    for need in ("none", "motion", "observer", "full"):
        c = model.video_gflops("flow", need, positions=2.5, cells=5.0, agent=1e-4)
        assert all(math.isfinite(c[v]) and c["deployable"] <= c["full"] + 1e-12 for v in ("full", "deployable"))
        assert np.isclose(c["full"], sum(c["parts"]["full"].values()))


def test_dsn_observer_counts_only_the_candidates_it_sees(model):
    # 003's test scheme: at m = 2 clips with N = 3, dsn looks at 6 of the T = 10 positions
    # (before: the observer was counted on all T·K cells, its features on all T as well)
    c = model.video_gflops("rgb", "observer", positions=2, cells=4, agent=0.25, seen=6)
    assert c["parts"]["deployable"]["observer"] == pytest.approx(0.1 * 6 * 2)
    assert c["parts"]["full"]["observer"] == pytest.approx(0.1 * 6 * 2)
    c = model.video_gflops("rgb", "full", positions=2, cells=4, agent=0.25, seen=6)
    assert c["parts"]["deployable"]["backbone"] == pytest.approx(1.0 * 6 * 2)   # features of the candidates
    assert c["parts"]["full"]["backbone"] == pytest.approx(1.0 * 10 * 2)


def test_selector_seen_is_dsn_clip_scheme():
    from agents.dsn import DSN, DSNConfig
    from evaluate.compute import selector_seen
    dsn = DSN(DSNConfig(), num_classes=3, feature_dim=4)
    assert selector_seen(dsn, 25, 4) == 12 and selector_seen(dsn, 25, None) == 12   # 4 sections x 3
    assert selector_seen(dsn, 25, 2) == 6
    assert selector_seen(object(), 25, 4) is None
