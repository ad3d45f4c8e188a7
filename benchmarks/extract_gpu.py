"""The device sections of ``python -m benchmarks.extract --device cpu|cuda`` (issue 14).

Each section prints what it measured on the device given, side by side in one run:

- ``tvl1``: torch TV-L1 pairs/s by batch size, eager and ``compile=True``, at 340x256 with
  OpenCV's defaults, beside OpenCV's CPU rate on the same fight pairs, with the mean and max
  end-point error against OpenCV (reuses :mod:`benchmarks.flow`);
- ``backbone``: EfficientNet-Lite0 frames/s at 224x224 per batch size (input already on the
  device, features copied back), RGB and flow (2L = 10 channels) stems;
- ``pipeline``: videos/s of ``run_extraction`` over fight clips at the TSN protocol (T=25,
  L=5, 10 crops, TV-L1 defaults) and the fight benchmark's settings (T=10, L=3, 1 crop,
  epsilon 0.05): sequential, the device pipeline and (on a CPU) whole-video workers; the
  device-busy fraction; whether each store equals the sequential one array for array;
- ``breakdown``: one device run per setting, timed piece by piece (CPU prepare, copies, flow,
  each backbone and its network), synchronised on a GPU, to say what bounds throughput;
- ``features``: flow-stream features from torch TV-L1 against OpenCV's on the same prepared
  frames (relative L2), beside OpenCV against itself on +-0.01-grey-perturbed input.

Flow on cuda is ``tvl1-torch`` on the device; on cpu OpenCV's ``tvl1`` (what extraction uses
there). Everything else is the same code with only the device string changed.
"""
from __future__ import annotations

import os
import platform
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.flow import load_pairs, mean_epe, opencv_reference, perturbed_opencv, time_torch
from data.store import compare_stores, open_store
from extract import backbones
from extract.device import grayscale
from extract.flow import FlowConfig, compute_pairs
from extract.flow_torch import TVL1Params
from extract.schedule import take_group
from extract.prepare import prepare_video
from extract.run import ExtractConfig, run_extraction
from extract.video import Models, VideoSettings

FIGHT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight"
OPENCV_CUDA_RATE = 30.0   # pairs/s reported for OpenCV's CUDA TV-L1 at 340x256 (issue 14)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def header(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()} (cpu run, no GPU)")
    return (f"device {device}: {name}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), {os.cpu_count()} cores")


# ----------------------------------------------------------------------------- settings, clips


def flow_config(device: torch.device, overrides: tuple, compile: bool) -> FlowConfig:
    """tvl1-torch on a GPU, OpenCV's tvl1 on a CPU; ``overrides`` on OpenCV's defaults."""
    if device.type == "cuda":
        return FlowConfig("tvl1-torch", params=overrides + (("device", str(device)), ("compile", compile)))
    return FlowConfig("tvl1", params=overrides)


def flow_overrides(name: str) -> tuple:
    """TV-L1 parameters that differ from OpenCV's defaults at setting ``name``."""
    from benchmarks.fight import SETTINGS as FIGHT_SETTINGS

    return () if name == "tsn" else (("epsilon", dict(FIGHT_SETTINGS.flow.params)["epsilon"]),)


def bench_settings(name: str, device: torch.device, compile: bool = False) -> VideoSettings:
    """"tsn": T=25, L=5, 10 crops, TV-L1 defaults; "fight": benchmarks.fight.SETTINGS."""
    from benchmarks.fight import SETTINGS as FIGHT_SETTINGS

    base = VideoSettings() if name == "tsn" else FIGHT_SETTINGS
    return replace(base, flow=flow_config(device, flow_overrides(name), compile))


