"""The ``tattn`` agent and its no-attention baseline (paper 002): equations on hand-made
numbers, learning on a planted cache (checkpoints, resume: tests/test_agent_contract.py)."""
import json
import math

import pytest
import torch

from agents.base import selector_class
from agents.synthetic import planted_states
from agents.tattn import TAttn, TAttnConfig, TAttnModule, TAttnNoAtt, attention_weights, tattn_loss
from data.errors import InputError

D, C = 32, 8
FAST = dict(hidden=32, layers=1, iterations=3, test_last=2, dropout=0.0, epochs=10, batch_size=32)


TORCH_THREADS = 1  # tiny tensors (tests/conftest.py: _torch_threads)


def top1(scores, labels):
    return float((scores.argmax(-1) == labels).float().mean())


@pytest.fixture(scope="module")
def planted():
    """One planted world (same prototypes), split into 256 train / 256 test videos."""
    st = planted_states(V=512, T=25, K=1, D=D, C=C, seed=0)
    return st.subset(range(256)), st.subset(range(256, 512)), st.key_mask[256:]


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory):
    train, test, _ = planted
    out = {}
    for cls, epochs in ((TAttn, 10), (TAttnNoAtt, 20)):
        d = tmp_path_factory.mktemp(cls.name)
        agent = cls(TAttnConfig(**{**FAST, "epochs": epochs}), num_classes=C, feature_dim=D, seed=0)
        agent.fit(train, log_path=d / "log.jsonl", checkpoint_path=d / "a.pt", val=test)
        out[cls.name] = (agent, d)
    return out


# -- equations on hand-made numbers -----------------------------------------------------
def test_attention_eqs_5_6():
    w_a = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        w_a.weight.copy_(torch.tensor([[0.5, -1.0]]))
    h = torch.tensor([[2.0, 1.0]])            # w_aᵀh = 0
    u = torch.tensor([[0.3, -0.2, 1.5]])      # u_aᵀv_i + b_a
    e = torch.tanh(torch.tensor([0.3, -0.2, 1.5]))
    want = e.exp() / e.exp().sum()
    assert torch.allclose(attention_weights(h, u, w_a), want[None], atol=1e-6)
    h2 = torch.tensor([[2.0, 0.0]])           # w_aᵀh = 1 shifts every e_i inside the tanh
    e2 = torch.tanh(torch.tensor([1.3, 0.8, 2.5]))
    assert torch.allclose(attention_weights(h2, u, w_a), (e2.exp() / e2.exp().sum())[None], atol=1e-6)
    masked = attention_weights(h, u, w_a, torch.tensor([[True, False, True]]))
    assert masked[0, 1] == 0 and torch.allclose(masked[0, [0, 2]], want[[0, 2]] / want[[0, 2]].sum())


def test_loss_eq8_sums_iterations():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]])   # (B=2, I=2, C=2)
    labels = torch.tensor([0, 1])
    nll = lambda z, y: -(z[y] - torch.logsumexp(z, 0))  # noqa: E731
    want = ((nll(logits[0, 0], 0) + nll(logits[0, 1], 0)) + 2 * math.log(2.0)) / 2
    assert tattn_loss(logits, labels).item() == pytest.approx(want.item(), rel=1e-6)


def test_first_iteration_weighted_sum_eq4():
    """h_0 = 0, so α^1 = softmax(tanh(u_aᵀv_i + b_a)) and x_1 = Σ α_i v_i feeds the LSTM."""
    cfg = TAttnConfig(**FAST)
    mod = TAttnModule(4, 3, cfg, attention=True).eval()
    v = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    logits, alpha = mod(v)
    assert logits.shape == (2, 3, 3) and alpha.shape == (2, 3, 5)
    want = torch.softmax(torch.tanh(mod.u_a(v).squeeze(-1)), -1)
    assert torch.allclose(alpha[:, 0], want, atol=1e-6)
    x1 = torch.einsum("bt,btd->bd", want, v)
    h1, _ = mod.cells[0](x1)
    assert torch.allclose(logits[:, 0], mod.classifier(h1), atol=1e-5)
    base = TAttnModule(4, 3, cfg, attention=False).eval()
    _, a0 = base(v, torch.tensor([[True] * 5, [True, False, True, False, False]]))
    assert torch.allclose(a0[0], torch.full((3, 5), 0.2)) and torch.allclose(a0[1, :, 0], torch.full((3,), 0.5))


def test_config_is_checked():
    with pytest.raises(InputError):
        TAttnConfig(test_last=40)
    with pytest.raises(InputError):
        TAttnConfig(dropout=1.0)
    assert selector_class("tattn") is TAttn and selector_class("tattn_noatt") is TAttnNoAtt


