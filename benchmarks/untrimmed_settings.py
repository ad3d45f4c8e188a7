"""Which extraction settings raise the head's per-position AUC on untrimmed composites (issue 27).

The full run (benchmarks/untrimmed.py) extracts with DIS flow, 1 centre crop, EfficientNet-Lite0.
Here each candidate setting gets a small store of its own, the same composites for every
setting: the first ``--train`` train composites (the head's training videos: ``head --truth``,
per position on segment classes, then frozen) and the first ``--test`` test composites (the
AUC of the target-class margin inside vs outside target segments, evaluate/keys.head_auc, per
stream and fused). The head learns from fewer composites than the full run's 80, so the AUCs
here compare settings with one another, not with the full run's.

    python benchmarks/untrimmed.py --out /tmp/untrimmed-full          # composes the composites first
    python benchmarks/untrimmed_settings.py --run /tmp/untrimmed-full --out /tmp/untrimmed-settings \\
        [--train 12] [--test 10] [--only dis-1-lite0,tvl1-1-lite0]

``--head-epochs-grid`` instead retrains the full run's head in memory at 5, 10, 20 and 60 epochs
(the 80 train composites) and measures each on the 40 test composites (OUT/head_epochs.json).

Writes OUT/<setting>.zarr and OUT/settings.json (per setting: AUC per stream, extraction wall
and CPU seconds, the store's settings); a rerun resumes the stores and retrains nothing twice
(the head reuses its recorded weights).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# name -> (flow, flow params, crops, backbone)
SETTINGS = {
    "dis-1-lite0": ("dis", (), 1, "efficientnet_lite0"),
    "tvl1-1-lite0": ("tvl1", (("epsilon", 0.05),), 1, "efficientnet_lite0"),
    "dis-1-lite2": ("dis", (), 1, "efficientnet_lite2"),
    "dis-1-lite1": ("dis", (), 1, "efficientnet_lite1"),
    "dis-10-lite0": ("dis", (), 10, "efficientnet_lite0"),
}


def cpu() -> float:
    """User + system CPU seconds of this process and its children (ffmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def subset_lists(run: Path, out: Path, n_train: int, n_test: int) -> tuple[Path, Path, Path]:
    """OUT/sub_train.txt, OUT/sub_test.txt, OUT/sub_all.txt: the first lines of the run's lists
    (the composer alternates positive and negative, so each half is balanced)."""
    paths = []
    for split, n in (("train", n_train), ("test", n_test)):
        lines = (run / f"{split}.txt").read_text().splitlines()[:n]
        paths.append(out / f"sub_{split}.txt")
        paths[-1].write_text("\n".join(lines) + "\n")
    paths.append(out / "sub_all.txt")
    paths[-1].write_text(paths[0].read_text() + paths[1].read_text())
    return paths[0], paths[1], paths[2]


def head_auc_of(store_path: str, test_list: Path, truth: Path) -> dict:
    """stream -> the frozen head's AUC on the test subset (evaluate/keys.head_auc)."""
    from agents.from_store import load_states, rows_for_list
    from data.lists import read_list
    from data.store import open_store
    from evaluate import keys

    with open_store(store_path) as store:
        rows = rows_for_list(store, read_list(str(test_list)))
        states = {s: load_states(store, s, rows) for s in store.streams}
        key = keys.load_truth(store, rows, str(truth))["key"]
        return {s: (None if v is None else round(float(v), 4)) for s, v in keys.head_auc(states, key).items()}


def head_epochs_grid(store_path: str, train_list: Path, test_list: Path, truth: Path, epochs=(5, 10, 20, 60)) -> list:
    """The head's test AUC (per stream and fused) by training epochs on one store's features:
    trained in memory as ``head --truth`` trains it (the store is not written)."""
    from agents.from_store import rows_for_list
    from agents.head import HeadConfig, apply_head, train_head
    from data.lists import read_list
    from data.store import open_store
    from data.truth import position_labels, read_truth
    from evaluate import keys, metrics

    out = []
    with open_store(store_path) as store:
        tr, te = (rows_for_list(store, read_list(str(p))) for p in (train_list, test_list))
        classes = store.attrs.get("classes", [])
        labels = position_labels(read_truth(truth), [store.paths[i] for i in tr], classes,
                                 store.read_rows("frame_index", tr), store.read_rows("videos/num_frames", tr))
        key = keys.load_truth(store, te, str(truth))["key"]
        feats = {s: (store.read_rows(f"{s}/features", tr), store.read_rows(f"{s}/features", te)) for s in store.streams}
        video_labels = store.labels[te]
    for n in epochs:
        logits = {}
        for s, (a, b) in feats.items():
            head, _ = train_head(a, labels, len(classes), HeadConfig(epochs=n, seed=0), per_position=True)
            logits[s] = apply_head(head, b).astype(np.float64).mean(axis=2)
        logits["fused"] = sum(w * logits[s] for s, w in keys.TSN_FUSION) / sum(w for _, w in keys.TSN_FUSION)
        auc = {}
        for s, x in logits.items():
            margin, where = keys.target_margin(x, key, video_labels)
            auc[s] = round(float(metrics.position_auc(margin[where], key[where])), 4)
        out.append({"head_epochs": n, "head_auc": auc})
        print(json.dumps(out[-1]), flush=True)
    return out


def one_setting(name: str, run: Path, out: Path, lists, head_epochs: int, quiet: bool) -> dict:
    """Extract the subset at setting ``name``, train the head on its train half, measure the AUC."""
    from agents.head import HeadConfig
    from agents.head_stage import HeadStageConfig, run_head
    from extract.flow import FlowConfig
    from extract.run import ExtractConfig, run_extraction
    from extract.video import VideoSettings

    flow, params, crops, backbone = SETTINGS[name]
    settings = VideoSettings(frames=25, flow_stack=5, crops=crops, backbone=backbone,
                             flow=FlowConfig(algorithm=flow, params=params))
    store, command = str(out / f"{name}.zarr"), "python benchmarks/untrimmed_settings.py"
    t0, c0 = time.perf_counter(), cpu()
    summ = run_extraction(ExtractConfig(list_path=str(lists[2]), out=store, root=str(run),
                                        classes_file=str(run / "classes.txt"), settings=settings,
                                        quiet=quiet, command=command))
    wall, cpus = time.perf_counter() - t0, cpu() - c0
    run_head(HeadStageConfig(store=store, train_list=str(lists[0]), truth=str(run / "truth.json"),
                             head=HeadConfig(epochs=head_epochs, seed=0), quiet=quiet, command=command))
    return {"setting": name, "flow": flow, "flow_params": dict(params), "crops": crops, "backbone": backbone,
            "videos_ok": summ.ok, "extract_wall_seconds": round(wall, 1), "extract_cpu_seconds": round(cpus, 1),
            "head_auc": head_auc_of(store, lists[1], run / "truth.json"), "load_average": os.getloadavg()}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the full run's folder (train.txt, test.txt, truth.json)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=12, help="train composites the head learns from")
    ap.add_argument("--test", type=int, default=10, help="test composites the AUC is measured on")
    ap.add_argument("--only", default=",".join(SETTINGS), help="comma-separated settings, in this order")
    ap.add_argument("--head-epochs", type=int, default=60, help="as the full run's head")
    ap.add_argument("--head-epochs-grid", action="store_true",
                    help="instead: the full run's store, its head retrained in memory at 5/10/20/60 epochs "
                         "(train composites -> AUC on the test composites; OUT/head_epochs.json)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    if args.head_epochs_grid:
        out.mkdir(parents=True, exist_ok=True)
        grid = head_epochs_grid(str(run / "untrimmed.zarr"), run / "train.txt", run / "test.txt", run / "truth.json")
        (out / "head_epochs.json").write_text(json.dumps(grid, indent=1))
        return grid
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not (run / "truth.json").exists():
        raise SystemExit(f"error: unknown setting {unknown}" if unknown else f"error: {run}/truth.json: missing "
                         "(run benchmarks/untrimmed.py --out RUN first)")
    out.mkdir(parents=True, exist_ok=True)
    lists = subset_lists(run, out, args.train, args.test)
    done = json.loads((out / "settings.json").read_text()) if (out / "settings.json").exists() else []
    for name in names:
        done = [r for r in done if r["setting"] != name] + [one_setting(name, run, out, lists, args.head_epochs,
                                                                         args.quiet)]
        (out / "settings.json").write_text(json.dumps(done, indent=1))
        print(json.dumps(done[-1]), flush=True)
    return done


if __name__ == "__main__":
    import sys

    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)       # benchmarks/extract.py would shadow the extract package
    main()
