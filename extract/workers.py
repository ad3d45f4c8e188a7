"""Worker processes that may die: a pool in which a killed worker costs at most its video.

A worker process killed (the kernel's out-of-memory killer choosing the worker that decodes a
video too long for memory, ``kill -9``, a crash in native code: ffmpeg's, OpenCV's, torch's)
breaks a ``ProcessPoolExecutor``: every job in flight then fails with ``BrokenProcessPool``,
and the pool takes no more. :class:`WorkerPool` instead retries the jobs that were in flight
one at a time in a fresh process (:class:`Solo`): a job whose process dies again is that
video's failure (a :class:`data.errors.VideoError` naming the signal; the next job gets a
fresh process), the others' results are kept, and a fresh pool takes the rest of the list. A job's result is its function's (the functions here
never raise for one bad video: ``extract.schedule.safely``).

Workers are spawned (fork after torch/OpenCV started threads can deadlock) and die with the
process that started them (:func:`die_with_parent`).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from data.errors import VideoError

log = logging.getLogger(__name__)


class WorkerPool:
    """``workers`` spawned processes, each set up by ``init(parent pid, *init_args)``;
    :meth:`submit` jobs ``fn(path, *args)`` under a key, :meth:`wait` for (key, result)
    pairs. ``len(pool)``: jobs in flight."""

    def __init__(self, workers: int, init, init_args: tuple = ()):
        self.workers, self.init, self.init_args = workers, init, init_args
        self.inflight: dict = {}          # future -> (key, fn, path, args)
        self.recovered: list = []         # (key, result) of a broken pool's jobs, not yet waited for
        self.pool = self._new_pool()

    def __len__(self) -> int:
        return len(self.inflight) + len(self.recovered)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=self.init,
                                   initargs=(os.getpid(), *self.init_args))

    def submit(self, key, fn, path: str, *args) -> None:
        try:
            fut = self.pool.submit(fn, path, *args)
        except BrokenProcessPool:                # it broke since the last wait
            self.recovered += self._recover()
            fut = self.pool.submit(fn, path, *args)
        self.inflight[fut] = (key, fn, path, args)

    def wait(self, block: bool = True) -> list[tuple]:
        """(key, result) of the jobs finished now; ``block``: wait for at least one (when any
        is in flight). A broken pool's jobs come back too, each retried alone."""
        if self.recovered:
            out, self.recovered = self.recovered, []
            return out
        if not self.inflight:
            return []
        if block:
            done, _ = wait(self.inflight, return_when=FIRST_COMPLETED)
        else:
            done = [f for f in self.inflight if f.done()]
        out, broken = [], False
        for fut in done:
            result = self._result(fut)
            if result is None:
                broken = True
            else:
                out.append(result)
        return out + (self._recover() if broken else [])

    def _result(self, fut):
        """(key, result) of a finished future, None (left in flight) if its pool broke."""
        if isinstance(fut.exception(), BrokenProcessPool):
            return None
        key, _, path, _ = self.inflight.pop(fut)
        try:
            return key, fut.result()
        except Exception as err:   # noqa: BLE001 - e.g. a result that did not pickle: this video's failure
            return key, VideoError(path, f"{type(err).__name__}: {err}")

    def _recover(self) -> list[tuple]:
        """The pool broke: keep what finished, retry every other job in flight alone (one at a
        time in a fresh process), then start a fresh pool for the jobs still to come."""
        wait(self.inflight)                      # a broken pool fails them all at once
        out = [r for r in map(self._result, list(self.inflight)) if r is not None]
        suspects = list(self.inflight.values())
        self.inflight.clear()
        self.pool.shutdown(wait=True)
        log.warning("a worker process died: retrying its %d video(s) in flight one at a time", len(suspects))
        solo = Solo(self.init, self.init_args)
        try:
            out += [(key, solo.run(fn, path, args)) for key, fn, path, args in suspects]
        finally:
            solo.close()
        self.pool = self._new_pool()
        return out

    def shutdown(self, finished: bool) -> None:
        """Finished: wait for the workers to exit; else (a stop: SIGTERM, a full disk) cancel
        what is queued without waiting for it."""
        self.pool.shutdown(wait=finished, cancel_futures=not finished)


