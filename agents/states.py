"""The agents' whole world: :class:`States`, the cached backbone outputs of V videos for one
stream, held in memory or streamed from the store (data/store_rows.py). The floor of agents/:
everything that trains, selects or evaluates reads them; it imports no other agents module.

Shapes: V videos, T positions, K crops, D feature size, C classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from data.errors import InputError
from data.store_rows import is_streamed, prefetch

MODES = ("frame", "region")


# the States fields with one row per video (the rest: video_ids, multilabel)
_PER_VIDEO = ("features", "logits", "labels", "motion", "feature_maps", "observer", "key")


@dataclass
class States:
    """Cached backbone outputs of V videos for one stream: the agents' whole world.

    features: (V, T, K, D) float32; logits: (V, T, K, C) float32 per-frame classifier logits;
    labels: (V,) int64, or (V, C) float32 multi-hot when ``multilabel``; motion: (V, T)
    float32 mean flow magnitude or None; feature_maps: (V, T, K, h, w, d) float32 or None;
    observer: (V, T, K, D') float32 features of a cheap stream (DSN's observation) or None;
    video_ids: (V,) int64 rows of the store these came from; key: (V, T) bool positions
    inside a segment of the video's class (untrimmed videos with a truth file, data/truth.py;
    planted states), or None: evaluation's ground truth, which only the ``key_oracle``
    baseline and the key-precision columns read, never an agent.

    features, logits, feature_maps and observer may instead be :class:`data.store_rows.StoreRows`
    views of the store (``load_states(load="stream")``): they index like tensors along the
    video axis and are read by :meth:`batches` or :meth:`subset`, a mini-batch at a time.
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    motion: torch.Tensor | None = None
    feature_maps: torch.Tensor | None = None
    observer: torch.Tensor | None = None
    video_ids: np.ndarray | None = None
    multilabel: bool = False
    key: torch.Tensor | None = None

    def __post_init__(self):
        V, T, K, _ = self.features.shape
        if self.logits.shape[:3] != (V, T, K):
            raise InputError(f"logits {tuple(self.logits.shape)} do not match features {tuple(self.features.shape)}")
        if self.labels.shape[0] != V:
            raise InputError(f"{self.labels.shape[0]} labels for {V} videos")
        if self.key is not None and (tuple(self.key.shape) != (V, T) or self.key.dtype != torch.bool):
            raise InputError(f"key must be a (V, T) = ({V}, {T}) bool mask, got {tuple(self.key.shape)} {self.key.dtype}")
        if self.video_ids is None:
            self.video_ids = np.arange(V, dtype=np.int64)

    @property
    def key_mask(self) -> torch.Tensor | None:
        """The planted states' name for :attr:`key` (agents/synthetic.py, the tests)."""
        return self.key

    @key_mask.setter
    def key_mask(self, value) -> None:
        self.key = value

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(V, T, K, D, C)."""
        V, T, K, D = self.features.shape
        return V, T, K, D, self.logits.shape[-1]

    @property
    def probs(self) -> torch.Tensor:
        """(V, T, K, C) softmax of the per-frame logits."""
        return torch.softmax(self.logits, dim=-1)

    @property
    def streamed(self) -> bool:
        """True when some arrays are :class:`data.store_rows.StoreRows` views, read per batch."""
        return any(is_streamed(getattr(self, f)) for f in _PER_VIDEO)

    def batches(self, order, batch_size: int, *, device="cpu", depth: int | None = None,
                read_videos: int = 32):
        """``(idx, states of idx on device)`` for consecutive ``batch_size`` slices ``idx`` of
        ``order`` (a 1-D index tensor): the one mini-batch source of the light stage. In-memory
        states are indexed inline. Streamed ones are read ``read_videos`` videos (at least a
        batch) at a time; for a GPU ``depth`` (default 2) reads ahead on background threads
        (data.store_rows.prefetch) through pinned memory, while the device computes. On the CPU
        (default depth 0) they are read inline: a reader thread there competes with the
        trainer for the GIL and the cores, and made an ``as`` epoch 1.4x slower than in memory
        on 2 cores where inline reads cost 1.04x (a read is ~0.6 ms a video, the update 45 ms)."""
        if not self.streamed:
            for s in range(0, len(order), batch_size):
                yield order[s:s + batch_size], self.subset(order[s:s + batch_size])
            return
        per_read = max(1, read_videos // batch_size) * batch_size
        cuda = torch.device(device).type == "cuda"
        depth = (2 if cuda else 0) if depth is None else depth

        def read(idx):
            many = self.subset(idx)
            return idx, (many.pin().to(device, non_blocking=True) if cuda else many)

        for idx, many in prefetch(read, [order[s:s + per_read] for s in range(0, len(order), per_read)],
                                  depth=depth):
            if per_read == batch_size:
                yield idx, many
                continue
            for s in range(0, len(idx), batch_size):
                yield idx[s:s + batch_size], many.subset(torch.arange(s, min(len(idx), s + batch_size)))

    def pin(self) -> "States":
        """The same states in page-locked memory (for asynchronous copies to a GPU)."""
        return dataclasses.replace(self, **{f: None if getattr(self, f) is None else getattr(self, f).pin_memory()
                                            for f in _PER_VIDEO})

    def subset(self, idx, *, views: tuple[str, ...] = ()) -> "States":
        """The same states for the videos ``idx`` (a 1-D index array or tensor). Streamed
        arrays are read, except those named in ``views``, which stay unread views."""
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)

        def pick(name):
            x = getattr(self, name)
            if x is None:
                return None
            return x.subset(idx_t) if name in views and is_streamed(x) else x[idx_t.to(x.device)]

        return dataclasses.replace(self, **{f: pick(f) for f in _PER_VIDEO},
                                   video_ids=np.asarray(self.video_ids)[np.asarray(idx)])

    def to(self, device, non_blocking: bool = False, keep_views: bool = False) -> "States":
        """The same states on ``device``; streamed arrays stay views for the CPU and are read
        whole for any other device (``keep_views``: stay unread views, for selectors that
        never read them)."""
        move = lambda x: None if x is None else (  # noqa: E731
            x if keep_views and is_streamed(x) else
            x.to(device) if is_streamed(x) else x.to(device, non_blocking=non_blocking))
        return dataclasses.replace(self, **{f: move(getattr(self, f)) for f in _PER_VIDEO})
