"""Logits a later stage writes into a store (``framesel head``), and their record.

Kept in the stream's own nodes, so concurrent runs on different streams never write one
file: the provenance in the attrs of ``<stream>/logits``, which rows it wrote in
``<stream>/logits_written`` (V,) uint8 (one chunk, rewritten after the rows). A mixin of
:class:`data.store.Store`; uses only its public reads and backend primitives.
"""
from __future__ import annotations

import json

import numpy as np

from data.errors import StoreError
from data.jsonable import attr_value


class LogitsRecord:
    """``add_logits`` and the readers of what it recorded (mixed into Store)."""

    def add_logits(self, stream: str, logits: np.ndarray, provenance: dict, indices=None) -> None:
        """Write per-frame logits (N, T, K, C) for rows ``indices`` (default: every done video)
        of ``stream`` (e.g. from ``framesel head``), with their provenance.

        Everything lives in the stream's own nodes, so concurrent runs on different streams
        never write one file: the provenance in the attrs of ``<stream>/logits``, and which rows
        it wrote in ``<stream>/logits_written`` (V,) uint8. Another provenance than the recorded
        one starts a new mask (recorded first, so a kill never credits a row to the wrong
        writer); the same provenance adds rows to it (a re-run filling late videos)."""
        name, mask = f"{stream}/logits", f"{stream}/logits_written"
        indices = self.done() if indices is None else np.asarray(indices)
        V, T = self.num_videos, self.T
        K, C = logits.shape[2], logits.shape[3]
        provenance = json.loads(json.dumps(provenance, default=attr_value))
        fresh = not self.has(name) or tuple(self._shape(name)[1:]) != (T, K, C)
        if fresh:
            self._create_array(name, (V, T, K, C), "float32", (1, T, K, C))
        recorded = self._array_attrs(name).get("provenance") if not fresh else None
        if fresh or not self.has(mask) or _canonical(recorded) != _canonical(provenance):
            self._create_array(mask, (V,), "uint8", (max(V, 1),))
            self._write_all(mask, np.zeros(V, np.uint8))
            self._set_array_attrs(name, {"provenance": provenance})
        for row, i in zip(logits, indices):
            self._write_row(name, int(i), np.asarray(row, np.float32))
        written = np.asarray(self._read_all(mask), np.uint8).copy()
        written[np.asarray(indices, np.int64)] = 1
        self._write_all(mask, written)

    def logits_provenance(self) -> dict:
        """{stream: provenance} of logits written by ``framesel head``: from the attrs of
        ``<stream>/logits``; stores made before keep them in the root attrs."""
        out = dict(self.attrs.get("logits_provenance", {}))
        names = set(self.array_names())
        for stream in self.streams:
            if f"{stream}/logits" in names:
                prov = self._array_attrs(f"{stream}/logits").get("provenance")
                if prov:
                    out[stream] = prov
        return out

    def head_weights(self, stream: str, names) -> dict[str, np.ndarray]:
        """The ``framesel head`` weights kept for ``stream`` (``heads/<stream>/<name>``), float32
        by parameter name; a missing one is a StoreError naming it."""
        out = {}
        for n in names:
            key = f"heads/{stream}/{n}"
            if not self.has(key):
                raise StoreError(f"{self.path} keeps no head weights {key}; run `framesel head` again")
            out[n] = np.asarray(self._read_all(key), np.float32)
        return out

    def logits_written(self, stream: str) -> np.ndarray:
        """(V,) bool: done rows whose ``<stream>/logits`` hold real logits — every done row for
        the backbone's own logits (written with the video), the recorded rows for logits of
        ``framesel head``. Stores made before the record: every done row (a Zarr row extracted
        after `head` then fails on its missing chunk)."""
        done = np.zeros(self.num_videos, dtype=bool)
        done[self.done()] = True
        mask = self._logits_mask(stream)
        return done if mask is None else done & mask

    def _logits_mask(self, stream: str) -> np.ndarray | None:
        """(V,) bool of the rows `head` wrote; None when every row is written with its video
        (no record). One small read: no status scan, so cheap before every load."""
        names = set(self.array_names())
        if f"{stream}/logits" not in names:
            return np.zeros(self.num_videos, dtype=bool)
        if f"{stream}/logits_written" not in names:
            return None
        return np.asarray(self._read_all(f"{stream}/logits_written")) == 1

    def require_logits(self, stream: str, rows) -> None:
        """Raise StoreError unless every row of ``rows`` (done videos) has real logits."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self.has(f"{stream}/logits"):
            raise StoreError(f"{self.path} has no logits for stream {stream!r}; run `framesel head` first")
        mask = self._logits_mask(stream)
        lacking = rows[:0] if mask is None else rows[~mask[rows]]
        if len(lacking):
            paths = self.paths
            raise StoreError(f"{self.path}: {len(lacking)} of {len(rows)} videos have no {stream} logits "
                             f"(e.g. {', '.join(paths[i] for i in lacking[:3])}): they were extracted "
                             f"after `framesel head` ran; run `framesel head {self.path}` again")


def _canonical(obj) -> str:
    """One spelling of a JSON value, so equal provenances compare equal (NaN included)."""
    return json.dumps(obj, sort_keys=True, default=attr_value)
