"""Untrimmed composites from a labelled list of trimmed clips (issue 27's benchmark).

A *composite* is one H.264 video of 6-12 *segments*, each a whole source clip, played one
after another. A **positive** holds 1-2 segments of the target class (``fight``) at random
places and the rest from the other classes; a **negative** holds none. Half are positive.
``truth.json`` says, for each composite, which decoded frames came from which clip.

Decisions (each is recorded in ``compose.json`` beside the videos):

* **One look for every clip.** Every segment is decoded at one frame rate (ffmpeg's ``fps``
  filter: frames dropped or repeated to the nearest timestamp), scaled so that it *covers*
  the frame (``max(W, ceil(iw*H/ih)) x max(H, ceil(ih*W/iw))``, area averaging, after
  ffmpeg's autorotation) and centre-cropped to W x H, square pixels. No letterbox: black
  bars would mark each clip's source camera, a shortcut to the label. A source at 10 fps
  shown at 25 repeats frames (zero-motion flow pairs): that is the footage, not hidden.
* **Frame ranges are what decodes.** The frames of each segment are counted as they come
  out of ffmpeg and piped, unchanged, into one encoder (raw rgb24 at the fixed rate, so the
  encoder neither drops nor repeats any); the finished composite is decoded again and its
  frame count must equal the sum, else the composite fails. ``start``/``end`` index the
  composite's decoded frames (end exclusive); every frame lies in exactly one segment.
* **Encoding.** libx264, yuv420p, CRF 18, preset veryfast, one thread, bit-exact flags, a
  fixed GOP of 2 s and no scene-cut keyframes (``sc_threshold 0``: an I-frame at every cut
  would mark the boundaries), no audio: deterministic bytes from one encoder build.
* **Reuse.** Clips are drawn least-used first (ties broken by the seeded generator), never
  twice in one composite, so within each pool use counts differ by at most about one. The
  counts are in ``compose.json`` (``reuse``): evaluate's shared-clip intervals need them
  (evaluate/stats.shared_clip_variance).
* **No leakage** is the caller's: compose the train list and the test list separately
  (the composer only ever reads the clips of the list it is given).
* A source clip that does not decode is recorded in ``compose.json`` (``failed_sources``)
  and replaced in its composite by the least-used clip of its class (no pass over every clip
  before planning: on real data none fails, and a decode of every source costs as much as
  the composites of a quick run); a composite that still cannot be made is recorded in
  ``failed_composites``; the rest goes on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import InputError, VideoError
from data.lists import VideoList, read_list

FORMAT = "framesel-composites-1"


@dataclass(frozen=True)
class ComposeConfig:
    """videos: composites to write; seed: everything random (labels, lengths, places, clips);
    target_class: the class positives hold; segments/targets: inclusive (low, high) counts
    per composite and target segments per positive; size (W, H) and fps of every segment."""

    videos: int = 40
    seed: int = 0
    target_class: str = "fight"
    segments: tuple[int, int] = (6, 12)
    targets: tuple[int, int] = (1, 2)
    size: tuple[int, int] = (340, 256)
    fps: float = 25.0
    crf: int = 18

    def __post_init__(self):
        for name in ("segments", "targets"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise InputError(f"compose {name} must be 1 <= low <= high, got {(lo, hi)}")
        if self.targets[1] > self.segments[0]:
            raise InputError(f"compose targets {self.targets} exceed the fewest segments {self.segments[0]}")
        if self.videos < 1:
            raise InputError(f"compose videos must be >= 1, got {self.videos}")
        w, h = self.size
        if w < 2 or h < 2 or w % 2 or h % 2:
            raise InputError(f"compose size must be even (yuv420p), got {w}x{h}")
        if not 1.0 <= self.fps <= 120.0:
            raise InputError(f"compose fps must lie in [1, 120], got {self.fps}")


@dataclass(frozen=True)
class Plan:
    """One planned composite: its path in the list, label (1 = target present) and the
    source clips (indices into the source list) in playing order."""

    path: str
    label: int
    sources: tuple[int, ...]


# ----------------------------------------------------------------------------- planning

def pools(videos: VideoList, target: str, usable=None) -> tuple[np.ndarray, np.ndarray]:
    """(target clips, other clips): indices into ``videos`` of usable clips of the target
    class and of every other class. InputError when the class is unknown or a pool is empty."""
    if videos.multilabel:
        raise InputError(f"{videos.source}: composites need a single-label list")
    if target not in videos.classes:
        raise InputError(f"{videos.source}: no class {target!r} to compose around "
                         f"(classes: {', '.join(videos.classes)})")
    ok = np.ones(len(videos), bool) if usable is None else np.asarray(usable, bool)
    is_target = np.asarray(videos.labels) == videos.classes.index(target)
    tgt, other = np.flatnonzero(ok & is_target), np.flatnonzero(ok & ~is_target)
    if not len(tgt) or not len(other):
        raise InputError(f"{videos.source}: composites need clips of {target!r} and of other classes; "
                         f"usable: {len(tgt)} and {len(other)}")
    return tgt, other


def _least_used(pool: np.ndarray, k: int, used: np.ndarray, rng) -> list[int]:
    """k distinct clips of ``pool``, the least used first, ties in a seeded random order."""
    tie = rng.random(len(pool))
    order = np.lexsort((tie, used[pool]))
    return [int(pool[i]) for i in order[:k]]


def plan(videos: VideoList, cfg: ComposeConfig, usable=None) -> list[Plan]:
    """The composites' plans, deterministic from ``cfg.seed`` (see the module docstring)."""
    tgt, other = pools(videos, cfg.target_class, usable)
    if len(other) < cfg.segments[1]:
        raise InputError(f"{videos.source}: {len(other)} usable clips outside {cfg.target_class!r}; "
                         f"a composite of {cfg.segments[1]} segments needs as many distinct ones")
    rng = np.random.default_rng(cfg.seed)
    labels = np.zeros(cfg.videos, np.int64)
    labels[: (cfg.videos + 1) // 2] = 1
    rng.shuffle(labels)
    used = np.zeros(len(videos), np.int64)
    width = max(4, len(str(cfg.videos - 1)))
    out = []
    for i, label in enumerate(labels):
        n = int(rng.integers(cfg.segments[0], cfg.segments[1] + 1))
        k = min(int(rng.integers(cfg.targets[0], cfg.targets[1] + 1)), len(tgt)) if label else 0
        where = set(rng.choice(n, size=k, replace=False).tolist())
        picks = iter(_least_used(tgt, k, used, rng))
        rest = iter(_least_used(other, n - k, used, rng))
        sources = tuple(next(picks) if s in where else next(rest) for s in range(n))
        used[list(sources)] += 1
        out.append(Plan(f"videos/c{i:0{width}d}.mp4", int(label), sources))
    return out


def reuse_counts(plans: list[Plan], videos: VideoList) -> dict[str, int]:
    """Source path -> composites it appears in (every listed clip, 0 when unused)."""
    counts = dict.fromkeys(videos.paths, 0)
    for p in plans:
        for s in p.sources:
            counts[videos.paths[s]] += 1
    return counts


# ----------------------------------------------------------------------------- pixels

def _ffmpeg() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def segment_filter(cfg: ComposeConfig) -> str:
    """ffmpeg's filter chain for one segment: fixed rate, cover-scale, centre crop, square pixels."""
    w, h = cfg.size
    return (f"fps={cfg.fps:g},scale='max({w},ceil(iw*{h}/ih))':'max({h},ceil(ih*{w}/iw))':flags=area,"
            f"crop={w}:{h},setsar=1")


def _raw(path: Path, vf: str, pix_fmt: str, frame_bytes: int) -> tuple[np.ndarray, int]:
    """Decode the first video stream of ``path`` through ``vf`` to raw ``pix_fmt`` frames.
    Returns (flat uint8 bytes, frames). VideoError naming the file on any failure."""
    args = [_ffmpeg(), "-nostdin", "-v", "error", "-i", str(Path(path).resolve()), "-map", "0:V:0", "-an", "-sn",
            "-dn", "-vf", vf, "-fps_mode", "passthrough", "-pix_fmt", pix_fmt, "-f", "rawvideo", "pipe:"]
    try:
        proc = subprocess.run(args, capture_output=True, check=False)
    except OSError as err:
        raise VideoError(path, f"cannot run ffmpeg: {err}") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise VideoError(path, f"ffmpeg exited {proc.returncode}: {tail[-1] if tail else 'no message'}")
    n = len(proc.stdout) // frame_bytes
    if n == 0:
        raise VideoError(path, "decoded 0 frames")
    return np.frombuffer(proc.stdout, np.uint8, count=n * frame_bytes), n


def decode_segment(path, cfg: ComposeConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB: a source clip as its segment shows it (segment_filter)."""
    w, h = cfg.size
    flat, n = _raw(Path(path), segment_filter(cfg), "rgb24", w * h * 3)
    return flat.reshape(n, h, w, 3)


def count_frames(path, size: tuple[int, int]) -> int:
    """Frames that decode from ``path`` (every frame once, ``-fps_mode passthrough``, as
    extraction decodes), read as grey at ``size``."""
    w, h = size
    return _raw(Path(path), f"scale={w}:{h}", "gray", w * h)[1]


def encoder_args(cfg: ComposeConfig) -> list[str]:
    """ffmpeg arguments after the binary: raw rgb24 on stdin -> deterministic H.264 mp4."""
    w, h = cfg.size
    gop = max(1, round(2 * cfg.fps))
    return ["-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-r", f"{cfg.fps:g}", "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(cfg.crf),
            "-preset", "veryfast", "-g", str(gop), "-sc_threshold", "0", "-threads", "1",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-movflags", "+faststart",
            "-f", "mp4"]


class SourceFailed(VideoError):
    """A source clip of a composite did not decode; ``index``: its place in the plan."""

    def __init__(self, path, reason, index: int = 0):
        super().__init__(path, reason)
        self.index = index


def render(p: Plan, videos: VideoList, root: Path, out: Path, cfg: ComposeConfig) -> dict:
    """Write composite ``p`` under ``out`` and return its truth entry
    ``{"num_frames", "segments": [{"source", "class", "start", "end"}]}``. A source that
    does not decode raises :class:`SourceFailed` (nothing is left behind)."""
    dest = out / p.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    segments, start = [], 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([_ffmpeg(), *encoder_args(cfg), str(part)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            for k, s in enumerate(p.sources):
                try:
                    frames = decode_segment(root / videos.paths[s], cfg)
                except VideoError as err:
                    raise SourceFailed(err.path, err.reason, k) from None
                proc.stdin.write(frames.tobytes())
                cls = videos.classes[int(videos.labels[s])]
                segments.append({"source": videos.paths[s], "class": cls, "start": start, "end": start + len(frames)})
                start += len(frames)
        except (BrokenPipeError, SourceFailed) as exc:
            proc.kill()
            proc.wait()
            part.unlink(missing_ok=True)
            if isinstance(exc, SourceFailed):
                raise
        else:
            proc.stdin.close()
            proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            part.unlink(missing_ok=True)
            raise VideoError(dest, f"encoder exited {proc.returncode}: {err.read().decode(errors='replace')[-300:]}")
    decoded = count_frames(part, (64, 48))
    if decoded != start:
        part.unlink(missing_ok=True)
        raise VideoError(dest, f"{start} frames were encoded but {decoded} decode; its frame ranges would be wrong")
    part.replace(dest)
    return {"num_frames": start, "segments": segments}


# ----------------------------------------------------------------------------- the whole set

def substitute(p: Plan, k: int, videos: VideoList, plans: list[Plan], failed) -> Plan | None:
    """``p`` with its k-th clip (which failed) replaced by the least-used clip of the same
    class (ties: list order) that has not failed and is not in ``p``, or None
    when there is none. Usage counts are those of ``plans``."""
    used = np.zeros(len(videos), np.int64)
    for q in plans:
        used[list(q.sources)] += 1
    labels = np.asarray(videos.labels)
    same = labels == labels[p.sources[k]]
    pool = [i for i in np.flatnonzero(same) if videos.paths[i] not in failed and i not in p.sources]
    if not pool:
        return None
    best = min(pool, key=lambda i: (used[i], i))
    return dataclasses.replace(p, sources=p.sources[:k] + (int(best),) + p.sources[k + 1:])


def _render_or_substitute(p: Plan, videos, root, out, cfg, plans, failed) -> tuple[Plan, dict]:
    """Render ``p``; each source that fails is recorded in ``failed`` and substituted
    (:func:`substitute`) until the composite renders. VideoError when it cannot."""
    while True:
        try:
            return p, render(p, videos, root, out, cfg)
        except SourceFailed as err:
            failed[videos.paths[p.sources[err.index]]] = err.reason
            q = substitute(p, err.index, videos, plans, failed)
            if q is None:
                raise VideoError(out / p.path, f"no usable clip left to stand in for {err.path}") from None
            p = q


def compose(list_path, root, out, cfg: ComposeConfig = ComposeConfig(), *, classes=None,
            progress: bool = False) -> dict:
    """Write ``cfg.videos`` composites of the clips of ``list_path`` (under ``root``) to
    ``out``: ``videos/``, ``list.txt`` (``path label``, 1 = target present), ``classes.txt``
    (``not_<target>``, ``<target>``), ``truth.json`` and ``compose.json`` (config, seeds,
    the list's sha256, the encoder, reuse counts, failed sources and composites). A second
    call with the same config and list finds ``compose.json`` and does nothing.
    Returns the compose.json record."""
    from tqdm import tqdm

    root, out = Path(root), Path(out)
    videos = read_list(list_path, classes=classes, root=root)
    record_path = out / "compose.json"
    settings = {"format": FORMAT, "config": dataclasses.asdict(cfg), "list_sha256": videos.sha256,
                "segment_filter": segment_filter(cfg), "encoder": encoder_args(cfg), "ffmpeg": Path(_ffmpeg()).name}
    if record_path.exists():
        have = json.loads(record_path.read_text())
        if {k: have.get(k) for k in settings} == json.loads(json.dumps(settings)):
            return have
    plans = plan(videos, cfg)
    truth, bad, failed = {}, {}, {}
    for i in tqdm(range(len(plans)), desc="compose", unit="video", disable=not progress):
        try:
            plans[i], truth[plans[i].path] = _render_or_substitute(plans[i], videos, root, out, cfg, plans, failed)
        except VideoError as err:      # recorded, the rest goes on
            bad[plans[i].path] = str(err)
    kept = [p for p in plans if p.path in truth]
    if not kept:
        raise VideoError(out, f"no composite could be written; first failure: {next(iter(bad.values()))}")
    _write_outputs(out, kept, truth, cfg)
    record = {**settings, "source_list": str(list_path), "root": str(root), "num_videos": len(kept),
              "num_positive": sum(p.label for p in kept), "reuse": reuse_counts(kept, videos),
              "failed_sources": failed, "failed_composites": bad,
              "truth_sha256": hashlib.sha256((out / "truth.json").read_bytes()).hexdigest()}
    record_path.write_text(json.dumps(record, indent=1))
    return json.loads(record_path.read_text())


def _write_outputs(out: Path, plans: list[Plan], truth: dict, cfg: ComposeConfig) -> None:
    """list.txt, classes.txt and truth.json (written last, through a temporary file)."""
    (out / "list.txt").write_text("".join(f"{p.path} {p.label}\n" for p in plans), encoding="utf-8")
    (out / "classes.txt").write_text(f"not_{cfg.target_class}\n{cfg.target_class}\n", encoding="utf-8")
    tmp = out / "truth.json.tmp"
    tmp.write_text(json.dumps({p.path: truth[p.path] for p in plans}, indent=1), encoding="utf-8")
    tmp.replace(out / "truth.json")


def summary(record: dict) -> str:
    """One line about a compose.json record: videos, positives, reuse spread, failures."""
    reuse = [c for c in record["reuse"].values() if c]
    spread = f"{min(reuse)}-{max(reuse)} (mean {np.mean(reuse):.1f})" if reuse else "none"
    return (f"{record['num_videos']} composites ({record['num_positive']} positive), each source clip used "
            f"{spread} times, {len(record['failed_sources'])} sources and "
            f"{len(record['failed_composites'])} composites failed")


__all__ = ["ComposeConfig", "Plan", "FORMAT", "SourceFailed", "compose", "count_frames", "decode_segment", "encoder_args",
           "plan", "pools", "render", "reuse_counts", "segment_filter", "substitute", "summary"]
