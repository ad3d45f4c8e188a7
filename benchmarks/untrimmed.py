"""Untrimmed composites of real footage: the benchmark where choosing frames matters (issue 27).

Composites (data/compose.py) of the Surveillance Camera Fight clips: 6-12 whole clips per
video, 1-2 of them ``fight`` in a positive, none in a negative; the train composites use
only the train list's clips, the test composites only the test list's (no leakage).

    # compose only: DIR/videos/, DIR/list.txt, DIR/classes.txt, DIR/truth.json, DIR/compose.json
    python benchmarks/untrimmed.py --compose-only --list LIST --root ROOT --classes FILE --out DIR \\
        [--videos N] [--seed S] [--target-class NAME]

    # end to end: compose train and test -> extract (one store) -> head trained per position on the
    # train composites' segment classes (head --truth) and frozen -> agents -> evaluate --truth
    python benchmarks/untrimmed.py --quick --out /tmp/untrimmed-quick     # a handful of composites, minutes
    python benchmarks/untrimmed.py --out /tmp/untrimmed                   # the full run: hours on 2 cores
    python benchmarks/untrimmed.py --measure --out /tmp/untrimmed-size    # sizes it: compose 80 + 40, extract one

The run writes OUT/train/ and OUT/test/ (each a composer's output), OUT/train.txt,
OUT/test.txt and OUT/truth.json (both truths, keyed by the paths of the lists, relative to
OUT), OUT/classes.txt, the store OUT/untrimmed.zarr, OUT/agents/, OUT/report/ and
OUT/timings.json (seconds per stage, the settings, the head's AUC, reuse).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from data.compose import ComposeConfig, compose, summary
from data.errors import FrameselError
from data.progress import show_progress

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"
# each agent trains its paper partner in the same call (tattn_noatt, rtsae_nogate, dsn_nosampler, glimpse_soft)
AGENTS = ("as", "dsn", "tattn", "rtsae", "glimpse")


@dataclass(frozen=True)
class RunSettings:
    """One benchmark run: composites, extraction, head, agents, evaluation."""

    train_videos: int = 80
    test_videos: int = 40
    frames: int = 25
    flow_stack: int = 5
    crops: int = 1
    flow: str = "dis"
    flow_params: tuple = ()
    agents: tuple[str, ...] = AGENTS
    seeds: int = 3
    # (agent, ((name, value), ...)) on top of each agent's defaults. as: 32 videos an update at
    # lr x 32 (ASConfig's measured departure, which learned more than B = 1 on a few hundred
    # videos); B = 1 took 270 s an epoch on this shared machine, 45 epochs x 3 seeds x 2 streams
    agent_overrides: tuple = (("as", (("batch_size", 32), ("lr", 3.2e-4))),)
    head_epochs: int = 60
    ms: tuple[int, ...] = (1, 3, 5)
    bootstrap: int = 2000
    segments: tuple[int, int] | None = None     # source clips per composite; None: ComposeConfig's


# --quick: the whole benchmark's path in seconds (the test suite rehearses it), composites of
# 4-6 clips
QUICK = RunSettings(train_videos=4, test_videos=4, frames=10, flow_stack=2, agents=("as",), seeds=1, segments=(4, 6),
                    agent_overrides=(("as", (("m", 3), ("epochs", 2), ("lr_milestones", (1,)))),),
                    head_epochs=20, ms=(1, 3, 5), bootstrap=200)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compose-only", action="store_true", help="write the composites of --list and stop")
    ap.add_argument("--quick", action="store_true", help="a handful of composites end to end (the test suite runs it)")
    ap.add_argument("--measure", action="store_true",
                    help="time composing the full run's composites and extracting one at each flow setting")
    ap.add_argument("--list", help="--compose-only: the labelled list of trimmed source clips")
    ap.add_argument("--train-list", default=None, help="trimmed clips of the train composites (ROOT/train.txt)")
    ap.add_argument("--test-list", default=None, help="trimmed clips of the test composites (ROOT/test.txt)")
    ap.add_argument("--root", default=str(FIGHT), help="the folder the lists' paths are relative to "
                                                       "(../shared/data/fight beside the checkout)")
    ap.add_argument("--classes", default=None, help="the source classes, one a line, 0-based (ROOT/classes.txt)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--videos", type=int, default=None, help="--compose-only: composites to write (40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-class", default="fight")
    ap.add_argument("--flow", default=None, help="flow algorithm of the run (default dis)")
    ap.add_argument("--flow-param", action="append", default=[], metavar="NAME=VALUE", help="e.g. epsilon=0.05")
    ap.add_argument("--crops", type=int, default=None, choices=(1, 3, 10))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.root)
    args.train_list = args.train_list or str(root / "train.txt")
    args.test_list = args.test_list or str(root / "test.txt")
    if args.classes is None and (root / "classes.txt").exists():
        args.classes = str(root / "classes.txt")
    return args


def compose_only(args) -> dict:
    """Compose --videos composites of --list into --out; print one line about them."""
    if not args.list:
        raise SystemExit("--compose-only needs --list LIST")
    cfg = ComposeConfig(videos=args.videos or 40, seed=args.seed, target_class=args.target_class)
    t0 = time.perf_counter()
    record = compose(args.list, args.root, args.out, cfg, classes=args.classes, progress=show_progress(args.quiet))
    print(f"{args.out}: {summary(record)} ({time.perf_counter() - t0:.1f} s)")
    return record


def compose_splits(args, run: RunSettings, out: Path) -> dict:
    """Compose train and test composites (train: seed, test: seed + 1), then the run's lists
    and one truth file keyed by ``train/videos/…`` and ``test/videos/…`` (relative to out)."""
    records, truth, lists = {}, {}, {"train": [], "test": []}
    for split, source, n, seed in (("train", args.train_list, run.train_videos, args.seed),
                                   ("test", args.test_list, run.test_videos, args.seed + 1)):
        cfg = ComposeConfig(videos=n, seed=seed, target_class=args.target_class,
                            **({"segments": run.segments} if run.segments else {}))
        records[split] = compose(source, args.root, out / split, cfg, classes=args.classes,
                                 progress=show_progress(args.quiet))
        print(f"{split}: {summary(records[split])}", flush=True)
        for path, entry in json.loads((out / split / "truth.json").read_text()).items():
            truth[f"{split}/{path}"] = entry
        lists[split] = [f"{split}/{ln}" for ln in (out / split / "list.txt").read_text().splitlines()]
    for split, lines in lists.items():
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "all.txt").write_text("\n".join(lists["train"] + lists["test"]) + "\n")
    (out / "classes.txt").write_text((out / "train" / "classes.txt").read_text())
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return records


def settings_of(run: RunSettings):
    """The store's VideoSettings for this run."""
    from extract.flow import FlowConfig
    from extract.video import VideoSettings

    return VideoSettings(frames=run.frames, flow_stack=run.flow_stack, crops=run.crops, feature_maps="glimpse" in run.agents,
                         flow=FlowConfig(algorithm=run.flow, params=tuple(run.flow_params)))


