"""Several seeds in one batched pass (agents/batched_seeds.py): the same agents as separate runs.

Everything here trains real ``as`` agents on a real (small) planted store; "the same" is
to float rounding (the stacked LSTM is plain torch, nn.LSTM a fused kernel), so weights
agree to 1e-5 and the per-epoch rewards exactly (a flipped Bernoulli draw would show)."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from agents.as_agent import ASNet, StackedASNet
from agents.base import load_agent
from agents.train_stage import TrainStageConfig, run_train_seeds
from agents.synthetic import write_planted_store
from agents.batched_seeds import split_optimizer, stack_optimizer
from data.errors import InputError
from pipeline.cli import main

TINY = (("epochs", 3), ("hidden", 16), ("lr", 1e-3))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return write_planted_store(root, train=32, test=8, T=10, n_key=2, D=16, C=4, map_size=2)


def _train(planted, out, seeds=3, together=True, overrides=TINY, agent="as"):
    store, train, _ = planted
    cfg = TrainStageConfig(store=str(store), agent=agent, train_list=str(train), out=str(out),
                           overrides=overrides, quiet=True)
    return run_train_seeds(cfg, seeds, together=together)


def _assert_same(a, b, atol=1e-5):
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys() and a.seed == b.seed
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=0)
    assert [r["reward"] for r in a.history] == [r["reward"] for r in b.history]
    assert [r["baseline"] for r in a.history] == pytest.approx([r["baseline"] for r in b.history], abs=1e-6)


@pytest.mark.parametrize("proj", [0, 8])
def test_stacked_net_is_each_seeds_asnet(proj):
    torch.manual_seed(0)
    nets = [ASNet(12, 6, proj) for _ in range(3)]
    x = torch.randn(3, 5, 7, 12)
    got = StackedASNet(nets, bool(proj))(x)
    want = torch.stack([net(xi) for net, xi in zip(nets, x)])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_optimizer_state_stacks_and_splits_back_exactly():
    torch.manual_seed(0)
    nets = [nn.Linear(4, 3) for _ in range(2)]
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2, weight_decay=1e-5) for n in nets]
    for n, o in zip(nets, opts):          # give each its own moments
        n(torch.randn(5, 4)).pow(2).sum().backward()
        o.step()
    stack = StackedASNet.__new__(StackedASNet)
    nn.Module.__init__(stack)
    from agents.batched_seeds import StackedParameters
    stack.params = StackedParameters(nets)
    stacked = stack_optimizer(opts, stack.params, lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-5))
    before = [o.state_dict() for o in opts]
    split_optimizer(stacked, opts)
    for b, o in zip(before, opts):
        after = o.state_dict()
        for i in b["state"]:
            for k, v in b["state"][i].items():
                assert torch.equal(v, after["state"][i][k])


def test_seeds_together_train_the_agents_separate_runs_train(planted, tmp_path):
    apart = _train(planted, tmp_path / "apart" / "as.pt", together=False)
    together = _train(planted, tmp_path / "together" / "as.pt", together=True)
    for a, b in zip(apart, together):
        _assert_same(a, b)
        # the same checkpoint file a separate run writes: rebuilt alone, finished, its log
        ck = load_agent(tmp_path / "together" / f"as-seed{b.seed}.pt")
        _assert_same(a, ck)
        log = (tmp_path / "together" / f"as-seed{b.seed}.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in log] == [1, 2, 3]


def test_a_together_run_resumes_apart_and_together(planted, tmp_path):
    straight = _train(planted, tmp_path / "straight" / "as.pt", seeds=2)
    two = (("epochs", 2),) + TINY[1:]
    _train(planted, tmp_path / "a" / "as.pt", seeds=2, overrides=two)           # stopped after 2 epochs
    _train(planted, tmp_path / "b" / "as.pt", seeds=2, overrides=two)
    for got in (_train(planted, tmp_path / "a" / "as.pt", seeds=2, together=True),
                _train(planted, tmp_path / "b" / "as.pt", seeds=2, together=False)):
        for a, b in zip(straight, got):
            assert b.epochs_before == 2
            _assert_same(a, b)


def test_seeds_at_different_epochs_train_apart_and_finished_ones_are_kept(planted, tmp_path):
    one = (("epochs", 1),) + TINY[1:]
    first = _train(planted, tmp_path / "as.pt", seeds=1, overrides=TINY)          # seed 0, finished
    _train(planted, tmp_path / "x" / "as.pt", seeds=2, overrides=one, together=False)
    (tmp_path / "x" / "as-seed1.pt").rename(tmp_path / "as-seed1.pt")             # seed 1 after 1 epoch
    (tmp_path / "as.pt").rename(tmp_path / "as-seed0.pt")
    got = _train(planted, tmp_path / "as.pt", seeds=3, together=True)
    assert [a.epochs_before for a in got] == [3, 1, 0] and got[0].finished
    _assert_same(first[0], got[0], atol=0)
    ref = _train(planted, tmp_path / "ref" / "as.pt", seeds=3, together=False)
    for a, b in zip(ref, got):
        _assert_same(a, b)
    again = _train(planted, tmp_path / "as.pt", seeds=3, together=True)      # all finished: nothing to do
    assert all(a.finished and a.epochs_before == 3 for a in again)


def test_together_is_refused_for_an_agent_that_trains_seeds_apart(planted, tmp_path):
    with pytest.raises(InputError, match="--together: tattn trains its seeds one after another.*as"):
        _train(planted, tmp_path / "t.pt", seeds=2, agent="tattn", overrides=(("epochs", 1),))


def test_cli_together_writes_each_seeds_checkpoint(planted, tmp_path):
    store, train, _ = planted
    sets = [a for k, v in TINY for a in ("--set", f"{k}={v}")]
    out = tmp_path / "as.pt"
    r = CliRunner().invoke(main, ["train", str(store), "--agent", "as", "--train", str(train), "--out", str(out),
                                  *sets, "--seeds", "2", "--together", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "seed 0" in r.output and "seed 1" in r.output
    assert all((tmp_path / f"as-seed{s}.pt").exists() for s in (0, 1)) and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is accepted here")
@pytest.mark.parametrize("command", ["head", "train", "evaluate"])
def test_device_cuda_without_a_gpu_is_one_clear_line(planted, tmp_path, command):
    store, train, test = planted
    extra = {"head": ["--train", str(train)],
             "train": ["--agent", "as", "--train", str(train), "--out", str(tmp_path / "a.pt")],
             "evaluate": ["--test", str(test), "--out", str(tmp_path / "rep")]}[command]
    r = CliRunner().invoke(main, [command, str(store), *extra, "--device", "cuda", "--quiet"])
    assert r.exit_code == 2 and "sees no CUDA device" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "rep").exists()
