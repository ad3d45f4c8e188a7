"""Batched TV-L1 optical flow in PyTorch: many frame pairs at once, on CPU or GPU.

The TV-L1 duality algorithm of Zach, Pock & Bischof (2007) as OpenCV's
``cv::optflow::DualTVL1OpticalFlow`` implements it (Sánchez Pérez et al.'s variant), step for
step, so that its flow agrees with OpenCV's for the same parameters:

- pyramid: each level is the previous one resized by ``scale_step`` (bilinear, half-pixel
  centres, edge clamp, size rounded to nearest); levels smaller than 16 px are dropped;
- per level: centred image gradients of I1 (one-sided halves at the border), then ``warps``
  times: bicubic warp of I1 and its gradients by the current flow (zero outside the image),
  then up to ``outer_iterations`` x ``inner_iterations`` primal-dual steps, each outer pass
  starting with a 5x5 median filter of the flow; a pair stops when the squared flow change
  of one step summed over its pixels falls to ``epsilon**2 * H * W``;
- the flow is upsampled bilinearly to the next finer level and divided by ``scale_step``.

Batching: the stopping rule is applied per pair with a mask, so every pair gets exactly the
iterations OpenCV would give it; the loop only ends early when all pairs have stopped.
Only ``gamma == 0`` (OpenCV's default, no illumination term) is implemented.

Counting: with ``return_iterations`` every pair's primal-dual steps are counted per pyramid
level and warp as they run: one element-wise add on a (B,) tensor per step, no extra host
sync (its cost, measured beside the uncounted solver: benchmarks/README.md).
A pair counts the steps it was active for (what OpenCV would run for it), not the masked
steps a batch computes while waiting for its slowest pair. :mod:`extract.flow_cost` turns
the counts into FLOPs.

Speed: each primal-dual step is one function (``_step``); ``compile=True`` runs it through
``torch.compile``, which fuses its ~70 element-wise operations into a few kernels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["TVL1Params", "pyramid_sizes", "resolve_device", "tvl1_batch", "tvl1_tensors"]

# How often (inner iterations) the loop asks whether every pair has stopped. Asking forces a
# GPU sync; the per-pair masks keep the result exact whatever this is.
_CHECK_EVERY = 10
_MEDIAN_CHUNK = 16  # pairs per median-filter call: the 5x5 unfold needs 25x the flow's memory


@dataclass(frozen=True)
class TVL1Params:
    """TV-L1 parameters, OpenCV's names mapped to snake case; defaults are OpenCV's."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    @classmethod
    def from_dict(cls, params: dict) -> "TVL1Params":
        """Build from extract.flow's parameter dict (keys as there; extra keys ignored)."""
        names = {f: f for f in cls.__dataclass_fields__} | {"lambda": "lambda_"}
        return cls(**{names[k]: v for k, v in params.items() if k in names and k != "lambda_"})

    def __post_init__(self):
        if self.gamma != 0:
            raise InputError("tvl1-torch implements gamma == 0 only (OpenCV's default)")
        if not 0 < self.scale_step < 1 or self.nscales < 1 or self.warps < 1:
            raise InputError(f"invalid TV-L1 pyramid parameters: {self}")
        if self.median_filtering not in (0, 1, 3, 5):
            raise InputError("median_filtering must be 0/1 (off), 3 or 5 (as OpenCV's float median)")


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:N' as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown torch device {name!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but torch sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return dev


# ----------------------------------------------------------------------------- image operators


def _linear_taps(n_in: int, n_out: int, inv_scale: float, device):
    """OpenCV INTER_LINEAR source taps along one axis: indices (n_out,) x2 and weight (n_out,)."""
    scale = 1.0 / inv_scale
    pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).float()
    lo = torch.floor(pos)
    frac = pos - lo
    lo = lo.long()
    frac = torch.where(lo < 0, torch.zeros_like(frac), frac)
    lo = lo.clamp(min=0)
    top = lo >= n_in - 1
    frac = torch.where(top, torch.zeros_like(frac), frac)
    lo = torch.where(top, torch.full_like(lo, n_in - 1), lo)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo.to(device), hi.to(device), frac.to(device)


