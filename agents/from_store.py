"""From a store to the agents' ``States``: which rows a list names, and their tensors."""
from __future__ import annotations

import logging

import numpy as np
import torch

from agents.base import States
from data.errors import InputError, StoreError
from data.lists import VideoList
from data.store import DONE, Store
from data.store_rows import StoreRows, float32_bytes, stream_by_default

log = logging.getLogger(__name__)


def rows_for_list(store: Store, videos: VideoList) -> np.ndarray:
    """Store rows of the videos a list names, in list order. Videos absent from the store
    are an error; videos present but not done (failed, pending) are left out with a warning."""
    index = {p: i for i, p in enumerate(store.paths)}
    missing = [p for p in videos.paths if p not in index]
    if missing:
        raise InputError(f"{len(missing)} of {len(videos.paths)} videos of {videos.source} are not in "
                         f"{store.path}, e.g. {', '.join(missing[:3])}")
    rows = np.array([index[p] for p in videos.paths], dtype=np.int64)
    status = store.status()[rows]
    if (status != DONE).any():
        log.warning("%d of %d videos of %s are not done in %s (failed or pending); leaving them out",
                    int((status != DONE).sum()), len(rows), videos.source, store.path)
    rows = rows[status == DONE]
    if not len(rows):
        raise StoreError(f"no video of {videos.source} is done in {store.path}")
    return rows


def load_states(store: Store, stream: str, rows, *, observer: str | None = None,
                feature_maps: bool = False, require_logits: bool = True, load: str = "memory") -> States:
    """States of ``rows`` for ``stream``: features (V,T,K,D) float32, logits (V,T,K,C),
    labels, motion (None when the store has none), optional observer features and feature maps. ``load`` (data/store_rows.py):
    ``memory`` reads them all now; ``stream`` gives :class:`StoreRows` views for the per-cell
    arrays (read per mini-batch or block; labels and motion are read now); ``auto`` streams
    when they would not fit comfortably."""
    rows = np.asarray(rows, dtype=np.int64)
    if stream not in store.streams:
        raise InputError(f"{store.path} has no stream {stream!r}; it has {', '.join(store.streams)}")
    names = [f"{stream}/features", f"{stream}/logits"] + ([f"{stream}/feature_maps"] if feature_maps else []) \
        + ([f"{observer}/features"] if observer else [])
    streamed = stream_by_default(float32_bytes(store, names, len(rows)), load)
    read = (lambda name: StoreRows(store, name, rows)) if streamed else \
        (lambda name: torch.from_numpy(store.read_rows(name, rows).astype(np.float32)))
    feats = read(f"{stream}/features")
    if store.has(f"{stream}/logits") and (require_logits or store.logits_written(stream)[rows].all()):
        store.require_logits(stream, rows)     # rows extracted after `framesel head` have none
        logits = read(f"{stream}/logits")
    elif require_logits:
        raise StoreError(f"{store.path} has no logits for stream {stream!r}: its backbone has no head "
                         f"for these classes; run `framesel head {store.path} --train LIST` first")
    else:
        logits = torch.zeros((*feats.shape[:3], len(store.attrs.get("classes", [])) or 1))
    labels = store.labels[rows]
    multilabel = bool(store.attrs.get("multilabel"))
    maps = None
    if feature_maps:
        if not store.has(f"{stream}/feature_maps"):
            raise StoreError(f"{store.path} has no {stream}/feature_maps; extract with --feature-maps")
        maps = read(f"{stream}/feature_maps")
    obs = read(f"{observer}/features") if observer else None
    if streamed:
        log.info("streaming %s's %d videos from %s (--load %s)", stream, len(rows), store.path, load)
    return States(features=feats, logits=logits,
                  labels=torch.from_numpy(labels.astype(np.float32 if multilabel else np.int64)),
                  motion=(torch.from_numpy(store.read_rows("motion", rows).astype(np.float32))
                          if store.has("motion") else None),     # no flow measured, or imported
                  feature_maps=maps, observer=obs, video_ids=rows, multilabel=multilabel)


def head_logits_ok(store: Store, stream: str) -> bool:
    """True when the stream's logits are over the dataset's classes (not ImageNet's 1000)."""
    if not store.has(f"{stream}/logits"):
        return False
    return store.shape(f"{stream}/logits")[-1] == len(store.attrs.get("classes", []))
