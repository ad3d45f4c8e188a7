"""rtsae's two-stream model (004 eqs. 15–17) trained and evaluated through the real CLI on a
real store with rgb and flow: ``framesel train --set two_stream=true`` fuses rgb with the
store's flow, records it in the checkpoint, and ``framesel evaluate`` feeds it both."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from agents.base import load_agent
from agents.synthetic import planted_states
from data.store import Layout, StreamSpec, VideoResult, create_store
from pipeline.cli import main

TORCH_THREADS = 1
T, K, D, C, V = 6, 1, 8, 3, 24
TINY = ["pretrain_epochs=1", "epochs=1", "hidden=4", "proj_dim=4", "gate_dim=2", "fusion_dim=4",
        "classifier_hidden=4", "batch_size=8", "pretrain_batch_size=8"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _store(root, streams=("rgb", "flow")):
    st = planted_states(V=V, T=T, K=K, D=D, C=C, n_key=2, seed=0)
    flow = np.random.default_rng(1).normal(size=(V, T, K, D)).astype(np.float16) * 3
    paths = tuple(f"v{i}.mp4" for i in range(V))
    layout = Layout(paths=paths, labels=st.labels.numpy().astype(np.int32), T=T,
                    streams=tuple(StreamSpec(s, K, D, C) for s in streams),
                    attrs={"classes": [f"c{i}" for i in range(C)], "multilabel": False, "T": T, "crops": K,
                           "flow_stack": 1, "config_sha256": "planted",
                           "backbone": {s: {"gflops_per_frame": 0.4} for s in streams}})
    path = root / ("s.zarr" if len(streams) == 2 else "rgb.zarr")
    with create_store(path, layout) as s:
        for i in range(V):
            feats = {"rgb": st.features[i].numpy().astype(np.float16), "flow": flow[i]}
            s.write_video(i, VideoResult(
                num_frames=T, fps=25.0, frame_index=np.arange(T, dtype=np.int32), motion=st.motion[i].numpy(),
                streams={n: {"features": feats[n], "logits": st.logits[i].numpy()} for n in streams}))
    lst = root / "list.txt"
    lst.write_text("".join(f"{p} {int(y)}\n" for p, y in zip(paths, st.labels)))
    return path, lst


def _train(store, lst, out, *extra):
    return cli("train", store, "--agent", "rtsae", "--train", lst, "--out", out,
               *[a for s in TINY for a in ("--set", s)], "--seeds", "1", "--quiet", *extra)


@pytest.fixture(scope="module")
def two_stream(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtsae2")
    store, lst = _store(root)
    r = _train(store, lst, root / "two.pt", "--set", "two_stream=true")
    assert r.exit_code == 0, r.output
    return root, store, lst


def test_train_two_stream_records_flow_and_trains_on_it(two_stream):
    root, store, lst = two_stream
    agent = load_agent(root / "two.pt")
    assert agent.config.two_stream and agent.store_identity["second_stream"] == "flow"
    assert agent.store_identity["stream"] == "rgb"
    assert agent.history[-1]["w_f"] != 1.0                     # eq. 16's w_f saw the flow stream
    # re-running the same command is idempotent (the finished checkpoint is recognised)
    r = _train(store, lst, root / "two.pt", "--set", "two_stream=true")
    assert r.exit_code == 0 and r.output.count("nothing to do") == 2, r.output    # rtsae and its partner


def test_the_two_stream_partner_is_trained_alike_and_paired_on_the_fused_rows(two_stream):
    """004's two-stream model's partner is the two-stream recognition network without the
    RTSAE (agents/rtsae_nogate.py), trained by the same call on rgb + flow; evaluate's
    "fused" rows pair them."""
    root, store, lst = two_stream
    mate = load_agent(root / "two.partner-rtsae_nogate.pt")
    assert mate.name == "rtsae_nogate" and mate.config.two_stream and mate.store_identity["second_stream"] == "flow"
    assert mate.history[-1]["w_f"] != 1.0 and not hasattr(mate.module, "encoder")
    out = root / "rep-partner"
    r = cli("evaluate", store, "--test", lst, "--out", out, "--streams", "rgb,flow", "--baselines", "uniform",
            "--m", "2", "--agents", root / "two.pt", root / "two.partner-rtsae_nogate.pt", "--quiet")
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads((out / "results.json").read_text())["rows"] if x["protocol"] == "accuracy_vs_m"]
    fused = [x for x in rows if x["method"] == "rtsae"]
    assert fused and {x["stream"] for x in fused} == {"fused"}
    assert all(x["partner"] == "rtsae_nogate" and x["vs_partner_p"] is not None and x["vs_partner_diff"] is not None
               for x in fused)
    assert {x["stream"] for x in rows if x["method"] == "rtsae_nogate"} == {"fused"}
    # the partner's own prediction from rgb + flow on the evenly spaced uniform_m positions
    from agents.from_store import load_states
    from data.store import open_store
    with open_store(store) as s:
        rgb, flow = load_states(s, "rgb", np.arange(V)), load_states(s, "flow", np.arange(V))
    row = fused[0]
    sel = mate.select(rgb, row["uniform_m"], flow=flow)
    assert row["vs_partner_top1"] == pytest.approx(float((sel.video_scores.argmax(1) == rgb.labels).float().mean()))


def test_evaluate_feeds_the_two_stream_agent_rgb_and_flow(two_stream):
    root, store, lst = two_stream
    out = root / "rep"
    r = cli("evaluate", store, "--test", lst, "--out", out, "--streams", "rgb,flow", "--baselines", "uniform",
            "--m", "2", "--agents", root / "two.pt", "--quiet")
    assert r.exit_code == 0, r.output
    rows = [x for x in json.loads((out / "results.json").read_text())["rows"] if x["method"].startswith("rtsae")]
    assert rows and {x["stream"] for x in rows} == {"fused"}
    # the rows are the agent's own prediction from rgb + flow (not rgb alone)
    from agents.from_store import load_states
    from data.store import open_store
    agent = load_agent(root / "two.pt")
    with open_store(store) as s:
        rows_idx = np.arange(V)
        rgb, flow = load_states(s, "rgb", rows_idx), load_states(s, "flow", rows_idx)
    sel = agent.select(rgb, None, flow=flow)
    top1 = float((sel.video_scores.argmax(1) == rgb.labels).float().mean())
    free = [x for x in rows if x["protocol"] == "accuracy_vs_m" and x["m"] is None and x["split"] == "list"]
    assert free and free[0]["top1"] == pytest.approx(top1)
    assert not torch.equal(agent.score(rgb, flow=flow), agent.score(rgb, flow=rgb))


def test_two_stream_needs_rgb_and_a_flow_stream(two_stream, tmp_path):
    root, store, lst = two_stream
    r = _train(store, lst, tmp_path / "x.pt", "--set", "two_stream=true", "--stream", "flow")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "two_stream=true fuses --stream rgb" in r.output and "Traceback" not in r.output
    rgb_only, lst2 = _store(tmp_path, streams=("rgb",))
    r = _train(rgb_only, lst2, tmp_path / "y.pt", "--set", "two_stream=true")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "needs a flow stream" in r.output and "rgb.zarr" in r.output
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
