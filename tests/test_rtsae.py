"""The rtsae agent (paper 004): equations on hand-made numbers, learning on planted states,
two streams (checkpoints, resume: tests/test_agent_contract.py)."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from agents.base import aggregate, load_agent, top_m_mask
from agents.rtsae import RTSAEAgent
from agents.rtsae_model import (RTSAEConfig, max_normalise, next_open, nuclear_norm, p_psi, rtsae_loss,
                                sparse_projection, successor_moment, temporal_augment)
from agents.synthetic import planted_states
from data.errors import InputError

TINY = RTSAEConfig(proj_dim=16, hidden=8, gate_dim=4, fusion_dim=16, classifier_hidden=8,
                   pretrain_epochs=1, epochs=1, pretrain_batch_size=8, batch_size=8,
                   optimizer="adam", lr=1e-2)


TORCH_THREADS = 1  # small recurrent steps (tests/conftest.py: _torch_threads)


def _tiny_states(seed=0, V=16):
    return planted_states(V=V, T=6, K=2, D=8, C=4, n_key=2, seed=seed)


# -- equations ------------------------------------------------------------------------
def test_p_psi_is_eq7():
    x = torch.tensor([0.0, 1.0, -2.0, 3.0])
    got = p_psi(x, torch.tensor(2.0))
    want = 1 - np.exp(-np.array([0.0, 1.0, 4.0, 9.0]) / 2.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert got[0] == 0 and torch.allclose(p_psi(torch.tensor([-1.5]), torch.tensor(1.0)),
                                          p_psi(torch.tensor([1.5]), torch.tensor(1.0)))


def test_sparse_projection_is_eq18_and_fixed_by_seed():
    r = sparse_projection(128, 300, seed=3).numpy()
    vals, counts = np.unique(np.round(r / math.sqrt(3), 6), return_counts=True)
    assert list(vals) == [-1.0, 0.0, 1.0]
    frac = counts / r.size
    np.testing.assert_allclose(frac, [1 / 6, 2 / 3, 1 / 6], atol=0.01)
    assert np.array_equal(r, sparse_projection(128, 300, seed=3).numpy())
    assert not np.array_equal(r, sparse_projection(128, 300, seed=4).numpy())


def test_max_normalise_and_eq17_projection():
    xs = torch.tensor([[[1.0, -4.0, 2.0]]])
    xt = torch.tensor([[[8.0, 0.0, -2.0]]])
    np.testing.assert_allclose(max_normalise(xs).numpy(), [[[0.25, -1.0, 0.5]]])
    agent = RTSAEAgent(dataclasses.replace(TINY, proj_dim=4, two_stream=True), num_classes=2, feature_dim=3)
    R = agent.module.proj
    want = R @ ((xs + xt)[0, 0] / (2 * 8.0))                                  # x_max = 8
    np.testing.assert_allclose(agent.module.project(xs, xt)[0, 0].detach().numpy(), want.numpy(), rtol=1e-6)


def test_nuclear_norm_is_sum_of_singular_values():
    diag = torch.tensor([[[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]]])
    u, v = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([3.0, 4.0])
    rank1 = torch.outer(u, v)[None]                                           # ‖u‖‖v‖ = 3·5
    np.testing.assert_allclose(nuclear_norm(torch.cat([diag, rank1])).numpy(), [7.0, 15.0], rtol=1e-5)


def test_next_open():
    open_ = torch.tensor([[True, False, True, False, True], [False, False, False, False, False]])
    assert next_open(open_).tolist() == [[2, 2, 4, 4, 5], [5, 5, 5, 5, 5]]


def test_successor_moment():
    open_ = torch.tensor([[True, False, True, False, False], [False, False, False, False, False]])
    # after the last moment, and where no moment is open, a step pairs with the next step
    assert successor_moment(open_).tolist() == [[2, 2, 3, 4, 4], [1, 2, 3, 4, 4]]


def test_rtsae_loss_is_eq12_on_hand_numbers():
    cfg = RTSAEConfig()
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])                  # (1, T=3, P=2)
    k = torch.tensor([[[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    h = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [3.0, 1.0]]])
    o = torch.tensor([[[0.5, 0.0], [0.0, 0.5], [0.5, 0.5]]])
    a = torch.tensor([[0.9, 0.1, 0.7]], requires_grad=True)                   # open at t = 0, 2
    t = rtsae_loss(x, k, h, o, a, cfg)
    T, H = 3, 2                       # every term per step; the o-terms per unit
    energy = (1.0 + 4.0 + 2.0) / T    # mean ‖x_t‖²: recon in units of the sequence's energy
    assert t["recon"].item() == pytest.approx((1.0 + 1.0 + 0.0) / energy / T)
    # the gate-weighted mean over steps paired with the next moment (t = 0, 1 -> 2; the last
    # pairs with nothing) of log(1 + ‖Δh‖²), ‖Δh‖² in units of h's spread about its mean (16/9)
    spread = 16 / 9
    want = (0.9 * math.log(1 + 10.0 / spread) + 0.1 * math.log(1 + 4.0 / spread)) / (0.9 + 0.1)
    assert t["dissim"].item() == pytest.approx(-0.5 * want)
    assert t["l1_o"].item() == pytest.approx(0.05 * 2.0 / (T * H))
    assert t["l1_a"].item() == pytest.approx(0.8 * 1.7 / T)
    sv = np.linalg.svd(o[0].numpy(), compute_uv=False).sum()
    assert t["nuclear"].item() == pytest.approx(0.02 * sv / (T * math.sqrt(H)), rel=1e-5)
    # the same sequence at 100x the scale: the same recon and dissim (the terms stay balanced)
    big = rtsae_loss(10 * x, 10 * k, 10 * h, o, a, cfg)
    assert big["recon"].item() == pytest.approx(t["recon"].item())
    assert big["dissim"].item() == pytest.approx(t["dissim"].item())
    parts = sum(t[n].item() for n in ("recon", "dissim", "nuclear", "l1_o", "l1_a"))
    assert t["loss"].item() == pytest.approx(parts)
    # stage 3 (no decoder): no reconstruction term
    assert "recon" not in rtsae_loss(x, None, h, o, a, cfg)


def test_mu_reaches_a_shut_gate():
    """μ's gradient reaches the gate of a step that is not (yet) a moment: a shut step whose
    pair is more dissimilar than the moments' mean is pushed open, a less dissimilar one
    shut. Before, only open steps carried μ's term, so a shut gate got no gradient from μ."""
    cfg = dataclasses.replace(RTSAEConfig(), phi=0.0, tau=0.0, lam=0.0)
    o = torch.full((1, 3, 2), 0.5)
    for h, sign in ((torch.tensor([[[0.0, 0.0], [5.0, 5.0], [1.0, 0.0]]]), -1),     # ‖h1 − h2‖² = 41
                    (torch.tensor([[[0.0, 0.0], [3.0, 1.0], [3.0, 0.0]]]), 1)):     # ‖h1 − h2‖² = 1
        a = torch.tensor([[0.9, 0.1, 0.7]], requires_grad=True)                   # t = 1 shut
        x = torch.ones(1, 3, 2)
        rtsae_loss(x, x, h, o, a, cfg)["loss"].backward()                       # recon 0
        assert a.grad[0, 1] * sign > 0


