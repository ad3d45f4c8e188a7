"""Benchmark: TV-L1 pairs/s of OpenCV (CPU), torch on CPU and torch on GPU, side by side.

Real frames: consecutive pairs from the fight dataset (../shared/data/fight/videos), decoded
with the imageio-ffmpeg binary to grey 340x256 (TSN's size). For every implementation and
batch size it prints pairs/s, the ratio to OpenCV's pairs/s measured in the same run, and the
mean end-point error (px) against OpenCV's flow for the same pairs.

    python -m benchmarks.flow            # batch sizes 1 4 16 64 256, OpenCV's default params
    python -m benchmarks.flow --quick    # batch sizes 1 4, 3 scales x 2 warps: a short run

OpenCV computes one pair at a time, so its rate does not depend on the batch size; it is
timed once on ``--cv-pairs`` pairs, which also give the reference flow. EPE is averaged over
the pairs of each batch that have an OpenCV reference (the first ``--cv-pairs``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import torch

from extract.flow_torch import TVL1Params, tvl1_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIGHT = DATA / "fight" / "videos"
WIDTH, HEIGHT = 340, 256


def decode_gray(path: Path, n: int) -> np.ndarray:
    """Up to n frames of a video as (n, 256, 340) uint8."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-an",
           "-frames:v", str(n), "-vf", f"scale={WIDTH}:{HEIGHT}", "-f", "rawvideo",
           "-pix_fmt", "gray", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH)


def load_pairs(n_pairs: int, per_video: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """n_pairs consecutive-frame pairs, ``per_video`` from each fight video in name order."""
    prev, nxt = [], []
    for path in sorted(FIGHT.rglob("*.mp4")):
        frames = decode_gray(path, per_video + 1)
        prev.extend(frames[:-1])
        nxt.extend(frames[1:])
        if len(prev) >= n_pairs:
            break
    if len(prev) < n_pairs:
        raise SystemExit(f"only {len(prev)} pairs available, {n_pairs} wanted")
    return np.stack(prev[:n_pairs]), np.stack(nxt[:n_pairs])


def opencv_reference(prev, nxt, prm: TVL1Params):
    """OpenCV DualTVL1 on every pair: (flows (N, H, W, 2), pairs/s)."""
    algo = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=prm.tau, lambda_=prm.lambda_, theta=prm.theta, nscales=prm.nscales,
        warps=prm.warps, epsilon=prm.epsilon, innnerIterations=prm.inner_iterations,
        outerIterations=prm.outer_iterations, scaleStep=prm.scale_step, gamma=prm.gamma,
        medianFiltering=prm.median_filtering)
    start = time.perf_counter()
    flows = np.stack([algo.calc(a, b, None) for a, b in zip(prev, nxt)])
    return flows, len(prev) / (time.perf_counter() - start)


def time_torch(prev, nxt, prm: TVL1Params, device: torch.device):
    """torch TV-L1 on one batch: (flows (B, H, W, 2) numpy, pairs/s incl. transfers)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    a = torch.from_numpy(prev).to(device)
    b = torch.from_numpy(nxt).to(device)
    flow = tvl1_batch(a, b, prm).cpu().numpy()
    sync()
    return flow, len(prev) / (time.perf_counter() - start)


def mean_epe(flow: np.ndarray, ref: np.ndarray) -> float:
    n = min(len(flow), len(ref))
    d = flow[:n] - ref[:n]
    return float(np.hypot(d[..., 0], d[..., 1]).mean())


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run: batches 1 4, 3 scales x 2 warps")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--cpu-max-batch", type=int, default=16,
                    help="largest batch timed with torch on CPU (bigger ones take minutes)")
    ap.add_argument("--cv-pairs", type=int, default=8, help="pairs OpenCV computes (rate, EPE)")
    ap.add_argument("--nscales", type=int, default=5)
    ap.add_argument("--warps", type=int, default=5)
    ap.add_argument("--epsilon", type=float, default=0.01)
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); 1 avoids OpenMP stalls on "
                         "a loaded machine")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.nscales, args.warps, args.cv_pairs = [1, 4], 3, 2, 4
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not FIGHT.is_dir():
        print(f"fight videos not found at {FIGHT}", file=sys.stderr)
        return 1
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    prm = TVL1Params(nscales=args.nscales, warps=args.warps, epsilon=args.epsilon)
    prev, nxt = load_pairs(max(args.batches + [args.cv_pairs]))
    print(f"TV-L1 {WIDTH}x{HEIGHT} grey, fight pairs; {prm}")
    print(f"OpenCV {cv2.__version__} threads={cv2.getNumThreads()}; torch {torch.__version__} "
          f"threads={torch.get_num_threads()}; cuda={torch.cuda.is_available()}")
    ref, cv_rate = opencv_reference(prev[:args.cv_pairs], nxt[:args.cv_pairs], prm)
    rows = [("opencv", "cpu", 1, cv_rate, 0.0)]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        if dev.type == "cuda":  # warm-up: CUDA context and kernels load on first use
            time_torch(prev[:1], nxt[:1], TVL1Params(nscales=1, warps=1), dev)
        for b in args.batches:
            if dev.type == "cpu" and b > args.cpu_max_batch:
                continue
            flow, rate = time_torch(prev[:b], nxt[:b], prm, dev)
            rows.append(("torch", dev.type, b, rate, mean_epe(flow, ref)))
    print(f"\n{'impl':8s} {'device':6s} {'batch':>5s} {'pairs/s':>9s} {'x opencv':>9s} {'EPE px':>8s}")
    for impl, dev, b, rate, err in rows:
        print(f"{impl:8s} {dev:6s} {b:5d} {rate:9.3f} {rate / cv_rate:9.2f} {err:8.4f}")
    print(f"(EPE over the first min(batch, {args.cv_pairs}) pairs of each batch; "
          f"mean |flow| of the reference: {np.hypot(ref[..., 0], ref[..., 1]).mean():.2f} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
