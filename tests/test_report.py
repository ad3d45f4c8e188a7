"""The report of a small real run: files, words, plots; the HTML rendered in headless Chromium."""
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from agents.base import Selector
from agents.synthetic import planted_states
from data.errors import InputError
from evaluate.compute import CONVENTION, CostModel
from evaluate.diagnostics import collect_diagnostics
from evaluate.protocols import ProtocolConfig, build_methods, run_protocols, summarize_splits
from evaluate.report import verdicts, write_report

TORCH_THREADS = 1  # tiny tensors (tests/conftest.py: _torch_threads)
T = 10


class _Policy(Selector):
    learned = True

    def __init__(self, key, stream="rgb"):
        self.key, self.store_identity, self.config = key, {"stream": stream}, None
        self.history = [{"reward": r, "entropy": 0.7 - r / 5, "fraction_kept": 0.5 - r / 10} for r in (0.2, 0.6, 1.1)]


class Finder(_Policy):
    """Has learned where the planted action is."""
    name = "finder"

    def score(self, states):
        return self.key[torch.as_tensor(states.video_ids)].float()[:, :, None].expand(*states.shape[:3]).clone()


class Lazy(_Policy):
    """Learned nothing: always the last m positions."""
    name = "lazy"

    def score(self, states):
        V, T_, K_ = states.shape[:3]
        return torch.arange(T_, dtype=torch.float32)[None, :, None].expand(V, T_, K_).clone()


def _run(tmp_path, thumbnails=True, splits=("1", "2")):
    rows, extras = [], None
    costs = CostModel(T=T, crops=2, flow_stack=5, backbone={"rgb": 0.8, "flow": 0.9}, flow_pair=17.7,
                      flow_algorithm="tvl1")
    for i, split in enumerate(splits):
        rgb = planted_states(V=48, T=T, K=2, D=8, C=5, n_key=3, seed=i)
        flow = planted_states(V=48, T=T, K=2, D=8, C=5, n_key=3, seed=i)
        flow.logits = flow.logits + torch.randn(flow.logits.shape, generator=torch.Generator().manual_seed(i))
        st = {"rgb": rgb, "flow": flow}
        agents = [Finder(rgb.key_mask, "rgb"), Finder(rgb.key_mask, "flow"), Lazy(rgb.key_mask, "rgb")]
        methods = build_methods(["uniform", "random", "max_response"], agents, st)
        rows += run_protocols(st, methods, split=split, costs=costs,
                              config=ProtocolConfig(ms=(2, 4, 8), alphas=(0.0, 0.2), bootstrap=300))
        if extras is None:
            thumbs = np.random.default_rng(0).integers(0, 255, (48, T, 16, 20, 3), dtype=np.uint8) if thumbnails else None
            extras = collect_diagnostics(st, methods, m=4, sample=3, thumbnails=thumbs)
    rows += summarize_splits(rows) if len(splits) > 1 else []
    meta = {"command": "framesel evaluate demo.zarr --test test.txt --agents finder.pt",
            "config": {"ms": [2, 4, 8]}, "seeds": [0], "versions": {"torch": torch.__version__},
            "store": {"path": "demo.zarr", "list_sha256": "abc"}, "compute": costs.describe()}
    return rows, write_report(tmp_path / "report", rows, meta, extras)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("rep"))


def test_results_json(report):
    rows, paths = report
    data = json.loads(paths["json"].read_text())       # strict JSON: NaN would fail to parse below
    assert set(data["meta"]) >= {"command", "config", "seeds", "versions", "store", "flops_convention", "fusion_weights"}
    assert data["meta"]["fusion_weights"] == ["rgb:flow = 0.333:0.667", "rgb:flow = 1:1.5"]
    assert len(data["rows"]) == len(rows)
    assert {r["split"] for r in data["rows"]} == {"1", "2", "mean"}
    assert "NaN" not in paths["json"].read_text()


