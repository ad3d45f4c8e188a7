"""DSN's test protocol as 003 specifies it: M sections × N clips at test with N as in
training, a budget of m clips re-sectioned into m sections (Fig. 4), and the Table II grid
of training schemes at the paper's test M = 3 — in ``select`` and in the ``dsn_mn`` rows."""
import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from agents.dsn import DSN, DSNConfig, section_pick, section_positions, clip_scheme
from agents.synthetic import planted_states
from data.errors import InputError
from data.store import Layout, StreamSpec, VideoResult, create_store
from evaluate.dsn_protocol import SectionedMaxResponse, feasible_ms, report_tables
from evaluate.protocols import ProtocolConfig, build_methods, run_protocols
from pipeline.cli import main

TORCH_THREADS = 1  # tiny tensors (tests/conftest.py: _torch_threads)
T, D, C = 25, 32, 8
FAST = dict(lr=0.03, epochs=8, batch_size=32, episodes=4, hidden=32)


@pytest.fixture(scope="module")
def world():
    st = planted_states(V=384, T=T, K=1, D=D, C=C, n_key=3, seed=0)
    return st.subset(range(256)), st.subset(range(256, 384)), st.key_mask[256:]


@pytest.fixture(scope="module")
def fitted(world):
    """dsn-f checkpoints of three training schemes (003 Table II), trained once."""
    train = world[0]
    out = {}
    for M, N in ((1, 3), (1, 6), (3, 3)):
        agent = DSN(DSNConfig(mode="fixed", sections=M, clips_per_section=N, **FAST), num_classes=C,
                    feature_dim=D, seed=0)
        agent.fit(train)
        agent.store_identity = {"stream": "rgb"}
        out[f"{M}:{N}"] = agent
    return out


def _kept_positions(sel) -> torch.Tensor:
    """(V, m) sorted kept positions of a frame-mode selection with the same count per video."""
    keep = sel.keep[..., 0]
    return torch.stack([row.nonzero().squeeze(1) for row in keep])


def _one_candidate_per_section(sel, M, N):
    pos = section_positions(T, M, N)                                          # (M, N)
    kept = sel.keep[..., 0]
    per_section = kept[:, pos].sum(-1)                                        # (V, M)
    assert per_section.eq(1).all(), "each section keeps exactly one of its N candidates"
    assert kept.sum(1).eq(M).all(), "nothing is kept outside the candidates"


# -- the test scheme --------------------------------------------------------------------
def clip_scheme_and_section_pick_on_hand_made_numbers():
    assert clip_scheme(25, 4, 3) == (4, 3)
    assert clip_scheme(25, 8, 3) == (8, 3)
    assert clip_scheme(25, 9, 3) == (9, 2)       # 27 > 25: two candidates per section
    assert clip_scheme(25, 25, 3) == (25, 1)     # one candidate each: uniform sampling
    with pytest.raises(InputError, match="T=25"):
        clip_scheme(25, 26, 3)
    cand = torch.tensor([[[0.0, torch.log(torch.tensor(3.0)).item()], [5.0, 5.0]]])    # (1, M=2, N=2)
    s = section_pick(cand, torch.tensor([[1, 3], [5, 7]]), 8)
    assert torch.allclose(s, torch.tensor([[0, 0.25, 0, 1.75, 0, 1.5, 0, 0.5]]))       # tie: first wins


@pytest.mark.parametrize("m,M", [(None, 4), (4, 4), (8, 8), (2, 2), (1, 1)])
def test_test_choice_is_n_candidates_per_section(world, m, M):
    """At test the observer picks one of N = 3 candidates (the segment centres) in each of
    M sections; a budget m is M = m sections, m = None the paper's 4 : 3. Before, it picked
    among every position of 4 contiguous blocks and m != 4 kept runners-up."""
    _, test, _ = world
    agent = DSN(DSNConfig(**FAST), num_classes=C, feature_dim=D, seed=1)        # untrained: structure only
    sel = agent.select(test, m)
    _one_candidate_per_section(sel, M, 3)
    assert sel.num_kept.eq(M).all()


