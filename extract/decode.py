"""Decode a video to RGB frames with the ffmpeg binary shipped by imageio-ffmpeg.

Two decoders (:func:`decoder`): ``ffmpeg``, the binary (imageio-ffmpeg's, else one on the
PATH) driven as below, and ``opencv``, OpenCV's bundled FFmpeg (:mod:`extract.decode_opencv`,
its departures listed there) where no binary exists. ``FRAMESEL_DECODER=ffmpeg|opencv``
chooses; by default the binary when there is one.

One ffmpeg process per video, driven through ffmpeg-python, writes raw ``rgb24`` frames at
the requested size to a pipe; stderr is drained by a thread so neither pipe can fill up and
deadlock. The stream header that ffmpeg prints on stderr gives the metadata (this ffmpeg
build has no ffprobe), so a decode is a single pass over the file.

Decisions (they are what the store records, so they are stated once here):

* **Stream**: the first video stream that is not an attached picture (``-map 0:V:0``;
  lower-case ``v`` would also match cover art). Audio, subtitles and data are dropped.
* **Rotation**: ffmpeg autorotates from the display matrix, so frames come out upright.
  ``size`` is the *stored* size, always: a portrait (rotated) video is rotated first and
  then resized to ``size`` without keeping its aspect ratio, exactly like a landscape one
  (TSN resizes every video to 340x256 regardless of aspect ratio). ``VideoMeta.width`` and
  ``height`` are the coded size before rotation; ``VideoMeta.rotation`` is the clockwise
  rotation in degrees ffmpeg applied (0, 90, 180, 270).
* **Colour**: ``-pix_fmt rgb24``; swscale converts 8- and 10-bit, limited- and full-range
  (``yuvj*``) input, the range taken from the stream, so full range is not expanded twice.
* **Resize**: inside ffmpeg with ``scale=W:H:flags=area`` (area averaging: anti-aliased
  downscaling, e.g. 1920x1080 -> 340x256, instead of bilinear's skipped pixels).
* **Frame rate**: ``-fps_mode passthrough``: every decoded frame comes out once, none is
  duplicated or dropped to fit a nominal rate (variable-frame-rate input stays honest).
* **Count**: ``DecodedVideo.frames`` holds the frames that really came out of the pipe; the
  container's duration may lie (``tree.avi`` claims 29.6 s, 444 frames, and has 68).
* **max_frames**: decoding stops after ``max_frames`` frames and a warning says the video
  was cut; it does not raise, because the first ``max_frames`` frames are still valid input.
* **Failures** raise ``VideoError(path, reason)``: missing file, unreadable data, no video
  stream, ffmpeg's non-zero exit, zero decoded frames. Errors ffmpeg conceals (corrupt
  NAL units, a truncated file whose index is intact) are kept as warnings.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import shutil

import cv2
import numpy as np

from data.errors import InputError, VideoError
from extract.decode_header import VideoMeta, parse_meta
from extract.decode_opencv import opencv_decoder_version, read_opencv

logger = logging.getLogger(__name__)

_GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info")
_SCALE_FLAGS = "area"
_BLOCK_BYTES = 8 << 20  # read the pipe in ~8 MiB blocks
_MAX_WARNINGS = 50
# swscale says this for every yuvj* (full-range) input; the range is handled correctly.
_BENIGN = ("deprecated pixel format used",)
_LEVELS = ("panic", "fatal", "error", "warning", "info", "verbose", "debug", "trace")
_LINE_RE = re.compile(r"^((?:\[[^\]]+\] )*)\[(%s)\] ?(.*)$" % "|".join(_LEVELS))
_ADDR_RE = re.compile(r" @ 0x[0-9a-f]+")


@dataclass
class DecodedVideo:
    """frames: (N, H, W, 3) uint8 RGB at the requested size; N = frames that decoded."""

    path: str
    frames: np.ndarray
    fps: float
    meta: VideoMeta
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


DECODERS = ("ffmpeg", "opencv")


@functools.lru_cache(maxsize=1)
def _find_ffmpeg() -> str | None:
    """The ffmpeg binary: imageio-ffmpeg's, else one on the PATH; None when neither exists
    or ffmpeg-python (which builds its command line) is missing."""
    try:
        import ffmpeg  # noqa: F401  (ffmpeg-python)
    except ImportError:
        return None
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def _ffmpeg_exe() -> str:
    exe = _find_ffmpeg()
    if exe is None:
        raise InputError("decoder 'ffmpeg' needs an ffmpeg binary (imageio-ffmpeg's or on the PATH) "
                         "and ffmpeg-python; neither found: use FRAMESEL_DECODER=opencv")
    return exe


def decoder() -> str:
    """The decoder in use: ``FRAMESEL_DECODER`` (ffmpeg or opencv) when set, else ``ffmpeg``
    where a binary exists, else ``opencv`` (OpenCV's bundled FFmpeg)."""
    name = os.environ.get("FRAMESEL_DECODER", "").strip().lower() or "auto"
    if name not in ("auto", *DECODERS):
        raise InputError(f"FRAMESEL_DECODER={name!r} unknown; valid: auto, {', '.join(DECODERS)}")
    if name == "auto":
        return "ffmpeg" if _find_ffmpeg() else "opencv"
    if name == "ffmpeg":
        _ffmpeg_exe()
    return name


def ffmpeg_version() -> str:
    """What decodes, recorded in every store: the ffmpeg binary's version string, e.g.
    ``n9.0.2-17-g2a571b6068-20260930``, or ``opencv-<version>-ffmpeg`` for the OpenCV decoder."""
    return _binary_version(_ffmpeg_exe()) if decoder() == "ffmpeg" else opencv_decoder_version()


@functools.lru_cache(maxsize=2)
def _binary_version(exe: str) -> str:
    out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True,
                         text=True, check=True).stdout
    match = re.match(r"ffmpeg version (\S+)", out)
    return match.group(1) if match else out.splitlines()[0].strip()


