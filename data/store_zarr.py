"""Zarr (v3 directory store) backend: the default, safe for concurrent shard writers."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from data.errors import StoreError
from data.store import Layout, Store

# Blosc-zstd with bit-shuffle: float16 ReLU-type features compress ~1.3x (GUIDE §7) at a
# speed that keeps writing off the critical path.
_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


class ZarrStore(Store):
    format = "zarr"

    def __init__(self, path, mode="r"):
        super().__init__(path, mode)
        try:
            self.root = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as err:
            raise StoreError(f"{path} is not a framesel Zarr store: {err}") from err
        self._arrays: dict[str, zarr.Array] = {}
        self._attrs = None

    @classmethod
    def _build(cls, tmp: Path, layout: Layout) -> None:
        store = cls.__new__(cls)
        Store.__init__(store, tmp, "a")
        store.root, store._arrays, store._attrs = zarr.open_group(str(tmp), mode="w"), {}, None
        store._initialise(layout)

    @staticmethod
    def _publish(tmp: Path, path: Path) -> bool:
        try:
            os.rename(tmp, path)   # atomic; fails if another process created it first
            return True
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return False

    def _array(self, name):
        arr = self._arrays.get(name)
        if arr is None:
            try:
                arr = self._arrays[name] = self.root[name]
            except KeyError:
                raise StoreError(f"{self.path}: no array {name!r}") from None
        return arr

    def _create_array(self, name, shape, dtype, chunks):
        is_str = dtype == "str"
        self._arrays[name] = self.root.create_array(
            name, shape=shape, chunks=chunks, dtype=str if is_str else dtype,
            fill_value="" if is_str else 0, compressors=None if is_str else _COMPRESSOR,
            overwrite=True)

    def _read_row(self, name, i):
        return self._array(name)[i]

    def _write_row(self, name, i, value):
        self._array(name)[i] = value

    def _read_all(self, name):
        return np.asarray(self._array(name)[...])

    def _write_all(self, name, values):
        arr = self._array(name)
        arr[...] = np.asarray(values).astype(str) if arr.dtype.kind in "OTU" else values

    def _shape(self, name):
        return tuple(self._array(name).shape)

    def array_names(self):
        return sorted(p for p, a in self.root.members(max_depth=None) if isinstance(a, zarr.Array))

    @property
    def attrs(self):
        if self._attrs is None:
            self._attrs = dict(self.root.attrs)
        return self._attrs

    def set_attrs(self, values):
        self.root.attrs.update(values)
        self._attrs = None
