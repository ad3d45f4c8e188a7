"""One process per (store, shard): an exclusive ``flock`` on a lock file beside the store.

Two processes on one shard would both do all of its work (each skips only what is DONE when
it looks), so the second stops at once with the holder's pid, host and start time, which
the holder writes into the lock file. Different shards of one Zarr store lock different
files and run together. ``flock`` locks belong to the open file: the kernel drops them
when the holder exits, however it ends (SIGKILL, OOM, a node reboot for local disks), so a
killed run never leaves a stale lock behind, only a stale file, which the next run reuses.
"""
from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from data.errors import StoreError

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locking; concurrent runs go undetected
    fcntl = None


def lock_path(store: Path, shard: tuple[int, int]) -> Path:
    """``.<store name>.shard-K-of-N.lock`` beside the store (the store may not exist yet)."""
    k, n = shard
    return store.parent / f".{store.name}.shard-{k}-of-{n}.lock"


@contextmanager
def shard_lock(store: Path, shard: tuple[int, int]):
    """Hold shard ``(k, n)`` of ``store`` for the ``with`` block; StoreError if another
    process holds it. Creates the store's parent directory if needed."""
    if fcntl is None:
        yield None
        return
    path = lock_path(Path(store), shard)
    fd = _acquire(path, store, shard)
    try:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        yield path
    finally:
        # unlink while still holding: a process that opened this file meanwhile sees the
        # inode change in _acquire and retries on the new file instead of sharing a dead lock
        try:
            path.unlink()
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, store, shard) -> int:
    """An fd of ``path`` holding its exclusive lock (retrying if the file was replaced)."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot create the lock file {path} beside --out {store}: "
                             f"{err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            k, n = shard
            raise StoreError(f"{store}: shard {k}/{n} is being extracted by {holder} (lock {path}); "
                             "a second process would redo its work: wait for it or stop it") from None
        except OSError as err:   # a filesystem without locks (some network mounts)
            log.warning("cannot lock %s (%s): a concurrent run on this shard would go undetected",
                        path, err.strerror)
            return fd
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
