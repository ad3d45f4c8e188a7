"""Where a shard's videos are processed: in this process, in whole-video worker processes,
or in the device pipeline (decode workers feeding this process's device).

Each way yields ``(index, outcome)`` pairs, outcome = (VideoResult, notes) or VideoError,
in completion order; :mod:`extract.run` records them. All three give the same rows:

- ``sequential``: one video at a time, decode then device, in this process (``workers=1``);
- ``whole videos``: ``workers`` processes each decode and extract whole videos with their
  own copy of the models, 1/workers of the cores each (a CPU's default for ``workers > 1``:
  on a CPU the cores are the device, and independent processes keep them busiest);
- ``device pipeline``: ``workers`` processes decode, sample and pick frames
  (:func:`extract.prepare.prepare_video`) ahead of this process, which holds the one copy of
  the models and runs everything else on the device (:class:`extract.device.DeviceStage`),
  videos grouped into batches on a GPU. At most ``2 · workers`` prepared videos wait at once
  (~40 MB each at the TSN protocol), so memory is bounded. A GPU's default for ``workers > 1``.

Worker processes are spawned and die with the process that started them; a worker that dies
(killed, out of memory) costs at most the video it held (:mod:`extract.workers`). A decode
worker never imports torch (~300 MB and seconds of start-up each): this module reaches the
models only inside the functions that need them.
"""
from __future__ import annotations

import logging
import queue
import threading

from data.errors import VideoError
from extract.prepare import Prepared, PrepareSettings, prepare_video
from extract.workers import WorkerPool, die_with_parent, set_threads

log = logging.getLogger(__name__)


def sequential(jobs, settings, models):
    """(index, path) jobs -> (index, outcome), one video at a time in this process, with
    ``models`` (an :class:`extract.video.Models`)."""
    from extract.video import extract_video

    for i, path in jobs:
        yield i, safely(extract_video, path, settings, models)


def whole_videos(jobs, settings, workers: int, init_args: tuple):
    """(index, path) jobs -> (index, outcome) from ``workers`` processes, each with its models.
    ``init_args``: (ExtractConfig, number of classes) for :func:`_init_whole`. At most
    ``2 · workers`` videos are in flight: what a killed worker puts at risk
    (:class:`extract.workers.WorkerPool` retries them)."""
    pool = WorkerPool(workers, _init_whole, init_args)
    jobs, finished = list(jobs)[::-1], False     # popped from the end: list order
    try:
        while jobs or len(pool):
            while jobs and len(pool) < 2 * workers:
                i, path = jobs.pop()
                pool.submit(i, _extract_whole, path)
            yield from pool.wait()
        finished = True
    finally:
        # A stop (SIGTERM, a full disk) must not wait for every queued video first.
        pool.shutdown(finished)


def device_pipeline(jobs, settings, models, workers: int, threads: int = 1):
    """(index, path) jobs -> (index, outcome): ``workers`` decode processes (``threads``
    OpenCV threads each) prepare videos ahead of ``models``' device stage in this process.
    A video that fails to prepare is yielded at once; the device runs only prepared ones."""
    stage, small = models.stage, PrepareSettings.of(settings)
    jobs = list(jobs)[::-1]                      # popped from the end: list order
    pool = WorkerPool(workers, _init_decode, (threads,))
    ahead, ready, finished = 2 * workers, [], False
    try:
        while jobs or len(pool) or ready:
            while jobs and len(pool) + len(ready) < ahead:
                i, path = jobs.pop()
                pool.submit(i, _prepare, path, small)
            for i, prepared in pool.wait(block=not ready):
                if isinstance(prepared, VideoError):
                    yield i, prepared
                else:
                    ready.append((i, prepared))
            if ready:
                group = take_group(ready, stage)
                for (i, _), outcome in zip(group, stage.run([p for _, p in group])):
                    yield i, outcome
        finished = True
    finally:
        pool.shutdown(finished)


