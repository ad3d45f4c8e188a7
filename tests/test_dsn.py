"""The ``dsn`` agent (paper 003): equations on hand-made numbers, learning on a planted cache,
checkpoints of both schemes (resume: tests/test_agent_contract.py)."""
import json
import math

import pytest
import torch

from agents.base import load_agent, selector_class
from agents.dsn import DSN, DSNConfig, dsn_reward, fit_linear_head, gumbel_argmax, section_positions, top1
from agents.rl import categorical_log_prob, reinforce_loss
from agents.synthetic import planted_states
from data.errors import InputError

D, C = 32, 8
FAST = dict(lr=0.03, epochs=10, batch_size=32, episodes=4, hidden=64, test_sections=1)


TORCH_THREADS = 1  # tiny tensors (tests/conftest.py: _torch_threads)


@pytest.fixture(scope="module")
def planted():
    """One planted world (same prototypes), split into 256 train / 256 test videos."""
    st = planted_states(V=512, T=25, K=1, D=D, C=C, seed=0)
    return st.subset(range(256)), st.subset(range(256, 512)), st.key_mask[256:]


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory):
    """Both training schemes, trained once for the module, with their checkpoints and logs."""
    train, _, _ = planted
    out = {}
    for mode in ("fixed", "alternate"):
        d = tmp_path_factory.mktemp(mode)
        agent = DSN(DSNConfig(mode=mode, **FAST), num_classes=C, feature_dim=D, seed=0)
        agent.fit(train, log_path=d / "log.jsonl", checkpoint_path=d / "dsn.pt")
        out[mode] = (agent, d)
    return out


# -- equations on hand-made numbers -----------------------------------------------------
def test_section_positions_tsn_segments():
    # T=25, 1 section x 3 clips: segments [0, 8.33), [8.33, 16.67), [16.67, 25).
    assert section_positions(25, 1, 3).tolist() == [[4, 12, 20]]
    assert section_positions(25, 1, 3, torch.zeros(3)).tolist() == [[0, 8, 16]]
    assert section_positions(25, 1, 3, torch.full((3,), 0.999)).tolist() == [[8, 16, 24]]
    pos = section_positions(12, 2, 3, torch.zeros(5, 6))
    assert pos.shape == (5, 2, 3) and pos[0].tolist() == [[0, 2, 4], [6, 8, 10]]
    with pytest.raises(InputError):
        section_positions(5, 2, 3)


def test_reward_eq6():
    # Position 0 predicts the true class 2 with probability p; position 1 predicts class 0.
    logits = torch.tensor([[[0.0, 0.0, 2.0], [3.0, 0.0, 1.0]]])
    p = math.exp(2.0) / (2.0 + math.exp(2.0))
    r = dsn_reward(logits, torch.tensor([2]), gamma=0.7)
    assert r.shape == (1, 2)
    assert r[0, 0].item() == pytest.approx(p, rel=1e-6)
    assert r[0, 1].item() == pytest.approx(-0.7)


def test_reinforce_greedy_baseline_eq11():
    """Eq. 11 as the agent builds it: ∂L/∂logits = −(R(A) − R(B))(onehot(a) − p) / n."""
    cand = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], requires_grad=True)
    act, r_a, r_b = torch.tensor([2, 0]), torch.tensor([0.9, -1.0]), torch.tensor([-1.0, -1.0])
    reinforce_loss(categorical_log_prob(cand, act).reshape(1, -1), r_a.reshape(1, -1), r_b).backward()
    p = torch.softmax(cand.detach(), -1)
    want = -((r_a - r_b)[:, None] * (torch.nn.functional.one_hot(act, 3) - p)) / 2
    assert torch.allclose(cand.grad, want, atol=1e-6)
    assert cand.grad[1].abs().max() == 0          # sample == greedy reward: no signal


def test_gumbel_argmax_samples_the_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3])).expand(20000, 3)
    freq = torch.bincount(gumbel_argmax(logits, g), minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.015)


def test_linear_head_reproduces_linear_logits():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(20, 5, 2, 6, generator=g)
    w, b = torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    w2, b2 = fit_linear_head(feats, feats @ w.T + b, batch=7)
    assert torch.allclose(w2, w, atol=1e-4) and torch.allclose(b2, b, atol=1e-4)


def test_config_and_inputs_are_checked():
    with pytest.raises(InputError):
        DSNConfig(mode="joint")
    with pytest.raises(InputError):
        DSNConfig(observe="thumbnails")
    with pytest.raises(InputError):
        DSNConfig(clips_per_section=0)
    assert selector_class("dsn") is DSN
    st = planted_states(V=8, T=25, K=2, D=D, C=C, seed=3)
    st.observer = torch.randn(8, 25, 2, 12)
    agent = DSN(DSNConfig(epochs=1), num_classes=C, feature_dim=D)
    with pytest.raises(InputError, match="observer_dim"):
        agent.score(st)