# -- learning ---------------------------------------------------------------------------
def test_attention_learns_planted_key_positions(trained, planted):
    _, test, keys = planted
    agent, _ = trained["tattn"]
    base = {n: top1(selector_class(n)().select(test, 5).video_scores, test.labels) for n in ("uniform", "random")}
    sel = agent.select(test, 5)
    mine = top1(sel.video_scores, test.labels)
    kept_keys = (sel.keep[..., 0] & keys).sum(1).float().mean().item()
    assert mine > max(base.values()) + 0.5, (mine, base)
    assert mine > 0.85 and kept_keys > 3.5, (mine, kept_keys)    # oracle: 1.0 and 5 keys
    assert top1(agent.select(test, None).video_scores, test.labels) > 0.75
    # Attention concentrates on the key positions: 5 of 25 get most of the weight.
    assert agent.score(test)[..., 0][keys].sum() / keys.shape[0] > 0.4   # uniform: 0.2
    h = agent.history
    assert h[-1]["loss"] < 0.5 * h[0]["loss"] and h[-1]["entropy"] < h[0]["entropy"]


def test_attention_beats_the_no_attention_baseline(trained, planted):
    """The paper's Table 1 comparison, on the planted cache; the baseline still learns."""
    _, test, _ = planted
    att, _ = trained["tattn"]
    noatt, _ = trained["tattn_noatt"]
    dense = top1(selector_class("uniform")().select(test, None).video_scores, test.labels)
    base_acc = top1(noatt.select(test, None).video_scores, test.labels)
    # margin 0.1: at ε 1e-4 (issue 11) the baseline reaches 0.83, tattn 0.96
    assert top1(att.select(test, None).video_scores, test.labels) > base_acc + 0.1, base_acc
    assert base_acc > dense + 0.05, (base_acc, dense)
    assert noatt.history[-1]["loss"] < noatt.history[0]["loss"]
    s = noatt.score(test)
    assert torch.allclose(s, torch.full_like(s, 1 / 25))
    kept = noatt.select(test, 5).keep[0, :, 0].nonzero().flatten().tolist()
    assert kept == [2, 7, 12, 17, 22]      # TSN's evenly spaced positions


@pytest.mark.slow
def test_attention_beats_its_baseline_on_3_key_planted_at_defaults():
    """Issue 11: the defaults (only the LSTM narrowed to 64 cells, as the contract suite
    runs it) on the contract's 240 planted videos with 3 key positions of 25: the attention
    finds the key positions and beats tattn_noatt at m = 4 (~30 s). Failed at Adadelta's
    ε 1e-6 (the old default): α mass on the keys 0.198, m = 4 0.225 = tattn_noatt's 0.225;
    at ε 1e-4: 0.315, 0.387 vs 0.221 (TAttnConfig: seed 1 still fails, 0.229 vs 0.196)."""
    st = planted_states(V=480, T=25, K=1, D=D, C=C, n_key=3, seed=0)
    train, test, keys = st.subset(range(240)), st.subset(range(240, 480)), st.key_mask[240:]
    acc, agents = {}, {}
    for cls in (TAttn, TAttnNoAtt):
        agents[cls.name] = agent = cls(TAttnConfig(hidden=64), num_classes=C, feature_dim=D, seed=0)
        agent.fit(train)
        acc[cls.name] = top1(agent.select(test, 4).video_scores, test.labels)
    mass = float(agents["tattn"].score(test)[..., 0][keys].sum()) / keys.shape[0]
    assert mass > 0.25, (mass, acc)                              # uniform: 3/25 = 0.12
    assert acc["tattn"] > acc["tattn_noatt"] + 0.1, (mass, acc)


def test_select_m_restricts_what_the_model_sees(trained, planted):
    """select(m) equals a forward pass on the kept positions alone (attention renormalised)."""
    _, test, _ = planted
    agent, _ = trained["tattn"]
    sub = test.subset(range(16))
    sel = agent.select(sub, 4)
    idx = sel.keep[:, :, 0].nonzero()[:, 1].reshape(16, 4)
    only = sub.features[torch.arange(16)[:, None], idx]                 # (16, 4, K, D)
    probs, _ = agent._forward(only)
    assert torch.allclose(sel.video_scores, torch.log(probs.mean(1)), atol=1e-5)
    assert sel.num_kept.eq(4).all()


