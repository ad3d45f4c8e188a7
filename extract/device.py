"""The device half of extraction: prepared frames in, per-video rows out, all on one device.

:class:`DeviceStage` takes :class:`extract.prepare.Prepared` records — one video, or a group
of several — and keeps everything on the backbones' device: grayscale, the flow pairs, the
flow itself (tvl1-torch in place; OpenCV's algorithms through one copy to the CPU and back),
clipping, motion, crops and flips, normalisation and both backbones. Crops are cut a batch at
a time (the 10-crop flow input of one video would be 500 MB at once).

Batching across videos: a group's flow pairs are solved together and its crops fill the
backbone's batches across video boundaries, so a GPU sees full batches at cheap settings
(1 crop, T = 10) too. On the CPU a group is one video: batch composition changes the
backbone's float rounding (at most one float16 step, see ``extract.video``'s note on execution settings),
and the CPU gains nothing from bigger batches, so the rows equal the sequential path's.

Cost: each video's rows carry what it cost (:class:`data.store.VideoCost`): wall seconds per
stage (:func:`cost_stages`, :data:`SECONDS_NOTE`) and its flow fields' GFLOPs and iterations,
priced by the flow algorithm's registry entry (:func:`extract.flow.field_costs`).
"""
from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import torch

from data.errors import VideoError
from data.store import VideoCost, VideoResult
from extract import backbones, crops, flow
from extract.prepare import Prepared

log = logging.getLogger(__name__)

# OpenCV's RGB2GRAY for 8-bit images: BT.601 weights in 15-bit fixed point, rounded. Equal
# to cv2.cvtColor on all 2^24 colours (tests/test_device.py).
_GRAY_WEIGHTS, _GRAY_SHIFT = (9798, 19235, 3735), 15

SECONDS_NOTE = ("wall seconds per video and stage (time.perf_counter; on a GPU synchronised at the end "
                "of each stage): decode = decoding, sampling and picking frames (in the process that "
                "decodes); flow = greyscale, the flow fields and their stacks; flow_cost = pricing the "
                "flow (OpenCV TV-L1's sampled count; accounting overhead, not flow); backbone:<stream> = "
                "crops, preprocessing and the network. Videos run together as a group (GPU) share its "
                "flow and backbone seconds in proportion to their pairs and crops. Copies to the device "
                "and the store write are in no stage.")


def cost_stages(settings) -> tuple[str, ...]:
    """Names of the ``cost/seconds`` columns for these VideoSettings: decode; flow and
    flow_cost when flow is computed (for the flow stream or the motion cue); then
    backbone:<stream> per stream (see :data:`SECONDS_NOTE`)."""
    flow_stages = ("flow", "flow_cost") if settings.flow is not None else ()
    return ("decode", *flow_stages, *(f"backbone:{s}" for s in settings.streams))


