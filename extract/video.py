"""One video, start to finish: decode → sample → flow → crops → backbone → a VideoResult.

Kept separate from the orchestration in :mod:`extract.run` so that a worker process needs
only this module and the models it was handed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from data.errors import InputError, VideoError
from data.store import VideoResult
from extract import backbones, crops, decode, flow, sampling

EXTRACTED_STREAMS = ("rgb", "flow")   # what extract_video produces
# How a video is processed, not what comes out: batch size changes only how many crops the
# backbone sees at once (eval mode: rows differ by float rounding of the kernels chosen,
# measured at most one float16 step, 0.00098 for |f| < 5.4, batch 16 vs 5 vs 1 on CPU).
# Recorded in the store, left out of its settings hash, so a resume on a smaller GPU is not
# refused; a bit-identical resume needs the same batch size. (Device, workers and threads,
# which round alike, were never settings.)
NOT_DETERMINING = ("batch_size",)


@dataclass(frozen=True)
class VideoSettings:
    """Everything that determines a video's rows in the store (all recorded in its attrs)."""

    frames: int = 25                   # T positions (TSN test protocol)
    flow_stack: int = 5                # L pairs per flow stack (TSN: 5 pairs = 10 channels)
    crops: int = 10                    # 1, 3 or 10 (TSN test protocol: 10)
    size: tuple[int, int] = (340, 256)  # stored frame size (width, height)
    streams: tuple[str, ...] = ("rgb", "flow")
    backbone: str = "efficientnet_lite0"
    checkpoints: tuple[tuple[str, str], ...] = ()   # (stream, path) pairs
    preset: str | None = None          # input scaling (backbones/presets.py); None: the weights' layout's
    flow: flow.FlowConfig | None = field(default_factory=flow.FlowConfig)   # None: no flow at all
    feature_maps: bool = False         # store last conv maps (for the glimpse agent)
    thumbnail_size: tuple[int, int] | None = (48, 64)   # (h, w); None = no thumbnails
    batch_size: int = 16
    max_frames: int | None = None

    def record(self) -> dict:
        """JSON-ready dict of every setting (what the store records)."""
        d = asdict(self)
        d["flow"] = self.flow.as_dict() if self.flow else None
        if d["preset"] is None:    # the weights' own: the record (and sha256) of stores before presets
            del d["preset"]
        return json.loads(json.dumps(d))

    def sha256(self) -> str:
        """Identifies a compatible store: the record without the NOT_DETERMINING keys."""
        return hashlib.sha256(json.dumps(determining(self.record()), sort_keys=True).encode()).hexdigest()

    def check(self) -> None:
        """InputError for streams extraction does not produce (none, unknown, twice) and for
        a checkpoint of a stream that is not extracted (it would be ignored)."""
        if self.preset is not None:
            backbones.get_preset(self.preset)
        streams, given = self.streams, ",".join(self.streams)
        produced = " and ".join(EXTRACTED_STREAMS)
        if not streams:
            raise InputError(f"--streams is empty: name the streams to extract ({produced}), "
                             "e.g. --streams rgb,flow")
        for i, name in enumerate(streams):
            if name not in EXTRACTED_STREAMS:
                raise InputError(f"--streams {given}: unknown stream {name!r}; extraction produces {produced}")
            if name in streams[:i]:
                raise InputError(f"--streams {given}: stream {name!r} is named twice")
        seen = set()
        for stream, path in self.checkpoints:
            if stream not in streams:
                raise InputError(f"--checkpoint {stream}={path}: {stream!r} is not one of the extracted "
                                 f"streams (--streams {given}); write e.g. --checkpoint {streams[0]}={path}")
            if stream in seen:
                raise InputError(f"--checkpoint: two checkpoints for stream {stream!r}")
            seen.add(stream)


def determining(record: dict) -> dict:
    """A settings record without the keys that do not determine the features."""
    return {k: v for k, v in record.items() if k not in NOT_DETERMINING}


class Models:
    """The frozen backbone per stream, built once per process."""

    def __init__(self, settings: VideoSettings, device: str = "cpu", num_classes: int = 0):
        ck = dict(settings.checkpoints)
        self.runners, self.keep_logits = {}, {}
        for stream in settings.streams:
            bb = backbones.create_backbone(settings.backbone, stream=stream, flow_stack=settings.flow_stack,
                                           checkpoint=ck.get(stream), preset=settings.preset)
            self.runners[stream] = backbones.BackboneRunner(bb, settings.batch_size, device)
            # Logits are stored only when the head speaks the dataset's classes (a user's
            # fine-tuned checkpoint). The embedded ImageNet head does not: `framesel head`
            # trains one on the cached features instead of storing 1000 useless scores.
            self.keep_logits[stream] = bb.num_classes == num_classes
            if stream in ck and bb.num_classes != num_classes:
                raise InputError(f"checkpoint {ck[stream]} has a {bb.num_classes}-class head but the "
                                 f"list has {num_classes} classes")

    def backbone(self, stream):
        return self.runners[stream].backbone

    def describe(self) -> dict:
        """Per-stream backbone record for the store: name, weights, preprocessing, cost."""
        out = {}
        for stream, runner in self.runners.items():
            bb = runner.backbone
            spec = bb.spec
            out[stream] = {"name": spec.name, "file": spec.file, "sha256": spec.sha256,
                           "source": spec.source, "input_size": spec.input_size,
                           "mean": list(spec.mean), "std": list(spec.std),
                           "layout": spec.layout, "preset": spec.preset.record(),
                           "in_channels": bb.in_channels, "feature_dim": bb.feature_dim,
                           "num_classes": bb.num_classes, "logits_stored": self.keep_logits[stream],
                           "feature_map_shape": list(bb.feature_map_shape),
                           "gflops_per_frame": backbones.gflops_per_frame(bb),
                           "flops_convention": "FLOPs (2 x multiply-accumulates), torch.utils.flop_counter"}
        return out