def run_benchmark(args, run: RunSettings) -> dict:
    """Every stage (module docstring); returns the timings.json record."""
    from agents.head import HeadConfig
    from agents.head_stage import HeadStageConfig, run_head
    from evaluate.protocols import ProtocolConfig
    from evaluate.run import EvaluateConfig, run_evaluate
    from extract.run import ExtractConfig, run_extraction
    from pipeline.demo import train_agents

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times, t0, command = {}, time.perf_counter(), "python benchmarks/untrimmed.py" + (" --quick" if args.quick else "")

    def stage(name):
        times[name] = round(time.perf_counter() - t0 - sum(times.values()), 1)
        print(f"[{sum(times.values()):7.1f} s] {name} ({times[name]} s)", flush=True)

    records = compose_splits(args, run, out)
    stage("compose")
    store, settings = str(out / "untrimmed.zarr"), settings_of(run)
    summ = run_extraction(ExtractConfig(list_path=str(out / "all.txt"), out=store, root=str(out),
                                        classes_file=str(out / "classes.txt"), settings=settings,
                                        quiet=args.quiet, command=command))
    print(summ.text(), flush=True)
    stage("extract")
    run_head(HeadStageConfig(store=store, train_list=str(out / "train.txt"), truth=str(out / "truth.json"),
                             head=HeadConfig(epochs=run.head_epochs, seed=args.seed), quiet=args.quiet,
                             command=command))
    stage("head")
    # fresh=False: a rerun keeps the finished checkpoints of the same config and resumes the rest
    ckpts = train_agents(store, out / "train.txt", out / "agents", run.agents, dict(run.agent_overrides),
                         settings.streams, seed=args.seed, seeds=run.seeds, quiet=args.quiet, command=command,
                         stage=stage, fresh=False)
    paths = run_evaluate(EvaluateConfig(store=store, test_lists=(str(out / "test.txt"),), out=str(out / "report"),
                                        agents=tuple(ckpts), truth=str(out / "truth.json"), quiet=args.quiet,
                                        protocol=ProtocolConfig(ms=run.ms, seed=args.seed, bootstrap=run.bootstrap),
                                        command=command))
    stage("evaluate")
    meta = json.loads(Path(paths["json"]).read_text())["meta"]
    record = {"seconds": times, "total_seconds": round(sum(times.values()), 1), "settings": dataclasses.asdict(run),
              "store_settings": settings.record(), "truth": meta.get("truth"),
              "reuse": {s: r["reuse"] for s, r in records.items()}, "report": str(paths["html"])}
    (out / "timings.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"head AUC inside vs outside target segments: {meta['truth']['test']['head_auc']}")
    print(f"report: {paths['html']}")
    return record


def run_settings(args) -> RunSettings:
    """QUICK or the full defaults, with --flow, --flow-param and --crops applied."""
    from pipeline.config import parse_assignments

    run = QUICK if args.quick else RunSettings()
    change = {}
    if args.flow:
        change["flow"] = args.flow
    if args.flow_param:
        change["flow_params"] = parse_assignments(args.flow_param, "--flow-param")
    if args.crops:
        change["crops"] = args.crops
    return dataclasses.replace(run, **change)


MEASURED = (("dis", ()), ("tvl1", (("epsilon", 0.05),)))


def measure(args) -> dict:
    """Size the full run: time composing RunSettings' train + test composites, then extracting
    one test composite at T = 25, L = 5 with each flow of MEASURED and 1 or 10 crops (each a
    fresh store, one process: the seconds include loading the backbones, the summary's
    ``seconds`` the video alone). Prints a table, writes OUT/measure.json."""
    from extract.flow import FlowConfig
    from extract.run import ExtractConfig, run_extraction

    import os
    import shutil

    def cpu() -> float:          # this process and its children (ffmpeg): user + system seconds
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    out, run = Path(args.out), RunSettings()
    fresh = not (out / "test" / "compose.json").exists()
    t0, c0 = time.perf_counter(), cpu()
    compose_splits(args, run, out)
    record = {"compose": {"videos": run.train_videos + run.test_videos, "composed_now": fresh,
                          "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(cpu() - c0, 1)},
              "load_average_before": os.getloadavg(), "extract_one": []}
    one = out / "one.txt"
    one.write_text((out / "test.txt").read_text().splitlines()[0] + "\n")
    for algo, params in MEASURED:
        for crops in (1, 10):
            settings = dataclasses.replace(settings_of(RunSettings(crops=crops)),
                                           flow=FlowConfig(algorithm=algo, params=params))
            store = out / f"one-{algo}-{crops}.zarr"
            shutil.rmtree(store, ignore_errors=True)        # measured afresh, never resumed
            t1, c1 = time.perf_counter(), cpu()
            summ = run_extraction(ExtractConfig(list_path=str(one), out=str(store), root=str(out),
                                                classes_file=str(out / "classes.txt"), settings=settings, quiet=True,
                                                command="python benchmarks/untrimmed.py --measure"))
            record["extract_one"].append({"flow": algo, "params": dict(params), "crops": crops, "T": 25, "L": 5,
                                          "video_seconds": round(summ.seconds, 1),
                                          "wall_seconds": round(time.perf_counter() - t1, 1),
                                          "cpu_seconds": round(cpu() - c1, 1), "load_average": os.getloadavg(),
                                          "ok": summ.ok})
            print(record["extract_one"][-1], flush=True)
    record["num_frames"] = json.loads((out / "truth.json").read_text())[one.read_text().split()[0]]["num_frames"]
    (out / "measure.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return record


def main(argv=None):
    args = parse(argv)
    try:
        if args.compose_only:
            return compose_only(args)
        if args.measure:
            return measure(args)
        return run_benchmark(args, run_settings(args))
    except FrameselError as err:        # bad input: one line naming the file and the cause
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    import sys

    # run as `python benchmarks/untrimmed.py`, this folder heads sys.path, and its extract.py
    # would stand in for the extract package: the stages import framesel's, as installed
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    main()
