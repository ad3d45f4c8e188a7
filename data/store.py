"""The feature store: one logical layout (GUIDE §2, schema version 1), two backends.

``open_store(path, mode)`` picks the backend from the path (``*.zarr`` directory → Zarr,
``*.h5``/``*.hdf5`` file → HDF5) or from ``format=``. Both implement :class:`Store`;
``tests/test_store_contract.py`` runs one contract suite against each.

Layout (V videos in list order, T positions, K crops, D features, C classes):

==========================  =======================================  ===========================
node                        shape, dtype                             written
==========================  =======================================  ===========================
root attrs                  schema, classes, settings, versions      at creation
videos/path, videos/label   (V,) str; (V,) int32 or (V, C) uint8     at creation
videos/status, error        (V,) uint8 0/1/2; (V,) str               last, per video
videos/note                 (V,) str: short-video handling, decoder  per video
                            warnings ("" when nothing happened)
videos/num_frames, fps      (V,) int32; (V,) float32                 per video
frame_index                 (V, T) int32                             per video
<stream>/features           (V, T, K, D) float16                     per video
<stream>/logits             (V, T, K, C) float32                     per video, or by `head`
                            (attrs: that head's provenance)
<stream>/logits_written     (V,) uint8: rows `head` wrote            by `head`, after the rows
heads/<stream>/<param>      the head's weights (float32)             by `head`, before logits
<stream>/feature_maps       (V, T, K, h, w, d) float16 (optional)    per video
motion                      (V, T) float32                           per video
thumbnails                  (V, T, h, w, 3) uint8 (optional)         per video
cost/seconds                (V, S) float32 seconds per stage (names: per video (optional, as
                            root attr ``cost_stages``)                all cost/*: older stores lack it)
cost/flow_gflops, _fields   (V,) float32 GFLOPs; (V,) int32 fields    per video (optional)
cost/flow_iterations        (V,) float32 per field, NaN: not known    per video (optional)
==========================  =======================================  ===========================

Root attr ``cost`` says what each cost number is (measured, counted, estimated, upper bound);
seconds are an execution fact that :func:`compare_stores` leaves out (``TIMING_NODES``).

Every per-video array is chunked one video per chunk, so writers of different videos never
touch the same chunk (safe for concurrent shards on Zarr). ``videos/status`` is written after
all of a video's rows: a reader trusts only rows whose status is DONE. Every written chunk is
stored, even one equal to the fill value, so a done row whose chunk is missing (an
interrupted copy) is an error, never zeros; so is a chunk that does not decode.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from data.errors import FrameselError, SchemaError, StoreError, UnknownNameError
# The layout types live in data.layout; data.store stays the one front door for them.
from data.layout import (COST_PREFIX, TIMING_NODES, Layout, StreamSpec, VideoCost, VideoResult,  # noqa: F401
                         per_video_arrays, result_rows)
from data.space import check_room, write_error
from data.store_logits import LogitsRecord

SCHEMA_VERSION = 1
PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}
# Arrays whose real rows are never all zeros: their chunk must exist even in stores written
# before every chunk was written (see Store._chunk_required).
_NEVER_ZERO = ("features", "logits", "feature_maps")

# Lazily imported backends (GUIDE §6.4): a missing optional library names what is available.
_FORMATS = {"zarr": ("data.store_zarr", "ZarrStore"), "hdf5": ("data.store_hdf5", "HDF5Store")}
_SUFFIXES = {".zarr": "zarr", ".h5": "hdf5", ".hdf5": "hdf5"}


class Store(LogitsRecord):
    """Backend-independent API. Subclasses implement the ``_``-prefixed primitives."""

    format = ""
    _write_failed = False     # set when a write failed: close() then cannot flush either

    def __init__(self, path, mode):
        self.path, self.mode = Path(path), mode
        self._required: dict[str, bool] = {}     # array name -> must its done rows have chunks

    # -- primitives each backend implements -----------------------------------------
    def _read_row(self, name: str, i: int) -> np.ndarray: raise NotImplementedError
    def _write_row(self, name: str, i: int, value) -> None: raise NotImplementedError
    def _read_all(self, name: str) -> np.ndarray: raise NotImplementedError
    def _shape(self, name: str) -> tuple[int, ...]: raise NotImplementedError
    def _create_array(self, name, shape, dtype, chunks) -> None: raise NotImplementedError
    def array_names(self) -> list[str]: raise NotImplementedError
    def _dtype(self, name: str) -> np.dtype: raise NotImplementedError
    def _chunk_exists(self, name: str, i: int) -> bool: raise NotImplementedError
    def _chunk_location(self, name: str, i: int) -> str: raise NotImplementedError
    def _chunks_always_written(self, name: str) -> bool: raise NotImplementedError
    def _array_attrs(self, name: str) -> dict: raise NotImplementedError
    def _set_array_attrs(self, name: str, values: dict) -> None: raise NotImplementedError
    def broken_nodes(self) -> dict[str, str]:
        """{metadata file: cause} of nodes whose metadata cannot be read (empty = none)."""
        return {}
    def _chunk_damage(self, name: str, i: int) -> str | None:
        """Why row ``i``'s stored chunk is damaged, found without decoding it (None = looks whole)."""
        return None
    @property
    def attrs(self) -> dict: raise NotImplementedError
    def set_attrs(self, values: dict) -> None: raise NotImplementedError
    def close(self) -> None: pass

    # -- shared behaviour --------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def num_videos(self) -> int:
        return self._shape("videos/status")[0]

    @property
    def T(self) -> int:
        return int(self.attrs["T"])

    @property
    def paths(self) -> list[str]:
        return [str(p) for p in self._read_all("videos/path")]

    @property
    def labels(self) -> np.ndarray:
        return self._read_all("videos/label")

    @property
    def streams(self) -> list[str]:
        return [s["name"] for s in self.attrs.get("streams", [])]

    def layout(self) -> Layout:
        """The Layout this store was created from (paths, labels, streams, attrs)."""
        a = self.attrs
        streams = tuple(StreamSpec(s["name"], s["crops"], s["dim"], s["classes"],
                                   tuple(s["map_shape"]) if s.get("map_shape") else None)
                        for s in a.get("streams", []))
        return Layout(paths=tuple(self.paths), labels=self.labels, T=int(a["T"]), streams=streams,
                      thumbnail_size=tuple(a["thumbnail_size"]) if a.get("thumbnail_size") else None,
                      attrs=dict(a), cost_stages=tuple(a["cost_stages"]) if a.get("cost_stages") else None)

    def status(self) -> np.ndarray:
        """(V,) uint8: 0 pending, 1 done, 2 failed."""
        return np.asarray(self._read_all("videos/status"), dtype=np.uint8)

    def errors(self) -> list[str]:
        return [str(e) for e in self._read_all("videos/error")]

    def done(self) -> np.ndarray:
        """Indices of videos whose rows are complete."""
        return np.flatnonzero(self.status() == DONE)

    def has(self, name: str) -> bool:
        return name in self.array_names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shape(name)

    def read(self, name: str, i: int, *, require_done: bool = True) -> np.ndarray:
        """One video's row of array ``name`` (e.g. ``"rgb/features"``). A done row whose chunk
        is missing or does not decode raises StoreError naming the array, video and chunk."""
        i = int(i)
        if require_done and self._read_row("videos/status", i) != DONE:
            raise StoreError(f"{self.path}: video {i} is not done (status "
                             f"{STATUS_NAMES[int(self._read_row('videos/status', i))]})")
        return self._checked_row(name, i)

    def read_rows(self, name: str, indices) -> np.ndarray:
        """Stack rows of done videos ``indices``. One read per row (faster than fancy indexing
        on both backends, GUIDE §7), each backend's own way (Zarr: ``_read_rows`` decodes the
        chunk files itself)."""
        indices = np.asarray(indices, dtype=np.int64)
        for i in indices:
            self._check_chunk(name, int(i), must_be_done=True)
        if not len(indices):
            return np.zeros((0, *self._shape(name)[1:]), dtype=self.dtype(name))
        return np.stack(self._read_rows(name, [int(i) for i in indices]))

    def _read_rows(self, name: str, indices: list[int]) -> list[np.ndarray]:
        """The rows ``indices`` (their chunks checked); a backend may read them its own way."""
        return [np.asarray(self._read_row(name, i)) for i in indices]

    def _checked_row(self, name: str, i: int, *, must_be_done: bool = False) -> np.ndarray:
        """Row ``i``, refusing the fill value that a missing chunk would silently give."""
        self._check_chunk(name, i, must_be_done=must_be_done)
        return np.asarray(self._read_row(name, i))

    def _check_chunk(self, name: str, i: int, *, must_be_done: bool = False) -> None:
        """Refuse row ``i`` when its chunk is missing (a done video's: damage; another's, with
        ``must_be_done``: not done). The check is one stat (Zarr) or one chunk-index lookup
        (HDF5) per row; status is read only when a chunk is missing."""
        if self._chunk_required(name) and not self._chunk_exists(name, i):
            done = int(self._read_row("videos/status", i)) == DONE
            if done:
                raise self._damaged(name, i, "is missing: the store is incomplete (an interrupted copy "
                                             "or sync?); restore it from its source or extract it again")
            if must_be_done:
                raise StoreError(f"{self.path}: video {i} is not done, it has no {name} row")

    def _chunk_required(self, name: str) -> bool:
        """Whether a row of ``name`` must have its chunk stored. Arrays created since chunks are
        always written say so; before, a row equal to the fill value (a static video's motion,
        a 1-frame video's frame_index) had no chunk, but features and logits never are all zero."""
        if name not in self._required:
            self._required[name] = self._chunks_always_written(name) or name.rsplit("/", 1)[-1] in _NEVER_ZERO
        return self._required[name]

    def _damaged(self, name: str, i: int, what: str) -> StoreError:
        """The error for a damaged row: array, video index, its list path and the chunk."""
        try:
            video = f" ({self._read_row('videos/path', i)})"
        except (FrameselError, IndexError):
            video = ""
        return StoreError(f"{self.path}: {name} of video {i}{video}: chunk {self._chunk_location(name, i)} {what}")

    def verified_row(self, name: str, i: int) -> np.ndarray:
        """Row ``i`` of a done video, after also checking its chunk for damage that may still
        decode (``framesel check``); StoreError names array, video and chunk."""
        damage = self._chunk_damage(name, i) if self._chunk_exists(name, i) else None
        if damage:
            raise self._damaged(name, i, damage)
        return self._checked_row(name, i, must_be_done=True)

    def dtype(self, name: str) -> np.dtype:
        known = self.attrs.get("arrays", {})
        return np.dtype(known[name][1]) if name in known else np.dtype(self._dtype(name))

    def notes(self) -> list[str]:
        """Per video: what was done about a short video, and decoder warnings."""
        return [str(e) for e in self._read_all("videos/note")] if self.has("videos/note") else [""] * self.num_videos

    def write_video(self, i: int, result: VideoResult, note: str = "") -> None:
        """Write every row of video ``i``, then mark it done (status last), then flush, so a
        process killed afterwards keeps it. Nothing is written unless every row is valid and
        the disk has room; a failed write leaves video ``i`` pending (StoreError)."""
        rows = self._checked_rows(i, result_rows(result))
        self._guard(i, lambda: self._write_rows(i, rows, note))

    def _checked_rows(self, i: int, rows: dict) -> dict[str, np.ndarray]:
        """Rows cast to the layout's dtypes; StoreError for unknown, misshapen or missing ones.
        Cost rows are dropped for a store made without ``cost/*`` (one resumed from before)."""
        expected = self.attrs["arrays"]
        out = {}
        for name, value in rows.items():
            if name not in expected and name.startswith(COST_PREFIX):
                continue
            if name not in expected:
                raise StoreError(f"{self.path}: no array {name!r} in this store's layout")
            value = np.asarray(value, dtype=expected[name][1])
            if tuple(value.shape) != tuple(expected[name][0]):
                raise StoreError(f"{self.path}: {name} row has shape {value.shape}, "
                                 f"store expects {tuple(expected[name][0])}")
            out[name] = value
        missing = set(expected) - set(out) - {n for n in expected if n.endswith("/logits")}
        if missing:
            raise StoreError(f"{self.path}: video {i} result lacks {sorted(missing)}")
        check_room(self, i, out)
        return out

    def _write_rows(self, i: int, rows: dict, note: str) -> None:
        for name, value in rows.items():
            self._write_row(name, i, value)
        self._write_row("videos/note", i, note)
        self._write_row("videos/error", i, "")
        # Rows durable first, then the status: a flush that fails (full disk) or a kill
        # midway can then leave the video pending, never done with rows missing.
        self.flush()
        self._write_row("videos/status", i, DONE)
        self.flush()

    def mark_failed(self, i: int, error: str) -> None:
        """Record why video ``i`` failed (status last, then flush)."""
        def write():
            self._write_row("videos/error", i, str(error))
            self._write_row("videos/status", i, FAILED)
            self.flush()
        self._guard(i, write)

    def _guard(self, i: int, write) -> None:
        """Run ``write``; an OSError (ENOSPC, EFBIG, EIO…) becomes a StoreError naming the video
        and the store. The video stays pending: its status is written last."""
        try:
            write()
        except StoreError:
            raise
        except (OSError, RuntimeError) as err:   # h5py raises RuntimeError for some failed flushes
            self._write_failed = True
            try:   # should the flush have failed after the status: what close() writes says pending
                self._write_row("videos/status", i, PENDING)
            except (OSError, RuntimeError):
                pass
            raise StoreError(write_error(err, f"writing video {i} to {self.path}") +
                             f"; video {i} stays pending: make room and run the same command "
                             "again to resume") from err

    def flush(self) -> None:
        """Make every row written so far survive a killed process (a no-op where each write
        is already durable, as in Zarr)."""

    def _reserve(self, nbytes: int) -> None:
        """Reserve disk room for the next video's ``nbytes`` (no-op: one file per chunk)."""

    def _file_growth(self, rows: dict) -> int:
        """Size the largest file written grows to with ``rows``: here one file per row (Zarr
        chunks); a single-file backend adds the file's size."""
        return max((v.nbytes for v in rows.values()), default=0)

    def identity(self) -> dict:
        """What a checkpoint or report records to tie itself to this store."""
        a = self.attrs
        return {"path": str(self.path), "format": self.format, "schema": a.get("schema_version"),
                "list_sha256": a.get("list_sha256"), "created": a.get("created"),
                "config_sha256": a.get("config_sha256")}

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, layout: "Layout", *, exist_ok: bool = False) -> "Store":
        """Build the store beside ``path``, then publish it atomically, so concurrent shards
        starting at once end up sharing the one store that won."""
        if path.exists():
            if exist_ok:
                return cls(path, "a")
            raise StoreError(f"{path} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            cls._build(tmp, layout)
        except OSError as err:   # a full disk or a read-only folder: leave nothing half-made
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise StoreError(write_error(err, f"creating {path}")) from err
        if not cls._publish(tmp, path) and not exist_ok:
            raise StoreError(f"{path} was created by another process meanwhile")
        return cls(path, "a")

    @classmethod
    def _build(cls, tmp: Path, layout: "Layout") -> None:
        """Write a complete new store at ``tmp``."""
        raise NotImplementedError

    @staticmethod
    def _publish(tmp: Path, path: Path) -> bool:
        """Move ``tmp`` to ``path`` without replacing anything; False if ``path`` appeared."""
        raise NotImplementedError

    def _initialise(self, layout: Layout) -> None:
        V = layout.num_videos
        arrays = per_video_arrays(layout)
        self._create_array("videos/path", (V,), "str", (max(V, 1),))
        self._create_array("videos/error", (V,), "str", (1,))
        self._create_array("videos/note", (V,), "str", (1,))
        self._create_array("videos/status", (V,), "uint8", (1,))
        labels = np.asarray(layout.labels)
        self._create_array("videos/label", labels.shape, labels.dtype.str, labels.shape or (1,))
        for name, (row, dtype) in arrays.items():
            self._create_array(name, (V, *row), dtype, (1, *row))
        self._write_all("videos/path", np.asarray(layout.paths, dtype=object))
        self._write_all("videos/label", labels)
        attrs = dict(layout.attrs)
        attrs.update(schema_version=SCHEMA_VERSION, T=layout.T,
                     streams=[{"name": s.name, "crops": s.crops, "dim": s.dim, "classes": s.classes,
                               "map_shape": list(s.map_shape) if s.map_shape else None}
                              for s in layout.streams],
                     thumbnail_size=list(layout.thumbnail_size) if layout.thumbnail_size else None,
                     arrays={k: [list(v[0]), v[1]] for k, v in arrays.items()})
        if layout.cost_stages:
            attrs["cost_stages"] = list(layout.cost_stages)
        self.set_attrs(json.loads(json.dumps(attrs, default=_jsonable)))

    def _write_all(self, name, values) -> None: raise NotImplementedError

    def check_schema(self) -> None:
        version = self.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: store schema version {version!r}, this framesel reads "
                              f"version {SCHEMA_VERSION}")