def extract_video(path: str, settings: VideoSettings, models: Models) -> tuple[VideoResult, list[str]]:
    """Process one video; returns its rows and notes (decoder warnings, short-video handling).

    Raises VideoError(path, cause) for anything that makes the video unusable.
    """
    video = decode.decode(path, settings.size, max_frames=settings.max_frames)
    n = video.frames.shape[0]
    T, L = settings.frames, settings.flow_stack
    samp = sampling.tsn_positions(n, T, L)
    notes = list(video.warnings) + ([samp.handling] if samp.handling else [])
    S = models.backbone(settings.streams[0]).spec.input_size
    boxes = crops.crop_boxes(settings.size[0], settings.size[1], S, settings.crops)
    streams, motion = {}, np.zeros(T, np.float32)
    if "rgb" in settings.streams:
        rgb = crops.crop_frames(video.frames[samp.frame_index], boxes, S)        # (T, K, S, S, 3)
        streams["rgb"] = _run(models, "rgb", rgb.reshape(-1, S, S, 3), T, settings)
    if settings.flow is not None:   # motion is stored even for an RGB-only run
        fl = _flow_stacks(video.frames, samp, settings)                          # (T, L, H, W, 2)
        motion = flow.motion_magnitude(fl).astype(np.float32)
        if "flow" in settings.streams:
            fc = crops.crop_flow(fl, boxes, S).reshape(-1, L, S, S, 2)          # (T·K, L, S, S, 2)
            preset = models.backbone("flow").spec.preset
            streams["flow"] = _run(models, "flow", _FlowInputs(fc, settings.flow.bound, preset), T, settings)
    for name in settings.streams:
        if name not in streams:
            raise VideoError(path, f"stream {name!r} is not produced by extraction")
    thumbs = _thumbnails(video.frames[samp.frame_index], settings.thumbnail_size)
    result = VideoResult(num_frames=n, fps=video.fps, frame_index=samp.frame_index, motion=motion,
                         streams=streams, thumbnails=thumbs)
    return result, notes


class _FlowInputs:
    """Flow crops preprocessed a slice at a time: 25 x 10 stacks of 10 x 224 x 224 float32
    would be 500 MB at once; the runner asks for one batch at a time."""

    def __init__(self, crops_flow: np.ndarray, bound: float, preset: backbones.Preset):
        self.crops, self.bound, self.preset = crops_flow, bound, preset

    def __len__(self):
        return len(self.crops)

    def __getitem__(self, sl):
        return backbones.preprocess_flow(self.crops[sl], self.bound, self.preset)


def _run(models: Models, stream: str, x, T: int, settings: VideoSettings) -> dict:
    """Backbone over T·K inputs -> {"features" (T,K,D) f16, "logits" (T,K,C) f32, maps?}."""
    feats, logits, maps = models.runners[stream](x, return_maps=settings.feature_maps)
    K = settings.crops
    out = {"features": feats.reshape(T, K, -1).astype(np.float16)}
    if models.keep_logits[stream]:
        out["logits"] = logits.reshape(T, K, -1)
    if maps is not None:
        out["feature_maps"] = maps.reshape(T, K, *maps.shape[1:]).astype(np.float16)
    return out


def flow_pairs(flow_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (frame, next frame) pairs the stacks need, and where each stack slot
    finds its pair. flow_index (T, L+1) -> pairs (U, 2), slot (T, L) indices into pairs.

    Stacks of neighbouring positions overlap when T·L approaches the frame count (and repeat
    in short videos), so computing each pair once keeps flow work at most n − 1 pairs."""
    T, L1 = flow_index.shape
    pairs = np.stack([flow_index[:, :-1], flow_index[:, 1:]], axis=-1).reshape(-1, 2)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return uniq, inverse.reshape(T, L1 - 1)


def _flow_stacks(frames: np.ndarray, samp, settings: VideoSettings) -> np.ndarray:
    """TV-L1 (or the chosen algorithm) only on the L pairs of each sampled position — never
    on every frame — each distinct pair once. -> (T, L, H, W, 2) float32."""
    pairs, slot = flow_pairs(samp.flow_index)
    gray = decode.grayscale(frames[pairs.reshape(-1)]).reshape(len(pairs), 2, *frames.shape[1:3])
    fields = flow.compute_stacks(gray, settings.flow)[:, 0]                     # (U, H, W, 2)
    return fields[slot]


def _thumbnails(frames: np.ndarray, size) -> np.ndarray | None:
    if size is None:
        return None
    h, w = size
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
