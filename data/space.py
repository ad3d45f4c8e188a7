"""Room on disk and write errors, for the stores' write path (issue 10): a full disk ends a
run with a StoreError naming the video and the store, before anything half-written, and
the store stays resumable. Shared by both backends."""
from __future__ import annotations

import ctypes
import errno
import os
import shutil

from data.errors import StoreError

try:
    import resource
except ImportError:  # Windows: no file size limit to respect
    resource = None

FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# Room asked for beyond a video's raw bytes: its index and string metadata (a few KiB), with
# a margin so that the last video never meets a full disk halfway.
SLACK = 1 << 20


def check_room(store, i: int, rows: dict) -> None:
    """StoreError before video ``i`` is written if the disk, or the process's file size limit
    (``ulimit -f``), has no room for ``rows`` (name -> array; raw size: compression only
    shrinks them)."""
    ensure_room(store, rows, f"writing video {i} to {store.path}", "run the same command again to resume")


def ensure_room(store, rows: dict, doing: str, again: str) -> None:
    """StoreError "disk full <doing>: it needs about N MiB, M MiB free; make room and
    <again>" before ``rows`` (name -> array, or anything with ``nbytes``) are written to
    ``store``, if the disk or ``ulimit -f`` has no room for them; on HDF5 the room is
    reserved (a write that meets a full disk halfway can leave its metadata unreadable).
    ``store._file_growth(rows)``: the size the largest file written reaches."""
    total = sum(v.nbytes for v in rows.values())
    where = store.path if store.path.is_dir() else store.path.parent
    free = shutil.disk_usage(where).free
    short = f"{free / 2**20:.1f} MiB free" if free < total + SLACK else ""
    limit = file_size_limit()
    if limit is not None and store._file_growth(rows) > limit:
        short = (f"a file would grow to {store._file_growth(rows) / 2**20:.1f} MiB, over the file "
                 f"size limit (ulimit -f) of {limit / 2**20:.1f} MiB")
    if not short:
        try:
            store._reserve(total + SLACK)
        except OSError as err:
            short = short_error(err)
    if short:
        raise StoreError(f"disk full {doing}: it needs about {(total + SLACK) / 2**20:.1f} MiB, {short}; "
                         f"make room and {again}")


def reserve(path, nbytes: int) -> None:
    """Allocate disk blocks for ``nbytes`` past the end of the file at ``path`` without
    changing its size (Linux fallocate, FALLOC_FL_KEEP_SIZE), so the writes that follow
    cannot meet a disk that another process filled meanwhile: HDF5 metadata flushed halfway
    can leave the file unreadable. OSError(ENOSPC) if the disk has no room; a no-op where
    the system or filesystem cannot reserve."""
    libc = _libc()
    if libc is None:
        return
    fd = os.open(path, os.O_WRONLY)
    try:
        end = os.fstat(fd).st_size
        if libc.fallocate(fd, 1, ctypes.c_int64(end), ctypes.c_int64(nbytes)) != 0:
            code = ctypes.get_errno()
            if code in FULL:
                raise OSError(code, os.strerror(code), str(path))
    finally:
        os.close(fd)


def _libc():
    global _LIBC
    if _LIBC is False:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            _LIBC = lib if hasattr(lib, "fallocate") else None
        except OSError:
            _LIBC = None
    return _LIBC


_LIBC = False


def file_size_limit() -> int | None:
    """The process's file size limit in bytes (``ulimit -f``), None if unlimited."""
    if resource is None:
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def write_error(err: Exception, doing: str) -> str:
    """ "disk full <doing>: No space left on device (errno 28)", "error <doing>: Read-only file
    system (errno 30)" and the like (``doing``: "writing video 3 to X")."""
    return f"{'disk full' if is_full(err) else 'error'} {doing}: {short_error(err)}"


def is_full(err: Exception) -> bool:
    """Whether a failed write met a full disk or a file size limit: its errno, or the
    system's words in its message (h5py's RuntimeErrors and ffmpeg's stderr carry no errno)."""
    return getattr(err, "errno", None) in FULL or any(os.strerror(e) in str(err) for e in FULL)


def short_error(err: BaseException) -> str:
    """An OSError in one line: the system's words for its errno where it has one (HDF5's
    own messages span lines and carry time stamps and buffer addresses)."""
    code = getattr(err, "errno", None)
    if code:
        return f"{os.strerror(code)} (errno {code})"
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
