"""Sharded HDF5 extraction: where shard K of N writes (:func:`shard_path`) and the merge of
the shards into one store (:func:`merge_stores`, ``framesel merge``), refusing shards whose
features mean something else (data/identity.py) and rows that disagree."""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from data.errors import StoreError
from data.identity import differences, features_identity
from data.store import DONE, FAILED, Store, per_video_arrays

log = logging.getLogger(__name__)


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
    _check_merge_out(dest)
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


def _check_merge_out(dest: Path) -> None:
    """--out of merge is an HDF5 file, or absent under a directory this process can write."""
    if dest.is_dir():
        raise StoreError(f"--out {dest} is a directory; the merged store is one HDF5 file: name it FILE.h5")
    above = next(p for p in (dest.absolute().parent, *dest.absolute().parents) if p.exists())
    if not dest.exists() and not (above.is_dir() and os.access(above, os.W_OK | os.X_OK)):
        raise StoreError(f"cannot create --out {dest}: {above} is not a writable directory (permissions, "
                         "a read-only file system, or a file)")


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
