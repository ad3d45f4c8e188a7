"""The CPU half of a video's extraction: decode, sample, pick the frames the device needs.

A decode worker (or the extracting process itself) turns a path into a :class:`Prepared`
record: the distinct decoded frames that the T positions and their flow pairs use, the
indices that say which is which, and the thumbnails. Everything after this — grayscale,
flow, crops, normalisation, the backbones — is the device's (:mod:`extract.device`), so a
GPU never waits on this work when several workers prepare ahead of it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from extract import decode, sampling


@dataclass
class Prepared:
    """One decoded video, reduced to what the device stage reads (picklable; ~40 MB at the
    TSN protocol's T = 25, L = 5 on 340x256, against hundreds of MB for every decoded frame).

    frames:     (F, H, W, 3) uint8 RGB, each distinct frame that a position or a pair uses, once
    rgb_slot:   (T,) int64, the row of ``frames`` of each position
    pairs:      (U, 2) int64, rows of ``frames`` of each distinct flow pair (first, next)
    pair_slot:  (T, L) int64, the row of ``pairs`` of each slot of each flow stack
    seconds:    wall seconds this record took to make (decode, sample, pick, thumbnails)
    """

    path: str
    num_frames: int
    fps: float
    frame_index: np.ndarray             # (T,) int32, decoded frame of each position
    frames: np.ndarray
    rgb_slot: np.ndarray
    pairs: np.ndarray
    pair_slot: np.ndarray
    thumbnails: np.ndarray | None       # (T, h, w, 3) uint8
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        """Bytes of decoded frames this record carries (what a queue of them holds)."""
        return int(self.frames.nbytes)


class PrepareSettings(NamedTuple):
    """The part of a VideoSettings that preparing reads: what a decode worker is sent (it
    unpickles without importing the models' modules, and so without torch)."""

    size: tuple[int, int]
    max_frames: int | None
    frames: int
    flow_stack: int
    flow: bool                          # whether flow pairs are needed at all
    thumbnail_size: tuple[int, int] | None

    @classmethod
    def of(cls, settings) -> "PrepareSettings":
        return cls(tuple(settings.size), settings.max_frames, settings.frames, settings.flow_stack,
                   settings.flow is not None, settings.thumbnail_size)


def flow_pairs(flow_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (frame, next frame) pairs the stacks need, and where each stack slot
    finds its pair. flow_index (T, L+1) -> pairs (U, 2), slot (T, L) indices into pairs.

    Stacks of neighbouring positions overlap when T·L approaches the frame count (and repeat
    in short videos), so computing each pair once keeps flow work at most n − 1 pairs."""
    T, L1 = flow_index.shape
    pairs = np.stack([flow_index[:, :-1], flow_index[:, 1:]], axis=-1).reshape(-1, 2)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return uniq, inverse.reshape(T, L1 - 1)


def prepare_video(path: str, settings) -> Prepared:
    """Decode ``path`` and keep the frames ``settings`` (a VideoSettings or PrepareSettings)
    will use.

    Raises VideoError(path, cause) for anything that makes the video unusable.
    """
    t0 = time.perf_counter()
    settings = PrepareSettings.of(settings) if not isinstance(settings, PrepareSettings) else settings
    video = decode.decode(path, settings.size, max_frames=settings.max_frames)
    n = video.frames.shape[0]
    samp = sampling.tsn_positions(n, settings.frames, settings.flow_stack)
    notes = list(video.warnings) + ([samp.handling] if samp.handling else [])
    if settings.flow:   # motion is stored even for an RGB-only run
        pairs, pair_slot = flow_pairs(samp.flow_index)
    else:
        pairs, pair_slot = np.empty((0, 2), np.int64), np.empty((settings.frames, 0), np.int64)
    used, inverse = np.unique(np.concatenate([samp.frame_index, pairs.reshape(-1)]), return_inverse=True)
    T = settings.frames
    return Prepared(path=str(path), num_frames=n, fps=video.fps, frame_index=samp.frame_index,
                    frames=np.ascontiguousarray(video.frames[used]),
                    rgb_slot=inverse[:T].astype(np.int64),
                    pairs=inverse[T:].reshape(-1, 2).astype(np.int64),
                    pair_slot=pair_slot.astype(np.int64),
                    thumbnails=_thumbnails(video.frames[samp.frame_index], settings.thumbnail_size),
                    notes=notes, seconds=time.perf_counter() - t0)


def _thumbnails(frames: np.ndarray, size) -> np.ndarray | None:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8 (area interpolation), or None for no thumbnails."""
    if size is None:
        return None
    h, w = size
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