def test_training_log(trained):
    agent, d = trained["tattn"]
    rows = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    assert len(rows) == FAST["epochs"] == len(agent.history)
    for key in ("epoch", "loss", "entropy", "fraction_kept", "lr", "seconds", "val_top1"):
        assert key in rows[-1]
    assert 0 < rows[-1]["fraction_kept"] < rows[0]["fraction_kept"] <= 1


# -- checkpoints ------------------------------------------------------------------------
def test_crops_and_region_mode():
    """K=2 crops: each crop is its own sequence; in region mode a crop with nothing kept
    does not vote."""
    st = planted_states(V=24, T=25, K=2, D=D, C=C, seed=4)
    agent = TAttn(TAttnConfig(**{**FAST, "epochs": 1}), num_classes=C, feature_dim=D)
    agent.fit(st)
    s = agent.score(st)
    assert s.shape == (24, 25, 2) and torch.allclose(s.sum(1), torch.ones(24, 2), atol=1e-5)
    sel = agent.select(st, 2, mode="region")
    assert sel.num_kept.eq(4).all() and torch.isfinite(sel.video_scores).all()
    assert torch.allclose(sel.video_scores.exp().sum(-1), torch.ones(24), atol=1e-5)


def test_weight_lr_scales_with_fan_in_beyond_base_width():
    """TAttnConfig.base_width: Adadelta's steps are per weight, so a 512-input unit moved ~8x
    as far per update as a 64-input one and 002's 512 cells diverged (loss 66.7 -> 88.9, then
    chance); each weight matrix's lr is lr x min(1, base_width / fan_in), biases at lr."""
    agent = TAttn(TAttnConfig(hidden=512, layers=2), num_classes=C, feature_dim=32, seed=0)
    opt = agent.make_optimizer("train")
    lr_of = {id(g["params"][0]): g["lr"] for g in opt.param_groups}
    named = dict(agent.module.named_parameters())
    assert lr_of[id(named["cells.0.weight_ih"])] == 1.0             # fan-in 32 <= 64
    assert lr_of[id(named["cells.0.weight_hh"])] == 64 / 512
    assert lr_of[id(named["cells.1.weight_ih"])] == 64 / 512
    assert lr_of[id(named["classifier.weight"])] == 64 / 512
    assert lr_of[id(named["u_a.weight"])] == 1.0 and lr_of[id(named["w_a.weight"])] == 64 / 512
    assert all(lr_of[id(p)] == 1.0 for n, p in named.items() if n.endswith("bias"))
    assert len(lr_of) == len(named)
    plain = TAttn(TAttnConfig(hidden=512, base_width=0), num_classes=C, feature_dim=32, seed=0)
    assert {g["lr"] for g in plain.make_optimizer("train").param_groups} == {1.0}


def test_a_scheduled_lr_keeps_the_width_scales(tmp_path):
    """The training template's set_lr wrote one lr into every group, which would wipe the
    width rule's per-tensor scales under any schedule; it now honours each group's lr_scale,
    and a resumed optimizer keeps today's scales (a checkpoint's groups may predate them)."""
    from agents.training import set_lr
    agent = TAttn(TAttnConfig(hidden=512, layers=1), num_classes=C, feature_dim=32, seed=0)
    opt = agent.make_optimizer("train")
    set_lr(opt, 0.5)
    named = {id(p): n for n, p in agent.module.named_parameters()}
    lr_of = {named[id(g["params"][0])]: g["lr"] for g in opt.param_groups}
    assert lr_of["cells.0.weight_hh"] == 0.5 * 64 / 512 and lr_of["cells.0.weight_ih"] == 0.5
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["lr_scale"]                      # as written before groups had one
    fresh = agent.make_optimizer("train")
    scales = [g["lr_scale"] for g in fresh.param_groups]
    fresh.load_state_dict(state)
    assert all("lr_scale" not in g for g in fresh.param_groups)   # why resume restores them
    ck = tmp_path / "a.pt"
    agent.config = TAttnConfig(hidden=512, layers=1, epochs=1)
    train = planted_states(V=16, T=6, K=1, D=32, C=C, seed=0)
    agent.fit(train, checkpoint_path=ck)
    blob = torch.load(ck, weights_only=True)
    for group in blob["optimizer"]["param_groups"]:
        del group["lr_scale"]
    torch.save(blob, ck)
    again = TAttn(TAttnConfig(hidden=512, layers=1, epochs=2), num_classes=C, feature_dim=32, seed=0)
    from agents.training import TrainContext, resume
    ctx = TrainContext(train=train, device="cpu", generator=torch.Generator())
    assert resume(again, ctx, ck) == 1
    assert [g["lr_scale"] for g in ctx.optimizer.param_groups] == scales
