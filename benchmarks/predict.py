"""`framesel predict` against full extraction on new videos, side by side in one run (issue 28).

A training store of real fight clips (--train-videos of ../shared/data/fight/train.txt, both
classes alternating) at T = 10, L = 5, one centre crop, rgb + flow, TV-L1 at OpenCV's
defaults; its head; an ``as`` agent on rgb and a ``dsn`` on flow observing rgb, the better
of the two by select_classify top-1 at m = 3 on the training videos being "the agent".
Then, on --test-videos new clips of test.txt, clip by clip, the three runs interleaved (their
order rotated from clip to clip, so that the shared machine's changing load falls on all
three alike), in this process:

- **full**: ``run_extraction`` of the clip into a new store (decode, TV-L1 on every pair
  of the T stacks and its pricing, both backbones at every position, the store write) and
  classification of all T positions by the training store's heads, TSN-fused; its seconds
  per video are its measured stages (``cost/seconds``) and its share of the classification,
  and the ratio is also given without the flow pricing (which predict skips);
- **uniform m**: ``Predictor(store, "uniform", m)`` on every clip;
- **agent m**: ``Predictor(store, agent, m)`` on every clip.

Prints one table: seconds per video (mean; each run's set-up — models, store — left out),
the split into decode, cheap pass (full: its rgb backbone), agent (full: the classification),
flow, flow pricing, backbone (full: the flow backbone), the ratio to full,
top-1 on the clips, flow fields per video; then the ratio the measured unit costs give at
other m (T/m) and the share that does not shrink with m.

    python -m benchmarks.predict --out /tmp/framesel-predict --threads 1   # ~20 min on 2 shared cores
    python -m benchmarks.predict --per-field videos/fight/fi007.mp4 --threads 1   # TV-L1 per field
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"


FLOW = {"algorithm": "tvl1"}      # OpenCV's defaults; --flow farneback only to try the script quickly
THREADS = {"n": 0}                # torch and OpenCV threads (0: the cores)


def settings():
    from extract.flow import FlowConfig
    from extract.video import VideoSettings

    return VideoSettings(frames=10, flow_stack=5, crops=1, thumbnail_size=None, flow=FlowConfig(**FLOW))


def pick(list_file: Path, n: int) -> list[str]:
    """n lines of a fight list, the classes alternating (fight, noFight, ...)."""
    lines = [x for x in list_file.read_text().splitlines() if x.strip()]
    by = {c: [x for x in lines if x.split()[-1] == c] for c in ("1", "0")}
    out = [x for pair in zip(by["1"], by["0"]) for x in pair]
    return out[:n]


def build_training(out: Path, n: int) -> tuple[str, Path, dict]:
    """The training store, its head and the two agents; returns (store, list, {name: checkpoint})."""
    from agents.head import HeadConfig
    from agents.head_stage import HeadStageConfig, run_head
    from agents.train_stage import TrainStageConfig, run_train
    from extract.run import ExtractConfig, run_extraction

    lst = out / "train.txt"
    lst.write_text("\n".join(pick(FIGHT / "train.txt", n)) + "\n")
    store = str(out / "train.zarr")
    t0 = time.perf_counter()
    summary = run_extraction(ExtractConfig(list_path=str(lst), out=store, root=str(FIGHT), settings=settings(),
                                           classes_file=str(FIGHT / "classes.txt"), quiet=True,
                                           threads=THREADS["n"], command="python -m benchmarks.predict"))
    print(summary.text(), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    run_head(HeadStageConfig(store=store, train_list=str(lst), head=HeadConfig(epochs=60), quiet=True))
    agents = {}
    for name, stream, observer, sets in (("as", "rgb", None, (("m", 3), ("lr", 1e-4), ("epochs", 15))),
                                         ("dsn", "flow", "rgb", (("sections", 3), ("clips_per_section", 3),
                                                                 ("epochs", 40), ("batch_size", 16)))):
        path = out / f"{name}.pt"
        path.unlink(missing_ok=True)
        run_train(TrainStageConfig(store=store, agent=name, train_list=str(lst), out=str(path), stream=stream,
                                   observer=observer, overrides=sets, quiet=True))
        agents[name] = path
    return store, lst, agents


def best_agent(store: str, lst: Path, agents: dict, m: int) -> tuple[str, dict]:
    """The agent with the best select_classify top-1 at m on the training videos."""
    from agents.base import load_agent
    from agents.from_store import load_states, rows_for_list
    from data.lists import read_list
    from data.store import open_store
    from evaluate.protocols import ProtocolConfig, build_methods, run_protocols
    from evaluate.run import attach_observers

    with open_store(store) as st:
        rows = rows_for_list(st, read_list(lst))
        states = {s: load_states(st, s, rows) for s in st.streams}
        methods = attach_observers(st, rows, states, build_methods(["uniform"], [load_agent(p) for p in agents.values()],
                                                                   list(states)))
        got = run_protocols(states, methods, config=ProtocolConfig(ms=(m,), protocols=("select_classify",),
                                                                    bootstrap=100))
    top = {r["method"].split("[")[0]: r["top1"] for r in got if r["learned"]}
    best = max(top, key=top.get)
    return best, top


def full_one(out: Path, line: str, i: int, heads: dict) -> dict:
    """Full extraction of one clip into a store of its own + classification of all T
    positions by the training store's ``heads``, TSN-fused. Seconds: its measured stages
    (``cost/seconds``: what predict's per-video seconds also count) and the classification;
    the models' and the store's set-up are left out, as predict's are."""
    import shutil

    import torch

    from agents.base import States
    from agents.head import apply_head
    from data.store import open_store
    from evaluate.methods import baseline_method
    from evaluate.select_classify import classify_kept, decide
    from extract.run import ExtractConfig, run_extraction

    lst, store = out / f"full-{i}.txt", out / f"full-{i}.zarr"
    lst.write_text(line + "\n")
    if store.exists():
        shutil.rmtree(store)
    summary = run_extraction(ExtractConfig(list_path=str(lst), out=str(store), root=str(FIGHT), settings=settings(),
                                           classes_file=str(FIGHT / "classes.txt"), quiet=True,
                                           threads=THREADS["n"]))
    if not summary.ok:
        raise SystemExit(summary.text())
    with open_store(store) as st:
        feats = {s: st.read_rows(f"{s}/features", [0]) for s in st.streams}
        t0 = time.perf_counter()
        states = {s: States(features=torch.from_numpy(f.astype(np.float32)),
                            logits=torch.from_numpy(apply_head(heads[s], f)),
                            labels=torch.zeros(1, dtype=torch.int64)) for s, f in feats.items()}
        pred, _ = decide(classify_kept(baseline_method("uniform", list(states)), states,
                                       torch.ones(1, st.T, dtype=torch.bool))[0])
        classify = time.perf_counter() - t0
        stages = dict(zip(st.layout().cost_stages, st.read_rows("cost/seconds", [0])[0].tolist()))
        fields = int(st.read_rows("cost/flow_fields", [0])[0])
        label = int(st.labels[0])
    split = {"decode": stages["decode"], "cheap": stages.get("backbone:rgb", 0.0), "agent": classify,
             "flow": stages["flow"], "backbone": stages.get("backbone:flow", 0.0)}
    return {"seconds": sum(stages.values()) + classify, "stages": split, "pricing": stages["flow_cost"],
            "flow_fields": fields, "hit": int(pred[0]) == label}


def compare(out: Path, lines: list[str], store: str, agent: str, m: int) -> dict:
    """The three runs on every clip, interleaved clip by clip (the order rotated from clip to
    clip), so a change in the shared machine's load falls on all three alike."""
    from agents.head import stored_head
    from data.store import open_store
    from pipeline.predict import STAGES, Predictor

    with open_store(store) as tr:
        heads = {s: stored_head(tr, s) for s in tr.streams}
    setup, predictors = {}, {}
    for key, spec in (("uniform", "uniform"), ("agent", agent)):
        t0 = time.perf_counter()
        predictors[key] = Predictor(store, spec, m)
        setup[key] = time.perf_counter() - t0
    runs: dict = {"full": [], "uniform": [], "agent": []}
    for i, line in enumerate(lines):
        keys = list(runs)[i % 3:] + list(runs)[:i % 3]
        for key in keys:
            if key == "full":
                runs[key].append(full_one(out, line, i, heads))
                continue
            pr = predictors[key]
            r = pr.video(str(FIGHT / line.split()[0]))
            runs[key].append({"seconds": r["seconds"], "stages": r["stages"], "pricing": 0.0,
                              "flow_fields": r["flow_fields"],
                              "hit": pr.classes.index(r["predicted"]) == int(line.split()[-1])})
        print(f"clip {i + 1}/{len(lines)} {line.split()[0]}: " + ", ".join(
            f"{k} {runs[k][-1]['seconds']:.1f} s" for k in runs), flush=True)
    res = {}
    for key, rs in runs.items():
        res[key] = {"seconds": float(np.mean([r["seconds"] for r in rs])),
                    "stages": {k: float(np.mean([r["stages"][k] for r in rs])) for k in STAGES},
                    "pricing": float(np.mean([r["pricing"] for r in rs])),
                    "flow_fields": float(np.mean([r["flow_fields"] for r in rs])),
                    "top1": float(np.mean([r["hit"] for r in rs])), "videos": len(rs),
                    "per_clip_seconds": [round(r["seconds"], 2) for r in rs], "setup": setup.get(key)}
    return res


def per_field(clip: str, m: int) -> None:
    """TV-L1 (the benchmark's flow) on every distinct pair of ``clip``'s T stacks, one pair at a
    time and as one batch, against the pairs of uniform's m stacks: does a kept field cost what
    an average one does?"""
    import torch

    from agents.baselines import evenly_spaced
    from extract.device import grayscale
    from extract.flow import FlowConfig, solve_pairs
    from extract.prepare import PrepareSettings, prepare_video

    s = settings()
    p = prepare_video(str(FIGHT / clip), PrepareSettings.of(s))
    g, cfg = grayscale(torch.from_numpy(p.frames)), FlowConfig(**FLOW)
    one = []
    for a, b in p.pairs:
        t0 = time.perf_counter()
        solve_pairs(g[[a]], g[[b]], cfg)
        one.append(time.perf_counter() - t0)
    kept = np.unique(p.pair_slot[evenly_spaced(s.frames, m).numpy()])
    batch = {}
    for name, idx in (("all", np.arange(len(p.pairs))), ("kept", kept)):
        t0 = time.perf_counter()
        solve_pairs(g[p.pairs[idx, 0]], g[p.pairs[idx, 1]], cfg)
        batch[name] = (time.perf_counter() - t0) / len(idx)
    print(f"{clip}: {len(one)} distinct pairs, {len(kept)} kept by uniform m = {m}; one at a time "
          f"{np.mean(one):.3f} s a field (kept {np.mean(np.asarray(one)[kept]):.3f}); one batch "
          f"{batch['all']:.3f} s a field (kept {batch['kept']:.3f})")


def scaling(res: dict, T: int) -> list[tuple]:
    """Ratio full / predict at each m from the measured per-video stages: flow and the flow
    backbone scale with the kept positions (m/T of full's), decode, cheap pass and agent do not."""
    f, p = res["full"], res["agent"]
    fixed = p["stages"]["decode"] + p["stages"]["cheap"] + p["stages"]["agent"]
    per_pos = (f["stages"]["flow"] + f["stages"]["backbone"]) / T
    total = sum(f["stages"].values())          # full without its flow pricing (predict has none)
    return [(m, total / (fixed + m * per_pos), fixed / (fixed + m * per_pos)) for m in (1, 2, 3, 5, T)] \
        + [("cap (m -> 0)", total / fixed, 1.0)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/framesel-predict")
    ap.add_argument("--train-videos", type=int, default=10)
    ap.add_argument("--test-videos", type=int, default=6)
    ap.add_argument("--m", type=int, default=3)
    ap.add_argument("--flow", default="tvl1", help="tvl1 (the benchmark); farneback only to try the script")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and OpenCV threads for every run (0: the cores). On a shared machine 1 "
                         "avoids OpenMP's spinning threads (2 threads at load 10 made a 3-crop batch 20x slower)")
    ap.add_argument("--keep-training", action="store_true",
                    help="reuse --out's training store and agents (setup only: the compared runs are redone)")
    ap.add_argument("--per-field", metavar="CLIP", default=None,
                    help="only time TV-L1 per field on CLIP (e.g. videos/fight/fi007.mp4): all its pairs vs "
                         "uniform's kept ones")
    args = ap.parse_args()
    FLOW["algorithm"], THREADS["n"] = args.flow, args.threads
    if not FIGHT.exists():
        raise SystemExit(f"{FIGHT} is absent: this benchmark needs ../shared/data beside the checkout")
    import cv2
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cv2.setNumThreads(args.threads or os.cpu_count() or 1)
    if args.per_field:
        per_field(args.per_field, args.m)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import shutil

    for old in () if args.keep_training else ("train.zarr",):
        if (out / old).exists():
            shutil.rmtree(out / old)
    if args.keep_training and (out / "train.zarr").exists():      # setup, not part of the comparison
        store, lst, agents = str(out / "train.zarr"), out / "train.txt", {n: out / f"{n}.pt" for n in ("as", "dsn")}
    else:
        store, lst, agents = build_training(out, args.train_videos)
    best, tops = best_agent(store, lst, agents, args.m)
    print(f"agents' select_classify top-1 at m = {args.m} on the training clips: {tops}; using {best}", flush=True)
    lines = pick(FIGHT / "test.txt", args.test_videos)
    (out / "test.txt").write_text("\n".join(lines) + "\n")
    res = compare(out, lines, store, str(agents[best]), args.m)
    res["agent_name"], res["cores"], res["threads"] = best, os.cpu_count(), args.threads or os.cpu_count()
    res["load_average"] = os.getloadavg()
    print_table(res, args.m)
    (out / "result.json").write_text(json.dumps(res, indent=1, default=float))


def print_table(res: dict, m: int) -> None:
    base = res["full"]["seconds"]
    print("\n| run | s/video | decode | cheap pass | agent | flow | flow pricing | backbone | x less than full "
          "(without full's pricing) | top-1 (videos) | flow fields |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    unpriced = base - res["full"]["pricing"]
    for key, name in (("full", "full extraction + all T"), ("uniform", f"predict uniform, m = {m}"),
                      ("agent", f"predict {res['agent_name']}, m = {m}")):
        r = res[key]
        st = r["stages"]
        print(f"| {name} | {r['seconds']:.2f} | " + " | ".join(f"{st[k]:.2f}" for k in ("decode", "cheap", "agent", "flow"))
              + f" | {r['pricing']:.2f} | {st['backbone']:.2f} | {base / r['seconds']:.2f} "
              f"({unpriced / (r['seconds'] - r['pricing']):.2f}) | {100 * r['top1']:.0f} % ({r['videos']}) "
              f"| {r['flow_fields']:.1f} |")
    print("\n| m of T = 10 | modelled ratio full / predict | share that does not shrink with m |")
    print("|---|---|---|")
    for mm, ratio, share in scaling(res, 10):
        print(f"| {mm} | {ratio:.2f} | {100 * share:.0f} % |")


if __name__ == "__main__":
    main()
