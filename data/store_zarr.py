"""Zarr (v3 directory store) backend: the default, safe for concurrent shard writers."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec

from data.errors import StoreError
from data.store import Layout, Store

# Blosc-lz4 with bit-shuffle. The light stage reads a store's features once per epoch, so
# decoding is its floor: on the fight benchmark's real EfficientNet-Lite0 features (float16,
# one core) lz4 decodes 1.76 GB/s and compresses 1.12x, where zstd-3 (GUIDE §7's choice,
# and framesel's until issue 13) decodes 0.50 GB/s at 1.19x: 3.5x the read speed for 6 % more
# disk, and writes 5x faster too (benchmarks/README.md, stream.py). The codec is recorded in
# each array's metadata, so stores written with zstd read as before.
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
# Decodes any blosc frame (the frame names its codec, level and shuffle): ZarrStore._read_rows
_DECODER = Blosc()
# zarr 3 skips a chunk equal to the fill value by default, so a missing chunk would read as
# zeros indistinguishable from a lost one. A runtime setting, not stored: applied on every open.
_CONFIG = {"write_empty_chunks": True}
# Array attribute of arrays created since: every written row has its chunk file.
_ALWAYS = "framesel_all_chunks_written"
# Errors zarr raises on undecodable metadata or chunks (JSONDecodeError is a ValueError; blosc
# raises RuntimeError; a chunk of the wrong size a ValueError).
_DECODE_ERRORS = (ValueError, RuntimeError, TypeError, KeyError, OSError)


class ZarrStore(Store):
    format = "zarr"

    def __init__(self, path, mode="r"):
        super().__init__(path, mode)
        meta = Path(path) / "zarr.json"
        if Path(path).is_file():     # zarr would report a missing zarr.json, or fail creating it
            raise StoreError(f"{path} is a file, not a framesel Zarr store (a directory); an HDF5 store's name "
                             "ends in .h5 or .hdf5")
        try:
            self.root = zarr.open_group(str(path), mode="r" if mode == "r" else "r+")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as err:
            raise StoreError(f"{path} is not a framesel Zarr store: {meta} is missing or not a group "
                             f"({err})") from err
        except _DECODE_ERRORS as err:
            raise StoreError(f"{meta} cannot be read ({type(err).__name__}: {err}): the store's root "
                             f"metadata is damaged") from err
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
            meta = self.path / name / "zarr.json"
            try:
                arr = self.root[name]
            except KeyError:
                if meta.exists():
                    raise StoreError(f"{meta} cannot be read: not valid array metadata") from None
                raise StoreError(f"{self.path}: no array {name!r}") from None
            except _DECODE_ERRORS as err:
                raise StoreError(f"{meta} cannot be read ({type(err).__name__}: {err}): the metadata "
                                 f"of array {name} is damaged") from err
            if not isinstance(arr, zarr.Array):
                raise StoreError(f"{self.path}: {name!r} is a group, not an array")
            arr = self._arrays[name] = arr.with_config(_CONFIG)
        return arr

    def _create_array(self, name, shape, dtype, chunks):
        is_str = dtype == "str"
        self._arrays[name] = self.root.create_array(
            name, shape=shape, chunks=chunks, dtype=str if is_str else dtype,
            fill_value="" if is_str else 0, compressors=None if is_str else _COMPRESSOR,
            overwrite=True, config=_CONFIG, attributes={_ALWAYS: True})
        self.__dict__.get("_required", {}).pop(name, None)

    def _read_row(self, name, i):
        arr = self._array(name)
        try:
            return arr[i]
        except _DECODE_ERRORS as err:
            raise self._damaged(name, i, f"cannot be decoded ({type(err).__name__}: {err})") from err

    def _read_rows(self, name, indices):
        """The rows' chunk files read and decoded straight with blosc when the array is
        framesel's own layout (one row per chunk, little-endian bytes, one blosc codec, no
        sharding): zarr's per-chunk call costs ~1.3 ms, 3x the read and the lz4 decode of a
        640 KB chunk (benchmarks/stream.py: 0.85 against 0.29 GB/s on one core, the same
        values). Any other array reads through zarr."""
        arr = self._array(name)
        if not _plain_chunks(arr):
            return [self._read_row(name, i) for i in indices]
        out = []
        for i in indices:
            path = self._chunk_location(name, i)
            try:
                with open(path, "rb") as f:
                    raw = _DECODER.decode(f.read())
                out.append(np.frombuffer(raw, dtype=arr.dtype.newbyteorder("<")).reshape(arr.shape[1:]))
            except (RuntimeError, ValueError) as err:       # blosc refuses a damaged frame
                raise self._damaged(name, i, f"cannot be decoded ({type(err).__name__}: {err})") from err
        return out

    def _write_row(self, name, i, value):
        self._array(name)[i] = value

    def _read_all(self, name):
        arr = self._array(name)
        try:
            return np.asarray(arr[...])
        except _DECODE_ERRORS as err:
            raise StoreError(f"{self.path}: array {name} cannot be decoded ({type(err).__name__}: "
                             f"{err})") from err

    def _write_all(self, name, values):
        arr = self._array(name)
        arr[...] = np.asarray(values).astype(str) if arr.dtype.kind in "OTU" else values

    def _shape(self, name):
        return tuple(self._array(name).shape)

    def _dtype(self, name):
        return self._array(name).dtype

    # -- integrity: chunk files and metadata ---------------------------------------------
    def _chunk_location(self, name, i):
        arr = self._array(name)
        coord = (int(i) // arr.chunks[0],) + (0,) * (arr.ndim - 1) if arr.ndim else ()
        return str(self.path / name / arr.metadata.encode_chunk_key(coord))

    def _chunk_exists(self, name, i):
        return os.path.exists(self._chunk_location(name, i))

    def _chunks_always_written(self, name):
        return bool(self._array(name).attrs.get(_ALWAYS))

    def _chunk_damage(self, name, i):
        """A blosc frame records its compressed size (bytes 12-15): a truncated file that
        happens to decode is still caught."""
        arr = self._array(name)
        if not any(isinstance(c, BloscCodec) for c in arr.compressors):
            return None
        path = self._chunk_location(name, i)
        try:
            with open(path, "rb") as f:
                head = f.read(16)
            size = os.path.getsize(path)
        except OSError as err:
            return f"cannot be read ({err})"
        recorded = int.from_bytes(head[12:16], "little") if len(head) == 16 else None
        if recorded != size:
            return f"is truncated or damaged ({size} bytes, its blosc header says {recorded})"
        return None

    def _array_attrs(self, name):
        return dict(self._array(name).attrs)

    def _set_array_attrs(self, name, values):
        self._array(name).attrs.update(values)

    def array_names(self):
        return sorted(self._walk()[0])

    def broken_nodes(self):
        return self._walk()[1]

    def _walk(self):
        """(array names, {metadata file: cause}) from the zarr.json files, read one by one so
        one damaged node is named instead of failing every listing; never enters chunk folders."""
        arrays, broken = [], {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, self.path).replace(os.sep, "/")
            if "zarr.json" not in filenames:
                if os.path.basename(dirpath) == "c":
                    dirnames[:] = []      # the chunks of an array whose metadata is gone
                continue
            meta = os.path.join(dirpath, "zarr.json")
            try:
                with open(meta, "rb") as f:
                    kind = json.loads(f.read()).get("node_type")
            except (OSError, ValueError, AttributeError) as err:
                broken[meta] = f"{type(err).__name__}: {err}"
                kind = "group" if any(os.path.exists(os.path.join(dirpath, d, "zarr.json"))
                                      for d in dirnames) else "array"
            if kind != "group" and rel != ".":
                arrays.append(rel)
                dirnames[:] = []
        return arrays, broken

    @property
    def attrs(self):
        if self._attrs is None:
            self._attrs = dict(self.root.attrs)
        return self._attrs

    def set_attrs(self, values):
        self.root.attrs.update(values)
        self._attrs = None



def _plain_chunks(arr) -> bool:
    """Whether every chunk of ``arr`` is one row as little-endian bytes in one blosc frame."""
    codecs = arr.metadata.codecs if hasattr(arr.metadata, "codecs") else ()
    return (arr.ndim >= 1 and tuple(arr.chunks) == (1, *arr.shape[1:]) and arr.dtype.kind in "fiub"
            and len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], BloscCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == "little"))
