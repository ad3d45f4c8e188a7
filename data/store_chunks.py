"""The chunk checks every store backend shares (a mixin of :class:`data.store.Store`): a row
is read only after its chunk is known to exist, so a missing chunk (an interrupted copy) is
an error naming the array, the video and the chunk, never the fill value's zeros; and
``framesel check`` also finds chunks that are present but damaged."""
from __future__ import annotations

import numpy as np

from data.errors import FrameselError, StoreError
from data.layout import DONE

# Arrays whose real rows are never all zeros: their chunk must exist even in stores written
# before every chunk was written (see ChunkChecks._chunk_required).
NEVER_ZERO = ("features", "logits", "feature_maps")


class ChunkChecks:
    """Needs the backend's ``_read_row``, ``_chunk_exists``, ``_chunk_location``,
    ``_chunk_damage`` and ``_chunks_always_written``, and ``self._required`` (a dict)."""

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
            self._required[name] = self._chunks_always_written(name) or name.rsplit("/", 1)[-1] in NEVER_ZERO
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
