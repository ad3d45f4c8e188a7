"""Batch extraction: a list of videos → one store, sharded, parallel, resumable.

Guarantees (each tested for real in tests/test_extract_run.py):
- a failed video is recorded with its cause in ``videos/error`` and the run goes on;
- ``shard=(k, n)`` takes videos i with i % n == k - 1, so N array jobs cover the list
  exactly once; concurrent shards share one Zarr store (one chunk per video) or write one
  HDF5 file each (``*.shard-k-of-n.h5``) to be joined by ``framesel merge``;
- a killed run started again does only what is not DONE (FAILED too with
  ``retry_failed``) and ends with the same arrays as an uninterrupted run;
- one process per (store, shard): a second one on the same shard stops at once, naming the
  holder (:mod:`extract.lock`); workers (``workers > 1``: whole-video processes, or decode
  processes feeding this one's device, :mod:`extract.schedule`) die with the process that
  started them;
- rows are written by one writer thread (:class:`extract.schedule.Writer`) while the next
  videos compute;
  a run that stops (SIGTERM, a full disk) writes what was computed first;
- a store is resumed or joined only with the settings that determine its features and the
  same list and root; batch size, device, workers and threads may change (they do not
  determine the rows beyond float rounding, see ``data.identity.EXECUTION_SETTINGS``).
"""
from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from data import __version__
from data.errors import FrameselError, InputError, NonFiniteError, StoreError
from data.identity import backbone_files, differences, features_identity
from data.lists import VideoList, read_hmdb51_split, read_list
from data.store import DONE, FAILED, Layout, StreamSpec, create_store, format_for
from data.progress import show_progress
from extract import schedule
from extract.device import SECONDS_NOTE, cost_stages
from extract.workers import threads_of, uses_device_pipeline
from extract.flow import cost_label
from extract.lock import shard_lock
from extract.video import Models, VideoSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    list_path: str
    out: str
    root: str | None = None              # None: no --root (paths from the working directory, may be absolute)
    list_format: str = "auto"
    classes_file: str | None = None
    hmdb51: tuple[int, str] = (1, "test")  # (split, subset) when list_format is hmdb51
    format: str | None = None            # zarr | hdf5 (default from the suffix of out)
    settings: VideoSettings = field(default_factory=VideoSettings)
    shard: tuple[int, int] = (1, 1)      # (k, n), 1-based k
    workers: int = 1
    device: str = "cpu"
    pipeline: bool | None = None         # workers > 1 as decode workers feeding this process's
                                         # device; None: on a GPU (extract.schedule)
    threads: int = 0                     # torch/OpenCV threads per worker; 0 = budget / workers (workers.py)
    retry_failed: bool = False
    quiet: bool = False
    command: str = ""


@dataclass
class Summary:
    store: str
    total: int = 0                  # videos in this shard
    done: int = 0                   # done now (this run or earlier)
    failed: int = 0
    processed: int = 0              # by this run
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    stopped: str = ""               # why the run ended early (full disk, SIGTERM); "" if it did not
    weights: list[str] = field(default_factory=list)   # per stream: the weights, layout and preset used
    device_busy: float | None = None  # fraction of the wall time this process's device computed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.done == self.total and not self.stopped

    def text(self) -> str:
        rate = self.processed / self.seconds if self.seconds else 0.0
        busy = f", device busy {100 * self.device_busy:.0f} %" if self.device_busy is not None else ""
        lines = [f"{self.store}: {self.done}/{self.total} done, {self.failed} failed "
                 f"({self.processed} processed in {self.seconds:.1f} s, {rate:.2f} videos/s{busy})"]
        lines += [f"  FAILED {p}: {e}" for p, e in self.failures]
        lines += [f"  STOPPED: {self.stopped}"] if self.stopped else []
        return "\n".join(self.weights + lines)


def weights_lines(describe: dict) -> list[str]:
    """One line per stream: its weights, the checkpoint layout found and the preset used."""
    lines = []
    for stream, d in describe.items():
        resize = d.get("resize")
        lines.append(f"{stream}: {d['name']} ({d['layout']} layout, preset {d['preset']['name']}, "
                     f"{d['num_classes']}-class head, sha256 {d['sha256'][:12]})"
                     + (f"; frames resized to {resize['to'][0]}x{resize['to'][1]} for its {d['input_size']} px "
                        "crops" if resize else ""))
        if d.get("logits_note"):
            lines.append(f"  {stream}: {d['logits_note']}")
    return lines