def _jsonable(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot record {type(obj).__name__} in store attributes")


def format_for(path, format: str | None = None) -> str:
    if format:
        if format not in _FORMATS:
            raise UnknownNameError("store format", format, _FORMATS)
        return format
    suffix = Path(path).suffix.lower()
    return _SUFFIXES.get(suffix, "zarr")


def _backend(format: str):
    module, cls = _FORMATS[format]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise StoreError(f"store format {format!r} needs a library that is not installed ({err}); "
                         f"available formats: {', '.join(_FORMATS)}") from err


def open_store(path, mode: str = "r", *, format: str | None = None) -> Store:
    """Open an existing store (``mode`` "r" or "a"). Raises StoreError if it is missing."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no store at {path}")
    store = _backend(format_for(path, format))(path, mode)
    store.check_schema()
    return store


def create_store(path, layout: Layout, *, format: str | None = None, exist_ok: bool = False) -> Store:
    """Create a store atomically (built beside, then renamed into place), so two shards that
    start at once end up sharing one store. With ``exist_ok``, an existing store is opened
    instead — the caller then checks its settings match."""
    return _backend(format_for(path, format)).create(Path(path), layout, exist_ok=exist_ok)


def compare_stores(a: Store, b: Store, *, atol: float = 0.0, ignore=TIMING_NODES) -> list[str]:
    """Differences between two stores, array for array (empty list = equal), leaving out the
    arrays named in ``ignore`` (by default the measured seconds: how long a video took is
    not what the store holds)."""
    diffs = []
    names_a, names_b = set(a.array_names()) - set(ignore), set(b.array_names()) - set(ignore)
    if names_a != names_b:
        diffs.append(f"arrays differ: only in a {sorted(names_a - names_b)}, only in b {sorted(names_b - names_a)}")
    for name in sorted(names_a & names_b):
        x, y = a._read_all(name), b._read_all(name)
        if x.shape != y.shape:
            diffs.append(f"{name}: shape {x.shape} vs {y.shape}")
        elif x.dtype.kind in "fc":
            if not np.allclose(x, y, atol=atol, rtol=0, equal_nan=True):
                diffs.append(f"{name}: max abs difference {np.nanmax(np.abs(x.astype(np.float64) - y)):.3g}")
        elif not np.array_equal(x.astype(object) if x.dtype.kind in "OTU" else x,
                                y.astype(object) if y.dtype.kind in "OTU" else y):
            diffs.append(f"{name}: values differ")
    return diffs