def test_markdown_words(report):
    _, paths = report
    md = paths["md"].read_text()
    assert CONVENTION in md and "rgb:flow = 1:1.5" in md and "FLOPs = 2 x MACs" in md
    assert re.search(r"\*\*finder\*\* on rgb \(classifier head, consensus logit_mean\): beats its classifier "
                     r"\(head\) on uniform-m significantly at [^;]+; beats uniform significantly", md)
    assert re.search(r"\*\*lazy\*\* on rgb \(classifier head, consensus logit_mean\): does NOT beat its classifier "
                     r"\(head\) on uniform-m at any m .*does NOT beat uniform at any m", md)
    size = json.loads(paths["json"].read_text())["meta"]["correction"]["family_size"]
    # 2 splits x (finder on rgb, flow; lazy on rgb) x 3 budgets x (same_uniform, uniform, random)
    assert size == 2 * 3 * 3 * 3
    assert "does NOT beat random" in md and f"Holm-corrected over the report's {size} verdict tests" in md
    # trivial baselines are in the same tables as the agents
    table = md.split("### Top-1 vs m, stream rgb (split mean)")[1].split("##")[0]
    for name in ("uniform", "random", "max_response", "finder", "lazy"):
        assert f"| {name} |" in table
    assert "from the papers, other datasets/backbones" in md


def test_verdicts_use_the_paired_test(report):
    rows, _ = report
    words = verdicts(rows)
    assert len(words) == 3        # finder on rgb and flow, lazy on rgb
    assert any(w.startswith("**finder** on flow (classifier head, consensus logit_mean): beats") for w in words)


def test_html_embeds_every_plot(report):
    _, paths = report
    html = paths["html"].read_text()
    assert len(re.findall(r"<img class='plot'[^>]+src='data:image/png;base64,", html)) == 6
    assert "Skipped" not in html
    assert "src='http" not in html and "<script" not in html      # self-contained


def test_missing_inputs_are_skipped_with_a_note(tmp_path):
    _, paths = _run(tmp_path, thumbnails=False, splits=("1",))
    html = paths["html"].read_text()
    assert "Skipped: the store has no thumbnails" in html
    assert len(re.findall(r"<img class='plot'", html)) == 5
    with pytest.raises(InputError):
        write_report(tmp_path / "empty", [], {})


