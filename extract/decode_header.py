"""Parsing ffmpeg's input header (what ``ffmpeg -i`` prints on stderr) into
:class:`VideoMeta`: the ffmpeg decoder's metadata without ffprobe (:mod:`extract.decode`)."""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["VideoMeta", "parse_meta"]


@dataclass(frozen=True)
class VideoMeta:
    """What the container's first video stream declares (parsed from ffmpeg's header).

    width, height: coded size before rotation. rotation: clockwise degrees applied on
    decode. declared_frames: round(duration * fps), what the container implies, not a count.
    """

    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    rotation: int
    declared_duration: float | None
    declared_frames: int | None



def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses or brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def _rate(token: str) -> float:
    """'29.97' -> 29.97, '1k' -> 1000.0."""
    scale = 1000.0 if token.endswith("k") else 1.0
    return float(token.rstrip("k")) * scale


def _duration(header: list[str]) -> float | None:
    for line in header:
        m = re.match(r"\s*Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", line)
        if m:
            h, mnt, s = m.groups()
            return int(h) * 3600 + int(mnt) * 60 + float(s)
    return None


def _video_stream(header: list[str]) -> tuple[str, list[str]] | None:
    """The first non-attached-picture video stream line and the lines of its block."""
    for i, line in enumerate(header):
        if re.match(r"\s*Stream #0:\d+.*: Video: ", line) and "(attached pic)" not in line:
            block = []
            for follow in header[i + 1:]:
                if re.match(r"\s*Stream #", follow):
                    break
                block.append(follow)
            return line, block
    return None


def _rotation(block: list[str]) -> int:
    for line in block:
        m = re.search(r"Display Matrix: rotation of (-?[\d.]+) degrees", line)
        if m:  # the matrix angle is counter-clockwise; ffmpeg turns the picture back
            return int(round(-float(m.group(1)))) % 360
        m = re.match(r"\s*rotate\s*: (-?\d+)", line)
        if m:
            return int(m.group(1)) % 360
    return 0


def parse_meta(header: list[str]) -> VideoMeta | None:
    """VideoMeta of the first video stream in ffmpeg's input header, None if it has none."""
    found = _video_stream(header)
    if found is None:
        return None
    line, block = found
    parts = _split_top(line.split(": Video: ", 1)[1])
    codec = parts[0].split()[0]
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 else "unknown"
    size = re.search(r"(?:^|,\s*)(\d+)x(\d+)", ", ".join(parts[1:]))
    fps = re.search(r"([\d.]+k?) fps", line) or re.search(r"([\d.]+k?) tbr", line)
    fps_value = _rate(fps.group(1)) if fps else 0.0
    duration = _duration(header)
    frames = round(duration * fps_value) if duration and fps_value else None
    return VideoMeta(codec=codec, pix_fmt=pix_fmt,
                     width=int(size.group(1)) if size else 0,
                     height=int(size.group(2)) if size else 0,
                     fps=fps_value, rotation=_rotation(block),
                     declared_duration=duration, declared_frames=frames)
