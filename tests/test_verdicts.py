"""Fair verdicts (issue 11 item 4, issue 25 item 6): Holm once over the report's whole family
of verdicts, gains held across training seeds, each agent paired with the baseline that
shares its classifier (tattn with its own LSTM on uniform-m, and with tattn_noatt), and
`train --seeds N` → mean ± std."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from agents.base import selector_class
from agents.baselines import evenly_spaced
from agents.synthetic import planted_states
from data.errors import InputError
from evaluate import metrics
from evaluate.answer import answer_tables, detail_tables
from evaluate.verdicts import holds, verdict_family, verdicts
from evaluate.protocols import ProtocolConfig, build_methods, run_protocols
from evaluate.stats import bootstrap_ci, bootstrap_ci_seeds, holm
from pipeline.cli import main
from tests.test_checkpoints import TINY, make_store

TORCH_THREADS = 1


# ----------------------------------------------------------------------------- Holm

def test_holm_on_hand_numbers():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.04] + [0.5] * 9) == pytest.approx([0.4] + [1.0] * 9)
    assert holm([0.2]) == pytest.approx([0.2]) and holm([]).shape == (0,)
    with pytest.raises(InputError, match="probabilities"):
        holm([0.5, 1.5])


def _row(m, stream, p, diff=0.1, seed=None, split="1", method="agent"):
    return {"split": split, "protocol": "accuracy_vs_m", "method": method, "classifier": "own:agent",
            "seed": seed, "stream": stream, "m": m, "learned": True, "top1": 0.5 + diff,
            "vs_uniform_diff": diff, "ci_lo": diff - 0.05, "ci_hi": diff + 0.05, "mcnemar_p": p}


def test_one_p_of_004_among_ten_tests_is_not_a_gain():
    # 5 budgets x 2 streams = 10 paired tests of one method against uniform; before Holm
    # the single p = 0.04 made the report say "beats uniform significantly at m=2"
    rows = [_row(m, s, 0.04 if (m, s) == (2, "rgb") else 0.5) for m in (1, 2, 4, 8, 16) for s in ("rgb", "flow")]
    words = " ".join(verdicts(rows))
    assert "beats uniform" not in words and "does NOT beat uniform at any m" in words
    assert "over the report's 10 verdict tests" in words
    assert holds(rows, "agent", "uniform")["wins"] == {}
    # a p small enough to survive the correction still counts
    rows[2]["mcnemar_p"] = 0.001                         # m=2 rgb: Holm 0.01
    assert holds(rows, "agent", "uniform")["wins"] == {("1", "rgb", 2): pytest.approx(0.01)}
    assert "**agent** on rgb (classifier own:agent, consensus logit_mean): does NOT beat its classifier" \
        in " ".join(verdicts(rows))


def test_a_gain_must_hold_for_every_training_seed():
    rows = [_row(2, "rgb", 0.001, seed=0), _row(4, "rgb", 0.001, seed=0),
            _row(2, "rgb", 0.001, seed=1), _row(4, "rgb", 0.6, seed=1)]
    got = holds(rows, "agent", "uniform")
    assert set(got["wins"]) == {("1", "rgb", 2)} and got["seeds"] == 2 and got["family"] == 2
    words = verdicts(rows)[0]
    assert "beats uniform significantly at m=2;" in words and "2 training seeds, every one" in words


def test_seed_bootstrap_holds_the_training_variance():
    g = np.random.default_rng(0)
    b = g.random(80) < 0.5
    same = np.stack([g.random(80) < 0.7] * 3)                     # three identical seeds
    spread = np.stack([g.random(80) < p for p in (0.5, 0.7, 0.9)])  # seeds that disagree
    d1, lo1, hi1 = bootstrap_ci_seeds(same[:1], b, n=4000)
    d0, lo0, hi0 = bootstrap_ci(same[0], b, n=4000)
    assert d1 == d0 and lo1 == pytest.approx(lo0, abs=0.03) and hi1 == pytest.approx(hi0, abs=0.03)
    assert bootstrap_ci_seeds(same, b, n=4000)[0] == pytest.approx(d0)
    _, lo, hi = bootstrap_ci_seeds(spread, b, n=4000)
    _, lo_s, hi_s = bootstrap_ci_seeds(spread[1:2], b, n=4000)
    assert hi - lo > 1.3 * (hi_s - lo_s)
    with pytest.raises(InputError):
        bootstrap_ci_seeds(same, b[:10])


# ----------------------------------------------------------------------------- pairing

T, C = 8, 4


def _tattn(name, seed=0):
    cls = selector_class(name)
    agent = cls(cls.Config(hidden=8, layers=1, iterations=3, test_last=2, epochs=1, batch_size=64),
                num_classes=C, feature_dim=8, seed=seed)
    agent.store_identity = {"stream": "rgb"}
    return agent


def test_tattn_is_paired_with_its_own_classifier_and_with_tattn_noatt():
    st = {"rgb": planted_states(V=40, T=T, K=1, D=8, C=C, n_key=2, seed=3)}
    tattn, noatt = _tattn("tattn"), _tattn("tattn_noatt", seed=1)
    rows = run_protocols(st, build_methods(["uniform", "max_response"], [tattn, noatt], st),
                         config=ProtocolConfig(ms=(2, 4), protocols=("accuracy_vs_m",), bootstrap=200))
    row = next(r for r in rows if r["method"] == "tattn" and r["m"] == 2)
    assert row["classifier"] == "own:tattn"
    assert next(r for r in rows if r["method"] == "uniform")["classifier"] == "head"
    # its same-classifier baseline: tattn's LSTM on the evenly spaced 2 positions, not the head
    keep = torch.zeros(40, T, 1, dtype=torch.bool)
    keep[:, evenly_spaced(T, 2)] = True
    own = tattn._predict(st["rgb"], keep)[0].numpy()
    labels = st["rgb"].labels.numpy()
    assert row["vs_same_uniform_top1"] == pytest.approx(metrics.top_k_accuracy(own, labels, 1))
    head_uniform = next(r for r in rows if r["method"] == "uniform" and r["m"] == 2)["top1"]
    assert row["vs_uniform_top1"] == pytest.approx(head_uniform)
    assert row["vs_same_uniform_top1"] != pytest.approx(head_uniform)      # the two classifiers differ
    full = tattn._predict(st["rgb"], None)[0].numpy()
    assert row["vs_same_all_top1"] == pytest.approx(metrics.top_k_accuracy(full, labels, 1))
    assert row["vs_same_uniform_diff"] == pytest.approx(row["top1"] - row["vs_same_uniform_top1"], abs=1.5 / 40)
    # and with its paper's no-attention baseline at the same m
    partner = next(r for r in rows if r["method"] == "tattn_noatt" and r["m"] == 2)
    assert row["partner"] == "tattn_noatt" and row["vs_partner_top1"] == pytest.approx(partner["top1"])
    assert row["vs_partner_p"] is not None and partner["classifier"] == "own:tattn_noatt"


def test_answer_table_pairs_each_agent_with_its_classifier():
    st = {"rgb": planted_states(V=40, T=T, K=1, D=8, C=C, n_key=2, seed=3)}
    rows = run_protocols(st, build_methods(["uniform", "max_response", "oracle"], [_tattn("tattn")], st),
                         config=ProtocolConfig(ms=(2, 4), protocols=("accuracy_vs_m",), bootstrap=200))
    (title, header, body), = answer_tables(rows)
    assert title == "Answer: stream rgb (split 1)" and header == ["method", "classifier, consensus", "seeds",
                                                                  "m=2", "m=4"]
    row = next(r for r in rows if r["method"] == "tattn" and r["m"] == 2)
    assert body[0][:3] == ["tattn", "own:tattn, own:tattn", "1"]
    assert body[0][3].startswith(f"{row['top1']:.3f} · Δ {row['vs_same_uniform_diff']:+.3f} "
                                 f"[{row['vs_same_uniform_ci_lo']:+.3f}, {row['vs_same_uniform_ci_hi']:+.3f}]")
    assert "★" in body[0][3] and "★" in body[0][4]                 # the only agent is the best at each m
    refs = {r[0]: r for r in body[1:]}
    assert set(refs) == {"uniform", "max_response", "oracle (label)"}
    oracle = next(r for r in rows if r["method"] == "oracle" and r["m"] == 2)["top1"]
    assert refs["oracle (label)"][1] == "head, logit_mean" and refs["oracle (label)"][3] == f"{oracle:.3f}"
    (dtitle, dheader, dbody), = detail_tables(rows)
    cells = dict(zip(dheader, dbody[0]))
    assert dtitle == "Details: stream rgb (split 1)"
    assert cells["same classifier, uniform-m"] == f"{row['vs_same_uniform_top1']:.3f}"
    assert cells["oracle"] == f"{oracle:.3f}"


def test_holm_runs_once_over_the_whole_report():
    # two methods x two references x 3 budgets = 12 verdict tests: a p of 0.01 survives a
    # per-(method, reference) family of 3 (0.03) but not the report's 12 (0.12)
    rows = []
    for method in ("a", "b"):
        for m in (1, 2, 3):
            r = _row(m, "rgb", 0.01 if (method, m) == ("a", 1) else 0.5, method=method)
            r.update(vs_same_uniform_diff=0.1, vs_same_uniform_p=0.5)
            rows.append(r)
    family = verdict_family(rows)
    assert family["size"] == 12 and family["seeds"] == {"a": 1, "b": 1}
    assert holds(rows, "a", "uniform")["wins"] == {} and holds(rows, "a", "uniform")["family"] == 12
    rows[0]["mcnemar_p"] = 0.001                                        # 0.012 after Holm over 12
    assert holds(rows, "a", "uniform")["wins"] == {("1", "rgb", 1): pytest.approx(0.012)}


def test_a_cell_whose_seeds_disagree_in_direction_is_no_verdict():
    rows = [_row(2, "rgb", 0.001, seed=0, diff=0.2), _row(2, "rgb", 0.001, seed=1, diff=-0.2)]
    cell = verdict_family(rows)["cells"][("agent", "uniform", "1", "rgb", 2)]
    assert cell["sign"] == 0 and cell["adjusted"] == 1.0
    assert holds(rows, "agent", "uniform") == {"wins": {}, "losses": {}, "family": 1, "seeds": 2}


def test_the_seed_interval_holds_seed_and_video_variance():
    from evaluate.stats import seeds_videos_ci
    g = np.random.default_rng(0)
    b = g.random(200) < 0.5
    same = np.stack([g.random(200) < 0.7] * 3)
    spread = np.stack([g.random(200) < p for p in (0.5, 0.7, 0.9)])
    d, lo, hi = seeds_videos_ci(same, b)
    assert d == pytest.approx(float(same[0].mean() - b.mean())) and lo < d < hi
    d1, lo1, hi1 = seeds_videos_ci(same[:1], b)                 # one seed: a paired t over videos
    diff = same[0].astype(float) - b
    half = 1.9720 * diff.std(ddof=1) / np.sqrt(200)             # t_{0.975, 199}
    assert (lo1, hi1) == (pytest.approx(d1 - half, abs=1e-3), pytest.approx(d1 + half, abs=1e-3))
    _, lo_s, hi_s = seeds_videos_ci(spread, b)                  # seeds that disagree: a t over 2 df widens it
    assert hi_s - lo_s > 2.5 * (hi - lo)
    with pytest.raises(InputError):
        seeds_videos_ci(same, b[:10])


# ----------------------------------------------------------------------------- seeds via the CLI

def test_train_seeds_2_writes_two_checkpoints_and_evaluate_gives_mean_and_std(tmp_path):
    store, lst = make_store(tmp_path)
    out = tmp_path / "agents" / "tattn.pt"
    sets = [a for s in TINY["tattn"] for a in ("--set", s)]
    r = CliRunner().invoke(main, ["train", str(store), "--agent", "tattn", "--train", str(lst), "--out", str(out),
                                  *sets, "--seeds", "2", "--seed", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    paths = [tmp_path / "agents" / f"tattn{p}-seed{s}.pt" for p in ("", ".partner-tattn_noatt") for s in (3, 4)]
    assert all(p.exists() and p.with_suffix(".jsonl").exists() for p in paths) and not out.exists()
    assert "seed 3" in r.output and "seed 4" in r.output
    r = CliRunner().invoke(main, ["evaluate", str(store), "--test", str(lst),
                                  "--agents", str(tmp_path / "agents" / "*.pt"), "--out", str(tmp_path / "rep"), "--m", "2", "--baselines", "uniform", "--quiet"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]
    acc = [x for x in rows if x["protocol"] == "accuracy_vs_m" and x["method"] == "tattn"]
    assert sorted(str(x["seed"]) for x in acc) == ["3", "4", "mean"]
    mean = next(x for x in acc if x["seed"] == "mean")
    per = [x["top1"] for x in acc if x["seed"] != "mean"]
    assert mean["num_seeds"] == 2 and mean["top1"] == pytest.approx(np.mean(per))
    assert mean["top1_std"] == pytest.approx(np.std(per, ddof=1))
    assert mean["vs_same_uniform_ci_lo"] is not None and mean["vs_same_uniform_p"] is None
    assert mean["partner"] == "tattn_noatt" and mean["vs_partner_ci_lo"] is not None    # trained by the same call
    md = (tmp_path / "rep" / "report.md").read_text()
    answer = md.split("### Answer: stream rgb")[1].split("###")[0]
    assert f"| tattn | own:tattn, own:tattn | 2 | {mean['top1']:.3f} ± {mean['top1_std']:.3f} · Δ" in answer


def test_seeds_must_be_positive(tmp_path):
    store, lst = make_store(tmp_path)
    r = CliRunner().invoke(main, ["train", str(store), "--agent", "tattn", "--train", str(lst),
                                  "--out", str(tmp_path / "a.pt"), "--seeds", "0"])
    assert r.exit_code == 2 and "--seeds" in r.output and isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("name,extra,own", [("tattn", (), True), ("tattn_noatt", (), True), ("glimpse", (), True),
                                            ("rtsae", (), True), ("dsn", (), True), ("dsn", ("mode=fixed",), False),
                                            ("as", (), False)])
def test_each_agents_prediction_hook_is_what_select_predicts(name, extra, own):
    # the same-classifier baselines call agent.video_scores(states, keep): on the mask the
    # agent chose it must give the agent's own prediction, and the row names that classifier
    from agents.options import make_config
    from evaluate.methods import classifier_name

    st = planted_states(V=12, T=5, K=1, D=6, C=3, n_key=2, seed=0, with_maps=True, map_size=2)
    cls = selector_class(name)
    items = [(s.split("=")[0], json.loads(s.split("=")[1]) if s.split("=")[1][0].isdigit() else s.split("=")[1])
             for s in (*TINY[name], *extra)]
    cfg = make_config(cls.Config, items, owner=name)
    agent = cls.for_states(cfg, st) if hasattr(cls, "for_states") else cls(cfg, num_classes=3, feature_dim=6)
    for m in (2, None):
        sel = agent.select(st, m)
        with torch.no_grad():
            again = agent.video_scores(st, sel.keep)
        assert torch.allclose(again, sel.video_scores, atol=1e-5), (name, m)
    assert classifier_name(agent) == (f"own:{name}" if own else "head")


def test_with_shared_source_clips_a_win_needs_the_clip_test_too():
    # evaluate --truth: composites share clips; McNemar (videos independent) says 0.001 but
    # the shared-clip test says 0.3: no win. Both small: a win, at the larger p.
    rows = [_row(2, "rgb", 0.001)]
    rows[0]["vs_uniform_cluster_p"] = 0.3
    assert holds(rows, "agent", "uniform")["wins"] == {}
    assert verdict_family(rows)["cells"][("agent", "uniform", "1", "rgb", 2)]["p"] == 0.3
    rows[0]["vs_uniform_cluster_p"] = 0.004
    assert holds(rows, "agent", "uniform")["wins"] == {("1", "rgb", 2): pytest.approx(0.004)}
