"""Decoding through OpenCV's bundled FFmpeg (``cv2.VideoCapture(CAP_FFMPEG)``): the fallback
of :mod:`extract.decode` where no ffmpeg binary exists (a GPU machine with only
opencv-python-headless, whose wheel bundles FFmpeg's libraries but no executable).

Departures from the ffmpeg-binary decoder, all in what the pixels are, none in which frames:
the resize is OpenCV's ``INTER_AREA`` after decoding (not swscale's ``area`` inside ffmpeg),
and the YUV -> RGB conversion is OpenCV's (BT.601, limited range as the stream says). Frames
differ by a few grey levels (tests/test_decode_backends.py measures it), so a store records
which decoder made it (``versions.ffmpeg``), and stores are compared only when made by the
same one. Rotation: OpenCV applies the display matrix too (``CAP_PROP_ORIENTATION_AUTO``).
Every frame that decodes comes out once (no rate conversion), as with ``-fps_mode passthrough``.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["opencv_decoder_version", "read_opencv"]


def opencv_decoder_version() -> str:
    """What decodes, for the store's record: OpenCV's version and its video I/O backend."""
    return f"opencv-{cv2.__version__}-ffmpeg"


def _fourcc(cap) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\0 ").lower()
    return text or "unknown"


def _open(path: Path):
    """An opened capture, or (None, reason)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        return None, "OpenCV's FFmpeg could not open it (not a video, or no video stream)"
    return cap, ""


def _meta(cap) -> dict:
    """The container's declarations, as :class:`extract.decode.VideoMeta`'s fields."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    rotation = int(round(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0)) % 360
    return {"codec": _fourcc(cap), "pix_fmt": "unknown", "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), "fps": fps, "rotation": rotation,
            "declared_duration": count / fps if fps and count > 0 else None,
            "declared_frames": count if count > 0 else None}


def read_opencv(path: Path, size: tuple[int, int] | None, limit: int | None):
    """Frames of ``path`` resized to ``size`` = (width, height) (None: no frames read).

    Returns (frames (N, H, W, 3) uint8 RGB, meta dict) or (None, reason) when the file does
    not open; reads at most ``limit`` frames."""
    cap, reason = _open(path)
    if cap is None:
        return None, reason
    try:
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        meta = _meta(cap)
        if size is None:
            return np.empty((0, 0, 0, 3), np.uint8), meta
        width, height = size
        frames = []
        while limit is None or len(frames) < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            if bgr.shape[1] != width or bgr.shape[0] != height:
                bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    out = np.stack(frames) if frames else np.empty((0, height, width, 3), np.uint8)
    return out, meta
