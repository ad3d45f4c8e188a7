"""The README's commands, end to end on a small demo: extract → info/check → head → train
every agent → evaluate → report; and `framesel demo`'s own code path on a smaller dataset."""
import csv
import json
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from data.demo import DemoConfig, make_demo_dataset
from pipeline.cli import main
from conftest import TINY

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = DemoConfig(videos_per_class=5, test_per_class=2, frames=24)
FAST = [*TINY, "--frames", "6", "--flow-stack", "2", "--crops", "1", "--flow", "farneback", "--quiet"]
AGENTS = {"as": ["epochs=3", "m=2"], "dsn": ["epochs=3"], "tattn": ["epochs=2", "hidden=16", "layers=1", "iterations=3", "test_last=2"],
          "rtsae": ["pretrain_epochs=1", "epochs=2"], "glimpse": ["epochs=2"]}


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return r


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root / "data", SMALL)
    data = root / "data"
    (data / "all.txt").write_text((data / "train.txt").read_text() + (data / "test.txt").read_text())
    r = cli("extract", data / "all.txt", "--root", data, "--classes", data / "classes.txt",
            "--out", root / "demo.zarr", "--feature-maps", *FAST)
    assert r.exit_code == 0, r.output
    return root


def test_readme_commands_end_to_end(demo_store):
    root, data = demo_store, demo_store / "data"
    store = root / "demo.zarr"
    assert cli("info", store).exit_code == 0
    assert cli("check", store).output.strip().endswith("OK")
    r = cli("head", store, "--train", data / "train.txt", "--epochs", "20", "--quiet")
    assert r.exit_code == 0 and "rgb: head trained" in r.output and "flow: head trained" in r.output, r.output
    ckpts = []
    for agent, sets in AGENTS.items():
        out = root / f"{agent}.pt"
        args = [a for s in sets for a in ("--set", s)]
        r = cli("train", store, "--agent", agent, "--train", data / "train.txt", "--out", out, *args, "--seeds", "1",
                "--quiet")
        assert r.exit_code == 0, r.output
        assert out.exists() and out.with_suffix(".jsonl").read_text().count("\n") >= 2
        ckpts += ["--agents", out, *root.glob(f"{agent}.partner-*.pt")]      # its paper's partner, same call
    r = cli("evaluate", store, "--test", data / "test.txt", *ckpts, "--out", root / "report", "--m", "1,2,3,6")
    assert r.exit_code == 0, r.output
    res = json.loads((root / "report" / "results.json").read_text())
    methods = {row["method"] for row in res["rows"]}
    assert {"uniform", "random", "oracle", "as", "tattn", "glimpse"} <= methods, methods
    assert any(m.startswith("dsn") for m in methods) and any(m.startswith("rtsae") for m in methods)
    for agent, partner in (("tattn", "tattn_noatt"), ("rtsae", "rtsae_nogate"), ("glimpse", "glimpse_soft"),
                           ("dsn", "dsn_nosampler")):
        rows = [r for r in res["rows"] if r["classifier"] == f"own:{agent}" and r["protocol"] == "accuracy_vs_m"]
        assert partner in methods and rows and all(r["partner"] == partner and r["vs_partner_p"] is not None
                                                   for r in rows), agent
    assert res["meta"]["store"]["config_sha256"] and res["meta"]["versions"]["torch"]
    html = (root / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3


def test_checkpoint_from_another_store_is_refused(demo_store, tmp_path):
    data = demo_store / "data"
    other = tmp_path / "other.zarr"
    assert cli("extract", data / "test.txt", "--root", data, "--classes", data / "classes.txt",
               "--out", other, *FAST[:-2], "dis", "--quiet").exit_code == 0
    assert cli("head", other, "--train", data / "test.txt", "--epochs", "2", "--quiet").exit_code == 0
    ck = demo_store / "as.pt"
    if not ck.exists():
        pytest.skip("runs after the end-to-end test")
    r = CliRunner().invoke(main, ["evaluate", str(other), "--test", str(data / "test.txt"), "--agents", str(ck),
                                  "--out", str(tmp_path / "rep")])
    assert r.exit_code == 1 and "trained on features that mean something else" in r.output and "'farneback' vs 'dis'" in r.output


def test_run_demo_small(tmp_path):
    """The demo's whole run (dataset, extract, head, train with partners and seeds, evaluate,
    report, predict) at test size: the tiny random backbone and Farneback flow, since what
    is checked is the run, not the features (tests/test_demo_data.py checks those)."""
    from extract.flow import FlowConfig
    from pipeline.demo import DEMO_SETTINGS, DemoRunConfig, run_demo

    overrides = {k: tuple((s.split("=")[0], json.loads(s.split("=")[1])) for s in v) for k, v in AGENTS.items()}
    cfg = DemoRunConfig(out=str(tmp_path / "d"), data=SMALL, agents=("dsn", "tattn"),
                        overrides=overrides, ms=(1, 2, 6), quiet=True,
                        settings=replace(DEMO_SETTINGS, frames=6, backbone=TINY[1], flow=FlowConfig("farneback")))
    assert cfg.seeds == 3 and "tattn_noatt" not in DemoRunConfig().agents     # trained as tattn's partner
    lines = []
    result = run_demo(cfg, echo=lines.append)
    assert result["ok"] and Path(result["report"]).exists()
    assert any("extract done" in ln for ln in lines)
    assert set(result["seconds"]) >= {"dataset", "extract", "head", "train dsn", "train tattn", "evaluate"}
    # three training seeds of every agent and of its partner, reported as one method: mean ± std,
    # tattn paired with tattn_noatt and dsn with dsn_nosampler
    assert {p.name for p in (tmp_path / "d" / "agents").glob("tattn-rgb*seed*.pt")} == {
        f"tattn-rgb{p}-seed{s}.pt" for p in ("", ".partner-tattn_noatt") for s in (0, 1, 2)}
    rows = json.loads((tmp_path / "d" / "report" / "results.json").read_text())["rows"]
    for agent, partner in (("tattn", "tattn_noatt"), ("dsn[1:3]", "dsn_nosampler")):
        mean = [r for r in rows if r["protocol"] == "accuracy_vs_m" and r["method"] == agent and r["seed"] == "mean"]
        assert mean and all(r["num_seeds"] == 3 and r["partner"] == partner for r in mean), agent
    md = (tmp_path / "d" / "report" / "report.md").read_text()
    assert md.index("### Answer: stream rgb") < md.index("\n| ") < md.index("## Plots")
    # the README's `framesel predict` against the demo's store and an agent the demo trained
    d, pred = tmp_path / "d", tmp_path / "pred.csv"
    r = CliRunner().invoke(main, ["predict", result["store"], "--agent", str(d / "agents" / "dsn-rgb-seed0.pt"),
                                  "--videos", str(d / "data" / "test.txt"), "--root", str(d / "data"), "--m", "2",
                                  "--out", str(pred), "--quiet"])
    assert r.exit_code == 0, r.output
    got = list(csv.DictReader(pred.open()))
    assert len(got) == len((d / "data" / "test.txt").read_text().splitlines()) > 0
    assert all(not g["error"] and g["predicted"] and len(g["kept_frames"].split()) == 2 for g in got), got


def readme_commands():
    """Every `framesel ...` line of the README's code blocks (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", README.read_text())
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    cmds = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if "framesel " in line:
                cmds.append(line[line.index("framesel "):])
    return cmds


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command):
    """Commands on datasets we do not have (UCF101, HMDB51, a cluster) are checked against
    the CLI's real option parser: every option and argument shape must be accepted."""
    args = shlex.split(command.replace("${SLURM_ARRAY_TASK_ID}", "3"))[1:]
    name, rest = args[0], args[1:]
    cmd = main.get_command(None, name)
    assert cmd is not None, f"README uses unknown command {name!r}"
    # Paths in the README do not exist here: parse with existence checks relaxed, then put
    # every parameter type back exactly as it was (the CLI objects are shared by all tests).
    saved = [(p.type, p.type.exists) for p in cmd.params if hasattr(p.type, "exists")]
    for t, _ in saved:
        t.exists = False
    try:
        ctx = cmd.make_context(name, list(rest), resilient_parsing=False)
    finally:
        for t, value in saved:
            t.exists = value
    assert ctx.params
