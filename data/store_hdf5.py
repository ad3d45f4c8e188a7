"""HDF5 backend: one file, one writer at a time (HDF5's own rule). Parallel jobs write one
file per shard (``<stem>.shard-K-of-N.h5``) and ``framesel merge`` joins them."""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import os
import re
from pathlib import Path

import h5py
import numpy as np

from data.errors import StoreError
from data.identity import differences, features_identity
from data.space import SLACK, reserve, short_error
from data.store import DONE, FAILED, Layout, Store, per_video_arrays

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

    def _reserve(self, nbytes):
        reserve(self.path, nbytes)

    def _file_growth(self, rows):
        return self.path.stat().st_size + sum(v.nbytes for v in rows.values()) + SLACK

    @classmethod
    def _build(cls, tmp: Path, layout: Layout) -> None:
        store = cls.__new__(cls)
        Store.__init__(store, tmp, "a")
        # Built in memory and written by Python: a full disk then is a plain OSError, where
        # an HDF5 file that fails to close can crash the interpreter at exit.
        buf = io.BytesIO()
        store.file, store._attrs, store._datasets = h5py.File(buf, "w"), None, {}
        try:
            store._initialise(layout)
        finally:
            store._datasets.clear()
            store.file.close()
        with open(tmp, "xb") as f:
            f.write(buf.getbuffer())

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
            except (KeyError, OSError) as err:       # absent, or a damaged object header
                parent, _, leaf = name.rpartition("/")
                try:
                    linked = leaf in (self.file[parent] if parent else self.file).keys()
                except (KeyError, OSError):
                    linked = False
                if not linked:
                    raise StoreError(f"{self.path}: no array {name!r}") from None
                raise StoreError(f"{self.path}: the metadata of array {name} cannot be read ({err})") from err
        return ds

    def _read_row(self, name, i):
        ds = self._dataset(name)
        try:
            return ds.asstr()[i] if ds.dtype == _STR else ds[i]
        except (OSError, RuntimeError) as err:  # "filter returned failure during read", truncation
            raise self._damaged(name, i, f"cannot be read ({err})") from err

    def _write_row(self, name, i, value):
        self._dataset(name)[i] = value

    def _read_all(self, name):
        ds = self._dataset(name)
        try:
            return np.asarray(ds.asstr()[...], dtype=object) if ds.dtype == _STR else ds[...]
        except (OSError, RuntimeError) as err:
            raise self._damaged_file(name, err) from err

    def _damaged_file(self, name, err, where="") -> StoreError:
        return StoreError(f"cannot read {name}{' ' + where if where else ''} of {self.path}: "
                          f"{str(err).strip().splitlines()[0]}; the file is damaged (a copy cut "
                          "short, or a write that failed on a full disk): restore it from a copy "
                          "or extract again into a new file")

    def _write_all(self, name, values):
        self._dataset(name)[...] = values

    def _shape(self, name):
        return tuple(self._dataset(name).shape)

    def _dtype(self, name):
        return self._dataset(name).dtype

    # HDF5 allocates a chunk whenever it is written, fill value or not: a done row whose chunk
    # is unallocated was lost (a truncated file). One chunk-index lookup per read.
    def _chunks_always_written(self, name):
        return True

    def _chunk_exists(self, name, i):
        ds = self._dataset(name)         # kept open (see _dataset): one chunk-index lookup per read
        if ds.chunks is None:            # contiguous (an empty store): nothing to lose
            return True
        try:
            return _row_chunk(ds, i).byte_offset is not None
        except (KeyError, OSError, ValueError) as err:
            raise self._damaged(name, i, f"cannot be located ({err})") from err

    def _chunk_location(self, name, i):
        ds = self._dataset(name)
        return f"{self.path}:/{name} at {_row_coord(ds, i) if ds.chunks else '(contiguous)'}"

    def _array_attrs(self, name):
        raw = self._dataset(name).attrs.get("framesel")
        return json.loads(raw) if raw is not None else {}

    def _set_array_attrs(self, name, values):
        merged = dict(self._array_attrs(name), **values)
        self._dataset(name).attrs["framesel"] = json.dumps(merged, sort_keys=True)

    def array_names(self):
        return sorted(self._walk()[0])

    def broken_nodes(self):
        return self._walk()[1]

    def _walk(self):
        """(dataset names, {node: cause}) object by object, so one damaged object header is
        named instead of failing every listing."""
        arrays, broken, todo = [], {}, [""]
        while todo:
            group = todo.pop()
            try:
                keys = list(self.file[group].keys()) if group else list(self.file.keys())
            except (OSError, RuntimeError, KeyError) as err:
                broken[f"{self.path}:/{group}"] = str(err)
                continue
            for key in keys:
                name = f"{group}/{key}" if group else key
                try:
                    obj = self.file[name]
                except (OSError, RuntimeError, KeyError) as err:
                    broken[f"{self.path}:/{name}"] = str(err)
                    arrays.append(name)          # listed, so reading it names the damage
                    continue
                (arrays.append(name) if isinstance(obj, h5py.Dataset) else todo.append(name))
        return arrays, broken

    @property
    def attrs(self):
        if self._attrs is None:
            try:
                raw = self.file.attrs.get("framesel")
                self._attrs = json.loads(raw) if raw is not None else {}
            except (OSError, ValueError) as err:
                raise StoreError(f"{self.path}: the store's attributes cannot be read ({err})") from err
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
                raise StoreError(f"cannot close {self.path}: {short_error(err)}") from err
        finally:
            self.file = None