def resize_linear(x: torch.Tensor, size: tuple[int, int], inv_scale: tuple[float, float]):
    """cv2.resize(INTER_LINEAR) of (B, H, W) float32 to (B, h, w); inv_scale = (fy, fx)."""
    lo, hi, f = _linear_taps(x.shape[2], size[1], inv_scale[1], x.device)
    x = x[:, :, lo] * (1 - f) + x[:, :, hi] * f
    lo, hi, f = _linear_taps(x.shape[1], size[0], inv_scale[0], x.device)
    return x[:, lo] * (1 - f)[:, None] + x[:, hi] * f[:, None]


def centered_gradient(x: torch.Tensor):
    """(B, H, W) -> d/dx, d/dy: central differences, half one-sided differences at borders."""
    p = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(u: torch.Tensor):
    """(B, H, W) -> forward differences, zero in the last column (dx) / last row (dy)."""
    dx = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 1))
    dy = F.pad(u[:, 1:, :] - u[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(v1: torch.Tensor, v2: torch.Tensor):
    """Backward-difference divergence of (v1, v2), each (B, H, W), zero outside top/left."""
    return (v1 - F.pad(v1[:, :, :-1], (1, 0))) + (v2 - F.pad(v2[:, :-1, :], (0, 0, 1, 0)))


def median_filter(u: torch.Tensor, k: int):
    """cv2.medianBlur(k) of (B, H, W) float32 with replicated borders."""
    r = k // 2
    out = torch.empty_like(u)
    for s in range(0, u.shape[0], _MEDIAN_CHUNK):
        p = F.pad(u[s:s + _MEDIAN_CHUNK, None], (r, r, r, r), mode="replicate")[:, 0]
        win = p.unfold(1, k, 1).unfold(2, k, 1)  # (b, H, W, k, k)
        out[s:s + _MEDIAN_CHUNK] = win.reshape(*win.shape[:3], k * k).median(dim=-1).values
    return out


def warp_bicubic(images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor):
    """cv2.remap(INTER_CUBIC, BORDER_CONSTANT 0) of (B, C, H, W) at (x + u1, y + u2)."""
    _, _, h, w = images.shape
    xs = torch.arange(w, device=u1.device, dtype=u1.dtype)
    ys = torch.arange(h, device=u1.device, dtype=u1.dtype)
    gx = (xs + u1) * (2.0 / (w - 1)) - 1.0
    gy = (ys[:, None] + u2) * (2.0 / (h - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


# ----------------------------------------------------------------------------- the solver


_STATE = ("u1", "u2", "p11", "p12", "p21", "p22")


def _step(u1, u2, p11, p12, p21, p22, i1wx, i1wy, grad, rho_c, m, l_t: float, taut: float,
          theta: float):
    """One primal-dual step for every pair; pairs where ``m`` (B, 1, 1) is False keep their state.

    Returns the six new state tensors and the per-pair squared flow change (B,). The operation
    order of each float expression is OpenCV's (it moves the result by ~1e-3 px at the
    defaults), and it is one function so that ``torch.compile`` can fuse it into few kernels.
    """
    # data term: thresholding operator TH (OpenCV's estimateV)
    rho = rho_c + (i1wx * u1 + i1wy * u2)
    lg = l_t * grad
    fi = torch.where(grad > torch.finfo(grad.dtype).eps, -rho / grad.clamp_min(1e-30), 0.0)
    fi = torch.where(rho < -lg, l_t, torch.where(rho > lg, -l_t, fi))
    # primal update (estimateU) and its stopping measure
    n1 = (u1 + fi * i1wx) + theta * divergence(p11, p12)
    n2 = (u2 + fi * i1wy) + theta * divergence(p21, p22)
    err = ((n1 - u1) ** 2 + (n2 - u2) ** 2).sum(dim=(1, 2))
    u1 = torch.where(m, n1, u1)
    u2 = torch.where(m, n2, u2)
    # dual update (estimateDualVariables)
    u1x, u1y = forward_gradient(u1)
    u2x, u2y = forward_gradient(u2)
    ng1 = 1.0 + taut * torch.hypot(u1x, u1y)
    ng2 = 1.0 + taut * torch.hypot(u2x, u2y)
    p11 = torch.where(m, (p11 + taut * u1x) / ng1, p11)
    p12 = torch.where(m, (p12 + taut * u1y) / ng1, p12)
    p21 = torch.where(m, (p21 + taut * u2x) / ng2, p21)
    p22 = torch.where(m, (p22 + taut * u2y) / ng2, p22)
    return u1, u2, p11, p12, p21, p22, err


_COMPILED: dict = {}


def _step_fn(compile: bool):
    """The step, eager or through ``torch.compile`` (built once per process)."""
    if not compile:
        return _step
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_step, dynamic=None)
    return _COMPILED["step"]


def _inner_steps(st: dict, data: tuple, active, n: int, prm: TVL1Params, eps: float, step, ran):
    """Up to ``n`` primal-dual steps on the pairs still ``active`` (B,) bool; returns active.
    ``ran`` (B,) int32 counts, in place, the steps each pair was active for (None: no count)."""
    l_t, taut = prm.lambda_ * prm.theta, prm.tau / prm.theta
    for _ in range(n):
        *state, err = step(*(st[k] for k in _STATE), *data, active[:, None, None], l_t, taut,
                           prm.theta)
        st.update(zip(_STATE, state))
        if ran is not None:
            ran += active
        active = active & (err > eps)
    return active


def _warp_pass(st: dict, i0, i1_stack, prm: TVL1Params, step, ran):
    """One warping: linearise I1 around the current flow, then the outer/inner loops;
    ``ran`` (B,) int32 receives each pair's primal-dual steps."""
    b, _, h, w = i1_stack.shape
    i1w, i1wx, i1wy = warp_bicubic(i1_stack, st["u1"], st["u2"]).unbind(1)
    grad = i1wx * i1wx + i1wy * i1wy
    rho_c = i1w - i1wx * st["u1"] - i1wy * st["u2"] - i0
    data = (i1wx, i1wy, grad, rho_c)
    eps = float(np.float32(prm.epsilon * prm.epsilon * h * w))
    active = torch.ones(b, dtype=torch.bool, device=i0.device)
    for _ in range(prm.outer_iterations):
        if prm.median_filtering > 1:
            m = active[:, None, None]
            st["u1"] = torch.where(m, median_filter(st["u1"], prm.median_filtering), st["u1"])
            st["u2"] = torch.where(m, median_filter(st["u2"], prm.median_filtering), st["u2"])
        for start in range(0, prm.inner_iterations, _CHECK_EVERY):
            n = min(_CHECK_EVERY, prm.inner_iterations - start)
            active = _inner_steps(st, data, active, n, prm, eps, step, ran)
            if not bool(active.any()):
                return


def _one_scale(i0, i1, u1, u2, prm: TVL1Params, step, ran):
    """Flow at one pyramid level: (B, H, W) images and initial flow -> refined (u1, u2);
    ``ran`` (B, warps) int32 receives each pair's primal-dual steps per warp."""
    i1x, i1y = centered_gradient(i1)
    i1_stack = torch.stack([i1, i1x, i1y], dim=1)  # warped together in one grid_sample
    zeros = torch.zeros_like(i0)
    st = {"u1": u1, "u2": u2, "p11": zeros, "p12": zeros, "p21": zeros, "p22": zeros}
    for w in range(prm.warps):
        _warp_pass(st, i0, i1_stack, prm, step, None if ran is None else ran[:, w])
    return st["u1"], st["u2"]


def pyramid_sizes(h: int, w: int, prm: TVL1Params) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level, finest first, as OpenCV sizes them: each level is the
    previous one times ``scale_step``, rounded; levels under 16 px are dropped."""
    sizes = [(int(h), int(w))]
    for _ in range(1, prm.nscales):
        size = (round(sizes[-1][0] * prm.scale_step), round(sizes[-1][1] * prm.scale_step))
        if size[0] < 16 or size[1] < 16:  # OpenCV checks after resizing; same outcome
            break
        sizes.append(size)
    return sizes


def _pyramid(i0, i1, prm: TVL1Params):
    """Lists of (B, h, w) levels, finest first, built as OpenCV builds them."""
    i0s, i1s = [i0], [i1]
    step = (prm.scale_step, prm.scale_step)
    for size in pyramid_sizes(*i0.shape[1:], prm)[1:]:
        i0s.append(resize_linear(i0s[-1], size, step))
        i1s.append(resize_linear(i1s[-1], size, step))
    return i0s, i1s


@torch.no_grad()
def tvl1_batch(i0: torch.Tensor, i1: torch.Tensor, prm: TVL1Params = TVL1Params(), *,
               compile: bool = False, return_iterations: bool = False):
    """TV-L1 flow from i0 to i1.

    i0, i1: (B, H, W) grey levels in 0..255, uint8 or float32 (float64 also works), on any
    device. Returns (B, H, W, 2) flow (x, y), float32 (float64 for float64 input), same device.
    ``compile``: run the primal-dual step through ``torch.compile`` (fused kernels; 1.6x on
    this project's CPU, see benchmarks/README.md). Needs a C++ compiler on the CPU, Triton on
    CUDA; the first call per process and image size pays the compilation (seconds).
    ``return_iterations``: return ``(flow, iterations)`` instead, iterations (B, S, warps)
    int32 on the same device: the primal-dual steps each pair ran at each of the S pyramid
    levels (finest first, :func:`pyramid_sizes`) and warps (0 past the last).
    """
    if i0.shape != i1.shape or i0.ndim != 3 or min(i0.shape[1:]) < 3:
        raise InputError(f"expected two (B, H, W) image batches, got {tuple(i0.shape)}, "
                         f"{tuple(i1.shape)}")
    dtype = i0.dtype if i0.is_floating_point() else torch.float32  # float64 for studies
    step = _step_fn(compile)
    i0s, i1s = _pyramid(i0.to(dtype), i1.to(dtype), prm)
    ran = (torch.zeros((i0.shape[0], len(i0s), prm.warps), dtype=torch.int32, device=i0.device)
           if return_iterations else None)
    u1 = torch.zeros_like(i0s[-1])
    u2 = torch.zeros_like(i0s[-1])
    for s in range(len(i0s) - 1, -1, -1):
        try:
            u1, u2 = _one_scale(i0s[s], i1s[s], u1, u2, prm, step, None if ran is None else ran[:, s])
        except torch._dynamo.exc.BackendCompilerFailed as err:  # only with compile=True
            raise InputError(f"tvl1-torch compile=true failed on {i0.device.type} (a C++ "
                             f"compiler is needed on the CPU, Triton on CUDA); use compile=false: "
                             f"{str(err).splitlines()[0]}") from None
        if s == 0:
            break
        size = tuple(i0s[s - 1].shape[1:])
        inv = (size[0] / u1.shape[1], size[1] / u1.shape[2])
        u1 = resize_linear(u1, size, inv) * (1.0 / prm.scale_step)
        u2 = resize_linear(u2, size, inv) * (1.0 / prm.scale_step)
    flow = torch.stack([u1, u2], dim=-1)
    return (flow, ran) if return_iterations else flow


def tvl1_tensors(prev: torch.Tensor, nxt: torch.Tensor, params: dict):
    """extract.flow's backend: (N, H, W) uint8 pairs on any device -> ((N, H, W, 2) float32 on
    the same device, iterations (N, S, warps) int32 numpy: see :func:`tvl1_batch`), solved in
    batches of ``params['batch_size']`` on ``params['device']`` (frames already there are not
    copied), compiled when ``params['compile']``."""
    prm = TVL1Params.from_dict(params)
    device = resolve_device(params.get("device", "auto"))
    batch = int(params.get("batch_size", 64))
    if batch < 1:
        raise InputError(f"batch_size must be >= 1, got {batch}")
    compile = bool(params.get("compile", False))
    out = torch.empty((*prev.shape, 2), dtype=torch.float32, device=prev.device)
    ran = []
    for s in range(0, prev.shape[0], batch):
        a, b = prev[s:s + batch].to(device), nxt[s:s + batch].to(device)
        flow, iters = tvl1_batch(a, b, prm, compile=compile, return_iterations=True)
        out[s:s + batch] = flow.to(out.device)
        ran.append(iters)
    log.debug("tvl1-torch: %d pairs on %s in %d batches", prev.shape[0], device,
              math.ceil(prev.shape[0] / batch))
    levels = len(pyramid_sizes(*prev.shape[1:], prm))
    iters = torch.cat(ran).cpu().numpy() if ran else np.zeros((0, levels, prm.warps), np.int32)
    return out, iters
