"""The real end-to-end benchmark: the whole pipeline on the Surveillance Camera Fight dataset
(../shared/data/fight: 132 train / 62 test real CCTV clips, 2 classes).

extract (train + test into one store) → head → train every agent (and its paper's partner:
tattn_noatt, rtsae_nogate, glimpse_soft, dsn_nosampler) on RGB and on flow, --seeds training
seeds each → evaluate (accuracy vs m for every method, each
stream and fused; each agent paired with the baseline that shares its classifier, and with
uniform, random, max_response on the head; Holm over m × stream, gains held on every seed)
→ report. Prints the report's answer tables; the full report lands in --out.

An existing store at --out is reused: extraction resumes and skips the videos already done
(same settings, list and root), and the head is reused when its settings match.

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
    ap.add_argument("--agents", default="as,dsn,tattn,rtsae,glimpse",
                    help="each trained with its paper's partner (tattn_noatt, rtsae_nogate, ...)")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per agent (mean ± std in the report)")
    ap.add_argument("--keep-trained", action="store_true",
                    help="keep finished agent checkpoints of the same config in --out (resume an interrupted "
                         "run) instead of training every agent afresh")
    args = ap.parse_args()
    if not FIGHT.exists():
        raise SystemExit(f"{FIGHT} is absent: this benchmark needs ../shared/data beside the checkout")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_list = out / "all.txt"
    text = (FIGHT / "train.txt").read_text().rstrip("\n") + "\n" + (FIGHT / "test.txt").read_text()
    if not all_list.exists() or all_list.read_text() != text:   # a reused store keeps its list file as it is
        all_list.write_text(text)
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
                         DEMO_AGENTS, SETTINGS.streams, seed=0, seeds=args.seeds, quiet=False,
                         command="python -m benchmarks.fight", stage=stage,
                         fresh=not args.keep_trained)
    paths = run_evaluate(EvaluateConfig(store=store, test_lists=(str(FIGHT / "test.txt"),), out=str(out / "report"),
                                        agents=tuple(ckpts), protocol=ProtocolConfig(ms=(1, 2, 3, 5, 10)),
                                        command="python -m benchmarks.fight"))
    stage("evaluate")
    rows = json.loads(Path(paths["json"]).read_text())["rows"]
    print_table(rows)
    (out / "timings.json").write_text(json.dumps(times, indent=1))
    print(f"report: {paths['html']}")


def print_table(rows):
    """The report's answer tables (evaluate/answer.py), one per stream, as plain text."""
    from evaluate.answer import answer_tables, verdicts

    for title, header, body in answer_tables(rows):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
        print(f"\n{title}")
        for line in [header, *body]:
            print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    for words in verdicts(rows):
        print("- " + words.replace("**", ""))


if __name__ == "__main__":
    main()