def _row_coord(ds: h5py.Dataset, i: int) -> tuple[int, ...]:
    """Coordinates of the chunk that holds row ``i`` of the chunked dataset ``ds``."""
    return (int(i) // ds.chunks[0] * ds.chunks[0],) + (0,) * (ds.ndim - 1)


def _row_chunk(ds: h5py.Dataset, i: int):
    """HDF5's record of the chunk holding row ``i`` (``byte_offset`` None: never written)."""
    return ds.id.get_chunk_info_by_coord(_row_coord(ds, i))


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
        cut = _truncation(path, err) if write else None
        if cut:
            return _open_extended(path, *cut)
        raise StoreError(_open_error(path, err, write)) from err


def _truncation(path: Path, err: OSError) -> tuple[int, int] | None:
    """(file size, end its superblock records) if HDF5 refused the file as truncated."""
    m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(err))
    if m and int(m.group(1)) == path.stat().st_size < int(m.group(2)):
        return int(m.group(1)), int(m.group(2))
    return None


def _open_extended(path: Path, eof: int, end: int) -> h5py.File:
    """A write that met a full disk or file size limit can leave the file shorter than the
    end its superblock records; the missing tail then holds only rows of videos still
    pending. Extend the file (zeros) to that end, and keep the extension only if every done
    video's rows lie before the cut: otherwise (a copy cut short) undo it and refuse."""
    os.truncate(path, end)
    f = None
    try:
        f = h5py.File(path, "r+", locking="best-effort", rdcc_nbytes=0)
        _check_done_rows_before(f, eof)
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        if f is not None:
            f.close()
        os.truncate(path, eof)
        raise StoreError(_open_error(path, OSError(f"truncated file: eof = {eof}, stored_eof = "
                                                   f"{end}"), True)) from err
    log.warning("%s: extended from %d to %d bytes, the end a full disk had cut off", path, eof, end)
    return f


def _check_done_rows_before(f: h5py.File, eof: int) -> None:
    """ValueError if a chunk of a done video lies (partly) at or after byte ``eof``."""
    done = np.flatnonzero(f["videos/status"][...] == DONE)
    V = f["videos/status"].shape[0]
    arrays = []
    f.visititems(lambda n, o: arrays.append(o) if isinstance(o, h5py.Dataset) and o.chunks
                 and o.shape and o.shape[0] == V else None)
    for ds in arrays:
        for i in done:
            info = _row_chunk(ds, i)
            if info.byte_offset is not None and info.byte_offset + info.size > eof:
                raise ValueError(f"{ds.name} row {i} lies beyond the end of the file")


