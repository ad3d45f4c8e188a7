"""How a demo video's pixels are made: backgrounds, disc sprites, and the H.264 encoding.

data/demo.py plans every video (segments, sprites, camera) from its seed; this module only
turns a plan's pieces into pixels and bytes, with numpy (and OpenCV's resize for
backgrounds), so the same plan gives byte-identical raw frames.
"""
from __future__ import annotations

import functools
import math
import subprocess
from pathlib import Path

import numpy as np

from data.errors import StoreError, VideoError
from data.space import is_full

PHOTOS = ("china.jpg", "flower.jpg")   # shipped with scikit-learn (a core dependency)


@functools.lru_cache(maxsize=len(PHOTOS))
def _photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image
    return load_sample_image(name).astype(np.float32)


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 procedural texture: three octaves of smooth noise, random colours."""
    import cv2
    rng = np.random.default_rng(seed)
    field = np.zeros((h, w, 3), np.float32)
    for octave, weight in ((6, 1.0), (18, 0.5), (54, 0.25)):
        coarse = rng.normal(0, 1, (octave * h // w + 2, octave + 2, 3)).astype(np.float32)
        field += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    field = (field - field.mean((0, 1))) / (field.std((0, 1)) + 1e-6)
    mix = rng.uniform(0, 1, (3, 3)).astype(np.float32)
    return np.clip(128 + 45 * field @ mix / mix.sum(0, keepdims=True), 0, 255)


def background_image(bg: dict, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 source image of the segment's scene (frame plus margins)."""
    if bg["kind"] == "texture":
        return _texture(bg["seed"], h, w)
    import cv2
    img = _photo(bg["name"])
    scale = max(h / img.shape[0], w / img.shape[1]) * bg["zoom"]
    big = cv2.resize(img, (math.ceil(img.shape[1] * scale), math.ceil(img.shape[0] * scale)),
                     interpolation=cv2.INTER_AREA)
    y = int(bg["fy"] * (big.shape[0] - h))
    x = int(bg["fx"] * (big.shape[1] - w))
    out = big[y:y + h, x:x + w] * bg["gain"]
    return out[:, ::-1] if bg["flip"] else out


def _pattern(sp: dict, u: np.ndarray, v: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Pattern value in [0, 1] at object coordinates (u, v), the disc being rho < 1."""
    name = sp["pattern"]
    if name == "checker":
        s = 4 * np.sin(3 * math.pi * u) * np.sin(3 * math.pi * v)
    elif name == "dots":  # hexagonal lattice: the sum of three waves peaks on the dots
        k = 3.6 * math.pi   # lattice period ~30 px: an 11 px/frame pan stays unaliased
        s = 2 * (np.cos(k * u) + np.cos(k * (u / 2 + 0.866 * v)) + np.cos(k * (u / 2 - 0.866 * v)) - 1.2)
    elif name == "rings":
        s = 3 * np.sin(4.5 * math.pi * rho)
    elif name == "sunburst":
        s = 3 * np.sin(5 * np.arctan2(v, u))
    else:
        waves = np.asarray(sp["waves"])
        s = sum(np.cos(a * u + b * v + c) for a, b, c in waves) * 0.35
    return np.clip(0.5 + s, 0.0, 1.0)


def draw(frame: np.ndarray, sp: dict, state, offset: tuple[int, int]) -> None:
    """Alpha-composite one disc sprite into ``frame`` ((H, W, 3) uint8) in place.

    Only the sprite's bounding box is touched, in float32, rounded half up back to uint8.
    """
    cx, cy, r, angle = state
    cx, cy = cx - offset[0], cy - offset[1]
    h, w = frame.shape[:2]
    x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w)
    y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return
    dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = dx - np.float32(cx), dy - np.float32(cy)
    c, s = np.float32(math.cos(angle) / r), np.float32(math.sin(angle) / r)
    u, v = c * dx + s * dy, c * dy - s * dx
    rho = np.hypot(u, v)
    alpha = np.clip((1 - rho) * np.float32(r) + 0.5, 0, 1)[..., None]   # 1-px soft rim
    c0, c1 = (np.asarray(col, np.float32) for col in sp["colours"])
    colour = c0 + _pattern(sp, u, v, rho)[..., None] * (c1 - c0)
    box = frame[y0:y1, x0:x1].astype(np.float32)
    box += alpha * (colour - box)
    frame[y0:y1, x0:x1] = np.clip(box + 0.5, 0, 255).astype(np.uint8)


def encoder_args(cfg) -> list[str]:   # cfg: a data.demo.DemoConfig
    """ffmpeg arguments after the binary: raw rgb24 on stdin -> H.264 yuv420p CRF 18 mp4."""
    w, h = cfg.size
    return ["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-r", str(cfg.fps), "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-crf", "18", "-preset", "veryfast", "-threads", "1", "-fflags", "+bitexact",
            "-map_metadata", "-1", "-movflags", "+faststart"]


def encode(frames: np.ndarray, path: Path, cfg) -> None:
    """Encode (N, H, W, 3) uint8 frames to ``path``; VideoError with ffmpeg's stderr on failure."""
    import imageio_ffmpeg
    args = [imageio_ffmpeg.get_ffmpeg_exe(), *encoder_args(cfg), str(path)]
    try:
        proc = subprocess.run(args, input=np.ascontiguousarray(frames).tobytes(),
                              capture_output=True, check=False)
    except OSError as err:
        raise VideoError(path, f"cannot run ffmpeg: {err}") from err
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").strip().splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-500:]            # one line: the CLI shows errors as one line
        if is_full(OSError(tail)):
            raise StoreError(f"disk full writing the demo video {path}: ffmpeg: {tail}; make room and run "
                             "the same command again")
        raise VideoError(path, f"ffmpeg exited with {proc.returncode}: {tail}")