class Solo:
    """One spawned worker process (set up by ``init(parent pid, *init_args)``) that runs jobs
    one at a time: :meth:`run` returns ``fn(path, *args)``, or, when the process dies on it,
    a VideoError naming how (and a fresh process takes the next job)."""

    def __init__(self, init, init_args: tuple):
        self.init, self.init_args, self.proc, self.conn = init, init_args, None, None

    def run(self, fn, path: str, args: tuple):
        if self.proc is None:
            ctx = get_context("spawn")
            self.conn, theirs = ctx.Pipe()
            self.proc = ctx.Process(target=_solo_main, args=(theirs, self.init, (os.getpid(), *self.init_args)),
                                    name="framesel-retry", daemon=True)
            self.proc.start()
            theirs.close()
        self.conn.send((fn, path, args))
        try:
            return self.conn.recv()
        except EOFError:                         # it died on this job
            self.proc.join()
            cause = death_cause(self.proc.exitcode)
            self._drop()
            return VideoError(path, cause)

    def close(self) -> None:
        """Stop the process (at once if a stop, SIGTERM, interrupted a job)."""
        if self.proc is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
            self._drop()

    def _drop(self) -> None:
        self.conn.close()
        self.proc, self.conn = None, None


def _solo_main(conn, init, init_args: tuple) -> None:
    try:
        init(*init_args)
        broken = None
    except Exception as err:   # noqa: BLE001 - each job it is sent fails with this cause
        broken = f"its worker process could not start: {type(err).__name__}: {err}"
    while (job := conn.recv()) is not None:
        fn, path, args = job
        conn.send(VideoError(path, broken) if broken else fn(path, *args))


def death_cause(exitcode: int | None) -> str:
    """Why a video's worker died, for ``videos/error``: the signal (and what usually sends
    it) or the exit code."""
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        why = {signal.SIGKILL: " (the kernel's out-of-memory killer sends it: a video too long for "
                               "this machine's memory?)",
               signal.SIGSEGV: " (a crash in native code: ffmpeg, OpenCV or torch)"}.get(sig, "")
        how = f"killed by {sig.name}{why}"
    else:
        how = f"exit code {exitcode}"
    return (f"its worker process died while extracting it, again when retried alone: {how}; "
            "recorded as failed so the other videos could go on")


def die_with_parent(parent: int) -> None:
    """A worker whose extraction was killed would live on forever (~360 MB, blocked writing
    to a dead pipe). Linux: the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG;
    it fires when the parent's spawning *thread* ends: ProcessPoolExecutor spawns from the
    thread calling submit, here the main one, or from its manager thread, which lives until
    shutdown). Everywhere: a daemon thread polls the parent pid once a second."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):   # no libc symbol: the thread below still watches
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable")
    if os.getppid() != parent:              # it died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


# ----------------------------------------------------------------------------- threads and schedule

def uses_device_pipeline(cfg) -> bool:
    """Whether ``workers > 1`` run as decode workers feeding this process's device (one copy
    of the models) rather than as whole-video processes: ``cfg.pipeline``, or by default on a
    GPU (see :mod:`extract.schedule`)."""
    if cfg.pipeline is not None:
        return cfg.pipeline
    return cfg.device.startswith("cuda")


@contextmanager
def threads_of(cfg):
    """:func:`set_threads` for the ``with`` block, and the caller's torch and OpenCV thread
    counts back after it: an extraction run in a notebook or a test leaves its process's
    settings as it found them."""
    import cv2
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    set_threads(cfg)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def thread_budget() -> int:
    """The threads this process may use: ``OMP_NUM_THREADS`` when the environment sets it
    (a batch script's or the user's choice, as torch itself reads it), else the cores it may
    run on, its CPU affinity (what Slurm's cgroup, taskset or a container's cpuset leave it;
    ``os.cpu_count()`` counts the whole node), else ``os.cpu_count()``."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):      # no affinity on this platform
        return os.cpu_count() or 1


def set_threads(cfg) -> None:
    """torch and OpenCV threads of this process: ``cfg.threads``, else the thread budget
    (:func:`thread_budget`) shared out among whole-video workers (all of it for the one
    process of the device pipeline)."""
    import cv2
    import torch

    share = 1 if uses_device_pipeline(cfg) else max(1, cfg.workers)
    threads = cfg.threads or max(1, thread_budget() // share)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
