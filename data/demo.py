"""The embedded demo dataset: deterministic synthetic action videos encoded as real H.264.

``framesel demo`` must show the whole pipeline on a fresh 2-core machine with no internet, so
the dataset is generated from a seed and encoded with the ffmpeg binary imageio-ffmpeg ships.
It is shaped like the problem frame selection attacks: the discriminative action fills only a
minority of each video (``action_fraction``, 20-30 % by default) at a random place, and the
rest of the video carries misleading evidence.

What a video holds (frames 340x256 RGB, camera shake and an optional slow camera pan
everywhere):

- It is a sequence of *segments* separated by scene cuts; every segment has its own
  background (a real photograph shipped with scikit-learn, or a procedural texture).
- The *action segment* shows the class's object, a disc carrying the class's pattern, doing
  the class's motion: ``pan-left`` (checkerboard sliding left), ``pan-right`` (hexagonal dots
  sliding right), ``zoom-in`` (concentric rings growing), ``rotate`` (sunburst turning).
  Half the time a static neutral blob sits beside it.
- Every other segment is a *distractor*: a static *lookalike* (the pattern of another class,
  so single RGB frames point to a wrong class), a *decoy* (a neutral blob doing another
  class's motion at 50-100 % strength, so flow points to a wrong class), or both.

So an ImageNet CNN separates the classes by appearance and motion inside the action segment,
uniform averaging over a video mixes in 70-80 % misleading frames, and an oracle that knows
where the action is sees only clean evidence. Nothing here knows about agents.

Determinism: every video draws from its own ``numpy.random.default_rng([seed, label, k])``
and is rendered with numpy only, so the same config gives byte-identical raw frames (their
sha256 is recorded in ``demo_truth.json``); the H.264 bytes may depend on the encoder build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.demo_pixels import PHOTOS, background_image, draw, encode, encoder_args
from data.errors import InputError, UnknownNameError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARGIN = 48            # px of background beyond each frame edge, room for camera motion
MIN_SEGMENT = 6        # a distractor side this long or more may be cut into two segments
DISTRACTOR_KINDS = ("lookalike", "decoy", "both")
DISTRACTOR_PROBS = (0.4, 0.4, 0.2)


# ------------------------------------------------------------------------------- classes

@dataclass(frozen=True)
class DemoClass:
    """One demo class: the pattern its object wears and the motion it performs.

    ``motion(t, amp, sign)`` maps t, frames from the middle of the motion window, to
    (dx, dy, scale, dangle): the object's offset in px, radius factor and rotation in radians
    relative to its base state; ``amp`` scales the speed, ``sign`` picks a direction.
    """

    name: str
    pattern: str
    motion: Callable[[float, float, float], tuple[float, float, float, float]]


_CLASSES: dict[str, DemoClass] = {}


def register_class(name: str, pattern: str):
    """Decorator registering ``motion(t, amp, sign)`` as demo class ``name``; duplicates raise."""
    def decorate(fn):
        if name in _CLASSES:
            raise ValueError(f"demo class {name!r} is already registered")
        _CLASSES[name] = DemoClass(name, pattern, fn)
        return fn
    return decorate


def demo_classes() -> list[str]:
    """Names of every registered demo class."""
    return list(_CLASSES)


# Speeds are per frame, so short videos do not get faster motion: 11 px/frame for the pans,
# x1.11/frame for the zoom (x3.5 over 12 frames), 15 deg/frame for the rotation (below half
# the sunburst's 72 deg period, so the flow is not aliased). ``t`` counts frames from the
# middle of the motion window; ``amp`` scales the speed.

@register_class("pan-left", "checker")
def _pan_left(t, amp, sign):
    return -11.0 * amp * t, 0.0, 1.0, 0.0


@register_class("pan-right", "dots")
def _pan_right(t, amp, sign):
    return 11.0 * amp * t, 0.0, 1.0, 0.0


@register_class("zoom-in", "rings")
def _zoom_in(t, amp, sign):
    return 0.0, 0.0, 3.5 ** (amp * t / 12.0), 0.0


@register_class("rotate", "sunburst")
def _rotate(t, amp, sign):
    return 0.0, 0.0, 1.0, sign * amp * math.radians(15.0) * t


# ------------------------------------------------------------------------------ config

@dataclass(frozen=True)
class DemoConfig:
    """What to generate. ``size`` is (width, height); ``action_fraction`` a (low, high) range.

    Per class, the first ``videos_per_class - test_per_class`` videos go to train.txt and the
    rest to test.txt. Motion speeds are per frame and tuned for 24-64 frames: much longer
    action segments carry the pans out of the frame.
    """

    classes: tuple[str, ...] = ("pan-left", "pan-right", "zoom-in", "rotate")
    videos_per_class: int = 16
    test_per_class: int = 6
    frames: int = 48
    action_fraction: tuple[float, float] = (0.2, 0.3)
    size: tuple[int, int] = (340, 256)
    fps: int = 12
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "action_fraction", tuple(float(f) for f in self.action_fraction))
        object.__setattr__(self, "size", tuple(self.size))
        for name in self.classes:
            if name not in _CLASSES:
                raise UnknownNameError("demo class", name, _CLASSES)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise InputError(f"need at least two distinct classes, got {self.classes}")
        for field in ("videos_per_class", "test_per_class", "frames", "fps", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{field} must be a non-negative integer, got {value!r}")
        if not 1 <= self.test_per_class < self.videos_per_class:
            raise InputError("need 1 <= test_per_class < videos_per_class, got "
                             f"{self.test_per_class} and {self.videos_per_class}")
        self._check_ranges()

    def _check_ranges(self):
        lo, hi = self.action_fraction if len(self.action_fraction) == 2 else (None, None)
        if lo is None or not 0.0 < lo <= hi < 1.0:
            raise InputError(f"action_fraction must be (low, high) with 0 < low <= high < 1, "
                             f"got {self.action_fraction}")
        if self.frames < 8 or self.fps < 1:
            raise InputError(f"need frames >= 8 and fps >= 1, got {self.frames}, {self.fps}")
        if len(self.size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 64
                                      or s % 2 for s in self.size):
            raise InputError(f"size must be (width, height), even integers >= 64 (yuv420p), "
                             f"got {self.size}")


# ------------------------------------------------------------------------------ planning

def _plan_segments(cfg: DemoConfig, rng: np.random.Generator) -> tuple[int, int, list]:
    """-> (action start, action end (exclusive), [(start, end), ...] covering all frames)."""
    lo, hi = cfg.action_fraction
    n_act = int(np.clip(round(cfg.frames * rng.uniform(lo, hi)), 2, cfg.frames - 2))
    start = int(rng.integers(0, cfg.frames - n_act + 1))
    bounds = [(start, start + n_act)]
    for a, b in ((0, start), (start + n_act, cfg.frames)):
        if b - a >= 2 * MIN_SEGMENT and rng.random() < 0.5:
            cut = int(rng.integers(a + MIN_SEGMENT, b - MIN_SEGMENT + 1))
            bounds += [(a, cut), (cut, b)]
        elif b > a:
            bounds.append((a, b))
    return start, start + n_act, sorted(bounds)


def _colours(rng: np.random.Generator) -> list[list[float]]:
    """Two contrasting RGB colours; random, so colour is never a class cue."""
    c0 = rng.uniform(0, 255, 3)
    c1 = (c0 + 128 + rng.uniform(-40, 40, 3)) % 256
    return [c0.round(1).tolist(), c1.round(1).tolist()]


def _sprite(rng, pattern: str, cls: str | None, amp: float, window: tuple[int, int],
            centre: tuple[float, float], radius: float) -> dict:
    """A disc object: pattern, colours, base state, motion class (None = static) and window."""
    sp = {"pattern": pattern, "colours": _colours(rng), "cx": centre[0], "cy": centre[1],
          "r": radius, "angle": float(rng.uniform(0, 2 * math.pi)), "motion": cls,
          "amp": amp, "sign": float(rng.choice([-1.0, 1.0])), "window": list(window)}
    if pattern == "neutral":  # a few random low-frequency waves: blotchy, no geometric pattern
        sp["waves"] = np.column_stack([rng.uniform(-7, 7, (5, 2)), rng.uniform(0, 6.3, 5)]
                                      ).round(3).tolist()
    return sp


def _place(rng, w: int, h: int, side: float, dist=(60.0, 90.0)) -> tuple[float, float]:
    """A centre ``dist`` px left (side<0) or right (side>0) of the frame's middle.

    Offsets stay small enough for the object to show in the 224 centre crop.
    """
    return (w / 2 + side * rng.uniform(*dist), h / 2 + rng.uniform(-35, 35))


def _background(rng: np.random.Generator) -> dict:
    if rng.random() < 0.5:
        return {"kind": "photo", "name": str(rng.choice(PHOTOS)), "zoom": float(rng.uniform(1, 1.6)),
                "fx": float(rng.random()), "fy": float(rng.random()), "flip": bool(rng.random() < 0.5),
                "gain": float(rng.uniform(0.75, 1.1))}
    return {"kind": "texture", "seed": int(rng.integers(2**31))}


def _camera(rng: np.random.Generator, n: int) -> list[list[int]]:
    """(n, 2) integer camera offsets: shake (a clipped random walk), half the time a slow pan."""
    speed = min(float(rng.uniform(0.5, 2.0)), 2.0 * (MARGIN - 4) / max(n, 1))
    drift = speed * np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a)])
    drift = drift if rng.random() < 0.5 else np.zeros(2)
    shake = np.clip(np.cumsum(rng.normal(0, 0.7, (n, 2)), axis=0), -3, 3)
    path = MARGIN + drift * (np.arange(n)[:, None] - (n - 1) / 2) + shake
    return np.clip(np.rint(path), 0, 2 * MARGIN).astype(int).tolist()


def _action_sprites(rng, cfg, label: int, n: int) -> list[dict]:
    w, h = cfg.size
    cls = cfg.classes[label]
    side = float(rng.choice([-1.0, 1.0]))
    # pans travel across the middle; zoom/rotate stay near the centre
    centre = (w / 2 + rng.uniform(-15, 15), h / 2 + rng.uniform(-20, 20))
    if _CLASSES[cls].pattern not in ("checker", "dots"):
        centre = (w / 2 + side * rng.uniform(0, 30), centre[1])
    sprites = [_sprite(rng, _CLASSES[cls].pattern, cls, float(rng.uniform(0.85, 1.15)),
                       (0, n), centre, float(rng.uniform(48, 62)))]
    if rng.random() < 0.5:
        sprites.insert(0, _sprite(rng, "neutral", None, 0.0, (0, n), _place(rng, w, h, -side, (80, 100)),
                                  float(rng.uniform(30, 40))))
    return sprites


def _distractor_sprites(rng, cfg, label: int, n: int) -> tuple[str, list[dict]]:
    w, h = cfg.size
    others = [c for i, c in enumerate(cfg.classes) if i != label]
    kind = str(rng.choice(DISTRACTOR_KINDS, p=DISTRACTOR_PROBS))
    side = float(rng.choice([-1.0, 1.0]))
    sprites = []
    if kind in ("lookalike", "both"):
        look = str(rng.choice(others))
        sprites.append(_sprite(rng, _CLASSES[look].pattern, None, 0.0, (0, n),
                               _place(rng, w, h, side), float(rng.uniform(45, 60))))
        sprites[-1]["lookalike_of"] = look
    if kind in ("decoy", "both"):
        move = str(rng.choice(others))
        length = int(min(n, rng.integers(10, 15)))     # moves about as long as an action does
        t0 = int(rng.integers(0, n - length + 1))
        centre = _place(rng, w, h, -side, (15.0, 45.0))
        sprites.append(_sprite(rng, "neutral", move, float(rng.uniform(0.5, 1.0)),
                               (t0, t0 + length), centre, float(rng.uniform(35, 50))))
    return kind, sprites


def plan_video(cfg: DemoConfig, label: int, k: int) -> dict:
    """Everything random about video ``k`` of class ``label``, as a JSON-able dict."""
    rng = np.random.default_rng([cfg.seed, label, k])
    a0, a1, bounds = _plan_segments(cfg, rng)
    segments = []
    for s0, s1 in bounds:
        if (s0, s1) == (a0, a1):
            kind, sprites = "action", _action_sprites(rng, cfg, label, s1 - s0)
        else:
            kind, sprites = _distractor_sprites(rng, cfg, label, s1 - s0)
        segments.append({"start": s0, "end": s1, "kind": kind, "background": _background(rng),
                         "camera": _camera(rng, s1 - s0), "sprites": sprites})
    return {"label": label, "class": cfg.classes[label], "seed": [cfg.seed, label, k],
            "action_start": a0, "action_end": a1, "segments": segments}


# ----------------------------------------------------------------------------- rendering

def _sprite_state(sp: dict, t: int) -> tuple[float, float, float, float]:
    """(cx, cy, radius, angle) of a sprite at segment frame t, in scene coordinates."""
    if sp["motion"] is None:
        return sp["cx"], sp["cy"], sp["r"], sp["angle"]
    t0, t1 = sp["window"]
    rel = float(np.clip(t, t0, t1 - 1)) - (t0 + t1 - 1) / 2   # static outside the window
    dx, dy, scale, da = _CLASSES[sp["motion"]].motion(rel, sp["amp"], sp["sign"])
    return sp["cx"] + dx, sp["cy"] + dy, sp["r"] * scale, sp["angle"] + da


def render_video(cfg: DemoConfig, plan: dict) -> np.ndarray:
    """Render a :func:`plan_video` plan -> (frames, height, width, 3) uint8 RGB frames."""
    w, h = cfg.size
    out = np.empty((cfg.frames, h, w, 3), np.uint8)
    for seg in plan["segments"]:
        scene = background_image(seg["background"], h + 2 * MARGIN, w + 2 * MARGIN)
        scene = np.clip(scene + 0.5, 0, 255).astype(np.uint8)
        for t, (ox, oy) in enumerate(seg["camera"]):
            frame = out[seg["start"] + t]
            frame[...] = scene[oy:oy + h, ox:ox + w]
            for sp in seg["sprites"]:
                # the camera's rest position is (MARGIN, MARGIN): objects live in the scene
                draw(frame, sp, _sprite_state(sp, t), (ox - MARGIN, oy - MARGIN))
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_one(cfg: DemoConfig, out_dir: Path, label: int, k: int) -> dict:
    """Plan, render and encode one video -> its demo_truth.json record."""
    plan = plan_video(cfg, label, k)
    frames = render_video(cfg, plan)
    cls = cfg.classes[label]
    rel = f"videos/{cls}/{cls}_{k:03d}.mp4"
    encode(frames, out_dir / rel, cfg)
    split = "train" if k < cfg.videos_per_class - cfg.test_per_class else "test"
    return {"path": rel, "split": split, "num_frames": int(len(frames)),
            "frames_sha256": _sha256(frames.tobytes()),
            "file_sha256": _sha256((out_dir / rel).read_bytes()), **plan}


# ------------------------------------------------------------------------------- dataset

def make_demo_dataset(out_dir, cfg: DemoConfig = DemoConfig(), *, progress: bool = False,
                      workers: int = 2) -> dict:
    """Generate the demo dataset under ``out_dir``.

    Writes ``videos/<class>/<class>_<k>.mp4``, ``train.txt`` and ``test.txt`` (mmaction2:
    ``videos/<class>/<name>.mp4 <label>``, 0-based), ``classes.txt`` and, last,
    ``demo_truth.json``: the config, the generator version and encoder arguments, and per
    video its label, split, ``action_start``/``action_end`` (frame indices, end exclusive),
    every segment (bounds, kind, background, camera path, objects), and the sha256 of its raw
    rgb24 frames and of its file.

    Returns a dict with the paths written (``root``, ``train_list``, ``test_list``,
    ``classes_file``, ``truth_file``), ``num_videos``, ``num_train``, ``num_test``,
    ``num_frames`` and ``seconds``.

    Raises:
        InputError: ``out_dir`` exists and is not a directory, or bad ``workers``.
        VideoError: ffmpeg failed on a video.
    """
    t0 = time.perf_counter()
    root = _prepare(Path(out_dir), cfg)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    jobs = [(label, k) for label in range(len(cfg.classes)) for k in range(cfg.videos_per_class)]
    # ffmpeg encodes in its own process and numpy releases the GIL: threads overlap well.
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda job: _make_one(cfg, root, *job), jobs)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(jobs), desc="demo videos", unit="video")
        records = list(results)
    files = _write_lists(root, cfg, records)
    seconds = time.perf_counter() - t0
    log.info("demo dataset: %d videos in %s (%.1f s)", len(records), root, seconds)
    return {**files, "root": str(root), "num_videos": len(records),
            "num_train": sum(r["split"] == "train" for r in records),
            "num_test": sum(r["split"] == "test" for r in records),
            "num_frames": sum(r["num_frames"] for r in records), "seconds": seconds}


def _prepare(root: Path, cfg: DemoConfig) -> Path:
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory")
    (root / "demo_truth.json").unlink(missing_ok=True)  # present only once everything is written
    for cls in cfg.classes:
        (root / "videos" / cls).mkdir(parents=True, exist_ok=True)
    return root.resolve()


def _write_lists(root: Path, cfg: DemoConfig, records: list[dict]) -> dict:
    files = {"train_list": root / "train.txt", "test_list": root / "test.txt",
             "classes_file": root / "classes.txt", "truth_file": root / "demo_truth.json"}
    for split in ("train", "test"):
        lines = [f"{r['path']} {r['label']}\n" for r in records if r["split"] == split]
        files[f"{split}_list"].write_text("".join(lines), encoding="utf-8")
    files["classes_file"].write_text("".join(c + "\n" for c in cfg.classes), encoding="utf-8")
    truth = {"generator": {"name": "data.demo", "version": GENERATOR_VERSION,
                           "encoder": ["ffmpeg", *encoder_args(cfg)],
                           "distractors": dict(zip(DISTRACTOR_KINDS, DISTRACTOR_PROBS))},
             "config": dataclasses.asdict(cfg), "classes": list(cfg.classes),
             "patterns": {c: _CLASSES[c].pattern for c in cfg.classes}, "videos": records}
    tmp = files["truth_file"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(truth, indent=1), encoding="utf-8")
    tmp.replace(files["truth_file"])
    return {key: str(p) for key, p in files.items()}
