"""What one flow field costs: the cost model of each registered flow algorithm (GUIDE §6.11).

Every registry entry of :mod:`extract.flow` names a :class:`FlowCost`. At extraction the
device stage asks it for the GFLOPs of each field a video computed (and the primal-dual
iterations, where a run reports or samples them) and the store records them per video
(``cost/flow_gflops``, ``cost/flow_iterations``); evaluate reads the record, never this
module (GUIDE §1).

Convention: FLOPs, not MACs. One float add, multiply, divide or square root = 1 FLOP
(integer pixel arithmetic, as in OpenCV's Sobel on uint8, is counted alike); comparisons,
min/max/abs, medians, rounding and memory moves = 0. The per-pixel constants below are read
off OpenCV's loops (the source file is named with each group); they are right to a few FLOPs
per pixel. What the label (``kind``) speaks about is the loop counts:

- ``counted``: every loop count of this run is known: the iterations the solver reported
  (tvl1-torch), or loops without data-dependent stopping (Farneback);
- ``estimated``: the loop counts are sampled (OpenCV's TV-L1 cannot report its iterations;
  the torch port, OpenCV's algorithm step for step, runs one pair per video with counting,
  :data:`SAMPLE_PAIRS`, and its counts stand for every field of that video);
- ``upper bound``: data-dependent loops at their caps (DIS stops a patch's gradient descent
  when its SSD stops falling; OpenCV's CUDA TV-L1 cannot report its iterations).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from extract.flow_torch import TVL1Params, pyramid_sizes, tvl1_batch

COUNTED, ESTIMATED, UPPER_BOUND = "counted", "estimated", "upper bound"
KINDS = (COUNTED, ESTIMATED, UPPER_BOUND)
SAMPLE_PAIRS = 1   # pairs per video the OpenCV TV-L1 estimate runs through the torch port

# TV-L1 per pixel, opencv_contrib optflow/src/tvl1flow.cpp (and cuda's tvl1flow.cu):
TVL1_INNER = 54   # per step: estimateV 10, 2 divergences 6, estimateU 10, 2 forward gradients 4, dual 24
TVL1_WARP = 160   # per warp: flow map 2, three bicubic remaps (16 taps + weights) 150, gradient/rho 8
TVL1_SCALE = 40   # per level: centred gradient 4, down-sampling of both frames 16, flow up-sampling 20

# DIS per pixel, opencv video/src/dis_flow.cpp and variational_refinement.cpp:
DIS_AREA = 1            # INTER_AREA pyramid: per source pixel of each frame
DIS_GRADIENT = 10       # spatialGradient (3x3 Sobel, x and y)
DIS_TENSOR_ROW = 16     # structure tensor, horizontal running sums (3 products, 2 sums)
DIS_TENSOR_COL = 10     # vertical running sums, per row and patch column
DIS_SSD = 10            # per patch pixel: bilinear 8 (4 mul, 3 add, 1 sub), squared diff 2
DIS_SSD_NORM = 11       # with mean normalisation: + the sum of differences
DIS_PATCH = 14          # one gradient-descent step per patch pixel: SSD 10 + 2 gradient products 4
DIS_PATCH_NORM = 15     # with mean normalisation
DIS_PATCH_FIXED = 29    # per patch and step: bilinear weights 12, normalisation 9, update 8
DIS_HESSIAN = 7         # per patch: inverse of the structure tensor
DIS_DENSIFY = 28        # per (pixel, covering patch): bilinear 20, weight 1, accumulate 5, position 2
VR_PREPARE = 21         # variational refinement per pixel: warp 10, average 3, Iz 1, 7 derivatives
VR_ITERATION = 267      # per fixed-point iteration: data term 87, smoothness 38, 5 SOR sweeps 140, update 2
UPSAMPLE = 14           # bilinear resize of a 2-channel flow (12) and its scaling (2), per output pixel

# Farneback per pixel, opencv video/src/optflowgf.cpp:
FB_POLY_BASE, FB_POLY_TAP = 13, 25   # FarnebackPolyExp: 13 + 25 * poly_n per frame
FB_MATRICES = 77        # FarnebackUpdateMatrices: bilinear of 5 channels 35, terms 42
FB_BOX = 38             # FarnebackUpdateFlow_Blur: running sums 20, scaling 5, 2x2 solve 13
FB_GAUSS_SOLVE = 23     # FarnebackUpdateFlow_GaussianBlur: + 30 per half-window tap
FB_RESIZE = 6           # bilinear resize of a frame to a pyramid level, per output pixel


@dataclass(frozen=True)
class FieldCosts:
    """GFLOPs of each of N fields (N,) float64, and the primal-dual iterations behind each
    (N,) float64 summed over levels and warps (None: the algorithm has none, or a bound)."""

    gflops: np.ndarray
    iterations: np.ndarray | None = None


@dataclass(frozen=True)
class FlowCost:
    """A flow algorithm's cost model: ``label(params) -> (kind, how)`` says what its numbers
    are (one of :data:`KINDS` and a sentence); ``fields(params, prev, next, run) ->
    FieldCosts`` prices N computed fields from the effective parameters, the (N, H, W) uint8
    frame tensors and what the algorithm reported of its run (None when nothing)."""

    label: Callable[[dict], tuple[str, str]]
    fields: Callable[[dict, torch.Tensor, torch.Tensor, object], FieldCosts]


# ----------------------------------------------------------------------------- TV-L1

def _tvl1_params(params: dict) -> TVL1Params:
    return TVL1Params.from_dict({k: v for k, v in params.items() if k != "gamma"})


def tvl1_gflops(sizes, iterations) -> np.ndarray:
    """GFLOPs of TV-L1 fields from the (h, w) of each pyramid level (finest first) and the
    primal-dual steps run at each level and warp: ``iterations`` (..., S, warps) -> (...)."""
    it = np.asarray(iterations, np.float64)
    px = np.array([h * w for h, w in sizes], np.float64)
    per_level = TVL1_SCALE + it.shape[-1] * TVL1_WARP + TVL1_INNER * it.sum(-1)
    return (per_level * px).sum(-1) / 1e9


def _tvl1_bound(params: dict, h: int, w: int, steps: int) -> float:
    prm = _tvl1_params(params)
    sizes = pyramid_sizes(h, w, prm)
    return float(tvl1_gflops(sizes, np.full((len(sizes), prm.warps), steps)))


def _counted_tvl1(params, prev, nxt, run) -> FieldCosts:
    """tvl1-torch: ``run`` is its (N, S, warps) iteration count."""
    sizes = pyramid_sizes(*prev.shape[1:], _tvl1_params(params))
    run = np.asarray(run)
    return FieldCosts(tvl1_gflops(sizes, run), run.reshape(len(run), -1).sum(1).astype(np.float64))


def _sampled_tvl1(params, prev, nxt, run) -> FieldCosts:
    """OpenCV's TV-L1: the torch port on :data:`SAMPLE_PAIRS` evenly spaced pairs, counted;
    their mean cost stands for each field. gamma > 0 (no port): the upper bound."""
    n, (h, w) = prev.shape[0], prev.shape[1:]
    if params.get("gamma", 0.0) != 0.0:
        return FieldCosts(np.full(n, _tvl1_bound(params, h, w, _tvl1_steps(params))))
    if n == 0:
        return FieldCosts(np.zeros(0), np.zeros(0))
    idx = torch.linspace(0, n - 1, SAMPLE_PAIRS + 2)[1:-1].round().long().unique()
    prm = _tvl1_params(params)
    threads = torch.get_num_threads()
    if prev.device.type == "cpu":
        # one small pair: a second thread gains little, and on a shared CPU OpenMP's waiting
        # threads made it 15-20x slower (measured, benchmarks/README.md)
        torch.set_num_threads(1)
    try:
        _, iters = tvl1_batch(prev[idx], nxt[idx], prm, return_iterations=True)
    finally:
        torch.set_num_threads(threads)
    iters = iters.cpu().numpy()
    g = tvl1_gflops(pyramid_sizes(h, w, prm), iters).mean()
    return FieldCosts(np.full(n, g), np.full(n, iters.reshape(len(iters), -1).sum(1).mean()))


def _tvl1_steps(params: dict) -> int:
    return int(params["outer_iterations"]) * int(params["inner_iterations"])


def _tvl1_label(params: dict) -> tuple[str, str]:
    if params.get("gamma", 0.0) != 0.0:
        return UPPER_BOUND, ("every primal-dual step OpenCV's TV-L1 may run (gamma > 0 has no torch port "
                             "to sample its stopping; its illumination term is not counted)")
    return ESTIMATED, (f"OpenCV's TV-L1 cannot report its iterations: the torch port (OpenCV's algorithm "
                       f"step for step) runs {SAMPLE_PAIRS} pair per video and counts them; that pair's "
                       "cost stands for each field, x TV-L1's per-pixel counts")


TVL1_OPENCV = FlowCost(_tvl1_label, _sampled_tvl1)
TVL1_TORCH = FlowCost(lambda p: (COUNTED, "the primal-dual steps each field ran at each level and warp, "
                                          "as the solver counted them, x TV-L1's per-pixel counts"),
                      _counted_tvl1)
TVL1_CUDA = FlowCost(
    lambda p: (UPPER_BOUND, "every iteration OpenCV's CUDA TV-L1 may run (it cannot report when it stops)"),
    lambda p, prev, nxt, run: FieldCosts(np.full(prev.shape[0], _tvl1_bound(
        {**p, "median_filtering": 0}, *prev.shape[1:], int(p["iterations"])))))


# ----------------------------------------------------------------------------- Farneback

def farneback_gflops(params: dict, h: int, w: int) -> float:
    """GFLOPs of one Farneback field at (h, w): OpenCV's loops have no data-dependent
    stopping, so this is the count of the run (per-pixel constants above)."""
    q, n = float(params["pyr_scale"]), int(params["poly_n"])
    iters, gauss = int(params["iterations"]), int(params["flags"]) & 256
    top, scale = 0, 1.0
    while top < int(params["levels"]):      # OpenCV: levels that stay >= 32 px
        scale *= q
        if w * scale < 32 or h * scale < 32:
            break
        top += 1
    blur = FB_GAUSS_SOLVE + 30 * (int(params["winsize"]) // 2) if gauss else FB_BOX
    flops = 0.0
    for k in range(top, -1, -1):
        s = q ** k
        smooth = max(round((1.0 / s - 1) * 0.5 * 5) | 1, 3)
        px = round(w * s) * round(h * s)
        frames = 2 * (h * w * 2 * (2 * smooth - 1) + (FB_RESIZE * px if k else 0))
        flops += frames + px * (2 * (FB_POLY_BASE + FB_POLY_TAP * n) + FB_MATRICES
                                + iters * blur + (iters - 1) * FB_MATRICES + (UPSAMPLE if k < top else 0))
    return flops / 1e9


FARNEBACK = FlowCost(
    lambda p: (COUNTED, "OpenCV's Farneback loops have no data-dependent stopping: levels x iterations "
                        "x its per-pixel counts"),
    lambda p, prev, nxt, run: FieldCosts(np.full(prev.shape[0], farneback_gflops(p, *prev.shape[1:]))))


# ----------------------------------------------------------------------------- DIS

def _dis_levels(p: dict, h: int, w: int) -> list[tuple[int, int]]:
    """(h, w) of DIS's levels, finest_scale first (OpenCV's integer halvings)."""
    psz, fs = int(p["PatchSize"]), int(p["FinestScale"])
    coarsest = min(int(math.log(max(w, h) / (4.0 * psz)) / math.log(2.0) + 0.5),
                   int(math.log(max(min(w, h) // psz, 1)) / math.log(2.0)))
    sizes = [(h // 2 ** fs, w // 2 ** fs)]
    for _ in range(fs + 1, coarsest + 1):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes if coarsest >= fs else []


def _dis_level(p: dict, h: int, w: int) -> float:
    """FLOPs of DIS at one level of (h, w): structure tensor, inverse search (gradient descent
    at its cap), densification, variational refinement."""
    psz, stride = int(p["PatchSize"]), int(p["PatchStride"])
    ws, hs = 1 + (w - psz) // stride, 1 + (h - psz) // stride
    patches, n = ws * hs, psz * psz
    norm, spatial = bool(p["UseMeanNormalization"]), bool(p["UseSpatialPropagation"])
    passes = 2 if spatial else 1
    ssd = (DIS_SSD_NORM if norm else DIS_SSD) * n + 12
    step = (DIS_PATCH_NORM if norm else DIS_PATCH) * n + DIS_PATCH_FIXED
    per_patch = (3 * ssd if spatial else 0) + DIS_HESSIAN + (int(p["GradientDescentIterations"]) // passes) * step
    vr = int(p["VariationalRefinementIterations"])
    flops = h * w * (DIS_GRADIENT + DIS_TENSOR_ROW + 2) + h * ws * DIS_TENSOR_COL
    flops += passes * patches * per_patch + patches * n * DIS_DENSIFY
    return flops + (h * w * (VR_PREPARE + vr * VR_ITERATION) if vr > 0 else 0)


def dis_gflops(params: dict, h: int, w: int) -> float:
    """Upper bound on the GFLOPs of one DIS field at (h, w) from its effective parameters
    (``extract.flow``'s describe: FinestScale, PatchSize, PatchStride, GradientDescentIterations,
    VariationalRefinementIterations, UseMeanNormalization, UseSpatialPropagation).

    Counted per level: the INTER_AREA pyramid of both frames, Sobel gradients, the structure
    tensor's running sums, the inverse search (per patch and pass: 3 candidate SSDs with
    spatial propagation, the 2x2 inverse, every gradient-descent step to the cap
    floor(iterations / passes)), densification (every pixel x every patch covering it),
    variational refinement (5 SOR sweeps per fixed-point iteration, as DIS sets), the flow's
    up-sampling between levels and to the full size."""
    levels = _dis_levels(params, h, w)
    flops = 2 * DIS_AREA * h * w + UPSAMPLE * h * w
    for i, (lh, lw) in enumerate(levels):
        flops += _dis_level(params, lh, lw)
        if i > 0:
            flops += 2 * DIS_AREA * levels[i - 1][0] * levels[i - 1][1] + UPSAMPLE * levels[i - 1][0] * levels[i - 1][1]
    return flops / 1e9


DIS = FlowCost(
    lambda p: (UPPER_BOUND, "every gradient-descent step DIS may take per patch (it stops a patch early "
                            "when its SSD stops falling); the rest of its loops counted"),
    lambda p, prev, nxt, run: FieldCosts(np.full(prev.shape[0], dis_gflops(p, *prev.shape[1:]))))
