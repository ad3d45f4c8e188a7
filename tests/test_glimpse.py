"""The glimpse agent (paper 001): reward and penalty on hand-made numbers, finding the
planted cell, checkpoint round-trip (resume: tests/test_agent_contract.py)."""

import dataclasses

import numpy as np
import pytest
import torch

from agents.base import aggregate, load_agent, top_m_mask
from agents.glimpse import (GlimpseAgent, GlimpseConfig, attention_focus, attention_penalty, classifier_gain,
                            glimpse_reward)
from agents.synthetic import planted_states
from data.errors import InputError

TINY = GlimpseConfig(hidden=8, layers=2, dropout=0.5, epochs=1, batch_size=8, episodes=2, lr=1e-2)


TORCH_THREADS = 1  # small recurrent steps (tests/conftest.py: _torch_threads)


def _tiny_states(seed=0, V=16):
    return planted_states(V=V, T=5, K=2, D=6, C=3, n_key=2, seed=seed, with_maps=True, map_size=3)


def test_reward_is_eq7_single_label():
    cfg = GlimpseConfig(eta=0.7, reward_pos=2.0, reward_neg=-3.0)
    scores = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 1.0]])
    r = glimpse_reward(scores, torch.tensor([1, 2]), False, cfg)
    assert r.tolist() == pytest.approx([0.7 * 1 * 2.0, 0.3 * 1 * -3.0])


def test_reward_is_eq7_multi_label():
    cfg = GlimpseConfig(eta=0.5, reward_pos=1.0, reward_neg=-1.0)
    scores = torch.tensor([[1.0, 2.0, -1.0, 0.5], [-1.0, -1.0, -1.0, -1.0]])   # > 0 predicts
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    # row 0: TP {0, 3}, FP {1} -> 0.5·2 − 0.5·1; row 1: predicts nothing -> 0
    assert glimpse_reward(scores, labels, True, cfg).tolist() == pytest.approx([0.5, 0.0])


def test_attention_penalty_forms():
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])              # (1, T=3, n=2)
    # 001's focus: mean_t (1 − Σ_i π²) = (0 + 0.5 + 0) / 3
    assert attention_penalty(probs).tolist() == pytest.approx([0.5 / 3])
    assert attention_penalty(probs, "focus").tolist() == pytest.approx([0.5 / 3])
    assert attention_penalty(torch.eye(4)[None]).item() == pytest.approx(0.0)   # one cell per step
    uniform = torch.full((1, 4, 4), 0.25)
    assert attention_penalty(uniform).item() == pytest.approx(0.75)
    # [11]'s doubly stochastic: Σ_t = (1.5, 1.5) -> (1 − 1.5)² · 2 = 0.5; uniform over T = n: 0
    assert attention_penalty(probs, "doubly_stochastic").tolist() == pytest.approx([0.5])
    assert attention_penalty(uniform, "doubly_stochastic").item() == pytest.approx(0.0)
    assert attention_focus(probs).tolist() == pytest.approx([(1 + 0.5 + 1) / 3])
    with pytest.raises(InputError, match="penalty"):
        GlimpseConfig(penalty="spread")


def test_needs_feature_maps():
    st = planted_states(V=8, T=5, K=1, D=6, C=3, n_key=2)
    with pytest.raises(InputError, match="feature maps"):
        GlimpseAgent.for_states(TINY, st)
    agent = GlimpseAgent(TINY, num_classes=3, feature_dim=6)
    with pytest.raises(InputError, match="feature maps"):
        agent.score(st)
    with pytest.raises(InputError, match="built for"):
        agent.score(_tiny_states())                                           # 3×3 maps, not 7×7


def test_score_select_shapes():
    st = _tiny_states()
    agent = GlimpseAgent.for_states(TINY, st)
    conf, sc = agent.policy_confidence(st), agent.score(st)
    assert conf.shape == sc.shape == (16, 5, 2) and ((conf > 0) & (conf <= 1)).all()
    sel = agent.select(st, 2)
    assert sel.video_scores.shape == (16, 3) and (sel.num_kept == 2).all()
    assert agent.locations(st).max() < 9
    full = agent.select(st, None)
    assert full.keep.all() and (full.num_kept == 5).all()