def _chromium_widths(chromium, page, tmp_path) -> list[int]:
    """naturalWidth of every <img> after Chromium decoded the page (written into the DOM by a
    tiny script in a copy of the page, read back with --dump-dom)."""
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { document.body.setAttribute('data-widths', "
              "Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1).join(',')); });</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'data-widths="([^"]*)"', out)
    assert found, f"the probe script did not run; chromium printed: {out[:300]}"
    return [int(w) for w in found.group(1).split(",") if w]


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium) to render report.html")
    widths = _chromium_widths(chromium, report[1]["html"], tmp_path)
    assert len(widths) == 6 and all(w > 100 for w in widths), widths
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}", "--window-size=1200,3000",
                    report[1]["html"].as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image as mpimg
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels[..., :3].std() > 0.05           # not a blank page: plots and tables drew


TVL1 = {"tau": 0.25, "lambda": 0.15, "theta": 0.3, "nscales": 5, "warps": 5, "epsilon": 0.01,
        "inner_iterations": 30, "outer_iterations": 10, "scale_step": 0.8}


@pytest.mark.parametrize("recorded", [True, False])
def test_flow_cost_note_of_a_real_evaluate_on_a_store_with_flow(tmp_path, recorded):
    # run_evaluate writes the cost model under meta["compute"]; the report used to read
    # meta["costs"], so the flow-cost note never showed. A store with the per-video cost
    # record (cost/*) shows what the flow numbers are and the measured seconds; one made
    # before it says "not recorded".
    from click.testing import CliRunner

    from data.store import Layout, StreamSpec, VideoCost, VideoResult, create_store
    from pipeline.cli import main

    g, V, C, Tn = np.random.default_rng(0), 6, 3, 4
    paths = tuple(f"v{i}.mp4" for i in range(V))
    stages = ("decode", "flow", "flow_cost", "backbone:rgb", "backbone:flow")
    layout = Layout(paths=paths, labels=np.arange(V, dtype=np.int32) % C, T=Tn,
                    streams=tuple(StreamSpec(s, 1, 8, C) for s in ("rgb", "flow")),
                    attrs={"classes": ["a", "b", "c"], "crops": 1, "flow_stack": 2, "frame_size": [340, 256],
                           "flow": {"algorithm": "tvl1", "params": TVL1},
                           "cost": {"flow_gflops": {"kind": "estimated", "how": "sampled pairs"}},
                           "backbone": {s: {"gflops_per_frame": 0.4} for s in ("rgb", "flow")}},
                    cost_stages=stages if recorded else None)
    with create_store(tmp_path / "s.zarr", layout) as store:
        for i in range(V):
            st = {s: {"features": g.normal(size=(Tn, 1, 8)).astype(np.float16),
                      "logits": g.normal(size=(Tn, 1, C)).astype(np.float32)} for s in ("rgb", "flow")}
            store.write_video(i, VideoResult(num_frames=20, fps=25.0, frame_index=np.arange(Tn, dtype=np.int32) * 5,
                                             motion=g.random(Tn).astype(np.float32), streams=st,
                                             cost=VideoCost(np.array([0.1, 2.0, 0.2, 0.3, 0.4]), 16.0, 8, 900.0)))
    (tmp_path / "test.txt").write_text("".join(f"{p} {i % C}\n" for i, p in enumerate(paths)))
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "s.zarr"), "--test", str(tmp_path / "test.txt"),
                                  "--out", str(tmp_path / "rep"), "--baselines", "uniform", "--m", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    for name in ("report.md", "report.html"):
        text = html.unescape((tmp_path / "rep" / name).read_text())
        assert "Flow cost (tvl1)" in text and "GFLOPs per field" in text, name
        if recorded:
            assert "estimated: sampled pairs" in text and "900 primal-dual iterations per field" in text
            assert "Measured seconds per video (extraction, mean of 6 evaluated videos): decode 0.1, flow 2" in text
        else:
            assert "not recorded" in text and "Measured seconds: not recorded" in text
    rows = json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]
    row = next(r for r in rows if r["protocol"] == "accuracy_vs_m" and r["stream"] == "flow" and r["m"] == 2)
    if recorded:   # flow: 2 GFLOPs and 0.25 s per field, min(4 x 2, 8) fields; 0.4 s / 4 crops
        assert row["gflops_full"] == pytest.approx(0.4 * 4 + 16.0)
        assert row["seconds_full"] == pytest.approx(0.1 + 0.1 * 4 + 0.25 * 8, rel=1e-5)
        assert row["seconds_deployable"] == pytest.approx(0.1 + 0.1 * 2 + 0.25 * 4, rel=1e-5)
    else:
        assert row["gflops_full"] == pytest.approx(0.4 * 4) and row["seconds_full"] is None


def test_the_report_leads_with_the_answer_table(report):
    # issue 25 item 9: read in 30 s — one answer table per stream (method x m, the best
    # marked, each agent's paired verdict against its reference, CI), one paragraph of
    # findings, then the details
    _, paths = report
    md, page = paths["md"].read_text(), paths["html"].read_text()
    first_table = md.index("\n| ")
    assert md.rindex("### ", 0, first_table) == md.index("### Answer: stream rgb (split mean)")
    header = md[first_table:].splitlines()[1]
    assert header == "| method | classifier, consensus | seeds | m=2 | m=4 | m=8 |"
    assert md.index("### Answer: stream rgb") < md.index("### Answer: stream flow") < md.index("### Findings") \
        < md.index("## Details") < md.index("### Verdicts") < md.index("## Plots") < md.index("## Full results") \
        < md.index("## Run details")
    assert page.index("<table class='answer'>") == page.index("<table")
    assert page.index("<table class='answer'>") < page.index("<img class='plot'") < page.index("Full results")
    answer = md.split("### Answer: stream rgb (split mean)")[1].split("###")[0]
    lines = [ln for ln in answer.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| finder | head, logit_mean | 1 | ") and "▲ ★" in lines[1]   # beats uniform-m, best
    assert lines[2].startswith("| lazy | head, logit_mean | 1 | ") and "▲" not in lines[2]
    assert [ln.split(" | ")[0] for ln in lines[3:]] == ["| uniform", "| max_response", "| oracle (label)"]
    findings = md.split("### Findings")[1].split("##")[0]
    assert "On rgb, the best agent is finder at m=" in findings and "verdict tests" in findings
    details = md.split("### Details: stream rgb (split mean)")[1].split("###")[0]
    assert "beats same-classifier uniform-m; beats uniform" in details