def _open_error(path: Path, err: OSError, write: bool) -> str:
    """What to tell the user about an HDF5 file that does not open, and what to do."""
    text = str(err)
    if isinstance(err, BlockingIOError) or "unable to lock file" in text:
        return (f"{path} is open in another process (HDF5 allows one writer per file, and no "
                "writer while another process reads it): wait for that process to end; to "
                "extract in parallel give each job its own file with --shard K/N and join them "
                "with `framesel merge`")
    if getattr(err, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot open {path} for {'writing' if write else 'reading'}: {short_error(err)}"
    if "already open for write" in text:
        return (f"{path} is marked as open for writing by a process that did not close it "
                f"(HDF5's file consistency flag): if no process writes it, run `h5clear -s {path}` "
                "and try again")
    if "truncated file" in text:
        return (f"{path} is shorter than its HDF5 superblock records (the disk filled up, or a "
                f"copy was cut short): {short_error(err)}. Resume with the same `framesel extract` "
                "command (it extends the file), or copy it again")
    return (f"cannot open HDF5 store {path}: {short_error(err)}; it may be incomplete or corrupt: "
            "extract it again or restore it from a copy")


def shard_path(path, shard: int, num_shards: int) -> Path:
    """Where shard K of N writes when the final store is the HDF5 file ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{shard}-of-{num_shards}{path.suffix}")


def merge_identity(store: Store) -> dict:
    """What decides whether two stores' rows may be merged: the features identity
    (data/identity.py: settings, classes, shapes, each stream's weights by sha256, flow
    algorithm and parameters; never the command line, creation time, shard or execution
    settings, which differ between the shards of one job) plus the streams and arrays."""
    return {**features_identity(store.attrs), "streams": store.attrs.get("streams"),
            "arrays": store.attrs.get("arrays")}


def _differences(a: Store, b: Store) -> list[str]:
    """Every difference between the merge identities of ``a`` and ``b``."""
    return differences(merge_identity(a), merge_identity(b))


def _row_map(src: Store, dest_paths: dict, dest_labels: np.ndarray) -> np.ndarray:
    """For each row of ``src``, its row in the destination, found by video path; StoreError
    if a path is not in the destination's list or has another label there."""
    paths, labels = src.paths, src.labels
    missing = [p for p in paths if p not in dest_paths]
    if missing:
        raise StoreError(f"{src.path}: {len(missing)} video(s) are not in the merged store's list "
                         f"(e.g. {missing[0]!r}); it was made from another list")
    rows = np.array([dest_paths[p] for p in paths], dtype=np.int64)
    if labels.shape[1:] != dest_labels.shape[1:]:
        raise StoreError(f"{src.path}: labels of shape {labels.shape[1:]} vs {dest_labels.shape[1:]}")
    differ = [p for j, p in enumerate(paths) if not np.array_equal(labels[j], dest_labels[rows[j]])]
    if differ:
        raise StoreError(f"{src.path}: {len(differ)} video(s) have another label than in the merged "
                         f"store (e.g. {differ[0]!r}); it was made from an edited list")
    return rows


def merge_stores(sources, dest) -> dict:
    """Copy every done or failed video of each source into ``dest`` (created from the first
    source's layout if missing), mapping rows by video path. Every source must have the
    destination's :func:`merge_identity`; everything is checked before anything is
    written. Returns {"done": n, "failed": m}."""
    from data.store import open_store  # noqa: avoid import cycle at module load

    if not sources:
        raise StoreError("nothing to merge")
    dest = Path(dest)
    if dest.exists() and any(Path(s).resolve() == dest.resolve() for s in sources):
        raise StoreError(f"{dest} is both a source and --out; merge into another file")
    srcs = [open_store(s, "r") for s in sources]
    try:
        ref = open_store(dest, "r") if dest.exists() else srcs[0]
        try:
            maps = _plan(srcs, ref)
        finally:
            if ref is not srcs[0]:
                ref.close()
        out = open_store(dest, "a") if dest.exists() else _copy_layout(srcs[0], dest)
        try:
            return _copy_rows(srcs, maps, out)
        finally:
            out.close()
    finally:
        for s in srcs:
            s.close()


def _plan(srcs: list[Store], ref: Store) -> list[np.ndarray]:
    """Check every source against ``ref`` (the destination, or the first source); their row maps."""
    dest_paths = {p: i for i, p in enumerate(ref.paths)}
    dest_labels = ref.labels
    maps = []
    for s in srcs:
        diff = _differences(s, ref)
        if diff:
            raise StoreError(f"{s.path} was made with other settings than {ref.path} "
                             f"(differ: {'; '.join(diff)}); cannot merge")
        maps.append(_row_map(s, dest_paths, dest_labels))
    return maps


def _copy_rows(srcs: list[Store], maps: list[np.ndarray], out: Store) -> dict:
    counts = {"done": 0, "failed": 0}
    # The extraction's arrays only: logits a `framesel head` wrote (and its heads/*) belong to
    # one store's head and are recomputed on the merged store.
    names = list(per_video_arrays(out.layout()))
    for s, rows in zip(srcs, maps):
        status, errors = s.status(), s.errors()
        notes = s.notes()
        for j in np.flatnonzero(status == DONE):
            i = int(rows[j])
            out._write_row("videos/status", i, 0)     # not done while its rows change
            for n in names:
                out._write_row(n, i, s._read_row(n, int(j)))
            out._write_row("videos/note", i, notes[j])
            out._write_row("videos/error", i, "")
            out._write_row("videos/status", i, DONE)
            counts["done"] += 1
        dest_status = out.status()
        for j in np.flatnonzero(status == FAILED):
            if dest_status[rows[j]] != DONE:
                out.mark_failed(int(rows[j]), errors[j])
                counts["failed"] += 1
    out.flush()
    return counts


def _copy_layout(src: Store, dest: Path) -> Store:
    from data.store import create_store

    layout = src.layout()
    attrs = {k: v for k, v in layout.attrs.items() if k != "shard"}
    return create_store(dest, dataclasses.replace(layout, attrs=attrs))
