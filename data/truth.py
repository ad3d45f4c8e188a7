"""Segment truth of untrimmed videos (``truth.json``, data/compose.py) and what a store's
positions make of it.

The file is one JSON object keyed by each video's path as the list writes it; each value is
``{"num_frames": N, "segments": [{"source", "class", "start", "end"}, ...]}`` with decoded
frame indices, ``end`` exclusive, the segments in order and every frame in exactly one.
:func:`read_truth` checks all of that and names the file and the video on the first fault.

**Inside a segment** a position is when its ``frame_index`` (the store's (V, T) int32: the
RGB frame, and the first frame of its flow stack) lies in ``[start, end)``. A flow stack
spans L+1 frames, so the stack of a position in the last L frames of a segment reaches
into the next one: the position still counts as inside the segment its RGB frame is in.

**Key** positions of a video are those inside a segment whose class is the video's labelled
class (by name: a composite labelled ``fight`` has key positions inside its ``fight``
segments; one labelled ``not_fight`` has none, no segment being of that class).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import InputError

SEGMENT_FIELDS = ("source", "class", "start", "end")


@dataclass(frozen=True)
class Segment:
    source: str
    cls: str
    start: int
    end: int


@dataclass(frozen=True)
class VideoTruth:
    """num_frames: decoded frames of the video; segments: in order, covering every frame once."""

    num_frames: int
    segments: tuple[Segment, ...]

    def segment_of(self, frames) -> np.ndarray:
        """(…) int64 index of the segment each decoded frame index in ``frames`` lies in."""
        ends = np.array([s.end for s in self.segments], np.int64)
        return np.searchsorted(ends, np.asarray(frames, np.int64), side="right")


@dataclass(frozen=True)
class Truth:
    """The videos' truth by path; ``source`` the file it was read from, ``sha256`` its bytes'."""

    videos: dict
    source: str
    sha256: str

    def __getitem__(self, path: str) -> VideoTruth:
        return self.videos[path]

    def __contains__(self, path) -> bool:
        return path in self.videos

    def __len__(self) -> int:
        return len(self.videos)

    def sources(self) -> list[str]:
        """Every source clip named, sorted (the clusters of the shared-clip intervals)."""
        return sorted({s.source for v in self.videos.values() for s in v.segments})


def _int(value, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {name} must be an integer, got {value!r}")
    return value


def _video(entry, where: str) -> VideoTruth:
    if not isinstance(entry, dict) or not isinstance(entry.get("segments"), list):
        raise InputError(f"{where}: must be an object with num_frames and a list of segments")
    n = _int(entry.get("num_frames"), where, "num_frames")
    if n < 1 or not entry["segments"]:
        raise InputError(f"{where}: needs num_frames >= 1 and at least one segment, got {n} and "
                         f"{len(entry['segments'])}")
    segs, at = [], 0
    for k, s in enumerate(entry["segments"]):
        here = f"{where}, segment {k}"
        if not isinstance(s, dict) or any(f not in s for f in SEGMENT_FIELDS):
            raise InputError(f"{here}: needs the fields {', '.join(SEGMENT_FIELDS)}")
        start, end = _int(s["start"], here, "start"), _int(s["end"], here, "end")
        if start != at:
            raise InputError(f"{here}: starts at frame {start}, but frame {at} is "
                             + ("in no segment" if start > at else "already in the one before"))
        if end <= start:
            raise InputError(f"{here}: end {end} must exceed start {start}")
        if not isinstance(s["source"], str) or not isinstance(s["class"], str):
            raise InputError(f"{here}: source and class must be strings")
        segs.append(Segment(s["source"], s["class"], start, end))
        at = end
    if at != n:
        raise InputError(f"{where}: the segments end at frame {at}, not at num_frames {n}")
    return VideoTruth(n, tuple(segs))


def read_truth(path) -> Truth:
    """Read and check a truth file (module docstring). InputError naming the file and the
    video for any fault: not JSON, not an object, a gap, an overlap, a range past num_frames."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as err:
        raise InputError(f"truth file {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"truth file {path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"truth file {path}: must be a non-empty object keyed by video path")
    videos = {str(k): _video(v, f"truth file {path}: video {k!r}") for k, v in data.items()}
    return Truth(videos, str(path), hashlib.sha256(raw).hexdigest())


def _checked(truth: Truth, paths, frame_index, num_frames=None) -> np.ndarray:
    """frame_index as (V, T) int64, every video in the truth, every index inside its video."""
    fi = np.asarray(frame_index, np.int64)
    if fi.ndim != 2 or fi.shape[0] != len(paths):
        raise InputError(f"frame_index must be (V, T) for {len(paths)} videos, got {fi.shape}")
    missing = [p for p in paths if p not in truth]
    if missing:
        raise InputError(f"truth file {truth.source} has no entry for {len(missing)} of {len(paths)} videos, "
                         f"e.g. {', '.join(missing[:3])}")
    for v, p in enumerate(paths):
        n = truth[p].num_frames
        if num_frames is not None and int(num_frames[v]) != n:
            raise InputError(f"truth file {truth.source}: video {p!r} has {n} frames there but "
                             f"{int(num_frames[v])} decoded: the truth is of other videos")
        if fi[v].min() < 0 or fi[v].max() >= n:
            raise InputError(f"truth file {truth.source}: video {p!r}: frame index {int(fi[v].max())} "
                             f"outside its {n} frames")
    return fi


def position_classes(truth: Truth, paths, frame_index, num_frames=None) -> list[list[str]]:
    """(V, T) class names of the segment each position lies in."""
    fi = _checked(truth, paths, frame_index, num_frames)
    out = []
    for v, p in enumerate(paths):
        segs = truth[p].segments
        out.append([segs[k].cls for k in truth[p].segment_of(fi[v])])
    return out


def key_mask(truth: Truth, paths, labels, classes, frame_index, num_frames=None) -> np.ndarray:
    """(V, T) bool: which positions lie inside a segment of the video's labelled class.

    labels: (V,) int class indices (or (V, C) multi-hot: any labelled class); classes: the
    store's class names; num_frames: (V,) decoded frames, checked against the truth's."""
    labels = np.asarray(labels)
    names = position_classes(truth, paths, frame_index, num_frames)
    wanted = [{classes[int(c)] for c in (np.flatnonzero(lab) if labels.ndim == 2 else [lab])} for lab in labels]
    return np.array([[c in wanted[v] for c in row] for v, row in enumerate(names)], dtype=bool).reshape(
        len(paths), np.shape(frame_index)[1])


def position_labels(truth: Truth, paths, classes, frame_index, num_frames=None) -> np.ndarray:
    """(V, T) int64 class index of each position's segment, for a head trained per position.

    A segment class that is one of ``classes`` maps to it; any other (``noFight`` in a
    fight composite, whose classes are ``not_fight`` and ``fight``) maps to the one class
    named ``not_<x>``. InputError when a class maps nowhere."""
    classes = list(classes)
    background = [i for i, c in enumerate(classes) if c.startswith("not_")]
    names = position_classes(truth, paths, frame_index, num_frames)
    out = np.empty(np.shape(frame_index), np.int64)
    for v, row in enumerate(names):
        for t, c in enumerate(row):
            if c in classes:
                out[v, t] = classes.index(c)
            elif len(background) == 1:
                out[v, t] = background[0]
            else:
                raise InputError(f"truth file {truth.source}: segment class {c!r} of {paths[v]!r} is none of the "
                                 f"store's classes ({', '.join(classes)}) and there is no single not_<x> class")
    return out


def memberships(truth: Truth, paths) -> tuple[np.ndarray, list[str]]:
    """((V, N) int32 count of each source clip's segments in each video, the N clip names):
    the clusters of the shared-clip intervals (evaluate/stats.shared_clip_variance)."""
    missing = [p for p in paths if p not in truth]
    if missing:
        raise InputError(f"truth file {truth.source} has no entry for {', '.join(missing[:3])}")
    names = sorted({s.source for p in paths for s in truth[p].segments})
    col = {n: j for j, n in enumerate(names)}
    out = np.zeros((len(paths), len(names)), np.int32)
    for v, p in enumerate(paths):
        for s in truth[p].segments:
            out[v, col[s.source]] += 1
    return out, names


__all__ = ["Segment", "Truth", "VideoTruth", "key_mask", "memberships", "position_classes", "position_labels",
           "read_truth"]
