"""HDF5 backend: one file, one writer at a time (HDF5's own rule). Parallel jobs write one
file per shard (``<stem>.shard-K-of-N.h5``) and ``framesel merge`` joins them."""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import h5py
import numpy as np

from data.errors import StoreError
from data.store import _SLACK, DONE, FAILED, Layout, Store, _short

log = logging.getLogger(__name__)

_STR = h5py.string_dtype("utf-8")


class HDF5Store(Store):
    """Durability (issue 10): the file keeps the default (earliest) format, whose superblock
    has no "open for writing" flag, so a file whose writer was killed re-opens without
    ``h5clear``; every video's rows are flushed after its status (``flush``), so a kill keeps
    every video whose status was written. A writer takes HDF5's exclusive lock; a reader
    that meets it reads, unlocked, the state of the writer's last flush."""

    format = "hdf5"

    def __init__(self, path, mode="r"):
        super().__init__(path, mode)
        self.file, self._attrs, self._datasets = _open_file(Path(path), mode), None, {}

    def flush(self):
        self.file.flush()   # OSError (disk full) is turned into StoreError by Store._guard

    def _file_growth(self, rows):
        return self.path.stat().st_size + sum(v.nbytes for v in rows.values()) + _SLACK

    @classmethod
    def _build(cls, tmp: Path, layout: Layout) -> None:
        store = cls.__new__(cls)
        Store.__init__(store, tmp, "a")
        store.file, store._attrs, store._datasets = h5py.File(tmp, "w"), None, {}
        store._initialise(layout)
        store.file.close()

    @staticmethod
    def _publish(tmp: Path, path: Path) -> bool:
        try:
            os.link(tmp, path)      # unlike rename, never replaces a file that appeared meanwhile
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    def _create_array(self, name, shape, dtype, chunks):
        self._datasets.pop(name, None)
        if name in self.file:
            del self.file[name]
        if dtype == "str":
            self.file.create_dataset(name, shape=shape, dtype=_STR, chunks=chunks if shape[0] else None)
            return
        compress = {} if len(shape) < 2 else {"compression": "lzf", "shuffle": True}
        self.file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if shape[0] else None,
                                 fillvalue=0, **compress)

    def _dataset(self, name):
        # Datasets stay open: a temporary one per row would write its chunks when garbage
        # collected, where h5py can only print a write error (a full disk went unnoticed).
        ds = self._datasets.get(name)
        if ds is None:
            try:
                ds = self._datasets[name] = self.file[name]
            except KeyError:
                raise StoreError(f"{self.path}: no array {name!r}") from None
        return ds

    def _read_row(self, name, i):
        ds = self._dataset(name)
        return ds.asstr()[i] if ds.dtype == _STR else ds[i]

    def _write_row(self, name, i, value):
        self._dataset(name)[i] = value

    def _read_all(self, name):
        ds = self._dataset(name)
        return np.asarray(ds.asstr()[...], dtype=object) if ds.dtype == _STR else ds[...]

    def _write_all(self, name, values):
        self._dataset(name)[...] = values

    def _shape(self, name):
        return tuple(self._dataset(name).shape)

    def array_names(self):
        names = []
        self.file.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return sorted(names)

    @property
    def attrs(self):
        if self._attrs is None:
            raw = self.file.attrs.get("framesel")
            self._attrs = json.loads(raw) if raw is not None else {}
        return self._attrs

    def set_attrs(self, values):
        merged = dict(self.attrs)
        merged.update(values)
        # One JSON attribute: HDF5 attributes cannot hold nested dicts, and JSON keeps both
        # backends' attrs identical.
        self.file.attrs["framesel"] = json.dumps(merged, sort_keys=True)
        self._attrs = None

    def close(self):
        if not self.file:
            return
        self._datasets.clear()
        try:
            self.file.close()
        except (OSError, RuntimeError) as err:
            if not self._write_failed:   # after a failed write its error is the one to report
                raise StoreError(f"cannot close {self.path}: {_short(err)}") from err
        finally:
            self.file = None


