"""The image operators of the torch TV-L1 (:mod:`extract.flow_torch`), each the one OpenCV's
``tvl1flow.cpp`` uses, batched over pairs: bilinear resizing with OpenCV's taps for the
pyramid, centred and forward gradients, the divergence, the 3x3/5x5 median
(:mod:`extract.flow_median`'s exact sorting networks) and bicubic warping.

Shapes: N pairs, H x W pixels; every operator takes and returns float32 tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from extract.flow_median import median_filter as median_network

_MEDIAN_CHUNK = 16  # pairs per median-filter call on the CPU: the network's wires need ~25x the flow's memory


def linear_taps(n_in: int, n_out: int, inv_scale: float, device):
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
    lo, hi, f = linear_taps(x.shape[2], size[1], inv_scale[1], x.device)
    x = x[:, :, lo] * (1 - f) + x[:, :, hi] * f
    lo, hi, f = linear_taps(x.shape[1], size[0], inv_scale[0], x.device)
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


def median_filter(u: torch.Tensor, k: int, network=median_network):
    """cv2.medianBlur(k) of (B, H, W) float32 with replicated borders: exactly the window
    medians, by :mod:`extract.flow_median`'s sorting networks (``network``: that filter, or
    its compiled form); on the CPU ``_MEDIAN_CHUNK`` pairs at a time (its wires hold up to
    k*k flow-sized tensors), on a GPU the whole batch in one call."""
    if u.device.type != "cpu" or u.shape[0] <= _MEDIAN_CHUNK:
        return network(u, k)
    return torch.cat([network(u[s:s + _MEDIAN_CHUNK], k) for s in range(0, u.shape[0], _MEDIAN_CHUNK)])


def warp_bicubic(images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor):
    """cv2.remap(INTER_CUBIC, BORDER_CONSTANT 0) of (B, C, H, W) at (x + u1, y + u2)."""
    _, _, h, w = images.shape
    xs = torch.arange(w, device=u1.device, dtype=u1.dtype)
    ys = torch.arange(h, device=u1.device, dtype=u1.dtype)
    gx = (xs + u1) * (2.0 / (w - 1)) - 1.0
    gy = (ys[:, None] + u2) * (2.0 / (h - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