def test_temporal_augment_shifts_and_overwrites():
    cfg = dataclasses.replace(RTSAEConfig(), aug_fraction=1.0, aug_frames=2, aug_other=0.0, aug_shift=False)
    src_b, src_t = temporal_augment(5, 10, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(src_b, torch.arange(5)[:, None].expand(5, 10))       # same video only
    changed = (src_t != torch.arange(10)).sum(1)
    assert (changed <= 2).all() and changed.sum() > 0
    cfg = dataclasses.replace(cfg, aug_fraction=0.0, aug_shift=True)
    src_b, src_t = temporal_augment(64, 10, cfg, torch.Generator().manual_seed(0))
    shift = (src_t[:, :1] - 0) % 10
    assert torch.equal(src_t, (torch.arange(10) + shift) % 10) and (shift != 0).any()
    cfg = dataclasses.replace(cfg, aug_fraction=1.0, aug_other=1.0, aug_shift=False)
    src_b, _ = temporal_augment(64, 10, cfg, torch.Generator().manual_seed(1))
    assert (src_b != torch.arange(64)[:, None]).any()                        # frames from others


def test_config_and_input_errors():
    with pytest.raises(InputError):
        RTSAEConfig(optimizer="rmsprop")
    with pytest.raises(InputError):
        RTSAEConfig(gate_threshold=1.5)
    st = _tiny_states()
    agent = RTSAEAgent(TINY, num_classes=4, feature_dim=8)
    with pytest.raises(InputError, match="two_stream=False"):
        agent.score(st, flow=st)
    two = RTSAEAgent(dataclasses.replace(TINY, two_stream=True), num_classes=4, feature_dim=8)
    with pytest.raises(InputError, match="flow="):
        two.score(st)
    with pytest.raises(InputError, match="8-D"):
        RTSAEAgent(TINY, num_classes=4, feature_dim=9).score(st)


# -- training -------------------------------------------------------------------------
def _accuracy(video_scores, labels):
    return float((video_scores.argmax(1) == labels).float().mean())


def test_learns_planted_key_positions(tmp_path):
    """Unsupervised stage then fine-tuning: at m=5 the agent must beat random-5 and
    uniform-5 by a wide margin and come near the oracle; its open gates must sit mostly on
    the planted key positions."""
    torch.manual_seed(0)
    st = planted_states(V=512, T=25, K=1, D=32, C=8, seed=0)
    train, test = st.subset(np.arange(256)), st.subset(np.arange(256, 512))
    key = st.key_mask[256:]
    cfg = RTSAEConfig(proj_dim=64, hidden=32, gate_dim=8, fusion_dim=64, classifier_hidden=64,
                      pretrain_epochs=1, epochs=10, batch_size=32, optimizer="adam", lr=2e-2,
                      phi=0.2)                  # a small network: ϕ 0.2 (RTSAEConfig's docstring)
    agent = RTSAEAgent(cfg, num_classes=8, feature_dim=32, seed=0)
    log_path = tmp_path / "log.jsonl"
    agent.fit(train, log_path=log_path)
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["pretrain"] + ["finetune"] * 10
    for r in rows:
        assert {"epoch", "loss", "entropy", "fraction_kept", "lr", "seconds"} <= set(r)
    assert {"recon", "nuclear", "l1_o", "l1_a", "dissim"} <= set(rows[0])

    g = torch.Generator().manual_seed(0)
    rand5 = _accuracy(aggregate(test.logits, top_m_mask(torch.rand(256, 25, 1, generator=g), 5)), test.labels)
    uni = torch.zeros(256, 25, 1, dtype=torch.bool)
    uni[:, torch.linspace(0, 24, 5).round().long()] = True
    uniform5 = _accuracy(aggregate(test.logits, uni), test.labels)
    oracle = _accuracy(aggregate(test.logits, key[..., None]), test.labels)
    sel5 = agent.select(test, 5)
    ours5 = _accuracy(sel5.video_scores, test.labels)
    free = agent.select(test, None)
    ours = _accuracy(free.video_scores, test.labels)
    precision = float((sel5.keep[..., 0] & key).sum() / sel5.keep.sum())
    print(f"random5 {rand5:.3f} uniform5 {uniform5:.3f} oracle {oracle:.3f} rtsae@5 {ours5:.3f} "
          f"rtsae@gate {ours:.3f} kept {free.num_kept.float().mean():.2f} key-precision@5 {precision:.3f}")
    assert ours5 > max(rand5, uniform5) + 0.4
    # 0.7 of the oracle: over agent seeds 0-4 this network reaches 0.68-0.93 at m = 5 and
    # 0.71-0.92 with its open gates (measured 2026-12-02); seed 0 gives 0.820 / 0.789 on one
    # machine and cleared 0.8 on another (CPU float kernels differ), so 0.8 was the edge
    assert ours5 > 0.7 * oracle and ours > 0.7 * oracle
    assert precision > 0.5                      # chance is 5/25 = 0.2
    assert (sel5.num_kept == 5).all() and 2 <= free.num_kept.float().mean() <= 12


def _planted_split(V=128, T=12, D=16):
    st = planted_states(V=2 * V, T=T, K=1, D=D, C=8, n_key=3, seed=0)
    return st.subset(np.arange(V)), st.subset(np.arange(V, 2 * V))


SMALL = dict(proj_dim=16, hidden=16, gate_dim=4, fusion_dim=32, classifier_hidden=32)


def test_phi_governs_the_unsupervised_keyframe_fraction():
    """Stage 2 alone (eq. 12): ϕ shuts gates that are open without it. Before eq. 12 was
    balanced, the reconstruction term (hundreds of times the rest at D = 512) kept every
    gate open whatever ϕ was (fraction 1.0 at both)."""
    train, _ = _planted_split(V=64, D=512)           # a backbone-sized feature, 004's R
    frac = {}
    for phi in (0.0, 0.8):
        cfg = RTSAEConfig(**dict(SMALL, proj_dim=128), pretrain_epochs=4, epochs=1, phi=phi)
        agent = RTSAEAgent(cfg, num_classes=8, feature_dim=512, seed=0)
        agent.fit(train)
        frac[phi] = agent.history[cfg.pretrain_epochs - 1]["fraction_kept"]
    print(frac)
    assert frac[0.0] > 0.5 and frac[0.8] < 0.1


def test_phi_sets_the_reported_keyframe_fraction_and_the_gate_beats_no_gate():
    """Stage 3 keeps ϕ‖ā‖_1, so the fraction that reaches evaluate is the loss's: it falls
    with ϕ, and with ϕ the gated prediction beats the same network reading every position
    (gate = 1) on planted states whose other positions mislead. A small network, so ϕ 0.2
    (004's 0.8 shuts every gate there: RTSAEConfig's docstring; the full default network at
    ϕ 0.8 is benchmarks/rtsae_terms.py --full). Before, stage 3 was the cross-entropy alone:
    the fraction did not fall with ϕ (0.30 at ϕ 0, 1.00 at ϕ 0.2) and at ϕ 0.2 the gated
    prediction equalled the no-gate one."""
    train, test = _planted_split()
    res = {}
    for phi in (0.0, 0.2):
        agent = RTSAEAgent(RTSAEConfig(**SMALL, phi=phi), num_classes=8, feature_dim=16, seed=0)
        agent.fit(train)
        sel = agent.select(test, None)
        no_gate = _accuracy(agent.predict(test, torch.ones(test.features.shape[:3])), test.labels)
        res[phi] = (float(sel.keep.float().mean()), _accuracy(sel.video_scores, test.labels), no_gate)
        print(phi, res[phi], agent.history[-1]["fraction_kept"])
        assert agent.history[-1]["fraction_kept"] == pytest.approx(res[phi][0], abs=0.15)
    print(res)
    assert res[0.0][0] > res[0.2][0] + 0.1
    assert res[0.2][1] > res[0.2][2] + 0.15


@pytest.mark.slow
def test_beats_its_no_gate_baseline_at_full_defaults():
    """The issue's criterion at every default (network widths and epochs included; about a
    minute on one core): the gated model beats the same network reading every position.
    Before, stage 3 was the cross-entropy alone: every gate reopened and both scored 0.948
    here (now 0.906 against 0.281)."""
    train, test = _planted_split(V=96)
    agent = RTSAEAgent(RTSAEConfig(), num_classes=8, feature_dim=16, seed=0)
    agent.fit(train)
    gated = _accuracy(agent.select(test, None).video_scores, test.labels)
    no_gate = _accuracy(agent.predict(test, torch.ones(test.features.shape[:3])), test.labels)
    print(f"gated {gated:.3f} no-gate {no_gate:.3f} kept {agent.history[-1]['fraction_kept']:.2f}")
    assert gated > no_gate + 0.3


def test_two_stream_fusion_learns_weight(tmp_path):
    rgb = _tiny_states(seed=0)
    flow = dataclasses.replace(rgb, features=rgb.features.flip(-1) * 3.0)
    cfg = dataclasses.replace(TINY, two_stream=True, epochs=2)
    agent = RTSAEAgent(cfg, num_classes=4, feature_dim=8)
    agent.fit(rgb, flow=flow, checkpoint_path=tmp_path / "f.pt", val=rgb, val_flow=flow)
    assert agent.history[-1]["w_f"] != 1.0                     # w_f is learned (eq. 16)
    assert "val_top1" in agent.history[-1]
    sel = agent.select(rgb, 2, flow=flow)
    assert sel.keep.shape == (16, 6, 2) and (sel.num_kept == 2).all()
    again = load_agent(tmp_path / "f.pt")
    assert torch.equal(again.score(rgb, flow=flow), agent.score(rgb, flow=flow))
    with pytest.raises(InputError, match="differ"):
        agent.score(rgb, flow=flow.subset(np.arange(8)))
