"""Every agent that predicts with its own network gets its paper's no-selection partner,
trained by the same ``framesel train`` call and paired by ``framesel evaluate``
(agents/papers.py); every agent declares its departures from its paper, and the report
lists them (issue 25 items 3, 6, 8)."""
import json

import pytest
import torch
from click.testing import CliRunner

from agents.base import load_agent, selector_class, selector_names
from agents.papers import NoSelection, departures_of, partner_overrides
from agents.stage import partner_checkpoint, seed_checkpoint
from pipeline.cli import main, train as train_command
from tests.test_checkpoints import TINY, make_store

TORCH_THREADS = 1

PARTNER = {"tattn": "tattn_noatt", "rtsae": "rtsae_nogate", "glimpse": "glimpse_soft", "dsn": "dsn_nosampler"}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train(store, lst, out, agent, *extra):
    return cli("train", store, "--agent", agent, "--train", lst, "--out", out,
               *[a for s in TINY[agent] for a in ("--set", s)], "--quiet", *extra)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("partners")
    store, lst = make_store(root)
    return root, store, lst


# -- the declarations ------------------------------------------------------------------------
def test_each_own_classifier_agent_declares_its_partner():
    for agent, partner in PARTNER.items():
        cls = selector_class(agent)
        assert cls.partner == partner and cls.partner_for(cls.Config()) == partner
        p = selector_class(partner)
        assert issubclass(p, NoSelection) and p.partner_of == agent and p.partner_for(p.Config()) is None
    dsn = selector_class("dsn")
    assert dsn.partner_for(dsn.Config(mode="fixed")) is None     # DSN-f predicts with the head
    assert selector_class("as").partner is None
    partners = {n for n in selector_names(learned=True) if issubclass(selector_class(n), NoSelection)}
    assert partners == set(PARTNER.values())


def test_only_the_options_a_partner_shares_apply_to_it():
    sets = (("phi", 0.2), ("epochs", 3), ("pretrain_epochs", 1), ("fusion_dim", 8))
    assert partner_overrides("rtsae_nogate", sets) == (("epochs", 3), ("fusion_dim", 8))
    # glimpse's penalty weight is another form's: the soft partner keeps [11]'s own λ
    assert partner_overrides("glimpse_soft", (("attention_penalty", 0.1), ("hidden", 8))) == (("hidden", 8),)


def test_every_agent_lists_its_departures_and_item_8s_three_are_there():
    for name in selector_names(learned=True):
        assert departures_of(name), name
        assert all(isinstance(d, str) and len(d) > 40 for d in departures_of(name))
    assert any("first update" in d and "unbaselined" in d for d in departures_of("as"))
    rtsae = departures_of("rtsae")
    assert any("circular" in d and "aug_shift" in d for d in rtsae)
    assert any("one stream" in d and "two_stream" in d for d in rtsae)
    assert departures_of("uniform") == []


def test_seeds_default_is_3():
    assert next(p for p in train_command.params if p.name == "seeds").default == 3
    assert next(p for p in train_command.params if p.name == "partner").default is True


# -- one train call, both models -------------------------------------------------------------
@pytest.mark.parametrize("agent", sorted(PARTNER))
def test_train_trains_the_partner_in_the_same_call_and_evaluate_pairs_them(planted, tmp_path, agent):
    root, store, lst = planted
    out = tmp_path / f"{agent}.pt"
    r = train(store, lst, out, agent, "--seeds", "1", "--seed", "4")
    assert r.exit_code == 0, r.output
    partner = PARTNER[agent]
    pout = partner_checkpoint(out, partner)
    assert pout == tmp_path / f"{agent}.partner-{partner}.pt" and pout.exists() and pout.with_suffix(".jsonl").exists()
    assert f"with its paper's partner {partner}" in r.output.splitlines()[-1]
    main_agent, mate = load_agent(out), load_agent(pout)
    assert mate.name == partner and mate.seed == main_agent.seed == 4
    assert mate.store_identity["stream"] == main_agent.store_identity["stream"] == "rgb"
    assert mate.store_identity["train_list_sha256"] == main_agent.store_identity["train_list_sha256"]
    shared = dict(partner_overrides(partner, [tuple(s.split("=")) for s in TINY[agent]]))
    assert shared and all(str(getattr(mate.config, k)) == v for k, v in shared.items())
    assert len(mate.history) == mate.total_epochs()
    # a re-run finds both finished: nothing retrained
    again = train(store, lst, out, agent, "--seeds", "1", "--seed", "4")
    assert again.exit_code == 0 and again.output.count("nothing to do") == 2, again.output
    rep = tmp_path / "rep"
    r = cli("evaluate", store, "--test", lst, "--agents", out, pout, "--out", rep, "--m", "2", "--baselines",
            "uniform", "--quiet")
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads((rep / "results.json").read_text())["rows"] if x["protocol"] == "accuracy_vs_m"]
    mine = [x for x in rows if x["method"].startswith(agent) and x["classifier"] == f"own:{agent}"]
    theirs = {x["m"]: x for x in rows if x["method"] == partner}
    assert mine and theirs
    for row in mine:
        assert row["partner"] == partner and row["vs_partner_p"] is not None
        if row["uniform_m"] in theirs:     # rtsae's own m: the partner at its mean kept count
            assert row["vs_partner_top1"] == pytest.approx(theirs[row["uniform_m"]]["top1"])
        assert row["vs_partner_diff"] == pytest.approx(row["top1"] - row["vs_partner_top1"], abs=1.5 / 24)
    assert f"does NOT beat {partner}" in (rep / "report.md").read_text() or \
        f"beats {partner}" in (rep / "report.md").read_text()