def load_list(cfg: ExtractConfig) -> VideoList:
    """The list, its paths checked to stay under --root; missing videos are left to be
    recorded as failed."""
    common = {"classes": cfg.classes_file, "root": cfg.root, "require_exist": False}
    if cfg.list_format == "hmdb51":
        split, subset = cfg.hmdb51
        return read_hmdb51_split(cfg.list_path, split=split, subset=subset, **common)
    return read_list(cfg.list_path, fmt=cfg.list_format, **common)


def root_dir(cfg: ExtractConfig) -> Path:
    """The directory the list's relative paths are under (the working directory without --root)."""
    return Path(cfg.root if cfg.root is not None else ".")


def shard_indices(num_videos: int, shard: tuple[int, int]) -> np.ndarray:
    """Videos of shard k of n (1-based k): i % n == k - 1 (round robin balances lengths)."""
    k, n = shard
    if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
        raise InputError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    return np.arange(k - 1, num_videos, n)


def store_path(cfg: ExtractConfig) -> Path:
    """HDF5 has a single writer, so each of several shards writes its own file."""
    out = Path(cfg.out)
    if format_for(out, cfg.format) == "hdf5" and cfg.shard[1] > 1:
        from data.store_merge import shard_path
        return shard_path(out, *cfg.shard)
    return out


def run_extraction(cfg: ExtractConfig) -> Summary:
    """Extract every pending video of the shard into the store; see the module docstring."""
    check_settings(cfg)
    videos = load_list(cfg)
    check_root(cfg, videos)
    path = store_path(cfg)
    _check_out(path, format_for(cfg.out, cfg.format))
    with shard_lock(path, cfg.shard), threads_of(cfg):
        return _run_locked(cfg, videos, path)


def _run_locked(cfg: ExtractConfig, videos: VideoList, path: Path) -> Summary:
    C = len(videos.classes)
    in_process = cfg.workers <= 1 or uses_device_pipeline(cfg)
    models = Models(cfg.settings, cfg.device, C) if in_process else None
    describe = (models or Models(cfg.settings, "cpu", C)).describe()
    store = create_store(path, _layout(cfg, videos, describe), format=cfg.format, exist_ok=True)
    try:
        _check_compatible(store, cfg, videos, describe)
        mine = shard_indices(len(videos.paths), cfg.shard)
        status = store.status()
        redo = (status[mine] == 0) | ((status[mine] == FAILED) & cfg.retry_failed)
        todo = mine[redo]
        summary = Summary(store=str(path), total=len(mine), weights=weights_lines(describe))
        t0 = time.perf_counter()
        _process(cfg, videos, todo, models, store, summary)
        summary.seconds = time.perf_counter() - t0
        if models is not None and models.stage.runs and summary.seconds:
            summary.device_busy = models.stage.busy / summary.seconds
        status, errors = store.status(), store.errors()
        summary.done = int((status[mine] == DONE).sum())
        summary.failed = int((status[mine] == FAILED).sum())
        summary.failures = [(videos.paths[i], errors[i]) for i in mine if status[i] == FAILED]
        return summary
    finally:
        store.close()


def _process(cfg, videos: VideoList, todo, models, store, summary: Summary) -> None:
    """Extract the ``todo`` rows into ``store`` through the writer thread; a full disk or a
    SIGTERM ends it early (``summary.stopped``), with every computed video written. The
    progress bar counts videos written (a killed run keeps every video it showed)."""
    from tqdm import tqdm

    previous = _raise_on_sigterm()
    bar = tqdm(total=len(todo), unit="video", desc="extract", disable=not show_progress(cfg.quiet),
               dynamic_ncols=True)
    writer = schedule.Writer(store, videos.paths, on_written=bar.update)
    hopeless = Hopeless(len(todo))
    try:
        try:
            for i, outcome in _outcomes(cfg, videos, todo, models):
                writer.put(i, outcome)
                hopeless.check(outcome)
        finally:
            writer.close()
    except (StoreError, Terminated, Hopeless) as err:   # full disk, preemption, broken weights: done stays done
        summary.stopped = str(err)
    finally:
        bar.close()
        summary.processed = writer.written
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Hopeless(FrameselError):
    """Raised (by :meth:`check`) when the first :attr:`FIRST` videos of a run all gave
    non-finite rows and more are to come: the weights or the preprocessing are broken, and
    every other video would fail the same way, so they stay pending instead."""

    FIRST = 3

    def __init__(self, todo: int):
        super().__init__("")
        self.todo, self.seen, self.causes = todo, 0, []

    def check(self, outcome) -> None:
        self.seen += 1
        if isinstance(outcome, NonFiniteError):
            self.causes.append(outcome.reason)
        if self.seen == len(self.causes) == self.FIRST < self.todo:
            self.args = (f"the first {self.FIRST} videos all gave non-finite rows ({self.causes[0]}); every "
                         "other video would too, so they stay pending: fix the weights (--checkpoint) or "
                         "the preprocessing (--preset), then extract to another --out",)
            raise self


