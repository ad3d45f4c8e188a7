"""The light stage's one streaming source: store rows read on demand, read ahead on threads.

``framesel head``, ``train`` and ``evaluate`` hold either the whole of a list's states in
memory or a :class:`StoreRows` view per array, which reads a video's rows only when a
mini-batch (or an evaluation block) asks for them. Which one is chosen by size
(:func:`stream_by_default`, overridable with ``--load memory|stream``); the values are the
same either way (float16 in the store, float32 once read), so one seed gives the same
weights and the same report whichever is used (tests/test_stream.py).

Reads follow the order the caller asks for. Every per-video array is chunked one video per
chunk (data/store.py), so a shuffled epoch reads each chunk once, whole, as a sequential
pass would; ``benchmarks/stream.py`` measures both orders side by side.

:func:`prefetch` reads ahead on background threads where that pays: batches for a GPU
(``States.batches``, through pinned memory, while the device computes), the head's batches
and evaluate's blocks. An ``as`` epoch on the CPU reads inline: there a reader thread
competes with the trainer for the GIL and the cores (1.4x slower than in memory on 2 cores,
against about 1.0x inline; benchmarks/README.md, stream.py).
"""
from __future__ import annotations

import os
import resource
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from data.errors import InputError

LOADS = ("auto", "memory", "stream")
# ``auto`` streams when a list's states as float32 would take more than this share of the
# memory the process may use (physical memory, or a lower RLIMIT_AS / cgroup limit).
MEMORY_SHARE = 0.25


class StoreRows:
    """The rows ``rows`` of the store array ``name``, read when indexed.

    Behaves like a (len(rows), *shape[1:]) CPU tensor along its first axis: ``x[i]``,
    ``x[a:b]``, ``x[index array or tensor]`` read those videos (one read per row,
    Store.read_rows) and return a ``dtype`` tensor; ``shape``, ``ndim``, ``len`` and
    ``device`` answer without reading. Anything else (arithmetic over all videos) needs
    :meth:`materialise`, which reads everything and says so in its name.
    """

    def __init__(self, store, name: str, rows, *, dtype=np.float32):
        self.store, self.name = store, name
        self.rows = np.asarray(rows, dtype=np.int64)
        self.np_dtype = np.dtype(dtype)
        self._shape = (len(self.rows), *store.shape(name)[1:])

    def __repr__(self) -> str:
        return f"StoreRows({self.store.path}:{self.name}, {len(self.rows)} rows, {self.np_dtype})"

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._shape)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, self.np_dtype)).dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __len__(self) -> int:
        return self._shape[0]

    def numpy(self, idx=slice(None), dtype=None) -> np.ndarray:
        """Rows ``idx`` (int, slice, 1-D index array or tensor) as a numpy array of ``dtype``
        (default: the store's own, e.g. float16); an int drops the first axis as a tensor would."""
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        single = isinstance(idx, (int, np.integer))
        picked = self.rows[[int(idx)] if single else idx]
        out = self.store.read_rows(self.name, np.atleast_1d(picked))
        out = out if dtype is None else out.astype(dtype, copy=False)
        return out[0] if single else out

    def __getitem__(self, idx) -> torch.Tensor:
        """Rows ``idx`` as a tensor of this view's dtype (torch converts float16 2–3× faster
        than numpy's ``astype``)."""
        return torch.from_numpy(self.numpy(idx)).to(self.dtype)

    def subset(self, idx) -> "StoreRows":
        """A view of the rows ``idx`` of this one, still unread."""
        view = StoreRows.__new__(StoreRows)
        view.store, view.name, view.np_dtype = self.store, self.name, self.np_dtype
        view.rows = self.rows[np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)]
        view._shape = (len(view.rows), *self._shape[1:])
        return view

    def materialise(self) -> torch.Tensor:
        """Every row, read now: (len, ...) tensor of this view's dtype."""
        return self[:]

    def to(self, device):
        """Stays a view on the CPU; any other device gets every row, read now."""
        return self if torch.device(device).type == "cpu" else self.materialise().to(device)


def is_streamed(x) -> bool:
    return isinstance(x, StoreRows)


def memory_limit() -> int:
    """Bytes this process may use: physical memory, or a lower address-space limit
    (``ulimit -v``) or cgroup limit."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits)


def float32_bytes(store, names, V: int) -> int:
    """Bytes V rows of the arrays ``names`` (those the store has) take as float32."""
    return sum(4 * V * int(np.prod(store.shape(n)[1:])) for n in names if store.has(n))


def stream_by_default(nbytes_float32: int, load: str = "auto") -> bool:
    """Whether states of ``nbytes_float32`` bytes (as float32) are streamed under ``load``:
    ``memory`` never, ``stream`` always, ``auto`` when they exceed :data:`MEMORY_SHARE` of
    :func:`memory_limit`."""
    if load not in LOADS:
        raise InputError(f"--load must be one of {', '.join(LOADS)}, not {load!r}")
    if load != "auto":
        return load == "stream"
    return nbytes_float32 > MEMORY_SHARE * memory_limit()


def prefetch(read: Callable, items: Iterable, *, depth: int = 4, workers: int = 2) -> Iterator:
    """``read(item)`` for each item, in order, with up to ``depth`` reads running ahead on
    ``workers`` background threads. ``depth`` 0 reads inline. ``read`` must not draw random
    numbers: the results are those of a plain loop whatever the threads' timing."""
    if depth <= 0:
        yield from map(read, items)
        return
    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="framesel-read") as pool:
        pending = deque(pool.submit(read, item) for _, item in zip(range(depth), items))
        try:
            while pending:
                done = pending.popleft()
                for item in items:
                    pending.append(pool.submit(read, item))
                    break
                yield done.result()
        finally:
            for fut in pending:
                fut.cancel()


__all__ = ["LOADS", "StoreRows", "float32_bytes", "is_streamed", "memory_limit", "stream_by_default", "prefetch"]
