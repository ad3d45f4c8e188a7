"""What a store holds, independent of any backend: the layout fixed at creation and one
video's extraction result (shapes as in :mod:`data.store`'s table; V dropped per video)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# The per-video cost record (optional: stores written before it have none), and the part of
# it that is an execution fact (wall seconds): never compared between stores.
COST_PREFIX = "cost/"
TIMING_NODES = ("cost/seconds",)


@dataclass(frozen=True)
class StreamSpec:
    """One stream's arrays: K crops, D features, C logits (0 = none yet), optional maps (h, w, d)."""

    name: str
    crops: int
    dim: int
    classes: int = 0
    map_shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Layout:
    """Everything fixed when a store is created."""

    paths: tuple[str, ...]
    labels: np.ndarray                       # (V,) int32 or (V, C) uint8
    T: int
    streams: tuple[StreamSpec, ...]
    thumbnail_size: tuple[int, int] | None = None   # (h, w)
    attrs: dict = field(default_factory=dict)
    cost_stages: tuple[str, ...] | None = None       # names of cost/seconds' columns; None: no cost/*

    @property
    def num_videos(self) -> int:
        return len(self.paths)


@dataclass
class VideoCost:
    """What extracting one video cost (the ``cost/*`` rows).

    seconds:         (S,) float32 wall seconds per stage, in ``Layout.cost_stages`` order
    flow_gflops:     GFLOPs of every flow field computed for the video (each distinct pair once)
    flow_fields:     how many fields that is
    flow_iterations: mean primal-dual iterations per field (NaN where the algorithm has none
                     or they are only bounded)
    """

    seconds: np.ndarray
    flow_gflops: float = 0.0
    flow_fields: int = 0
    flow_iterations: float = math.nan


@dataclass
class VideoResult:
    """What extraction produced for one video (shapes as in the module docstring, V dropped)."""

    num_frames: int
    fps: float
    frame_index: np.ndarray                  # (T,) int32
    motion: np.ndarray                       # (T,) float32
    streams: dict[str, dict[str, np.ndarray]]  # name -> {"features", "logits"?, "feature_maps"?}
    thumbnails: np.ndarray | None = None     # (T, h, w, 3) uint8
    cost: VideoCost | None = None            # None: not measured (a store without cost/*)


def per_video_arrays(layout: Layout) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (row shape, dtype) of every per-video array the layout implies."""
    T = layout.T
    out = {"videos/num_frames": ((), "int32"), "videos/fps": ((), "float32"),
           "frame_index": ((T,), "int32"), "motion": ((T,), "float32")}
    for s in layout.streams:
        out[f"{s.name}/features"] = ((T, s.crops, s.dim), "float16")
        if s.classes:
            out[f"{s.name}/logits"] = ((T, s.crops, s.classes), "float32")
        if s.map_shape:
            out[f"{s.name}/feature_maps"] = ((T, s.crops, *s.map_shape), "float16")
    if layout.thumbnail_size:
        out["thumbnails"] = ((T, *layout.thumbnail_size, 3), "uint8")
    if layout.cost_stages:
        out.update({"cost/seconds": ((len(layout.cost_stages),), "float32"), "cost/flow_gflops": ((), "float32"),
                    "cost/flow_fields": ((), "int32"), "cost/flow_iterations": ((), "float32")})
    return out


def result_rows(result: VideoResult) -> dict[str, np.ndarray]:
    """Flatten a VideoResult into store array names -> one row each."""
    rows = {"videos/num_frames": np.int32(result.num_frames), "videos/fps": np.float32(result.fps),
            "frame_index": np.asarray(result.frame_index, np.int32),
            "motion": np.asarray(result.motion, np.float32)}
    for name, arrays in result.streams.items():
        for key, value in arrays.items():
            if value is not None:
                rows[f"{name}/{key}"] = value
    if result.thumbnails is not None:
        rows["thumbnails"] = result.thumbnails
    if result.cost is not None:
        c = result.cost
        rows.update({"cost/seconds": np.asarray(c.seconds, np.float32), "cost/flow_gflops": np.float32(c.flow_gflops),
                     "cost/flow_fields": np.int32(c.flow_fields), "cost/flow_iterations": np.float32(c.flow_iterations)})
    return rows
