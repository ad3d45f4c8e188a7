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

    python -m benchmarks.extract            # from the repo root; ~10-15 min on 2 cores
    python -m benchmarks.extract --quick    # ~3 min
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from extract import backbones, decode, flow, sampling
from extract.video import Models, VideoSettings, extract_video, flow_pairs

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is absent: this benchmark needs ../shared/data beside the checkout")
    torch.set_num_threads(2)
    nvid = 2 if args.quick else 6
    paths = fight_videos(nvid)
    print(f"framesel extraction benchmark — {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, OpenCV {flow.opencv_version()}, {decode.ffmpeg_version()}")
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
    fast = flow.FlowConfig(params=(("epsilon", 0.05),))
    print("\nsparse (framesel: distinct pairs of T=25 x L=5) vs dense (every pair, the denseflow way),"
          "\nTV-L1 epsilon 0.05 for both (the ratio is about how many pairs are computed):")
    print(f"{'video':36s} {'frames':>6s} {'sparse':>6s} {'dense':>6s} {'sparse s':>9s} {'dense s':>9s} {'ratio':>6s}")
    long = [DATA / "fixtures" / "one-by-one-person-detection.mp4"]
    rows = sparse_vs_dense(paths[:2] + long, fast, max_dense=300 if args.quick else None)
    for name, n, sp, dn, ts, td, capped in rows:
        print(f"{name:36s} {n:6d} {sp:6d} {dn:6d} {ts:9.2f} {td:9.2f} {td / ts:6.2f}"
              + ("  (dense timed on 300 pairs, extrapolated)" if capped else ""))


if __name__ == "__main__":
    main()