def test_no_partner_skips_it_and_dsn_f_and_as_have_none(planted, tmp_path):
    root, store, lst = planted
    r = train(store, lst, tmp_path / "t.pt", "tattn", "--seeds", "1", "--no-partner")
    assert r.exit_code == 0 and "no partner trained" in r.output, r.output
    assert not list(tmp_path.glob("*partner*"))
    r = train(store, lst, tmp_path / "f.pt", "dsn", "--seeds", "1", "--set", "mode=fixed")
    assert r.exit_code == 0 and "no partner trained" in r.output and not list(tmp_path.glob("*partner*"))
    # a partner stays trainable alone
    r = train(store, lst, tmp_path / "n.pt", "tattn_noatt", "--seeds", "1")
    assert r.exit_code == 0 and load_agent(tmp_path / "n.pt").name == "tattn_noatt", r.output


def test_default_seeds_train_three_seeds_each_with_its_partner_paired_seed_with_seed(planted, tmp_path):
    root, store, lst = planted
    out = tmp_path / "agents" / "tattn.pt"
    r = train(store, lst, out, "tattn")
    assert r.exit_code == 0, r.output
    want = [seed_checkpoint(p, s, 3) for p in (out, partner_checkpoint(out, "tattn_noatt")) for s in (0, 1, 2)]
    assert sorted(p.name for p in (tmp_path / "agents").glob("*.pt")) == sorted(p.name for p in want)
    assert [load_agent(p).seed for p in want] == [0, 1, 2] * 2
    assert "3 seed(s), with its paper's partner tattn_noatt (6 checkpoints)" in r.output
    r = cli("evaluate", store, "--test", lst, "--agents", tmp_path / "agents" / "*.pt", "--out", tmp_path / "rep",
            "--m", "2", "--baselines", "uniform", "--quiet")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]
    per_seed = {x["seed"]: x for x in rows if x["protocol"] == "accuracy_vs_m" and x["method"] == "tattn"}
    partner = {x["seed"]: x for x in rows if x["protocol"] == "accuracy_vs_m" and x["method"] == "tattn_noatt"}
    assert set(per_seed) == {0, 1, 2, "mean"}
    for s in (0, 1, 2):     # each seed against the partner of its own seed
        assert per_seed[s]["vs_partner_top1"] == pytest.approx(partner[s]["top1"])
    assert per_seed["mean"]["partner"] == "tattn_noatt" and per_seed["mean"]["vs_partner_ci_lo"] is not None


def test_report_lists_the_departures_of_the_evaluated_agents(planted, tmp_path):
    root, store, lst = planted
    for agent in ("as", "rtsae"):
        assert train(store, lst, tmp_path / f"{agent}.pt", agent, "--seeds", "1", "--no-partner").exit_code == 0
    rep = tmp_path / "rep"
    r = cli("evaluate", store, "--test", lst, "--agents", tmp_path / "as.pt", tmp_path / "rtsae.pt", "--out", rep,
            "--m", "2", "--baselines", "uniform", "--quiet")
    assert r.exit_code == 0, r.output
    meta = json.loads((rep / "results.json").read_text())["meta"]
    assert set(meta["departures"]) == {"as", "rtsae"}
    assert meta["departures"]["rtsae"][:len(departures_of("rtsae"))] == departures_of("rtsae")
    # the checkpoints' own settings are named too (TINY shrinks them)
    assert any("epochs=1 (default 30)" in d for d in meta["departures"]["rtsae"])
    md = (rep / "report.md").read_text()
    section = md.split("## Departures from the papers")[1].split("\n## ")[0]
    assert "- **as**" in section and "- **rtsae**" in section
    for needle in ("first visit's update is unbaselined", "shifts every training sequence circularly",
                   "trains on one stream by default"):
        assert needle in section, needle
    assert "<h2>Departures from the papers</h2>" in (rep / "report.html").read_text()


def test_no_selection_partner_keeps_evenly_spaced_positions():
    from agents.synthetic import planted_states
    st = planted_states(V=4, T=25, K=2, D=8, C=3, n_key=2, seed=0)
    cls = selector_class("rtsae_nogate")
    agent = cls(cls.Config(fusion_dim=4, classifier_hidden=4), num_classes=3, feature_dim=8)
    sel = agent.select(st, 5, mode="region")
    assert sel.keep[0, :, 0].nonzero().flatten().tolist() == [2, 7, 12, 17, 22] and sel.keep.all(-1).any()
    assert (sel.num_kept == 10).all() and torch.allclose(agent.score(st), torch.full((4, 25, 2), 1 / 25))
    assert agent.select(st, None).keep.all()