def test_checkpoint_round_trip(tmp_path):
    st = _tiny_states()
    agent = GlimpseAgent.for_states(TINY, st, seed=2)
    agent.fit(st, checkpoint_path=tmp_path / "g.pt")
    again = load_agent(tmp_path / "g.pt")
    assert isinstance(again, GlimpseAgent) and again.map_shape == (3, 3, 6)
    assert torch.equal(again.score(st), agent.score(st))
    assert torch.equal(again.select(st, 3).video_scores, agent.select(st, 3).video_scores)


def test_finds_the_planted_cell_and_beats_baselines():
    """The evidence of each video sits in one cell of a 4×4 map: at key positions the greedy
    policy must look there far more often than a uniform-cell policy (1/16), and at m=5 the
    agent must beat random-5 and uniform-5 by a wide margin."""
    torch.manual_seed(0)
    st = planted_states(V=768, T=25, K=1, D=32, C=8, seed=0, with_maps=True, map_size=4)
    train, test = st.subset(np.arange(512)), st.subset(np.arange(512, 768))
    key = st.key_mask[512:]
    cfg = GlimpseConfig(hidden=64, layers=1, epochs=12, lr=1e-2, episodes=4, batch_size=32,
                        attention_penalty=0.0)
    agent = GlimpseAgent.for_states(cfg, train, seed=0)
    agent.fit(train)
    for r in agent.history:
        assert {"epoch", "loss", "reward", "entropy", "fraction_kept", "lr", "seconds"} <= set(r)
    assert agent.history[-1]["reward"] > agent.history[0]["reward"] + 0.3

    maps = test.feature_maps[:, :, 0].flatten(2, 3)                          # (V, T, 16, D)
    cell = torch.einsum("vtnd,vtd->vn", maps, test.features[:, :, 0]).argmax(1)
    hit = agent.locations(test)[..., 0] == cell[:, None]
    key_hit = float(hit[key].float().mean())

    labels = test.labels
    acc = lambda s: float((s.argmax(1) == labels).float().mean())  # noqa: E731
    g = torch.Generator().manual_seed(0)
    rand5 = acc(aggregate(test.logits, top_m_mask(torch.rand(256, 25, 1, generator=g), 5)))
    uni = torch.zeros(256, 25, 1, dtype=torch.bool)
    uni[:, torch.linspace(0, 24, 5).round().long()] = True
    uniform5 = acc(aggregate(test.logits, uni))
    oracle = acc(aggregate(test.logits, key[..., None]))
    sel5 = agent.select(test, 5)
    ours5, ours = acc(sel5.video_scores), acc(agent.select(test, None).video_scores)
    precision = lambda keep: float(key[keep[..., 0]].float().mean())  # noqa: E731
    by_gain, by_conf = precision(sel5.keep), precision(top_m_mask(agent.policy_confidence(test), 5))
    print(f"key-position cell hit {key_hit:.3f} (uniform 0.0625) random5 {rand5:.3f} uniform5 "
          f"{uniform5:.3f} oracle {oracle:.3f} glimpse@5 {ours5:.3f} glimpse@25 {ours:.3f} "
          f"key precision of the top 5: by score {by_gain:.3f}, by policy confidence {by_conf:.3f} "
          f"(chance {float(key.float().mean()):.3f})")
    assert key_hit > 0.4
    # seed 0 gives 0.401 and 0.391 on two machines (CPU float kernels differ): 2x chance was
    # the edge; 1.75x still fails a score that does not find keys (chance 0.200)
    assert by_gain > 1.75 * float(key.float().mean())
    assert ours5 > max(rand5, uniform5) + 0.4
    assert ours > 0.6 * oracle