def _open_file(path: Path, mode: str) -> h5py.File:
    """Open for reading (shared lock) or writing (exclusive lock). Writers bypass the chunk
    cache, so a write that fails (full disk) raises where it happens, not at close."""
    write = mode != "r"
    try:
        try:
            return h5py.File(path, "r+" if write else "r", locking="best-effort",
                             **({"rdcc_nbytes": 0} if write else {}))
        except BlockingIOError:
            if write:
                raise
            log.info("%s is being written by another process; reading its last flush", path)
            return h5py.File(path, "r", locking=False)
    except OSError as err:
        if write and _extend_truncated(path, err):
            return _open_file(path, mode)
        raise StoreError(_open_error(path, err, write)) from err


def _extend_truncated(path: Path, err: OSError) -> bool:
    """A write that met a file size limit leaves the file shorter than the end its superblock
    records. The missing tail holds only rows of videos left pending, so extending the file
    (with zeros) to that end makes it open again; their rows are written anew on resume."""
    m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(err))
    if not m or int(m.group(2)) <= int(m.group(1)) or int(m.group(1)) != path.stat().st_size:
        return False
    log.warning("%s: extending the file from %s to %s bytes, the end a full disk cut off",
                path, m.group(1), m.group(2))
    os.truncate(path, int(m.group(2)))
    return True


def _open_error(path: Path, err: OSError, write: bool) -> str:
    """What to tell the user about an HDF5 file that does not open, and what to do."""
    text = str(err)
    if isinstance(err, BlockingIOError) or "unable to lock file" in text:
        return (f"{path} is open in another process (HDF5 allows one writer per file, and no "
                "writer while another process reads it): wait for that process to end; to "
                "extract in parallel give each job its own file with --shard K/N and join them "
                "with `framesel merge`")
    if "already open for write" in text:
        return (f"{path} is marked as open for writing by a process that did not close it "
                f"(HDF5's file consistency flag): if no process writes it, run `h5clear -s {path}` "
                "and try again")
    if "truncated file" in text:
        return (f"{path} is shorter than its HDF5 superblock records (the disk filled up, or a "
                f"copy was cut short): {_short(err)}. Resume with the same `framesel extract` "
                "command (it extends the file), or copy it again")
    return (f"cannot open HDF5 store {path}: {_short(err)}; it may be incomplete or corrupt: "
            "extract it again or restore it from a copy")


def shard_path(path, shard: int, num_shards: int) -> Path:
    """Where shard K of N writes when the final store is the HDF5 file ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{shard}-of-{num_shards}{path.suffix}")


def merge_stores(sources, dest, *, layout_from=None) -> dict:
    """Copy every done or failed video of each source into ``dest`` (created from the first
    source's layout if missing). Sources must share settings. Returns counts."""
    from data.store import open_store  # noqa: avoid import cycle at module load

    srcs = [open_store(s, "r") for s in sources]
    if not srcs:
        raise StoreError("nothing to merge")
    first = srcs[0]
    key = {k: v for k, v in first.attrs.items() if k not in ("shard", "created")}
    for s in srcs[1:]:
        other = {k: v for k, v in s.attrs.items() if k not in ("shard", "created")}
        if other != key:
            raise StoreError(f"{s.path} was made with other settings than {first.path}; cannot merge")
    dest = Path(dest)
    from data.store import create_store, open_store as _open
    if dest.exists():
        out = _open(dest, "a")
    else:
        out = _copy_layout(first, dest, create_store)
    counts = {"done": 0, "failed": 0}
    names = [n for n in first.array_names() if not n.startswith("videos/") or n in
             ("videos/num_frames", "videos/fps")]
    for s in srcs:
        status = s.status()
        for i in np.flatnonzero(status == DONE):
            for n in names:
                out._write_row(n, int(i), s._read_row(n, int(i)))
            out._write_row("videos/note", int(i), s._read_row("videos/note", int(i)))
            out._write_row("videos/error", int(i), "")
            out._write_row("videos/status", int(i), DONE)
            counts["done"] += 1
        for i in np.flatnonzero(status == FAILED):
            if out.status()[i] != DONE:
                out.mark_failed(int(i), s.errors()[i])
                counts["failed"] += 1
        s.close()
    out.close()
    return counts


def _copy_layout(src: Store, dest: Path, create_store) -> Store:
    layout = src.layout()
    attrs = {k: v for k, v in layout.attrs.items() if k != "shard"}
    return create_store(dest, Layout(layout.paths, layout.labels, layout.T, layout.streams,
                                     layout.thumbnail_size, attrs))
