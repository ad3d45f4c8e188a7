"""`framesel evaluate` gives each agent the observer stream its checkpoint recorded, and no
other: a dsn trained without an observer reads the full-pass features even when another
agent in the same run observes a cheap stream. Through the real CLI on a real store."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from agents.synthetic import planted_states
from data.store import Layout, StreamSpec, VideoResult, create_store
from pipeline.cli import main

TORCH_THREADS = 1
T, K, D, C, V = 6, 1, 6, 3, 24
DSN = ["epochs=1", "hidden=4", "batch_size=8"]
COMPARED = ("top1", "top5", "mean_class", "fraction_kept", "gflops_full", "gflops_deployable")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with rgb and a cheap ``obs`` stream of the same width (so a wrong read is
    silent), and two dsn checkpoints: ``with.pt`` observes obs, ``without.pt`` nothing."""
    root = tmp_path_factory.mktemp("observer")
    st = planted_states(V=V, T=T, K=K, D=D, C=C, n_key=2, seed=0)
    obs = np.random.default_rng(1).normal(size=(V, T, K, D)).astype(np.float16)
    paths = tuple(f"v{i}.mp4" for i in range(V))
    layout = Layout(paths=paths, labels=st.labels.numpy().astype(np.int32), T=T,
                    streams=(StreamSpec("rgb", K, D, C), StreamSpec("obs", K, D, C)),
                    attrs={"classes": [f"c{i}" for i in range(C)], "multilabel": False, "T": T, "crops": K,
                           "flow_stack": 1, "config_sha256": "planted",
                           "backbone": {"rgb": {"gflops_per_frame": 0.4}, "obs": {"gflops_per_frame": 0.01}}})
    with create_store(root / "s.zarr", layout) as s:
        for i in range(V):
            s.write_video(i, VideoResult(
                num_frames=T, fps=25.0, frame_index=np.arange(T, dtype=np.int32), motion=st.motion[i].numpy(),
                streams={"rgb": {"features": st.features[i].numpy().astype(np.float16), "logits": st.logits[i].numpy()},
                         "obs": {"features": obs[i], "logits": st.logits[i].numpy()}}))
    lst = root / "list.txt"
    lst.write_text("".join(f"{p} {int(y)}\n" for p, y in zip(paths, st.labels)))
    for name, extra in (("with", ["--observer", "obs"]), ("without", [])):
        r = cli("train", root / "s.zarr", "--agent", "dsn", "--train", lst, "--out", root / f"{name}.pt",
                *[a for s in DSN for a in ("--set", s)], "--quiet", "--seeds", "1", "--no-partner", *extra)
        assert r.exit_code == 0, r.output
    return root, lst


def _rows(root, lst, *agents) -> dict:
    """{(method, m): row} of the accuracy_vs_m rows of one evaluate run on rgb."""
    out = root / ("rep-" + "-".join(agents))
    r = cli("evaluate", root / "s.zarr", "--test", lst, "--out", out, "--streams", "rgb", "--baselines", "uniform",
            "--m", "1,2,3", "--agents", *[root / f"{a}.pt" for a in agents], "--quiet")
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    return {(x["method"], x["m"]): x for x in rows
            if x["protocol"] == "accuracy_vs_m" and x["split"] == "list" and x["method"].startswith("dsn")}


def test_each_agent_reads_its_own_observer_or_none(trained):
    root, lst = trained
    both = _rows(root, lst, "with", "without")          # labels: dsn[..] (with), dsn[..]#2 (without)
    alone = {"with": _rows(root, lst, "with"), "without": _rows(root, lst, "without")}
    labels = sorted({k[0] for k in both})
    assert len(labels) == 2 and labels[1] == labels[0] + "#2"
    for name, label in (("with", labels[0]), ("without", labels[1])):
        for (_, m), row in alone[name].items():
            got = both[(label, m)]
            assert {f: got[f] for f in COMPARED} == {f: row[f] for f in COMPARED}, (name, m)
    for m in (1, 2, 3):
        # without an observer dsn reads its own features on the m·N candidates of 003's test
        # scheme (N = 3: all T positions once m·3 >= T, then deployable = full); with one, the
        # cheap stream on those candidates plus the backbone on the kept ones only
        without, with_ = both[(labels[1], m)], both[(labels[0], m)]
        if m * 3 >= T:
            assert without["gflops_deployable"] == pytest.approx(without["gflops_full"])
        else:
            assert without["gflops_deployable"] < without["gflops_full"]
        assert with_["gflops_deployable"] < with_["gflops_full"]
