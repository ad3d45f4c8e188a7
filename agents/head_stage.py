"""The light stage's first call, behind ``framesel head``: train the classes' head on a
store's features and write its per-frame logits, with their provenance, into the store."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

from agents.from_store import rows_for_list
from agents.head import HeadConfig, apply_head, build_head, head_sha256, train_head
from data.errors import InputError, StoreError
from data.lists import read_list
from data.space import is_full, write_error
from data.store import DONE, open_store
from data.store_rows import StoreRows, float32_bytes, stream_by_default
from data.progress import show_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadStageConfig:
    store: str
    train_list: str
    streams: tuple[str, ...] = ()          # () = every stream of the store
    head: HeadConfig = field(default_factory=HeadConfig)
    device: str = "cpu"
    load: str = "auto"                     # memory | stream | auto (data/store_rows.py)
    quiet: bool = False
    command: str = ""
    truth: str | None = None               # a truth file: train per position on segment classes


def run_head(cfg: HeadStageConfig) -> dict:
    """Train the classifier CL per stream on the training videos' cached features, then write
    per-frame logits (V, T, K, C) for every done video with their provenance. Returns
    {stream: provenance}.

    A re-run with the same settings, list and training rows as the recorded head reuses that
    head (kept in the store) and only fills the videos extracted since, keeping its provenance.

    ``cfg.truth``: a truth file (data/truth.py) of the training videos: the head learns each
    position's segment class (agents/head.py ``per_position``), not the video's label, and
    its provenance records the file's sha256."""
    videos = read_list(cfg.train_list)
    out = {}
    with open_store(cfg.store, "a") as store:
        C = len(store.attrs.get("classes", []))
        if len(videos.classes) != C:
            raise InputError(f"{cfg.train_list} has {len(videos.classes)} classes, the store {C}")
        rows = rows_for_list(store, videos)
        rows_sha = hashlib.sha256(np.ascontiguousarray(rows, np.int64).tobytes()).hexdigest()
        multilabel = bool(store.attrs.get("multilabel"))
        labels, truth_sha = _head_labels(store, rows, cfg.truth)
        for stream in cfg.streams or tuple(store.streams):
            head, prov = _recorded_head(store, stream, cfg.head, videos.sha256, rows_sha, C, truth_sha)
            todo = store.done()
            if head is None:
                feats = _head_features(store, stream, rows, cfg.load)     # (V, T, K, D) float16
                head, prov = train_head(feats, labels, C, cfg.head, multilabel=multilabel,
                                        device=cfg.device, progress=show_progress(cfg.quiet),
                                        train_list_sha256=videos.sha256, per_position=truth_sha is not None)
                prov.update(by="framesel head", stream=stream, train_list=str(cfg.train_list),
                            command=cfg.command, train_rows_sha256=rows_sha, head_sha256=head_sha256(head),
                            truth_file=cfg.truth, truth_sha256=truth_sha,
                            created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                prov.pop("history", None)
                _save_head(store, stream, head)    # before the logits, so a re-run can reuse it
            else:
                todo = np.flatnonzero((store.status() == DONE) & ~store.logits_written(stream))
                log.info("%s: reusing the recorded head for %d videos without logits", stream, len(todo))
            _write_logits(store, stream, head, prov, cfg.device, todo)
            out[stream] = prov
    return out


def _head_features(store, stream: str, rows, load: str):
    """The training videos' features, float16: in memory, or a view read per mini-batch."""
    name = f"{stream}/features"
    if stream_by_default(float32_bytes(store, [name], len(rows)), load):
        log.info("%s: streaming the head's %d training videos from %s", stream, len(rows), store.path)
        return StoreRows(store, name, rows, dtype=np.float16)
    return store.read_rows(name, rows)


def _head_labels(store, rows, truth_path) -> tuple[np.ndarray, str | None]:
    """(labels, truth sha256): the training rows' video labels, or with a truth file their
    (V, T) per-position segment classes (data.truth.position_labels) and the file's sha256."""
    if truth_path is None:
        return store.labels[rows], None
    from data.truth import position_labels, read_truth

    truth = read_truth(truth_path)
    paths = [store.paths[i] for i in rows]
    labels = position_labels(truth, paths, store.attrs.get("classes", []), store.read_rows("frame_index", rows),
                             store.read_rows("videos/num_frames", rows))
    return labels, truth.sha256


def _recorded_head(store, stream, cfg: HeadConfig, list_sha, rows_sha, C, truth_sha=None):
    """(head, provenance) of the head recorded for ``stream`` if it is the one these settings,
    list, training rows and truth file would train (weights verified by sha256); else (None, None)."""
    prov = store.logits_provenance().get(stream)
    if not prov or prov.get("by") != "framesel head" or prov.get("config") != dataclasses.asdict(cfg) \
            or (prov.get("train_list_sha256"), prov.get("train_rows_sha256"), prov.get("num_classes"),
                prov.get("truth_sha256")) != (list_sha, rows_sha, C, truth_sha):
        return None, None
    head = build_head(int(prov["feature_dim"]), C, cfg)
    try:
        state = {k: torch.from_numpy(np.asarray(store._read_all(f"heads/{stream}/{k}"), np.float32))
                 for k in head.state_dict()}
        head.load_state_dict(state)
    except (StoreError, RuntimeError):     # weights absent or of another shape: train again
        return None, None
    head.eval()
    return (head, prov) if head_sha256(head) == prov.get("head_sha256") else (None, None)


def _write_logits(store, stream, head, prov, device, rows, chunk=256) -> None:
    """Logits of ``rows`` (done videos) through ``head``, a chunk of videos at a time; a
    disk without room for them all is refused before the first is written."""
    _ensure_room(store, stream, head, len(rows))
    with _head_writes(store, stream):
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            logits = apply_head(head, store.read_rows(f"{stream}/features", part), device=device)
            store.add_logits(stream, logits, prov, indices=part)


def _save_head(store, stream, head) -> None:
    """Keep the head's weights inside the store, so its logits can be recomputed and checked
    (refused before any write when the disk has no room for them and every done video's logits)."""
    _ensure_room(store, stream, head, len(store.done()))
    with _head_writes(store, stream):
        for name, value in head.state_dict().items():
            arr = value.detach().cpu().numpy().astype(np.float32)
            key = f"heads/{stream}/{name}"
            store._create_array(key, arr.shape, "float32", arr.shape or (1,))
            store._write_all(key, arr)


def _ensure_room(store, stream, head, videos: int) -> None:
    """StoreError before writing when the disk has no room for the head's weights and the
    logits of ``videos`` videos (on HDF5 a write that meets a full disk can damage the file)."""
    _, T, K, _ = store.shape(f"{stream}/features")
    C = head.state_dict()[next(reversed(head.state_dict()))].shape[0]     # the last layer's bias
    need = {"logits": np.broadcast_to(np.float32(0), (videos, T, K, C)),
            **{k: v.detach().cpu().numpy() for k, v in head.state_dict().items()}}
    store.ensure_room(need, f"writing the {stream} head and logits to {store.path}",
                      "run `framesel head` again (the features are untouched)")


@contextlib.contextmanager
def _head_writes(store, stream):
    """A failed write of the head or its logits (a full disk; h5py raises RuntimeError for
    some) as a StoreError naming the store, not a bare "No space left on device"."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as err:
        fix = "make room" if is_full(err) else "make the store writable (or copy it somewhere writable)"
        raise StoreError(write_error(err, f"writing the {stream} head and logits to {store.path}")
                         + f"; the features are untouched: {fix} and run `framesel head` again") from err


__all__ = ["HeadStageConfig", "run_head"]