# --------------------------------------------------------------------------- stderr


class _StderrReader(threading.Thread):
    """Drains ffmpeg's stderr; keeps the input header and warning/error lines (bounded)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self._stream = stream
        self.header: list[str] = []  # context-free info lines from "Input #0" on
        self.problems: collections.deque[tuple[str, str]] = collections.deque(maxlen=1000)
        self.num_problems = 0
        self._in_header = False
        self._level = "info"

    def run(self):
        for raw in iter(self._stream.readline, b""):
            self._take(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._stream.close()

    def _take(self, line: str):
        match = _LINE_RE.match(line)
        if match:  # unprefixed lines continue the previous message at its level
            context, self._level, line = match.groups()
            context = _ADDR_RE.sub("", context).strip()
            line = f"{context} {line}" if context else line
        if self._level in ("info", "verbose"):
            self._take_info(line, bool(match and match.group(1)))
        elif not any(b in line for b in _BENIGN):
            self.num_problems += 1
            self.problems.append((self._level, line))

    def _take_info(self, line: str, has_context: bool):
        if line.startswith("Input #0"):
            self._in_header = True
        elif line.startswith(("Stream mapping:", "Output #", "Input #")):
            self._in_header = False
        if self._in_header and not has_context:
            self.header.append(line)

    def error_summary(self) -> str:
        """The first distinct error message (usually the cause) and the last two."""
        errors = [m for lvl, m in self.problems if lvl in ("panic", "fatal", "error")]
        distinct = list(dict.fromkeys(errors))
        if len(distinct) > 3:
            distinct = [distinct[0], "...", *distinct[-2:]]
        return " | ".join(distinct) or "no error message"

    def warnings(self) -> list[str]:
        lines = [f"{lvl}: {m}" for lvl, m in list(self.problems)[:_MAX_WARNINGS]]
        if self.num_problems > len(lines):
            lines.append(f"... and {self.num_problems - len(lines)} more ffmpeg messages")
        return lines


# --------------------------------------------------------------------------- process


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VideoError(path, "file not found")
    if not path.is_file():
        raise VideoError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")


def _start(path: Path, **output_kwargs) -> tuple[subprocess.Popen, _StderrReader]:
    """Start ffmpeg on the first video stream of ``path`` with the given output options."""
    import ffmpeg  # ffmpeg-python, needed by this decoder only

    # An absolute path cannot be mistaken for a protocol ("name:with:colons.mp4").
    spec = ffmpeg.input(os.path.abspath(path)).output(
        "pipe:", map="0:V:0", an=None, sn=None, dn=None, **output_kwargs)
    args = spec.compile(cmd=[_ffmpeg_exe(), *_GLOBAL_ARGS])
    logger.debug("running %s", args)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    reader = _StderrReader(proc.stderr)
    reader.start()
    return proc, reader


def _finish(proc: subprocess.Popen, reader: _StderrReader) -> int:
    """Reap ffmpeg (killing it if it still runs) and wait for stderr to be drained."""
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.poll() is None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join()
    return proc.returncode


def _meta_or_raise(path: Path, reader: _StderrReader, returncode: int) -> VideoMeta:
    """The stream's metadata; raises VideoError when ffmpeg failed or found no video."""
    meta = parse_meta(reader.header)
    if meta is None and reader.header:
        kinds = sorted({m.group(1) for line in reader.header
                        if (m := re.search(r"Stream #0:\d+.*?: (\w+):", line))})
        raise VideoError(path, f"no video stream (streams: {', '.join(kinds) or 'none'})")
    if returncode != 0:
        raise VideoError(path, f"ffmpeg exited {returncode}: {reader.error_summary()}")
    if meta is None:
        raise VideoError(path, f"no stream header from ffmpeg: {reader.error_summary()}")
    return meta


def probe(path) -> VideoMeta:
    """Metadata of the first video stream, without decoding any frame.

    Raises VideoError(path, reason) for a missing, unreadable or video-less file.
    """
    path = Path(path)
    _check_path(path)
    if decoder() == "opencv":
        frames, meta = read_opencv(path, None, None)
        if frames is None:
            raise VideoError(path, meta)
        return VideoMeta(**meta)
    proc, reader = _start(path, format="null", **{"frames:v": 0})
    return _meta_or_raise(path, reader, _finish(proc, reader))