def test_observer_sees_only_the_candidates(world):
    """What the observer does not see cannot change the choice: features at non-candidate
    positions are replaced by huge noise and the selection and prediction stay the same."""
    _, test, _ = world
    agent = DSN(DSNConfig(mode="fixed", **FAST), num_classes=C, feature_dim=D, seed=2)
    other = torch.ones(T, dtype=torch.bool)
    other[section_positions(T, 4, 3).reshape(-1)] = False
    noisy = test.subset(range(test.shape[0]))
    noisy.features = noisy.features.clone()
    noisy.features[:, other] = 100 * torch.randn_like(noisy.features[:, other])
    a, b = agent.select(test, None), agent.select(noisy, None)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.video_scores, b.video_scores)


def test_unmet_budget_uses_fewer_candidates(world):
    """m = 12 sections cannot hold 3 clips each in 25 positions: 2 candidates per section
    (one kept per section); m = T keeps every position."""
    _, test, _ = world
    agent = DSN(DSNConfig(**FAST), num_classes=C, feature_dim=D, seed=1)
    _one_candidate_per_section(agent.select(test, 12), 12, 2)
    assert agent.select(test, T).keep.all()
    with pytest.raises(InputError, match="cannot keep 26 clips"):
        agent.select(test, T + 1)


def test_learned_observer_takes_the_key_candidate(fitted, world):
    """Trained 1 : 3, tested 4 : 3: where a section's candidates include a key position the
    learned observer keeps one, far more often than chance (~1/3 to 2/3)."""
    _, test, keys = world
    agent = fitted["1:3"]
    pos = section_positions(T, 4, 3)
    has_key = keys[:, pos].any(-1)                                            # (V, 4)
    took_key = (agent.select(test, None).keep[..., 0] & keys)[:, pos].any(-1)
    rate = float(took_key[has_key].float().mean())
    assert rate > 0.9, rate


# -- the dsn_mn protocol rows -------------------------------------------------------------
def _dsn_rows(world, agents):
    _, test, _ = world
    st = {"rgb": test}
    return run_protocols(st, build_methods([], agents, st),
                         config=ProtocolConfig(ms=(4,), protocols=("dsn_mn",), bootstrap=50), costs=None)


def test_fig4_rows_vary_with_the_number_of_clips(fitted, world, caplog):
    """003 Fig. 4: the dsn checkpoint at M = 1 … 8 test sections of N = 3 (9 and 10 need 27
    and 30 of 25 positions: named, not run), next to random, uniform, max_response and the
    sectioned max_response at the same number of clips."""
    with caplog.at_level(logging.INFO, logger="evaluate.dsn_protocol"):
        rows = _dsn_rows(world, [fitted["1:3"]])
    mine = [r for r in rows if r["method"] == "dsn-f[1:3]"]
    assert [r["m"] for r in mine] == list(range(1, 9))
    assert [r["test_mn"] for r in mine] == [f"{m}:3" for m in range(1, 9)]
    assert all(r["fig4"] and r["mn"] == "1:3" and r["unmet_m"] == [9, 10] for r in mine)
    assert [r["m"] for r in mine if r["table2"]] == [3] and [r["m"] for r in mine if r["paper_test"]] == [4]
    assert [r["fraction_kept"] for r in mine] == pytest.approx([m / T for m in range(1, 9)])
    assert len({round(r["top1"], 6) for r in mine}) >= 4, [r["top1"] for r in mine]
    assert "M=[9, 10]" in caplog.text
    methods = {r["method"] for r in rows}
    assert {"random", "uniform", "max_response", "max_response[M:3]"} <= methods
    for name in ("random", "uniform", "max_response", "max_response[M:3]"):
        assert sorted(r["m"] for r in rows if r["method"] == name) == list(range(1, 9)), name
    # on the planted data the learned observer beats every reference along the curve
    # (measured: dsn-f 0.23–0.30, the references 0.01–0.17)
    curve = {name: sum(r["top1"] for r in rows if r["method"] == name) / 8 for name in methods}
    assert curve["dsn-f[1:3]"] > max(v for k, v in curve.items() if k != "dsn-f[1:3]") + 0.08, curve


def test_table2_grid_at_test_m3(fitted, world):
    """003 Table II: checkpoints trained 1 : 3, 1 : 6, 3 : 3, each tested at M = 3 with its
    own N; the rows say both schemes so the report can lay out the grid."""
    rows = _dsn_rows(world, list(fitted.values()))
    grid = {(r["method"], r["mn"], r["test_mn"]) for r in rows if r["table2"] and r["method"].startswith("dsn")}
    assert grid == {("dsn-f[1:3]", "1:3", "3:3"), ("dsn-f[1:6]", "1:6", "3:6"), ("dsn-f[3:3]", "3:3", "3:3")}
    six = [r["m"] for r in rows if r["method"] == "dsn-f[1:6]"]
    assert six == [1, 2, 3, 4]                                   # 5 · 6 = 30 > 25
    assert "max_response[M:6]" in {r["method"] for r in rows}


