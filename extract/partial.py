"""Extraction in two passes for ``framesel predict``: a cheap pass over every position, then
the expensive one only at the positions a selector kept.

- :func:`settings_from_record` rebuilds the :class:`VideoSettings` a store recorded, so a new
  video's rows mean what the store's do (the caller checks the identity, data/identity.py).
- :func:`cheap_pass`: the observed stream's backbone on the **centre crop** of all T
  positions, no flow at all. A :class:`extract.prepare.Prepared` record of the video (every
  decoded frame is decoded — the sampling needs the true frame count n, which only a full
  pass gives, and an h264 inter frame needs the frames before it anyway — but only the frames
  some position or flow pair uses are kept) feeds the same :class:`DeviceStage` extraction
  uses, with settings narrowed to one crop and one stream.
- :func:`expensive_pass`: the same record restricted to the kept positions (:func:`restrict`):
  their flow stacks (the distinct pairs of m stacks: m·L when the stacks do not overlap, fewer
  when two kept stacks share pairs, as extraction shares them too), the flow backbone on
  every crop, and the observed stream's remaining crops (its centre crop is computed again
  with them: one extra crop per kept position, so the backbone's batches are the store's).

Rows are (T, K, ·) like the store's; cells a pass did not compute are zeros, which the hard
consensus of a kept-positions mask weights by 0 (agents.base.aggregate). The flow fields are
counted in the cost record (``cost.flow_fields``) but not priced: predict records no GFLOPs,
so OpenCV TV-L1's sampled iteration count (a fixed few seconds a video) is skipped.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from data.errors import InputError, VideoError
from data.store import VideoResult
from extract.crops import crop_boxes
from extract.flow import FlowConfig
from extract.prepare import Prepared, flow_pairs
from extract.video import Models, VideoSettings


def settings_from_record(record: dict) -> VideoSettings:
    """The VideoSettings of a store's ``attrs["settings"]`` (:meth:`VideoSettings.record`)."""
    if not isinstance(record, dict):
        raise InputError("the store records no extraction settings (attrs['settings']); re-extract it")
    rec = dict(record)
    flow = rec.pop("flow", None)
    if flow:
        flow = FlowConfig(algorithm=flow["algorithm"], bound=flow["bound"], quantize=flow["quantize"],
                          threads=flow.get("threads", 0), params=tuple(sorted((flow.get("params") or {}).items())))
    fields = {f.name for f in dataclasses.fields(VideoSettings)}
    unknown = sorted(set(rec) - fields)
    if unknown:
        raise InputError(f"the store's settings record has fields this framesel does not know: {unknown}")
    for key in ("size", "streams", "thumbnail_size"):
        if rec.get(key) is not None:
            rec[key] = tuple(rec[key])
    rec["checkpoints"] = tuple(tuple(x) for x in rec.get("checkpoints") or ())
    return VideoSettings(**rec, flow=flow)


def centre_crop(K: int, settings: VideoSettings, input_size: int) -> int:
    """Index of the centre crop among the K crops of ``settings``: the one box of a 1-crop
    run (:data:`data.layout.CENTRE_CROP` states it for readers that cannot import extract)."""
    w, h = settings.size
    return crop_boxes(w, h, input_size, K).index(crop_boxes(w, h, input_size, 1)[0])


def cheap_pass(prepared: Prepared, settings: VideoSettings, models: Models, stream: str) -> VideoResult:
    """``stream``'s backbone on the centre crop of every position, nothing else.
    Returns a VideoResult whose ``streams[stream]["features"]`` is (T, 1, D) float16 (and its
    feature maps when the store keeps them); ``cost.seconds`` is (decode, backbone)."""
    narrow = dataclasses.replace(settings, crops=1, streams=(stream,), flow=None)
    record = dataclasses.replace(prepared, pairs=np.empty((0, 2), np.int64),
                                 pair_slot=np.empty((settings.frames, 0), np.int64))
    return _run(models, narrow, record)


def restrict(prepared: Prepared, positions: np.ndarray) -> Prepared:
    """The record of the kept ``positions`` (sorted (m,) ints into 0..T-1) only: their frames,
    and the distinct flow pairs of their stacks."""
    positions = np.asarray(positions, np.int64)
    slots = prepared.pair_slot[positions]                       # (m, L) rows of prepared.pairs
    frame_pairs = prepared.pairs[slots]                          # (m, L, 2) rows of frames
    if slots.size:
        # flow_pairs wants stacks of frame rows: (m, L + 1), consecutive pairs chained
        stacks = np.concatenate([frame_pairs[:, :, 0], frame_pairs[:, -1:, 1]], axis=1)
        pairs, pair_slot = flow_pairs(stacks)
    else:
        pairs, pair_slot = np.empty((0, 2), np.int64), np.empty((len(positions), 0), np.int64)
    return dataclasses.replace(prepared, frame_index=prepared.frame_index[positions],
                               rgb_slot=prepared.rgb_slot[positions], pairs=pairs.astype(np.int64),
                               pair_slot=pair_slot.astype(np.int64), thumbnails=None, seconds=0.0)


def expensive_pass(prepared: Prepared, positions: np.ndarray, settings: VideoSettings, models: Models,
                   streams: tuple[str, ...]) -> VideoResult:
    """Flow and the backbones of ``streams`` (all K crops) at the kept ``positions`` only.
    Returns the VideoResult of those m positions: (m, K, D) rows per stream, ``cost.fields``
    the flow fields solved (their GFLOPs NaN: not priced), ``cost.seconds`` (decode = 0, flow,
    flow_cost ~0, backbone per stream)."""
    if not streams:
        raise InputError("the expensive pass has no stream to compute")
    sub = restrict(prepared, positions)
    narrow = dataclasses.replace(settings, frames=len(positions), streams=tuple(streams),
                                 flow=settings.flow if "flow" in streams else None)
    return _run(models, narrow, sub)


def _run(models: Models, settings: VideoSettings, record: Prepared) -> VideoResult:
    """One record through a DeviceStage with ``settings`` over the shared ``models``."""
    from extract.device import DeviceStage

    outcome = DeviceStage(settings, models, price_flow=False).run([record])[0]
    if isinstance(outcome, VideoError):
        raise outcome
    return outcome[0]


def assemble(T: int, K: int, positions: np.ndarray, kept_rows: np.ndarray,
             centre_rows: np.ndarray | None = None, centre: int = 0) -> np.ndarray:
    """(T, K, ...) rows of one stream: ``kept_rows`` (m, K, ...) at ``positions``, the cheap
    pass's ``centre_rows`` (T, 1, ...) in crop ``centre`` elsewhere, zeros in the rest."""
    out = np.zeros((T, K, *kept_rows.shape[2:]), kept_rows.dtype)
    if centre_rows is not None:
        out[:, centre] = centre_rows[:, 0]
    out[np.asarray(positions, np.int64)] = kept_rows
    return out


__all__ = ["assemble", "centre_crop", "cheap_pass", "expensive_pass", "restrict", "settings_from_record"]
