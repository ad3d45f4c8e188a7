"""HDF5 backend: one file, one writer at a time (HDF5's own rule). Parallel jobs write one
file per shard (``<stem>.shard-K-of-N.h5``) and ``framesel merge`` joins them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from data.errors import StoreError
from data.store import DONE, FAILED, Layout, Store

_STR = h5py.string_dtype("utf-8")


class HDF5Store(Store):
    format = "hdf5"

    def __init__(self, path, mode="r"):
        super().__init__(path, mode)
        try:
            self.file = h5py.File(path, "r" if mode == "r" else "r+")
        except OSError as err:
            raise StoreError(f"cannot open HDF5 store {path}: {err}") from err
        self._attrs = None

    @classmethod
    def _build(cls, tmp: Path, layout: Layout) -> None:
        store = cls.__new__(cls)
        Store.__init__(store, tmp, "a")
        store.file, store._attrs = h5py.File(tmp, "w"), None
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
        if name in self.file:
            del self.file[name]
        if dtype == "str":
            self.file.create_dataset(name, shape=shape, dtype=_STR, chunks=chunks if shape[0] else None)
            return
        compress = {} if len(shape) < 2 else {"compression": "lzf", "shuffle": True}
        self.file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if shape[0] else None,
                                 fillvalue=0, **compress)

    def _dataset(self, name):
        try:
            return self.file[name]
        except (KeyError, OSError) as err:       # absent, or a damaged object header
            parent, _, leaf = name.rpartition("/")
            try:
                linked = leaf in (self.file[parent] if parent else self.file).keys()
            except (KeyError, OSError):
                linked = False
            if not linked:
                raise StoreError(f"{self.path}: no array {name!r}") from None
            raise StoreError(f"{self.path}: the metadata of array {name} cannot be read ({err})") from err

    def _read_row(self, name, i):
        ds = self._dataset(name)
        try:
            return ds.asstr()[i] if ds.dtype == _STR else ds[i]
        except OSError as err:           # HDF5: "filter returned failure during read", truncation
            raise self._damaged(name, i, f"cannot be read ({err})") from err

    def _write_row(self, name, i, value):
        self._dataset(name)[i] = value

    def _read_all(self, name):
        ds = self._dataset(name)
        try:
            return np.asarray(ds.asstr()[...], dtype=object) if ds.dtype == _STR else ds[...]
        except OSError as err:
            raise StoreError(f"{self.path}: array {name} cannot be read ({err})") from err

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

    def _chunk_coord(self, ds, i):
        return (int(i) // ds.chunks[0] * ds.chunks[0],) + (0,) * (ds.ndim - 1)

    def _chunk_exists(self, name, i):
        # Low-level calls: opening the Dataset object costs several times the lookup itself.
        try:
            did = h5py.h5d.open(self.file.id, name.encode())
            plist = did.get_create_plist()
            chunks = plist.get_chunk() if plist.get_layout() == h5py.h5d.CHUNKED else None
            if chunks is None:           # contiguous (an empty store): nothing to lose
                return True
            coord = (int(i) // chunks[0] * chunks[0],) + (0,) * (len(chunks) - 1)
            return did.get_chunk_info_by_coord(coord).byte_offset is not None
        except (KeyError, OSError, ValueError) as err:
            self._dataset(name)          # absent or unreadable: its error names which
            raise self._damaged(name, i, f"cannot be located ({err})") from err

    def _chunk_location(self, name, i):
        ds = self._dataset(name)
        return f"{self.path}:/{name} at {self._chunk_coord(ds, i) if ds.chunks else '(contiguous)'}"

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
        if self.file:
            self.file.close()
            self.file = None


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
