"""Every flow algorithm framesel computes, one section each, registered with
``@register_flow`` (:mod:`extract.flow_registry`): OpenCV's TV-L1 (CPU), Farneback and DIS,
the batched torch TV-L1 (:mod:`extract.flow_torch`) and OpenCV's CUDA TV-L1. A pair
function maps two (N, H, W) uint8 grey arrays to (N, H, W, 2) float32 flow (x, y), or takes
torch tensors on their device when registered with ``tensors=True``."""
from __future__ import annotations

import logging

import cv2
import numpy as np

from data.errors import InputError
from extract import flow_cost, flow_params
from extract.flow_registry import register_flow

log = logging.getLogger(__name__)

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

# OpenCV's DualTVL1OpticalFlow defaults (opencv_contrib optflow/src/tvl1flow.cpp, unchanged
# from 3.x to 5.0), written down as data so that tvl1-torch and tvl1-cuda need no cv2.optflow
# (the opencv-python-headless wheels have none). tests/test_flow.py reads them back from a
# default-constructed OpenCV object wherever cv2.optflow exists and requires equality.
OPENCV_TVL1_DEFAULTS = {"tau": 0.25, "lambda": 0.15, "theta": 0.3, "nscales": 5, "warps": 5,
                        "epsilon": 0.01, "inner_iterations": 30, "outer_iterations": 10,
                        "scale_step": 0.8, "gamma": 0.0, "median_filtering": 5}


def tvl1_defaults() -> dict:
    """OpenCV's own TV-L1 defaults (:data:`OPENCV_TVL1_DEFAULTS`, a copy)."""
    return dict(OPENCV_TVL1_DEFAULTS)


def opencv_tvl1_defaults() -> dict:
    """The defaults read back from a default-constructed ``cv2.optflow`` object (what
    :data:`OPENCV_TVL1_DEFAULTS` must equal); InputError when this OpenCV has no optflow."""
    optflow = getattr(cv2, "optflow", None)
    if optflow is None:
        raise InputError(f"this OpenCV {cv2.__version__} has no cv2.optflow (opencv-contrib-python "
                         f"has it; the headless wheel does not): 'tvl1' needs it, 'tvl1-torch' does not")
    obj = optflow.DualTVL1OpticalFlow_create()
    out = {}
    for ours, (_, getter) in _TVL1_FIELDS.items():
        value = getattr(obj, getter)()
        out[ours] = value if isinstance(value, (bool, int)) else float(value)
    return out


def _pairwise(calc, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """(N, H, W, 2) float32 from an OpenCV ``calc(prev, next, None)`` applied pair by pair."""
    out = np.empty(prev.shape + (2,), np.float32)
    for i in range(prev.shape[0]):
        out[i] = calc(prev[i], nxt[i], None)
    return out


def _tvl1_create(params: dict):
    if getattr(cv2, "optflow", None) is None:
        opencv_tvl1_defaults()      # raises the one-line error
    kwargs = {_TVL1_FIELDS[k][0]: v for k, v in params.items() if k in _TVL1_FIELDS}
    return cv2.optflow.DualTVL1OpticalFlow_create(**kwargs)


@register_flow("tvl1", tvl1_defaults, cost=flow_cost.TVL1_OPENCV, rules=flow_params.TVL1)
def _tvl1(prev: np.ndarray, nxt: np.ndarray, params: dict) -> np.ndarray:
    """OpenCV's dual TV-L1 on the CPU (opencv-contrib optflow), TSN's and denseflow's flow, pair by pair."""
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
    """OpenCV's Farneback polynomial-expansion flow: cheap and coarse, not the papers' TV-L1."""
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
    """OpenCV's DIS (dense inverse search) at a preset: fast, not the papers' TV-L1."""
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
    """OpenCV's TV-L1 step for step in torch, pairs batched on the CPU or a GPU, iterations counted."""
    from extract.flow_torch import tvl1_tensors

    return tvl1_tensors(prev, nxt, params)


# ----------------------------------------------------------------------------- OpenCV CUDA TV-L1

# cv::cuda::OpticalFlowDual_TVL1 has one iteration count (no inner/outer split) and no median
# filter; its defaults are the CPU one's with iterations = inner x outer = 300.
_TVL1_CUDA_ORDER = ("tau", "lambda", "theta", "nscales", "warps", "epsilon", "iterations",
                    "scale_step", "gamma")


def opencv_cuda_tvl1() -> bool:
    """True when this OpenCV has a CUDA device and the CUDA TV-L1 class (never for PyPI wheels)."""
    cuda = getattr(cv2, "cuda", None)
    try:
        count = cuda.getCudaEnabledDeviceCount() if cuda is not None else 0
    except cv2.error:  # a build without CUDA support may raise instead of returning 0
        count = 0
    return count > 0 and hasattr(cv2, "cuda_OpticalFlowDual_TVL1")


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
    """OpenCV's CUDA TV-L1 (needs an OpenCV built with CUDA; PyPI's wheels are not)."""
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
