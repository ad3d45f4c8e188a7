"""Extraction throughput on real videos, and framesel's sparse flow vs the denseflow way.

Measured side by side in one run, on the real fight dataset (../shared/data/fight) and the
long 1394-frame fixture:
- decode frames/s (ffmpeg through a pipe at 340x256),
- flow pairs/s (TV-L1 with OpenCV's default parameters),
- backbone frames/s (EfficientNet-Lite0, batch 16),
- seconds per video with the default settings (T=25, L=5, 10 crops, TV-L1 defaults),
- sparse vs dense flow: framesel computes each distinct pair of the T·L it samples; the
  denseflow way computes all n-1 pairs of every video. Same frames, same algorithm, both
  timed here; the ratio is the time the dense way takes over framesel's.

Device sections (benchmarks/extract_gpu.py, issue 14), on ``--device cpu|cuda``: TV-L1
pairs/s by batch size (eager, compiled) with EPE against OpenCV, backbone frames/s by batch,
run_extraction videos/s (sequential, device pipeline, whole-video workers on a CPU) with the
device-busy fraction and store equality, a time breakdown of one device run, and flow-stream
feature agreement (torch vs OpenCV TV-L1, beside OpenCV on perturbed input).

    python -m benchmarks.extract                    # from the repo root; ~20-25 min on 2 cores
    python -m benchmarks.extract --quick            # ~6-8 min on 2 cores
    python -m benchmarks.extract --device cuda      # ~5-6 min on one H100 (--budget-s caps it)
    python -m benchmarks.extract --device cuda --only tvl1,pipeline
    python -m benchmarks.extract --only cost        # issue 25: what recording flow's cost costs

Sections: rates, sparse (the CPU measurements above; by default on cpu only), tvl1, backbone,
pipeline, breakdown, features; cost (benchmarks/extract_cost.py: the counting overhead of
tvl1-torch, A/B, and the per-video cost records of each flow algorithm; only with --only).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import extract_cost, extract_gpu as gpu
from extract import backbones, decode, flow, sampling
from extract.prepare import flow_pairs
from extract.video import Models, VideoSettings, extract_video

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def fight_videos(n: int) -> list[Path]:
    lines = (DATA / "fight" / "test.txt").read_text().split("\n")
    paths = [DATA / "fight" / ln.split()[0] for ln in lines if ln.strip()]
    step = max(1, len(paths) // n)
    return paths[::step][:n]


def bench_decode(paths):
    frames = secs = 0
    for p in paths:
        v, s = timed(decode.decode, p)
        frames, secs = frames + len(v.frames), secs + s
    return frames / secs, frames


def bench_backbone(n=64):
    bb = backbones.create_backbone("efficientnet_lite0")
    runner = backbones.BackboneRunner(bb, batch_size=16)
    x = np.random.default_rng(0).integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)
    runner(x[:16])                                       # warm-up
    _, s = timed(runner, x)
    return n / s


def sparse_vs_dense(paths, cfg: flow.FlowConfig, T=25, L=5, max_dense=None):
    """Per video: framesel's distinct sampled pairs vs every pair, both computed and timed."""
    rows = []
    for p in paths:
        v = decode.decode(p)
        n = len(v.frames)
        gray = decode.grayscale(v.frames)
        pairs, _ = flow_pairs(sampling.tsn_positions(n, T, L).flow_index)
        sparse = np.stack([gray[pairs[:, 0]], gray[pairs[:, 1]]], axis=1)
        _, ts = timed(flow.compute_stacks, sparse, cfg)
        dense_n = n - 1 if max_dense is None else min(n - 1, max_dense)
        dense = np.stack([gray[:dense_n], gray[1:dense_n + 1]], axis=1)
        _, td = timed(flow.compute_stacks, dense, cfg)
        td_all = td * (n - 1) / max(dense_n, 1)          # extrapolated only if capped
        rows.append((p.name, n, len(pairs), n - 1, ts, td_all, dense_n < n - 1))
    return rows


def rates_section(args, paths) -> None:
    """Decode, OpenCV TV-L1 and backbone rates on the CPU, and seconds per video by default."""
    fps, nframes = bench_decode(paths)
    print(f"decode: {fps:8.1f} frames/s  ({nframes} frames of {len(paths)} fight videos, 340x256 rgb24)")
    tvl1 = flow.FlowConfig()
    v = decode.decode(paths[0])
    g = decode.grayscale(v.frames[:9])
    pairs_n = 4 if args.quick else 8
    _, s = timed(flow.compute_stacks, np.stack([g[:pairs_n], g[1:pairs_n + 1]], axis=1), tvl1)
    print(f"flow:   {pairs_n / s:8.2f} pairs/s  (TV-L1, OpenCV defaults, 340x256; {s / pairs_n:.2f} s/pair)")
    print(f"backbone: {bench_backbone():6.1f} frames/s (EfficientNet-Lite0 224x224, batch 16, eager)")
    models = Models(VideoSettings(), "cpu", 2)
    per = [timed(extract_video, str(p), VideoSettings(), models)[1] for p in paths[:1 if args.quick else 2]]
    print(f"default settings (T=25, L=5, 10 crops, TV-L1 defaults, rgb+flow): "
          f"{np.mean(per):.1f} s/video over {len(per)} fight videos")


def sparse_section(args, paths) -> None:
    fast = flow.FlowConfig(params=(("epsilon", 0.05),))
    print("sparse (framesel: distinct pairs of T=25 x L=5) vs dense (every pair, the denseflow way),"
          "\nTV-L1 epsilon 0.05 for both (the ratio is about how many pairs are computed):")
    print(f"{'video':36s} {'frames':>6s} {'sparse':>6s} {'dense':>6s} {'sparse s':>9s} {'dense s':>9s} {'ratio':>6s}")
    long = [DATA / "fixtures" / "one-by-one-person-detection.mp4"]
    rows = sparse_vs_dense(paths[:2] + long, fast, max_dense=300 if args.quick else None)
    for name, n, sp, dn, ts, td, capped in rows:
        print(f"{name:36s} {n:6d} {sp:6d} {dn:6d} {ts:9.2f} {td:9.2f} {td / ts:6.2f}"
              + ("  (dense timed on 300 pairs, extrapolated)" if capped else ""))