# --------------------------------------------------------------------------- frames


def _read_full(stream, view: memoryview) -> int:
    """Fill ``view`` from ``stream``; returns the bytes read (short only at EOF)."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _read_frames(stream, height: int, width: int, limit: int | None) -> tuple[np.ndarray, int]:
    """Read rgb24 frames from the pipe into a growing array.

    Returns (frames (N, H, W, 3) uint8, trailing bytes of an incomplete last frame).
    The array grows by doubling in place (ndarray.resize reallocs, no per-frame Python
    objects), so a video of thousands of frames costs at most ~2x its final size.
    """
    frame_bytes = height * width * 3
    block = max(1, _BLOCK_BYTES // frame_bytes)
    capacity = block if limit is None else min(block, limit)
    buf = np.empty((capacity, height, width, 3), np.uint8)
    n = 0
    while limit is None or n < limit:
        want = block if limit is None else min(block, limit - n)
        if n + want > capacity:
            capacity = max(2 * capacity, n + want)
            buf.resize((capacity, height, width, 3), refcheck=False)
        with memoryview(buf.reshape(-1)) as flat:  # released before any resize
            got = _read_full(stream, flat[n * frame_bytes:(n + want) * frame_bytes])
        n += got // frame_bytes
        if got < want * frame_bytes:
            buf.resize((n, height, width, 3), refcheck=False)
            return buf, got % frame_bytes
    buf.resize((n, height, width, 3), refcheck=False)
    return buf, 0


def _check_size(size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height) integers, got {size!r}") from None
    if width < 1 or height < 1:
        raise InputError(f"size must be positive, got {size!r}")
    return width, height


def decode(path, size=(340, 256), *, max_frames: int | None = None) -> DecodedVideo:
    """Decode the first video stream of ``path`` to RGB frames of ``size`` = (width, height).

    Returns DecodedVideo with frames (N, height, width, 3) uint8 RGB, N = frames that
    decoded (at most ``max_frames``; a cut is reported in ``warnings``). One ffmpeg pass.
    Raises VideoError(path, reason) on failure, InputError for a bad size/max_frames.
    """
    width, height = _check_size(size)
    if max_frames is not None and int(max_frames) < 1:
        raise InputError(f"max_frames must be >= 1 or None, got {max_frames!r}")
    path = Path(path)
    _check_path(path)
    if decoder() == "opencv":
        return _decode_opencv(path, width, height, max_frames)
    extra = {} if max_frames is None else {"frames:v": int(max_frames) + 1}
    proc, reader = _start(path, format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough",
                          vf=f"scale={width}:{height}:flags={_SCALE_FLAGS}", **extra)
    try:
        limit = None if max_frames is None else int(max_frames) + 1
        frames, leftover = _read_frames(proc.stdout, height, width, limit)
    finally:
        returncode = _finish(proc, reader)
    meta = _meta_or_raise(path, reader, returncode)
    warnings = reader.warnings()
    if leftover:
        warnings.append(f"dropped an incomplete last frame ({leftover} bytes)")
    if max_frames is not None and len(frames) > max_frames:
        frames.resize((max_frames, height, width, 3), refcheck=False)
        warnings.append(f"stopped after max_frames={max_frames}; the video has more frames")
    if len(frames) == 0:
        detail = f": {reader.error_summary()}" if reader.num_problems else ""
        raise VideoError(path, f"decoded 0 frames{detail}")
    if warnings:
        logger.warning("%s: %d warning(s), first: %s", path, len(warnings), warnings[0])
    fps = meta.fps or (len(frames) / meta.declared_duration if meta.declared_duration else 0.0)
    return DecodedVideo(path=str(path), frames=frames, fps=float(fps), meta=meta,
                        warnings=warnings)


def _decode_opencv(path: Path, width: int, height: int, max_frames: int | None) -> DecodedVideo:
    """:func:`decode` through OpenCV's bundled FFmpeg (same contract and errors)."""
    frames, meta = read_opencv(path, (width, height), None if max_frames is None else int(max_frames) + 1)
    if frames is None:
        raise VideoError(path, meta)
    meta, warnings = VideoMeta(**meta), []
    if max_frames is not None and len(frames) > max_frames:
        frames = frames[:max_frames]
        warnings.append(f"stopped after max_frames={max_frames}; the video has more frames")
    if len(frames) == 0:
        raise VideoError(path, "decoded 0 frames (OpenCV's FFmpeg)")
    fps = meta.fps or (len(frames) / meta.declared_duration if meta.declared_duration else 0.0)
    return DecodedVideo(path=str(path), frames=np.ascontiguousarray(frames), fps=float(fps), meta=meta,
                        warnings=warnings)


def grayscale(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) uint8 luma, BT.601 weights (OpenCV RGB2GRAY,
    as TSN/denseflow compute flow on)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    n, h, w, _ = frames.shape
    if n == 0:
        return np.empty((0, h, w), np.uint8)
    # One cvtColor call over all frames stacked vertically: same result, no Python loop.
    flat = np.ascontiguousarray(frames).reshape(n * h, w, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(n, h, w)
