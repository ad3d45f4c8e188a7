"""Dense optical flow for the flow stream: OpenCV TV-L1 (CPU or CUDA), Farneback, DIS, torch TV-L1.

Every algorithm sits in one explicit registry (:mod:`extract.flow_registry`) filled by ``@register_flow``
(:mod:`extract.flow_algorithms`),
each entry with its cost model (:mod:`extract.flow_cost`); ``compute_pairs`` is the entry
point the extractor calls, ``field_costs`` prices what it computed. Conventions (GUIDE §4):

- flow channel 0 is x (columns, rightwards), channel 1 is y (rows, downwards), in pixels of
  the frames given, such that ``frame1[y + v, x + u] ~ frame0[y, x]``;
- values are clipped to ``±bound`` (TSN/denseflow use 20);
- with ``quantize`` the clipped flow goes through TSN's uint8 mapping and back, so what is
  stored equals what a network trained on TSN's flow JPEGs saw (minus JPEG loss).

A position needs L+1 decoded frames for its L pairs; which frames those are (and what happens
at the end of a video, where n frames give only n-1 fields) is the sampler's decision, not ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from data.errors import InputError
from extract.arrays import as_tensor
from extract import flow_params
from extract.flow_cost import FieldCosts
# the algorithms register themselves on import (extract/flow_algorithms.py)
from extract.flow_algorithms import (OPENCV_TVL1_DEFAULTS, opencv_cuda_tvl1, opencv_tvl1_defaults,  # noqa: F401
                                     tvl1_defaults)
from extract.flow_registry import (flow_algorithms, get_algorithm, opencv_version,  # noqa: F401
                                   register_flow)

log = logging.getLogger(__name__)

__all__ = [
    "FlowConfig",
    "compute_pairs",
    "compute_stacks",
    "cost_label",
    "field_costs",
    "solve_pairs",
    "flow_algorithms",
    "motion_magnitude",
    "opencv_version",
    "quantize_flow",
    "dequantize_flow",
    "register_flow",
    "auto_algorithm",
    "choose_tvl1",
    "opencv_cuda_tvl1",
    "opencv_tvl1_defaults",
    "tvl1_defaults",
    "OPENCV_TVL1_DEFAULTS",
]

@dataclass(frozen=True)
class FlowConfig:
    """How flow is computed. ``params`` holds user overrides on construction and, once
    constructed, every parameter of the algorithm (defaults filled in) as sorted pairs, so
    two configs that compute the same flow compare equal."""

    algorithm: str = "tvl1"
    bound: float = 20.0
    quantize: bool = False
    params: tuple = ()
    threads: int = 0

    def __post_init__(self):
        algo = get_algorithm(self.algorithm)
        if not (isinstance(self.bound, (int, float)) and np.isfinite(self.bound) and self.bound > 0):
            raise InputError(f"flow bound must be a positive number, got {self.bound!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise InputError(f"flow threads must be an int >= 0, got {self.threads!r}")
        object.__setattr__(self, "bound", float(self.bound))
        object.__setattr__(self, "quantize", bool(self.quantize))
        object.__setattr__(self, "params", flow_params.resolve(algo.name, algo.defaults(), algo.rules,
                                                               self.params))

    def as_dict(self) -> dict:
        """Every parameter (effective values) plus the OpenCV version, for the store's attrs."""
        algo = get_algorithm(self.algorithm)
        params = dict(self.params)
        effective = algo.describe(params) if algo.describe else params
        return {
            "algorithm": self.algorithm,
            "bound": self.bound,
            "quantize": self.quantize,
            "threads": self.threads,
            "opencv_version": opencv_version(),
            "params": dict(sorted(effective.items())),
        }


# ----------------------------------------------------------------------------- public API


def quantize_flow(flow, bound: float):
    """TSN/denseflow mapping: (..., 2) float flow in [-bound, bound] -> uint8 0..255 (numpy
    in, numpy out; a tensor in, a tensor on its device out)."""
    t, back = as_tensor(flow)
    scaled = (t.clamp(-bound, bound) + bound) * (255.0 / (2.0 * bound))
    return back(scaled.round().clamp_(0, 255).to(torch.uint8))


def dequantize_flow(q, bound: float):
    """Inverse of ``quantize_flow``: uint8 -> float32 in [-bound, bound] (numpy or tensor)."""
    t, back = as_tensor(q)
    return back(t.float() * float(np.float32(2.0 * bound / 255.0)) - float(np.float32(bound)))


def _check_gray(gray) -> np.ndarray:
    if not isinstance(gray, np.ndarray) or gray.ndim != 4 or gray.dtype != np.uint8:
        desc = f"{gray.dtype} {gray.shape}" if isinstance(gray, np.ndarray) else type(gray).__name__
        raise InputError(f"gray frames must be a (P, L+1, H, W) uint8 array, got {desc}")
    p, l1, h, w = gray.shape
    if l1 < 2 or h < 8 or w < 8:
        raise InputError(f"need >= 2 frames per position and frames >= 8x8, got {gray.shape}")
    return np.ascontiguousarray(gray)


