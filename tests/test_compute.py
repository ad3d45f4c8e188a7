"""Compute accounting on hand-made numbers, and FLOP counting of real torch modules."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.base import Selector
from agents.synthetic import planted_states
from data.errors import InputError
from evaluate.compute import (CONVENTION, NOT_RECORDED, CostModel, count_gflops, fuse_gflops, selector_gflops,
                              selector_needs)

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
             "flow": {"algorithm": "tvl1", "params": {"epsilon": 0.01}}}
    m = CostModel.from_attrs(attrs)
    assert m.backbone == {"rgb": 0.8, "flow": 0.9} and m.T == 25 and m.crops == 10
    # the flow's cost is recorded per video at extraction; attrs alone do not price it
    assert m.flow_pair is None and m.flow_kind == NOT_RECORDED and m.seconds is None
    d = m.describe()
    assert d["convention"] == CONVENTION and "FLOPs = 2 x MACs" in CONVENTION and "not recorded" in d["flow_note"]
    # TSN 25 x 10 crops, full pass of the rgb stream: 250 forwards of 0.8 GFLOPs
    assert m.video_gflops("rgb", "full", positions=25, cells=250)["full"] == pytest.approx(200.0)
    assert m.video_seconds("rgb", "full", positions=25, cells=250) is None


def _recorded_store(path, with_cost=True):
    """A 3-video store (T 4, 2 crops) whose cost/* rows hold hand-made numbers; video 2 failed."""
    from data.store import Layout, StreamSpec, VideoCost, VideoResult, create_store

    layout = Layout(paths=("a.mp4", "b.mp4", "c.mp4"), labels=np.zeros(3, np.int32), T=4,
                    streams=(StreamSpec("rgb", 2, 3), StreamSpec("flow", 2, 3)),
                    attrs={"crops": 2, "flow_stack": 2, "flow": {"algorithm": "tvl1-torch"},
                           "cost": {"flow_gflops": {"kind": "counted", "how": "by hand"}},
                           "backbone": {"rgb": {"gflops_per_frame": 1.0}, "flow": {"gflops_per_frame": 2.0}}},
                    cost_stages=("decode", "flow", "flow_cost", "backbone:rgb", "backbone:flow") if with_cost else None)
    feats = {s: {"features": np.ones((4, 2, 3), np.float16)} for s in ("rgb", "flow")}
    costs = [VideoCost(np.array([1.0, 8.0, 0.5, 4.0, 8.0]), 16.0, 8, 100.0),     # 2 GFLOPs, 1 s per field
             VideoCost(np.array([3.0, 12.0, 0.5, 4.0, 8.0]), 12.0, 6, 50.0)]     # short: 6 distinct fields
    with create_store(path, layout) as s:
        for i, c in enumerate(costs):
            s.write_video(i, VideoResult(10, 25.0, np.arange(4, dtype=np.int32), np.zeros(4, np.float32), feats,
                                         cost=c))
        s.mark_failed(2, "broken")
    return path


def test_from_store_reads_the_recorded_cost_of_the_evaluated_videos(tmp_path):
    from data.store import open_store

    with open_store(_recorded_store(tmp_path / "s.zarr")) as s:
        m = CostModel.from_store(s)                                   # every done video
        one = CostModel.from_store(s, [0])
    assert m.videos == 2 and m.flow_kind == "counted" and m.flow_how == "by hand"
    assert m.flow_pair == pytest.approx(28 / 14) and m.flow_fields == pytest.approx(7.0)
    assert m.flow_iterations == pytest.approx(75.0) and one.flow_iterations == pytest.approx(100.0)
    sec = m.seconds
    assert sec["per_video"] == pytest.approx({"decode": 2.0, "flow": 10.0, "flow_cost": 0.5, "backbone:rgb": 4.0,
                                              "backbone:flow": 8.0})
    assert sec["flow_field"] == pytest.approx(20 / 14)
    assert sec["backbone"] == pytest.approx({"rgb": 8 / 16, "flow": 16 / 16})   # 2 videos x T 4 x K 2 crops
    # flow stream, full pass: backbone 8 crops x 2, flow min(4 x 2, 7 fields) x 2 GFLOPs = the recorded mean
    c = m.video_gflops("flow", "none", positions=2, cells=4)
    assert c["full"] == pytest.approx(16 + 14) and c["deployable"] == pytest.approx(8 + 4 * 2)
    t = m.video_seconds("flow", "none", positions=2, cells=4)
    assert t["full"] == pytest.approx(2.0 + 8 * 1.0 + 7 * 20 / 14)     # decode + crops + fields
    assert t["deployable"] == pytest.approx(2.0 + 4 * 1.0 + 4 * 20 / 14)
    assert t["parts"]["deployable"]["decode"] == 2.0                     # decode: always the whole video
    rgb = m.video_seconds("rgb", "motion", positions=2, cells=4)
    both = fuse_gflops([rgb, t])
    assert both["full"] == pytest.approx(2.0 + 8 * 0.5 + 8 * 1.0 + 10.0)  # decode and flow once
    assert m.describe()["seconds"]["per_video"]["flow_cost"] == 0.5


def test_a_store_without_the_record_is_not_recorded(tmp_path):
    from data.store import open_store

    with open_store(_recorded_store(tmp_path / "old.zarr", with_cost=False)) as s:
        assert not s.has("cost/seconds")
        m = CostModel.from_store(s)
    assert m.flow_pair is None and m.seconds is None and m.flow_kind == NOT_RECORDED
    assert m.video_seconds("flow", "none", positions=2, cells=4) is None
    assert not m.video_gflops("flow", "none", positions=2, cells=4)["flow_counted"]
    assert "not recorded" in m.describe()["flow_note"] and m.describe()["seconds_note"] == NOT_RECORDED


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

    dsn = selector_class("dsn")
    assert selector_needs(dsn(dsn.Config(), num_classes=3, feature_dim=4)) == "observer"
    assert selector_needs(dsn(dsn.Config(observe="features"), num_classes=3, feature_dim=4)) == "full"
    assert selector_needs(selector_class("dsn_nosampler")(selector_class("dsn_nosampler").Config(), num_classes=3,
                                                           feature_dim=4)) == "none"
    odd = _LinearPolicy(3)
    odd.needs = "clairvoyant"
    with pytest.raises(InputError, match="clairvoyant"):
        selector_needs(odd)


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
