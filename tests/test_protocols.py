"""Protocol rows on planted states: schema, paired tests, fusion, splits, independent checks."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from agents.base import Selector, selector_class, selector_names
from agents.synthetic import planted_states
from data.errors import InputError
from evaluate import metrics
from evaluate.compute import CostModel
from evaluate.diagnostics import collect_diagnostics
from evaluate.protocols import (PROTOCOLS, ROW_FIELDS, ProtocolConfig, build_methods, check_states,
                                run_protocols, summarize_splits, weights_label)

T, K, C = 10, 2, 6


TORCH_THREADS = 1  # tiny tensors (tests/conftest.py: _torch_threads)


@dataclass(frozen=True)
class KeyConfig:
    state: str = "features"


class KeyFinder(Selector):
    """A 'learned' policy that has learned the planted action direction (it reads the
    ground-truth key mask): what a working agent looks like."""

    name, learned = "keyfinder", True

    def __init__(self, stream="rgb", state="features", key=None):
        self.key = _states()["rgb"].key_mask if key is None else key     # (V, T) bool, by video id
        self.config, self.store_identity = KeyConfig(state), {"stream": stream}
        self.history = [{"reward": r, "entropy": 0.6 - r / 10, "fraction_kept": 0.5 - r / 10} for r in (0.1, 0.5, 1.0)]

    def score(self, states):
        key = self.key[torch.as_tensor(states.video_ids)].float()
        return key[:, :, None].expand(*states.shape[:3]) + 0.01 * states.motion[:, :, None]


class Stubborn(KeyFinder):
    """A 'learned' policy that learned nothing: a fixed score, i.e. the first m positions."""

    name = "stubborn"

    def score(self, states):
        V, T_, K_ = states.shape[:3]
        return torch.arange(T_, 0, -1, dtype=torch.float32)[None, :, None].expand(V, T_, K_).clone()


class Thresholded(Selector):
    """A variable-m method: keeps every position whose key mask is set."""

    name, variable_m = "thresholded", True

    def select(self, states, m, *, mode="frame", alpha=0.0):
        from agents.baselines import _selection
        keep = _states()["rgb"].key_mask[torch.as_tensor(states.video_ids)]
        keep = keep[:, :, None].expand(*states.shape[:3]).clone()
        return _selection(self, states, keep.float(), keep, mode, alpha)


def _states(seed=0, V=60, K_=K):
    rgb = planted_states(V=V, T=T, K=K_, D=8, C=C, n_key=3, seed=seed)
    flow = planted_states(V=V, T=T, K=K_, D=8, C=C, n_key=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    flow.logits = flow.logits + torch.randn(flow.logits.shape, generator=g)   # same videos, other evidence
    return {"rgb": rgb, "flow": flow}


CFG = ProtocolConfig(ms=(2, 4, 40), bootstrap=500)
COSTS = CostModel(T=T, crops=K, flow_stack=5, backbone={"rgb": 1.0, "flow": 2.0}, flow_pair=0.5, flow_algorithm="tvl1")


@pytest.fixture(scope="module")
def rows():
    st = _states()
    methods = build_methods(["uniform", "random", "oracle", Thresholded()],
                            [KeyFinder("rgb"), KeyFinder("flow"), Stubborn("rgb")], st)
    return run_protocols(st, methods, split="1", config=CFG, costs=COSTS)


def _get(rows, **kw):
    out = [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    assert out, f"no row with {kw}"
    return out


def test_schema_and_protocols(rows):
    assert {r["protocol"] for r in rows} == set(PROTOCOLS) - {"dsn_mn"}      # no dsn checkpoint given
    for r in rows:
        assert set(ROW_FIELDS) <= set(r)
        assert 0.0 <= r["top1"] <= 1.0 and 0.0 <= r["top5"] <= 1.0 and r["map"] is None
        assert r["stream"] in ("rgb", "flow", "fused") and r["split"] == "1"
        assert r["gflops_deployable"] <= r["gflops_full"] + 1e-9
    # m capped at T: 40 became 10, and appears once per (method, stream) in accuracy_vs_m
    ms = [r["m"] for r in _get(rows, protocol="accuracy_vs_m", method="uniform", stream="rgb")]
    assert ms == [2, 4, T]
    # a variable-m method runs once, with m = None
    assert [r["m"] for r in _get(rows, protocol="accuracy_vs_m", method="thresholded", stream="rgb")] == [None]


def test_dense_uniform_matches_an_independent_mean(rows):
    st = _states()
    for stream in ("rgb", "flow"):
        dense = st[stream].logits.double().mean(dim=(1, 2)).numpy()
        r = _get(rows, protocol="accuracy_vs_m", method="uniform", stream=stream, m=T)[0]
        assert r["top1"] == pytest.approx(metrics.top_k_accuracy(dense, st[stream].labels.numpy()))
        assert r["gflops_full"] == r["gflops_deployable"]


def test_fusion_rows_match_fuse_scores(rows):
    st = _states()
    per = {s: st[s].logits.double().mean(dim=(1, 2)).numpy() for s in st}
    fused = metrics.fuse_scores(per, {"rgb": 1.0, "flow": 1.5})
    r = _get(rows, protocol="fusion", method="uniform", stream="fused", m=T, fusion_weights="rgb:flow = 1:1.5")[0]
    assert r["top1"] == pytest.approx(metrics.top_k_accuracy(fused, st["rgb"].labels.numpy()))
    assert r["gflops_full"] == pytest.approx(1.0 * T * K + 2.0 * T * K + T * 5 * 0.5)
    names = {r["fusion_weights"] for r in _get(rows, protocol="fusion", stream="fused")}
    assert names == {weights_label((("rgb", 1.0), ("flow", 1.5))), "rgb:flow = 0.333:0.667"}
    # an agent pair fuses; an agent on one stream only (stubborn) does not
    assert _get(rows, protocol="fusion", method="keyfinder[state=features]", stream="fused")
    assert not [r for r in rows if r["protocol"] == "fusion" and r["method"].startswith("stubborn")]


def test_paired_comparisons(rows):
    good = _get(rows, protocol="accuracy_vs_m", method="keyfinder[state=features]", stream="rgb", m=2)[0]
    assert good["top1"] > 0.9 and good["vs_uniform_diff"] > 0.3
    assert good["ci_lo"] > 0 and good["mcnemar_p"] < 0.01 and good["vs_random_p"] < 0.01
    bad = _get(rows, protocol="accuracy_vs_m", method="stubborn[state=features]", stream="rgb", m=4)[0]
    assert bad["ci_lo"] < 0 < bad["ci_hi"] or bad["vs_uniform_diff"] < 0
    uni = _get(rows, protocol="accuracy_vs_m", method="uniform", stream="rgb", m=2)[0]
    assert good["vs_uniform_diff"] == pytest.approx(good["top1"] - uni["top1"], abs=1.5 / 60)  # ties aside
    assert uni["vs_uniform_diff"] is None
    var = _get(rows, protocol="accuracy_vs_m", method="thresholded", stream="rgb")[0]
    assert var["uniform_m"] == 3 and var["fraction_kept"] == pytest.approx(0.3)   # n_key = 3 of T = 10


def test_frame_region_alpha_state(rows):
    fr = _get(rows, protocol="frame_vs_region", method="random", stream="rgb", m=4)
    assert {r["mode"] for r in fr} == {"frame", "region"}
    region = [r for r in fr if r["mode"] == "region"][0]
    assert region["fraction_kept"] == pytest.approx(4 / T)            # m*K cells of T*K
    alphas = _get(rows, protocol="alpha", method="keyfinder[state=features]", stream="rgb", m=2)
    assert [r["alpha"] for r in alphas] == [0.0, 0.1, 0.2, 0.3]
    assert alphas[0]["top1"] >= alphas[-1]["top1"]                     # misleading frames hurt when weighted in
    assert {r["method"] for r in _get(rows, protocol="alpha")} == {"uniform", "keyfinder[state=features]",
                                                                   "stubborn[state=features]"}
    assert {r["state"] for r in _get(rows, protocol="state_ablation")} == {"features"}


def test_k1_skips_region_and_one_stream_skips_fusion():
    st = {"rgb": _states(K_=1)["rgb"]}
    methods = build_methods(["uniform"], [KeyFinder("rgb", key=st["rgb"].key_mask)], st)
    rows = run_protocols(st, methods, config=ProtocolConfig(ms=(3,), bootstrap=200), costs=None)
    assert {r["protocol"] for r in rows} == {"accuracy_vs_m", "alpha", "state_ablation"}
    assert all(r["gflops_full"] is None for r in rows)


def test_dsn_checkpoint_rows_carry_mn():
    dsn_cls = selector_class("dsn")
    st = {"rgb": _states(V=24)["rgb"]}
    agent = dsn_cls(dsn_cls.Config(sections=3, clips_per_section=3, hidden=8), num_classes=C, feature_dim=8)
    agent.store_identity = {"stream": "rgb"}
    rows = run_protocols(st, build_methods(["uniform"], [agent], st),
                         config=ProtocolConfig(ms=(4,), protocols=("dsn_mn",), bootstrap=100), costs=COSTS)
    mine = [r for r in rows if r["method"] == "dsn[3:3]"]      # 003 Fig. 4: m sections × N = 3 (m·3 <= T)
    assert [(r["m"], r["mn"], r["test_mn"]) for r in mine] == [(m, "3:3", f"{m}:3") for m in (1, 2, 3)]
    assert mine[-1]["fraction_kept"] == pytest.approx(3 / T)
    assert mine[-1]["gflops_full"] > 1.0 * T * K                      # the observer network is counted


def test_every_registered_baseline_runs():
    st = _states(V=20)
    names = selector_names(learned=False)
    rows = run_protocols(st, build_methods(names, [], st),
                         config=ProtocolConfig(ms=(3,), protocols=("accuracy_vs_m",), bootstrap=100), costs=COSTS)
    assert {r["method"] for r in rows} == set(names)
    oracle = _get(rows, method="oracle", stream="rgb")[0]
    uniform = _get(rows, method="uniform", stream="rgb")[0]
    assert oracle["top1"] > uniform["top1"]
    assert _get(rows, method="motion", stream="rgb")[0]["gflops_deployable"] > uniform["gflops_deployable"]


def test_splits_mean_and_std():
    cfg = ProtocolConfig(ms=(4,), protocols=("accuracy_vs_m",), bootstrap=100)
    rows = []
    for split, seed in (("1", 0), ("2", 1), ("3", 2)):
        st = _states(seed=seed, V=30)
        rows += run_protocols(st, build_methods(["uniform"], [KeyFinder("rgb", key=st["rgb"].key_mask)], st),
                              split=split, config=cfg)
    mean = summarize_splits(rows)
    r = [x for x in mean if x["method"] == "uniform" and x["stream"] == "rgb"][0]
    vals = [x["top1"] for x in rows if x["method"] == "uniform" and x["stream"] == "rgb"]
    assert r["split"] == "mean" and r["num_splits"] == 3
    assert r["top1"] == pytest.approx(np.mean(vals)) and r["top1_std"] == pytest.approx(np.std(vals, ddof=1))
    assert r["mcnemar_p"] is None and r["gflops_full"] is None


def test_bad_inputs():
    st = _states(V=12)
    other = _states(seed=5, V=12)["flow"]
    other.video_ids = other.video_ids[::-1].copy()
    with pytest.raises(InputError, match="same videos"):
        check_states({"rgb": st["rgb"], "flow": other})
    with pytest.raises(InputError, match="depth"):
        build_methods([], [KeyFinder("depth")], st)
    with pytest.raises(InputError, match="protocols"):
        ProtocolConfig(protocols=("vibes",))
    with pytest.raises(InputError, match="ms"):
        ProtocolConfig(ms=(0,))


def test_diagnostics():
    st = _states(V=16)
    thumbs = np.zeros((16, T, 8, 8, 3), np.uint8)
    methods = build_methods(["uniform"], [KeyFinder("rgb", key=st["rgb"].key_mask)], st)
    ex = collect_diagnostics(st, methods, m=3, sample=2, thumbnails=thumbs)
    key = "keyfinder[state=features] (rgb)"
    assert ex["importance"][key].shape == (2, T) and ex["thumbnails"].shape == (2, T, 8, 8, 3)
    assert ex["histories"][key][-1]["reward"] == 1.0
    pc = ex["per_class"][0]
    assert pc["method"] == key and len(pc["acc"]) == C and len(pc["uniform"]) == C
    assert ex["fraction_kept"]["uniform (flow)"] == pytest.approx(np.full(16, 0.3))


def test_rows_from_block_summaries_equal_rows_from_whole_selections(monkeypatch):
    """evaluate keeps, of each selection, per-video summaries of its blocks (class scores and
    counts, evaluate.methods.summarize), not the (V, T, K) mask and scores: every row and
    diagnostic equals those of whole selections kept as they were (the path before issue 13's
    lean cache), over several blocks, every protocol and both streams."""
    import json

    import evaluate.protocols as P
    from evaluate.methods import SelectionSummary, summarize

    st = _states(V=24)
    cfg = ProtocolConfig(ms=(2, 4), alphas=(0.0, 0.2), bootstrap=100)

    def run():
        methods = build_methods(["uniform", "random", "max_response", Thresholded()],
                                [KeyFinder("rgb"), KeyFinder("flow"), Stubborn("rgb")], st)
        rows = run_protocols(st, methods, config=cfg, costs=COSTS)
        ex = collect_diagnostics(st, methods, m=3, sample=3)
        return json.dumps([rows, {k: ex[k] for k in ("scores", "fraction_kept", "importance", "per_class")}],
                          sort_keys=True, default=lambda x: np.asarray(x).tolist())

    monkeypatch.setattr("evaluate.methods.BLOCK_BYTES", 4 * T * K * (8 + C) * 5)     # blocks of 5 videos
    kept = []
    real = P.select_in_blocks

    def spy(*args, **kw):
        kept.append(real(*args, **kw))
        return kept[-1]

    monkeypatch.setattr(P, "select_in_blocks", spy)
    lean = run()
    assert kept and all(isinstance(s, SelectionSummary) for s in kept)

    def whole(selector, states, m, *, summary=False, frame_scores=False, scores=None, **kw):
        sel = real(selector, states, m, block=10 ** 9, **kw)         # one pass, the full Selection
        return summarize(sel, frame_scores) if summary else sel

    monkeypatch.setattr(P, "select_in_blocks", whole)
    assert lean == run()