def take_group(ready: list, stage) -> list:
    """Pop the videos the device runs together from the front of ``ready`` ((index,
    Prepared) pairs): one on a CPU; on a GPU as many as fill one flow batch (tvl1-torch's
    batch_size pairs) and one backbone batch, at most 1 GiB of frames."""
    if not stage.cross_video:
        return [ready.pop(0)]
    s = stage.settings
    flow_batch = dict(s.flow.params).get("batch_size", 1) if s.flow is not None else 0
    group, pairs, rows, size = [], 0, 0, 0
    while ready and (not group or ((pairs < flow_batch or rows < s.batch_size) and size < 2 ** 30)):
        i, p = ready.pop(0)
        group.append((i, p))
        pairs, rows, size = pairs + len(p.pairs), rows + len(p.frame_index) * s.crops, size + p.nbytes
    return group


def safely(fn, path, *args):
    """fn(path, *args), or the VideoError that says why this video is unusable."""
    try:
        return fn(path, *args)
    except VideoError as err:
        return err
    except Exception as err:  # noqa: BLE001 - one bad video must not end the run; cause is kept
        log.exception("unexpected failure on %s", path)
        return VideoError(path, f"{type(err).__name__}: {err}")


class Writer:
    """Store writes on a thread of their own, so the device computes the next video while the
    last one is compressed and written. At most ``depth`` results wait (bounded memory); a
    write error (a full disk) surfaces at the next :meth:`put` or at :meth:`close`, which
    writes everything already queued first: a computed video is never thrown away."""

    def __init__(self, store, paths, depth: int = 2, on_written=None):
        self.store, self.paths, self.written, self.error = store, paths, 0, None
        self.on_written = on_written or (lambda: None)   # called after each write (a progress bar)
        self.queue: queue.Queue = queue.Queue(depth)
        self.thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self.thread.start()

    def put(self, i: int, outcome) -> None:
        self._raise()
        self.queue.put((i, outcome))

    def close(self) -> None:
        """Write what is queued, stop the thread, raise its error if it had one. A SIGTERM
        (extract.run's Terminated) or ^C that arrives meanwhile waits until the writes end,
        then is raised: the store closes after them."""
        stop = None
        self.queue.put(None)
        while self.thread.is_alive():
            try:
                self.thread.join(0.1)
            except BaseException as err:   # noqa: BLE001 - SIGTERM's Terminated, ^C: re-raised below
                stop = err
        self._raise()
        if stop is not None:
            raise stop

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    record(self.store, item[0], item[1], self.paths[item[0]])
                    self.written += 1
                    self.on_written()
                except BaseException as err:   # noqa: BLE001 - handed to the main thread
                    self.error = err


def record(store, i: int, outcome, path: str) -> None:
    """Write one outcome into row ``i``: the rows of a result, or a failure and its cause."""
    if isinstance(outcome, VideoError):
        log.warning("failed: %s", outcome)
        store.mark_failed(i, str(outcome))
        return
    result, notes = outcome
    note = "; ".join(n for n in notes if n)
    if note:
        log.info("%s: %s", path, note)
    store.write_video(i, result, note=note)


# ----------------------------------------------------------------------------- worker processes

_WORKER: dict = {}


def _init_whole(parent: int, cfg, num_classes: int) -> None:
    from extract.video import Models

    die_with_parent(parent)
    set_threads(cfg)
    _WORKER["settings"] = cfg.settings
    _WORKER["models"] = Models(cfg.settings, cfg.device, num_classes)


def _extract_whole(path):
    from extract.video import extract_video

    return safely(extract_video, path, _WORKER["settings"], _WORKER["models"])


def _init_decode(parent: int, threads: int) -> None:
    import cv2

    die_with_parent(parent)
    cv2.setNumThreads(threads)


def _prepare(path, settings) -> Prepared | VideoError:
    return safely(prepare_video, path, settings)