class Terminated(BaseException):
    """SIGTERM (Slurm's preemption, ``scancel``) arrived: stop after the current write. A
    BaseException, like KeyboardInterrupt, so a video's ``except Exception`` (recording it
    as failed) does not swallow it."""


def _raise_on_sigterm():
    """Turn SIGTERM into Terminated, so the store closes cleanly and the summary is printed;
    returns the previous handler (None off the main thread, where signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated(f"stopped by {signal.Signals(signum).name}; the videos not done stay "
                         "pending: run the same command again to resume")
    return signal.signal(signal.SIGTERM, handler)


def _outcomes(cfg, videos: VideoList, todo, models):
    """(index, VideoResult | VideoError) pairs in completion order, from the chosen way."""
    root = root_dir(cfg)
    jobs = [(int(i), str(root / videos.paths[i])) for i in todo]
    if cfg.workers <= 1:
        return schedule.sequential(jobs, cfg.settings, models)
    if uses_device_pipeline(cfg):
        return schedule.device_pipeline(jobs, cfg.settings, models, cfg.workers)
    return schedule.whole_videos(jobs, cfg.settings, cfg.workers, (cfg, len(videos.classes)))


def check_settings(cfg: ExtractConfig) -> None:
    s = cfg.settings
    if s.crops not in (1, 3, 10):
        raise InputError(f"--crops must be 1, 3 or 10, not {s.crops}")
    if s.frames < 1 or s.flow_stack < 1:
        raise InputError("--frames and --flow-stack must be >= 1")
    s.check()
    if "flow" in s.streams and s.flow is None:
        raise InputError("the flow stream needs a flow algorithm (--flow none allows --streams rgb only)")
    if cfg.workers < 1:
        raise InputError("--workers must be >= 1")
    if s.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, not {s.batch_size}")
    _check_format(cfg)


def _check_format(cfg: ExtractConfig) -> None:
    """Every other command tells a store's format by its suffix (.h5/.hdf5 HDF5, else Zarr):
    a --format the suffix contradicts would write a store nothing else opens."""
    fmt, implied = format_for(cfg.out, cfg.format), format_for(cfg.out)
    if fmt != implied:
        want = ".h5 or .hdf5" if fmt == "hdf5" else ".zarr"
        raise InputError(f"--out {cfg.out} would be read as {implied} by every other command (they "
                         f"tell the format by the suffix) but --format is {fmt}: end --out in {want}")


def _check_out(path: Path, fmt: str) -> None:
    """--out is a store of its kind, or absent under a directory this process can write."""
    if path.exists():
        if fmt == "zarr" and not path.is_dir():
            raise StoreError(f"--out {path} is an existing file, not a Zarr store (a directory); "
                             "choose another --out")
        return
    above = next(p for p in path.absolute().parents if p.exists())
    if not above.is_dir():
        raise StoreError(f"cannot create --out {path}: {above} is a file, not a directory")
    if not os.access(above, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create --out {path}: {above} is not writable (permissions, "
                         "or a read-only file system)")


def check_root(cfg: ExtractConfig, videos: VideoList) -> None:
    """A wrong --root fails once, here; a few missing videos are recorded as failed later."""
    root = root_dir(cfg)
    if videos.paths and not any((root / p).exists() for p in videos.paths[:1000]):
        where = f"--root {root}" if cfg.root is not None else f"the working directory {root.resolve()} (no --root)"
        raise InputError(f"none of the videos of {cfg.list_path} exists under {where} "
                         f"(e.g. {root / videos.paths[0]})")


def _layout(cfg: ExtractConfig, videos: VideoList, describe: dict) -> Layout:
    s = cfg.settings
    specs = []
    for stream in s.streams:
        d = describe[stream]
        maps = tuple(d["feature_map_shape"]) if s.feature_maps else None
        classes = d["num_classes"] if d["logits_stored"] else 0
        specs.append(StreamSpec(stream, s.crops, d["feature_dim"], classes, maps))
    return Layout(paths=tuple(videos.paths), labels=videos.labels, T=s.frames, streams=tuple(specs),
                  thumbnail_size=s.thumbnail_size, attrs=_attrs(cfg, videos, describe),
                   cost_stages=cost_stages(s), motion=s.flow is not None)


def _attrs(cfg: ExtractConfig, videos: VideoList, describe: dict) -> dict:
    import cv2
    import torch
    from extract.decode import ffmpeg_version

    s = cfg.settings
    return {
        "classes": list(videos.classes), "multilabel": bool(videos.multilabel),
        "flow_stack": s.flow_stack, "crops": s.crops, "frame_size": list(s.size),
        "backbone": describe, "flow": s.flow.as_dict() if s.flow else None, "cost": _cost_attrs(s),
        "sampling": {"rule": "TSN test: centre of each of T equal segments of the valid start range",
                     "short_video": "positions repeat; flow stacks are clamped to the last frames",
                     "last_position": "a stack needs L+1 frames; n decoded frames give n-1 flow fields"},
        "settings": s.record(), "config_sha256": s.sha256(),
        "list": {"path": str(cfg.list_path), "format": cfg.list_format, "source": videos.source},
        "list_sha256": videos.sha256, "root": str(root_dir(cfg).resolve()),
        "run": {"device": cfg.device, "workers": cfg.workers, "threads": cfg.threads,
                "device_pipeline": cfg.workers > 1 and uses_device_pipeline(cfg)},
        "versions": {"framesel": __version__, "torch": torch.__version__, "opencv": cv2.__version__,
                     "ffmpeg": ffmpeg_version(), "numpy": np.__version__, "python": platform.python_version()},
        "command": cfg.command or " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _cost_attrs(s: VideoSettings) -> dict:
    """What the ``cost/*`` rows are: the seconds' stages and how they were measured, and
    whether the flow's GFLOPs are counted, estimated or an upper bound (its registry entry)."""
    kind, how = cost_label(s.flow) if s.flow is not None else ("counted", "no flow is computed")
    return {"seconds": SECONDS_NOTE, "flow_gflops": {"kind": kind, "how": how},
            "flops_convention": "FLOPs (2 x multiply-accumulates); see extract.flow_cost"}


def _check_compatible(store, cfg: ExtractConfig, videos: VideoList, describe: dict) -> None:
    """Resuming or joining a store made with other settings, another list, another root or
    other weights would mix rows: the store's features identity (data/identity.py) must be
    this run's; execution settings (batch size, flow device and batch) may differ."""
    ours = dict(_attrs(cfg, videos, describe), schema_version=store.attrs.get("schema_version"),
                T=cfg.settings.frames)
    theirs = features_identity(store.attrs)
    if theirs["backbone_sha256"] != features_identity(ours)["backbone_sha256"]:
        files = backbone_files(store.attrs)
        raise StoreError(f"{store.path}: its features came from other weights ("
                         + "; ".join(f"{s}: {files.get(s)} sha256 {str(h)[:12]}… vs this run's {describe[s]['file']} "
                                     f"sha256 {describe[s]['sha256'][:12]}…" for s, h in theirs["backbone_sha256"].items()
                                     if s in describe and describe[s]["sha256"] != h) + "); use another --out")
    diff = differences(theirs, features_identity(ours))
    if diff:
        raise StoreError(f"{store.path} was made with other settings (differ: {'; '.join(diff)}); "
                         "use another --out or the same options")
    if store.attrs.get("list_sha256") != videos.sha256:
        raise StoreError(f"{store.path} was made from another video list; use another --out")
    _check_same_root(store, cfg, videos)


def _check_same_root(store, cfg: ExtractConfig, videos: VideoList) -> None:
    """The same relative paths under another root are other files (or the same ones moved,
    which this cannot tell). Roots compare resolved: ``data`` and ``./data/`` are one."""
    recorded = store.attrs.get("root")
    if recorded is None or all(os.path.isabs(p) for p in videos.paths):
        return
    theirs, ours = Path(recorded).resolve(), root_dir(cfg).resolve()   # old stores: as typed
    if theirs != ours:
        given = f"--root {ours}" if cfg.root is not None else f"{ours} (no --root: the working directory)"
        raise StoreError(f"{store.path} was made from the videos under --root {theirs}, but this run "
                         f"reads them from {given}; use --root {theirs} or another --out")