def fight_clips(n: int) -> list[tuple[str, int]]:
    """n (absolute path, label) fight clips spread evenly over test.txt then train.txt."""
    lines = [ln.split() for f in ("test.txt", "train.txt") for ln in (FIGHT / f).read_text().splitlines()]
    clips = [(str(FIGHT / ln[0]), int(ln[1])) for ln in lines if ln]
    step = max(1, len(clips) // max(n, 1))
    return clips[::step][:n]


def write_list(clips: list[tuple[str, int]], path: Path) -> Path:
    """An mmaction2 list (absolute paths, no --root needed)."""
    path.write_text("".join(f"{p} {label}\n" for p, label in clips))
    return path


# ----------------------------------------------------------------------------- tvl1


def epe_max(flow: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-pixel end-point error over the pairs both have (px)."""
    n = min(len(flow), len(ref))
    d = flow[:n] - ref[:n]
    return float(np.hypot(d[..., 0], d[..., 1]).max())


def tvl1_section(args, device: torch.device) -> None:
    """pairs/s by batch size, eager and compiled, with EPE against OpenCV on the first
    ``args.cv_pairs`` of the same fight pairs (340x256), at each of ``args.tvl1_settings``:
    "tsn" is OpenCV's defaults, "fight" epsilon 0.05."""
    prev, nxt = load_pairs(max(args.batches + [args.cv_pairs]))
    for name in args.tvl1_settings:
        prm = TVL1Params(**dict(flow_overrides(name)))
        ref, cv_rate = opencv_reference(prev[:args.cv_pairs], nxt[:args.cv_pairs], prm)
        print(f"\nTV-L1 340x256 at the {name} settings (OpenCV's defaults"
              + (f", epsilon {prm.epsilon}" if flow_overrides(name) else "") + "), consecutive fight pairs; "
              f"OpenCV CPU {cv_rate:.2f} pairs/s on {args.cv_pairs} pairs (the EPE reference)")
        print(f"{'impl':9s} {'batch':>5s} {'pairs/s':>9s} {'x opencv':>9s} {'x 30/s':>7s} "
              f"{'EPE mean':>9s} {'EPE max':>8s}")
        for compile in args.compile_modes:
            for b in args.batches:
                if device.type == "cuda" or compile:    # untimed: kernels load / compile for this shape
                    time_torch(prev[:b], nxt[:b], prm, device, compile)
                flow, rate = time_torch(prev[:b], nxt[:b], prm, device, compile)
                print(f"{'torch+c' if compile else 'torch':9s} {b:5d} {rate:9.2f} {rate / cv_rate:9.2f} "
                      f"{rate / OPENCV_CUDA_RATE:7.2f} {mean_epe(flow, ref):9.4f} {epe_max(flow, ref):8.3f}")
        print(f"(mean |flow| of the reference {np.hypot(ref[..., 0], ref[..., 1]).mean():.2f} px)")
    print(f"(torch on {device}, transfers included; torch+c: compile=true, timed after a compiling call. "
          f"x 30/s: over the ~30 pairs/s reported for OpenCV's CUDA TV-L1; goal >= 10 at the defaults with "
          f"EPE mean < 0.01 px. EPE over the first min(batch, {args.cv_pairs}) pairs; max: the largest pixel's)")
    if device.type == "cpu":
        print("(cpu run: the >= 300 pairs/s goal is for a GPU)")


# ----------------------------------------------------------------------------- backbone


def backbone_rates(name: str, stream: str, batches, device: torch.device, frames: int | None = None,
                   checkpoint=None) -> list[dict]:
    """frames/s of backbone ``name`` (``stream``'s stem) per batch size at its input size over
    ``frames`` frames (default max(4 x batch, 64)):
    preprocessed input already on the device, features copied back to the CPU (what
    BackboneRunner does in extraction), timed after a warm-up batch. ``checkpoint``: weights
    for a backbone that ships none (an image tower's folder)."""
    bb = backbones.create_backbone(name, stream=stream, flow_stack=5, checkpoint=checkpoint)
    size = bb.spec.input_size
    rows = []
    for b in batches:
        runner = backbones.BackboneRunner(bb, b, str(device))
        n = frames or max(4 * b, 64)
        x = torch.randn(n, bb.in_channels, size, size, device=device)
        runner(x[:b])                                          # warm-up
        sync(device)
        t = time.perf_counter()
        runner(x)
        sync(device)
        rows.append({"batch": b, "frames": n, "frames_per_s": n / (time.perf_counter() - t), "px": size})
    return rows


def backbone_section(args, device: torch.device) -> None:
    """EfficientNet-Lite0 frames/s at 224x224 per batch (:func:`backbone_rates`)."""
    print(f"{'stream':6s} {'batch':>5s} {'frames':>6s} {'frames/s':>9s}")
    for stream in ("rgb", "flow"):
        for r in backbone_rates("efficientnet_lite0", stream, args.backbone_batches, device):
            print(f"{stream:6s} {r['batch']:5d} {r['frames']:6d} {r['frames_per_s']:9.1f}")
    print("(flow stem: 2L = 10 channels; eager, channels_last, inference mode)")


# ----------------------------------------------------------------------------- pipeline


def _extract(lst: Path, out: Path, settings, device, workers: int, pipeline: bool):
    """run_extraction with this process's torch/OpenCV threads restored afterwards (it sets
    them for the run: 1 per core / workers, also in this process)."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        return run_extraction(ExtractConfig(
            list_path=str(lst), out=str(out), classes_file=str(FIGHT / "classes.txt"), settings=settings,
            workers=workers, device=str(device), pipeline=pipeline, quiet=True,
            command="python -m benchmarks.extract"))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def _same(a: Path, b: Path) -> str:
    sa, sb = open_store(a), open_store(b)
    try:
        diffs = compare_stores(sa, sb)
    finally:
        sa.close()
        sb.close()
    return "EQUAL" if not diffs else "DIFFER: " + "; ".join(diffs)


def pipeline_section(args, device: torch.device, tmp: Path) -> None:
    """videos/s of run_extraction per mode and setting; stores compared with sequential's."""
    for name in args.settings:
        s = bench_settings(name, device, args.compile)
        clips = fight_clips(args.tsn_clips if name == "tsn" else args.clips)
        lst = write_list(clips, tmp / f"{name}.txt")
        print(f"\n{name}: T={s.frames}, L={s.flow_stack}, {s.crops} crop(s), flow {s.flow.algorithm} "
              f"{dict(flow_overrides(name)) or 'defaults'}, {len(clips)} fight clips, {device}")
        if device.type == "cuda":    # untimed: CUDA context, cuDNN and flow kernels load on first use
            _extract(write_list(clips[:1], tmp / f"{name}-warm.txt"), tmp / f"{name}-warm.zarr", s, device, 1, False)
        modes = [("sequential", 1, False), ("device pipeline", args.workers, True)]
        if device.type == "cpu":
            modes.append(("whole videos", args.workers, False))
        print(f"{'mode':16s} {'W':>2s} {'videos':>6s} {'seconds':>8s} {'videos/s':>9s} {'x seq':>6s} "
              f"{'busy':>5s}  store vs sequential")
        seq_rate, seq_store = None, None
        for label, workers, pipe in modes:
            out = tmp / f"{name}-{label.replace(' ', '-')}.zarr"
            summary = _extract(lst, out, s, device, workers, pipe)
            rate = summary.processed / summary.seconds
            if seq_store is None:
                seq_rate, seq_store = rate, out
            busy = f"{100 * summary.device_busy:4.0f}%" if summary.device_busy is not None else "  n/a"
            same = "(reference)" if out == seq_store else _same(seq_store, out)
            print(f"{label:16s} {workers:2d} {summary.processed:6d} {summary.seconds:8.1f} {rate:9.3f} "
                  f"{rate / max(seq_rate, 1e-9):6.2f} {busy}  {same}")
            for path, err in summary.failures:
                print(f"  FAILED {path}: {err}")
        if device.type == "cuda" and args.cv_clips > 0:
            _opencv_row(args, name, s, clips, device, tmp, seq_rate)
    print("(busy: DeviceStage.busy / wall time, Summary.device_busy; n/a for whole-video workers, "
          "whose models live in the workers. Worker start-up is inside the seconds.)")


def _opencv_row(args, name, s, clips, device, tmp: Path, seq_rate: float) -> None:
    """Sequential extraction with OpenCV's CPU TV-L1 (today's flow), backbones on the device."""
    cv = replace(s, flow=FlowConfig("tvl1", params=flow_overrides(name)))
    lst = write_list(clips[:args.cv_clips], tmp / f"{name}-opencv.txt")
    summary = _extract(lst, tmp / f"{name}-opencv.zarr", cv, device, 1, False)
    rate = summary.processed / summary.seconds
    busy = 100 * (summary.device_busy or 0.0)
    print(f"{'seq, OpenCV flow':16s} {1:2d} {summary.processed:6d} {summary.seconds:8.1f} {rate:9.3f} "
          f"{rate / max(seq_rate, 1e-9):6.2f} {busy:4.0f}%  (other flow: not compared)")


# ----------------------------------------------------------------------------- breakdown


class Clock:
    """Seconds per named piece; each timed call is synchronised on a GPU before and after."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, defaultdict(float)

    def wrap(self, fn, name):
        """fn timed under ``name`` (a string, or a function of fn's arguments giving one)."""
        def timed(*a, **kw):
            sync(self.device)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                sync(self.device)
                self.seconds[name(*a) if callable(name) else name] += time.perf_counter() - t
        return timed


def instrument(stage, clock: Clock) -> None:
    """Time the pieces of a DeviceStage's runs (instance attributes, this stage only); the
    clock lists them in run order, a network under its backbone."""
    def backbone(stream, *_):
        return f"backbone {stream} (crops..copy back)"

    clock.seconds.update({"copy frames to device": 0.0, "flow (grey, TV-L1, stacks)": 0.0})
    stage._to_device = clock.wrap(stage._to_device, "copy frames to device")
    stage._flow = clock.wrap(stage._flow, "flow (grey, TV-L1, stacks)")
    stage._backbone = clock.wrap(stage._backbone, backbone)
    for stream, runner in stage.models.runners.items():
        clock.seconds.update({backbone(stream): 0.0, f"  of which {stream} network": 0.0})
        runner._step = clock.wrap(runner._step, f"  of which {stream} network")


def breakdown_section(args, device: torch.device) -> None:
    """One device run per setting over ``args.breakdown_clips`` prepared clips, grouped as the
    device pipeline groups them, timed piece by piece."""
    for name in args.settings:
        s = bench_settings(name, device, args.compile)
        models = Models(s, str(device), 2)
        stage = models.stage
        clips = fight_clips(args.breakdown_clips)
        t = time.perf_counter()
        ready = [(i, prepare_video(path, s)) for i, (path, _) in enumerate(clips)]
        prepare = time.perf_counter() - t
        if device.type == "cuda":
            stage.run([ready[0][1]])                  # untimed warm-up
        clock = Clock(device)
        instrument(stage, clock)
        sync(device)
        t, groups = time.perf_counter(), 0
        while ready:
            stage.run([p for _, p in take_group(ready, stage)])
            groups += 1
        total = time.perf_counter() - t
        _print_breakdown(name, s, len(clips), groups, prepare, total, clock.seconds, args.workers)


def _print_breakdown(name, s, n, groups, prepare, total, pieces, workers) -> None:
    print(f"\n{name}: {n} clips in {groups} device run(s) ({s.flow.algorithm}); seconds per video, "
          f"share of the device's time")
    print(f"  {'CPU prepare (decode, sample, thumbnails)':42s} {prepare / n:8.3f}   (in the decode workers)")
    print(f"  {'device total':42s} {total / n:8.3f} 100.0%")
    top = 0.0
    for piece, sec in pieces.items():
        top += 0.0 if piece.startswith(" ") else sec
        print(f"  {piece:42s} {sec / n:8.3f} {100 * sec / total:5.1f}%")
    print(f"  {'rest (motion, results)':42s} {(total - top) / n:8.3f} {100 * (total - top) / total:5.1f}%")
    biggest = max((k for k in pieces if not k.startswith(" ")), key=pieces.get)
    decode = prepare / max(workers, 1)
    bound = "decode" if decode > total else biggest.split(" (")[0]
    print(f"  -> bound by {bound}: device {total / n:.3f} s/video vs CPU prepare {decode / n:.3f} s/video "
          f"with {workers} decode workers (if they had the cores to themselves)")


# ----------------------------------------------------------------------------- features


def _perturbed(prev: torch.Tensor, nxt: torch.Tensor, cfg: FlowConfig, seed: int) -> torch.Tensor:
    """OpenCV TV-L1 (cfg's parameters) on +-0.01-grey-perturbed input, clipped like compute_pairs."""
    p = TVL1Params.from_dict(dict(cfg.params))
    algo = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=p.tau, lambda_=p.lambda_, theta=p.theta, nscales=p.nscales, warps=p.warps, epsilon=p.epsilon,
        innnerIterations=p.inner_iterations, outerIterations=p.outer_iterations, scaleStep=p.scale_step,
        gamma=p.gamma, medianFiltering=p.median_filtering)
    a, b = prev.cpu().numpy(), nxt.cpu().numpy()
    out = np.stack([perturbed_opencv(algo, a[i], b[i], seed + i) for i in range(len(a))])
    return torch.from_numpy(out).to(prev.device).clamp_(-cfg.bound, cfg.bound)


def features_section(args, device: torch.device) -> None:
    """Flow-stream features (fight settings, stored float16) from three flows of the same
    prepared frames: OpenCV (reference), tvl1-torch on the device, OpenCV on perturbed input."""
    s = replace(bench_settings("fight", device), streams=("flow",), feature_maps=False)
    eps = flow_overrides("fight")
    cv_cfg = FlowConfig("tvl1", params=eps)
    torch_cfg = FlowConfig("tvl1-torch", params=eps + (("device", str(device)), ("compile", args.compile)))
    stage = Models(s, str(device), 2).stage
    feats, epe = defaultdict(list), defaultdict(list)
    for k, (path, _) in enumerate(fight_clips(args.feature_clips)):
        p = prepare_video(path, s)
        gray = grayscale(torch.from_numpy(p.frames).to(device))
        prev, nxt = gray[p.pairs[:, 0]], gray[p.pairs[:, 1]]
        fields = {"opencv": compute_pairs(prev, nxt, cv_cfg), "torch": compute_pairs(prev, nxt, torch_cfg),
                  "perturbed opencv": _perturbed(prev, nxt, cv_cfg, seed=1000 * k)}
        slot = torch.from_numpy(p.pair_slot).to(device)
        for variant, f in fields.items():
            rows = [{}]
            stage._backbone("flow", [f[slot]], rows)                     # (T, L, H, W, 2) stacks
            feats[variant].append(rows[0]["flow"]["features"].astype(np.float32))   # (T, K, D)
            d = (f - fields["opencv"]).cpu().numpy()
            epe[variant].append(np.hypot(d[..., 0], d[..., 1]))
    ref = np.concatenate(feats["opencv"])
    print(f"{args.feature_clips} fight clips, T={s.frames}, L={s.flow_stack}, {s.crops} crop, epsilon "
          f"{dict(eps)['epsilon']}: {sum(len(e) for e in epe['opencv'])} pairs; against OpenCV tvl1")
    print(f"{'flow':18s} {'features rel L2':>15s} {'EPE mean':>9s} {'EPE max':>8s}")
    for variant in ("torch", "perturbed opencv"):
        rel = np.linalg.norm(np.concatenate(feats[variant]) - ref) / np.linalg.norm(ref)
        e = np.concatenate([x.reshape(-1) for x in epe[variant]])
        print(f"{variant:18s} {100 * rel:14.2f}% {e.mean():9.4f} {e.max():8.3f}")
    print(f"(torch TV-L1 on {device}; features: the stored float16 flow features, ||a - b|| / ||b|| over "
          "all positions; EPE of the clipped fields, max = largest pixel's; perturbed: +-0.01 grey uniform noise)")
