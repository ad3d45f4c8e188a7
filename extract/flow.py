"""Dense optical flow for the flow stream: OpenCV TV-L1 (CPU or CUDA), Farneback, DIS, torch TV-L1.

Every algorithm sits in one explicit registry (``_ALGORITHMS``) filled by ``@register_flow``,
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
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from data.errors import InputError, UnknownNameError
from extract.arrays import as_tensor
from extract import flow_cost, flow_params
from extract.flow_cost import FieldCosts, FlowCost

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
]

PairFn = Callable[[np.ndarray, np.ndarray, dict], np.ndarray]


@dataclass(frozen=True)
class _Algorithm:
    """A registered flow algorithm.

    ``defaults()`` returns every parameter with its default (name -> int/float/bool/str);
    ``compute(prev, next, params)`` maps two (N, H, W) uint8 arrays to (N, H, W, 2) float32;
    ``describe(params)`` returns the effective parameters to record (defaults to ``params``);
    ``rules`` maps each parameter to its allowed range (:mod:`extract.flow_params`);
    ``tensors``: ``compute`` takes and returns torch tensors on their device (a GPU algorithm
    reads frames where the device stage holds them), not numpy arrays;
    ``cost``: what a field costs (:class:`extract.flow_cost.FlowCost`, priced from the
    effective parameters); ``reports``: ``compute`` returns ``(flow, run)``, ``run`` being
    what the cost model reads of the run (tvl1-torch: its iterations), else the flow alone.
    """

    name: str
    defaults: Callable[[], dict]
    compute: PairFn
    cost: FlowCost
    describe: Callable[[dict], dict] | None = None
    rules: dict = field(default_factory=dict)
    tensors: bool = False
    reports: bool = False


_ALGORITHMS: dict[str, _Algorithm] = {}


def register_flow(name: str, defaults: Callable[[], dict], *, cost: FlowCost, describe=None, rules=None,
                  tensors=False, reports=False):
    """Decorator registering ``fn(prev, next, params)`` as flow algorithm ``name`` (the
    arguments as the fields of :class:`_Algorithm`; every algorithm has a cost model)."""

    def deco(fn: PairFn) -> PairFn:
        if name in _ALGORITHMS:
            raise ValueError(f"flow algorithm {name!r} is already registered")
        if not isinstance(cost, FlowCost):
            raise ValueError(f"flow algorithm {name!r} needs a cost model (extract.flow_cost.FlowCost)")
        _ALGORITHMS[name] = _Algorithm(name, defaults, fn, cost, describe, dict(rules or {}), tensors, reports)
        return fn

    return deco


def flow_algorithms() -> list[str]:
    """Names of the registered flow algorithms, sorted."""
    return sorted(_ALGORITHMS)


def opencv_version() -> str:
    """The OpenCV version that computes the flow (recorded in the store's attrs)."""
    return cv2.__version__


def _get_algorithm(name: str) -> _Algorithm:
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise UnknownNameError("flow algorithm", name, _ALGORITHMS) from None


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
        algo = _get_algorithm(self.algorithm)
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
        algo = _get_algorithm(self.algorithm)
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


# ----------------------------------------------------------------------------- OpenCV TV-L1

# our name -> (constructor keyword, getter); OpenCV spells the keyword "innnerIterations"
# and calls lambda "lambda_" (GUIDE §7). useInitialFlow is left out: we never pass a flow in.
_TVL1_FIELDS = {
    "tau": ("tau", "getTau"),
    "lambda": ("lambda_", "getLambda"),
    "theta": ("theta", "getTheta"),
    "nscales": ("nscales", "getScalesNumber"),
    "warps": ("warps", "getWarpingsNumber"),
    "epsilon": ("epsilon", "getEpsilon"),
    "inner_iterations": ("innnerIterations", "getInnerIterations"),
    "outer_iterations": ("outerIterations", "getOuterIterations"),
    "scale_step": ("scaleStep", "getScaleStep"),
    "gamma": ("gamma", "getGamma"),
    "median_filtering": ("medianFiltering", "getMedianFiltering"),
}

_TVL1_DEFAULTS: dict = {}


def tvl1_defaults() -> dict:
    """OpenCV's own TV-L1 defaults, read back from a default-constructed object."""
    if not _TVL1_DEFAULTS:
        obj = cv2.optflow.DualTVL1OpticalFlow_create()
        for ours, (_, getter) in _TVL1_FIELDS.items():
            value = getattr(obj, getter)()
            _TVL1_DEFAULTS[ours] = value if isinstance(value, (bool, int)) else float(value)
    return dict(_TVL1_DEFAULTS)


def _pairwise(calc, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """(N, H, W, 2) float32 from an OpenCV ``calc(prev, next, None)`` applied pair by pair."""
    out = np.empty(prev.shape + (2,), np.float32)
    for i in range(prev.shape[0]):
        out[i] = calc(prev[i], nxt[i], None)
    return out


def _tvl1_create(params: dict):
    kwargs = {_TVL1_FIELDS[k][0]: v for k, v in params.items() if k in _TVL1_FIELDS}
    return cv2.optflow.DualTVL1OpticalFlow_create(**kwargs)


@register_flow("tvl1", tvl1_defaults, cost=flow_cost.TVL1_OPENCV, rules=flow_params.TVL1)
def _tvl1(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    # One object per call, not per pair and not per process: calc() permanently lowers the
    # object's scale count when an image is too small for it, so a process-wide cache could
    # silently carry that into later, larger videos.
    return _pairwise(_tvl1_create(params).calc, prev, nxt)


# ----------------------------------------------------------------------------- Farneback


def _farneback_defaults() -> dict:
    return {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3,
            "poly_n": 5, "poly_sigma": 1.2, "flags": 0}


@register_flow("farneback", _farneback_defaults, cost=flow_cost.FARNEBACK, rules=flow_params.FARNEBACK)
def _farneback(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    p = params
    out = np.empty(prev.shape + (2,), np.float32)
    for i in range(prev.shape[0]):
        out[i] = cv2.calcOpticalFlowFarneback(
            prev[i], nxt[i], None, p["pyr_scale"], p["levels"], p["winsize"],
            p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])
    return out


# ----------------------------------------------------------------------------- DIS

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_DIS_GETTERS = ("FinestScale", "PatchSize", "PatchStride", "GradientDescentIterations",
                "VariationalRefinementIterations", "VariationalRefinementAlpha",
                "VariationalRefinementDelta", "VariationalRefinementGamma",
                "UseMeanNormalization", "UseSpatialPropagation")


def _dis_create(params: dict):
    preset = params["preset"]
    if preset not in _DIS_PRESETS:
        raise InputError(f"DIS preset {preset!r} unknown; valid: {', '.join(_DIS_PRESETS)}")
    return cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])


def _dis_describe(params: dict) -> dict:
    """The preset plus every value it implies, read back from the object."""
    obj = _dis_create(params)
    out = dict(params)
    for name in _DIS_GETTERS:
        value = getattr(obj, "get" + name)()
        out[name] = value if isinstance(value, (bool, int)) else round(float(value), 6)
    return out


@register_flow("dis", lambda: {"preset": "medium"}, cost=flow_cost.DIS, describe=_dis_describe,
               rules={"preset": flow_params.one_of(*_DIS_PRESETS)})
def _dis(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    return _pairwise(_dis_create(params).calc, prev, nxt)


# ----------------------------------------------------------------------------- torch TV-L1


def _tvl1_torch_defaults() -> dict:
    # Same algorithm and defaults as OpenCV's (tests check they agree), plus where it runs.
    # "auto" means CUDA when available; batch_size bounds memory (pairs solved at once);
    # compile fuses each primal-dual step with torch.compile (needs a C++ compiler / Triton).
    return {**tvl1_defaults(), "device": "auto", "batch_size": 64, "compile": False}


def _tvl1_torch_describe(params: dict) -> dict:
    from extract.flow_torch import resolve_device

    return {**params, "device": str(resolve_device(params["device"]))}


@register_flow("tvl1-torch", _tvl1_torch_defaults, cost=flow_cost.TVL1_TORCH,
               describe=_tvl1_torch_describe, rules=flow_params.TVL1_TORCH, tensors=True, reports=True)
def _tvl1_torch(prev, nxt, params: dict):
    from extract.flow_torch import tvl1_tensors

    return tvl1_tensors(prev, nxt, params)


# ----------------------------------------------------------------------------- OpenCV CUDA TV-L1

# cv::cuda::OpticalFlowDual_TVL1 has one iteration count (no inner/outer split) and no median
# filter; its defaults are the CPU one's with iterations = inner x outer = 300.
_TVL1_CUDA_ORDER = ("tau", "lambda", "theta", "nscales", "warps", "epsilon", "iterations",
                    "scale_step", "gamma")


def _tvl1_cuda_defaults() -> dict:
    cpu = tvl1_defaults()
    out = {k: cpu[k] for k in _TVL1_CUDA_ORDER if k in cpu}
    out["iterations"] = cpu["inner_iterations"] * cpu["outer_iterations"]
    out["device_id"] = 0
    return out


def _require_opencv_cuda() -> None:
    if not opencv_cuda_tvl1():
        raise InputError(
            f"flow 'tvl1-cuda' needs an OpenCV built with CUDA (cv2.cuda_OpticalFlowDual_TVL1) "
            f"and a CUDA device; this OpenCV {cv2.__version__} has none (the PyPI wheels never "
            f"do). Use 'tvl1-torch' for GPU flow without building OpenCV, or 'auto'.")


def _tvl1_cuda_describe(params: dict) -> dict:
    _require_opencv_cuda()  # at store creation: fail before any video is decoded
    return {**params, "cuda_device": cv2.cuda.DeviceInfo(params["device_id"]).name()}


@register_flow("tvl1-cuda", _tvl1_cuda_defaults, cost=flow_cost.TVL1_CUDA,
               describe=_tvl1_cuda_describe, rules=flow_params.TVL1_CUDA)
def _tvl1_cuda(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    _require_opencv_cuda()
    cv2.cuda.setDevice(params["device_id"])
    # positional: the binding's keyword for lambda differs between OpenCV versions
    algo = cv2.cuda_OpticalFlowDual_TVL1.create(*(params[k] for k in _TVL1_CUDA_ORDER), False)
    g0, g1 = cv2.cuda_GpuMat(), cv2.cuda_GpuMat()
    out = np.empty(prev.shape + (2,), np.float32)
    for i in range(prev.shape[0]):
        g0.upload(prev[i])
        g1.upload(nxt[i])
        out[i] = algo.calc(g0, g1, None).download()
    return out


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
    algo = _get_algorithm(cfg.algorithm)
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
    algo, params = _get_algorithm(cfg.algorithm), dict(cfg.params)
    return algo.cost.fields(algo.describe(params) if algo.describe else params, prev, nxt, run)


def cost_label(cfg: FlowConfig) -> tuple[str, str]:
    """(kind, how) of cfg's flow cost numbers: counted, estimated or upper bound, and a sentence."""
    algo, params = _get_algorithm(cfg.algorithm), dict(cfg.params)
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


def opencv_cuda_tvl1() -> bool:
    """True when this OpenCV has a CUDA device and the CUDA TV-L1 class (never for PyPI wheels)."""
    cuda = getattr(cv2, "cuda", None)
    try:
        count = cuda.getCudaEnabledDeviceCount() if cuda is not None else 0
    except cv2.error:  # a build without CUDA support may raise instead of returning 0
        count = 0
    return count > 0 and hasattr(cv2, "cuda_OpticalFlowDual_TVL1")
