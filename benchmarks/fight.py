"""The real end-to-end benchmark: the whole pipeline on the Surveillance Camera Fight dataset
(../shared/data/fight: 132 train / 62 test real CCTV clips, 2 classes).

extract (train + test into one store) → head → train every agent on RGB and on flow →
evaluate (accuracy vs m for every method, each stream and fused, paired tests vs uniform)
→ report. Prints the headline table; the full report lands in --out.

    python -m benchmarks.fight --out /tmp/framesel-fight            # ~30-40 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agents.head import HeadConfig
from agents.stage import HeadStageConfig, run_head
from evaluate.protocols import ProtocolConfig
from evaluate.run import EvaluateConfig, run_evaluate
from extract.flow import FlowConfig
from extract.run import ExtractConfig, run_extraction
from extract.video import VideoSettings
from pipeline.demo import DEMO_AGENTS, train_agents

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"

# 2-second clips of 20-142 frames: T = 10 positions, L = 3 pairs, centre crop, TV-L1 with
# epsilon 0.05 (GUIDE §7: ~0.26 px from the defaults at a tenth of the time), so the whole
# dataset extracts in well under an hour on 2 cores. The settings are stored with the data.
SETTINGS = VideoSettings(frames=10, flow_stack=3, crops=1, feature_maps=True,
                         flow=FlowConfig(algorithm="tvl1", params=(("epsilon", 0.05),)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/framesel-fight")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--agents", default="as,dsn,tattn,rtsae,glimpse")
    args = ap.parse_args()
    if not FIGHT.exists():
        raise SystemExit(f"{FIGHT} is absent: this benchmark needs ../shared/data beside the checkout")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_list = out / "all.txt"
    all_list.write_text((FIGHT / "train.txt").read_text().rstrip("\n") + "\n" + (FIGHT / "test.txt").read_text())
    times, t0 = {}, time.perf_counter()

    def stage(name):
        times[name] = round(time.perf_counter() - t0 - sum(times.values()), 1)
        print(f"[{sum(times.values()):7.1f} s] {name} ({times[name]} s)", flush=True)

    store = str(out / "fight.zarr")
    summary = run_extraction(ExtractConfig(list_path=str(all_list), out=store, root=str(FIGHT),
                                           classes_file=str(FIGHT / "classes.txt"), settings=SETTINGS,
                                           workers=args.workers, command="python -m benchmarks.fight"))
    print(summary.text())
    stage("extract")
    run_head(HeadStageConfig(store=store, train_list=str(FIGHT / "train.txt"), head=HeadConfig(epochs=60),
                             command="python -m benchmarks.fight"))
    stage("head")
    ckpts = train_agents(store, FIGHT / "train.txt", out / "agents", tuple(args.agents.split(",")),
                         DEMO_AGENTS, SETTINGS.streams, seed=0, quiet=False,
                         command="python -m benchmarks.fight", stage=stage)
    paths = run_evaluate(EvaluateConfig(store=store, test_lists=(str(FIGHT / "test.txt"),), out=str(out / "report"),
                                        agents=tuple(ckpts), protocol=ProtocolConfig(ms=(1, 2, 3, 5, 10)),
                                        command="python -m benchmarks.fight"))
    stage("evaluate")
    rows = json.loads(Path(paths["json"]).read_text())["rows"]
    print_table(rows)
    (out / "timings.json").write_text(json.dumps(times, indent=1))
    print(f"report: {paths['html']}")


def print_table(rows):
    """top-1 (%) per method and m, for rgb, flow and fused (1:1.5), protocol accuracy_vs_m."""
    keep = [r for r in rows if r["protocol"] in ("accuracy_vs_m", "fusion") and r["split"] != "mean"]
    table = {}
    for r in keep:
        if r["protocol"] == "fusion" and r.get("fusion_weights") != "rgb:flow = 1:1.5":
            continue
        table.setdefault((r["method"], r["m"]), {})[r["stream"]] = r["top1"]
    print(f"{'method':22s} {'m':>4s} {'rgb':>7s} {'flow':>7s} {'fused':>7s}")
    for (method, m), v in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] or 99)):
        cells = [f"{100 * v[s]:6.1f}%" if v.get(s) is not None else "      -" for s in ("rgb", "flow", "fused")]
        print(f"{method:22s} {str(m):>4s} {' '.join(cells)}")


if __name__ == "__main__":
    main()