def test_sectioned_max_response_keeps_the_most_confident_candidate(world):
    _, test, _ = world
    sel = SectionedMaxResponse(3).select(test, 4)
    _one_candidate_per_section(sel, 4, 3)
    conf = test.probs.max(-1).values[..., 0]
    pos = section_positions(T, 4, 3)
    want = pos[torch.arange(4), conf[:, pos].argmax(-1)]                      # (V, 4)
    assert torch.equal(_kept_positions(sel), want.sort(1).values)
    assert feasible_ms(25, 3) == (list(range(1, 9)), [9, 10])



def test_report_tables_fig4_and_table2(fitted, world):
    rows = _dsn_rows(world, list(fitted.values()))
    tables = {title.split(":")[0]: (header, body) for title, header, body in report_tables(rows, "1")}
    header, body = tables["003 Fig. 4"]
    assert header == ["method"] + [f"M={m}" for m in range(1, 9)]
    assert {b[0] for b in body} >= {"dsn-f[1:3]", "dsn-f[1:6]", "dsn-f[3:3]", "uniform", "max_response[M:3]"}
    header, body = tables["003 Table II"]
    assert [(b[0], b[1], b[2]) for b in body] == [("dsn-f[1:3]", "1:3", "3:3"), ("dsn-f[1:6]", "1:6", "3:6"),
                                                  ("dsn-f[3:3]", "3:3", "3:3")]


# -- through `framesel evaluate` on a real store ----------------------------------------------
def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_evaluate_cli_writes_fig4_and_table2(tmp_path):
    """Two dsn checkpoints trained by `framesel train` (1 : 3 and 3 : 3) and evaluated by
    `framesel evaluate`: results.json holds their Fig. 4 rows and the Table II grid, and the
    report shows both tables."""
    Ts, V = 12, 24
    st = planted_states(V=V, T=Ts, K=1, D=6, C=3, n_key=2, seed=0)
    paths = tuple(f"v{i}.mp4" for i in range(V))
    layout = Layout(paths=paths, labels=st.labels.numpy().astype(np.int32), T=Ts, streams=(StreamSpec("rgb", 1, 6, 3),),
                    attrs={"classes": ["a", "b", "c"], "multilabel": False, "T": Ts, "crops": 1, "flow_stack": 1,
                           "config_sha256": "planted", "backbone": {"rgb": {"gflops_per_frame": 0.4}}})
    with create_store(tmp_path / "s.zarr", layout) as s:
        for i in range(V):
            s.write_video(i, VideoResult(num_frames=Ts, fps=25.0, frame_index=np.arange(Ts, dtype=np.int32),
                                         motion=st.motion[i].numpy(), streams={"rgb": {
                                             "features": st.features[i].numpy().astype(np.float16),
                                             "logits": st.logits[i].numpy()}}))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p} {int(y)}\n" for p, y in zip(paths, st.labels)))
    for name, M in (("a", 1), ("b", 3)):
        r = _cli("train", tmp_path / "s.zarr", "--agent", "dsn", "--train", lst, "--out", tmp_path / f"{name}.pt",
                 "--set", "epochs=1", "--set", "hidden=4", "--set", "batch_size=8", "--set", f"sections={M}", "--quiet",
                 "--seeds", "1", "--no-partner")
        assert r.exit_code == 0, r.output
    r = _cli("evaluate", tmp_path / "s.zarr", "--test", lst, "--out", tmp_path / "rep", "--baselines", "uniform",
             "--m", "2", "--agents", tmp_path / "a.pt", tmp_path / "b.pt", "--quiet")
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]
            if x["protocol"] == "dsn_mn"]
    assert sorted(x["m"] for x in rows if x["method"] == "dsn[1:3]") == [1, 2, 3, 4]          # 4 · 3 = T
    assert {(x["method"], x["test_mn"]) for x in rows if x["table2"] and x.get("mn")} == {
        ("dsn[1:3]", "3:3"), ("dsn[3:3]", "3:3")}
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "003 Fig. 4" in report and "003 Table II" in report
