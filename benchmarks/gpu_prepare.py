"""The data ``benchmarks/gpu_check.sh`` carries to a GPU machine (issue 31), made HERE.

``python -m benchmarks.gpu_prepare [--dir .gpu_check] [--clips 12] [--pairs 6]``:

- ``DIR/clips/``: ``--clips`` fight clips of ../shared/data/fight (spread over test.txt then
  train.txt, both classes), an mmaction2 ``list.txt`` relative to ``DIR/clips`` and
  ``classes.txt``: ../shared does not travel with a device call;
- ``DIR/tvl1_ref.npz``: ``--pairs`` consecutive grey 340x256 frame pairs of those clips
  (``prev``, ``next``: (P, 256, 340) uint8), decoded here, and OpenCV's TV-L1 flow of each at
  its default parameters (``flow``: (P, 256, 340, 2) float32), with ``opencv_version`` and
  ``params``. The GPU machine has no ``cv2.optflow``; it solves the same frames with
  tvl1-torch and measures the end-point error against these.

``DIR`` is ignored by git (.gitignore): clips are data, never committed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from extract.decode import decode, grayscale
from extract.flow import tvl1_defaults

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"
DEFAULT_DIR = Path(".gpu_check")


def pick_clips(n: int, fight: Path = FIGHT) -> list[tuple[str, int]]:
    """n (path relative to ``fight``, label) spread evenly over test.txt then train.txt."""
    lines = [ln.split() for f in ("test.txt", "train.txt") for ln in (fight / f).read_text().splitlines()]
    clips = [(ln[0], int(ln[1])) for ln in lines if ln]
    step = max(1, len(clips) // max(n, 1))
    return clips[::step][:n]


def copy_clips(out: Path, n: int, fight: Path = FIGHT) -> Path:
    """Copy n clips to ``out`` with list.txt and classes.txt; returns the list."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for rel, label in pick_clips(n, fight):
        shutil.copyfile(fight / rel, out / Path(rel).name)
        lines.append(f"{Path(rel).name} {label}\n")
    shutil.copyfile(fight / "classes.txt", out / "classes.txt")
    (out / "list.txt").write_text("".join(lines))
    return out / "list.txt"


def reference_pairs(clips: Path, n_pairs: int, per_clip: int = 2):
    """(prev, next) (P, 256, 340) uint8: ``per_clip`` consecutive pairs from the middle of
    each listed clip, in list order, until ``n_pairs``."""
    prev, nxt = [], []
    for line in (clips / "list.txt").read_text().splitlines():
        gray = grayscale(decode(clips / line.split()[0]).frames)
        mid = len(gray) // 2
        for k in range(mid, min(mid + per_clip, len(gray) - 1)):
            prev.append(gray[k])
            nxt.append(gray[k + 1])
        if len(prev) >= n_pairs:
            break
    return np.stack(prev[:n_pairs]), np.stack(nxt[:n_pairs])


def opencv_flows(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """OpenCV's DualTVL1 at its defaults on every pair: (P, H, W, 2) float32."""
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    return np.stack([algo.calc(a, b, None) for a, b in zip(prev, nxt)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--no-flow", action="store_true",
                    help="frames only, no OpenCV flow (gpu_check --cpu computes its own, smaller reference)")
    args = ap.parse_args(argv)
    if not FIGHT.is_dir():
        print(f"fight clips not found at {FIGHT}", file=sys.stderr)
        return 1
    lst = copy_clips(args.dir / "clips", args.clips)
    t = time.perf_counter()
    prev, nxt = reference_pairs(lst.parent, args.pairs)
    flow = np.zeros((0,), np.float32) if args.no_flow else opencv_flows(prev, nxt)
    np.savez_compressed(args.dir / "tvl1_ref.npz", prev=prev, next=nxt, flow=flow,
                        opencv_version=cv2.__version__, params=str(tvl1_defaults()))
    sizes = {p.name: p.stat().st_size for p in args.dir.rglob("*") if p.is_file()}
    print(f"{len(sizes) - 3} clips + list + classes in {args.dir / 'clips'}; {len(prev)} OpenCV TV-L1 pairs "
          f"in {time.perf_counter() - t:.0f} s; total {sum(sizes.values()) / 2**20:.1f} MiB "
          f"(tvl1_ref.npz {sizes['tvl1_ref.npz'] / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
