"""Benchmark: TV-L1 pairs/s of OpenCV (CPU), torch on CPU and torch on GPU, side by side,
and how closely the torch flow agrees with OpenCV's on real frames.

Real frames: consecutive pairs from the fight dataset (../shared/data/fight/videos), decoded
with the imageio-ffmpeg binary to grey 340x256 (TSN's size). For every implementation and
batch size it prints pairs/s, the ratio to OpenCV's pairs/s measured in the same run, and the
mean end-point error (px) against OpenCV's flow for the same pairs.

Agreement (``--agreement``, on by default): pairs at 1/4, 1/2 and 3/4 of every decoder
fixture (../shared/data/fixtures) and of every 10th fight clip, OpenCV's default parameters.
For each pair it prints the mean end-point error of torch against OpenCV and, as the floor no
other implementation can beat, OpenCV against itself when its input is perturbed by uniform
noise of +-0.01 grey level (OpenCV takes float input in [0, 1]; the noise is far below the
uint8 step): where TV-L1 is ill-conditioned (large motion, occlusion) the flow moves by tenths
of a pixel under that perturbation, whoever computes it.

    python -m benchmarks.flow            # batch sizes 1 4 16 64 256, OpenCV's default params
    python -m benchmarks.flow --quick    # batch sizes 1 4, 3 scales x 2 warps, 6 agreement pairs

OpenCV computes one pair at a time, so its rate does not depend on the batch size; it is
timed once on ``--cv-pairs`` pairs, which also give the reference flow. EPE is averaged over
the pairs of each batch that have an OpenCV reference (the first ``--cv-pairs``).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from extract.flow_torch import TVL1Params, tvl1_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIGHT = DATA / "fight" / "videos"
FIXTURES = DATA / "fixtures"
WIDTH, HEIGHT = 340, 256


def decode_gray(path: Path, n: int, start: int = 0) -> np.ndarray:
    """Up to n frames of a video from frame ``start`` on, as (n, 256, 340) uint8."""
    import imageio_ffmpeg  # here only: benchmarks.gpu_check imports this module where it is missing

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-an",
           "-vf", f"select=gte(n\\,{start}),scale={WIDTH}:{HEIGHT}", "-fps_mode", "passthrough",
           "-frames:v", str(n), "-f", "rawvideo", "-pix_fmt", "gray", "-"]
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


def agreement_pairs(quick: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, frame k, frame k+1) at 1/4, 1/2, 3/4 of each fixture and of the first 40 frames
    of every 10th fight clip (each distinct k once; pairs past a clip's end are skipped)."""
    out = []
    with open(FIXTURES / "MANIFEST.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    clips = [(FIXTURES / m["file"], int(m["decoded_frames"])) for m in manifest]
    clips += [(p, 40) for p in sorted(FIGHT.rglob("*.mp4"))[::10]]
    for path, n in clips[:3] + clips[-3:] if quick else clips:
        for k in sorted({min(int(q * n), n - 2) for q in ((0.5,) if quick else (0.25, 0.5, 0.75))}):
            frames = decode_gray(path, 2, start=k)
            if len(frames) == 2:
                out.append((f"{path.parent.name}/{path.name}@{k}", frames[0], frames[1]))
    return out


def perturbed_opencv(algo, a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """OpenCV's flow for a, b plus uniform noise of +-0.01 grey level (float input in [0, 1])."""
    rng = np.random.default_rng(seed)
    fa, fb = ((x + rng.uniform(-0.01, 0.01, x.shape)) / 255.0 for x in (a, b))
    return algo.calc(fa.astype(np.float32), fb.astype(np.float32), None)


def agreement(pairs, devices, batch: int = 8) -> list[dict]:
    """Per pair: mean |flow| of OpenCV, EPE of torch (per device) and of perturbed OpenCV."""
    prm = TVL1Params()
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    rows = []
    prev = np.stack([a for _, a, _ in pairs])
    nxt = np.stack([b for _, _, b in pairs])
    ours = {}
    for dev in devices:
        flows = [time_torch(prev[s:s + batch], nxt[s:s + batch], prm, dev)[0]
                 for s in range(0, len(pairs), batch)]
        ours[dev.type] = np.concatenate(flows)
    for i, (label, a, b) in enumerate(pairs):
        ref = algo.calc(a, b, None)
        row = {"pair": label, "motion": float(np.hypot(ref[..., 0], ref[..., 1]).mean()),
               "floor": mean_epe(perturbed_opencv(algo, a, b, seed=i), ref)}
        row.update({f"torch_{d}": mean_epe(f[i:i + 1], ref[None]) for d, f in ours.items()})
        rows.append(row)
    return rows


def print_agreement(rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k.startswith("torch_")]
    print("\nAgreement with OpenCV DualTVL1 (defaults), mean end-point error in px; floor = "
          "OpenCV vs OpenCV with +-0.01 grey-level input noise")
    print(f"{'pairs':10s} {'n':>3s} {'|flow|':>7s} " + " ".join(f"{k + ' mean':>16s} {'max':>7s}" for k in keys)
          + f" {'floor mean':>10s} {'max':>7s}")
    groups = {"fixtures": [r for r in rows if r["pair"].startswith("fixtures/")],
              "fight": [r for r in rows if not r["pair"].startswith("fixtures/")]}
    for name, sel in groups.items():
        if not sel:
            continue
        cells = " ".join(f"{np.mean([r[k] for r in sel]):16.4f} {max(r[k] for r in sel):7.4f}" for k in keys)
        print(f"{name:10s} {len(sel):3d} {np.mean([r['motion'] for r in sel]):7.2f} {cells} "
              f"{np.mean([r['floor'] for r in sel]):10.4f} {max(r['floor'] for r in sel):7.4f}")
    worst = [r for r in rows if max(r[k] for k in keys) > 0.05]
    for r in worst:
        print(f"  > 0.05 px: {r['pair']}: |flow| {r['motion']:.2f} px, "
              + ", ".join(f"{k} {r[k]:.4f}" for k in keys) + f", floor {r['floor']:.4f}")


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


def time_torch(prev, nxt, prm: TVL1Params, device: torch.device, compile: bool = False):
    """torch TV-L1 on one batch: (flows (B, H, W, 2) numpy, pairs/s incl. transfers)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    a = torch.from_numpy(prev).to(device)
    b = torch.from_numpy(nxt).to(device)
    flow = tvl1_batch(a, b, prm, compile=compile).cpu().numpy()
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
    ap.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                    help="measure pairs/s per implementation and batch size")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction,
                    default=bool(shutil.which("c++") or torch.cuda.is_available()),
                    help="also time torch.compile'd steps (default: when a C++ compiler or CUDA is there)")
    ap.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure EPE against OpenCV on fixture and fight frames")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default); 1 avoids OpenMP stalls on "
                         "a loaded machine")
    args = ap.parse_args(argv)
    if args.quick:
        args.batches, args.nscales, args.warps, args.cv_pairs = [1, 4], 3, 2, 4
    return args


def speed(args, devices) -> None:
    """pairs/s and EPE per implementation and batch size on consecutive fight pairs."""
    prm = TVL1Params(nscales=args.nscales, warps=args.warps, epsilon=args.epsilon)
    prev, nxt = load_pairs(max(args.batches + [args.cv_pairs]))
    print(f"TV-L1 {WIDTH}x{HEIGHT} grey, fight pairs; {prm}")
    ref, cv_rate = opencv_reference(prev[:args.cv_pairs], nxt[:args.cv_pairs], prm)
    rows = [("opencv", "cpu", 1, cv_rate, 0.0)]
    modes = [False] + ([True] if args.compile else [])
    for dev, compile in ((d, c) for d in devices for c in modes):
        if dev.type == "cuda":  # warm-up: CUDA context and kernels load on first use
            time_torch(prev[:1], nxt[:1], TVL1Params(nscales=1, warps=1), dev)
        for b in args.batches:
            if dev.type == "cpu" and b > args.cpu_max_batch:
                continue
            if compile:  # untimed first call: compiles for this batch's shapes
                time_torch(prev[:b], nxt[:b], prm, dev, compile)
            flow, rate = time_torch(prev[:b], nxt[:b], prm, dev, compile)
            rows.append(("torch+c" if compile else "torch", dev.type, b, rate, mean_epe(flow, ref)))
    print(f"\n{'impl':8s} {'device':6s} {'batch':>5s} {'pairs/s':>9s} {'x opencv':>9s} {'EPE px':>8s}")
    for impl, dev, b, rate, err in rows:
        print(f"{impl:8s} {dev:6s} {b:5d} {rate:9.3f} {rate / cv_rate:9.2f} {err:8.4f}")
    print("(torch+c: the primal-dual step through torch.compile, timed after a compiling call)")
    print(f"(EPE over the first min(batch, {args.cv_pairs}) pairs of each batch; "
          f"mean |flow| of the reference: {np.hypot(ref[..., 0], ref[..., 1]).mean():.2f} px)")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not FIGHT.is_dir():
        print(f"fight videos not found at {FIGHT}", file=sys.stderr)
        return 1
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    print(f"OpenCV {cv2.__version__} threads={cv2.getNumThreads()}; torch {torch.__version__} "
          f"threads={torch.get_num_threads()}; cuda={torch.cuda.is_available()}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if args.speed:
        speed(args, devices)
    if args.agreement:
        print_agreement(agreement(agreement_pairs(args.quick), devices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
