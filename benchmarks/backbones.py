"""Frames/s and GFLOPs per frame of every registered backbone, framesel's runner vs the naive way.

For each backbone and stream (RGB, and flow with L = 5, 10 channels): GFLOPs per frame
(``gflops_per_frame``, FLOPs = 2 x MACs, head included) and frames/s of

- framesel: ``BackboneRunner`` (channels_last, inference_mode) at the CLI's default batch
  16 and at batch 4, RGB from uint8 crops through the backbone's preset;
- naive: the same network one frame at a time, NCHW contiguous, under ``torch.no_grad``.

All on the same frames, in one run; the ratio is framesel's frames/s at batch 16 over the
naive's.
Backbones that ship no weights (ResNets, BN-Inception, the image towers) run from a randomly
initialised checkpoint in their own layout (speed does not depend on the weights' values);
the towers (CLIP, SigLIP, DINOv2: transformers' classes at their standard sizes, RGB only)
from a ``save_pretrained`` folder, their input the crop after the processor's resize.

    python -m benchmarks.backbones [--device cuda] [--frames 48] [--threads 2] [--only resnet50,...]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from extract import backbones
from extract.backbones.towers import VARIANTS
from tests.peer_checkpoints import random_checkpoint


def frames_per_s(fn, x, repeat: int = 1) -> float:
    fn(x[: min(len(x), 16)])                 # warm-up (allocations, kernels)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return repeat * len(x) / (time.perf_counter() - t)


def naive(bb, device):
    def run(x: torch.Tensor):
        with torch.no_grad():
            for i in range(len(x)):
                bb(x[i:i + 1].to(device).contiguous())
    return run


def measure(name: str, stream: str, n: int, device: str, tmp: Path) -> dict:
    ck = random_checkpoint(name, tmp / (name if name in VARIANTS else f"{name}.pth"))
    bb = backbones.create_backbone(name, stream=stream, flow_stack=5, checkpoint=ck)
    size, gflops = bb.spec.input_size, backbones.gflops_per_frame(bb)
    rng = np.random.default_rng(0)
    if stream == "rgb":
        x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        prepared = backbones.preprocess_rgb(x, bb.spec).contiguous()
    else:
        x = backbones.preprocess_flow(rng.normal(0, 3, (n, 5, size, size, 2)).astype(np.float32), 20.0,
                                      bb.spec.preset).contiguous()
        prepared = x
    fast = frames_per_s(backbones.BackboneRunner(bb, batch_size=16, device=device), x)
    small = frames_per_s(backbones.BackboneRunner(bb, batch_size=4, device=device), x)
    bb_naive = bb.to(memory_format=torch.contiguous_format)
    slow = frames_per_s(naive(bb_naive, device), prepared)
    return {"backbone": name, "stream": stream, "size": size, "gflops": gflops, "framesel": fast, "batch4": small, "naive": slow}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated backbone names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.only.split(",") if n] or backbones.backbone_names()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"device {args.device}, {args.frames} frames per measurement")
    print("| backbone | stream | px | GFLOPs/frame | framesel frames/s (batch 16) | batch 4 | naive frames/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for stream in ("rgb",) if name in VARIANTS else ("rgb", "flow"):
                r = measure(name, stream, args.frames, args.device, Path(tmp))
                print(f"| {r['backbone']} | {r['stream']} | {r['size']} | {r['gflops']:.2f} | {r['framesel']:.1f} | "
                      f"{r['batch4']:.1f} | {r['naive']:.1f} | {r['framesel'] / r['naive']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