# -- learning ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fixed", "alternate"])
def test_learns_planted_key_positions(trained, planted, mode):
    """At m = 5 (5 sections × 3 candidates, the segment centres) the observer keeps a key
    position in nearly every section whose candidates hold one — the most any selection
    under 003's test protocol can keep — and beats random and uniform by a wide margin."""
    _, test, keys = planted
    agent, _ = trained[mode]
    acc = {n: top1(selector_class(n)().select(test, 5).video_scores, test.labels) for n in ("uniform", "random")}
    sel = agent.select(test, 5)
    mine = top1(sel.video_scores, test.labels)
    pos = section_positions(25, 5, 3)
    reachable = keys[:, pos].any(-1).sum(1).float().mean().item()            # sections with a key candidate
    kept_keys = (sel.keep[..., 0] & keys).sum(1).float().mean().item()
    assert mine > max(acc.values()) + 0.3, (mine, acc)
    assert kept_keys > 0.9 * reachable, (kept_keys, reachable)
    h = agent.history
    assert h[-1]["reward"] > h[0]["reward"] + 0.15 and h[-1]["entropy"] < h[0]["entropy"] - 0.3


def test_paper_sections_at_test(trained, planted):
    """m=None is the paper's test setting, ``test_sections`` sections of N candidates:
    the same selection as m = test_sections, one kept per section."""
    _, test, _ = planted
    agent, _ = trained["fixed"]
    sectioned = DSN(DSNConfig(**{**FAST, "mode": "fixed", "test_sections": 5}), num_classes=C, feature_dim=D)
    sectioned.module.load_state_dict(agent.module.state_dict())
    sel = sectioned.select(test, None)
    assert sel.num_kept.eq(5).all()
    assert sel.keep[..., 0][:, section_positions(25, 5, 3)].sum(-1).eq(1).all()
    assert torch.equal(sel.keep, agent.select(test, 5).keep)
    assert torch.equal(sel.video_scores, agent.select(test, 5).video_scores)


def test_training_log(trained):
    agent, d = trained["alternate"]
    rows = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    assert len(rows) == FAST["epochs"] == len(agent.history)
    for key in ("epoch", "loss", "reward", "entropy", "fraction_kept", "lr", "seconds", "head_loss"):
        assert key in rows[-1]
    assert rows[-1]["fraction_kept"] == pytest.approx(1 / 25)
    assert [r["epoch"] for r in rows] == list(range(1, FAST["epochs"] + 1))


# -- checkpoints ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fixed", "alternate"])
def test_checkpoint_round_trip(trained, planted, mode):
    _, test, _ = planted
    agent, d = trained[mode]
    back = load_agent(d / "dsn.pt")
    assert isinstance(back, DSN) and back.config == agent.config
    assert torch.equal(back.score(test), agent.score(test))
    assert torch.equal(back.select(test, 5).video_scores, agent.select(test, 5).video_scores)
    assert back.history == agent.history


def test_observer_stream_and_crops(tmp_path):
    """The observation network reads ``states.observer`` (its own width) over K=2 crops."""
    st = planted_states(V=64, T=25, K=2, D=D, C=C, seed=2)
    st.observer = st.features[..., :12].clone()
    agent = DSN(DSNConfig(**{**FAST, "epochs": 1, "observer_dim": 12}), num_classes=C, feature_dim=D)
    agent.fit(st, checkpoint_path=tmp_path / "o.pt")
    s = agent.score(st)
    assert s.shape == (64, 25, 2) and torch.equal(s[..., 0], s[..., 1])
    assert agent.select(st, 3, mode="region").num_kept.eq(6).all()
    assert torch.equal(load_agent(tmp_path / "o.pt").score(st), s)


# -- the update at the defaults (DSNConfig: batch_size is a ceiling) -----------------------
def test_train_batch_keeps_the_papers_batch_at_ucf101_scale():
    """128 videos a step from 3,584 videos on (UCF101 split 1: 9,537), never fewer than 28
    updates an epoch below (HMDB51 split 1 at 128); 0 turns the floor off."""
    agent = DSN(DSNConfig(), num_classes=C, feature_dim=D)
    assert [agent.train_batch(v) for v in (100_000, 9_537, 3_584, 3_570, 240, 20)] == [128, 128, 128, 127, 8, 1]
    assert DSN(DSNConfig(min_steps_per_epoch=0), num_classes=C, feature_dim=D).train_batch(240) == 128
    with pytest.raises(InputError, match="min_steps_per_epoch"):
        DSNConfig(min_steps_per_epoch=-1)


def test_dsn_f_learns_at_the_defaults():
    """DSN-f at the paper's settings (no override) on 240 planted videos, 003's test protocol
    at m = 4: the observer keeps a key candidate in most sections that have one and top-1
    clears uniform + 0.15 (batch 128: 2 updates an epoch, 0.73 of those sections, top-1 0.167)."""
    st = planted_states(V=480, T=25, K=1, D=D, C=C, n_key=3, seed=0)
    train, test, keys = st.subset(range(240)), st.subset(range(240, 480)), st.key_mask[240:]
    agent = DSN(DSNConfig(mode="fixed"), num_classes=C, feature_dim=D, seed=0)
    agent.fit(train)
    sel = agent.select(test, 4)
    pos = section_positions(25, 4, 3)
    has = keys[:, pos].any(-1)
    hit = (sel.keep[..., 0][:, pos] & keys[:, pos]).any(-1)
    uniform = top1(selector_class("uniform")().select(test, 4).video_scores, test.labels)
    assert hit[has].float().mean().item() > 0.85
    assert top1(sel.video_scores, test.labels) >= uniform + 0.15