@pytest.mark.slow
def test_the_soft_partner_learns_its_classifier():
    """glimpse_soft (001's "baseline attention model [11]" on this network, agents/glimpse_soft.py)
    on the planted 4×4 maps of the test above, its small network: the expectation over the
    slices carries the evidence cell, so it learns (measured: 0.80 over all positions, 0.98
    on the key positions alone, chance 0.125; ~25 s on one core)."""
    from agents.glimpse_soft import GlimpseSoft, GlimpseSoftConfig

    st = planted_states(V=768, T=25, K=1, D=32, C=8, seed=0, with_maps=True, map_size=4)
    train, test = st.subset(np.arange(512)), st.subset(np.arange(512, 768))
    agent = GlimpseSoft.for_states(GlimpseSoftConfig(hidden=64, layers=1, epochs=12, lr=1e-2), train, seed=0)
    agent.fit(train)
    acc = lambda s: float((s.argmax(1) == test.labels).float().mean())  # noqa: E731
    assert acc(agent.select(test, None).video_scores) > 0.6
    assert acc(agent.video_scores(test, st.key_mask[512:, :, None])) > 0.9
    assert agent.history[-1]["ce"] < 0.6 * agent.history[0]["ce"] and agent.history[-1]["fraction_kept"] == 1.0


def test_classifier_gain_on_hand_made_scores():
    """Single-label: the steps' gains of the final class telescope to log p_T(ŷ) − log
    p_prior(ŷ); a held (dropped) step gains 0. Multi-label: the final positive classes."""
    prior = torch.zeros(3)
    outs = torch.tensor([[[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])   # ends on class 2
    gain = classifier_gain(outs, prior, multilabel=False)[0]
    logp = lambda v: torch.log_softmax(torch.tensor(v), -1)[2]  # noqa: E731
    assert gain.tolist() == pytest.approx([float(logp([2.0, 0, 0]) - logp([0.0, 0, 0])), 0.0,
                                           float(logp([0.0, 0, 3]) - logp([2.0, 0, 0]))])
    assert float(gain.sum()) == pytest.approx(float(logp([0.0, 0, 3]) - logp([0.0, 0, 0])))
    ml = classifier_gain(torch.tensor([[[1.0, -1.0, 1.0]]]), prior, multilabel=True)[0]
    ls = torch.nn.functional.logsigmoid
    assert float(ml[0]) == pytest.approx(float(2 * (ls(torch.tensor(1.0)) - ls(torch.tensor(0.0)))))


def _focus_after_training(weight: float, **cfg) -> float:
    """Mean over test steps of max_i π_{t,i} after a short training run on planted maps
    (the evidence of each video sits in one cell of 3×3)."""
    st = planted_states(V=96, T=8, K=1, D=12, C=4, n_key=2, seed=0, with_maps=True, map_size=3)
    train, test = st.subset(np.arange(64)), st.subset(np.arange(64, 96))
    config = GlimpseConfig(hidden=16, layers=1, epochs=4, batch_size=16, episodes=2, lr=3e-2,
                           attention_penalty=weight, **cfg)
    agent = GlimpseAgent.for_states(config, train, seed=0)
    agent.fit(train)
    assert "focus" in agent.history[-1]
    return float(agent.policy_confidence(test).mean())


def test_default_penalty_focuses_attention():
    """001 wants the regularisation to "focus on one region in time": at the default λ the
    policy ends up sharper than with no penalty at all, where [11]'s doubly stochastic
    penalty (the default before) spreads it over the cells."""
    free = _focus_after_training(0.0)
    default = _focus_after_training(GlimpseConfig().attention_penalty)
    spread = _focus_after_training(1.0, penalty="doubly_stochastic")
    print(f"focus: no penalty {free:.3f}, default {default:.3f}, doubly stochastic {spread:.3f}")
    # measured: no penalty 0.37, default (focus) 0.64, doubly stochastic 0.13 (uniform 1/9)
    assert default > free + 0.15 and spread < free


def test_history_counts_the_adam_updates_of_each_epoch():
    """An epoch of V videos at batch B is ceil(V / B) Adam steps, and the history says so:
    at the default 32, 240 videos get 8 an epoch (80 in 10 epochs; GlimpseConfig's
    docstring measures batch 8 at 300 updates: no better)."""
    st = planted_states(V=240, T=3, K=1, D=4, C=3, n_key=1, seed=0, with_maps=True, map_size=2)
    for batch, updates in ((GlimpseConfig().batch_size, 8), (100, 3)):
        cfg = dataclasses.replace(GlimpseConfig(), hidden=4, layers=1, epochs=1, batch_size=batch)
        agent = GlimpseAgent.for_states(cfg, st)
        agent.fit(st)
        assert agent.history[0]["updates"] == updates
