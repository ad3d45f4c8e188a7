"""`framesel predict` on real fight clips: equal to evaluate's select_classify protocol video
by video once the videos are extracted, and computing exactly m·L flow fields a video.

One store of 6 real fight clips (T = 6, L = 2, 1 crop, Farneback flow for speed; predict
reads whatever flow the store records) with a head and an ``as`` agent trained on rgb and a
``dsn`` trained on flow observing rgb; skipped when ../shared/data is absent.
"""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import TINY, shared_data

TORCH_THREADS = 1
CLIPS = ["videos/fight/fi013.mp4 1", "videos/fight/fi014.mp4 1", "videos/fight/fi015.mp4 1",
         "videos/noFight/nofi013.mp4 0", "videos/noFight/nofi014.mp4 0", "videos/noFight/nofi015.mp4 0"]
T, L, M = 6, 2, 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from agents.head import HeadConfig
    from agents.head_stage import HeadStageConfig, run_head
    from agents.train_stage import TrainStageConfig, run_train
    from extract.flow import FlowConfig
    from extract.run import ExtractConfig, run_extraction
    from extract.video import VideoSettings

    root = shared_data("fight")
    tmp = tmp_path_factory.mktemp("predict")
    listed = [c for c in CLIPS if (root / c.split()[0]).exists()]
    if len(listed) < 4:
        pytest.skip(f"the fight clips {CLIPS} are not under {root}")
    lst = tmp / "clips.txt"
    lst.write_text("\n".join(listed) + "\n")
    (tmp / "classes.txt").write_text((root / "classes.txt").read_text())
    store = tmp / "fight.zarr"
    settings = VideoSettings(frames=T, flow_stack=L, crops=1, thumbnail_size=None, backbone=TINY[1],
                             flow=FlowConfig(algorithm="farneback"))
    summary = run_extraction(ExtractConfig(list_path=str(lst), out=str(store), root=str(root),
                                           classes_file=str(tmp / "classes.txt"), settings=settings, quiet=True))
    assert summary.ok, summary.text()
    run_head(HeadStageConfig(store=str(store), train_list=str(lst), head=HeadConfig(epochs=5), quiet=True))
    agents = {}
    for name, stream, observer, sets in (("as", "rgb", None, (("epochs", 2), ("m", M))),
                                         ("dsn", "flow", "rgb", (("epochs", 2), ("sections", M), ("clips_per_section", 2)))):
        out = tmp / f"{name}.pt"
        run_train(TrainStageConfig(store=str(store), agent=name, train_list=str(lst), out=str(out), stream=stream,
                                   observer=observer, overrides=sets, quiet=True))
        agents[name] = out
    return {"root": root, "list": lst, "store": store, "agents": agents, "tmp": tmp}


def _predict(world, agent, name, *extra):
    from pipeline.cli import main

    out = world["tmp"] / name
    res = CliRunner().invoke(main, ["predict", str(world["store"]), "--agent", str(agent), "--videos",
                                    str(world["list"]), "--root", str(world["root"]), "--m", str(M),
                                    "--out", str(out), "--quiet", *extra])
    assert res.exit_code == 0, res.output
    if "--json" in extra:
        return [json.loads(line) for line in out.read_text().splitlines()]
    return list(csv.DictReader(out.open()))


@pytest.fixture(scope="module")
def per_video(world):
    from pipeline.cli import main

    report = world["tmp"] / "report"
    res = CliRunner().invoke(main, ["evaluate", str(world["store"]), "--test", str(world["list"]), "--agents",
                                    str(world["agents"]["as"]), str(world["agents"]["dsn"]), "--m", str(M),
                                    "--baselines", "uniform", "--out", str(report), "--per-video", "--quiet"])
    assert res.exit_code == 0, res.output
    return list(csv.DictReader((report / "per_video.csv").open()))


@pytest.mark.parametrize("agent,method,stream", [("uniform", "uniform", "rgb"), ("as", "as", "rgb"),
                                                 ("dsn", "dsn", "flow")])
def test_predict_equals_select_classify(world, per_video, agent, method, stream):
    """Positions and class equal evaluate's select_classify rows video by video; scores agree
    within float16 rounding of the features."""
    spec = world["agents"].get(agent, agent)
    pred = _predict(world, spec, f"{agent}.csv")
    rows = {r["path"]: r for r in per_video if r["protocol"] == "select_classify" and r["stream"] == stream
            and (r["method"] == method or r["method"].startswith(f"{method}["))}
    assert len(pred) == len(rows) > 0, (method, stream, sorted({(r["method"], r["stream"]) for r in per_video}))
    for p in pred:
        ref = rows[p["path"]]
        assert p["error"] == ""
        assert p["kept_frames"] == ref["kept_frames"], p["path"]
        assert len(p["kept_frames"].split()) == M
        assert p["predicted"] == ref["predicted"], p["path"]
        assert float(p["score"]) == pytest.approx(float(ref["score"]), abs=2e-3), p["path"]


def test_predict_computes_m_times_l_flow_fields(world):
    """Each video's flow fields, counted by the flow registry's cost record of the pairs the
    expensive pass solved: m·L (the kept stacks of these clips never share a pair), not T·L."""
    rows = _predict(world, "uniform", "uniform.jsonl", "--json")
    for r in rows:
        frames = [int(x) for x in r["kept_frames"].split()]
        assert min(np.diff(frames)) > L, "the stacks would share pairs: pick longer clips"
        assert r["flow_fields"] == M * L, r
        assert set(r["stages"]) == {"decode", "cheap", "agent", "flow", "backbone"}


def test_failed_video_is_recorded_and_run_goes_on(world, tmp_path):
    from pipeline.cli import main

    lst = tmp_path / "list.txt"
    lst.write_text(world["list"].read_text().splitlines()[0] + "\nvideos/fight/missing.mp4 1\n")
    out = tmp_path / "pred.csv"
    res = CliRunner().invoke(main, ["predict", str(world["store"]), "--agent", "uniform", "--videos", str(lst),
                                    "--root", str(world["root"]), "--m", "2", "--out", str(out), "--quiet"])
    assert res.exit_code == 1
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["error"] == "" and rows[0]["predicted"]
    assert "missing.mp4" in rows[1]["error"] and rows[1]["predicted"] == ""
    meta = json.loads((tmp_path / "pred.csv.meta.json").read_text())
    assert meta["failed"] == 1 and meta["agent"] == {"baseline": "uniform"} and meta["store_identity"]
    assert meta["videos_sha256"] and meta["settings"]["frames"] == T and meta["versions"]["torch"]


@pytest.mark.parametrize("agent,m,words", [("oracle", 2, "label"), ("uniform", T + 1, "T = 6"),
                                           ("as", 2, "checkpoint")])
def test_refusals_name_the_cause(world, agent, m, words):
    from pipeline.cli import main

    res = CliRunner().invoke(main, ["predict", str(world["store"]), "--agent", agent, "--videos", str(world["list"]),
                                    "--root", str(world["root"]), "--m", str(m), "--out",
                                    str(world["tmp"] / "x.csv"), "--quiet"])
    assert res.exit_code == 1 and words in res.output, res.output