SECTIONS = ("rates", "sparse", "tvl1", "backbone", "pipeline", "breakdown", "features", "cost")
CPU_ONLY = ("rates", "sparse")   # OpenCV/CPU measurements: run on cuda only when named in --only
NAMED_ONLY = ("cost",)           # run only when named in --only


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="short run: fight settings only (no TSN), one TV-L1 batch, eager only")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--only", default="", help=f"comma-separated sections to run: {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip the sections that would start after this many seconds (default: 330 on cuda)")
    ap.add_argument("--clips", type=int, default=None, help="fight clips per pipeline run at the fight settings")
    ap.add_argument("--tsn-clips", type=int, default=None, help="fight clips per pipeline run at the TSN settings")
    ap.add_argument("--cv-clips", type=int, default=1, help="cuda: clips of the OpenCV-flow sequential row")
    ap.add_argument("--workers", type=int, default=None, help="W: decode workers / whole-video workers")
    ap.add_argument("--batches", type=ints, default=None, help="TV-L1 batch sizes, e.g. 8,32,64,128")
    ap.add_argument("--cv-pairs", type=int, default=None, help="pairs OpenCV computes (rate, EPE reference)")
    ap.add_argument("--compile", action="store_true",
                    help="tvl1-torch compile=true in the pipeline, breakdown and features sections")
    ap.add_argument("--cost-reps", type=int, default=None, help="cost: A/B repetitions of the counting")
    ap.add_argument("--cost-clips", type=int, default=None, help="cost: fight clips per store")
    ap.add_argument("--cost-rounds", type=int, default=None, help="cost: alternations of epsilon 0.05 / 0.01")
    args = ap.parse_args(argv)
    _defaults(args, torch.device(args.device))
    return args


def _defaults(args, device: torch.device) -> None:
    """Per-device defaults sized so that --device cpu --quick fits ~8 min on 2 cores and a
    whole --device cuda run ~6 min on one H100 (OpenCV's pairs run on the CPU in both)."""
    gpu, q = device.type == "cuda", args.quick
    cores = os.cpu_count() or 2
    args.sections = [x for x in args.only.split(",") if x] or [
        x for x in SECTIONS if (gpu is False or x not in CPU_ONLY) and x not in NAMED_ONLY]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; sections: {', '.join(SECTIONS)}")
    args.budget_s = args.budget_s if args.budget_s is not None else (330.0 if gpu else 0.0)
    args.workers = args.workers or (max(2, min(8, cores - 2)) if gpu else 2)
    args.clips = args.clips or (32 if gpu else 4)
    args.tsn_clips = args.tsn_clips or (12 if gpu else 2)
    args.settings = ["fight"] if q else ["tsn", "fight"]
    args.tvl1_settings = ["tsn"] if q and not gpu else ["tsn", "fight"]
    args.batches = args.batches or ([8, 32, 64, 128] if gpu else [4] if q else [4, 16])
    args.cv_pairs = args.cv_pairs or (16 if gpu else 4)
    args.compile_modes = [False] if q and not gpu else [False, True]
    args.backbone_batches = [16, 64, 128] if gpu else [16]
    args.breakdown_clips = 8 if gpu else 2
    args.feature_clips = 4 if gpu else 1 if q else 2
    args.cost_reps = args.cost_reps or (2 if q else 4)
    args.cost_clips = args.cost_clips or (1 if q else 2)
    args.cost_rounds = args.cost_rounds or (1 if q else 2)


def run_sections(args, device: torch.device) -> None:
    start = time.perf_counter()
    paths = fight_videos(2 if args.quick else 6)
    with tempfile.TemporaryDirectory(prefix="framesel-bench-") as tmp:
        jobs = {"rates": lambda: rates_section(args, paths), "sparse": lambda: sparse_section(args, paths),
                "tvl1": lambda: gpu.tvl1_section(args, device),
                "backbone": lambda: gpu.backbone_section(args, device),
                "pipeline": lambda: gpu.pipeline_section(args, device, Path(tmp)),
                "breakdown": lambda: gpu.breakdown_section(args, device),
                "features": lambda: gpu.features_section(args, device),
                "cost": lambda: extract_cost.cost_section(args, device, Path(tmp))}
        for name in args.sections:
            elapsed = time.perf_counter() - start
            print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)
            if args.budget_s and elapsed > args.budget_s:
                print(f"SKIPPED: {elapsed:.0f} s spent, --budget-s {args.budget_s:.0f}")
                continue
            t = time.perf_counter()
            jobs[name]()
            print(f"[{name}: {time.perf_counter() - t:.1f} s]", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if not DATA.exists():
        raise SystemExit(f"{DATA} is absent: this benchmark needs ../shared/data beside the checkout")
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(2)
    elif not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch.cuda.is_available() is False")
    print(f"framesel extraction benchmark — {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, OpenCV {flow.opencv_version()}, {decode.ffmpeg_version()}")
    print(gpu.header(device))
    print(f"sections: {','.join(args.sections)}; W={args.workers} workers, {args.clips} fight / "
          f"{args.tsn_clips} TSN clips per pipeline run, settings {','.join(args.settings)}"
          + (f", budget {args.budget_s:.0f} s" if args.budget_s else ""))
    run_sections(args, device)


if __name__ == "__main__":
    main()
