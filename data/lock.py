"""One process at a time on a thing (a store's shard, an agent checkpoint): an exclusive
``flock`` on a lock file beside it.

Two processes on one thing would both do all of its work, or overwrite each other's writes,
so the second stops at once with the holder's pid, host and start time, which the holder
writes into the lock file. ``flock`` locks belong to the open file: the kernel drops them
when the holder exits, however it ends (SIGKILL, OOM, a node reboot for local disks), so a
killed run never leaves a stale lock behind, only a stale file, which the next run reuses.
Users: :func:`extract.lock.shard_lock` (extraction) and ``framesel train``'s checkpoint lock
(agents/train_stage.py).
"""
from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from data.errors import StoreError
from data.space import write_error

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locking; concurrent runs go undetected
    fcntl = None


def lock_file(target: Path, tag: str = "") -> Path:
    """``.<target name><tag>.lock`` beside ``target`` (which may not exist yet)."""
    target = Path(target)
    return target.parent / f".{target.name}{tag}.lock"


@contextmanager
def exclusive(path: Path, *, beside: str, busy: Callable[[str, Path], str]):
    """Hold the lock file ``path`` for the ``with`` block. Another process holding it: a
    StoreError saying ``busy(holder, path)`` (holder: "pid P on HOST since TIME"). ``beside``
    names what the lock guards, for the error when the file cannot be made (e.g. "--out X").
    Creates the parent directory if needed."""
    if fcntl is None:
        yield None
        return
    path = Path(path)
    fd = _acquire(path, beside, busy)
    try:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        except OSError as err:      # a full disk: name the file, not only "No space left on device"
            raise StoreError(write_error(err, f"writing the lock file {path} beside {beside}")
                             + "; make room and run the same command again") from None
        yield path
    finally:
        # unlink while still holding: a process that opened this file meanwhile sees the
        # inode change in _acquire and retries on the new file instead of sharing a dead lock
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, beside: str, busy) -> int:
    """An fd of ``path`` holding its exclusive lock (retrying if the file was replaced)."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot write the lock file {path} beside {beside}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(busy(holder, path)) from None
        except OSError as err:   # a filesystem without locks (some network mounts)
            log.warning("cannot lock %s (%s): a concurrent run on %s would go undetected",
                        path, err.strerror, beside)
            return fd
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