def compute_pairs(prev: torch.Tensor, nxt: torch.Tensor, cfg: FlowConfig) -> torch.Tensor:
    """Flow from each frame of ``prev`` to the same row of ``nxt``: (N, H, W) uint8 tensors on
    any device -> (N, H, W, 2) float32 on that device, clipped to ±cfg.bound and
    quantised+dequantised when cfg.quantize. A numpy algorithm (OpenCV's) gets the frames
    copied to the CPU and its flow copied back; a tensor one (tvl1-torch) reads them in place."""
    return solve_pairs(prev, nxt, cfg)[0]


def solve_pairs(prev: torch.Tensor, nxt: torch.Tensor, cfg: FlowConfig):
    """:func:`compute_pairs` and what the algorithm reported of its run (for
    :func:`field_costs`; None when it reports nothing): ``(flow, run)``."""
    algo = get_algorithm(cfg.algorithm)
    old_threads = cv2.getNumThreads()
    if cfg.threads > 0:  # 0 keeps OpenCV's default (cv2.setNumThreads(0) would disable threads)
        cv2.setNumThreads(cfg.threads)
    try:
        if algo.tensors:
            out = algo.compute(prev, nxt, dict(cfg.params))
        else:
            out = algo.compute(prev.cpu().numpy(), nxt.cpu().numpy(), dict(cfg.params))
    finally:
        if cfg.threads > 0:
            cv2.setNumThreads(old_threads)
    out, run = out if algo.reports else (out, None)
    flow = torch.as_tensor(out).to(prev.device, torch.float32).clamp_(-cfg.bound, cfg.bound)
    if cfg.quantize:
        flow = dequantize_flow(quantize_flow(flow, cfg.bound), cfg.bound)
    return flow, run


def field_costs(prev: torch.Tensor, nxt: torch.Tensor, cfg: FlowConfig, run=None) -> FieldCosts:
    """GFLOPs (and iterations, where known) of the N fields :func:`solve_pairs` computed from
    these (N, H, W) uint8 frames (``run``: its report for them), by the algorithm's cost model
    from its effective parameters."""
    algo, params = get_algorithm(cfg.algorithm), dict(cfg.params)
    return algo.cost.fields(algo.describe(params) if algo.describe else params, prev, nxt, run)


def cost_label(cfg: FlowConfig) -> tuple[str, str]:
    """(kind, how) of cfg's flow cost numbers: counted, estimated or upper bound, and a sentence."""
    algo, params = get_algorithm(cfg.algorithm), dict(cfg.params)
    return algo.cost.label(algo.describe(params) if algo.describe else params)


def compute_stacks(gray: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    """Flow stacks for P positions.

    gray: (P, L+1, H, W) uint8, L+1 consecutive frames per position.
    Returns (P, L, H, W, 2) float32 flow (x, y) between frames l and l+1, clipped to
    ±cfg.bound, and quantised+dequantised when cfg.quantize (see :func:`compute_pairs`).
    """
    gray = _check_gray(gray)
    p, l1, h, w = gray.shape
    prev = np.ascontiguousarray(gray[:, :-1]).reshape(p * (l1 - 1), h, w)
    nxt = np.ascontiguousarray(gray[:, 1:]).reshape(p * (l1 - 1), h, w)
    flow = compute_pairs(torch.from_numpy(prev), torch.from_numpy(nxt), cfg)
    return flow.numpy().reshape(p, l1 - 1, h, w, 2)


def motion_magnitude(flow):
    """Mean flow magnitude per position: (P, L, H, W, 2) float -> (P,) float32 (pixels),
    computed in float64; numpy in, numpy out; a tensor in, a tensor on its device out."""
    if not isinstance(flow, (np.ndarray, torch.Tensor)) or flow.ndim != 5 or flow.shape[-1] != 2:
        shape = getattr(flow, "shape", None)
        raise InputError(f"flow must be a (P, L, H, W, 2) array, got shape {shape}")
    t, back = as_tensor(flow)
    mag = torch.hypot(t[..., 0].double(), t[..., 1].double())
    return back(mag.reshape(t.shape[0], -1).mean(dim=1).float())


# ----------------------------------------------------------------------------- automatic choice


def choose_tvl1(opencv_cuda: bool, torch_cuda: bool) -> str:
    """The TV-L1 backend for a machine with these capabilities (GUIDE §5's order):
    OpenCV's CUDA TV-L1 when OpenCV was built with CUDA and sees a device, else the torch
    TV-L1 on a CUDA device, else OpenCV's CPU TV-L1."""
    if opencv_cuda:
        return "tvl1-cuda"
    if torch_cuda:
        return "tvl1-torch"
    return "tvl1"


def auto_algorithm() -> str:
    """What ``--flow auto`` means on this machine: a registered name (see ``choose_tvl1``).
    The PyPI OpenCV wheels have no CUDA, so the first branch needs a user-built OpenCV."""
    import torch  # lazy: OpenCV-only runs need not load torch to choose

    return choose_tvl1(opencv_cuda_tvl1(), torch.cuda.is_available())