def grayscale(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB on any device -> (N, H, W) uint8 luma, exactly OpenCV's: on the
    CPU through OpenCV itself (50x faster than the integer arithmetic there), elsewhere by
    :func:`grayscale_fixed_point`."""
    if frames.device.type == "cpu" and len(frames):
        n, h, w, _ = frames.shape
        flat = np.ascontiguousarray(frames.numpy()).reshape(n * h, w, 3)
        return torch.from_numpy(cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(n, h, w))
    return grayscale_fixed_point(frames)


def grayscale_fixed_point(frames: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB2GRAY in torch integer arithmetic, for frames on a GPU."""
    t = frames.to(torch.int32)
    r, g, b = _GRAY_WEIGHTS
    y = t[..., 0] * r + t[..., 1] * g + t[..., 2] * b + (1 << (_GRAY_SHIFT - 1))
    return (y >> _GRAY_SHIFT).to(torch.uint8)


class DeviceStage:
    """Runs groups of prepared videos through flow and the backbones of ``models`` (an
    :class:`extract.video.Models`) on their device. ``busy`` counts the seconds spent
    computing (synchronised on a GPU), ``runs`` the groups: busy / wall time is the fraction
    of a run the device worked."""

    def __init__(self, settings, models):
        self.settings, self.models = settings, models
        self.device = next(iter(models.runners.values())).device
        self.busy, self.runs = 0.0, 0

    @property
    def cross_video(self) -> bool:
        """Whether a group may hold several videos (on a GPU; see the module docstring)."""
        return self.device.type == "cuda"

    def run(self, group: list[Prepared]) -> list:
        """One outcome per video, in order: (VideoResult, notes) or VideoError. A group that
        fails is run again a video at a time, so only the video at fault is marked failed."""
        t0, cause = time.perf_counter(), None
        try:
            return self._run(group)
        except Exception as err:   # noqa: BLE001 - one bad video must not fail the others; cause is kept
            cause = f"{type(err).__name__}: {err}"
            if len(group) == 1:
                log.warning("unexpected failure on %s", group[0].path, exc_info=True)
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.busy += time.perf_counter() - t0
            self.runs += 1
        if len(group) > 1:
            return [self.run([p])[0] for p in group]
        return [VideoError(group[0].path, cause)]

    def _run(self, group: list[Prepared]) -> list:
        s = self.settings
        seconds = {"decode": [p.seconds for p in group]}
        frames = [self._to_device(p.frames) for p in group]
        if s.flow is not None:
            stacks, fields = self._flow(group, frames, seconds)
        else:
            stacks, fields = [None] * len(group), [None] * len(group)
        streams = [{} for _ in group]
        if "rgb" in s.streams:
            sources = [f[p.rgb_slot] for p, f in zip(group, frames)]          # (T, H, W, 3) uint8 each
            seconds["backbone:rgb"] = self._backbone("rgb", sources, streams)
        if "flow" in s.streams:
            seconds["backbone:flow"] = self._backbone("flow", stacks, streams)  # (T, L, H, W, 2) each
        out = []
        for i, (p, st, rows) in enumerate(zip(group, stacks, streams)):
            motion = (flow.motion_magnitude(st).cpu().numpy() if st is not None
                      else np.zeros(s.frames, np.float32))
            cost = _video_cost([seconds[k][i] for k in cost_stages(s)], fields[i])
            out.append((VideoResult(num_frames=p.num_frames, fps=p.fps, frame_index=p.frame_index, motion=motion,
                                    streams=rows, thumbnails=p.thumbnails, cost=cost), list(p.notes)))
        return out

    def _elapsed(self, t0: float) -> float:
        """Seconds since ``t0`` once the device has finished what was queued."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _flow(self, group: list[Prepared], frames: list[torch.Tensor], seconds: dict):
        """Each video's (T, L, H, W, 2) float32 stacks and its fields' FieldCosts; the group's
        pairs solved together. Fills ``seconds["flow"]`` and ``["flow_cost"]`` per video."""
        cfg, t0 = self.settings.flow, time.perf_counter()
        grays = [grayscale(f) for f in frames]
        prevs = [g[p.pairs[:, 0]] for p, g in zip(group, grays)]
        nxts = [g[p.pairs[:, 1]] for p, g in zip(group, grays)]
        fields, run = flow.solve_pairs(torch.cat(prevs), torch.cat(nxts), cfg)   # (ΣU, H, W, 2)
        out, start = [], 0
        for p in group:
            u = len(p.pairs)
            out.append(fields[start:start + u][torch.from_numpy(p.pair_slot).to(fields.device)])
            start += u
        seconds["flow"] = _share(self._elapsed(t0), [len(p.pairs) for p in group])
        costs, seconds["flow_cost"], start = [], [], 0
        for p, a, b in zip(group, prevs, nxts):
            t1, u = time.perf_counter(), len(p.pairs)
            costs.append(flow.field_costs(a, b, cfg, None if run is None else run[start:start + u]))
            seconds["flow_cost"].append(self._elapsed(t1))
            start += u
        return out, costs

    def _backbone(self, stream: str, sources: list[torch.Tensor], streams: list[dict]) -> list[float]:
        """Run ``stream``'s backbone over every crop of every video of the group; fills
        ``streams[i][stream]`` with {"features" (T,K,D) f16, "logits" (T,K,C) f32?, maps?}.
        Returns each video's share of the seconds it took (by crops)."""
        t0, runner = time.perf_counter(), self.models.runners[stream]
        bb, s = runner.backbone, self.settings
        S, K = bb.spec.input_size, s.crops
        boxes = crops.crop_boxes(s.size[0], s.size[1], S, K)
        if stream == "rgb":
            rows = [_CropRows(x, boxes, S, crops.crop_frames, lambda c: backbones.preprocess_rgb(c, bb.spec))
                    for x in sources]
        else:
            prep = lambda c: backbones.preprocess_flow(c, s.flow.bound, bb.spec.preset)   # noqa: E731
            rows = [_CropRows(x, boxes, S, crops.crop_flow, prep) for x in sources]
        feats, logits, maps = runner(_Concat(rows), return_maps=s.feature_maps)
        start = 0
        for i, r in enumerate(rows):
            sl, T = slice(start, start + len(r)), r.positions
            out = {"features": feats[sl].reshape(T, K, -1).astype(np.float16)}
            if self.models.keep_logits[stream]:
                out["logits"] = logits[sl].reshape(T, K, -1)
            if maps is not None:
                out["feature_maps"] = maps[sl].reshape(T, K, *maps.shape[1:]).astype(np.float16)
            streams[i][stream] = out
            start += len(r)
        return _share(self._elapsed(t0), [len(r) for r in rows])


def _share(seconds: float, units: list[int]) -> list[float]:
    """A group's seconds split over its videos in proportion to their units (pairs, crops)."""
    total = sum(units)
    return [seconds * u / total if total else seconds / len(units) for u in units]


def _video_cost(seconds: list[float], fields) -> VideoCost:
    """One video's VideoCost from its seconds per stage and its fields' FieldCosts (None: no flow)."""
    if fields is None:
        return VideoCost(np.asarray(seconds, np.float32))
    its = fields.iterations
    return VideoCost(np.asarray(seconds, np.float32), float(fields.gflops.sum()), len(fields.gflops),
                     float(its.mean()) if its is not None and len(its) else float("nan"))


class _CropRows:
    """The T·K network inputs of one video (position-major, crop-minor), cut and
    preprocessed only for the rows asked: rows a:b need positions a // K to (b - 1) // K."""

    def __init__(self, source: torch.Tensor, boxes, size: int, cut, prep):
        self.source, self.boxes, self.size, self.cut, self.prep = source, boxes, size, cut, prep
        self.positions, self.K = source.shape[0], len(boxes)

    def __len__(self) -> int:
        return self.positions * self.K

    def __getitem__(self, sl: slice) -> torch.Tensor:
        a, b = sl.start or 0, min(sl.stop if sl.stop is not None else len(self), len(self))
        t0, t1 = a // self.K, (b - 1) // self.K + 1
        c = self.cut(self.source[t0:t1], self.boxes, self.size)                # (t1-t0, K, ...)
        return self.prep(c.reshape(-1, *c.shape[2:])[a - t0 * self.K:b - t0 * self.K])


class _Concat:
    """Rows of several :class:`_CropRows` end to end: a batch may span two videos."""

    def __init__(self, parts: list[_CropRows]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, sl: slice) -> torch.Tensor:
        a, b = sl.start or 0, min(sl.stop if sl.stop is not None else len(self), len(self))
        pieces = []
        for i, part in enumerate(self.parts):
            lo, hi = max(a, self.starts[i]), min(b, self.starts[i + 1])
            if lo < hi:
                pieces.append(part[slice(int(lo - self.starts[i]), int(hi - self.starts[i]))])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)
